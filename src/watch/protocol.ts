// Messages between the main thread and the watch worker. Like the storage worker's, the hot
// ones are one plain Uint8Array per event-loop turn in each direction (workers/protocol.ts
// explains why): never a message per watch request or per response. Each layout is written once
// below, with its one encoder and one decoder: watch/hub.ts and watch/watch_worker.ts (and the
// tests) use these and never PackWriter/PackReader directly.
//
// Layouts (little-endian; u53 = a safe integer as float64, workers/protocol.ts PackWriter):
//   Control  main -> watch worker, everything the gRPC streams asked for during one turn
//     u53 raftTerm, u53 storeRev      the raft term and the revision applied at flush time
//     u32 count | count x op
//     op = u8 ControlOp, u32 streamId, then
//       Open, Close, Progress: nothing
//       Create:  i64 watchId, u53 createdRev (the revision applied when it arrived), u53 startRev,
//                u8 flags (CreateFlag), bytes key, u8 endKind (EndKind), bytes end
//                (end is empty unless endKind is Range)
//       Cancel:  i64 watchId
//       Ack:     u53 bytes written out to the client since the last Ack
//     i64 = u32 high, u32 low (two's complement): client ids use all 64 bits
//     bytes = u32 length, then the bytes
//   Output   watch worker -> main, per stream all the responses of the turn, already framed
//     u32 count | count x (u32 streamId, u32 responseCount, u32 length, gRPC frames)
//     gRPC frame = u8 0 (not compressed), u32 BE length, encoded WatchResponse
//     so the main thread writes each stream's turn with one write.
// Start-up, statistics and failure messages are plain objects (rare).
import { assert } from '../util/assert';
import type { Int64Parts } from '../util/protobuf_wire';
import { PackReader, PackWriter } from '../workers/protocol';
import type { WatchId } from './encode';

export const enum ControlOp {
  Open = 1,
  Create = 2,
  Cancel = 3,
  Progress = 4,
  Close = 5,
  Ack = 6,
}

export const enum CreateFlag {
  PrevKv = 1,
  ProgressNotify = 2,
  Fragment = 4,
  NoPut = 8,
  NoDelete = 16,
}
const createFlagsAll = 31;

export const enum EndKind {
  /** range_end empty: the single key. */
  Single = 0,
  /** range_end a key: [key, end). */
  Range = 1,
  /** range_end "\0": every key >= key. */
  FromKey = 2,
}

// ---- i64 ----------------------------------------------------------------------------------------

/** Writes an int64 (a Long, signed or not: the same 64 bits) as u32 high, u32 low. */
export function writeI64(w: PackWriter, v: Int64Parts): void {
  w.u32(v.high >>> 0);
  w.u32(v.low >>> 0);
}

const safeMax = BigInt(Number.MAX_SAFE_INTEGER);

/** Reads an i64: a number when it is a safe integer, else a bigint (encode.ts WatchId). */
export function readI64(r: PackReader): WatchId {
  const high = r.u32();
  const low = r.u32();
  // Without a bigint when the value is a safe integer: |v| < 2^53 when the top 11 bits of
  // `high` are all 0 (v >= 0), or all 1 with v > -2^53.
  if (high < 0x200000) return high * 0x100000000 + low;
  if (high > 0xffe00000) return (high - 0x100000000) * 0x100000000 + low; // small negatives
  const v = BigInt.asIntN(64, (BigInt(high) << 32n) | BigInt(low));
  return v >= -safeMax && v <= safeMax ? Number(v) : v;
}

// ---- Control: main -> watch worker --------------------------------------------------------------

/**
 * Builds the Control message of one turn: the hub calls one method per request as the gRPC
 * streams deliver them, then finish() once per turn.
 */
export class ControlWriter {
  private readonly ops: PackWriter;
  private readonly head: PackWriter;
  private count: number;

  constructor(initialBytes = 4096) {
    this.ops = new PackWriter(initialBytes);
    this.head = new PackWriter(24);
    this.count = 0;
  }

  /** Ops written since the last finish(). */
  get opCount(): number {
    return this.count;
  }

