/*
 * bench_churn — a database's whole life under churn (issue #16): bytes on
 * disk and memory before and after tombstone collection.
 *
 * The workload (the same in peers-churn/churn.mjs, which runs it on Yjs):
 * N operations (default 1M) over R record ids (default 10k, "p<i>") of one
 * collection, drawn from mulberry32 seeded with --seed (default 1), the
 * generator written out identically in both files:
 *
 *   id = next() % R;  r = next() % 100
 *   id absent:  r < 50: add {hp, name, x, y} (hp = next() % 101,
 *               name = NAMES[next() % 8], x = next() % 10000,
 *               y = next() % 10000, drawn in that order); else no
 *               operation (draw again)
 *   id present: r < 50: remove; else update {x, y} (x, y drawn as above),
 *               plus hp (drawn last) when r % 4 == 0
 *
 * so about a third each of adds, updates and removes, and about half the ids
 * present at the end.  Both sides print the counts and an FNV-1a checksum of
 * the sequence; run.mjs checks they are the same.  B operations (default
 * 1000) go in one write transaction (Yjs: one doc.transact).
 *
 * All through the public API (include/crdtdb.h), in one environment in a
 * temp dir removed at the end:
 *   1. the churn, timed (packing included: the generator alone is timed too);
 *   2. measured: data.mdb (st_size and st_blocks * 512), crdtdb_db_stat,
 *      VmRSS / VmHWM / RssAnon / RssFile of this process, and the live data's
 *      raw msgpack size (the sum of the rendered records' lengths, from a
 *      query over all records: the msgpack a plain store would keep);
 *   3. crdtdb_db_collect(db, 0, ...), timed: no peers, so every remove is
 *      stable and every removed record's registers may go;
 *   4. measured again, and after compaction: crdtdb_env_backup writes a
 *      compacted copy (LMDB's MDB_CP_COMPACT, free pages left out), taken
 *      both before and after collecting, so that what compaction alone gives
 *      and what collection adds are told apart.  LMDB never shrinks its file
 *      in place: pages collection frees are reused by later writes, so the
 *      live file's size after collecting says little; the copy's is what the
 *      data needs.
 * Plus, as the floor: the live records alone, added to a fresh environment
 * in one transaction, collected (since session 44: packed) and compacted
 * the same way.
 *
 * Where the compacted bytes go: crdtdb_db_stat gives the records' and the
 * change log's key+value bytes; the copy is a plain LMDB file, so it is
 * opened read-only with liblmdb and each named sub-database's pages are
 * counted (what `mdb_stat -a` prints), the history-fingerprint chain
 * ("chains": one 16-byte fingerprint per commit in the last 65536
 * sequences) among them.
 *
 * RSS: RssFile is LMDB's map (file pages this process touched), RssAnon the
 * heap.  VmHWM is reset (clear_refs 5) before each phase where the kernel
 * allows it.  Exit status is 0 whatever the goal says.
 *
 * Sittings so far: sittings/churn.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_util.h"
#include "crdtdb.h"

#define COLL "players"
#define GOAL_DISK 2.0 /* compacted bytes after collection / live msgpack */
#define NCOPIES 3     /* compacted copies: before, after, fresh */
#define MAX_TABLES 16

const char bench_name[] = "bench_churn";

static const char *const NAMES[8] = {"ana",   "bo",     "carmen", "dmitri",
                                     "eve",   "fatima", "gus",    "hiroko"};

typedef struct options {
    size_t ops, ids, batch, seed;
    int nosync, json;
} options;

/* ---------------------------------------------------------------- the ops */

typedef struct rec {
    uint8_t live, name;
    uint8_t hp;
    uint16_t x, y;
} rec;

enum { OP_ADD, OP_UPDATE, OP_REMOVE };

typedef struct gen {
    uint32_t s;       /* mulberry32 state */
    size_t nids;
    rec *model;       /* nids records: what is present now */
    size_t count[3];  /* adds, updates, removes */
    size_t live;
    uint32_t fnv;     /* FNV-1a of (op, id, fields) over the sequence */
} gen;

static uint32_t next(gen *g)
{
    uint32_t z = (g->s += 0x6D2B79F5u);
    z = (z ^ (z >> 15)) * (z | 1u);
    z ^= z + (z ^ (z >> 7)) * (z | 61u);
    return z ^ (z >> 14);
}

