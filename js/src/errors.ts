/**
 * One error class for the whole package.  Codes and numbers are the C
 * library's (include/crdtdb.h, CRDTDB_ERRNO_MAP), so an error received on
 * the wire and one raised here read the same.  The message is the detail
 * for this occurrence; the DataStore calls use the interface's own messages
 * ("Object with id 'X' not found in collection 'Y'", ...).
 */

export const ERRORS = {
  EINVAL: [-1, "invalid argument"],
  ENOMEM: [-2, "out of memory"],
  EIO: [-3, "I/O error"],
  ENOTFOUND: [-4, "object not found"],
  ENOCOLL: [-5, "collection not found"],
  ENODB: [-6, "database not found"],
  EEXIST: [-7, "database already exists"],
  EBADID: [-8, "invalid identifier"],
  EBADVALUE: [-9, "malformed value"],
  ETOOBIG: [-10, "value too large"],
  ETOODEEP: [-11, "value nested too deeply"],
  EBADQUERY: [-12, "invalid query"],
  EROFS: [-13, "read only access"],
  ECLOCK: [-14, "clock too far ahead"],
  EMAPFULL: [-15, "environment is full"],
  ECORRUPT: [-16, "stored data is corrupt"],
  EVERSION: [-17, "unsupported format version"],
  EBUSY: [-18, "resource busy"],
  ELIMIT: [-19, "configured limit exceeded"],
  EBADSIG: [-20, "bad signature"],
  EDENIED: [-21, "permission denied"],
  EFORGED: [-22, "conflicting writes under one stamp"],
  EFORK: [-23, "replica history diverged"],
  EAUTH: [-24, "authentication failed"],
  EREVOKED: [-25, "access changed"],
} as const;

export type ErrorCode = keyof typeof ERRORS | "EUNKNOWN";

/** The name of a wire error number (-13 -> "EROFS"); EUNKNOWN if not ours. */
export function codeOf(num: number): ErrorCode {
  for (const [name, [n]] of Object.entries(ERRORS)) if (n === num) return name as ErrorCode;
  return "EUNKNOWN";
}

/** The wire number of a code (EUNKNOWN -> -1, EINVAL). */
export function numberOf(code: ErrorCode): number {
  return code === "EUNKNOWN" ? -1 : ERRORS[code][0];
}

export class CrdtdbError extends Error {
  override readonly name = "CrdtdbError";
  /** Stable code name, e.g. "ENOTFOUND". */
  readonly code: ErrorCode;
  /** The C library's number for the code, as on the wire. */
  readonly errno: number;
  constructor(code: ErrorCode, message?: string) {
    super(message ?? (code === "EUNKNOWN" ? "unknown error" : ERRORS[code][1]));
    this.code = code;
    this.errno = numberOf(code);
  }
}

/** The DataStore interface's messages, word for word. */
export const notFound = (collection: string, id: string): CrdtdbError =>
  new CrdtdbError("ENOTFOUND", `Object with id '${id}' not found in collection '${collection}'`);
export const noCollection = (collection: string): CrdtdbError =>
  new CrdtdbError("ENOCOLL", `Collection '${collection}' not found`);
export const readOnly = (): CrdtdbError => new CrdtdbError("EROFS", "Read only access");
