// Unary gRPC calls answered straight from node's HTTP/2 stream, without grpc-js's per-call
// machinery; streaming calls (and anything unusual) still go to grpc-js on the same connection.
//
// Why: measured on the dev machine with the perf load generator at 64 clients, a grpc-js server
// whose handler answers a constant costs 52-60 µs of CPU per call, a bare node:http2 handler
// answering the same bytes 33-39 µs (18.6-21.7k vs 28.4-33.9k calls/s). The main thread is
// concord's bottleneck (hardware.md), so this is the largest single lever on throughput.
//
// How: concord owns the http2 server. grpc-js attaches its 'stream' and 'session' listeners to
// it through Server._setupHandlers (the method its own bind and connection injector use; pinned
// grpc-js version, checked at start: without it concord falls back to grpc-js's injector). The
// 'stream' listener is then wrapped: a unary method of the service table with a plain
// `application/grpc` request is served here with the very handlers, deserializers and call
// counters registered with grpc-js; every other stream is passed to grpc-js's listener untouched.
//
// Wire behaviour kept from grpc-js/grpc-go: one length-prefixed message each way, response
// headers + message + trailers (`grpc-status: 0`), errors as a trailers-only response with
// `grpc-status` and a percent-encoded `grpc-message`. The `grpc-timeout` header is not enforced
// here (the client enforces its deadline; a late answer to a cancelled stream is dropped).
import http2 from 'node:http2';
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { connectionCommonName } from '../tls';

type UnaryHandler = (call: unknown, callback: grpc.sendUnaryData<unknown>) => void;

export interface UnaryRoute {
  /** The wrapped definition: its deserializer refuses oversize/malformed requests in etcd's words. */
  def: grpc.MethodDefinition<unknown, unknown>;
  /** The guarded handler (counts the call, answers refused requests). */
  handler: UnaryHandler;
}

type DuplexHandler = (call: unknown) => void;

/** A bidi method served here too (Watch, LeaseKeepAlive): see FastDuplexCall. */
export interface DuplexRoute {
  def: grpc.MethodDefinition<unknown, unknown>;
  handler: DuplexHandler;
}

type StreamListener = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;

/** Bigger bodies are refused while they arrive (grpc-js's own cap is twice the request limit). */
function tooLarge(size: number, max: number): { code: number; details: string } {
  return { code: grpc.status.RESOURCE_EXHAUSTED, details: `Received message larger than max (${size} vs. ${max})` };
}

function ignoreError(): void {
  // A client reset or vanished: there is nobody to answer; the stream is cleaned up by node.
}

/** The call object handlers see: the request; metadata and peer built only if asked for. */
class FastCall {
  private meta: grpc.Metadata | null = null;
  constructor(readonly request: unknown, private readonly stream: http2.ServerHttp2Stream, private readonly headers: http2.IncomingHttpHeaders) {}
  get metadata(): grpc.Metadata {
    if (this.meta === null) this.meta = grpc.Metadata.fromHttp2Headers(this.headers);
    return this.meta;
  }

  /** One request header, without building the Metadata (request_gate.ts asks per call). */
  header(name: string): string | undefined {
    const v = this.headers[name];
    return Array.isArray(v) ? v[0] : v;
  }
  get cancelled(): boolean {
    return this.stream.aborted;
  }
  /** Only 'cancelled' (the client went away), for handlers that wait (Lock, Campaign). */
  on(event: string, listener: () => void): this {
    if (event === 'cancelled') this.stream.once('aborted', listener);
    return this;
  }
  getPeer(): string {
    return this.stream.session?.socket?.remoteAddress ?? 'unknown';
  }
  /** The CN of the connection's verified client certificate (api/tls.ts clientCertCommonName). */
  tlsCommonName(): string | undefined {
    return connectionCommonName(this.stream.session?.socket);
  }
}

export class UnaryFastPath {
  private readonly server: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();

  private constructor(server: http2.Http2Server) {
    this.server = server;
  }

