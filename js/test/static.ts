/**
 * A tiny static HTTP server on 127.0.0.1 for the browser tests: fixed
 * files by path, and directories under URL prefixes.  Test infrastructure,
 * nothing more: GET only, no listing, no path outside its directories.
 */
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, sep } from "node:path";

export interface StaticServer { url: string; close(): Promise<void> }

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8", ".map": "application/json", ".json": "application/json", ".svg": "image/svg+xml",
};

export function staticServer(o: { files: Record<string, string>; dirs: Record<string, string> }): Promise<StaticServer> {
  const srv = createServer((req, res) => {
    void (async () => {
      const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
      let body: string | Buffer | undefined = o.files[path];
      if (body === undefined) {
        for (const [prefix, dir] of Object.entries(o.dirs)) {
          if (!path.startsWith(prefix)) continue;
          const file = normalize(join(dir, path.slice(prefix.length) || "index.html"));
          if (!file.startsWith(dir + sep)) break;
          body = await readFile(file).catch(() => undefined);
          break;
        }
      }
      if (req.method !== "GET" || body === undefined) {
        res.writeHead(404).end("not found");
        return;
      }
      const type = TYPES[path.endsWith("/") ? ".html" : extname(path)] ?? "application/octet-stream";
      res.writeHead(200, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    })();
  });
  return new Promise((resolve, reject) => {
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const a = srv.address();
      const port = typeof a === "object" && a ? a.port : 0;
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }),
      });
    });
  });
}
