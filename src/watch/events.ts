// What the storage worker tells the watch worker, through the event ring (watch/ring.ts): one
// record per applied write revision, per compaction and per LMDB commit. This module owns the
// record layout; the storage worker only calls EventRingWriter, the watch worker only
// decodeEventRecord().
//
// Record layout (little-endian):
//   u8  kind            RecordKind
//   u8  pad x 3
//   u32 seq             counts every record the producer made, written or dropped
//   then per kind:
//     Revision:  f64 rev, u32 count, count x (u8 tombstone, u32 length, mvccpb.KeyValue bytes)
//                the changes of one write transaction, sub revisions 0..count-1 in order
//     Compact:   f64 compactRev, f64 storeRev     a compaction applied at storeRev
//     Committed: f64 rev                          LMDB holds every revision <= rev
//     Replaced:  f64 rev, f64 compactRev, u32 generation
//                a raft snapshot replaced the whole store (storage worker install): the kv
//                environment is now generation `generation` at revision `rev`; records before
//                this one are about the old store, records after it continue from rev + 1
//     Reopened:  u32 generation
//                an online defragmentation replaced kv/data.mdb by a compacted copy holding the
//                same records: the state is unchanged, only the file is new. Records before
//                this one were committed to the old file (which stays mapped and whole for its
//                readers), records after it to the new one: a reader of LMDB reopens the path
//                before it acts on a later Committed record
//
// The producer never waits for the consumer: a record that does not fit is dropped (the ring's
// overflow flag is set) and `seq` still advances, so the consumer sees the gap and catches up
// from LMDB (watch/replica.ts) once the dropped revisions are committed there. A dropped
// Replaced record is found the same way: the consumer compares the generation in the shared
// slots (KvEnvSlots, below) with the one it opened.
//
// The kv environment lock (KvEnvSlots). lmdb-js shares one LMDB environment per process between
// threads, and finds it by the inode of the LOCK file (lmdb-js env.cpp checkExistingEnvs): the
// watch worker's read-only replica and the storage worker's backend are one MDB_env. A snapshot
// install replaces data.mdb under the same path; opening the path again would find the old
// environment (still held by the watch worker) and share it, mapping the OLD data file
// (measured: MDB_BAD_RSLOT, or reads of the old file). So the install removes lock.mdb before
// it renames the new data file in and opens it: a new lock file, a new environment. The watch
// worker keeps reading its old one (old inode, still mapped) until it reopens by path. An open
// by path must never run between the storage worker's unlink and its open (it would create the
// new lock file on the old data file), hence the lock: both sides hold it around opening the
// path. Waits are short (an open, a rename, two fsyncs) and happen only in the two workers.
import { ringUserSlots, RingProducer } from './ring';
import { assert } from '../util/assert';
import { WireCursor, WireType } from '../util/protobuf_wire';
import type { Change } from '../mvcc/kvstore';

export const enum RecordKind {
  Revision = 1,
  Compact = 2,
  Committed = 3,
  Replaced = 4,
  Reopened = 5,
}

const headerBytes = 8;

export class EventRingWriter {
  private readonly ring: RingProducer;
  private seq: number;
  private written: boolean;
  /** Records dropped because the ring was full (metrics). */
  dropped: number;

  constructor(sab: SharedArrayBuffer) {
    this.ring = new RingProducer(sab);
    this.seq = 0;
    this.written = false;
    this.dropped = 0;
  }

  get occupancy(): number {
    return this.ring.occupancy;
  }

  revision(rev: number, changes: readonly Change[]): void {
    let size = headerBytes + 12;
    for (const c of changes) size += 5 + c.kv.length;
    const view = this.begin(size);
    if (view === null) return;
    const dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
    dv.setUint8(0, RecordKind.Revision);
    dv.setUint32(4, this.seq, true);
    dv.setFloat64(8, rev, true);
    dv.setUint32(16, changes.length, true);
    let pos = 20;
    for (const c of changes) {
      dv.setUint8(pos, c.tombstone ? 1 : 0);
      dv.setUint32(pos + 1, c.kv.length, true);
      view.set(c.kv, pos + 5);
      pos += 5 + c.kv.length;
    }
    this.end(size);
  }

