/*
 * libFuzzer target for `crdtdb serve --config FILE` (cli/config.c): the
 * input is the file.  The CLI's sources are linked in as they are, with
 * their main() renamed crdtdb_cli_main (CMake), so config_expand,
 * take_opt and the command table are the real ones.
 *
 * Input: byte 0 picks where --config sits in the argument list (bits
 * 0-1: alone, as --config=FILE, between flags, before a "--" that ends
 * the flags; bit 2: a second --config, which must be refused unless a
 * "--" came before it); the rest is the file, written for each input to
 * one memfd that the code under test opens by name (/proc/self/fd/N):
 * nothing on disk, fast.
 *
 * config_expand's known() here takes every long flag of the CLI's tables
 * (options.h: cli_options, the limit flags, serve_options), so flags
 * without a value (--watch, --drop, ...) are fuzzed too; serve itself
 * takes only flags with one.  Checked:
 *   - it returns 0 or EXIT_USAGE (the file is regular and small, and
 *     memory does not run out), with a message on stderr ("crdtdb: ...",
 *     naming FILE:LINE for a bad line) exactly on failure, and *out zeroed
 *     then;
 *   - on success argv[argc] is NULL; what came before and after --config
 *     is passed through, in place; the file's settings in between are
 *     "--NAME" entries known() takes, each followed by one value exactly
 *     when it takes one, a value never starting or ending with space or
 *     tab and never holding a newline; there is one setting per line that
 *     is neither blank nor a # comment;
 *   - the settings written back as a file ("NAME=VALUE" or "NAME" a line)
 *     expand to the same list (a fixed point);
 *   - the real command line, `crdtdb -d DIR serve --config FILE --help`,
 *     returns 0 (usage printed) or EXIT_USAGE, and never serves: serve's
 *     own table decides which settings it takes.
 */
#define _GNU_SOURCE /* memfd_create */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cli/options.h"
#include "fuzz_util.h"

const char fuzz_name[] = "fuzz_config";

/* cli/main.c's main, renamed by CMake for this target. */
int crdtdb_cli_main(int argc, char **argv);

static int file_fd;      /* the file: a memfd, nothing on disk to leave behind */
static char path[64];    /* its name, /proc/self/fd/N */
static char path_eq[80]; /* --config=PATH */
static FILE *sink_err, *sink_out; /* stderr and stdout of the code under test */
static char errbuf[8192];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    file_fd = memfd_create("crdtdb-fuzz-config", 0);
    CHECK(file_fd >= 0);
    snprintf(path, sizeof path, "/proc/self/fd/%d", file_fd);
    snprintf(path_eq, sizeof path_eq, "--config=%s", path);
    CHECK((sink_err = fmemopen(errbuf, sizeof errbuf, "w")) != NULL);
    CHECK((sink_out = fopen("/dev/null", "w")) != NULL);
    return 0;
}

/* Every long flag of the CLI's tables: 1 with a value, 2 without. */
static int known(void *ctx, const char *flag)
{
    int *calls = ctx;
    ++*calls;
    CHECK(strncmp(flag, "--", 2) == 0);
    for (size_t k = 0; k < NOPTIONS; k++) {
        const cli_option *o = &cli_options[k];
        if (o->kind == OPTV_LIMITS) {
            for (int j = 0; serve_limit_flags[j]; j++)
                if (strcmp(flag, serve_limit_flags[j]) == 0)
                    return 1;
        } else if (strncmp(o->name, "--", 2) == 0 && strcmp(flag, o->name) == 0) {
            return o->kind == OPTV_FLAG ? 2 : 1;
        }
    }
    for (size_t k = 0; k < NSERVE_OPTIONS; k++)
        if (strcmp(flag, serve_options[k].name) == 0)
            return serve_options[k].kind == OPTV_FLAG ? 2 : 1;
    return 0;
}

/* The file's bytes: p[0, n). */
static void write_file(const void *p, size_t n)
{
    CHECK(pwrite(file_fd, p, n, 0) == (ssize_t)n);
    CHECK(ftruncate(file_fd, (off_t)n) == 0);
}

/* config_expand with stderr captured into errbuf (NUL-terminated). */
static int expand(int argc, char **argv, config_argv *out)
{
    FILE *saved = stderr;
    rewind(sink_err);
    memset(errbuf, 0, sizeof errbuf);
    stderr = sink_err;
    int calls = 0;
    int st = config_expand(argc, argv, known, &calls, out);
    fflush(sink_err);
    stderr = saved;
    errbuf[sizeof errbuf - 1] = '\0';
    return st;
}

/* Lines of text that are neither blank nor a # comment, by the file
 * format's rule (spaces, tabs and a final CR are blank). */
static size_t settings_in(const uint8_t *t, size_t n)
{
    size_t count = 0;
    for (size_t at = 0; at < n;) {
        const uint8_t *end = memchr(t + at, '\n', n - at);
        size_t ll = end ? (size_t)(end - (t + at)) : n - at;
        size_t i = 0;
        while (i < ll && (t[at + i] == ' ' || t[at + i] == '\t'))
            i++;
        int blank = 1;
        for (size_t j = i; j < ll; j++)
            if (t[at + j] != ' ' && t[at + j] != '\t' && t[at + j] != '\r')
                blank = 0;
        if (!blank && t[at + i] != '#')
            count++;
        at += ll + (end ? 1 : 0);
    }
    return count;
}

