// A TCP proxy on 127.0.0.1 that a test controls, to put a faulty network between an agent and the
// gateway: pass bytes through, hold them (a partition: nothing moves, nobody is told), or cut every
// connection and refuse new ones (RST), then restore.
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";

export type ProxyMode = "pass" | "partition" | "refuse";

interface Pipe {
  client: Socket;
  upstream: Socket;
}

export class TcpProxy {
  private mode: ProxyMode = "pass";
  private readonly pipes = new Set<Pipe>();
  /** Connections accepted since the proxy started (including refused and held ones). */
  accepted = 0;
  refused = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {
    server.on("connection", (client) => this.onConnection(client));
  }

  /** Listens on 127.0.0.1 (a free port) and forwards to `target` (e.g. the gateway's origin). */
  static async start(target: string | URL): Promise<TcpProxy> {
    const url = new URL(target);
    const server = createServer({ pauseOnConnect: true, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("proxy has no port");
    return new TcpProxy(server, address.port, { host: url.hostname, port: Number(url.port) });
  }

  /** What agents are given instead of the gateway's origin. */
  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get connections(): number {
    return this.pipes.size;
  }

  /**
   * A network partition: bytes already sent stay in flight, nothing more is delivered either way, and
   * nobody sees a FIN or RST. New connections are accepted and held the same way. Only heartbeats can
   * tell that the peer is gone.
   */
  partition(): void {
    this.mode = "partition";
    for (const { client, upstream } of this.pipes) {
      client.pause();
      upstream.pause();
    }
  }

  /** Cuts every connection with a RST and refuses (RSTs) new ones until restore(). */
  cut(): void {
    this.mode = "refuse";
    for (const pipe of [...this.pipes]) this.drop(pipe);
  }

  /** Back to passing bytes; held connections resume where they stopped, as TCP would after a partition. */
  restore(): void {
    this.mode = "pass";
    for (const { client, upstream } of this.pipes) {
      client.resume();
      upstream.resume();
    }
  }

  async close(): Promise<void> {
    for (const pipe of [...this.pipes]) this.drop(pipe);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(client: Socket): void {
    this.accepted += 1;
    if (this.mode === "refuse") {
      this.refused += 1;
      client.resetAndDestroy();
      return;
    }
    const upstream = tcpConnect({ host: this.target.host, port: this.target.port, noDelay: true });
    const pipe: Pipe = { client, upstream };
    this.pipes.add(pipe);
    this.forward(client, upstream);
    this.forward(upstream, client);
    const end = () => this.drop(pipe);
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
    if (this.mode === "partition") upstream.pause();
    else client.resume(); // pauseOnConnect held it until now
  }

  /** Like pipe(), except that a drain never resumes a socket the partition paused. */
  private forward(from: Socket, to: Socket): void {
    from.on("data", (chunk: Buffer) => {
      if (to.write(chunk)) return;
      from.pause();
      to.once("drain", () => {
        if (this.mode === "pass") from.resume();
      });
    });
    from.on("end", () => to.end());
  }

  private drop(pipe: Pipe): void {
    if (!this.pipes.delete(pipe)) return;
    pipe.client.resetAndDestroy();
    pipe.upstream.resetAndDestroy();
  }
}