static void fnv(gen *g, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        g->fnv = (g->fnv ^ ((v >> (8 * i)) & 0xffu)) * 16777619u;
}

/* The next operation: *op, *id, and in g->model[*id] its fields; *hp
 * whether an update writes hp. */
static void gen_next(gen *g, int *op, uint32_t *id, int *hp)
{
    for (;;) {
        uint32_t i = next(g) % (uint32_t)g->nids, r = next(g) % 100;
        rec *m = &g->model[i];
        *id = i;
        *hp = 0;
        if (!m->live) {
            if (r >= 50)
                continue;
            *op = OP_ADD;
            m->hp = (uint8_t)(next(g) % 101);
            m->name = (uint8_t)(next(g) % 8);
            m->x = (uint16_t)(next(g) % 10000);
            m->y = (uint16_t)(next(g) % 10000);
            m->live = 1;
            g->live++;
        } else if (r < 50) {
            *op = OP_REMOVE;
            m->live = 0;
            g->live--;
        } else {
            *op = OP_UPDATE;
            m->x = (uint16_t)(next(g) % 10000);
            m->y = (uint16_t)(next(g) % 10000);
            if ((*hp = r % 4 == 0))
                m->hp = (uint8_t)(next(g) % 101);
        }
        g->count[*op]++;
        fnv(g, (uint32_t)*op);
        fnv(g, i);
        if (*op != OP_REMOVE)
            fnv(g, (uint32_t)m->x << 16 | m->y), fnv(g, (uint32_t)m->hp << 8 | m->name);
        return;
    }
}

static int gen_init(gen *g, size_t nids, size_t seed)
{
    free(g->model);
    memset(g, 0, sizeof *g);
    g->s = (uint32_t)seed;
    g->nids = nids;
    g->fnv = 2166136261u;
    g->model = calloc(nids, sizeof *g->model);
    return g->model ? 0 : bench_oom();
}

static int pack_kv_uint(msgpack_packer *pk, const char *k, uint32_t v)
{
    size_t n = strlen(k);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, k, n) ||
           msgpack_pack_uint32(pk, v);
}

/* Packs what op writes of m (keys in bytewise order, as crdtdb renders). */
static int pack_op(msgpack_packer *pk, int op, int hp, const rec *m)
{
    if (op == OP_UPDATE)
        return msgpack_pack_map(pk, hp ? 3 : 2) || (hp && pack_kv_uint(pk, "hp", m->hp)) ||
               pack_kv_uint(pk, "x", m->x) || pack_kv_uint(pk, "y", m->y);
    size_t n = strlen(NAMES[m->name]);
    return msgpack_pack_map(pk, 4) || pack_kv_uint(pk, "hp", m->hp) ||
           msgpack_pack_str(pk, 4) || msgpack_pack_str_body(pk, "name", 4) ||
           msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, NAMES[m->name], n) ||
           pack_kv_uint(pk, "x", m->x) || pack_kv_uint(pk, "y", m->y);
}

/* ---------------------------------------------------------------- measures */

typedef struct mem {
    long rss_kb, hwm_kb, anon_kb, file_kb;
} mem;

static long status_kb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static mem mem_now(void)
{
    mem m = {-1, -1, -1, -1};
    char buf[4096];
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return m;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    m.rss_kb = status_kb(buf, "VmRSS:");
    m.hwm_kb = status_kb(buf, "VmHWM:");
    m.anon_kb = status_kb(buf, "RssAnon:");
    m.file_kb = status_kb(buf, "RssFile:");
    return m;
}

/* Resets VmHWM to the current RSS (Linux clear_refs 5); 1 if it did. */
static int hwm_reset(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    int ok = fd >= 0 && write(fd, "5", 1) == 1;
    if (fd >= 0)
        close(fd);
    return ok;
}

typedef struct disk {
    long long size, alloc; /* st_size, st_blocks * 512; -1 if absent */
} disk;

static disk disk_of(const char *dir)
{
    char p[192];
    struct stat st;
    snprintf(p, sizeof p, "%s/data.mdb", dir);
    if (stat(p, &st))
        return (disk){-1, -1};
    return (disk){(long long)st.st_size, (long long)st.st_blocks * 512};
}

