// A minimal HTTP/2 client for gRPC unary and streaming calls, written on a raw TCP socket so that the load
// generator costs a small fraction of what the server under test costs per request (node:http2
// costs the client ~100+ µs of CPU per call on this machine, more than the servers themselves).
//
// What it does: the client preface and SETTINGS, one precomputed HPACK header block per method
// (static-table indices and literals without indexing, so no dynamic table is ever needed), a
// HEADERS + DATA frame pair per request, and frame parsing of responses. It never decodes
// response headers: a unary gRPC call succeeded when a DATA frame (the response message) came
// before the end of the stream; an error is trailers-only (HEADERS with END_STREAM, no DATA) or
// RST_STREAM. Flow control: our receive windows are opened wide and refilled; our send windows
// (the connection's and each stream's) are tracked so a request waits rather than overrunning the
// server's, and a message larger than the server's frame size limit (16 KiB unless it says more)
// goes out as several DATA frames, as far as the windows allow at a time.
//
// TLS (options.tls): the same over a TLS socket that negotiated h2 by ALPN (:scheme https). Auth:
// the caller authenticates once per connection (unaryCall) and builds that connection's header
// blocks with the token (grpcHeaderBlock's `token`), as etcd's clients send it on every call.
//
// Streaming calls (openStream/sendMessage/endStream, used by the watch benchmark): HEADERS
// without END_STREAM, then one DATA frame per request message; response DATA is cut into gRPC
// messages (a message may span DATA frames and socket reads) and handed to the stream's handler
// as a byte range of the receive buffer, so a handler that decodes only a few fields copies
// nothing. Long-lived streams get their own WINDOW_UPDATEs. Like unary calls, the end of a
// stream is not decoded: a stream that ends before any message ended with a gRPC error status.
import net from 'node:net';
import tls from 'node:tls';

const FRAME_DATA = 0;
const FRAME_HEADERS = 1;
const FRAME_RST_STREAM = 3;
const FRAME_SETTINGS = 4;
const FRAME_PING = 6;
const FRAME_GOAWAY = 7;
const FRAME_WINDOW_UPDATE = 8;
const FLAG_END_STREAM = 0x1;
const FLAG_PADDED = 0x8;
const FLAG_ACK = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const SETTINGS_MAX_FRAME_SIZE = 0x5;
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const RECV_WINDOW = 1 << 30;

function hpackInt(out: number[], value: number, prefixBits: number, firstByte: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(firstByte | value);
    return;
  }
  out.push(firstByte | max);
  value -= max;
  while (value >= 128) {
    out.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  out.push(value);
}

function hpackString(out: number[], s: string): void {
  const bytes = Buffer.from(s, 'latin1');
  hpackInt(out, bytes.length, 7, 0);
  for (const b of bytes) out.push(b);
}

export interface HeaderOptions {
  /** :scheme (default http). */
  scheme?: 'http' | 'https';
  /** gRPC metadata `token`: an auth token from Authenticate. */
  token?: string;
}

/** HPACK block for a gRPC POST to `path` (RFC 7541 static table indices). */
export function grpcHeaderBlock(authority: string, path: string, opts: HeaderOptions = {}): Buffer {
  const out: number[] = [];
  out.push(0x83); // :method POST (static 3)
  out.push(opts.scheme === 'https' ? 0x87 : 0x86); // :scheme https (static 7) or http (static 6)
  hpackInt(out, 4, 4, 0x00); // :path, literal without indexing, indexed name 4
  hpackString(out, path);
  hpackInt(out, 1, 4, 0x00); // :authority (static 1)
  hpackString(out, authority);
  hpackInt(out, 31, 4, 0x00); // content-type (static 31)
  hpackString(out, 'application/grpc');
  out.push(0x00); // literal without indexing, new name
  hpackString(out, 'te');
  hpackString(out, 'trailers');
  if (opts.token !== undefined) {
    out.push(0x00); // literal without indexing, new name
    hpackString(out, 'token');
    hpackString(out, opts.token);
  }
  return Buffer.from(out);
}

