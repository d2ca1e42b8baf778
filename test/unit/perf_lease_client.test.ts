// The lease benchmark's hand-written protobuf (perf/leasegen.ts) against protobufjs: requests it
// encodes decode to what was meant, its walkers read what protobufjs encodes, lease ids keep all
// 63 bits (they travel as varint bytes), and the keyed leases are the ones the table promises.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Long from 'long';

import { etcdserverpb } from '../../src/gen/proto';
import {
  countRequest, grantRequest, idRequest, leaseKeyOf, leasesCount, putRequest, rangeCount, walkLease, type LeaseFields,
} from '../../perf/leasegen';

const fields = (): LeaseFields => ({ idStart: 0, idEnd: 0, ttl: 0, error: false });
const bigId = Long.fromString('8070450532247928831'); // 0x6FFFFFFFFFFFFFFF: not a safe JS integer

test('walkLease: ID bytes, TTL and error of grant and keep-alive responses; ids round-trip into requests', () => {
  const grant = Buffer.from(etcdserverpb.LeaseGrantResponse.encode({
    header: { cluster_id: Long.fromString('14841639068965178418', true), member_id: 1, revision: 7, raft_term: 2 }, ID: bigId, TTL: 60,
  }).finish());
  const wrapped = Buffer.concat([Buffer.from([9, 9]), grant, Buffer.from([9])]);
  const f = fields();
  walkLease(wrapped, 2, 2 + grant.length, f);
  assert.equal(f.ttl, 60);
  assert.equal(f.error, false);
  const id = Buffer.from(wrapped.subarray(f.idStart, f.idEnd));
  // The id bytes make requests that name the same lease.
  assert.ok(Long.fromValue(etcdserverpb.LeaseKeepAliveRequest.decode(idRequest(id)).ID).equals(bigId));
  assert.ok(Long.fromValue(etcdserverpb.LeaseRevokeRequest.decode(idRequest(id)).ID).equals(bigId));
  const put = etcdserverpb.PutRequest.decode(putRequest('bench/lease/0000001', Buffer.from('vv'), id));
  assert.equal(Buffer.from(put.key).toString(), 'bench/lease/0000001');
  assert.equal(Buffer.from(put.value).toString(), 'vv');
  assert.ok(Long.fromValue(put.lease).equals(bigId));
  assert.equal(etcdserverpb.PutRequest.decode(putRequest('k', Buffer.alloc(0), null)).lease.toString(), '0');

  const ka = Buffer.from(etcdserverpb.LeaseKeepAliveResponse.encode({ header: { revision: 3 }, ID: bigId, TTL: 0 }).finish());
  walkLease(ka, 0, ka.length, f);
  assert.equal(f.ttl, 0);
  assert.ok(ka.subarray(f.idStart, f.idEnd).equals(id));
  const gone = Buffer.from(etcdserverpb.LeaseTimeToLiveResponse.encode({ ID: 5, TTL: -1 }).finish());
  walkLease(gone, 0, gone.length, f);
  assert.equal(f.ttl, -1);
  const refused = Buffer.from(etcdserverpb.LeaseGrantResponse.encode({ ID: 0, TTL: 0, error: 'lease already exists' }).finish());
  walkLease(refused, 0, refused.length, f);
  assert.equal(f.error, true);
  assert.equal(f.idStart, -1);
});

test('grant, count and list encodings', () => {
  assert.equal(Long.fromValue(etcdserverpb.LeaseGrantRequest.decode(grantRequest(300)).TTL).toNumber(), 300);
  const count = etcdserverpb.RangeRequest.decode(countRequest('bench/lease/'));
  assert.equal(Buffer.from(count.key).toString(), 'bench/lease/');
  assert.equal(Buffer.from(count.range_end).toString(), 'bench/lease0');
  assert.equal(count.count_only, true);
  const rr = Buffer.from(etcdserverpb.RangeResponse.encode({ header: { revision: 9 }, count: 123456 }).finish());
  assert.equal(rangeCount(rr), 123456);
  const leases = Buffer.from(etcdserverpb.LeaseLeasesResponse.encode({
    header: { revision: 1 }, leases: Array.from({ length: 1000 }, (_, i) => ({ ID: bigId.add(i) })),
  }).finish());
  assert.equal(leasesCount(leases), 1000);
  assert.equal(leasesCount(Buffer.from(etcdserverpb.LeaseLeasesResponse.encode({ header: { revision: 1 } }).finish())), 0);
});

test('leaseKeyOf: exactly K keyed leases, evenly spread, the last lease always keyed', () => {
  for (const [n, k] of [[100_000, 10_000], [500, 50], [2000, 200], [7, 3], [10, 10], [10, 0], [1, 1]] as const) {
    const keyOf = leaseKeyOf(n, k);
    const keyed: number[] = [];
    for (let i = 0; i < n; i++) if (keyOf(i) !== null) keyed.push(i);
    assert.equal(keyed.length, k, `${n} leases, ${k} keys`);
    if (k > 0) assert.equal(keyed.at(-1), n - 1);
    assert.equal(new Set(keyed.map((i) => keyOf(i))).size, k);
  }
});