/* One named LMDB sub-database of a compacted copy: its pages' bytes. */
typedef struct table {
    char name[24];
    long long bytes, entries;
} table;

typedef struct copy {
    char dir[128];
    disk d;
    table t[MAX_TABLES];
    size_t nt;
    long long main_bytes; /* the main DB (the names) and the 2 meta pages */
} copy;

/* Opens the copy in c->dir read-only with liblmdb and counts the pages of
 * each named sub-database (the main DB's keys name them). */
static int copy_tables(copy *c)
{
    MDB_env *e;
    MDB_txn *t = NULL;
    MDB_cursor *cur = NULL;
    MDB_dbi main;
    MDB_stat ms;
    MDB_val k, v;
    int rc = mdb_env_create(&e);
    if (!rc)
        rc = mdb_env_set_maxdbs(e, MAX_TABLES);
    if (!rc)
        rc = mdb_env_open(e, c->dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0600);
    if (!rc)
        rc = mdb_txn_begin(e, NULL, MDB_RDONLY, &t);
    if (!rc)
        rc = mdb_dbi_open(t, NULL, 0, &main);
    if (!rc && !(rc = mdb_stat(t, main, &ms)))
        c->main_bytes = (long long)(ms.ms_branch_pages + ms.ms_leaf_pages +
                                    ms.ms_overflow_pages + 2) * ms.ms_psize;
    if (!rc)
        rc = mdb_cursor_open(t, main, &cur);
    for (int op = MDB_FIRST; !rc && c->nt < MAX_TABLES; op = MDB_NEXT) {
        MDB_dbi d;
        if ((rc = mdb_cursor_get(cur, &k, &v, op)))
            break;
        table *tb = &c->t[c->nt];
        snprintf(tb->name, sizeof tb->name, "%.*s", (int)k.mv_size, (char *)k.mv_data);
        if (mdb_dbi_open(t, tb->name, 0, &d) || mdb_stat(t, d, &ms))
            continue; /* a plain key, not a sub-database */
        tb->bytes = (long long)(ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages) *
                    ms.ms_psize;
        tb->entries = (long long)ms.ms_entries;
        c->nt++;
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    mdb_cursor_close(cur);
    mdb_txn_abort(t);
    mdb_env_close(e);
    return rc ? bench_fail_mdb("reading the copy", rc) : 0;
}

static long long table_bytes(const copy *c, const char *name)
{
    for (size_t i = 0; i < c->nt; i++)
        if (strcmp(c->t[i].name, name) == 0)
            return c->t[i].bytes;
    return 0;
}

/* Writes a compacted copy of env into c->dir (made here) and measures it. */
static int take_copy(crdtdb_env *env, copy *c)
{
    if (mkdir(c->dir, 0700))
        return fprintf(stderr, "bench_churn: mkdir %s: %s\n", c->dir, strerror(errno)), -1;
    int rc = crdtdb_env_backup(env, c->dir);
    if (rc)
        return bench_fail("env_backup", rc, crdtdb_env_errmsg(env));
    c->d = disk_of(c->dir);
    return copy_tables(c);
}

static void copy_remove(const copy *c)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    char p[192];
    if (!c->dir[0])
        return;
    for (size_t f = 0; f < 2; f++) {
        snprintf(p, sizeof p, "%s/%s", c->dir, files[f]);
        unlink(p);
    }
    rmdir(c->dir);
}

/* ---------------------------------------------------------------- the run */

typedef struct snap {
    disk d;
    mem m;
    crdtdb_db_stats st;
    long long live_bytes; /* the live records' rendered msgpack */
    long long live_records;
} snap;

typedef struct bench {
    options o;
    bench_base base; /* dirs "churn" and "fresh" */
    crdtdb_env *env, *fenv;
    crdtdb_db *db, *fdb;
    gen g;
    copy copies[NCOPIES]; /* before collect, after collect, fresh */
    snap start, churned, collected, fresh;
    crdtdb_collect_stats cs;
    uint64_t floor, stamp;
    double churn_s, gen_s, collect_s, fresh_s;
    /* a full export (since 0), before collection (the log) and after (the
     * trimmed log: the records walked) */
    double export_s[2];
    long long export_bytes[2];
    long long model_live_bytes;
    int hwm_resets;
} bench;