function frameHeader(buf: Buffer, at: number, length: number, type: number, flags: number, streamId: number): void {
  buf[at] = (length >>> 16) & 0xff;
  buf[at + 1] = (length >>> 8) & 0xff;
  buf[at + 2] = length & 0xff;
  buf[at + 3] = type;
  buf[at + 4] = flags;
  buf.writeUInt32BE(streamId & 0x7fffffff, at + 5);
}

function controlFrame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(9 + payload.length);
  frameHeader(b, 0, payload.length, type, flags, streamId);
  payload.copy(b, 9);
  return b;
}

/** Called once per finished request with the tag given to request(). */
export type DoneHandler = (tag: number, ok: boolean) => void;

/** Receives what a streaming call brings. */
export interface StreamHandler {
  /** One response message: bytes buf[start, end), valid only during the call. */
  onMessage(buf: Buffer, start: number, end: number): void;
  /** The stream is over (trailers, RST_STREAM or the connection went away); `messages` = how many came. */
  onEnd(reason: string, messages: number): void;
}

interface StreamState {
  handler: StreamHandler;
  messages: number;
  /** Unacknowledged received bytes (stream-level WINDOW_UPDATE when large). */
  received: number;
  /** A message cut by a frame or read boundary: its 5-byte prefix so far, then its body. */
  prefix: Buffer;
  prefixHave: number;
  body: Buffer | null;
  bodyHave: number;
}

/**
 * What waits for a send window: a unary request (headerBlock set; streamId 0 until its HEADERS
 * are sent), a message on an open stream, or a stream's end (empty payload, endStream).
 * `payload` is the gRPC-framed message, `sent` how much of it has gone out.
 */
interface Queued { headerBlock: Buffer | null; payload: Buffer; sent: number; tag: number; streamId: number; endStream: boolean }

/** TLS for a connection: PEM contents (ca verifies the server; cert and key for mTLS). */
export interface H2TlsOptions { ca?: Buffer; cert?: Buffer; key?: Buffer }

export interface H2Options { tls?: H2TlsOptions }

/** The gRPC message framing: a 5-byte prefix (not compressed, length) and the message. */
function grpcMessage(body: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(5 + body.length);
  b[0] = 0;
  b.writeUInt32BE(body.length, 1);
  b.set(body, 5);
  return b;
}

export class H2Connection {
  private socket!: net.Socket | tls.TLSSocket;
  private nextStreamId = 1;
  private readonly tagByStream = new Map<number, number>();
  private readonly streams = new Map<number, StreamState>();
  private readonly gotData = new Set<number>();
  private pending: Buffer | null = null;
  private sendWindow = 65535;
  /** The server's SETTINGS (their defaults until its SETTINGS frame comes). */
  private peerMaxFrame = 16384;
  private peerInitialWindow = 65535;
  /**
   * Send windows of the streams that need one tracked: streaming calls, and unary requests too
   * large for the fast path. (A unary request sent whole needs none: it fits the initial window.)
   */
  private readonly streamWindows = new Map<number, number>();
  private received = 0;
  private readonly queue: Queued[] = [];
  private corked = false;
  private closed = false;
  error: Error | null = null;
  /** When set, called once per socket read before any message of that read is handed out. */
  onRead: (() => void) | null = null;

  constructor(private readonly address: string, private readonly onDone: DoneHandler, private readonly options: H2Options = {}) {}

  /** :scheme of this connection's requests. */
  get scheme(): 'http' | 'https' {
    return this.options.tls ? 'https' : 'http';
  }

  get authority(): string {
    return this.address;
  }

