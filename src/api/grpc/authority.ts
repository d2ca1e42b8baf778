// HTTP/2 connections whose `:authority` node's HTTP/2 stack refuses.
//
// etcdctl 3.4 dials every endpoint on its own for the Maintenance calls (endpoint status,
// endpoint hashkv, defrag, snapshot, move-leader) with the gRPC target
// "passthrough:///<endpoint>", so with `--endpoints=http://host:port` grpc-go sends
// `:authority: http://host:port`. grpc-go servers (etcd) accept it; nghttp2 inside node resets
// the stream with PROTOCOL_ERROR before grpc-js ever sees it ('/' is not an authority
// character), and `etcdctl endpoint status` fails against concord.
//
// So each HTTP/2 connection is looked at before it reaches grpc-js:
//  - the server connection preface (an empty SETTINGS frame) is sent here at once, because
//    grpc-go sends nothing before it has the server's; the client's ACK of it is taken out of
//    the stream (nghttp2 would count it against its own SETTINGS);
//  - the first header block is decoded (HPACK). A client sends one authority per connection,
//    so when it is valid - the normal case - the socket itself goes to grpc-js with what was
//    read put back: nothing is paid after the first request;
//  - otherwise the connection goes through a transcoder for its whole life: each header block
//    from the client is decoded and passed on as literals (no Huffman, no dynamic table, so the
//    server's decoder state never matters) with the authority cut down to host:port. Frames in
//    the other direction pass unchanged.
import net from 'node:net';
import { Duplex } from 'node:stream';
import { copyMark } from '../tls';

export interface ConnectionSink {
  injectConnection(connection: Duplex): void;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADERS = 0x1;
const FRAME_PRIORITY = 0x2;
const FRAME_SETTINGS = 0x4;
const FRAME_WINDOW_UPDATE = 0x8;
const FRAME_CONTINUATION = 0x9;
const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
/** SETTINGS_MAX_FRAME_SIZE default; frames we build stay within it. */
const FRAME_PAYLOAD_MAX = 16384;
/** An empty SETTINGS frame: a valid server connection preface. */
const EMPTY_SETTINGS = Buffer.from([0, 0, 0, FRAME_SETTINGS, 0, 0, 0, 0, 0]);
/** Undecided connections: how long to wait for the first request once our SETTINGS is acked. */
const IDLE_DECIDE_MS = 1000;
/** ... and for that ACK; a connection still undecided then is transcoded (that is always safe). */
const LOOK_TIMEOUT_MS = 5000;
/** Bytes read before deciding; past it the connection is transcoded. */
const LOOK_BYTES_MAX = 1 << 20;

// ---- HPACK (RFC 7541), decoding only ----

/**
 * Code length in bits of each Huffman symbol 0..256 (RFC 7541 Appendix B). The code is
 * canonical: codes of one length are consecutive, in symbol order, so lengths define it.
 */
const HUFFMAN_BITS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
  28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
  5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7,
  7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7,
  7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21,
  23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24,
  21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];
const HUFFMAN_EOS = 256;

interface HuffmanTable {
  /** Per code length: first code, index of its first symbol in `symbols`, number of codes. */
  first: number[];
  index: number[];
  count: number[];
  symbols: number[];
}

function buildHuffman(): HuffmanTable {
  const symbols = HUFFMAN_BITS.map((_, s) => s).sort((a, b) => HUFFMAN_BITS[a]! - HUFFMAN_BITS[b]! || a - b);
  const first: number[] = new Array<number>(31).fill(0);
  const index: number[] = new Array<number>(31).fill(0);
  const count: number[] = new Array<number>(31).fill(0);
  let code = 0;
  let len = 0;
  symbols.forEach((s, i) => {
    const bits = HUFFMAN_BITS[s]!;
    if (i > 0) code = (code + 1) * 2 ** (bits - len);
    if (count[bits] === 0) {
      first[bits] = code;
      index[bits] = i;
    }
    count[bits]!++;
    len = bits;
  });
  return { first, index, count, symbols };
}

let huffman: HuffmanTable | null = null;

export class HpackError extends Error {}

