/* The game scenario end to end: runs examples/game.c's binary (path in
 * $CRDTDB_GAME) and checks that it verified every step. */
#define _XOPEN_SOURCE 700
#include "tests/testutil.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GAME_TIMEOUT_MS 120000 /* each step waits at most 10 s */

/* Runs the game with its output in files under dir; returns the exit
 * status (128 + signal if killed) and the output in *out, *err. */
static int run_game(const char *dir, char **out, char **err)
{
    const char *game = getenv("CRDTDB_GAME");
    ck_assert_msg(game != NULL, "CRDTDB_GAME is not set");
    char op[4200], ep[4200];
    snprintf(op, sizeof op, "%s/stdout", dir);
    snprintf(ep, sizeof ep, "%s/stderr", dir);
    /* its temp dir goes under ours: the child inherits TMPDIR */
    const char *had = getenv("TMPDIR");
    char *old = had ? strdup(had) : NULL;
    ck_assert_int_eq(setenv("TMPDIR", dir, 1), 0);
    const char *argv[] = {game, NULL};
    pid_t pid = tu_spawn(argv, NULL, op, ep);
    ck_assert_int_eq(old ? setenv("TMPDIR", old, 1) : unsetenv("TMPDIR"), 0);
    free(old);
    int status = tu_wait_exit(pid, GAME_TIMEOUT_MS, "example_game");
    *out = tu_slurp(op, NULL);
    *err = tu_slurp(ep, NULL);
    return status;
}

static const char *const KEY_LINES[] = {
    "olga: created match-42 by connecting; the server made her owner",
    "olga: invited p1, p2, p3",
    "eve: valid token, not a member: refused (403)",
    "mallory: token signed with another secret: refused (401)",
    "p1: move before accepting refused, copy restored",
    "p1: accepted",
    "p2: accepted",
    "p3: accepted",
    "olga: match started, p1's turn",
    "p1: move 1 (c3) seen by all 4 replicas in ",
    "p2: move 2 (d4) seen by all 4 replicas in ",
    "p3: move 3 (e5) seen by all 4 replicas in ",
    "p3: offline",
    "p1: move 4 (f6) seen by olga, p1, p2 in ",
    "p2: move 5 (g7) seen by olga, p1, p2 in ",
    "p3: move 6 (h8) made offline",
    "p3: back online, caught up in ",
    "olga: removed p2 from _members",
    "p2: copy cleared (INVALIDATE_ALL, store empty)",
    "p2: reconnects refused (403",
    "p1: move 7 (a1) seen by olga, p1, p3 in ",
    "olga, p1, p3: identical copies",
    "game over: every step verified",
};

START_TEST(game_scenario_verifies_every_step)
{
    char *dir = tu_tmpdir(), *out, *err;
    int status = run_game(dir, &out, &err);
    ck_assert_msg(status == 0, "example_game exited %d\n--- stdout:\n%s\n--- stderr:\n%s", status,
                  out, err);
    const char *at = out;
    for (size_t i = 0; i < sizeof KEY_LINES / sizeof *KEY_LINES; i++) {
        const char *hit = strstr(at, KEY_LINES[i]);
        ck_assert_msg(hit != NULL, "missing or out of order: \"%s\"\n--- stdout:\n%s",
                      KEY_LINES[i], out);
        at = hit;
    }
    ck_assert_msg(strstr(err, "FAILED") == NULL, "stderr: %s", err);
    ck_assert_msg(strstr(out, "olga, p1, p3: identical copies (11 records); p2: 0") != NULL,
                  "stdout: %s", out);
    free(out);
    free(err);
    /* it removed its own temp dir: only our two files are left */
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        ck_assert_msg(strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
                          strcmp(e->d_name, "stdout") == 0 || strcmp(e->d_name, "stderr") == 0,
                      "example_game left %s in %s", e->d_name, dir);
    closedir(d);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static Suite *game_suite(void)
{
    Suite *s = suite_create("game");
    TCase *tc = tcase_create("game");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, game_scenario_verifies_every_step);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(game_suite()); }