  /**
   * Builds the http2 server with grpc-js's listeners and the fast path in front of them; null
   * when this grpc-js does not offer the hook (the caller then uses grpc-js's injector).
   */
  static create(grpcServer: grpc.Server, routes: Map<string, UnaryRoute>, opts: { maxConcurrentStreams: number; recvBytesMax: number },
    duplexRoutes: Map<string, DuplexRoute> = new Map()): UnaryFastPath | null {
    const setup = (grpcServer as unknown as { _setupHandlers?: (s: http2.Http2Server, interceptors: unknown[]) => void })._setupHandlers;
    if (typeof setup !== 'function') return null;
    const server = http2.createServer({
      maxSendHeaderBlockLength: Number.MAX_SAFE_INTEGER,
      maxSessionMemory: Number.MAX_SAFE_INTEGER,
      settings: { maxConcurrentStreams: opts.maxConcurrentStreams },
    });
    server.setTimeout(0);
    setup.call(grpcServer, server, []);
    const grpcListeners = server.listeners('stream') as StreamListener[];
    if (grpcListeners.length !== 1) return null;
    const toGrpc = grpcListeners[0]!;
    server.removeAllListeners('stream');
    const fast = new UnaryFastPath(server);
    const hardMax = opts.recvBytesMax * 2; // what grpc-js itself would accept
    server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
      const path = headers[':path'] as string;
      const route = routes.get(path);
      const duplex = route === undefined ? duplexRoutes.get(path) : undefined;
      const ct = headers['content-type'];
      const enc = headers['grpc-encoding'];
      if ((route === undefined && duplex === undefined) || headers[':method'] !== 'POST' || typeof ct !== 'string' ||
        !ct.startsWith('application/grpc') || (enc !== undefined && enc !== 'identity')) {
        toGrpc.call(server, stream, headers, flags, rawHeaders);
        return;
      }
      if (route !== undefined) serveUnary(route, stream, headers, hardMax);
      else duplex!.handler(new FastDuplexCall(stream, headers, duplex!.def, hardMax));
    });
    server.on('session', (session: http2.ServerHttp2Session) => {
      fast.sessions.add(session);
      session.once('close', () => fast.sessions.delete(session));
    });
    return fast;
  }

  injectConnection(socket: net.Socket): void {
    this.server.emit('connection', socket);
  }

  /**
   * GOAWAY to every connection: no new streams; streams in flight still get their answers (the
   * server answers them as it stops); whatever is left is destroyed after `graceMs`.
   */
  close(graceMs = 2000): void {
    const open = [...this.sessions];
    for (const s of open) s.close();
    if (open.length > 0) {
      setTimeout(() => {
        for (const s of open) if (!s.destroyed) s.destroy();
      }, graceMs).unref();
    }
  }
}

function sendStatus(stream: http2.ServerHttp2Stream, code: number, message: string): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  try {
    stream.respond({
      ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(code), 'grpc-message': encodeURI(message),
    }, { endStream: true });
  } catch {
    // the stream went away between the check and the answer
  }
}

function serveUnary(route: UnaryRoute, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, hardMax: number): void {
  stream.on('error', ignoreError);
  const chunks: Buffer[] = [];
  let size = 0;
  let refused = false;
  stream.on('data', (chunk: Buffer) => {
    if (refused) return;
    size += chunk.length;
    if (size - 5 > hardMax) {
      refused = true;
      const s = tooLarge(size - 5, hardMax);
      sendStatus(stream, s.code, s.details);
      return;
    }
    chunks.push(chunk);
  });
  stream.on('end', () => {
    if (refused) return;
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
    if (body.length < 5 || body.readUInt32BE(1) !== body.length - 5) {
      // No message, a truncated one, or more than one for a unary method.
      sendStatus(stream, grpc.status.INTERNAL, body.length < 5 ? 'grpc: error unmarshalling request: unexpected EOF' : 'grpc: malformed message framing for a unary call');
      return;
    }
    if (body[0] !== 0) {
      sendStatus(stream, grpc.status.INTERNAL, 'grpc: compressed flag set with identity or empty encoding');
      return;
    }
    const request = route.def.requestDeserialize(body.subarray(5));
    const call = new FastCall(request, stream, headers);
    route.handler(call, (err, value) => {
      if (stream.destroyed || stream.closed) return;
      if (err) {
        const e = err as { code?: number; details?: string; message?: string };
        sendStatus(stream, e.code ?? grpc.status.UNKNOWN, e.details ?? e.message ?? '');
        return;
      }
      const bytes = route.def.responseSerialize(value);
      const frame = Buffer.allocUnsafe(5 + bytes.length);
      frame[0] = 0;
      frame.writeUInt32BE(bytes.length, 1);
      bytes.copy(frame, 5);
      try {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(frame);
      } catch {
        // the stream went away meanwhile
      }
    });
  });
}

