// The official Node socket.io v4 server the SDK's interop tests
// (tests/interop_socketio.rs, tests/browser-pkg/interop.test.mjs) talk to.
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
// CONNECT_ERROR "unauthorized". The handlers below are a plain Socket.IO app:
// plain arguments and plain ack values, as `socket.io-client` users write
// them; nothing here knows Liveline.
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

io.on("connection", (socket) => {
  // Right after CONNECT: a plain event, then one shaped like a Liveline
  // contract event (to a plain server's client it is just an event).
  socket.emit("welcome", { sid: socket.id, recovery, recovered: socket.recovered });
  socket.emit(
    "job:status:v1",
    envelope(`job:${socket.id}`, 1, { jobId: socket.id, status: "running", progress: 0.5, message: "hi" }),
  );

  // Acks: every argument comes back, unchanged (binary ones too).
  socket.on("echo", (...args) => {
    const ack = args.pop();
    ack(...args);
  });
  // A durable action from `send()`: the server sees `{key, data}` and acks
  // what it got, as it is.
  socket.on("order:v1", (action, ack) => ack({ received: action }));
  // Server-to-client ack: ask the client, then report its reply as `answer`.
  socket.on("ask", (data, ack) => {
    ack();
    socket.emit("ask", data, (...reply) => socket.emit("answer", reply));
  });
  // Binary out: nested and top-level buffers.
  socket.on("bin", (ack) => {
    ack();
    socket.emit("bin", Buffer.from([1, 2, 3]), { nested: Buffer.from([4, 5]) });
  });
  // `burst {n}`: n `tick` events, 1..n, as fast as the server can.
  socket.on("burst", ({ n }) => {
    for (let i = 1; i <= n; i++) socket.emit("tick", i);
  });
  // Enveloped events on one stream, then an event of a name nobody knows.
  socket.on("ticks", ({ n }, ack) => {
    for (let seq = 1; seq <= n; seq++) {
      socket.emit("market:tick:v1", envelope("market:BTC-USD", seq, { symbol: "BTC-USD", price: 100 + seq }));
    }
    socket.emit("mystery:event:v7", { x: 1 });
    ack({ sent: n });
  });
  // `away n`: close the transport, and once the socket is gone emit n
  // `missed` events to its room: with recovery on, the server keeps them
  // for the session and replays them when the client comes back.
  socket.on("away", (n) => {
    const room = socket.id;
    socket.on("disconnect", () => {
      for (let i = 1; i <= n; i++) io.to(room).emit("missed", i);
    });
    socket.conn.close();
  });
  // Drop the connection: `transport` closes the WebSocket, `namespace`
  // sends a DISCONNECT packet and keeps the transport open.
  socket.on("drop", (how, ack) => {
    ack();
    setTimeout(() => {
      if (how === "namespace") socket.disconnect();
      else socket.conn.close();
    }, 20);
  });
  // How many Engine.IO connections the server holds (stale sockets count).
  socket.on("transports", (ack) => ack(io.engine.clientsCount));
  // A plain event (no ack) comes back as `heard`.
  socket.on("shout", (...args) => socket.emit("heard", args));
});

http.listen(port, "127.0.0.1", () => {
  console.log(`listening ${http.address().port}`);
});

// The test harness kills us; also go when our parent goes.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