static int sum_live(void *ctx, const char *id, const uint8_t *value, size_t len)
{
    (void)id;
    (void)value;
    snap *s = ctx;
    s->live_bytes += (long long)len;
    s->live_records++;
    return 0;
}

/* Measures db, whose environment is in dir, into *s. */
static int measure(crdtdb_db *db, const char *dir, snap *s)
{
    s->d = disk_of(dir);
    s->m = mem_now();
    int rc = crdtdb_db_stat(db, &s->st);
    if (rc)
        return bench_fail("db_stat", rc, crdtdb_db_errmsg(db));
    s->live_bytes = s->live_records = 0;
    rc = crdtdb_db_query(db, NULL, COLL, NULL, 0, sum_live, s);
    return rc ? bench_fail("query", rc, crdtdb_db_errmsg(db)) : 0;
}

static int open_all(bench *b)
{
    static const char *const names[] = {"churn", "fresh"};
    static const char *const copies[NCOPIES] = {"copy-before", "copy-after", "copy-fresh"};
    const char *colls[] = {COLL};
    if (bench_base_dirs(&b->base, names, 2))
        return -1;
    for (size_t i = 0; i < NCOPIES; i++)
        snprintf(b->copies[i].dir, sizeof b->copies[i].dir, "%s/%s", b->base.root, copies[i]);
    if (bench_env_open(b->base.env_dir[0], b->o.nosync, &b->env))
        return -1;
    int rc = crdtdb_db_create(b->env, "churn", colls, 1, &b->db);
    return rc ? bench_fail("db_create", rc, crdtdb_env_errmsg(b->env)) : 0;
}

/* Runs the ops; with db NULL only generates and packs them (the generator's
 * own cost).  Leaves the model in b->g. */
static int churn(bench *b, crdtdb_db *db, double *secs)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (gen_init(&b->g, b->o.ids, b->o.seed))
        return -1;
    crdtdb_txn *t = NULL;
    char id[24];
    int rc = 0;
    double t0 = bench_now();
    for (size_t i = 0; i < b->o.ops && !rc; i++) {
        int op, hp;
        uint32_t k;
        gen_next(&b->g, &op, &k, &hp);
        snprintf(id, sizeof id, "p%" PRIu32, k);
        sb.size = 0;
        if (op != OP_REMOVE && pack_op(&pk, op, hp, &b->g.model[k])) {
            rc = CRDTDB_ENOMEM;
            break;
        }
        if (!db)
            continue;
        if (!t && (rc = crdtdb_txn_begin(db, 0, &t)))
            break;
        const uint8_t *v = (const uint8_t *)sb.data;
        rc = op == OP_ADD      ? crdtdb_db_add(db, t, COLL, id, v, sb.size)
             : op == OP_UPDATE ? crdtdb_db_update(db, t, COLL, id, v, sb.size)
                               : crdtdb_db_remove(db, t, COLL, id);
        if (!rc && bench_batch_end(i, b->o.batch, b->o.ops)) {
            rc = crdtdb_txn_commit(t);
            t = NULL;
        }
    }
    crdtdb_txn_abort(t);
    *secs = bench_now() - t0;
    msgpack_sbuffer_destroy(&sb);
    return rc ? bench_fail("churn", rc, db ? crdtdb_db_errmsg(db) : NULL) : 0;
}

/* The model's live records: their msgpack size (a cross-check of the
 * query's), and (db non-NULL) added to db in one transaction. */
static int add_live(bench *b, crdtdb_db *db)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    crdtdb_txn *t = NULL;
    char id[24];
    int rc = db ? crdtdb_txn_begin(db, 0, &t) : 0;
    b->model_live_bytes = 0;
    for (size_t i = 0; i < b->g.nids && !rc; i++) {
        if (!b->g.model[i].live)
            continue;
        sb.size = 0;
        if (pack_op(&pk, OP_ADD, 1, &b->g.model[i])) {
            rc = CRDTDB_ENOMEM;
            break;
        }
        b->model_live_bytes += (long long)sb.size;
        snprintf(id, sizeof id, "p%zu", i);
        if (db)
            rc = crdtdb_db_add(db, t, COLL, id, (const uint8_t *)sb.data, sb.size);
    }
    if (t)
        rc = rc ? (crdtdb_txn_abort(t), rc) : crdtdb_txn_commit(t);
    msgpack_sbuffer_destroy(&sb);
    return rc ? bench_fail("fresh add", rc, db ? crdtdb_db_errmsg(db) : NULL) : 0;
}