  connect(): Promise<void> {
    const [host, port] = [this.address.slice(0, this.address.lastIndexOf(':')), Number(this.address.slice(this.address.lastIndexOf(':') + 1))];
    return new Promise((resolve, reject) => {
      const onConnected = (): void => {
        if (this.socket instanceof tls.TLSSocket && this.socket.alpnProtocol !== 'h2') {
          const err = new Error(`TLS: the server did not negotiate h2 (ALPN ${String(this.socket.alpnProtocol)})`);
          this.fail(err);
          this.socket.destroy();
          reject(err);
          return;
        }
        const settings = Buffer.alloc(12);
        settings.writeUInt16BE(0x2, 0); // ENABLE_PUSH = 0
        settings.writeUInt32BE(0, 2);
        settings.writeUInt16BE(0x4, 6); // INITIAL_WINDOW_SIZE
        settings.writeUInt32BE(RECV_WINDOW, 8);
        const wu = Buffer.alloc(4);
        wu.writeUInt32BE(RECV_WINDOW - 65535, 0);
        this.socket.write(Buffer.concat([PREFACE, controlFrame(FRAME_SETTINGS, 0, 0, settings), controlFrame(FRAME_WINDOW_UPDATE, 0, 0, wu)]));
        resolve();
      };
      const t = this.options.tls;
      if (t !== undefined) {
        this.socket = tls.connect({ host, port, ca: t.ca, cert: t.cert, key: t.key, ALPNProtocols: ['h2'] }, onConnected);
        this.socket.setNoDelay(true);
      } else {
        this.socket = net.connect({ host, port, noDelay: true }, onConnected);
      }
      this.socket.once('error', (err) => {
        this.fail(err);
        reject(err);
      });
      this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
      this.socket.on('close', () => this.fail(new Error('connection closed')));
    });
  }

  /** Sends one unary call; onDone(tag, ok) fires when its stream ends. */
  request(headerBlock: Buffer, body: Uint8Array, tag: number): void {
    if (this.closed) {
      this.onDone(tag, false);
      return;
    }
    const len = body.length + 5;
    if (this.queue.length > 0 || this.sendWindow < len || len > this.peerMaxFrame || len > this.peerInitialWindow) {
      this.queue.push({ headerBlock, payload: grpcMessage(body), sent: 0, tag, streamId: 0, endStream: true });
      this.drainQueue();
      return;
    }
    this.send(headerBlock, body, tag);
  }

  /** Opens a streaming call (HEADERS only); returns its stream id, or -1 if the connection is closed. */
  openStream(headerBlock: Buffer, handler: StreamHandler): number {
    if (this.closed) {
      handler.onEnd(this.error?.message ?? 'connection closed', 0);
      return -1;
    }
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    this.streams.set(id, { handler, messages: 0, received: 0, prefix: Buffer.alloc(5), prefixHave: 0, body: null, bodyHave: 0 });
    this.streamWindows.set(id, this.peerInitialWindow);
    const buf = Buffer.allocUnsafe(9 + headerBlock.length);
    frameHeader(buf, 0, headerBlock.length, FRAME_HEADERS, 0x4 /* END_HEADERS */, id);
    headerBlock.copy(buf, 9);
    this.write(buf);
    return id;
  }

  /** Sends one request message on an open stream (after the ones still waiting for a window). */
  sendMessage(streamId: number, body: Uint8Array): void {
    if (this.closed || !this.streams.has(streamId)) return;
    const len = body.length + 5;
    if (this.queue.length > 0 || this.sendWindow < len || len > this.peerMaxFrame || len > (this.streamWindows.get(streamId) ?? 0)) {
      this.queue.push({ headerBlock: null, payload: grpcMessage(body), sent: 0, tag: 0, streamId, endStream: false });
      this.drainQueue();
      return;
    }
    this.streamWindows.set(streamId, this.streamWindows.get(streamId)! - len);
    this.sendData(streamId, body, 0);
  }

