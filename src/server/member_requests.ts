// Requests any member answers for a peer, leader or not, over the peer transport's forward
// connections (src/transport/forward.ts), next to the leader-only ones of leader_requests.ts.
// etcd has one on its peer port: GET /members/hashkv (server/etcdserver/corrupt.go
// hashKVHandler), which the corruption checks use to learn a peer's HashKV at a revision.
//
// Ops share the transport's u16 op space with LeaderOp: member ops are numbered from memberOpMin
// up and leader ops below it, so that the receiver dispatches on the number alone
// (EtcdServer.onForward): a member op is served wherever it lands, a leader op only by the leader.
//
// One definition of every layout: the asking member encodes with these functions and the peer
// decodes with them (and the other way round for answers); the tests use them too. Answer codes
// are ErrorCode values (0 = done: Compacted and FutureRev as etcd's handler answers them).
import { assert } from '../util/assert';

/** Ops from here up are MemberOp; LeaderOp values are below it. */
export const memberOpMin = 0x100;

export const enum MemberOp {
  /** u64 revision (> 0) -> HashKvAnswer: this member's HashKV at that revision. */
  HashKv = 0x100,
}

/** Whether a forwarded op is one any member serves (MemberOp) rather than a LeaderOp. */
export function isMemberOp(op: number): boolean {
  return op >= memberOpMin;
}

/** A member's HashKV answer (etcd HashKVResponse: hash, compact_revision, header.revision). */
export interface HashKvAnswer {
  /** CRC-32C of the history up to `rev` (mvcc/hash.ts). */
  hash: number;
  /** The compaction revision the hash was taken under; -1: never compacted. */
  compactRev: number;
  /** The member's current revision when it hashed (etcd's header.revision). */
  currentRev: number;
  /** The revision hashed (etcd 3.5 hash_revision). */
  rev: number;
}

/** u32 hash | i64 compactRev | i64 currentRev | i64 rev, big-endian. */
export const hashKvAnswerBytes = 4 + 8 + 8 + 8;

/** The request of MemberOp.HashKv: the revision, 8 bytes big-endian. */
export function encodeHashKvRequest(rev: number): Uint8Array {
  assert(Number.isSafeInteger(rev) && rev > 0, 'hashkv request: revision');
  const out = Buffer.allocUnsafe(8);
  out.writeBigInt64BE(BigInt(rev), 0);
  return out;
}

/** The revision of encodeHashKvRequest, or null when the payload is not one. */
export function decodeHashKvRequest(p: Uint8Array): number | null {
  if (p.length !== 8) return null;
  const rev = Buffer.from(p.buffer, p.byteOffset, 8).readBigInt64BE(0);
  if (rev <= 0n || rev > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return Number(rev);
}

export function encodeHashKvAnswer(a: HashKvAnswer): Uint8Array {
  assert(Number.isInteger(a.hash) && a.hash >= 0 && a.hash <= 0xffffffff, 'hashkv answer: hash');
  assert(Number.isSafeInteger(a.compactRev) && a.compactRev >= -1, 'hashkv answer: compactRev');
  assert(Number.isSafeInteger(a.rev) && a.rev > 0, 'hashkv answer: rev');
  assert(Number.isSafeInteger(a.currentRev) && a.currentRev >= a.rev, 'hashkv answer: currentRev');
  const out = Buffer.allocUnsafe(hashKvAnswerBytes);
  out.writeUInt32BE(a.hash, 0);
  out.writeBigInt64BE(BigInt(a.compactRev), 4);
  out.writeBigInt64BE(BigInt(a.currentRev), 12);
  out.writeBigInt64BE(BigInt(a.rev), 20);
  return out;
}

/** The answer of encodeHashKvAnswer, or null when the payload is not one. */
export function decodeHashKvAnswer(p: Uint8Array): HashKvAnswer | null {
  if (p.length !== hashKvAnswerBytes) return null;
  const b = Buffer.from(p.buffer, p.byteOffset, hashKvAnswerBytes);
  const compactRev = Number(b.readBigInt64BE(4));
  const currentRev = Number(b.readBigInt64BE(12));
  const rev = Number(b.readBigInt64BE(20));
  if (!Number.isSafeInteger(compactRev) || compactRev < -1) return null;
  if (!Number.isSafeInteger(rev) || rev <= 0 || !Number.isSafeInteger(currentRev) || currentRev < rev) return null;
  return { hash: b.readUInt32BE(0), compactRev, currentRev, rev };
}