static int count_bytes(void *ctx, const uint8_t *delta, size_t len)
{
    (void)delta;
    *(long long *)ctx += (long long)len;
    return 0;
}

/* Times crdtdb_db_export from 0 (every delta signed, none kept). */
static int time_export(bench *b, int i)
{
    double t0 = bench_now();
    int rc = crdtdb_db_export(b->db, 0, NULL, count_bytes, &b->export_bytes[i], NULL);
    b->export_s[i] = bench_now() - t0;
    return rc ? bench_fail("db_export", rc, crdtdb_db_errmsg(b->db)) : 0;
}

static int run(bench *b)
{
    double t0;
    int rc;
    if (open_all(b) || churn(b, NULL, &b->gen_s) || measure(b->db, b->base.env_dir[0], &b->start))
        return -1;
    b->hwm_resets = hwm_reset();
    if (churn(b, b->db, &b->churn_s) || measure(b->db, b->base.env_dir[0], &b->churned) || add_live(b, NULL) ||
        take_copy(b->env, &b->copies[0]) || time_export(b, 0))
        return -1;
    b->hwm_resets &= hwm_reset();
    t0 = bench_now();
    rc = crdtdb_db_collect(b->db, 0, &b->cs);
    b->collect_s = bench_now() - t0;
    if (rc)
        return bench_fail("db_collect", rc, crdtdb_db_errmsg(b->db));
    if ((rc = crdtdb_db_horizon(b->db, &b->floor, &b->stamp)))
        return bench_fail("db_horizon", rc, crdtdb_db_errmsg(b->db));
    if (measure(b->db, b->base.env_dir[0], &b->collected) || take_copy(b->env, &b->copies[1]) ||
        time_export(b, 1))
        return -1;
    /* the floor: the live records alone, in a fresh environment */
    const char *colls[] = {COLL};
    if (bench_env_open(b->base.env_dir[1], b->o.nosync, &b->fenv))
        return -1;
    if ((rc = crdtdb_db_create(b->fenv, "churn", colls, 1, &b->fdb)))
        return bench_fail("fresh db_create", rc, crdtdb_env_errmsg(b->fenv));
    t0 = bench_now();
    if (add_live(b, b->fdb))
        return -1;
    b->fresh_s = bench_now() - t0;
    /* and collected, as a server's first collection would: packed */
    if ((rc = crdtdb_db_collect(b->fdb, 0, NULL)))
        return bench_fail("fresh db_collect", rc, crdtdb_db_errmsg(b->fdb));
    return measure(b->fdb, b->base.env_dir[1], &b->fresh) || take_copy(b->fenv, &b->copies[2]);
}

/* ---------------------------------------------------------------- output */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_churn [--ops N] [--ids R] [--batch B] [--seed S] [--nosync] [--json]\n"
            "  --ops N      operations: adds, updates, removes (default 1000000)\n"
            "  --ids R      record ids they are drawn from (default 10000)\n"
            "  --batch B    operations per write transaction (default 1000)\n"
            "  --seed S     the generator's seed (default 1; peers-churn takes the same)\n"
            "  --nosync     CRDTDB_ENV_NOSYNC\n"
            "  --json       print one JSON object with all numbers\n");
}

static double kib(long long bytes) { return (double)bytes / 1024.0; }

static void print_snap(const char *what, const snap *s)
{
    printf("%s: data.mdb %.0f KiB (allocated %.0f KiB); RSS %ld KiB (anon %ld, LMDB map "
           "%ld), peak %ld KiB\n",
           what, kib(s->d.size), kib(s->d.alloc), s->m.rss_kb, s->m.anon_kb, s->m.file_kb,
           s->m.hwm_kb);
    printf("  stat: %" PRIu64 " records, %" PRIu64 " tombstones, %" PRIu64 " fields, %" PRIu64
           " hidden, %" PRIu64 " log entries; records %.0f KiB, change log %.0f KiB; seq %" PRIu64
           "\n",
           s->st.records, s->st.removed, s->st.fields, s->st.hidden, s->st.log_entries,
           kib((long long)s->st.record_bytes), kib((long long)s->st.log_bytes), s->st.seq);
}

