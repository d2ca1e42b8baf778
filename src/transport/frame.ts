// Frames of concord's peer protocol over plain TCP (why TCP and not node:http2: see
// peer_transport.ts). Every byte on a peer connection belongs to a frame; each frame checks its
// header and its payload with CRC-32, so a stream that lost or changed bytes (a fault proxy's
// blackhole, a bad NIC) is detected at the next frame header, at most one frame later, and the
// connection is reset; it is never parsed as something else.
//
// Frame (16-byte header, big-endian):
//
//   offset  size  field
//   0       4     payloadBytes   u32, <= the reader's payloadBytesMax
//   4       1     type           FrameType
//   5       3     reserved       zero
//   8       4     payloadCrc     CRC-32 (IEEE) of the payload
//   12      4     headerCrc      CRC-32 of bytes 0..11: a garbage length is refused as soon as
//                                16 bytes are in, instead of waiting for megabytes that never come
//   16      n     payload
//
// Connections and the frames on them (the dialer sends, the acceptor answers):
//
//   dialer → acceptor                          acceptor → dialer
//   Hello (first frame, always)                HelloAck (accepted, or refused with a reason)
//   stream connections (message, app):
//     Messages: (u32 bytes, message)*         Pong (echoes a Ping)
//     Ping
//   snapshot connection (one per transfer):
//     SnapshotBegin, SnapshotChunk*,           SnapshotStatus (once, then the acceptor closes)
//     SnapshotEnd
//   members connection (one question):        HelloAck, Members, then the acceptor closes
//   forward connection (long-lived):
//     ForwardRequest*, Ping                    ForwardAnswer* (any order), Pong
//
// Payload layouts:
//   Hello           u16 protocolVersion, u8 kind (ConnectionKind), u8 0,
//                   u64 clusterId, u64 fromMemberId, u64 toMemberId                 (28 bytes)
//   HelloAck        u8 refuseReason (0 = accepted), u8 0, u16 protocolVersion,
//                   u16 reasonBytes, reason (UTF-8, <= helloReasonBytesMax)
//   Messages        repeated { u32 messageBytes, message (message_codec.ts) }, at least one
//   Ping, Pong      u32 seq, u32 0                                                   (8 bytes)
//   SnapshotBegin   u32 payloadBytes high, u32 low (a safe integer), then the MsgSnap message
//   SnapshotChunk   the next payload bytes (1 .. peerSnapshotFrameBytesMax)
//   SnapshotEnd     32 bytes: SHA-256 of the whole payload (etcd appends SHA-256 to its db file)
//   SnapshotStatus  u8 ok (1/0), u8 0, u16 reasonBytes, reason (UTF-8)
//   ForwardRequest  u32 requestId, u16 op, u16 0, payload (<= messageBytesMax)
//   ForwardAnswer   u32 requestId, u32 code, payload (<= messageBytesMax)
//                   (op and code: forward.ts; one request or answer per frame, many frames per
//                   socket write)
import { assert } from '../util/assert';
import { crc32 } from '../util/crc32';

export const frameHeaderBytes = 16;
/**
 * Bumped on any incompatible change of a layout in this file or message_codec.ts. Not for an
 * added connection kind or frame type (Forward, 5 and 11/12): a member that does not know one
 * refuses its Hello (BadHello), which the dialer handles as any refusal, while every other
 * connection between the two keeps working (a bump would cut them all during an upgrade).
 */
export const protocolVersion = 1;
export const helloBytes = 28;
export const pingBytes = 8;
export const sha256Bytes = 32;
export const helloReasonBytesMax = 256;
/** Framing a Messages frame adds to each message (its u32 length). */
export const messageFramingBytes = 4;

