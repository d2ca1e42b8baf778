// Member and cluster ids, computed exactly as etcd computes them, so that the same flags give the
// same ids on concord and on etcd (checked against etcd 3.4 in test/membership/ids.test.ts).
//
//   member id  = first 8 bytes, big-endian, of SHA-1(sorted peer URLs concatenated + token
//                [+ decimal Unix seconds, for a member added at run time])
//   cluster id = first 8 bytes, big-endian, of SHA-1(the member ids, sorted, 8 bytes big-endian
//                each)
//
// etcd: server/etcdserver/api/membership/member.go newMember(),
//       server/etcdserver/api/membership/cluster.go genID().
//
// Worked example (etcd 3.4.23, `--initial-cluster-token etcd-cluster`, one member):
//   peer URLs ["http://localhost:2380"] → SHA-1("http://localhost:2380etcd-cluster")
//   → member id 8e9e05c52164694d → cluster id cdf818194e3a8c32.
//
// Ids are `bigint`, not `Long` or `number`: a member id is an unsigned 64-bit value (half of all
// ids are above 2^63, so a signed view would be wrong too), `number` is lossy above 2^53, and
// bigint compares by value, so ids sort with `<` (the cluster id needs an unsigned sort) and work
// as Map/Set keys (a Long is an object: two equal Longs are two keys). The proto layer carries
// uint64 as Long (protobufjs): convert at that boundary with idToLong / idFromLong, once per
// member, never per request.
import { createHash } from 'node:crypto';
import Long from 'long';
import { assert } from '../util/assert';

/** An etcd member id: unsigned 64-bit, never 0 (raft.None). */
export type MemberId = bigint;
/** An etcd cluster id: unsigned 64-bit. */
export type ClusterId = bigint;

const uint64Max = (1n << 64n) - 1n;

function isUint64(id: bigint): boolean {
  return id >= 0n && id <= uint64Max;
}

/** Go sort.Strings order: bytewise on the UTF-8 encoding (JS `<` compares UTF-16 units). */
export function compareGoStrings(a: string, b: string): number {
  if (a === b) return 0;
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** The first 8 bytes of SHA-1(data), big-endian. */
function sha1Uint64(data: Buffer): bigint {
  const digest = createHash('sha1').update(data).digest();
  return digest.readBigUInt64BE(0);
}

/**
 * The id etcd gives a member with these peer URLs. `peerUrls` are compared and hashed as given:
 * pass them normalized as etcd holds them (url.String() of the parsed URL: parsePeerUrls() in
 * urls.ts), or the id differs from etcd's. `token` is --initial-cluster-token when bootstrapping;
 * a member added at run time (MemberAdd) uses token '' and `now`, the time of the add (etcd hashes
 * its Unix seconds in decimal).
 */
export function memberIdOf(peerUrls: readonly string[], token: string, now?: Date): MemberId {
  assert(peerUrls.length > 0, 'memberIdOf: a member has at least one peer URL');
  const sorted = [...peerUrls].sort(compareGoStrings);
  let text = sorted.join('') + token;
  if (now !== undefined) {
    const ms = now.getTime();
    assert(Number.isFinite(ms), 'memberIdOf: invalid date');
    // Go time.Unix(): seconds, rounded towards minus infinity.
    text += String(Math.floor(ms / 1000));
  }
  const id = sha1Uint64(Buffer.from(text, 'utf8'));
  assert(isUint64(id), 'memberIdOf: id out of range');
  return id;
}

/** The id etcd gives the cluster of these members (any order; duplicates are a bug). */
export function clusterIdOf(memberIds: readonly MemberId[]): ClusterId {
  const sorted = [...memberIds].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const buf = Buffer.alloc(8 * sorted.length);
  for (let i = 0; i < sorted.length; i++) {
    const id = sorted[i]!;
    assert(isUint64(id), 'clusterIdOf: member id out of range');
    assert(i === 0 || sorted[i - 1]! !== id, 'clusterIdOf: duplicate member id');
    buf.writeBigUInt64BE(id, 8 * i);
  }
  return sha1Uint64(buf);
}

/**
 * An id as etcd prints it: lower-case hex without leading zeros (types.ID.String(),
 * `etcdctl member list`, log fields such as "local-member-id").
 */
export function formatId(id: bigint): string {
  assert(isUint64(id), 'formatId: id out of range');
  return id.toString(16);
}

/** Parses an id printed by formatId / etcdctl (etcd types.IDFromString); null if it is not one. */
export function parseId(hex: string): bigint | null {
  if (!/^[0-9a-fA-F]{1,16}$/.test(hex)) return null;
  return BigInt('0x' + hex);
}

/** The id as the unsigned Long protobufjs uses for uint64 fields. */
export function idToLong(id: bigint): Long {
  assert(isUint64(id), 'idToLong: id out of range');
  return Long.fromBits(Number(id & 0xffffffffn), Number(id >> 32n), true);
}

/** The id a uint64 proto field carries (a Long, signed or not: the bits are what count). */
export function idFromLong(l: Long): bigint {
  return (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
}
