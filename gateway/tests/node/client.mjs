// Usage: node client.mjs <url> <token>
// Connects with the official socket.io-client (WebSocket only, token in the
// CONNECT auth payload), starts a job with an ack, collects its events until
// `completed`, and prints one JSON line: {connected, welcome, ack, events,
// error}. `welcome` is the gateway's first event (`session:welcome:v1`),
// kept apart from the job's events.
import { io } from "socket.io-client";

const [url, token] = process.argv.slice(2);
const out = { connected: false, welcome: null, ack: null, events: [], error: null };
// Prints the result, then exits with `code` (0 ok, 1 failed): the Rust test reads both.
const done = (code) => {
  console.log(JSON.stringify(out));
  process.exit(code);
};
setTimeout(() => {
  out.error = "timeout";
  done(1);
}, 15000);

const socket = io(url, { transports: ["websocket"], auth: { token }, reconnection: false });
socket.on("connect_error", (err) => {
  out.error = `connect_error: ${err.message}`;
  done(1);
});
socket.onAny((name, env) => {
  if (name === "session:welcome:v1" && out.events.length === 0 && out.welcome === null) {
    out.welcome = env;
    return;
  }
  out.events.push({ name, env });
  if (name === "job:status:v1" && env?.data?.status === "completed") {
    socket.close();
    done(0);
  }
});
socket.on("connect", async () => {
  out.connected = true;
  out.ack = await socket
    .timeout(5000)
    .emitWithAck("job:start:v1", { key: "node-1", data: { kind: "llm", params: {} } });
});
