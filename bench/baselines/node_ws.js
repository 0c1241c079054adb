// Node's `ws` beside the limit: what arrives in one turn of the event loop is parsed, encoded once
// (one batch frame when several), and the same Buffer sent to every subscriber.
//   node bench/baselines/node_ws.js PORT     (ws installed by `make bench-e2e` into bench/.node)
"use strict";
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2]);
const subscribers = new Set();
let pending = [];

function flush() {
  const messages = pending;
  pending = [];
  const data = Buffer.from(JSON.stringify(messages.length === 1 ? messages[0] : { type: "batch", messages }));
  for (const ws of subscribers) ws.send(data, { binary: false });
}

const server = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false, backlog: 4096 });
server.on("connection", (ws, request) => {
  const path = request.url.split("?")[0];
  if (path === "/ws") {
    subscribers.add(ws);
    ws.on("close", () => subscribers.delete(ws));
  } else if (path === "/publish") {
    ws.on("message", (data) => {
      if (pending.length === 0) setImmediate(flush);
      pending.push(JSON.parse(data));
    });
  } else {
    ws.close(1008);
  }
});
server.on("listening", () => console.log(`listening on ${port}`));
