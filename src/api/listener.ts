// One client port for gRPC and HTTP, as etcd serves them (etcd uses cmux): each new connection
// is sorted by its first bytes. The HTTP/2 client preface ("PRI * HTTP/2.0…") goes to grpc-js;
// anything else is HTTP/1.x and goes to the gateway's http.Server. The cost is one look at the
// first bytes per connection, nothing per request.
import net from 'node:net';
import type http from 'node:http';

export interface ConnectionSink {
  injectConnection(socket: net.Socket): void;
}

const H2_PREFIX = Buffer.from('PRI', 'latin1');

export class ClientListener {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();

  /** HTTP/1.1 connections -> requests in flight on them (to close idle ones at shutdown). */
  private readonly httpBusy = new Map<net.Socket, number>();
  private closing = false;

  constructor(private readonly grpc: ConnectionSink, private readonly http: http.Server) {
    http.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      const socket = req.socket;
      if (!this.httpBusy.has(socket)) return;
      this.httpBusy.set(socket, this.httpBusy.get(socket)! + 1);
      res.once('close', () => {
        const n = (this.httpBusy.get(socket) ?? 1) - 1;
        this.httpBusy.set(socket, n);
        if (this.closing && n === 0) socket.destroy();
      });
    });
  }

  /** Listens on host:port (or a unix socket path); resolves with the bound port (0 for unix). */
  listen(host: string, port: number, unixPath?: string): Promise<number> {
    const server = net.createServer({ noDelay: true, pauseOnConnect: false }, (socket) => this.sort(socket));
    this.servers.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      const onListening = (): void => {
        server.off('error', reject);
        const a = server.address();
        resolve(a !== null && typeof a === 'object' ? a.port : 0);
      };
      if (unixPath !== undefined) server.listen(unixPath, onListening);
      else server.listen(port, host, onListening);
    });
  }

  private sort(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    let head: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const n = Math.min(head.length, H2_PREFIX.length);
      const isH2Prefix = head.subarray(0, n).equals(H2_PREFIX.subarray(0, n));
      if (isH2Prefix && head.length < H2_PREFIX.length) return; // need more bytes to decide
      socket.off('data', onData);
      socket.off('error', onEarlyError);
      socket.pause();
      socket.unshift(head);
      if (isH2Prefix) {
        // node's http2 session reads what is buffered on the socket itself (on the next tick);
        // resuming here would emit those bytes to nobody.
        this.grpc.injectConnection(socket);
      } else {
        this.httpBusy.set(socket, 0);
        socket.once('close', () => this.httpBusy.delete(socket));
        this.http.emit('connection', socket);
        socket.resume();
      }
    };
    const onEarlyError = (): void => {
      socket.destroy();
    };
    socket.on('error', onEarlyError);
    socket.on('data', onData);
  }

  /** Stops accepting; open connections are closed by their servers (or destroyed after `graceMs`). */
  close(graceMs = 2000): Promise<void> {
    const closing = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    // HTTP/1.1 keep-alive connections with no request in flight would otherwise hold the close
    // for the whole grace period (Go's http.Server.Shutdown closes idle ones at once); those
    // busy now are closed as soon as their response is done.
    this.closing = true;
    for (const [socket, busy] of this.httpBusy) if (busy === 0) socket.destroy();
    const timer = setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, graceMs);
    timer.unref();
    return Promise.all(closing).then(() => clearTimeout(timer));
  }
}
