// Every byte layout concord keeps in LMDB is declared here (etcd: server/storage/schema).
//
// <data-dir>/member/wal/  the raft log and hard state (storage/wal.ts), the durability point.
// <data-dir>/member/kv/   one LMDB environment with the MVCC state, recoverable from the WAL
//                       (data.mdb + lock.mdb, an lmdb-js directory environment):
//   key   : MVCC revisions (etcd's "key" bucket). key = main (u64 BE) | sub (u64 BE) [| 't']
//                       value = mvccpb.KeyValue bytes ({key, mod_revision} only for a tombstone)
//   meta  : small named records, keys below.
//   lease : lease id (i64 BE, 8 bytes) -> f64 LE granted TTL s | f64 LE remaining TTL s
//           (remaining 0 = none checkpointed; etcd's leasepb.Lease {ID, TTL, RemainingTTL})
// <data-dir>/member/snap/ raft snapshots: copies of the kv environment's data file, made to be
//                       sent (out-*) or received and waiting to be installed (in-*); see
//                       storage/snapshotter.ts.
import { assert } from '../util/assert';

export const dbKey = 'key';
export const dbMeta = 'meta';
export const dbLease = 'lease';

export const metaConsistentIndex = 'consistentIndex'; // u64: last raft index applied to MVCC
export const metaCurrentRev = 'currentRev'; //           u64: MVCC current revision at that index
/** u64: the raft term of the entry at consistentIndex (a raft snapshot's term); written with it. */
export const metaConsistentTerm = 'consistentTerm';
export const metaScheduledCompact = 'scheduledCompactRev'; // u64
export const metaFinishedCompact = 'finishedCompactRev'; //   u64
export const metaClusterId = 'clusterId'; //   u64
export const metaMemberId = 'memberId'; //     u64
/** The raft configuration as of consistentIndex: u32 voters, u32 learners, then u53 ids (f64 LE). */
export const metaConfState = 'confState';
/** The cluster's members (membership/membership.ts encoding) as of consistentIndex. */
export const metaMembership = 'membership';
// The applied alarms (apply/alarm_store.ts encoding); etcd keeps them in an `alarm` bucket, concord
// in this one record of the meta table, written in the transaction of the entry that changed them.
export const metaAlarm = 'alarm';
// The auth store (concordpb.AuthState; auth/auth_store.ts), written in the transaction of the
// entry that changed it.
export const metaAuth = 'auth';

export const revBytesLen = 16;
export const revTombstoneLen = 17;
const tombstoneMark = 0x74; // 't'

const twoTo32 = 4294967296;

export function writeU64(buf: Buffer, offset: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, 'u64 value');
  buf.writeUInt32BE(Math.floor(value / twoTo32), offset);
  buf.writeUInt32BE(value >>> 0, offset + 4);
}

export function readU64(buf: Uint8Array, offset: number): number {
  const b = buf as Buffer;
  const hi = b.readUInt32BE(offset);
  const lo = b.readUInt32BE(offset + 4);
  const v = hi * twoTo32 + lo;
  assert(Number.isSafeInteger(v), 'u64 overflow');
  return v;
}

export function u64Bytes(value: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  writeU64(b, 0, value);
  return b;
}

/** Revision key for the `key` db: main | sub, plus 't' for a tombstone (etcd revision.go). */
export function revKey(main: number, sub: number, tombstone: boolean): Buffer {
  const b = Buffer.allocUnsafe(tombstone ? revTombstoneLen : revBytesLen);
  writeU64(b, 0, main);
  writeU64(b, 8, sub);
  if (tombstone) b[16] = tombstoneMark;
  return b;
}

export function revKeyMain(key: Uint8Array): number {
  return readU64(key, 0);
}

export function revKeySub(key: Uint8Array): number {
  return readU64(key, 8);
}

export function revKeyIsTombstone(key: Uint8Array): boolean {
  return key.length === revTombstoneLen && key[16] === tombstoneMark;
}

export const walDir = 'member/wal';
export const kvDir = 'member/kv';
/** An online defragmentation's copy of the kv environment, until it replaces kv/data.mdb. */
export const kvDefragDir = 'member/kv-defrag';
export const snapDir = 'member/snap';
/** The files of the kv directory environment (LMDB's names for a directory env). */
export const kvDataFile = 'data.mdb';
export const kvLockFile = 'lock.mdb';

/** metaConfState's layout. */
export function encodeConfState(cs: { voters: number[]; learners: number[] }): Buffer {
  const b = Buffer.allocUnsafe(8 + 8 * (cs.voters.length + cs.learners.length));
  b.writeUInt32LE(cs.voters.length, 0);
  b.writeUInt32LE(cs.learners.length, 4);
  let at = 8;
  for (const id of [...cs.voters, ...cs.learners]) {
    assert(Number.isSafeInteger(id) && id > 0, 'raft id');
    at = b.writeDoubleLE(id, at);
  }
  return b;
}

export function decodeConfState(b: Buffer): { voters: number[]; learners: number[] } {
  const nv = b.readUInt32LE(0);
  const nl = b.readUInt32LE(4);
  assert(b.length === 8 + 8 * (nv + nl), 'conf state length');
  const ids: number[] = [];
  for (let i = 0; i < nv + nl; i++) ids.push(b.readDoubleLE(8 + 8 * i));
  return { voters: ids.slice(0, nv), learners: ids.slice(nv) };
}
