// Copied by ../bench_presence.mjs into $TMPDIR/yjs-anchor (the install of ../../../shared/peers/yjs/run.sh) so that
// 'yjs' and 'y-websocket' resolve there, as one ESM instance of Yjs, for benchmarks/presence/player.mjs.
export * as Y from "yjs";
export { WebsocketProvider } from "y-websocket";
