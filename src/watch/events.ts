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
//
// The producer never waits for the consumer: a record that does not fit is dropped (the ring's
// overflow flag is set) and `seq` still advances, so the consumer sees the gap and catches up
// from LMDB (watch/replica.ts) once the dropped revisions are committed there.
import { RingProducer } from './ring';
import { WireCursor, WireType } from '../util/protobuf_wire';
import type { Change } from '../mvcc/kvstore';

export const enum RecordKind {
  Revision = 1,
  Compact = 2,
  Committed = 3,
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
  | { kind: RecordKind.Committed; seq: number; rev: number };

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
