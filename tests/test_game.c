/* The game scenario end to end: runs examples/game.c's binary (path in
 * $CRDTDB_GAME) and checks that it verified every step. */
#define _XOPEN_SOURCE 700
#include "tests/testutil.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GAME_TIMEOUT_MS 120000 /* each step waits at most 10 s */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t cap = 4096, len = 0, n;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len == 1) {
            buf = realloc(buf, cap *= 2);
            ck_assert_ptr_nonnull(buf);
        }
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* Runs the game with its output in files under dir; returns the exit
 * status (128 + signal if killed) and the output in *out, *err. */
static int run_game(const char *dir, char **out, char **err)
{
    const char *game = getenv("CRDTDB_GAME");
    ck_assert_msg(game != NULL, "CRDTDB_GAME is not set");
    char op[4200], ep[4200];
    snprintf(op, sizeof op, "%s/stdout", dir);
    snprintf(ep, sizeof ep, "%s/stderr", dir);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fo = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
            _exit(127);
        setenv("TMPDIR", dir, 1); /* its temp dir goes under ours */
        execl(game, game, (char *)NULL);
        _exit(127);
    }
    int st;
    for (long waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        ck_assert_int_ge(r, 0);
        if (r == pid)
            break;
        if (waited >= GAME_TIMEOUT_MS) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            ck_abort_msg("example_game did not exit within %d ms", GAME_TIMEOUT_MS);
        }
        sleep_ms(10);
    }
    *out = slurp(op);
    *err = slurp(ep);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
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
