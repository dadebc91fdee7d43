/** Servers started inside the guest for the raw-path baseline and the diagnostic rows. */
import { setTimeout as sleep } from "node:timers/promises";
import type { BenchStack } from "../support/stack.js";
import { getDiscard } from "./http.js";

export const GUEST_PORT = 9000;
export const GUEST_DIR = "/home/user";

/** The guest's HTTP server for the raw path: PUT writes the body to a file, GET streams it. */
export const GUEST_SERVER = `
import http.server, os, shutil
D = ${JSON.stringify(GUEST_DIR)}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def target(self):
        return os.path.join(D, os.path.basename(self.path.split("?")[0]) or "raw.bin")
    def do_PUT(self):
        n = int(self.headers["Content-Length"])
        with open(self.target(), "wb") as f:
            while n > 0:
                b = self.rfile.read(min(n, 1 << 20))
                if not b: break
                f.write(b)
                n -= len(b)
        self.send_response(200 if n == 0 else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        p = self.target()
        if not os.path.exists(p):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(p)))
        self.end_headers()
        with open(p, "rb") as f:
            shutil.copyfileobj(f, self.wfile, 1 << 20)
http.server.ThreadingHTTPServer(("0.0.0.0", ${GUEST_PORT}), H).serve_forever()
`;

/**
 * The same server in Node, for the diagnostic rows: once with V8's JIT, once with the flags
 * envd runs with under TCG (images/guest/supervise-envd), to tell the guest's CPU cost of a
 * JavaScript server from that of the hops in front of it.
 */
export const GUEST_NODE_SERVER = `
const http = require("node:http"), fs = require("node:fs"), path = require("node:path");
const D = ${JSON.stringify(GUEST_DIR)};
http.createServer((req, res) => {
  const p = path.join(D, path.basename(req.url.split("?")[0]) || "raw.bin");
  if (req.method === "PUT") {
    const f = fs.createWriteStream(p);
    req.pipe(f);
    f.on("finish", () => { res.writeHead(200, { "content-length": 0 }); res.end(); });
    f.on("error", (e) => { res.writeHead(500); res.end(String(e)); });
    return;
  }
  fs.stat(p, (err, st) => {
    if (err) { res.writeHead(404, { "content-length": 0 }); res.end(); return; }
    res.writeHead(200, { "content-length": st.size });
    fs.createReadStream(p, { highWaterMark: Number(process.argv[2]) }).pipe(res);
  });
}).listen(Number(process.argv[1]), "0.0.0.0");
`;
export const ENVD_TCG_NODE_FLAGS = [
  "--no-opt",
  "--no-sparkplug",
  "--no-maglev",
  "--regexp-interpret-all",
];

/** Starts a guest server as a background process (REST) and waits until the proxy reaches it. */
export async function startGuestServer(
  s: BenchStack,
  id: string,
  port: number,
  cmd: string,
  args: string[],
): Promise<string> {
  const started = await s.api("POST", `/v1/sandboxes/${id}/processes`, {
    cmd,
    args,
    tag: `bench-${port}`,
  });
  if (started.status !== 201 && started.status !== 200)
    throw new Error(`starting the guest server: ${started.status} ${JSON.stringify(started.body)}`);
  const base = `${s.agent.url}/proxy/${id}/${port}`;
  for (let i = 0; i < 150; i++) {
    const r = await getDiscard(`${base}/ping`, {}).catch(() => undefined);
    // 502 = the agent's "port is not open"; the guest server answers 404 for a missing file.
    if (r && r.status === 404) return base;
    await sleep(200);
  }
  throw new Error(`the guest server on :${port} did not answer through ${base}`);
}