export const enum FrameType {
  Hello = 1,
  HelloAck = 2,
  Messages = 3,
  Ping = 4,
  Pong = 5,
  SnapshotBegin = 6,
  SnapshotChunk = 7,
  SnapshotEnd = 8,
  SnapshotStatus = 9,
  /** The answer on a Members connection: u64 cluster id, then the membership's encoding. */
  Members = 10,
  ForwardRequest = 11,
  ForwardAnswer = 12,
}
const frameTypeLast = FrameType.ForwardAnswer;

/**
 * What a connection carries. Message and App are long-lived streams (etcd's "message" and
 * "msgappv2" streams); Snapshot is one transfer (etcd's POST /raft/snapshot).
 */
export const enum ConnectionKind {
  Message = 1,
  App = 2,
  Snapshot = 3,
  /**
   * One question from a member that is joining and knows no cluster or member id yet (etcd's GET
   * /members on the peer port): the answer is the cluster id and the membership, then close.
   */
  Members = 4,
  /**
   * Requests of this member answered by the peer (etcd's peer-port POST /leases,
   * /leases/internal, /members/promote/<id>: a follower asks the leader). Long-lived, pipelined;
   * opened on the first request (forward.ts).
   */
  Forward = 5,
}
const connectionKindLast = ConnectionKind.Forward;

/** Why an acceptor refused a Hello (0 = accepted). Stable numbers: they go on the wire. */
export const enum RefuseReason {
  None = 0,
  /** etcd: X-Etcd-Cluster-ID mismatch → 412 "cluster ID mismatch". */
  ClusterIdMismatch = 1,
  /** The dialer meant another member (etcd: X-Raft-To mismatch → 412). */
  WrongMember = 2,
  /** The sender is not a peer of this member (yet): retried with backoff (etcd: 404). */
  UnknownMember = 3,
  ProtocolVersion = 4,
  /** A malformed Hello. */
  BadHello = 5,
  /** The sender was removed from the cluster (etcd: 410 Gone, errMemberRemoved). */
  MemberRemoved = 6,
}
export const refuseReasonCount = 7;

export const refuseReasonNames: readonly string[] = [
  'none', 'cluster-id-mismatch', 'wrong-member', 'unknown-member', 'protocol-version',
  'bad-hello', 'member-removed',
];

export const enum FrameError {
  None = 0,
  HeaderCrc = 1,
  PayloadCrc = 2,
  Reserved = 3,
  TooLarge = 4,
  UnknownType = 5,
}
export const frameErrorNames: readonly string[] = [
  'none', 'header-crc', 'payload-crc', 'reserved-bits', 'frame-too-large', 'unknown-frame-type',
];

/** Writes a frame header at buf[offset, offset + 16) for the payload that follows it. */
export function writeFrameHeader(buf: Buffer, offset: number, type: FrameType,
  payloadBytes: number, payloadCrc: number): void {
  assert(payloadBytes >= 0 && payloadBytes <= 0xffffffff, 'frame payload size');
  buf.writeUInt32BE(payloadBytes, offset);
  buf[offset + 4] = type;
  buf[offset + 5] = 0;
  buf[offset + 6] = 0;
  buf[offset + 7] = 0;
  buf.writeUInt32BE(payloadCrc >>> 0, offset + 8);
  buf.writeUInt32BE(crc32(buf, offset, offset + 12), offset + 12);
}

/** Header + payload in one new buffer (control frames; cold paths). */
export function encodeFrame(type: FrameType, payload: Uint8Array): Buffer {
  const buf = Buffer.allocUnsafe(frameHeaderBytes + payload.length);
  buf.set(payload, frameHeaderBytes);
  writeFrameHeader(buf, 0, type, payload.length, crc32(payload));
  return buf;
}

/** Receives each complete, checked frame; returns false to stop reading the current chunk. */
export interface FrameHandler {
  onFrame(type: FrameType, payload: Buffer): boolean;
}

/**
 * Splits a byte stream into checked frames. A payload handed to onFrame is a view of a buffer
 * the reader never reuses or writes again: the handler may keep it.
 * Invariant: headerFill < 16 while reading a header; payload !== null only while assembling a
 * payload that spans chunks, with payloadFill < payloadBytes.
 */