  /** Half-closes a stream (empty DATA with END_STREAM) after its queued messages; the server then ends it. */
  endStream(streamId: number): void {
    if (this.closed || !this.streams.has(streamId)) return;
    if (this.queue.length > 0) {
      this.queue.push({ headerBlock: null, payload: Buffer.alloc(0), sent: 0, tag: 0, streamId, endStream: true });
      return;
    }
    const buf = Buffer.allocUnsafe(9);
    frameHeader(buf, 0, 0, FRAME_DATA, FLAG_END_STREAM, streamId);
    this.write(buf);
  }

  /** Open streaming calls on this connection. */
  get openStreams(): number {
    return this.streams.size;
  }

  close(): void {
    this.closed = true;
    this.socket?.end();
  }

  private send(headerBlock: Buffer, body: Uint8Array, tag: number): void {
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    this.tagByStream.set(id, tag);
    const dataLen = 5 + body.length;
    const buf = Buffer.allocUnsafe(9 + headerBlock.length + 9 + dataLen);
    frameHeader(buf, 0, headerBlock.length, FRAME_HEADERS, 0x4 /* END_HEADERS */, id);
    headerBlock.copy(buf, 9);
    let at = 9 + headerBlock.length;
    frameHeader(buf, at, dataLen, FRAME_DATA, FLAG_END_STREAM, id);
    at += 9;
    buf[at] = 0; // gRPC message: not compressed
    buf.writeUInt32BE(body.length, at + 1);
    buf.set(body, at + 5);
    this.sendWindow -= dataLen;
    this.write(buf);
  }

  private sendData(streamId: number, body: Uint8Array, flags: number): void {
    const dataLen = 5 + body.length;
    const buf = Buffer.allocUnsafe(9 + dataLen);
    frameHeader(buf, 0, dataLen, FRAME_DATA, flags, streamId);
    buf[9] = 0;
    buf.writeUInt32BE(body.length, 10);
    buf.set(body, 14);
    this.sendWindow -= dataLen;
    this.write(buf);
  }

