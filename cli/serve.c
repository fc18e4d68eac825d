/*
 * crdtdb serve: the databases of the environment to sync clients over
 * WebSocket (libcrdtdb_ws), with tokens, membership, TLS, peer servers and
 * limits; runs the library's event loop on this thread until interrupted
 * (SIGINT/SIGTERM).
 */
#include "cli.h"
#include "options.h"

#include <limits.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>
#include <arpa/inet.h>

/* How log lines are written (--log-format). */
typedef struct log_sink {
    int json;
} log_sink;

/* The server's lines are escaped already (no control bytes, valid UTF-8):
 * only " and \ need escaping here, and controls for safety. */
static void put_json_text(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
}

/* The end of a name the server quoted (its ' and \ escaped:
 * crdtdb__ws_quote): the closing quote after p, or NULL. */
static const char *quoted_end(const char *p)
{
    for (; *p; p++) {
        if (*p == '\\' && p[1])
            p++;
        else if (*p == '\'')
            return p;
    }
    return NULL;
}

/* The first name the server quoted after one of its markers ("db '",
 * "user '", ...) at or after line: *start and the closing quote, or NULL. */
static const char *quoted_name(const char *line, const char *const *marks, size_t nmarks,
                               const char **start)
{
    const char *best = NULL;
    size_t len = 0;
    for (size_t i = 0; i < nmarks; i++) {
        const char *m = strstr(line, marks[i]);
        if (m && (!best || m < best)) {
            best = m;
            len = strlen(marks[i]);
        }
    }
    if (!best)
        return NULL;
    *start = best + len;
    return quoted_end(*start);
}

static const char *const NAME_MARKS[] = {"db '", "database '", "user '"};

/* "warn" for refusals and closes, "error" for failures, else "info": by
 * the words the server's lines use, outside the ids and users they quote
 * (which a client chose). */
static const char *log_level(const char *line)
{
    static const char *const errors[] = {" error ", "failed", "cannot ", "out of memory",
                                         "expired, kept"};
    static const char *const warns[] = {"refused", "closing", "lost", "exceeded"};
    char words[1024];
    snprintf(words, sizeof words, "%s", line);
    const char *start, *end;
    for (char *p = words; (end = quoted_name(p, NAME_MARKS, 3, &start)) != NULL;
         p = (char *)end + 1)
        memset((char *)start, '_', (size_t)(end - start));
    for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
        if (strstr(words, errors[i]))
            return "error";
    for (size_t i = 0; i < sizeof warns / sizeof *warns; i++)
        if (strstr(words, warns[i]))
            return "warn";
    return "info";
}

/* One line as JSON: {"ts", "level", "msg"}, and the fields a line names
 * where the server puts them: "peer" (a line starting with the client's
 * address) and "db" (db '<id>'). */
static void log_json_to(FILE *out, const char *line);

/* One write per line: a line built apart, so lines from one process never
 * interleave and a busy server makes one syscall each. */
static void log_json(const char *line)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return;
    log_json_to(m, line);
    if (fclose(m) == 0 && buf)
        fwrite(buf, 1, len, stderr);
    free(buf);
}

static void log_json_to(FILE *out, const char *line)
{
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(out, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":\"", when,
            ts.tv_nsec / 1000000, log_level(line));
    put_json_text(out, line, strlen(line));
    fputc('"', out);
    size_t n = strcspn(line, " ");
    char addr[64];
    unsigned char bin[16];
    if (n && n < sizeof addr) {
        memcpy(addr, line, n);
        addr[n] = '\0';
        if (inet_pton(AF_INET, addr, bin) == 1 || inet_pton(AF_INET6, addr, bin) == 1)
            fprintf(out, ",\"peer\":\"%s\"", addr);
    }
    const char *id, *end = quoted_name(line, NAME_MARKS, 2, &id); /* db ', database ' */
    if (end) { /* the id, its quotes and backslashes unescaped */
        char raw[512];
        size_t k = 0;
        for (const char *p = id; p < end && k + 1 < sizeof raw; p++)
            raw[k++] = *p == '\\' && p + 1 < end ? *++p : *p;
        fputs(",\"db\":\"", out);
        put_json_text(out, raw, k);
        fputc('"', out);
    }
    fputs("}\n", out);
}

