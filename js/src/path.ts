/**
 * Field paths and ids in the C library's stored order.
 *
 * crdt/path.c encodes a path as each key's UTF-8 with 0x00 escaped as
 * 00 FF, each followed by the terminator 00 01, and stores leaves in
 * bytewise order of that encoding.  That order is exactly: segment by
 * segment, keys compared bytewise as UTF-8 (a key that is a prefix of the
 * other sorts first), and a path that is a prefix of another (an ancestor)
 * sorts before it.  So no encoding is needed to compare.
 */

import type { Path } from "./types.js";

/** The UTF-16 unit remapped so that unit order is UTF-8 byte order:
 *  surrogates (U+10000 and up) after U+E000..U+FFFF. */
function utf8Rank(c: number): number {
  return c >= 0xe000 ? c - 0x800 : c >= 0xd800 ? c + 0x2000 : c;
}

/** Compares two strings as their UTF-8 bytes: <0, 0, >0. */
export function compareIds(a: string, b: string): number {
  if (a === b) return 0;
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      if (x < 0xd800 && y < 0xd800) return x - y;
      return utf8Rank(x) - utf8Rank(y);
    }
  }
  return a.length - b.length;
}

/** Bytewise comparison of two byte strings (memcmp, then length). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** Compares paths in the C stored order (crdt/path.c encoding, bytewise). */
export function comparePaths(a: Path, b: Path): number {
  if (a === b) return 0;
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) return compareIds(x, y);
  }
  return a.length - b.length;
}

/** True if a is a strict ancestor of b. */
export function isAncestor(a: Path, b: Path): boolean {
  if (a.length >= b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** True if the paths are equal. */
export function samePath(a: Path, b: Path): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const enc = new TextEncoder();

/** The crdt/path.c encoding of a path (for stored keys and tests). */
export function encodePath(p: Path): Uint8Array {
  const parts: number[] = [];
  for (const k of p) {
    for (const byte of enc.encode(k)) {
      parts.push(byte);
      if (byte === 0) parts.push(0xff);
    }
    parts.push(0, 1);
  }
  return Uint8Array.from(parts);
}

const dec = new TextDecoder("utf-8", { fatal: true });

/** Decodes a crdt/path.c encoding; throws on malformed input. */
export function decodePath(b: Uint8Array): string[] {
  const out: string[] = [];
  let seg: number[] = [];
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c !== 0) {
      seg.push(c);
      continue;
    }
    const nx = b[i + 1];
    if (nx === 0xff) seg.push(0);
    else if (nx === 1) {
      out.push(dec.decode(Uint8Array.from(seg)));
      seg = [];
    } else throw new Error("malformed path encoding");
    i++;
  }
  if (seg.length) throw new Error("malformed path encoding: no terminator");
  return out;
}