  open(streamId: number): void {
    this.op(ControlOp.Open, streamId);
  }

  close(streamId: number): void {
    this.op(ControlOp.Close, streamId);
  }

  progress(streamId: number): void {
    this.op(ControlOp.Progress, streamId);
  }

  /** `end` is empty unless `endKind` is Range; `key` is never empty (etcd: "" is "\0"). */
  create(streamId: number, watchId: Int64Parts, createdRev: number, startRev: number, flags: number,
    key: Uint8Array, endKind: EndKind, end: Uint8Array): void {
    assert((flags & ~createFlagsAll) === 0, 'unknown watch create flag');
    assert(key.length > 0, 'watch create with an empty key');
    assert(endKind === EndKind.Single || endKind === EndKind.Range || endKind === EndKind.FromKey,
      'unknown watch end kind');
    assert((endKind === EndKind.Range) === (end.length > 0), 'watch end bytes do not match its kind');
    // Checked before anything is written: a refused value must not leave half an op behind.
    assert(Number.isSafeInteger(createdRev) && Number.isSafeInteger(startRev), 'watch create revisions');
    this.op(ControlOp.Create, streamId);
    const w = this.ops;
    writeI64(w, watchId);
    w.u53(createdRev);
    w.u53(startRev);
    w.u8(flags);
    w.bytes(key);
    w.u8(endKind);
    w.bytes(end);
  }

  cancel(streamId: number, watchId: Int64Parts): void {
    this.op(ControlOp.Cancel, streamId);
    writeI64(this.ops, watchId);
  }

  /** `bytes` of this stream's responses were written out to the client. */
  ack(streamId: number, bytes: number): void {
    assert(Number.isSafeInteger(bytes) && bytes >= 0, 'watch ack bytes');
    this.op(ControlOp.Ack, streamId);
    this.ops.u53(bytes);
  }

  /**
   * The message of every op written since the last finish(), in its own ArrayBuffer (a view of
   * a larger buffer would post all of it); the writer is empty afterwards.
   */
  finish(raftTerm: number, storeRev: number): Uint8Array {
    assert(this.count > 0, 'empty watch control message');
    const head = this.head;
    head.reset();
    head.u53(raftTerm);
    head.u53(storeRev);
    head.u32(this.count);
    const m = new Uint8Array(head.length + this.ops.length);
    head.copyTo(m, 0);
    this.ops.copyTo(m, head.length);
    this.ops.reset();
    this.count = 0;
    return m;
  }

  private op(op: ControlOp, streamId: number): void {
    this.ops.u8(op);
    this.ops.u32(streamId);
    this.count++;
  }
}

/**
 * What readControl() calls, once per op in message order, after turn(). Byte arguments are views
 * into the message, valid during the call only.
 */
export interface ControlVisitor {
  turn(raftTerm: number, storeRev: number): void;
  open(streamId: number): void;
  close(streamId: number): void;
  progress(streamId: number): void;
  create(streamId: number, watchId: WatchId, createdRev: number, startRev: number, flags: number,
    key: Uint8Array, endKind: EndKind, end: Uint8Array): void;
  cancel(streamId: number, watchId: WatchId): void;
  ack(streamId: number, bytes: number): void;
}

/** Reads a Control message into `visitor`; a malformed message is a bug (assertion). */
export function readControl(data: Uint8Array, visitor: ControlVisitor): void {
  const r = new PackReader(data);
  const raftTerm = r.u53();
  const storeRev = r.u53();
  visitor.turn(raftTerm, storeRev);
  for (let n = r.u32(); n > 0; n--) {
    const op = r.u8() as ControlOp;
    const streamId = r.u32();
    switch (op) {
      case ControlOp.Open:
        visitor.open(streamId);
        break;
      case ControlOp.Close:
        visitor.close(streamId);
        break;
      case ControlOp.Progress:
        visitor.progress(streamId);
        break;
      case ControlOp.Ack:
        visitor.ack(streamId, r.u53());
        break;
      case ControlOp.Cancel:
        visitor.cancel(streamId, readI64(r));
        break;
      case ControlOp.Create: {
        const watchId = readI64(r);
        const createdRev = r.u53();
        const startRev = r.u53();
        const flags = r.u8();
        const key = r.bytes();
        const endKind = r.u8() as EndKind;
        const end = r.bytes();
        assert(endKind <= EndKind.FromKey, 'unknown watch end kind');
        visitor.create(streamId, watchId, createdRev, startRev, flags, key, endKind, end);
        break;
      }
      default:
        assert(false, 'unknown watch control op');
    }
  }
  assert(r.done(), 'watch control message longer than its ops');
}