static void log_line(void *ctx, const char *line)
{
    const log_sink *sink = ctx;
    if (sink && sink->json)
        log_json(line);
    else
        fprintf(stderr, "%s\n", line);
}

/* The server's token key from --jwt-secret-file or --jwt-public-key. */
static int load_jwt_key(const args *a, crdtdb_jwt_key **key)
{
    if (a->jwt_secret_file && a->jwt_public_key) {
        fprintf(stderr, "crdtdb: give --jwt-secret-file or --jwt-public-key, not both\n");
        return EXIT_USAGE;
    }
    crdtdb_jwt_alg alg = CRDTDB_JWT_HS256;
    if (a->jwt_public_key) {
        alg = CRDTDB_JWT_RS256;
        if (a->jwt_alg && strcmp(a->jwt_alg, "ES256") == 0)
            alg = CRDTDB_JWT_ES256;
        else if (a->jwt_alg && strcmp(a->jwt_alg, "RS256") != 0) {
            fprintf(stderr, "crdtdb: --jwt-alg is RS256 or ES256\n");
            return EXIT_USAGE;
        }
    } else if (a->jwt_alg && strcmp(a->jwt_alg, "HS256") != 0) {
        fprintf(stderr, "crdtdb: a secret file is HS256\n");
        return EXIT_USAGE;
    }
    uint8_t *bytes;
    size_t len;
    const char *file = a->jwt_public_key ? a->jwt_public_key : a->jwt_secret_file;
    if (read_key_file(file, alg == CRDTDB_JWT_HS256, &bytes, &len))
        return EXIT_FAILURE;
    int rc = crdtdb_jwt_key_open(alg, bytes, len, key);
    /* a PEM key of the other kind says which --jwt-alg it wants */
    crdtdb_jwt_alg other = alg == CRDTDB_JWT_RS256 ? CRDTDB_JWT_ES256 : CRDTDB_JWT_RS256;
    crdtdb_jwt_key *probe = NULL;
    int fits_other = rc == CRDTDB_EINVAL && alg != CRDTDB_JWT_HS256 &&
                     crdtdb_jwt_key_open(other, bytes, len, &probe) == 0;
    crdtdb_jwt_key_close(probe);
    sodium_memzero(bytes, len);
    free(bytes);
    if (!rc)
        return 0;
    char msg[512];
    if (rc != CRDTDB_EINVAL)
        snprintf(msg, sizeof msg, "%s: %s", file, crdtdb_strerror(rc));
    else if (alg == CRDTDB_JWT_HS256)
        snprintf(msg, sizeof msg, "%s: an HS256 secret needs 32 bytes or more", file);
    else if (fits_other)
        snprintf(msg, sizeof msg, "%s is %s key, which does not fit --jwt-alg %s: give --jwt-alg %s",
                 file, other == CRDTDB_JWT_ES256 ? "an EC P-256" : "an RSA",
                 alg == CRDTDB_JWT_RS256 ? "RS256" : "ES256",
                 other == CRDTDB_JWT_ES256 ? "ES256" : "RS256");
    else
        snprintf(msg, sizeof msg, "%s does not hold a PEM %s key (%s)", file,
                 alg == CRDTDB_JWT_RS256 ? "RSA" : "EC P-256",
                 alg == CRDTDB_JWT_RS256 ? "RS256" : "ES256");
    return fail(msg, rc);
}

/* Limit flag i: a number from 1 to max, or `word` when not NULL (then
 * *n = 0).  1 when given, 0 when not, -1 (said) when malformed. */
static int limit_or_word(const args *a, size_t i, unsigned long long max, const char *word,
                         unsigned long long *n)
{
    const char *v = a->limits[i];
    if (!v)
        return 0;
    char *end;
    *n = strtoull(v, &end, 10);
    if (word && strcmp(v, word) == 0)
        *n = 0;
    else if (!*v || *end || *v == '-' || *n == 0 || *n > max) {
        fprintf(stderr, "crdtdb: %s takes a number from 1 to %llu%s%s\n", serve_limit_flags[i],
                max, word ? ", or " : "", word ? word : "");
        return -1;
    }
    return 1;
}

