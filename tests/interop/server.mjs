// The official Node socket.io v4 server the SDK's interop tests
// (tests/interop_socketio.rs) talk to.
//
//   node tests/interop/server.mjs [port] [--recovery]
//
// Listens on 127.0.0.1:<port> (0, the default, picks a free port; so does
// $PORT) and prints `listening <port>` on stdout once ready. WebSocket
// transport only. `--recovery` turns on connection-state recovery: events
// without an ack then carry a trailing offset argument and CONNECT replies a
// `pid`.
//
// Auth: the CONNECT payload's `token` must be "good"; anything else gets a
// CONNECT_ERROR "unauthorized". Actions (events the SDK sends with an ack,
// argument `{key, data}`) drive the rest; see the handlers below.
import { createServer } from "node:http";
import { Server } from "socket.io";

const args = process.argv.slice(2);
const recovery = args.includes("--recovery");
const port = Number(args.find((a) => /^\d+$/.test(a)) ?? process.env.PORT ?? 0);

const http = createServer();
const io = new Server(http, {
  transports: ["websocket"],
  // Short heartbeats, so a test sees several while it runs.
  pingInterval: 500,
  pingTimeout: 500,
  ...(recovery ? { connectionStateRecovery: { maxDisconnectionDuration: 60_000 } } : {}),
});

io.use((socket, next) => {
  if (socket.handshake.auth?.token === "good") next();
  else next(new Error("unauthorized"));
});

const envelope = (stream, seq, data) => ({ stream, epoch: "e1", seq, ts: Date.now(), data });
const ok = (data) => ({ ok: true, data: data ?? null });

io.on("connection", (socket) => {
  // Server-to-client events right after CONNECT: one contract event, one unknown.
  socket.emit("welcome", { sid: socket.id, recovery });
  socket.emit(
    "job:status:v1",
    envelope(`job:${socket.id}`, 1, { jobId: socket.id, status: "running", progress: 0.5, message: "hi" }),
  );

  // Client-to-server ack: the action's data comes back.
  socket.on("echo:v1", (action, ack) => ack(ok(action?.data)));
  // A refused action.
  socket.on("refuse:v1", (_action, ack) =>
    ack({ ok: false, error: { code: "not_allowed", message: "refused by the test server" } }),
  );
  // Server-to-client ack: ask the client, then report its reply as `answer`.
  socket.on("ask:v1", (action, ack) => {
    ack(ok());
    socket.emit("ask", action?.data, (...reply) => socket.emit("answer", reply));
  });
  // A binary event.
  socket.on("bin:v1", (_action, ack) => {
    ack(ok());
    socket.emit("bin", Buffer.from([1, 2, 3]), { nested: Buffer.from([4, 5]) });
  });
  // Contract events on a stream, then an event this SDK does not know.
  socket.on("ticks:v1", (action, ack) => {
    const n = action?.data?.n ?? 3;
    for (let seq = 1; seq <= n; seq++) {
      socket.emit("market:tick:v1", envelope("market:BTC-USD", seq, { symbol: "BTC-USD", price: 100 + seq }));
    }
    socket.emit("mystery:event:v7", { x: 1 });
    ack(ok({ sent: n }));
  });
  // Drop the connection: `transport` closes the WebSocket, `namespace`
  // sends a DISCONNECT packet and keeps the transport open.
  socket.on("drop:v1", (action, ack) => {
    ack(ok());
    setTimeout(() => {
      if (action?.data === "namespace") socket.disconnect();
      else socket.conn.close();
    }, 20);
  });
  // How many Engine.IO connections the server holds (stale sockets count).
  socket.on("transports:v1", (_action, ack) => ack(ok(io.engine.clientsCount)));
  // A plain event (no ack) comes back as `heard`.
  socket.on("shout", (...args) => socket.emit("heard", args));
});

http.listen(port, "127.0.0.1", () => {
  console.log(`listening ${http.address().port}`);
});

// The test harness kills us; also go when our parent goes.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
