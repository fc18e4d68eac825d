/**
 * The browser side of browser.test.ts: a page that loads the bundle
 * (js/dist/crdtdb.browser.js) and puts a small driver on `window.t`, so a
 * test can open stores and read their events with page.evaluate.  Errors
 * come back as {error: {code, message}}, because a thrown CrdtdbError
 * loses its code on the way out of the page.
 */
export const PAGE_HTML = `<!doctype html>
<meta charset="utf-8"><title>crdtdb browser test</title>
<script type="module" src="/test/page.js"></script>`;

export const PAGE_JS = `
import * as c from "/js/dist/crdtdb.browser.js";
const stores = new Map();
const plain = (e) => ({ code: e && e.code, message: String(e && e.message || e) });
window.t = {
  ready: true,
  async open(key, o) {
    try {
      const statuses = [], events = [], errors = [];
      const backend = new c.IndexedDBBackend({
        name: o.name, lock: o.lock || "fail", ...(o.noLock ? { locks: null } : {}),
        ...(o.abortAfterMs ? { signal: AbortSignal.timeout(o.abortAfterMs) } : {}),
      });
      const sync = o.url ? {
        url: o.url, token: o.token, minBackoffMs: 100, maxBackoffMs: 800,
        onStatus: (s) => statuses.push({ state: s.state, code: s.error && s.error.code, message: s.error && s.error.message }),
        onEvent: (e) => { if (e.type === "error") errors.push({ code: e.code, message: e.message }); },
      } : undefined;
      const ds = await c.CrdtdbDataStore.open({ dbId: o.dbId, collections: o.collections, backend, sync });
      for (const coll of o.collections) ds.observable(coll).subscribe((n) => events.push(n));
      const presence = [];
      ds.presence.subscribe((e) => presence.push(e));
      stores.set(key, { ds, statuses, events, errors, presence });
      return { id: ds.replica.idHex };
    } catch (e) { return { error: plain(e) }; }
  },
  async call(key, method, ...args) {
    try { return { value: await stores.get(key).ds[method](...args) }; }
    catch (e) { return { error: plain(e) }; }
  },
  state(key) {
    const s = stores.get(key);
    const st = s.ds.syncStatus;
    // an Error crossing page.evaluate keeps its message only: pass the code along
    const status = st && { state: st.state, code: st.error && st.error.code, message: st.error && st.error.message };
    return { status, statuses: s.statuses, events: s.events, errors: s.errors, readonly: s.ds.isReadOnly, presence: s.presence, connected: s.ds.presence.connected };
  },
  // store.presence's methods: set, get, send
  presence(key, method, ...args) {
    try { return { value: stores.get(key).ds.presence[method](...args) }; }
    catch (e) { return { error: plain(e) }; }
  },
  stopSync(key) { stores.get(key).ds.sync.stop(); },
  startSync(key) { stores.get(key).ds.sync.start(); },
  async close(key) { await stores.get(key).ds.close(); stores.delete(key); },
};
// the test's page.evaluate callbacks call drv() (its source runs here)
window.drv = () => window.t;
window.lib = () => c;
`;