static int edge_blank(char c)
{
    return c == ' ' || c == '\t';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    const uint8_t *text = data + 1;
    size_t tlen = size - 1;
    write_file(text, tlen);

    /* the argument list around --config */
    char *av[12];
    int ac = 0, pre, post;
    switch (mode & 3) {
    case 0:
        av[ac++] = "--config", av[ac++] = path;
        break;
    case 1:
        av[ac++] = path_eq;
        break;
    case 2:
        av[ac++] = "--listen", av[ac++] = "127.0.0.1:0";
        av[ac++] = "--config", av[ac++] = path;
        av[ac++] = "--mode", av[ac++] = "two-way";
        break;
    default:
        av[ac++] = "--config", av[ac++] = path;
        av[ac++] = "--", av[ac++] = "--config", av[ac++] = "x";
        break;
    }
    if (mode & 4) /* after a "--": an argument like any other */
        av[ac++] = "--config", av[ac++] = path;
    av[ac] = NULL;
    int twice = (mode & 4) && (mode & 3) != 3;
    pre = (mode & 3) == 2 ? 2 : 0;
    post = (mode & 3) == 2 ? 2 : (mode & 3) == 3 ? 3 : 0;
    if (mode & 4)
        post += 2;

    config_argv out;
    memset(&out, 0x5a, sizeof out);
    int st = expand(ac, av, &out);
    if (fuzz_debug_enabled())
        fprintf(stderr, "%s: mode %u: status %d: %s", fuzz_name, mode & 7, st,
                st ? errbuf : "(ok)\n");
    CHECK(st == 0 || st == EXIT_USAGE);
    if (st) {
        CHECK(strncmp(errbuf, "crdtdb: ", 8) == 0);
        CHECK(out.argc == 0 && out.argv == NULL && out.text == NULL);
        if (!twice && !memchr(text, '\0', tlen)) /* a bad line: FILE:LINE */
            CHECK(strncmp(errbuf + 8, path, strlen(path)) == 0 &&
                  errbuf[8 + strlen(path)] == ':');
        goto run_main;
    }
    CHECK(errbuf[0] == '\0' && !twice);
    CHECK(out.argc >= pre + post && out.argv[out.argc] == NULL);
    for (int i = 0; i < pre; i++)
        CHECK(out.argv[i] == av[i]);
    for (int i = 0; i < post; i++)
        CHECK(out.argv[out.argc - post + i] == av[ac - post + i]);
    size_t settings = 0;
    for (int i = pre; i < out.argc - post; i++) {
        const char *f = out.argv[i];
        int kind = known(&(int){0}, f);
        CHECK(kind == 1 || kind == 2);
        CHECK(strlen(f) > 2 && !strpbrk(f, " \t=\n"));
        settings++;
        if (kind == 1) {
            const char *v = out.argv[++i];
            CHECK(i < out.argc - post && v);
            size_t vn = strlen(v);
            CHECK(!strchr(v, '\n'));
            CHECK(!vn || (!edge_blank(v[0]) && !edge_blank(v[vn - 1])));
        }
    }
    CHECK(settings == settings_in(text, tlen));

    /* written back, NAME=VALUE a line: the same settings again */
    {
        size_t cap = 1;
        for (int i = pre; i < out.argc - post; i++)
            cap += strlen(out.argv[i]) + 2;
        char *again = malloc(cap);
        CHECK(again);
        size_t at = 0;
        for (int i = pre; i < out.argc - post; i++) {
            const char *f = out.argv[i] + 2;
            size_t fn = strlen(f);
            memcpy(again + at, f, fn);
            at += fn;
            if (known(&(int){0}, out.argv[i]) == 1) {
                const char *v = out.argv[++i];
                size_t vn = strlen(v);
                again[at++] = '=';
                memcpy(again + at, v, vn);
                at += vn;
            }
            again[at++] = '\n';
        }
        write_file(again, at);
        char *av2[] = {"--config", path, NULL};
        config_argv out2;
        int st2 = expand(2, av2, &out2);
        if (st2)
            fprintf(stderr, "%s: written back, refused: %s", fuzz_name, errbuf);
        CHECK(st2 == 0 && out2.argc == out.argc - pre - post);
        for (int i = 0; i < out2.argc; i++)
            CHECK(strcmp(out2.argv[i], out.argv[pre + i]) == 0);
        config_free(&out2);
        CHECK(out2.argv == NULL && out2.text == NULL);
        free(again);
        write_file(text, tlen);
    }
    config_free(&out);

run_main: {
    /* the real command line; --help last, so it never serves */
    char *mv[] = {"crdtdb", "-d", "/proc/crdtdb-fuzz-no-such-dir", "serve", "--config", path,
                  "--help", NULL};
    FILE *saved_out = stdout, *saved_err = stderr;
    rewind(sink_err);
    stdout = sink_out;
    stderr = sink_err;
    int rc = crdtdb_cli_main(7, mv);
    fflush(sink_out);
    fflush(sink_err);
    stdout = saved_out;
    stderr = saved_err;
    CHECK(rc == 0 || rc == EXIT_USAGE);
}
    return 0;
}
