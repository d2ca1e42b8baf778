// A minimal HTTP/2 client for gRPC unary calls, written on a raw TCP socket so that the load
// generator costs a small fraction of what the server under test costs per request (node:http2
// costs the client ~100+ µs of CPU per call on this machine, more than the servers themselves).
//
// What it does: the client preface and SETTINGS, one precomputed HPACK header block per method
// (static-table indices and literals without indexing, so no dynamic table is ever needed), a
// HEADERS + DATA frame pair per request, and frame parsing of responses. It never decodes
// response headers: a unary gRPC call succeeded when a DATA frame (the response message) came
// before the end of the stream; an error is trailers-only (HEADERS with END_STREAM, no DATA) or
// RST_STREAM. Flow control: our receive windows are opened wide and refilled; our send window
// is tracked so a request waits rather than overrunning the server's window.
import net from 'node:net';

const FRAME_DATA = 0;
const FRAME_HEADERS = 1;
const FRAME_RST_STREAM = 3;
const FRAME_SETTINGS = 4;
const FRAME_PING = 6;
const FRAME_GOAWAY = 7;
const FRAME_WINDOW_UPDATE = 8;
const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
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

/** HPACK block for a gRPC POST to `path` (RFC 7541 static table indices). */
export function grpcHeaderBlock(authority: string, path: string): Buffer {
  const out: number[] = [];
  out.push(0x83); // :method POST (static 3)
  out.push(0x86); // :scheme http (static 6)
  hpackInt(out, 4, 4, 0x00); // :path, literal without indexing, indexed name 4
  hpackString(out, path);
  hpackInt(out, 1, 4, 0x00); // :authority (static 1)
  hpackString(out, authority);
  hpackInt(out, 31, 4, 0x00); // content-type (static 31)
  hpackString(out, 'application/grpc');
  out.push(0x00); // literal without indexing, new name
  hpackString(out, 'te');
  hpackString(out, 'trailers');
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

interface Queued { headerBlock: Buffer; body: Uint8Array; tag: number }

export class H2Connection {
  private socket!: net.Socket;
  private nextStreamId = 1;
  private readonly tagByStream = new Map<number, number>();
  private readonly gotData = new Set<number>();
  private pending: Buffer | null = null;
  private sendWindow = 65535;
  private received = 0;
  private readonly queue: Queued[] = [];
  private corked = false;
  private closed = false;
  error: Error | null = null;

  constructor(private readonly address: string, private readonly onDone: DoneHandler) {}

  get authority(): string {
    return this.address;
  }

  connect(): Promise<void> {
    const [host, port] = [this.address.slice(0, this.address.lastIndexOf(':')), Number(this.address.slice(this.address.lastIndexOf(':') + 1))];
    return new Promise((resolve, reject) => {
      this.socket = net.connect({ host, port, noDelay: true }, () => {
        const settings = Buffer.alloc(12);
        settings.writeUInt16BE(0x2, 0); // ENABLE_PUSH = 0
        settings.writeUInt32BE(0, 2);
        settings.writeUInt16BE(0x4, 6); // INITIAL_WINDOW_SIZE
        settings.writeUInt32BE(RECV_WINDOW, 8);
        const wu = Buffer.alloc(4);
        wu.writeUInt32BE(RECV_WINDOW - 65535, 0);
        this.socket.write(Buffer.concat([PREFACE, controlFrame(FRAME_SETTINGS, 0, 0, settings), controlFrame(FRAME_WINDOW_UPDATE, 0, 0, wu)]));
        resolve();
      });
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
    if (this.queue.length > 0 || this.sendWindow < body.length + 5) {
      this.queue.push({ headerBlock, body, tag });
      return;
    }
    this.send(headerBlock, body, tag);
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

  private drainQueue(): void {
    while (this.queue.length > 0 && this.sendWindow >= this.queue[0]!.body.length + 5) {
      const q = this.queue.shift()!;
      this.send(q.headerBlock, q.body, q.tag);
    }
  }

  private fail(err: Error): void {
    if (this.error === null) this.error = err;
    this.closed = true;
    const tags = [...this.tagByStream.values(), ...this.queue.map((q) => q.tag)];
    this.tagByStream.clear();
    this.queue.length = 0;
    for (const t of tags) this.onDone(t, false);
  }

  private finish(streamId: number): void {
    const tag = this.tagByStream.get(streamId);
    if (tag === undefined) return;
    this.tagByStream.delete(streamId);
    const ok = this.gotData.delete(streamId);
    this.onDone(tag, ok);
  }

  private onData(chunk: Buffer): void {
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
        case FRAME_DATA:
          if (len > 0) this.gotData.add(streamId);
          this.received += len;
          if (flags & FLAG_END_STREAM) this.finish(streamId);
          break;
        case FRAME_HEADERS:
          if (flags & FLAG_END_STREAM) this.finish(streamId);
          break;
        case FRAME_RST_STREAM:
          this.gotData.delete(streamId);
          this.finish(streamId);
          break;
        case FRAME_SETTINGS:
          // Requests are small: the server's per-stream window (>= 64 KiB by default) always
          // holds one, so only the connection window is tracked.
          if ((flags & FLAG_ACK) === 0) {
            this.socket.write(controlFrame(FRAME_SETTINGS, FLAG_ACK, 0, Buffer.alloc(0)));
          }
          break;
        case FRAME_PING:
          if ((flags & FLAG_ACK) === 0) this.socket.write(controlFrame(FRAME_PING, FLAG_ACK, 0, buf.subarray(payload, payload + 8)));
          break;
        case FRAME_WINDOW_UPDATE:
          if (streamId === 0) {
            this.sendWindow += buf.readUInt32BE(payload) & 0x7fffffff;
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