  compact(compactRev: number, storeRev: number): void {
    const view = this.begin(headerBytes + 16);
    if (view === null) return;
    const dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
    dv.setUint8(0, RecordKind.Compact);
    dv.setUint32(4, this.seq, true);
    dv.setFloat64(8, compactRev, true);
    dv.setFloat64(16, storeRev, true);
    this.end(headerBytes + 16);
  }

  committed(rev: number): void {
    const view = this.begin(headerBytes + 8);
    if (view === null) return;
    const dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
    dv.setUint8(0, RecordKind.Committed);
    dv.setUint32(4, this.seq, true);
    dv.setFloat64(8, rev, true);
    this.end(headerBytes + 8);
  }

  /** The store was replaced by a raft snapshot (storage worker install); see the layout. */
  replaced(rev: number, compactRev: number, generation: number): void {
    const view = this.begin(headerBytes + 20);
    if (view === null) return;
    const dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
    dv.setUint8(0, RecordKind.Replaced);
    dv.setUint32(4, this.seq, true);
    dv.setFloat64(8, rev, true);
    dv.setFloat64(16, compactRev, true);
    dv.setUint32(24, generation, true);
    this.end(headerBytes + 20);
  }

  /** The kv data file was replaced by a defragmented copy of the same state; see the layout. */
  reopened(generation: number): void {
    const view = this.begin(headerBytes + 4);
    if (view === null) return;
    const dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
    dv.setUint8(0, RecordKind.Reopened);
    dv.setUint32(4, this.seq, true);
    dv.setUint32(8, generation, true);
    this.end(headerBytes + 4);
  }

  /** Wakes the watch worker once per batch of records. */
  flush(): void {
    if (!this.written) return;
    this.written = false;
    this.ring.notify();
  }

  private begin(size: number): Uint8Array | null {
    const view = this.ring.reserve(size);
    if (view === null) {
      this.seq = (this.seq + 1) >>> 0;
      this.dropped++;
      this.ring.markOverflow();
      return null;
    }
    return view;
  }

  private end(size: number): void {
    this.ring.commit(size);
    this.seq = (this.seq + 1) >>> 0;
    this.written = true;
  }
}

/** One change as the watch worker keeps it: its own copy of the bytes. */
export interface EventChange {
  /** The user key, latin1 (one char per byte, as the MVCC index). */
  key: string;
  /** Encoded mvccpb.KeyValue ({key, mod_revision} for a delete). */
  kv: Uint8Array;
  tombstone: boolean;
}

export type EventRecord =
  | { kind: RecordKind.Revision; seq: number; rev: number; changes: EventChange[] }
  | { kind: RecordKind.Compact; seq: number; compactRev: number; storeRev: number }
  | { kind: RecordKind.Committed; seq: number; rev: number }
  | { kind: RecordKind.Replaced; seq: number; rev: number; compactRev: number; generation: number }
  | { kind: RecordKind.Reopened; seq: number; generation: number };

/** Decodes a record lent by RingConsumer.readAll(); the result owns copies of its bytes. */
export function decodeEventRecord(view: Uint8Array): EventRecord {
  const dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
  const kind = dv.getUint8(0) as RecordKind;
  const seq = dv.getUint32(4, true);
  switch (kind) {
    case RecordKind.Revision: {
      const rev = dv.getFloat64(8, true);
      const count = dv.getUint32(16, true);
      const changes: EventChange[] = new Array(count);
      let pos = 20;
      for (let i = 0; i < count; i++) {
        const tombstone = dv.getUint8(pos) === 1;
        const len = dv.getUint32(pos + 1, true);
        const kv = view.slice(pos + 5, pos + 5 + len);
        changes[i] = { key: keyOfKeyValue(kv), kv, tombstone };
        pos += 5 + len;
      }
      return { kind, seq, rev, changes };
    }
    case RecordKind.Compact:
      return { kind, seq, compactRev: dv.getFloat64(8, true), storeRev: dv.getFloat64(16, true) };
    case RecordKind.Committed:
      return { kind, seq, rev: dv.getFloat64(8, true) };
    case RecordKind.Replaced:
      return {
        kind, seq, rev: dv.getFloat64(8, true), compactRev: dv.getFloat64(16, true),
        generation: dv.getUint32(24, true),
      };
    case RecordKind.Reopened:
      return { kind, seq, generation: dv.getUint32(8, true) };
    default:
      throw new Error(`unknown event record kind ${kind as number}`);
  }
}