static void print_copy(const char *what, const copy *c, long long live)
{
    printf("%s: %.0f KiB = %.2f x live msgpack;", what, kib(c->d.size),
           bench_ratio((double)c->d.size, (double)live));
    for (size_t i = 0; i < c->nt; i++)
        if (c->t[i].bytes)
            printf(" %s %.0f KiB (%lld)", c->t[i].name, kib(c->t[i].bytes), c->t[i].entries);
    printf("; names+meta %.0f KiB\n", kib(c->main_bytes));
}

static void print_human(const bench *b)
{
    const copy *after = &b->copies[1];
    long long live = b->collected.live_bytes;
    double r = bench_ratio((double)after->d.size, (double)live);
    printf("bench_churn: %zu ops over %zu ids, %zu per txn, seed %zu, %s\n", b->o.ops, b->o.ids,
           b->o.batch, b->o.seed, bench_mode(b->o.nosync));
    printf("ops: %zu adds, %zu updates, %zu removes; %zu live at the end; checksum %08" PRIx32
           "\n",
           b->g.count[OP_ADD], b->g.count[OP_UPDATE], b->g.count[OP_REMOVE], b->g.live, b->g.fnv);
    printf("churn: %.2f s (%.0f ops/s; generating and packing alone %.2f s)\n", b->churn_s,
           bench_ratio((double)b->o.ops, b->churn_s), b->gen_s);
    printf("live data: %lld records, raw msgpack %lld bytes (%.1f KiB; model: %lld)\n",
           b->collected.live_records, live, kib(live), b->model_live_bytes);
    print_snap("before churn", &b->start);
    print_snap("after churn", &b->churned);
    printf("collect: %.3f s; %" PRIu64 " records and %" PRIu64 " registers dropped, %" PRIu64
           " log entries trimmed, horizon %" PRIu64 ", floor %" PRIu64 "\n",
           b->collect_s, b->cs.records, b->cs.registers, b->cs.log_entries, b->cs.horizon,
           b->floor);
    printf("export from 0: %.3f s, %lld bytes from the log before collection; %.3f s, %lld bytes "
           "walking the records after (%.2fx the time)\n",
           b->export_s[0], b->export_bytes[0], b->export_s[1], b->export_bytes[1],
           bench_ratio(b->export_s[1], b->export_s[0]));
    print_snap("after collection (the file in place: LMDB keeps freed pages for reuse)",
               &b->collected);
    printf("compacted copies (crdtdb_env_backup, MDB_CP_COMPACT), bytes per LMDB sub-database "
           "(entries):\n");
    print_copy("  before collection", &b->copies[0], live);
    print_copy("  after collection ", after, live);
    print_copy("  live data alone, fresh env, collected", &b->copies[2], live);
    print_snap("live data alone, fresh env (one transaction, then collected)", &b->fresh);
    printf("disk after collection + compaction: %.0f KiB = %.2f x the live data's raw msgpack "
           "(goal <= %.1f) %s\n",
           kib(after->d.size), r, GOAL_DISK, bench_verdict(r > 0 && r <= GOAL_DISK));
    if (!b->hwm_resets)
        printf("(peak RSS could not be reset between phases: it is the run's peak)\n");
}

static void print_json_snap(const char *name, const snap *s)
{
    printf("\"%s\":{\"disk_bytes\":%lld,\"disk_alloc_bytes\":%lld,\"rss_kb\":%ld,"
           "\"peak_rss_kb\":%ld,\"rss_anon_kb\":%ld,\"rss_file_kb\":%ld,\"records\":%" PRIu64
           ",\"tombstones\":%" PRIu64 ",\"fields\":%" PRIu64 ",\"hidden\":%" PRIu64
           ",\"log_entries\":%" PRIu64 ",\"record_bytes\":%" PRIu64 ",\"log_bytes\":%" PRIu64
           ",\"seq\":%" PRIu64 ",\"live_msgpack_bytes\":%lld},",
           name, s->d.size, s->d.alloc, s->m.rss_kb, s->m.hwm_kb, s->m.anon_kb, s->m.file_kb,
           s->st.records, s->st.removed, s->st.fields, s->st.hidden, s->st.log_entries,
           s->st.record_bytes, s->st.log_bytes, s->st.seq, s->live_bytes);
}

