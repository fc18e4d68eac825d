/* Hybrid logical clock (Kulkarni et al. 2014), packed 48+16 bits. */
#include "crdt/hlc.h"

#include "crdtdb.h"

static uint64_t clamp_ms(uint64_t ms) { return ms > CRDTDB__HLC_MS_MAX ? CRDTDB__HLC_MS_MAX : ms; }

/* The stamp right after m.  Adding one to the packed value carries a full
 * counter into the milliseconds, so the clock never stalls on overflow. */
static uint64_t succ(uint64_t m) { return m == UINT64_MAX ? m : m + 1; }

uint64_t crdtdb__hlc_tick(uint64_t *last, uint64_t wall_ms)
{
    uint64_t wall = crdtdb__hlc_make(clamp_ms(wall_ms), 0);
    uint64_t next = wall > *last ? wall : succ(*last);
    *last = next;
    return next;
}

int crdtdb__hlc_recv(uint64_t *last, uint64_t remote, uint64_t wall_ms,
                     uint64_t max_skew_ms)
{
    uint64_t wall_ms_c = clamp_ms(wall_ms);
    if (crdtdb__hlc_ms(remote) > wall_ms_c &&
        crdtdb__hlc_ms(remote) - wall_ms_c > max_skew_ms)
        return CRDTDB_ECLOCK;
    uint64_t wall = crdtdb__hlc_make(wall_ms_c, 0);
    uint64_t m = *last > remote ? *last : remote;
    *last = wall > m ? wall : succ(m);
    return 0;
}