  /** Writes, corking the socket until the end of this tick so a burst of frames is one write. */
  private write(buf: Buffer): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(buf);
  }

  /**
   * Sends what the queue holds, in order, one DATA frame at a time within the server's frame size
   * and the connection's and the stream's send windows; stops at the first that must wait for a
   * WINDOW_UPDATE (or SETTINGS).
   */
  private drainQueue(): void {
    while (this.queue.length > 0 && !this.closed) {
      const q = this.queue[0]!;
      if (q.headerBlock !== null && q.streamId === 0) {
        q.streamId = this.nextStreamId;
        this.nextStreamId += 2;
        this.tagByStream.set(q.streamId, q.tag);
        this.streamWindows.set(q.streamId, this.peerInitialWindow);
        const buf = Buffer.allocUnsafe(9 + q.headerBlock.length);
        frameHeader(buf, 0, q.headerBlock.length, FRAME_HEADERS, 0x4 /* END_HEADERS */, q.streamId);
        q.headerBlock.copy(buf, 9);
        this.write(buf);
      } else if (q.headerBlock === null && !this.streams.has(q.streamId)) {
        this.queue.shift(); // its stream ended meanwhile
        continue;
      }
      const rest = q.payload.length - q.sent;
      const n = Math.min(rest, this.sendWindow, this.streamWindows.get(q.streamId) ?? 0, this.peerMaxFrame);
      if (rest > 0 && n <= 0) return;
      const last = q.sent + n === q.payload.length;
      const buf = Buffer.allocUnsafe(9 + n);
      frameHeader(buf, 0, n, FRAME_DATA, last && q.endStream ? FLAG_END_STREAM : 0, q.streamId);
      q.payload.copy(buf, 9, q.sent, q.sent + n);
      q.sent += n;
      this.sendWindow -= n;
      if (n > 0) this.streamWindows.set(q.streamId, this.streamWindows.get(q.streamId)! - n);
      this.write(buf);
      if (last) {
        this.queue.shift();
        if (q.headerBlock !== null) this.streamWindows.delete(q.streamId); // a unary request sends nothing more
      }
    }
  }

  private fail(err: Error): void {
    if (this.error === null) this.error = err;
    this.closed = true;
    const tags = [...this.tagByStream.values(), ...this.queue.filter((q) => q.headerBlock !== null && q.streamId === 0).map((q) => q.tag)];
    this.tagByStream.clear();
    this.queue.length = 0;
    this.streamWindows.clear();
    for (const t of tags) this.onDone(t, false);
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const st of streams) st.handler.onEnd(err.message, st.messages);
  }

  private endOf(streamId: number, reason: string): void {
    const st = this.streams.get(streamId);
    if (st === undefined) return;
    this.streams.delete(streamId);
    this.streamWindows.delete(streamId);
    st.handler.onEnd(reason, st.messages);
  }

  /** Cuts a streaming call's DATA payload buf[at, end) into gRPC messages. */
  private streamData(st: StreamState, buf: Buffer, at: number, end: number): void {
    while (at < end) {
      if (st.body === null) {
        if (st.prefixHave === 0 && end - at >= 5) {
          const len = buf.readUInt32BE(at + 1);
          if (end - at - 5 >= len) { // the whole message is here: no copy
            st.messages++;
            st.handler.onMessage(buf, at + 5, at + 5 + len);
            at += 5 + len;
            continue;
          }
          st.body = Buffer.allocUnsafe(len);
          st.bodyHave = 0;
          at += 5;
          continue;
        }
        const n = Math.min(5 - st.prefixHave, end - at);
        buf.copy(st.prefix, st.prefixHave, at, at + n);
        st.prefixHave += n;
        at += n;
        if (st.prefixHave < 5) return;
        st.prefixHave = 0;
        st.body = Buffer.allocUnsafe(st.prefix.readUInt32BE(1));
        st.bodyHave = 0;
      }
      const n = Math.min(st.body.length - st.bodyHave, end - at);
      buf.copy(st.body, st.bodyHave, at, at + n);
      st.bodyHave += n;
      at += n;
      if (st.bodyHave === st.body.length) {
        const body = st.body;
        st.body = null;
        st.messages++;
        st.handler.onMessage(body, 0, body.length);
      }
    }
  }

  private finish(streamId: number): void {
    const tag = this.tagByStream.get(streamId);
    if (tag === undefined) return;
    this.tagByStream.delete(streamId);
    if (this.streamWindows.delete(streamId)) {
      // A large request answered (or refused) before it was all sent: the rest of it is not sent.
      const i = this.queue.findIndex((q) => q.streamId === streamId);
      if (i >= 0) this.queue.splice(i, 1);
      this.drainQueue();
    }
    const ok = this.gotData.delete(streamId);
    this.onDone(tag, ok);
  }

  private onData(chunk: Buffer): void {
    if (this.onRead !== null) this.onRead();
    let buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    let at = 0;
    while (buf.length - at >= 9) {
      const len = (buf[at]! << 16) | (buf[at + 1]! << 8) | buf[at + 2]!;
      if (buf.length - at < 9 + len) break;
      const type = buf[at + 3]!;
      const flags = buf[at + 4]!;
      const streamId = buf.readUInt32BE(at + 5) & 0x7fffffff;
      const payload = at + 9;
      at += 9 + len;
      switch (type) {
        case FRAME_DATA: {
          this.received += len;
          const st = this.streams.get(streamId);
          if (st !== undefined) {
            const start = flags & FLAG_PADDED ? payload + 1 : payload;
            const end = flags & FLAG_PADDED ? payload + len - buf[payload]! : payload + len;
            this.streamData(st, buf, start, end);
            st.received += len;
            if (st.received > RECV_WINDOW / 2 && (flags & FLAG_END_STREAM) === 0) {
              const wu = Buffer.alloc(4);
              wu.writeUInt32BE(st.received, 0);
              this.socket.write(controlFrame(FRAME_WINDOW_UPDATE, 0, streamId, wu));
              st.received = 0;
            }
            if (flags & FLAG_END_STREAM) this.endOf(streamId, 'stream ended');
            break;
          }
          if (len > 0) this.gotData.add(streamId);
          if (flags & FLAG_END_STREAM) this.finish(streamId);
          break;
        }
        case FRAME_HEADERS:
          if (flags & FLAG_END_STREAM) {
            if (this.streams.has(streamId)) this.endOf(streamId, 'stream ended (trailers)');
            else this.finish(streamId);
          }
          break;
        case FRAME_RST_STREAM:
          if (this.streams.has(streamId)) {
            this.endOf(streamId, `RST_STREAM error code ${buf.readUInt32BE(payload)}`);
            break;
          }
          this.gotData.delete(streamId);
          this.finish(streamId);
          break;
        case FRAME_SETTINGS:
          if ((flags & FLAG_ACK) === 0) {
            for (let p = payload; p + 6 <= payload + len; p += 6) {
              const id = buf.readUInt16BE(p);
              const value = buf.readUInt32BE(p + 2);
              if (id === SETTINGS_INITIAL_WINDOW_SIZE) {
                // Applies to every stream's window, open ones included (RFC 9113 §6.9.2).
                const delta = value - this.peerInitialWindow;
                this.peerInitialWindow = value;
                for (const [sid, w] of this.streamWindows) this.streamWindows.set(sid, w + delta);
              } else if (id === SETTINGS_MAX_FRAME_SIZE) {
                this.peerMaxFrame = value;
              }
            }
            this.socket.write(controlFrame(FRAME_SETTINGS, FLAG_ACK, 0, Buffer.alloc(0)));
            this.drainQueue();
          }
          break;
        case FRAME_PING:
          if ((flags & FLAG_ACK) === 0) this.socket.write(controlFrame(FRAME_PING, FLAG_ACK, 0, buf.subarray(payload, payload + 8)));
          break;
        case FRAME_WINDOW_UPDATE:
          if (streamId === 0) {
            this.sendWindow += buf.readUInt32BE(payload) & 0x7fffffff;
            this.drainQueue();
          } else if (this.streamWindows.has(streamId)) {
            this.streamWindows.set(streamId, this.streamWindows.get(streamId)! + (buf.readUInt32BE(payload) & 0x7fffffff));
            this.drainQueue();
          }
          break;
        case FRAME_GOAWAY:
          this.fail(new Error(`GOAWAY error code ${buf.readUInt32BE(payload + 4)}`));
          return;
        default:
          break; // PRIORITY, PUSH_PROMISE (disabled), CONTINUATION: nothing to do
      }
    }
    this.pending = at < buf.length ? Buffer.from(buf.subarray(at)) : null;
    // Refill the connection receive window well before it runs out.
    if (this.received > RECV_WINDOW / 2) {
      const wu = Buffer.alloc(4);
      wu.writeUInt32BE(this.received, 0);
      this.socket.write(controlFrame(FRAME_WINDOW_UPDATE, 0, 0, wu));
      this.received = 0;
    }
  }
}

/**
 * One unary call over a connection's streaming machinery (for the few calls whose answer is
 * needed, e.g. Authenticate): resolves with the response message, rejects if none came.
 */
export function unaryCall(conn: H2Connection, headerBlock: Buffer, body: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let response: Buffer | null = null;
    const id = conn.openStream(headerBlock, {
      onMessage(buf, start, end) {
        response = Buffer.from(buf.subarray(start, end));
      },
      onEnd(reason) {
        if (response !== null) resolve(response);
        else reject(new Error(`no response message (${reason})`));
      },
    });
    if (id < 0) return;
    conn.sendMessage(id, body);
    conn.endStream(id);
  });
}