export class FrameReader {
  private readonly header = Buffer.alloc(frameHeaderBytes);
  private headerFill = 0;
  private type = 0;
  private payloadBytes = 0;
  private payloadCrc = 0;
  private inPayload = false;
  private payload: Buffer | null = null;
  private payloadFill = 0;

  constructor(private readonly payloadBytesMax: number, private readonly handler: FrameHandler) {
    assert(payloadBytesMax > 0, 'payloadBytesMax');
  }

  /** Bytes buffered inside the reader (a partial frame). */
  bufferedBytes(): number {
    return this.headerFill + this.payloadFill;
  }

  /** Feeds the next bytes of the stream. After an error the reader must not be used again. */
  push(chunk: Buffer): FrameError {
    let pos = 0;
    while (pos < chunk.length) {
      if (!this.inPayload) {
        const take = Math.min(frameHeaderBytes - this.headerFill, chunk.length - pos);
        chunk.copy(this.header, this.headerFill, pos, pos + take);
        this.headerFill += take;
        pos += take;
        if (this.headerFill < frameHeaderBytes) return FrameError.None;
        const err = this.headerParse();
        if (err !== FrameError.None) return err;
        if (this.payloadBytes > 0) continue;
        // An empty payload: the frame is complete now (CRC-32 of no bytes is 0).
        if (this.payloadCrc !== 0) return FrameError.PayloadCrc;
        if (!this.frameDeliver(chunk.subarray(pos, pos))) return FrameError.None;
        continue;
      }
      const want = this.payloadBytes - this.payloadFill;
      const have = chunk.length - pos;
      if (this.payload === null && have >= want) {
        // The whole payload is in this chunk: a view, no copy.
        const view = chunk.subarray(pos, pos + want);
        pos += want;
        if (crc32(view) !== this.payloadCrc) return FrameError.PayloadCrc;
        if (!this.frameDeliver(view)) return FrameError.None;
        continue;
      }
      if (this.payload === null) this.payload = Buffer.allocUnsafe(this.payloadBytes);
      const take = Math.min(want, have);
      chunk.copy(this.payload, this.payloadFill, pos, pos + take);
      this.payloadFill += take;
      pos += take;
      if (this.payloadFill < this.payloadBytes) return FrameError.None;
      const full = this.payload;
      this.payload = null;
      this.payloadFill = 0;
      if (crc32(full) !== this.payloadCrc) return FrameError.PayloadCrc;
      if (!this.frameDeliver(full)) return FrameError.None;
    }
    return FrameError.None;
  }

  private headerParse(): FrameError {
    const h = this.header;
    if (crc32(h, 0, 12) !== h.readUInt32BE(12)) return FrameError.HeaderCrc;
    if (h[5] !== 0 || h[6] !== 0 || h[7] !== 0) return FrameError.Reserved;
    const type = h[4]!;
    if (type < FrameType.Hello || type > frameTypeLast) return FrameError.UnknownType;
    const payloadBytes = h.readUInt32BE(0);
    if (payloadBytes > this.payloadBytesMax) return FrameError.TooLarge;
    this.type = type;
    this.payloadBytes = payloadBytes;
    this.payloadCrc = h.readUInt32BE(8);
    this.inPayload = true;
    return FrameError.None;
  }

  private frameDeliver(payload: Buffer): boolean {
    this.headerFill = 0;
    this.inPayload = false;
    return this.handler.onFrame(this.type as FrameType, payload);
  }
}

// ---- control payloads ----

export interface Hello {
  version: number;
  kind: ConnectionKind;
  clusterId: bigint;
  fromMemberId: bigint;
  toMemberId: bigint;
}

const u64Max = (1n << 64n) - 1n;

