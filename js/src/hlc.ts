/**
 * Hybrid logical clock (Kulkarni et al. 2014), packed as crdt/hlc.c packs
 * it: 48 bits of Unix milliseconds, 16 bits of counter, compared as one
 * integer.  Stamps exceed 2^53, hence bigint.
 */

import { CrdtdbError } from "./errors.js";
import type { Hlc } from "./types.js";

const MS_MAX = (1 << 24) * (1 << 24) - 1; // 2^48 - 1
const U64_MAX = (1n << 64n) - 1n;

function clampMs(ms: number): number {
  if (!(ms > 0)) return 0;
  return ms > MS_MAX ? MS_MAX : Math.floor(ms);
}

/** The stamp of (ms, counter): ms clamped to 48 bits, counter to 16. */
export function packHlc(ms: number, counter: number): Hlc {
  return (BigInt(clampMs(ms)) << 16n) | BigInt(counter & 0xffff);
}

/** The milliseconds of a stamp. */
export function hlcMs(h: Hlc): number {
  return Number(h >> 16n);
}

/** The counter of a stamp. */
export function hlcCounter(h: Hlc): number {
  return Number(h & 0xffffn);
}

/** The stamp right after h (a full counter carries into the ms). */
function succ(h: Hlc): Hlc {
  return h >= U64_MAX ? h : h + 1n;
}

export interface ClockOptions {
  /** Wall clock in Unix ms (default Date.now). */
  now?: () => number;
  /** Remote stamps further ahead are refused (default 300000: 5 min). */
  maxSkewMs?: number;
}

export class Clock {
  /** The highest stamp issued or accepted. */
  last: Hlc = 0n;
  readonly now: () => number;
  readonly maxSkewMs: number;

  constructor(opts: ClockOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.maxSkewMs = opts.maxSkewMs ?? 300000;
  }

  /** A local write's stamp: max(wall, last + 1), stored as last. */
  tick(): Hlc {
    const wall = packHlc(this.now(), 0);
    const next = wall > this.last ? wall : succ(this.last);
    this.last = next;
    return next;
  }

  /** Throws ECLOCK (the clock untouched) if remote's ms are more than
   *  maxSkewMs ahead of local time. */
  check(remote: Hlc): void {
    const now = clampMs(this.now());
    const ms = hlcMs(remote);
    if (ms > now && ms - now > this.maxSkewMs)
      throw new CrdtdbError(
        "ECLOCK",
        `delta stamped ${ms - now} ms ahead of local time (local ${now} ms, stamp ${ms} ms; ` +
          `limit ${this.maxSkewMs} ms): retry later`,
      );
  }

  /** A receive: check, then last = max(wall, last + 1, remote + 1). */
  recv(remote: Hlc): void {
    this.check(remote);
    const wall = packHlc(this.now(), 0);
    const m = this.last > remote ? this.last : remote;
    this.last = wall > m ? wall : succ(m);
  }

  /** Restores a stored maximum: last = max(last, h). */
  observe(h: Hlc): void {
    if (h > this.last) this.last = h;
  }
}
