/**
 * A growable byte buffer with a DataView over it, for the encodings the
 * replica writes itself (msgpack values and deltas, the history chain's
 * notes, stored records).  The caller owns it; bytes written stay valid
 * until the next write or reset.
 */
const te = new TextEncoder();

export class ByteWriter {
  buf: Uint8Array;
  dv: DataView;
  pos = 0;

  constructor(size = 512) {
    this.buf = new Uint8Array(size);
    this.dv = new DataView(this.buf.buffer);
  }

  /** Makes room for n more bytes at pos. */
  room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let c = this.buf.length * 2;
    while (c < this.pos + n) c *= 2;
    const b = new Uint8Array(c);
    b.set(this.buf.subarray(0, this.pos));
    this.buf = b;
    this.dv = new DataView(b.buffer);
  }

  /** Appends src[off, off + n): a loop for the short values most leaves
   *  hold (set() would want a view of them), set() for the rest. */
  range(src: Uint8Array, off: number, n: number): void {
    this.room(n);
    const buf = this.buf, at = this.pos;
    if (n <= 32) for (let i = 0; i < n; i++) buf[at + i] = src[off + i]!;
    else buf.set(new Uint8Array(src.buffer, src.byteOffset + off, n), at);
    this.pos = at + n;
  }

  /** A u16 length, then the UTF-8 bytes; ASCII without an encoder call. */
  u16str(s: string, littleEndian: boolean): void {
    this.room(2 + s.length * 3);
    const buf = this.buf, o = this.pos + 2;
    let i = 0;
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      buf[o + i] = c;
    }
    let n = i;
    if (i < s.length) n = i + te.encodeInto(s.slice(i), buf.subarray(o + i)).written;
    this.dv.setUint16(this.pos, n, littleEndian);
    this.pos = o + n;
  }
}