/** Reads keyOfKeyValue's KeyValues (one thread, one at a time). */
const kvCursor = new WireCursor();
const keyValueKeyTag = (1 << 3) | WireType.Bytes; // mvccpb.KeyValue.key

/**
 * The `key` field (1) of an encoded mvccpb.KeyValue, latin1, without decoding the rest. The
 * storage worker encodes the key first, but any field order is read correctly. The bytes come
 * from the storage worker: a malformed KeyValue is a bug (assertion).
 */
export function keyOfKeyValue(kv: Uint8Array): string {
  const c = kvCursor.reset(kv, 0, kv.length);
  while (c.pos < c.end) {
    const tag = c.varint();
    if (tag === keyValueKeyTag) {
      const n = c.length();
      return Buffer.from(kv.buffer, kv.byteOffset + c.pos, n).toString('latin1');
    }
    c.skip(tag & 7);
  }
  return '';
}

/** The user slots of the event ring that KvEnvSlots uses. */
const enum KvEnvSlot {
  /** 0 = free, 1 = held (by the thread opening the kv environment's path). */
  Lock = 0,
  /** Replacements of the kv data file so far (raft snapshot installs and defragmentations): the
   * kv environment's generation. */
  Generation = 1,
  /** Raft snapshot installs so far: the generation of the state's contents (a defragmentation
   * keeps them). */
  Contents = 2,
}

/** How long one wait for the kv environment lock may last; the holder does file work only. */
const kvEnvLockWaitMs = 100;
/** Waits before the lock counts as leaked (a holder died holding it: a bug). 600 x 100 ms. */
const kvEnvLockWaitsMax = 600;

/**
 * The kv environment lock and generation, shared by the storage and watch workers through the
 * event ring's user slots (see the header). Only worker threads (and tests) take the lock:
 * Atomics.wait blocks.
 */
export class KvEnvSlots {
  private readonly slots: Int32Array;

  constructor(eventRing: SharedArrayBuffer) {
    this.slots = ringUserSlots(eventRing);
  }

  lock(): void {
    let waits = 0;
    while (Atomics.compareExchange(this.slots, KvEnvSlot.Lock, 0, 1) !== 0) {
      assert(waits < kvEnvLockWaitsMax, 'kv environment lock held too long');
      Atomics.wait(this.slots, KvEnvSlot.Lock, 1, kvEnvLockWaitMs);
      waits++;
    }
  }

  unlock(): void {
    const was = Atomics.exchange(this.slots, KvEnvSlot.Lock, 0);
    assert(was === 1, 'kv environment lock released but not held');
    Atomics.notify(this.slots, KvEnvSlot.Lock, 1);
  }

  get generation(): number {
    return Atomics.load(this.slots, KvEnvSlot.Generation);
  }

  get contents(): number {
    return Atomics.load(this.slots, KvEnvSlot.Contents);
  }

  /**
   * Storage worker, holding the lock, after it opened the new environment. `newContents`: a raft
   * snapshot install (the state changed too), not a defragmentation (the same state).
   */
  bumpGeneration(newContents: boolean): number {
    assert(Atomics.load(this.slots, KvEnvSlot.Lock) === 1, 'generation bumped without the lock');
    if (newContents) Atomics.add(this.slots, KvEnvSlot.Contents, 1);
    return Atomics.add(this.slots, KvEnvSlot.Generation, 1) + 1;
  }
}
