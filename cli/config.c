/*
 * crdtdb serve --config FILE: a file of settings that are exactly the
 * command's long flags, so every flag, present and future, works there
 * without a second list to keep in step.  Expanded into the argument list
 * before it is parsed (main.c), in the place of --config, so flags after
 * it override the file.
 */
#include "cli.h"
#include "options.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CONFIG_MAX ((size_t)1 << 20) /* bytes of one file */

/* Reads path (a regular file of at most CONFIG_MAX bytes) into a new
 * NUL-terminated buffer with room after it for the flag names (each
 * "--name" at most two bytes more than its line); NULL reported. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        fprintf(stderr, "crdtdb: --config %s: %s\n", path, strerror(errno));
        if (f)
            fclose(f);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > CONFIG_MAX) {
        fprintf(stderr, "crdtdb: --config %s: not a regular file of at most 1 MiB\n", path);
        fclose(f);
        return NULL;
    }
    char *b = malloc(3 * (size_t)st.st_size + 3);
    size_t n = b ? fread(b, 1, (size_t)st.st_size, f) : 0;
    int bad = !b || ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "crdtdb: --config %s: cannot read it\n", path);
        free(b);
        return NULL;
    }
    b[n] = '\0';
    *len = n;
    return b;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* A growing argument list. */
typedef struct alist {
    char **v;
    int n, cap;
} alist;

static int push(alist *l, char *s)
{
    if (l->n + 2 > l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    l->v[l->n] = NULL;
    return 0;
}

/* The settings of one file onto l; its text (kept, with the flag names
 * written after it) in *keep.  0 or a status (reported). */
static int expand_file(const char *path, int (*known)(void *, const char *), void *ctx,
                       alist *l, char **keep)
{
    size_t len;
    char *text = slurp(path, &len);
    if (!text)
        return EXIT_FAILURE;
    const char *nul = memchr(text, '\0', len);
    if (nul) { /* text, not a truncated reading of it */
        int at = 1;
        for (const char *p = text; p < nul; p++)
            at += *p == '\n';
        fprintf(stderr, "crdtdb: %s:%d: a NUL byte: a config file is text\n", path, at);
        free(text);
        return EXIT_USAGE;
    }
    char *np = text + len + 1; /* the names go after the text */
    int status = 0, lineno = 0;
    for (char *line = text, *next; !status && line; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *name = s;
        while (*s && *s != ' ' && *s != '\t' && *s != '=')
            s++;
        char end = *s;
        *s = '\0';
        char *value = end ? trim(s + 1) : s;
        if (end && end != '=' && *value == '=')
            value = trim(value + 1);
        int has_value = end == '=' || *value != '\0';
        int kind = 0;
        char *flag = np;
        np += sprintf(np, "--%s", name) + 1;
        if (*name == '-' || strcmp(name, "config") == 0 || !(kind = known(ctx, flag))) {
            fprintf(stderr, "crdtdb: %s:%d: unknown setting '%s' (the settings are the "
                            "command's long flags without their --%s)\n",
                    path, lineno, name, strcmp(name, "config") == 0 ? "; no --config in one" : "");
            status = EXIT_USAGE;
        } else if (kind == 1 && !has_value) {
            fprintf(stderr, "crdtdb: %s:%d: '%s' needs a value: %s VALUE\n", path, lineno, name,
                    name);
            status = EXIT_USAGE;
        } else if (kind == 2 && has_value) {
            fprintf(stderr, "crdtdb: %s:%d: '%s' takes no value\n", path, lineno, name);
            status = EXIT_USAGE;
        } else if (push(l, flag) || (kind == 1 && push(l, value))) {
            status = fail(NULL, CRDTDB_ENOMEM);
        }
    }
    if (status) {
        free(text);
        return status;
    }
    *keep = text;
    return 0;
}

int config_expand(int argc, char **argv, int (*known)(void *ctx, const char *flag), void *ctx,
                  config_argv *out)
{
    memset(out, 0, sizeof *out);
    alist l = {NULL, 0, 0};
    int status = push(&l, NULL) ? fail(NULL, CRDTDB_ENOMEM) : 0;
    l.n = 0;
    char *keep = NULL;
    for (int i = 0; !status && i < argc; i++) {
        const char *path = NULL;
        if (strcmp(argv[i], "--") == 0) { /* the rest is positional */
            for (; !status && i < argc; i++)
                status = push(&l, argv[i]) ? fail(NULL, CRDTDB_ENOMEM) : 0;
            break;
        }
        int r = take_opt(argc, argv, &i, "--config", &path);
        if (r < 0) {
            fprintf(stderr, "crdtdb: --config needs a FILE\n");
            status = EXIT_USAGE;
        } else if (r == 0) {
            status = push(&l, argv[i]) ? fail(NULL, CRDTDB_ENOMEM) : 0;
        } else if (keep) {
            fprintf(stderr, "crdtdb: one --config only\n");
            status = EXIT_USAGE;
        } else {
            status = expand_file(path, known, ctx, &l, &keep);
        }
    }
    if (status) {
        free(l.v);
        free(keep);
        return status;
    }
    out->argc = l.n;
    out->argv = l.v;
    out->text = keep;
    return 0;
}

void config_free(config_argv *c)
{
    free(c->argv);
    free(c->text);
    memset(c, 0, sizeof *c);
}
