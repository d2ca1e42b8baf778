// One client port for gRPC and HTTP, as etcd serves them (etcd uses cmux): each new connection
// is sorted by its first bytes. The HTTP/2 client preface ("PRI * HTTP/2.0…") goes to grpc-js;
// anything else is HTTP/1.x and goes to the gateway's http.Server. The cost is one look at the
// first bytes per connection, nothing per request.
//
// An https:// client URL is the same behind TLS (etcd serves gRPC and HTTP on its TLS port
// too): the handshake first (certificate re-read when its files changed, tls_info.ts), then the
// same sorting of the decrypted bytes. ALPN: HTTP/1.1 is preferred when offered (curl, browsers
// talk to the gateway) and h2 is given to clients offering only it (gRPC).
import net from 'node:net';
import tls from 'node:tls';
import type http from 'node:http';
import { type TlsSource, reloadPerConnection, serverOptions, tlsRemoteAddress } from '../tls/tls_info';
import { markConnection } from './tls';

/** ALPN protocols of the client port, in the server's order of preference. */
export const clientAlpn = ['http/1.1', 'h2'];
/** Handshakes not done within this are dropped (node's default is 120 s). */
const handshakeTimeoutMs = 10_000;

/** A TLS handshake a client failed (no certificate, unknown CA, ...): for the log. */
export type TlsRejected = (remote: string, error: string) => void;

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

  constructor(private readonly grpc: ConnectionSink, private readonly http: http.Server,
    private readonly onTlsRejected: TlsRejected = () => {}) {
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

  /**
   * Listens on host:port (or a unix socket path), behind TLS when `tlsSource` is given;
   * resolves with the bound port (0 for unix).
   */
  listen(host: string, port: number, unixPath?: string, tlsSource?: TlsSource): Promise<number> {
    let server: net.Server;
    if (tlsSource === undefined) {
      server = net.createServer({ noDelay: true, pauseOnConnect: false }, (socket) => this.sort(socket));
    } else {
      const secure = tls.createServer({ ...serverOptions(tlsSource, clientAlpn), handshakeTimeout: handshakeTimeoutMs, noDelay: true }, (socket) => {
        markConnection(socket);
        this.sort(socket);
      });
      reloadPerConnection(secure, tlsSource, clientAlpn);
      // Sockets still in their handshake are closed at shutdown too.
      secure.on('connection', (raw: net.Socket) => {
        this.sockets.add(raw);
        raw.once('close', () => this.sockets.delete(raw));
      });
      secure.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
        this.onTlsRejected(tlsRemoteAddress(socket), (err as { reason?: string }).reason ?? err.message);
      });
      server = secure;
    }
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
