// HashKV and Hash (etcd: server/mvcc/kvstore.go HashByRev in 3.4, hash.go in 3.5).
//
// HashKV(rev) is etcd's value for the same history: CRC-32C (Castagnoli) over the bucket name
// "key", then, for every revision record with main <= rev in revision order, etcd's record key
// and etcd's record value:
//   key   = main (8 bytes BE) | '_' | sub (8 bytes BE) [| 't' for a tombstone]   (17/18 bytes)
//   value = mvccpb.KeyValue as gogo-protobuf marshals it: fields in number order, zero fields
//           left out; a tombstone's value is KeyValue{key} only (etcd storeTxnWrite.delete).
// Concord's records differ (a 16/17-byte key without '_'; protobufjs writes zero fields and a
// tombstone carries mod_revision), so each record is re-encoded on the fly: its fields are
// copied as they are minus the zero ones (protobufjs and gogo write the same bytes for a
// non-zero field, and concord writes fields in number order).
// Records at or below the compaction revision count only if the compaction keeps them, judged
// at `rev` as etcd does (kvindex.Keep(rev)): the newest revision <= rev of a key live at rev.
// So the value does not depend on how far the compaction sweep has got. etcd applies that rule
// only when Keep(rev) is not empty (some key is live at rev); so does this.
//
// Hash: etcd hashes its whole bbolt file (every bucket, its own layout), which concord cannot
// equal. Concord's Hash is a CRC-32C of the replicated state in a fixed order, independent of
// LMDB's pages (so equal across restarts, copies and compaction of the file) and of how far a
// compaction sweep has got: HashKV at the current revision, continued with "lease" and every
// lease record (id, granted TTL, checkpointed remaining TTL), then "meta" and the replicated
// meta records by name: currentRev, scheduledCompactRev, clusterId, confState, membership,
// alarm, auth (users, roles and password hashes: members must agree on them too).
// Left out, as etcd leaves out consistent_index: consistentIndex/Term (an entry that changes no
// state still moves them), memberId (each member's own), finishedCompactRev (sweep progress).
// Members at the same applied index have the same Hash.
import * as schema from '../storage/schema';
import { assert } from '../util/assert';
import { crc32cUpdate } from '../util/crc32c';

/** The revision records of a consistent snapshot of the `key` db, in key order. */
export interface RevisionSource {
  /** Visits every record with fromMain <= main <= toMain (concord keys, stored values). */
  forEach(fromMain: number, toMain: number, visit: (key: Uint8Array, value: Uint8Array) => void): void;
}

const bucketKey = Buffer.from(schema.dbKey);
const etcdRevKeyLen = 17;

/** Where field 1 (key) lies in the last KeyValue findKey() parsed (one thread, no reentry). */
const scratch = { keyStart: 0, keyEnd: 0 };

/** Reads a varint at `pos`; returns its end, the value in `varintValue` (lengths: < 2^31). */
let varintValue = 0;
function readVarint(b: Uint8Array, pos: number): number {
  let v = 0;
  let shift = 0;
  for (;;) {
    assert(pos < b.length, 'stored KeyValue truncated');
    const x = b[pos++]!;
    if (shift < 28) v |= (x & 0x7f) << shift;
    else v += (x & 0x7f) * 2 ** shift;
    if (x < 0x80) break;
    shift += 7;
    assert(shift < 70, 'stored KeyValue varint too long');
  }
  varintValue = v;
  return pos;
}

/** Finds the user key (field 1) of a stored KeyValue into scratch. */
function findKey(value: Uint8Array): void {
  let pos = 0;
  while (pos < value.length) {
    pos = readVarint(value, pos);
    const tag = varintValue;
    const wire = tag & 7;
    if (wire === 0) {
      pos = readVarint(value, pos);
    } else {
      assert(wire === 2, 'stored KeyValue: unexpected wire type');
      pos = readVarint(value, pos);
      const end = pos + varintValue;
      assert(end <= value.length, 'stored KeyValue: field past the end');
      if (tag >>> 3 === 1) {
        scratch.keyStart = pos;
        scratch.keyEnd = end;
        return;
      }
      pos = end;
    }
  }
  assert(false, 'stored KeyValue without a key');
}

/**
 * etcd's bytes for a stored record: its value without zero fields, and for a tombstone only the
 * key field. Writes into `out` from `at` (room for value.length) and returns the length.
 * Byte loops rather than subarray+set: a view per field cost more than the copy (profiled).
 */
export function etcdValueBytes(value: Uint8Array, tombstone: boolean, out: Uint8Array, at = 0): number {
  let pos = 0;
  let n = at;
  let lastField = 0;
  while (pos < value.length) {
    const fieldStart = pos;
    pos = readVarint(value, pos);
    const tag = varintValue;
    const field = tag >>> 3;
    const wire = tag & 7;
    assert(field > lastField, 'stored KeyValue fields out of order');
    lastField = field;
    let zero: boolean;
    if (wire === 0) {
      const at = pos;
      pos = readVarint(value, pos);
      zero = pos === at + 1 && value[at] === 0;
    } else {
      assert(wire === 2, 'stored KeyValue: unexpected wire type');
      pos = readVarint(value, pos);
      zero = varintValue === 0;
      pos += varintValue;
      assert(pos <= value.length, 'stored KeyValue: field past the end');
    }
    if (zero) continue;
    if (tombstone && field !== 1) continue;
    for (let i = fieldStart; i < pos; i++) out[n++] = value[i]!;
  }
  return n - at;
}

