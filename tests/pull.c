#include "tests/pull.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

#include "crdt/buf.h"

int take_one(void *ctx, const uint8_t *p, size_t len)
{
    one *o = ctx;
    ck_assert_int_eq(crdtdb__buf_append(&o->d, p, len), 0);
    o->n++;
    return CRDTDB_STOP;
}

int all_visible(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                       const uint8_t *value, size_t len)
{
    (void)ctx, (void)txn, (void)coll, (void)id, (void)value, (void)len;
    return 1;
}

/* what a filtered export told the receiver to forget */
static struct hid { char coll[16], id[300]; } hids[4096];
static int nhid;
static void hidden_cb(void *ctx, const char *coll, const char *id)
{
    (void)ctx;
    ck_assert_int_lt(nhid, 4096);
    snprintf(hids[nhid].coll, sizeof hids[nhid].coll, "%s", coll);
    snprintf(hids[nhid].id, sizeof hids[nhid].id, "%s", id);
    nhid++;
}

int pull_one(replica *A, replica *R, puller *p)
{
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(A->db, NULL, &last), 0);
    crdtdb_export_info info;
    memset(&info, 0, sizeof info);
    crdtdb_export_options eo = {.max_bytes = p->max_bytes, .resume = p->resume,
                                .resume_len = p->rlen, .flags = p->flags};
    if (p->filter)
        eo.visible = p->visible ? p->visible : all_visible, eo.hidden = hidden_cb;
    one o = {CRDTDB_BUF_INIT, 0};
    nhid = 0;
    int rc = crdtdb_db_export_for(A->db, p->since, NULL, &eo, take_one, &o, &info);
    if (p->trace)
        p->trace(A, p, rc, &info, last);
    ck_assert_msg(rc == 0, "export: %s", crdtdb_db_errmsg(A->db));
    for (int i = 0; i < nhid; i++) /* the session's PURGE comes first */
        ck_assert_int_eq(crdtdb_db_purge(R->db, hids[i].coll, hids[i].id), 0);
    if (o.n)
        ck_assert_msg(crdtdb_db_apply(R->db, o.d.data, o.d.len, NULL) == 0, "apply: %s",
                      crdtdb_db_errmsg(R->db));
    crdtdb_buf_free(&o.d);
    if (info.resume_len && info.to > p->since)
        p->pass_ends++;
    memcpy(p->resume, info.resume, info.resume_len);
    p->rlen = info.resume_len;
    ck_assert(info.to > p->since || p->rlen || info.to >= last);
    p->since = info.to;
    return info.to >= last && !p->rlen;
}