static void print_json_copy(const char *name, const copy *c)
{
    printf("\"%s\":{\"disk_bytes\":%lld,\"disk_alloc_bytes\":%lld,\"main_bytes\":%lld,"
           "\"tables\":{",
           name, c->d.size, c->d.alloc, c->main_bytes);
    for (size_t i = 0; i < c->nt; i++)
        printf("%s\"%s\":{\"bytes\":%lld,\"entries\":%lld}", i ? "," : "", c->t[i].name,
               c->t[i].bytes, c->t[i].entries);
    printf("}},");
}

static void print_json(const bench *b)
{
    const copy *after = &b->copies[1];
    long long live = b->collected.live_bytes;
    printf("{\"ops\":%zu,\"ids\":%zu,\"batch\":%zu,\"seed\":%zu,\"nosync\":%s,\"adds\":%zu,"
           "\"updates\":%zu,\"removes\":%zu,\"live\":%zu,\"checksum\":\"%08" PRIx32 "\","
           "\"churn_s\":%.3f,\"gen_s\":%.3f,\"collect_s\":%.4f,\"fresh_fill_s\":%.4f,"
           "\"collected_records\":%" PRIu64 ",\"collected_registers\":%" PRIu64
           ",\"trimmed_log_entries\":%" PRIu64
           ",\"horizon\":%" PRIu64 ",\"floor\":%" PRIu64 ",\"live_msgpack_bytes\":%lld,"
           "\"export_log_s\":%.4f,\"export_log_bytes\":%lld,\"export_walk_s\":%.4f,"
           "\"export_walk_bytes\":%lld,",
           b->o.ops, b->o.ids, b->o.batch, b->o.seed, bench_bool(b->o.nosync),
           b->g.count[OP_ADD], b->g.count[OP_UPDATE], b->g.count[OP_REMOVE], b->g.live, b->g.fnv,
           b->churn_s, b->gen_s, b->collect_s, b->fresh_s, b->cs.records, b->cs.registers,
           b->cs.log_entries, b->cs.horizon, b->floor, live, b->export_s[0], b->export_bytes[0],
           b->export_s[1], b->export_bytes[1]);
    print_json_snap("start", &b->start);
    print_json_snap("churned", &b->churned);
    print_json_snap("collected", &b->collected);
    print_json_snap("fresh", &b->fresh);
    print_json_copy("copy_before_collect", &b->copies[0]);
    print_json_copy("copy_after_collect", after);
    print_json_copy("copy_fresh", &b->copies[2]);
    printf("\"chains_bytes\":%lld,\"disk_ratio\":%.4f,\"goal_disk_ratio\":%.1f,"
           "\"peak_rss_reset\":%s}\n",
           table_bytes(after, "chains"), bench_ratio((double)after->d.size, (double)live),
           GOAL_DISK, bench_bool(b->hwm_resets));
}

static void bench_free(bench *b)
{
    crdtdb_db_close(b->db);
    crdtdb_db_close(b->fdb);
    crdtdb_env_close(b->env);
    crdtdb_env_close(b->fenv);
    for (size_t i = 0; i < NCOPIES; i++)
        copy_remove(&b->copies[i]);
    bench_base_free(&b->base);
    free(b->g.model);
}

int main(int argc, char **argv)
{
    static bench b;
    b.o = (options){1000000, 10000, 1000, 1, 0, 0};
    const bench_opt opts[] = {
        {"--ops", &b.o.ops}, {"--ids", &b.o.ids}, {"--batch", &b.o.batch}, {"--seed", &b.o.seed}};
    int a = bench_parse_args(argc, argv, opts, sizeof opts / sizeof *opts, &b.o.nosync,
                             &b.o.json);
    if (a)
        return bench_usage_exit(a, usage);
    int rc = run(&b);
    if (!rc) {
        if (b.o.json)
            print_json(&b);
        else
            print_human(&b);
    }
    bench_free(&b);
    return rc ? 1 : 0;
}
