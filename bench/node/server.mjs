// The Node reference server of bench/compare.sh: what a team would write
// with socket.io 4.8 and its Redis adapter to push job events to users.
//
//   PORT=8080 REDIS_URL=redis://127.0.0.1:6379 KEY=socket.io \
//   LIVELINE_JWT_SECRET=... node bench/node/server.mjs
//
// Per connection it does what the gateway does on its side of the load
// test: verifies the HS256 JWT in the CONNECT payload (`auth.token`,
// issuer and audience "liveline"), joins the user's room `user:<sub>`, and
// answers `job:start:v1` with a new job id. Events reach the rooms from a
// worker through @socket.io/redis-emitter (publish.mjs) and the adapter's
// Redis pub/sub; nothing is stored, so nothing can be resumed. It serves
// GET /healthz and prints `listening <port>` once ready.
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { createAdapter } from "@socket.io/redis-adapter";
import jwt from "jsonwebtoken";
import { createClient } from "redis";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 0);
const secret = process.env.LIVELINE_JWT_SECRET ?? "liveline-dev-secret";
const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const key = process.env.KEY ?? "socket.io";

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
for (const c of [pub, sub]) c.on("error", (e) => console.error("redis:", e.message));
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok");
  }
  // Anything else is socket.io's (it answers /socket.io/ itself).
});
const io = new Server(http, { adapter: createAdapter(pub, sub, { key }) });

io.use((socket, next) => {
  const token = socket.handshake.auth?.token;
  jwt.verify(
    token ?? "",
    secret,
    { algorithms: ["HS256"], issuer: "liveline", audience: "liveline" },
    (err, claims) => {
      if (err || typeof claims?.sub !== "string") return next(new Error("unauthorized"));
      socket.data.user = claims.sub;
      next();
    },
  );
});

io.on("connection", (socket) => {
  socket.join(`user:${socket.data.user}`);
  // The SDK's send() carries `{key, data}`; the answer is a plain ack value.
  socket.on("job:start:v1", (_action, ack) => {
    if (typeof ack === "function") ack({ jobId: randomBytes(8).toString("hex") });
  });
});

http.listen(port, "127.0.0.1", () => console.log(`listening ${http.address().port}`));