export function encodeHello(h: Hello): Buffer {
  assert(h.clusterId >= 0n && h.clusterId <= u64Max, 'hello cluster id');
  // A Members question comes from a member that knows no ids yet: they are 0 there.
  const idMin = h.kind === ConnectionKind.Members ? 0n : 1n;
  assert(h.fromMemberId >= idMin && h.fromMemberId <= u64Max, 'hello from member id');
  assert(h.toMemberId >= idMin && h.toMemberId <= u64Max, 'hello to member id');
  const p = Buffer.alloc(helloBytes);
  p.writeUInt16BE(h.version, 0);
  p[2] = h.kind;
  p.writeBigUInt64BE(h.clusterId, 4);
  p.writeBigUInt64BE(h.fromMemberId, 12);
  p.writeBigUInt64BE(h.toMemberId, 20);
  return encodeFrame(FrameType.Hello, p);
}

/** null when malformed. */
export function decodeHello(p: Buffer): Hello | null {
  if (p.length !== helloBytes || p[3] !== 0) return null;
  const kind = p[2]!;
  if (kind < ConnectionKind.Message || kind > connectionKindLast) return null;
  return {
    version: p.readUInt16BE(0), kind: kind as ConnectionKind, clusterId: p.readBigUInt64BE(4),
    fromMemberId: p.readBigUInt64BE(12), toMemberId: p.readBigUInt64BE(20),
  };
}

export interface HelloAck {
  reason: RefuseReason;
  version: number;
  text: string;
}

function reasonText(text: string): Buffer {
  let b = Buffer.from(text, 'utf8');
  if (b.length > helloReasonBytesMax) b = b.subarray(0, helloReasonBytesMax);
  return b;
}

export function encodeHelloAck(a: HelloAck): Buffer {
  const text = reasonText(a.text);
  const p = Buffer.alloc(6 + text.length);
  p[0] = a.reason;
  p.writeUInt16BE(a.version, 2);
  p.writeUInt16BE(text.length, 4);
  p.set(text, 6);
  return encodeFrame(FrameType.HelloAck, p);
}

export function decodeHelloAck(p: Buffer): HelloAck | null {
  if (p.length < 6 || p[1] !== 0) return null;
  const n = p.readUInt16BE(4);
  if (p.length !== 6 + n || p[0]! >= refuseReasonCount) return null;
  return {
    reason: p[0] as RefuseReason, version: p.readUInt16BE(2),
    text: p.toString('utf8', 6, 6 + n),
  };
}

export function encodePing(type: FrameType.Ping | FrameType.Pong, seq: number): Buffer {
  const p = Buffer.alloc(pingBytes);
  p.writeUInt32BE(seq >>> 0, 0);
  return encodeFrame(type, p);
}

/** The seq of a Ping/Pong payload, or -1 when malformed. */
export function decodePing(p: Buffer): number {
  if (p.length !== pingBytes || p.readUInt32BE(4) !== 0) return -1;
  return p.readUInt32BE(0);
}

export interface SnapshotStatus {
  ok: boolean;
  text: string;
}

export function encodeSnapshotStatus(s: SnapshotStatus): Buffer {
  const text = reasonText(s.text);
  const p = Buffer.alloc(4 + text.length);
  p[0] = s.ok ? 1 : 0;
  p.writeUInt16BE(text.length, 2);
  p.set(text, 4);
  return encodeFrame(FrameType.SnapshotStatus, p);
}

export function decodeSnapshotStatus(p: Buffer): SnapshotStatus | null {
  if (p.length < 4 || p[0]! > 1 || p[1] !== 0) return null;
  const n = p.readUInt16BE(2);
  if (p.length !== 4 + n) return null;
  return { ok: p[0] === 1, text: p.toString('utf8', 4, 4 + n) };
}

/** SnapshotBegin's prefix: the payload size, before the encoded MsgSnap. */
export const snapshotBeginPrefixBytes = 8;

