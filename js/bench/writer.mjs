// Pre-fills a database on a running server: node js/bench/writer.mjs URL DBID RECORDS FIELDS [COLLS=players,tp,big]
// One commit of RECORDS records x FIELDS fields in collection "big" (field cK = r*FIELDS+K), then waits until the
// server holds it.  Prints one JSON line.
import { loadClient, now, sleep } from "./lib.mjs";

const [url, dbId, nRec = "10000", nField = "10", colls = "players,tp,big"] = process.argv.slice(2);
const { CrdtdbDataStore, nodeSocket } = await loadClient();
const ds = await CrdtdbDataStore.open({ dbId, collections: colls.split(","), sync: { url, socket: nodeSocket(), minBackoffMs: 50 } });
await ds.sync.whenSynced();
const items = {};
for (let r = 0; r < +nRec; r++) {
  const o = {};
  for (let c = 0; c < +nField; c++) o["c" + c] = r * +nField + c;
  items["r" + r] = o;
}
const t0 = now();
await ds.addAll("big", items);
const fill = now() - t0;
// whenSynced() alone can resolve before the upload (see node.mjs): wait for the session's own test
while (!ds.sync.session?.synced) await sleep(2);
console.log(JSON.stringify({ writer: dbId, fields: +nRec * +nField, local_fill_ms: +fill.toFixed(0), upload_ms: +(now() - t0).toFixed(0) }));
await ds.close();
process.exit(0);