/* Sets the limits given as flags (unset: the library's defaults); an
 * unparsable or zero value is a usage error.  "unlimited" lifts the
 * per-address and per-user caps and the database limit, "never" the idle
 * close.  Flags 0-3, 8-9 and 11 are sizes, 4-7 and 12 seconds, 10 a rate
 * (--presence-hz, at most 1000). */
static int apply_limits(const args *a, crdtdb_server_options *o)
{
    size_t *sizes[] = {&o->max_connections, &o->max_per_ip, &o->max_per_user, &o->max_buffered};
    unsigned *secs[] = {&o->handshake_secs, &o->message_secs, &o->ping_secs, &o->pong_secs};
    unsigned long long n;
    int r;
    for (size_t i = 0; i < SERVE_NLIMITS; i++) {
        static const unsigned long long max[SERVE_NLIMITS] = {
            1000000000ull, 1000000000ull, 1000000000ull, 1000000000ull, 30000ull,    30000ull,
            30000ull,      30000ull,      65536ull,      1000000ull,    1000ull, 1000000000ull,
            30000000ull};
        const char *word = i == 1 || i == 2 || i == 11 ? "unlimited" : i == 12 ? "never" : NULL;
        if ((r = limit_or_word(a, i, max[i], word, &n)) < 0)
            return -1;
        if (!r)
            continue;
        if (i < 4) /* sizes; 3 in MiB */
            *sizes[i] = !n ? SIZE_MAX : i == 3 ? (size_t)n << 20 : (size_t)n;
        else if (i < 8)
            *secs[i - 4] = (unsigned)n;
        else if (i == 8)
            o->max_presence = (size_t)n;
        else if (i == 9)
            o->max_presence_members = (size_t)n;
        else if (i == 10)
            o->presence_hz = (unsigned)n;
        else if (i == 11)
            o->max_databases = n ? (size_t)n : SIZE_MAX;
        else
            o->idle_secs = n ? (unsigned)n : UINT_MAX;
    }
    return 0;
}

#define DRAIN_MS 10000 /* a drain's bound: sessions get their CLOSE within it */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int cmd_serve(const char *dir, const args *a)
{
    serve_args sa;
    memset(&sa, 0, sizeof sa);
    return cmd_serve_ops(dir, a, &sa);
}

/* --log-format and --metrics into sink and o; a usage error reported. */
static int apply_ops(const serve_args *sa, log_sink *sink, crdtdb_server_options *o)
{
    sink->json = 0;
    if (sa->log_format && strcmp(sa->log_format, "json") == 0)
        sink->json = 1;
    else if (sa->log_format && strcmp(sa->log_format, "text") != 0) {
        fprintf(stderr, "crdtdb: --log-format is text or json\n");
        return -1;
    }
    static const char *const access[] = {"local", "any", "off"};
    static const crdtdb_metrics_access values[] = {CRDTDB_METRICS_LOCAL, CRDTDB_METRICS_ANY,
                                                   CRDTDB_METRICS_OFF};
    for (size_t i = 0; sa->metrics && i < 3; i++)
        if (strcmp(sa->metrics, access[i]) == 0) {
            o->metrics = values[i];
            return 0;
        }
    if (sa->metrics) {
        fprintf(stderr, "crdtdb: --metrics is local, any or off\n");
        return -1;
    }
    return 0;
}