export function writeSnapshotSize(buf: Buffer, offset: number, size: number): void {
  assert(Number.isSafeInteger(size) && size >= 0, 'snapshot size');
  buf.writeUInt32BE(Math.floor(size / 0x100000000), offset);
  buf.writeUInt32BE(size % 0x100000000, offset + 4);
}

/** -1 when not a safe integer. */
export function readSnapshotSize(buf: Buffer, offset: number): number {
  const size = buf.readUInt32BE(offset) * 0x100000000 + buf.readUInt32BE(offset + 4);
  return Number.isSafeInteger(size) ? size : -1;
}

// ---- forward requests and answers (forward.ts) ----

/**
 * The fields before the payload, 8 bytes in both frames: ForwardRequest u32 requestId, u16 op,
 * u16 0; ForwardAnswer u32 requestId, u32 code.
 */
export const forwardPrefixBytes = 8;
/** Largest op number (u16 on the wire). */
export const forwardOpMax = 0xffff;

/** The fields of a ForwardRequest or ForwardAnswer frame (decoders fill one the caller owns). */
export interface ForwardFields {
  requestId: number;
  /** ForwardRequest: the op; ForwardAnswer: the code. */
  opOrCode: number;
  /** A view of the frame's payload (valid as long as the frame's buffer). */
  payload: Buffer;
}

/** Bytes a ForwardRequest or ForwardAnswer frame with `payloadBytes` takes on the wire. */
export function forwardFrameBytes(payloadBytes: number): number {
  return frameHeaderBytes + forwardPrefixBytes + payloadBytes;
}

/** Writes a whole ForwardRequest frame at buf[offset..]; returns where it ends. */
export function encodeForwardRequest(buf: Buffer, offset: number, requestId: number, op: number,
  payload: Uint8Array): number {
  assert(Number.isInteger(op) && op >= 0 && op <= forwardOpMax, 'forward op');
  const p = offset + frameHeaderBytes;
  buf.writeUInt32BE(requestId >>> 0, p);
  buf.writeUInt16BE(op, p + 4);
  buf.writeUInt16BE(0, p + 6);
  return forwardFrameClose(buf, offset, FrameType.ForwardRequest, payload);
}

/** Writes a whole ForwardAnswer frame at buf[offset..]; returns where it ends. */
export function encodeForwardAnswer(buf: Buffer, offset: number, requestId: number, code: number,
  payload: Uint8Array): number {
  assert(Number.isInteger(code) && code >= 0 && code <= 0xffffffff, 'forward code');
  const p = offset + frameHeaderBytes;
  buf.writeUInt32BE(requestId >>> 0, p);
  buf.writeUInt32BE(code, p + 4);
  return forwardFrameClose(buf, offset, FrameType.ForwardAnswer, payload);
}

function forwardFrameClose(buf: Buffer, offset: number, type: FrameType,
  payload: Uint8Array): number {
  const start = offset + frameHeaderBytes;
  const end = start + forwardPrefixBytes + payload.length;
  buf.set(payload, start + forwardPrefixBytes);
  writeFrameHeader(buf, offset, type, end - start, crc32(buf, start, end));
  return end;
}

/** Reads a ForwardRequest payload into `out`; false when malformed. */
export function decodeForwardRequest(p: Buffer, out: ForwardFields): boolean {
  if (p.length < forwardPrefixBytes || p.readUInt16BE(6) !== 0) return false;
  out.requestId = p.readUInt32BE(0);
  out.opOrCode = p.readUInt16BE(4);
  out.payload = p.subarray(forwardPrefixBytes);
  return true;
}

/** Reads a ForwardAnswer payload into `out`; false when malformed. */
export function decodeForwardAnswer(p: Buffer, out: ForwardFields): boolean {
  if (p.length < forwardPrefixBytes) return false;
  out.requestId = p.readUInt32BE(0);
  out.opOrCode = p.readUInt32BE(4);
  out.payload = p.subarray(forwardPrefixBytes);
  return true;
}