// ---- Output: watch worker -> main ---------------------------------------------------------------

/** Builds the Output message of one turn: stream() per stream with responses, then finish(). */
export class OutputWriter {
  private readonly streams: PackWriter;
  private readonly head: PackWriter;
  private count: number;

  constructor(initialBytes = 64 * 1024) {
    this.streams = new PackWriter(initialBytes);
    this.head = new PackWriter(8);
    this.count = 0;
  }

  /** Streams written since the last finish(). */
  get streamCount(): number {
    return this.count;
  }

  /** `frames` holds `responseCount` gRPC-framed WatchResponses of `streamId`; copied here. */
  stream(streamId: number, responseCount: number, frames: Uint8Array): void {
    assert(responseCount > 0, 'watch output without responses');
    assert(frames.length >= responseCount * 5, 'watch output shorter than its frame headers');
    this.streams.u32(streamId);
    this.streams.u32(responseCount);
    this.streams.bytes(frames);
    this.count++;
  }

  /** The message, in its own ArrayBuffer; the writer is empty afterwards. */
  finish(): Uint8Array {
    assert(this.count > 0, 'empty watch output message');
    const head = this.head;
    head.reset();
    head.u32(this.count);
    const m = new Uint8Array(head.length + this.streams.length);
    head.copyTo(m, 0);
    this.streams.copyTo(m, head.length);
    this.streams.reset();
    this.count = 0;
    return m;
  }
}

/** What readOutput() calls per stream; `frames` is a view into the message. */
export interface OutputVisitor {
  frames(streamId: number, responseCount: number, frames: Uint8Array): void;
}

/** Reads an Output message into `visitor`; a malformed message is a bug (assertion). */
export function readOutput(data: Uint8Array, visitor: OutputVisitor): void {
  const r = new PackReader(data);
  for (let n = r.u32(); n > 0; n--) {
    const streamId = r.u32();
    const responseCount = r.u32();
    visitor.frames(streamId, responseCount, r.bytes());
  }
  assert(r.done(), 'watch output message longer than its streams');
}

export interface WatchWorkerInit {
  type: 'init';
  kvPath: string;
  mapSizeBytes: number;
  eventRing: SharedArrayBuffer;
  /** BigInt64Array(1): the compaction revision, stored by the storage worker at apply. */
  compactRev: SharedArrayBuffer;
  clusterId: string;
  memberId: string;
  raftTerm: number;
  fragmentBytesMax: number;
  streamBytesMax: number;
  progressNotifyIntervalMs: number;
  /** WatchStat slots. */
  stats: SharedArrayBuffer;
}

/**
 * Statistics the watch worker keeps in a SharedArrayBuffer (Float64Array slots) for /metrics,
 * written as it works and read at scrape time: no message carries them.
 */
export const enum WatchStat {
  Watchers = 0,
  Unsynced = 1,
  EventsSent = 2,
  ResponsesSent = 3,
  Victims = 4,
  RingGaps = 5,
  WindowRevisions = 6,
  ReplicaRev = 7,
  RingOccupancy = 8,
  BusyMs = 9,
  Count = 10,
}

export function newWatchStatsBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(WatchStat.Count * 8);
}

export type FromWatchWorker =
  | Uint8Array
  | { type: 'ready'; rev: number }
  | { type: 'fatal'; message: string }
  | { type: 'closed' };

export type ToWatchWorker = WatchWorkerInit | Uint8Array | { type: 'close' };
