/*
 * Hybrid logical clock: 48 bits of wall-clock milliseconds and a 16-bit
 * logical counter packed into one uint64_t, so stamps compare as integers.
 * Pure functions: the caller supplies wall-clock time.
 */
#ifndef CRDTDB_CRDT_HLC_H
#define CRDTDB_CRDT_HLC_H
#include <stdint.h>

#define CRDTDB__HLC_COUNTER_BITS 16
#define CRDTDB__HLC_MS_MAX ((UINT64_C(1) << 48) - 1)

static inline uint64_t crdtdb__hlc_ms(uint64_t hlc) { return hlc >> CRDTDB__HLC_COUNTER_BITS; }
static inline uint32_t crdtdb__hlc_counter(uint64_t hlc) { return (uint32_t)(hlc & 0xffffu); }
static inline uint64_t crdtdb__hlc_make(uint64_t ms, uint32_t counter)
{
    return (ms << CRDTDB__HLC_COUNTER_BITS) | (counter & 0xffffu);
}

/*
 * Local or send event: returns a stamp strictly greater than *last and not
 * behind wall_ms, and stores it in *last.  When the counter would overflow
 * the stamp moves to the next millisecond, so the clock never stalls.
 */
uint64_t crdtdb__hlc_tick(uint64_t *last, uint64_t wall_ms);

/*
 * Receive event: refuses (CRDTDB_ECLOCK) a remote stamp whose milliseconds
 * are more than max_skew_ms ahead of wall_ms, leaving *last untouched.
 * Otherwise advances *last past both itself and the remote stamp and returns
 * 0.  The result is strictly greater than the remote stamp.
 */
int crdtdb__hlc_recv(uint64_t *last, uint64_t remote, uint64_t wall_ms,
                     uint64_t max_skew_ms);

#endif