export function huffmanDecode(src: Buffer): Buffer {
  const t = (huffman ??= buildHuffman());
  const out: number[] = [];
  let code = 0;
  let len = 0;
  for (const byte of src) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      len++;
      const c = t.count[len] ?? 0;
      if (c > 0 && code >= t.first[len]! && code - t.first[len]! < c) {
        const sym = t.symbols[t.index[len]! + code - t.first[len]!]!;
        if (sym === HUFFMAN_EOS) throw new HpackError('huffman: EOS in string');
        out.push(sym);
        code = 0;
        len = 0;
      } else if (len >= 30) {
        throw new HpackError('huffman: invalid code');
      }
    }
  }
  // Padding: at most 7 bits, all ones (the EOS prefix).
  if (len > 7 || code !== 2 ** len - 1) throw new HpackError('huffman: invalid padding');
  return Buffer.from(out);
}

const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'],
  [':path', '/index.html'], [':scheme', 'http'], [':scheme', 'https'], [':status', '200'],
  [':status', '204'], [':status', '206'], [':status', '304'], [':status', '400'],
  [':status', '404'], [':status', '500'], ['accept-charset', ''], ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''], ['accept-ranges', ''], ['accept', ''], ['access-control-allow-origin', ''],
  ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''],
  ['date', ''], ['etag', ''], ['expect', ''], ['expires', ''],
  ['from', ''], ['host', ''], ['if-match', ''], ['if-modified-since', ''],
  ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''], ['last-modified', ''],
  ['link', ''], ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''],
  ['proxy-authorization', ''], ['range', ''], ['referer', ''], ['refresh', ''],
  ['retry-after', ''], ['server', ''], ['set-cookie', ''], ['strict-transport-security', ''],
  ['transfer-encoding', ''], ['user-agent', ''], ['vary', ''], ['via', ''],
  ['www-authenticate', ''],
];
const STATIC_ENTRIES = STATIC_TABLE.map(([n, v]) => [Buffer.from(n, 'latin1'), Buffer.from(v, 'latin1')] as const);

export interface Header {
  name: Buffer;
  value: Buffer;
  /** Sent as "never indexed" (kept so when re-encoded). */
  sensitive: boolean;
}

/** Dynamic table sizes a client may ask for; beyond it is refused (node advertises 4096). */
const HPACK_TABLE_MAX = 65536;

export class HpackDecoder {
  /** Newest first. */
  private readonly table: (readonly [Buffer, Buffer])[] = [];
  private size = 0;
  private maxSize = 4096;

  decode(block: Buffer): Header[] {
    const out: Header[] = [];
    let pos = 0;
    const int = (prefixBits: number): number => {
      const max = 2 ** prefixBits - 1;
      let v = block[pos++]! & max;
      if (v < max) return v;
      let shift = 0;
      for (;;) {
        if (pos >= block.length) throw new HpackError('hpack: truncated integer');
        const b = block[pos++]!;
        v += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if ((b & 0x80) === 0) break;
        if (shift > 28) throw new HpackError('hpack: integer too large');
      }
      return v;
    };
    const str = (): Buffer => {
      if (pos >= block.length) throw new HpackError('hpack: truncated string');
      const huff = (block[pos]! & 0x80) !== 0;
      const len = int(7);
      if (pos + len > block.length) throw new HpackError('hpack: truncated string');
      const raw = block.subarray(pos, pos + len);
      pos += len;
      return huff ? huffmanDecode(raw) : Buffer.from(raw);
    };
    const entry = (i: number): readonly [Buffer, Buffer] => {
      if (i >= 1 && i <= STATIC_ENTRIES.length) return STATIC_ENTRIES[i - 1]!;
      const e = this.table[i - STATIC_ENTRIES.length - 1];
      if (e === undefined) throw new HpackError(`hpack: index ${i} out of range`);
      return e;
    };
    while (pos < block.length) {
      const b = block[pos]!;
      if (b & 0x80) { // indexed field
        const i = int(7);
        if (i === 0) throw new HpackError('hpack: index 0');
        const [name, value] = entry(i);
        out.push({ name, value, sensitive: false });
      } else if (b & 0x40) { // literal with incremental indexing
        const i = int(6);
        const name = i === 0 ? str() : entry(i)[0];
        const value = str();
        out.push({ name, value, sensitive: false });
        this.add(name, value);
      } else if (b & 0x20) { // dynamic table size update
        const size = int(5);
        if (size > HPACK_TABLE_MAX) throw new HpackError('hpack: table size too large');
        this.maxSize = size;
        this.evict();
      } else { // literal without indexing (0000) or never indexed (0001)
        const sensitive = (b & 0x10) !== 0;
        const i = int(4);
        const name = i === 0 ? str() : entry(i)[0];
        const value = str();
        out.push({ name, value, sensitive });
      }
    }
    return out;
  }

