/* Edge cases from C2SP/CCTV ed25519vectors.json that WebCrypto (OpenSSL)
 * or noble accepted and libsodium 1.0.18 (the C library's verifier)
 * refuses: small-order keys or R, and a cofactored-only equation.  Then
 * vectors libsodium accepts.  verify must agree with libsodium on both
 * backends (checked on all 914 CCTV vectors while writing keys.ts). */
export const SODIUM_REFUSES = [
  ["0000000000000000000000000000000000000000000000000000000000000000", "00".repeat(64), "ed25519vectors 11"],
  ["0000000000000000000000000000000000000000000000000000000000000000", "36684ea91032ba5b1dbab2d02f4debc74c3327f2b3802e2e4d371aa42b12b56b05ba9a796274d80437afa36f1236563f2f3b0aa84cecddc3d20914615ba4fe02", "ed25519vectors 3"],
  ["10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f", "00".repeat(32) + "9472a69cd9a701a50d130ed52189e2455b23767db52cacb8716fb896ffeeac09", "ed25519vectors 3"],
  ["edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "00".repeat(64), "ed25519vectors 6"],
  ["10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f", "00".repeat(32) + "5e176f12cfb0d4e6eb6929b19ae4c998ef05c1c2cf628a9b1fa1c21312627108", "ed25519vectors 7"],
  ["10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f", "36684ea91032ba5b1dbab2d02f4debc74c3327f2b3802e2e4d371aa42b12b56bc02e2b9e63e385c058bf62b14b3a2b29ccefe8e38ddb536bc3f9865320a3d801", "ed25519vectors 10"],
  ["10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f", "000000000000000000000000000000000000000000000000000000000000008075b3d7e9547febbdbf3fde21df901c7ca1fc59e8b689a4ae283919e78cf62b03", "ed25519vectors 11"],
];
export const SODIUM_ACCEPTS = [
  ["10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f", "36684ea91032ba5b1dbab2d02f4debc74c3327f2b3802e2e4d371aa42b12b56bbbfd00bd9c259d8d222d15e67a3d8228585050dbb9b9585be20d8fadc721da03", "ed25519vectors"],
  ["10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f", "b797b156efcd45a4e2454d2fd0b21438b3ccd80d4c7fd1d1b2c8e55bd4ed4a94732d9e0279fe001d90327efa319816e3e4506b78432b8b4e1f2fdc4b960d700f", "ed25519vectors 2"],
  ["10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f", "b62cf890de42c413b11b1411c9f01f1c4d77aa87ef182258d1251f69af2a350608f32d206a7c0b7efa9a59e66546e8f1f599ef843fb502c9cc3c4ae8b7c11e05", "ed25519vectors 5"],
];