/**
 * A bidi call served from the http2 stream: requests are parsed from the gRPC frames as they
 * arrive and emitted as 'data'; responses are framed here, or come framed already
 * (writeFramed: the watch worker frames a stream's responses of one turn in one piece, so one
 * socket write carries them all). Emits what grpc-js's ServerDuplexStream emits for the
 * handlers' use: 'data', 'end' (client half-close), 'cancelled' (client gone), 'error' (the
 * handler ends the call with a status), 'finish', 'close'.
 */
class FastDuplexCall extends EventEmitter {
  private readonly stream: http2.ServerHttp2Stream;
  private readonly headers: http2.IncomingHttpHeaders;
  private readonly def: grpc.MethodDefinition<unknown, unknown>;
  private readonly hardMax: number;
  private pending: Buffer | null = null;
  private status: { code: number; details: string } = { code: grpc.status.OK, details: '' };
  private done = false;
  private meta: grpc.Metadata | null = null;

  constructor(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, def: grpc.MethodDefinition<unknown, unknown>, hardMax: number) {
    super();
    this.stream = stream;
    this.headers = headers;
    this.def = def;
    this.hardMax = hardMax;
    stream.on('error', ignoreError);
    try {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    } catch {
      this.done = true;
      return;
    }
    stream.once('wantTrailers', () => {
      const t: http2.OutgoingHttpHeaders = { 'grpc-status': String(this.status.code) };
      if (this.status.details !== '') t['grpc-message'] = encodeURI(this.status.details);
      try {
        stream.sendTrailers(t);
      } catch {
        // gone meanwhile
      }
    });
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('end', () => this.emit('end'));
    stream.once('close', () => {
      if (!this.done) {
        this.done = true;
        this.emit('cancelled');
      }
      this.emit('close');
    });
    // The handler (or the call guard) ends the call with a status by emitting 'error'.
    this.on('error', (s: { code?: number; details?: string; message?: string }) => {
      this.finish({ code: s.code ?? grpc.status.UNKNOWN, details: s.details ?? s.message ?? '' });
    });
  }

  get metadata(): grpc.Metadata {
    if (this.meta === null) this.meta = grpc.Metadata.fromHttp2Headers(this.headers);
    return this.meta;
  }

  /** One request header, without building the Metadata (request_gate.ts asks per call). */
  header(name: string): string | undefined {
    const v = this.headers[name];
    return Array.isArray(v) ? v[0] : v;
  }

  get cancelled(): boolean {
    return this.stream.aborted;
  }

  getPeer(): string {
    return this.stream.session?.socket?.remoteAddress ?? 'unknown';
  }
  /** The CN of the connection's verified client certificate (api/tls.ts clientCertCommonName). */
  tlsCommonName(): string | undefined {
    return connectionCommonName(this.stream.session?.socket);
  }

  private onData(chunk: Buffer): void {
    if (this.done) return;
    let buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = null;
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1);
      if (len > this.hardMax) {
        this.emit('error', tooLarge(len, this.hardMax));
        return;
      }
      if (buf.length < 5 + len) break;
      if (buf[0] !== 0) {
        this.emit('error', { code: grpc.status.INTERNAL, details: 'grpc: compressed flag set with identity or empty encoding' });
        return;
      }
      const msg = this.def.requestDeserialize(buf.subarray(5, 5 + len));
      buf = buf.subarray(5 + len);
      this.emit('data', msg);
      if (this.done) return;
    }
    if (buf.length > 0) this.pending = Buffer.from(buf);
  }

  write(value: unknown, cb?: () => void): boolean {
    if (this.done) return false;
    const bytes = this.def.responseSerialize(value);
    const frame = Buffer.allocUnsafe(5 + bytes.length);
    frame[0] = 0;
    frame.writeUInt32BE(bytes.length, 1);
    bytes.copy(frame, 5);
    return this.stream.write(frame, cb);
  }

  writeFramed(frames: Uint8Array, cb: () => void): void {
    if (this.done) return;
    this.stream.write(frames, cb);
  }

  /** Ends the call with OK (grpc-js: call.end()). */
  end(): void {
    this.finish({ code: grpc.status.OK, details: '' });
  }

  private finish(status: { code: number; details: string }): void {
    if (this.done) return;
    this.done = true;
    this.status = status;
    try {
      this.stream.end();
    } catch {
      // gone meanwhile
    }
    if (status.code === grpc.status.OK) this.emit('finish');
  }
}