  private add(name: Buffer, value: Buffer): void {
    this.table.unshift([name, value]);
    this.size += name.length + value.length + 32;
    this.evict();
  }

  private evict(): void {
    while (this.size > this.maxSize && this.table.length > 0) {
      const [n, v] = this.table.pop()!;
      this.size -= n.length + v.length + 32;
    }
  }
}

function encodeInt(out: number[], value: number, prefixBits: number, firstByte: number): void {
  const max = 2 ** prefixBits - 1;
  if (value < max) {
    out.push(firstByte | value);
    return;
  }
  out.push(firstByte | max);
  value -= max;
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
}

/** Header block of literals without indexing, names and values as they are (no Huffman). */
export function encodeLiterals(headers: readonly Header[]): Buffer {
  const parts: Buffer[] = [];
  for (const h of headers) {
    const prefix: number[] = [];
    encodeInt(prefix, 0, 4, h.sensitive ? 0x10 : 0x00);
    encodeInt(prefix, h.name.length, 7, 0);
    parts.push(Buffer.from(prefix), h.name);
    const len: number[] = [];
    encodeInt(len, h.value.length, 7, 0);
    parts.push(Buffer.from(len), h.value);
  }
  return Buffer.concat(parts);
}

// ---- authority ----

/** RFC 3986 host (reg-name or IP literal) and port, without userinfo. */
const AUTHORITY_OK = /^[A-Za-z0-9\-._~%!$&'()*+,;=:[\]]*$/;

/** The authority to send instead of `value`, or null when `value` may go as it is. */
export function repairedAuthority(value: string): string | null {
  if (AUTHORITY_OK.test(value)) return null;
  let s = value.replace(/^[A-Za-z][A-Za-z0-9+.-]*:\/\//, '');
  const slash = s.indexOf('/');
  if (slash >= 0) s = s.slice(0, slash);
  const at = s.lastIndexOf('@');
  if (at >= 0) s = s.slice(at + 1);
  return s !== '' && AUTHORITY_OK.test(s) ? s : 'localhost';
}

const AUTHORITY = Buffer.from(':authority', 'latin1');

function authorityOf(headers: readonly Header[]): string | null {
  for (const h of headers) if (h.name.equals(AUTHORITY)) return h.value.toString('latin1');
  return null;
}

// ---- frames from the client ----

/** Splits the client's byte stream into the preface and whole frames. */
class FrameSplitter {
  private tail: Buffer = Buffer.alloc(0);
  private prefaceDone = false;
  /** Set when the bytes are not an HTTP/2 client preface. */
  notHttp2 = false;

  push(chunk: Buffer): Buffer[] {
    this.tail = this.tail.length === 0 ? chunk : Buffer.concat([this.tail, chunk]);
    const units: Buffer[] = [];
    if (!this.prefaceDone) {
      const n = Math.min(this.tail.length, PREFACE.length);
      if (!this.tail.subarray(0, n).equals(PREFACE.subarray(0, n))) {
        this.notHttp2 = true;
        return units;
      }
      if (this.tail.length < PREFACE.length) return units;
      units.push(this.tail.subarray(0, PREFACE.length));
      this.tail = this.tail.subarray(PREFACE.length);
      this.prefaceDone = true;
    }
    while (this.tail.length >= 9) {
      const size = 9 + this.tail.readUIntBE(0, 3);
      if (this.tail.length < size) break;
      units.push(this.tail.subarray(0, size));
      this.tail = this.tail.subarray(size);
    }
    return units;
  }

  /** Bytes not yet part of a whole unit. */
  rest(): Buffer {
    return this.tail;
  }
}

function isPreface(unit: Buffer): boolean {
  return unit.length === PREFACE.length && unit.equals(PREFACE);
}

/** The header block fragment of a HEADERS frame (padding and priority taken off). */
function headersFragment(frame: Buffer): { fragment: Buffer; priority: Buffer | null } {
  const flags = frame[4]!;
  let p = 9;
  let end = frame.length;
  if (flags & FLAG_PADDED) {
    const pad = frame[p++]!;
    end -= pad;
  }
  let priority: Buffer | null = null;
  if (flags & FLAG_PRIORITY) {
    priority = frame.subarray(p, p + 5);
    p += 5;
  }
  if (end < p) throw new HpackError('HEADERS: padding exceeds payload');
  return { fragment: frame.subarray(p, end), priority };
}

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** Collects HEADERS + CONTINUATION frames into one header block. */
class BlockCollector {
  private first: Buffer | null = null;
  private priority: Buffer | null = null;
  private parts: Buffer[] = [];

  /** Adds a frame; returns true once `frame` ends the block. Non-header frames return false. */
  add(f: Buffer): boolean {
    const type = f[3]!;
    if (type === FRAME_HEADERS) {
      if (this.first !== null) throw new HpackError('HEADERS inside a header block');
      const { fragment, priority } = headersFragment(f);
      this.first = f;
      this.priority = priority;
      this.parts = [fragment];
    } else if (type === FRAME_CONTINUATION) {
      if (this.first === null) throw new HpackError('CONTINUATION without HEADERS');
      this.parts.push(f.subarray(9));
    } else {
      if (this.first !== null) throw new HpackError('frame inside a header block');
      return false;
    }
    return (f[4]! & FLAG_END_HEADERS) !== 0;
  }

  get open(): boolean {
    return this.first !== null;
  }

  /** The finished block: its bytes and what to rebuild the frames with; resets. */
  take(): { block: Buffer; streamId: number; endStream: boolean; priority: Buffer | null } {
    const first = this.first!;
    const out = {
      block: Buffer.concat(this.parts),
      streamId: first.readUInt32BE(5) & 0x7fffffff,
      endStream: (first[4]! & FLAG_END_STREAM) !== 0,
      priority: this.priority,
    };
    this.first = null;
    this.priority = null;
    this.parts = [];
    return out;
  }
}

/** Rewrites the client's header blocks (see the top of the file); everything else passes. */
class Transcoder {
  private readonly hpack = new HpackDecoder();
  private readonly block = new BlockCollector();

  constructor(private ackPending: boolean) {}

  unit(u: Buffer): Buffer[] {
    if (isPreface(u)) return [u];
    const type = u[3]!;
    if (type === FRAME_SETTINGS && (u[4]! & FLAG_ACK) && this.ackPending) {
      this.ackPending = false;
      return [];
    }
    if (!this.block.add(u)) return this.block.open ? [] : [u];
    const b = this.block.take();
    const headers = this.hpack.decode(b.block);
    for (const h of headers) {
      if (!h.name.equals(AUTHORITY)) continue;
      const fixed = repairedAuthority(h.value.toString('latin1'));
      if (fixed !== null) h.value = Buffer.from(fixed, 'latin1');
    }
    let payload = encodeLiterals(headers);
    if (b.priority !== null) payload = Buffer.concat([b.priority, payload]);
    const out: Buffer[] = [];
    let type0 = FRAME_HEADERS;
    let flags = (b.endStream ? FLAG_END_STREAM : 0) | (b.priority !== null ? FLAG_PRIORITY : 0);
    do {
      const piece = payload.subarray(0, FRAME_PAYLOAD_MAX);
      payload = payload.subarray(piece.length);
      out.push(frame(type0, flags | (payload.length === 0 ? FLAG_END_HEADERS : 0), b.streamId, piece));
      type0 = FRAME_CONTINUATION;
      flags = 0;
    } while (payload.length > 0);
    return out;
  }
}

/**
 * A ConnectionSink in front of grpc-js's connection injector: every HTTP/2 connection goes
 * through `injectConnection` here first (see the top of the file).
 */
export class AuthorityRepair {
  private readonly looking = new Set<net.Socket>();

  constructor(private readonly inner: ConnectionSink) {}

  injectConnection(socket: net.Socket): void {
    this.looking.add(socket);
    const splitter = new FrameSplitter();
    const kept: Buffer[] = [];
    let keptBytes = 0;
    let ackSeen = false;
    // undefined: no request yet; null: nothing to repair; string: the authority to repair
    let verdict: string | null | undefined;
    const probe = new BlockCollector();
    let decided = false;
    let timer: NodeJS.Timeout | undefined;
    const arm = (ms: number, fn: () => void): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = setTimeout(fn, ms);
      timer.unref();
    };

    const finish = (): void => {
      decided = true;
      this.looking.delete(socket);
      if (timer !== undefined) clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    const raw = (): void => {
      finish();
      socket.pause();
      const rest = Buffer.concat([...kept, splitter.rest()]);
      if (rest.length > 0) socket.unshift(rest);
      // node's http2 session reads what is buffered on the socket itself.
      this.inner.injectConnection(socket);
    };
    const transcode = (): void => {
      finish();
      this.inner.injectConnection(transcoded(socket, kept, splitter, !ackSeen));
    };
    const decide = (): void => {
      if (decided) return;
      if (splitter.notHttp2) return raw(); // not ours to judge: nghttp2 answers it
      if (keptBytes > LOOK_BYTES_MAX) return transcode();
      if (!ackSeen || verdict === undefined) return;
      if (verdict === null) raw();
      else transcode();
    };
    const onData = (chunk: Buffer): void => {
      for (const u of splitter.push(chunk)) {
        if (!isPreface(u) && u[3] === FRAME_SETTINGS && (u[4]! & FLAG_ACK) && !ackSeen) {
          ackSeen = true; // the ACK of our SETTINGS: nghttp2 never sent it
          if (verdict === undefined) {
            arm(IDLE_DECIDE_MS, () => {
              verdict ??= null; // an idle connection: nothing to judge yet, hand it on
              decide();
            });
          }
          continue;
        }
        kept.push(u);
        keptBytes += u.length;
        if (verdict !== undefined || isPreface(u)) continue;
        const type = u[3]!;
        try {
          if (probe.add(u)) {
            const authority = authorityOf(new HpackDecoder().decode(probe.take().block));
            verdict = authority === null ? null : (repairedAuthority(authority) === null ? null : authority);
          } else if (!probe.open && type !== FRAME_SETTINGS && type !== FRAME_WINDOW_UPDATE &&
            type !== FRAME_PRIORITY) {
            verdict = null; // something else before any request: let nghttp2 handle it
          }
        } catch {
          verdict = null; // malformed: nghttp2 will say so
        }
      }
      decide();
    };
    const onError = (): void => {
      finish();
      socket.destroy();
    };
    const onClose = (): void => {
      finish();
    };
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    arm(LOOK_TIMEOUT_MS, () => (ackSeen ? raw() : transcode()));
    socket.write(EMPTY_SETTINGS);
    socket.resume();
  }

  /** Drops connections still being looked at (the server is stopping). */
  close(): void {
    for (const s of this.looking) s.destroy();
    this.looking.clear();
  }
}

/** A Duplex for grpc-js that carries `socket` through a Transcoder. */
function transcoded(socket: net.Socket, kept: Buffer[], splitter: FrameSplitter, ackPending: boolean): Duplex {
  const t = new Transcoder(ackPending);
  const duplex = new Duplex({
    read(): void {
      socket.resume();
    },
    write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
      socket.write(chunk, cb);
    },
    final(cb: (err?: Error | null) => void): void {
      socket.end();
      cb();
    },
    destroy(err: Error | null, cb: (err: Error | null) => void): void {
      socket.destroy();
      cb(err);
    },
  });
  copyMark(socket, duplex); // the client certificate's CN (api/tls.ts)
  const forward = (units: Buffer[]): void => {
    try {
      for (const u of units) {
        for (const out of t.unit(u)) {
          if (!duplex.push(out)) socket.pause();
        }
      }
    } catch (err) {
      duplex.destroy(err as Error);
    }
  };
  forward(kept);
  socket.on('data', (chunk: Buffer) => forward(splitter.push(chunk)));
  socket.on('end', () => duplex.push(null));
  socket.on('error', (err) => duplex.destroy(err));
  socket.on('close', () => duplex.destroy());
  socket.resume();
  return duplex;
}
