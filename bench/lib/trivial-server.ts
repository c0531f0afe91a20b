// A trivial HTTP server (child process) that answers every request with a fixed 8-token body, so
// the load generator's own ceiling can be measured: whatever it reaches here bounds every other row.
import { createServer } from "node:http";

const body = Buffer.from('{"text":"tok~tok~tok~tok~tok~tok~tok~tok~"}');
const server = createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  process.send?.({ type: "ready", port });
});
process.on("disconnect", () => process.exit(0));
process.on("message", (m: { type?: string }) => {
  if (m?.type === "stop") process.exit(0);
});
