// Usage: node defaults.mjs <url> <user token> <service token>
// The official socket.io-client with its default options (long-polling first,
// then the upgrade to WebSocket; reconnection on). It connects, publishes
// 1,000 events to its own user stream through the REST API, checks they
// arrive in order, then waits for its node to shut down gracefully and for
// the client to reconnect by itself to the node that replaces it.
//
// Prints one JSON line per step for the Rust test (tests/node_interop.rs):
//   {"step":"received", "count", "inOrder", "transport"}
//   {"step":"reconnected", "disconnectReason", "shutdownNotice"}
// and exits 0, or prints {"step":"error", "error"} and exits 1.
import { io } from "socket.io-client";

const [url, token, serviceToken] = process.argv.slice(2);
const N = 1000;
const say = (line) => console.log(JSON.stringify(line));
// The exit code is the result the Rust test reads (with the JSON lines):
// 1 here, after saying why; 0 once the reconnect was seen.
const fail = (error) => {
  say({ step: "error", error: String(error) });
  process.exit(1);
};
const timer = setTimeout(() => fail("timeout"), 60_000);

const socket = io(url, { auth: { token } });
const seqs = [];
let phase = "receiving";
let disconnectReason = null;
let shutdownNotice = null;

socket.on("connect_error", (err) => {
  // While the node is down the client retries by itself (transport errors);
  // a refusal of the token is an error here.
  if (err.message === "unauthorized") fail(`connect_error: ${err.message}`);
});
socket.on("session:shutdown:v1", (notice) => {
  shutdownNotice = notice;
});
socket.on("disconnect", (reason) => {
  disconnectReason = reason;
});
socket.on("demo:tick:v1", (env) => {
  seqs.push(env.seq);
  if (seqs.length === N) {
    const inOrder = seqs.every((s, i) => s === i + 1);
    say({ step: "received", count: seqs.length, inOrder, transport: socket.io.engine.transport.name });
    phase = "awaiting-shutdown";
  }
});
socket.on("connect", async () => {
  if (phase === "awaiting-shutdown" && disconnectReason !== null) {
    say({ step: "reconnected", disconnectReason, shutdownNotice });
    clearTimeout(timer);
    socket.close();
    process.exit(0); // the result: reconnected by itself (see the top)
  }
  if (phase !== "receiving" || seqs.length > 0) return;
  try {
    for (let n = 1; n <= N; n++) {
      const res = await fetch(`${url}/api/v1/publish`, {
        method: "POST",
        headers: { authorization: `Bearer ${serviceToken}`, "content-type": "application/json" },
        body: JSON.stringify({ user: "alice", stream: "ticks", event: "demo:tick:v1", data: { n } }),
      });
      if (!res.ok) throw new Error(`publish ${n}: ${res.status} ${await res.text()}`);
    }
  } catch (e) {
    fail(e);
  }
});
