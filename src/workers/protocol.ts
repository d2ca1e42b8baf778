// Messages between the main thread and the storage worker. Hot-path messages are ONE plain
// Uint8Array each, its first byte the message type: no wrapper object, no transfer list.
// Measured here (node 20, 2 vCPU): a bare Uint8Array round trip costs ~16 µs, the same bytes
// inside an object {type, data} ~41 µs and with a transferred ArrayBuffer ~58 µs; one batch per
// event-loop turn costs ~0.1-0.3 µs per request instead of ~4 µs for a message per request
// (shared/reference/node-stack.md §4).
//
// Layouts (little-endian; u53 = a safe integer stored as float64):
//   Batch   main -> worker
//     u8  type = Batch
//     u8  hasHardState | [u53 term, u53 vote, u53 commit]
//     u53 raftTerm                    term to put in response headers
//     u32 appendCount | appendCount x Entry     entries to make durable
//     u32 applyCount  | applyCount  x Entry     committed entries to apply, in order
//     u32 readCount   | readCount   x Read      reads to serve after the applies
//   Entry  = u53 index, u53 term, u8 type, u32 dataLength, data
//   Read   = u32 readId, u8 readKind, u8 linearizable, u32 length, request bytes
//   Applied worker -> main
//     u8  type = Applied
//     u53 appliedIndex, u53 currentRev, u53 compactRev, u53 dbSize, u53 dbSizeInUse
//     u32 resultCount | resultCount x Result    proposals answered (id = InternalRequest.id)
//     u32 readCount   | readCount   x ReadResult
//     u32 leaseCount  | leaseCount  x LeaseChange   lease/lease_store.ts changes, apply order
//   Result     = u53 id, u8 errorCode (0 = ok), u32 length, response bytes
//   ReadResult = u32 readId, u8 errorCode, u32 length, response bytes
//   LeaseChange = u8 kind, u32 length, decimal int64 id (ascii), u53 ttl, u53 remaining
//   Persisted worker -> main
//     u8 type = Persisted, u53 index, u53 term     entries up to index are durable
//   A batch's committed entries may include entries appended in the same batch: the worker
//   applies an entry only once the WAL fsync covering it has returned.
// Start-up and shutdown messages are plain objects (once per process).
import { assert } from '../util/assert';
import type { Entry } from '../raft/types';

export const enum ReadKind {
  Range = 1,
  Status = 2,
  /** LeaseTimeToLiveRequest in; LeaseTimeToLiveResponse out with ID, grantedTTL, keys (no TTL). */
  LeaseTimeToLive = 3,
}

export const enum WorkerMessageType {
  Init = 1,
  Batch = 2,
  Close = 3,
  Ready = 11,
  Applied = 12,
  Persisted = 13,
  Closed = 14,
  Fatal = 15,
}

export class PackWriter {
  private buf: Buffer;
  private pos: number;

  constructor(initialBytes: number) {
    this.buf = Buffer.allocUnsafe(initialBytes);
    this.pos = 0;
  }

  reset(): void {
    this.pos = 0;
  }

  get length(): number {
    return this.pos;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = Math.max(this.buf.length * 2, 64); // a 0-byte start must grow too
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf[this.pos++] = v;
  }

  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
  }

  /** Position of a u32 to patch later (counts written before their items are known). */
  u32Placeholder(): number {
    const at = this.pos;
    this.u32(0);
    return at;
  }

  patchU32(at: number, v: number): void {
    this.buf.writeUInt32LE(v, at);
  }

  u53(v: number): void {
    assert(Number.isSafeInteger(v), 'u53 value');
    this.reserve(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }

  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  entry(e: Entry): void {
    this.u53(e.index);
    this.u53(e.term);
    this.u8(e.type);
    this.bytes(e.data);
  }

  /** Copies what was written into `dst` at `offset`; returns the byte count. */
  copyTo(dst: Uint8Array, offset: number): number {
    dst.set(this.buf.subarray(0, this.pos), offset);
    return this.pos;
  }

  /** A copy of what was written, in its own ArrayBuffer. */
  finish(): Uint8Array {
    const out = new Uint8Array(this.pos);
    out.set(this.buf.subarray(0, this.pos));
    return out;
  }
}

export class PackReader {
  private readonly buf: Buffer;
  private pos: number;

  constructor(data: Uint8Array) {
    this.buf = Buffer.from(data.buffer, data.byteOffset, data.length);
    this.pos = 0;
  }

  done(): boolean {
    return this.pos === this.buf.length;
  }

  u8(): number {
    return this.buf[this.pos++]!;
  }

  u32(): number {
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  u53(): number {
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }

  /** A view into the message buffer; valid as long as the message is. */
  bytes(): Uint8Array {
    const n = this.u32();
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  entry(): Entry {
    const index = this.u53();
    const term = this.u53();
    const type = this.u8();
    const data = this.bytes();
    return { index, term, type, data };
  }
}

/** Sent once at start-up; the worker answers with WorkerReady. */
export interface WorkerInit {
  type: WorkerMessageType.Init;
  dataDir: string;
  mapSizeBytes: number;
  walSegmentBytes: number;
  /** src/workers/stats.ts: counters and histograms the main thread reads for /metrics. */
  statsBuffer: SharedArrayBuffer;
  /** src/watch/events.ts: the event ring to the watch worker. */
  watchEventRing: SharedArrayBuffer;
  /** BigInt64Array(1): the compaction revision, stored at apply for the watch worker. */
  watchCompactRev: SharedArrayBuffer;
  /** etcd's minimum lease TTL in seconds (from the election timeout). */
  leaseTtlMin: number;
}

/** A lease as the storage worker restored it (id as a decimal int64). */
export interface LeaseInfo {
  id: string;
  ttl: number;
  remaining: number;
}

export interface WorkerReady {
  type: WorkerMessageType.Ready;
  clusterId: string; // decimal u64
  memberId: string;
  hardState: { term: number; vote: number; commit: number };
  appliedIndex: number;
  snapshotIndex: number;
  snapshotTerm: number;
  /** Packed entries after the snapshot point (Entry layout), count first. */
  entries: Uint8Array;
  currentRev: number;
  compactRev: number;
  leases: LeaseInfo[];
}

export interface WorkerFatal {
  type: WorkerMessageType.Fatal;
  message: string;
}

export type ToWorker = WorkerInit | Uint8Array | { type: WorkerMessageType.Close };
export type FromWorker = WorkerReady | Uint8Array | WorkerFatal | { type: WorkerMessageType.Closed };
