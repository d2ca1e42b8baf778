// Requests only the leader can answer, which any member takes from its clients and sends to the
// leader over the peer transport's forward connections (src/transport/forward.ts). etcd has the
// same three on its peer port: POST /leases (LeaseRenew: only the leader's lessor knows when a
// lease expires), POST /leases/internal (LeaseTimeToLive: the remaining TTL is the leader's) and
// POST /members/promote/<id> (only the leader knows whether a learner caught up).
//
// Requests any member answers, leader or not (HashKV for the corruption checks), are in
// member_requests.ts, numbered from memberOpMin up: LeaderOp values stay below it.
//
// One definition of every layout: the asking member encodes with these functions and the leader
// decodes with them (and the other way round for answers); the tests use them too. Answer codes
// are ErrorCode values (0 = done); the transport's own codes (ForwardError) are above them.
import Long from 'long';

export const enum LeaderOp {
  /** u64 lease id -> i64 TTL in seconds (0: no such lease, as etcd's keep-alive answers). */
  LeaseRenew = 1,
  /** etcdserverpb.LeaseTimeToLiveRequest -> etcdserverpb.LeaseTimeToLiveResponse (the leader's header). */
  LeaseTimeToLive = 2,
  /** u64 member id -> u64 raft index the leader had committed once the promotion applied. */
  MemberPromote = 3,
}

/** How often an asking member tries again after a failed attempt (etcd sleeps 50 ms). */
export const leaderRetryMs = 50;

/** A u64 (lease id, member id, raft index) as 8 bytes, big-endian. */
export function encodeU64(v: Long | number): Uint8Array {
  const l = Long.isLong(v) ? v as Long : Long.fromNumber(v as number, true);
  const out = Buffer.allocUnsafe(8);
  out.writeUInt32BE(l.high >>> 0, 0);
  out.writeUInt32BE(l.low >>> 0, 4);
  return out;
}

/** The u64 of encodeU64, or null when the payload is not 8 bytes. */
export function decodeU64(p: Uint8Array): Long | null {
  if (p.length !== 8) return null;
  const b = Buffer.from(p.buffer, p.byteOffset, 8);
  return new Long(b.readUInt32BE(4) | 0, b.readUInt32BE(0) | 0, true);
}

/** An i64 (a TTL in seconds) as 8 bytes, big-endian two's complement. */
export function encodeI64(v: number): Uint8Array {
  const out = Buffer.allocUnsafe(8);
  out.writeBigInt64BE(BigInt(Math.trunc(v)));
  return out;
}

/** The i64 of encodeI64, or null when the payload is not 8 bytes. */
export function decodeI64(p: Uint8Array): number | null {
  if (p.length !== 8) return null;
  return Number(Buffer.from(p.buffer, p.byteOffset, 8).readBigInt64BE(0));
}
