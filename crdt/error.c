/* Error names and messages, generated from CRDTDB_ERRNO_MAP. */
#include "crdtdb.h"

const char *crdtdb_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define X_(name, code, msg) \
    case code:              \
        return msg;
        CRDTDB_ERRNO_MAP(X_)
#undef X_
    }
    return "unknown error";
}

const char *crdtdb_errname(int err)
{
    switch (err) {
    case 0:
        return "CRDTDB_OK";
#define X_(name, code, msg) \
    case code:              \
        return "CRDTDB_" #name;
        CRDTDB_ERRNO_MAP(X_)
#undef X_
    }
    return "CRDTDB_EUNKNOWN";
}

size_t crdtdb_replica_id_bytes(void) { return CRDTDB_REPLICA_ID_BYTES; }
size_t crdtdb_id_max(void) { return CRDTDB_ID_MAX; }
