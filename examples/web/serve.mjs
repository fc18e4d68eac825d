// The demo's static file server: the page (examples/web/), the client
// bundle (js/dist/) and the config with the demo tokens, on 127.0.0.1 only.
// Usage: node serve.mjs [--port 8081] [--config FILE]
// Nothing else of the repository is served.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, resolve, sep, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const arg = (name, def) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : def;
};
const port = Number(arg("--port", "8081"));
const config = arg("--config", null);
const dirs = { "/examples/web/": join(root, "examples", "web"), "/js/dist/": join(root, "js", "dist") };
const types = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8", ".map": "application/json", ".svg": "image/svg+xml",
};

async function body(path) {
  if (path === "/examples/web/config.js" && config) return readFile(config);
  for (const [prefix, dir] of Object.entries(dirs)) {
    if (!path.startsWith(prefix)) continue;
    const file = normalize(join(dir, path.slice(prefix.length) || "index.html"));
    if (!file.startsWith(dir + sep)) return null; // no way out of the directory
    return readFile(file).catch(() => null);
  }
  return null;
}

createServer(async (req, res) => {
  let path;
  try {
    path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
  } catch {
    return res.writeHead(400).end("bad path");
  }
  if (path === "/" || path === "/examples/web") return res.writeHead(302, { location: "/examples/web/" }).end();
  const b = req.method === "GET" ? await body(path) : null;
  if (!b) return res.writeHead(404).end("not found");
  const type = types[extname(path)] ?? (path.endsWith("/") ? types[".html"] : "application/octet-stream");
  res.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(b);
}).listen(port, "127.0.0.1", () => console.log(`static files on http://127.0.0.1:${port}/`));