/** etcd's revision key (revision.go revToBytes + the tombstone mark) for a concord record key. */
export function etcdRevKey(key: Uint8Array, out: Uint8Array): number {
  for (let i = 0; i < 8; i++) out[i] = key[i]!;
  out[8] = 0x5f; // '_'
  for (let i = 8; i < 16; i++) out[i + 1] = key[i]!;
  if (schema.revKeyIsTombstone(key)) {
    out[17] = 0x74; // 't'
    return 18;
  }
  return etcdRevKeyLen;
}

interface Latest { main: number; sub: number; tomb: boolean }

/**
 * HashKV at `rev` (> 0, <= currentRev, > compactRev: the caller checked) of one snapshot whose
 * compaction revision is `compactRev` (-1 if none). Returns the hash and the record count.
 */
export function hashKv(src: RevisionSource, rev: number, compactRev: number): { hash: number; records: number } {
  assert(Number.isSafeInteger(rev) && rev > 0, 'hashKv: bad revision');
  // rev == compactRev only for HashKV(0) right after a compaction at the current revision.
  assert(rev >= compactRev, 'hashKv: revision compacted');
  // 1. Records at or below the compaction: the newest of each key (a compaction sweep under way
  //    leaves older ones too), then which keys changed in (compactRev, rev] and which are live.
  let below: Map<string, Latest> | null = null;
  let keepEmpty = true;
  if (compactRev >= 0) {
    const m = new Map<string, Latest>();
    src.forEach(0, compactRev, (key, value) => {
      findKey(value);
      const k = Buffer.prototype.latin1Slice.call(value, scratch.keyStart, scratch.keyEnd) as string;
      m.set(k, { main: schema.revKeyMain(key), sub: schema.revKeySub(key), tomb: schema.revKeyIsTombstone(key) });
    });
    if (m.size > 0) {
      below = m;
      const liveAbove = new Map<string, boolean>();
      src.forEach(compactRev + 1, rev, (key, value) => {
        findKey(value);
        const k = Buffer.prototype.latin1Slice.call(value, scratch.keyStart, scratch.keyEnd) as string;
        liveAbove.set(k, !schema.revKeyIsTombstone(key));
      });
      for (const live of liveAbove.values()) if (live) { keepEmpty = false; break; }
      for (const [k, l] of m) {
        if (liveAbove.has(k)) {
          m.delete(k); // changed after the compaction: its older records are not kept at rev
        } else if (l.tomb) {
          m.delete(k);
        }
      }
      if (m.size > 0) keepEmpty = false;
    }
  }
  // 2. The hash, in revision order.
  let crc = crc32cUpdate(0, bucketKey);
  let records = 0;
  // etcd's key then etcd's value in one buffer: one checksum call per record.
  let buf = new Uint8Array(256);
  const add = (key: Uint8Array, value: Uint8Array): void => {
    if (buf.length < value.length + 18) buf = new Uint8Array((value.length + 18) * 2);
    const kn = etcdRevKey(key, buf);
    const vn = etcdValueBytes(value, schema.revKeyIsTombstone(key), buf, kn);
    crc = crc32cUpdate(crc, buf, 0, kn + vn);
    records++;
  };
  if (below !== null) {
    const kept = below;
    src.forEach(0, compactRev, (key, value) => {
      if (!keepEmpty) {
        findKey(value);
        const k = Buffer.prototype.latin1Slice.call(value, scratch.keyStart, scratch.keyEnd) as string;
        const l = kept.get(k);
        if (l === undefined || l.main !== schema.revKeyMain(key) || l.sub !== schema.revKeySub(key)) return;
      }
      add(key, value);
    });
  }
  src.forEach(Math.max(0, compactRev + 1), rev, add);
  return { hash: crc, records };
}

/** The records Hash covers after the key space, from one snapshot. */
export interface StateSource extends RevisionSource {
  /** Every lease record in key order. */
  forEachLease(visit: (key: Uint8Array, value: Uint8Array) => void): void;
  meta(name: string): Uint8Array | undefined;
}

/** The meta records Hash covers, in this order (see the header). */
export const hashedMetaNames: readonly string[] = [schema.metaCurrentRev, schema.metaScheduledCompact,
  schema.metaClusterId, schema.metaConfState, schema.metaMembership, schema.metaAlarm, schema.metaAuth];

/** Concord's Hash (header) of a snapshot at `currentRev` with compaction `compactRev`. */
export function hashState(src: StateSource, currentRev: number, compactRev: number): number {
  let crc = hashKv(src, currentRev, compactRev).hash;
  crc = crc32cUpdate(crc, Buffer.from(schema.dbLease));
  src.forEachLease((key, value) => {
    crc = crc32cUpdate(crc, key);
    crc = crc32cUpdate(crc, value);
  });
  crc = crc32cUpdate(crc, Buffer.from(schema.dbMeta));
  for (const name of hashedMetaNames) {
    const v = src.meta(name);
    if (v === undefined) continue;
    crc = crc32cUpdate(crc, Buffer.from(name));
    crc = crc32cUpdate(crc, v);
  }
  return crc;
}