int cmd_serve_ops(const char *dir, const args *a, const serve_args *sa)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.port = 8080;
    log_sink sink;
    if (apply_ops(sa, &sink, &o))
        return EXIT_USAGE;
    if (parse_mode(a->mode, &o.mode))
        return EXIT_USAGE;
    if (apply_limits(a, &o))
        return EXIT_USAGE;
    char host[256] = "127.0.0.1";
    if (a->listen) {
        const char *colon = strrchr(a->listen, ':');
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        size_t hl = colon ? (size_t)(colon - a->listen) : 0;
        if (!colon || colon[1] == '\0' || *end || port < 0 || port > 65535 ||
            hl >= sizeof host) {
            fprintf(stderr, "crdtdb: --listen needs HOST:PORT\n");
            return EXIT_USAGE;
        }
        if (hl) {
            memcpy(host, a->listen, hl);
            host[hl] = '\0';
        }
        o.port = (int)port;
    }
    o.host = host;
    if (a->expire_every) {
        char *end;
        unsigned long n = strtoul(a->expire_every, &end, 10);
        if (!*a->expire_every || *end || *a->expire_every == '-' || n == 0 || n > 86400) {
            fprintf(stderr, "crdtdb: --expire-every takes seconds from 1 to 86400\n");
            return EXIT_USAGE;
        }
        o.expire_secs = (unsigned)n;
    }
    if (sa->collect_every) {
        char *end;
        unsigned long n = strtoul(sa->collect_every, &end, 10);
        if (!*sa->collect_every || *end || *sa->collect_every == '-' || n == 0 || n > 86400) {
            fprintf(stderr, "crdtdb: --collect-every takes seconds from 1 to 86400\n");
            return EXIT_USAGE;
        }
        o.collect_secs = (unsigned)n;
    }
    if (sa->max_peer_age && (!sa->collect_every ||
                             parse_duration(sa->max_peer_age, &o.max_peer_age_ms))) {
        fprintf(stderr, "crdtdb: --max-peer-age goes with --collect-every and takes a duration "
                        "such as 12h or 30d\n");
        return EXIT_USAGE;
    }
    if (sa->early_relay) {
        if (strcmp(sa->early_relay, "on") != 0 && strcmp(sa->early_relay, "off") != 0) {
            fprintf(stderr, "crdtdb: --early-relay takes on or off\n");
            return EXIT_USAGE;
        }
        o.early_relay = strcmp(sa->early_relay, "on") == 0;
    }
    if (a->archive && !a->expire_every) {
        fprintf(stderr, "crdtdb: serve's --archive goes with --expire-every\n");
        return EXIT_USAGE;
    }
    if (a->archive && mkdir(a->archive, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "crdtdb: %s: %s\n", a->archive, strerror(errno));
        return EXIT_FAILURE;
    }
    o.archive_dir = a->archive;
    o.peer_tls_ca = a->peer_ca;
    if (!a->tls_cert != !a->tls_key) {
        fprintf(stderr, "crdtdb: serve takes --tls-cert and --tls-key together\n");
        return EXIT_USAGE;
    }
    o.tls_cert = a->tls_cert;
    o.tls_key = a->tls_key;
    /* --collections A,B: split in place on a copy */
    char *list = NULL;
    const char **colls = NULL;
    if (a->collections) {
        list = strdup(a->collections);
        colls = calloc(strlen(a->collections) + 1, sizeof *colls);
        if (!list || !colls) {
            free(list);
            free(colls);
            return fail(NULL, CRDTDB_ENOMEM);
        }
        char *save = NULL;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            colls[o.ncoll++] = tok;
        o.collections = colls;
    }
    if (a->relay_users && !a->jwt_secret_file && !a->jwt_public_key) {
        fprintf(stderr, "crdtdb: --relay-users names token users: it needs --jwt-secret-file or "
                        "--jwt-public-key (without tokens, any connection may relay)\n");
        free(list);
        free(colls);
        return EXIT_USAGE;
    }
    /* --relay-users A,B: split the same way */
    char *rlist = NULL;
    const char **rusers = NULL;
    if (a->relay_users) {
        rlist = strdup(a->relay_users);
        rusers = calloc(strlen(a->relay_users) + 1, sizeof *rusers);
        if (!rlist || !rusers) {
            free(rlist);
            free(rusers);
            free(list);
            free(colls);
            return fail(NULL, CRDTDB_ENOMEM);
        }
        char *save = NULL;
        for (char *tok = strtok_r(rlist, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            rusers[o.nrelay_users++] = tok;
        o.relay_users = rusers;
    }
    o.log = log_line;
    o.log_ctx = &sink;
    lws_set_log_level(LLL_ERR, NULL);
    /* tokens: the key, the membership policy, and its collection */
    crdtdb_jwt_key *key = NULL;
    crdtdb_server_auth auth;
    if (a->jwt_secret_file || a->jwt_public_key) {
        int st = load_jwt_key(a, &key);
        if (st) {
            free(list);
            free(colls);
            free(rlist);
            free(rusers);
            return st;
        }
        crdtdb_members_policy(&auth);
        o.jwt_key = key;
        o.jwt_leeway = 30;
        o.auth = &auth;
        int have = 0;
        for (size_t i = 0; i < o.ncoll; i++)
            have |= strcmp(colls[i], "_members") == 0;
        if (o.ncoll && !have)
            colls[o.ncoll++] = "_members"; /* room: one more than the commas */
    }
    crdtdb_env *env = NULL;
    crdtdb_server *srv = NULL;
    int status = 0;
    int lock = -1;
    crdtdb_cluster *cl = NULL; /* --cluster: cli/cluster.c */
    if (!a->cluster) /* nothing to re-read: a reload habit (kill -HUP) must not kill it */
        signal(SIGHUP, SIG_IGN);
    catch_signals(0); /* before start-up, which links every database held
                         (seconds for thousands): a SIGTERM meanwhile
                         drains once it is done, instead of killing it */
    if ((status = serve_cluster_open(a, &o, &cl))) {
    } else if (!env_exists(dir) || (lock = lock_dir(dir, "one server per data directory")) < 0 || open_env(dir, 0, &env)) {
        status = EXIT_FAILURE;
    } else {
        int rc = crdtdb_server_open(env, &o, &srv);
        if (rc == CRDTDB_EIO) {
            char msg[320];
            snprintf(msg, sizeof msg, "cannot listen on %s:%d", host, o.port);
            status = fail_hint(msg, rc, "is another server on that port? --listen HOST:PORT "
                                        "picks another");
        } else if (rc)
            status = fail(NULL, rc);
        char *ptoken = NULL;
        if (srv && a->npeers && a->peer_token_file && !(ptoken = read_token(a->peer_token_file)))
            status = EXIT_FAILURE;
        for (int i = 0; srv && !status && i < a->npeers; i++) {
            crdtdb_client_options l;
            crdtdb_client_options_init(&l);
            l.url = a->peers[i];
            l.token = ptoken;
            if ((rc = crdtdb_server_peer(srv, &l, NULL, 0)))
                status = fail_hint("bad --peer URL", rc, "ws://HOST:PORT or wss://HOST:PORT");
        }
        free_secret(ptoken); /* the server keeps its own copy */
        if (srv && !status && cl && (rc = crdtdb_cluster_peer(cl, srv)))
            status = fail("peering with the cluster's servers", rc);
    }
    while (srv && !stopped()) {
        serve_cluster_hup(cl, a, env, srv, log_line, &sink);
        int rc = crdtdb_server_run(srv, 200);
        if (rc) {
            status = fail(NULL, rc);
            break;
        }
    }
    if (srv && !status) { /* SIGTERM: drain, 10 s at most, then exit 0 */
        uint64_t until = mono_ms() + DRAIN_MS;
        (void)crdtdb_server_drain(srv);
        while (!crdtdb_server_drained(srv) && mono_ms() < until && !crdtdb_server_run(srv, 50))
            ;
        log_line(&sink, crdtdb_server_drained(srv) ? "drained: exiting"
                                                   : "drain bound reached: exiting");
    }
    crdtdb_server_close(srv);
    crdtdb_cluster_close(cl); /* after the server: its peer filter */
    crdtdb_env_close(env);
    if (lock >= 0)
        close(lock); /* the lock goes with it */
    crdtdb_jwt_key_close(key);
    free(list);
    free(colls);
    free(rlist);
    free(rusers);
    return status;
}
