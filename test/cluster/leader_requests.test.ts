// Requests only the leader answers, taken by followers (issue #12; src/server/leader_requests.ts):
// lease keep-alives and time-to-live sent to a follower reach the leader over the peer port, as
// etcd's do, and keep working through a kill -9 of the leader (the follower asks again until a
// new leader answers); a lease kept alive only through a follower outlives several TTLs and
// expires once the keep-alives stop. The forward traffic shows in etcd's etcd_network_* peer
// families on /metrics. (Quorum loss: the differential test compares the answers with etcd's.)
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import Long from 'long';

import { decodeI64, decodeU64, encodeI64, encodeU64 } from '../../src/server/leader_requests';
import { startCluster } from '../helpers/cluster';
import { connect, num, openStream, unary } from '../helpers/grpc_client';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function get(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

test('leader request payloads: one encoder and one decoder each, lengths checked', () => {
  for (const v of [Long.UZERO, Long.fromString('18446744073709551615', true), Long.fromString('7587862143553391883', true)]) {
    assert.equal(decodeU64(encodeU64(v))!.toString(), v.toString());
  }
  for (const ttl of [0, 1, -1, 60, 9_000_000_000]) assert.equal(decodeI64(encodeI64(ttl)), ttl);
  assert.equal(decodeU64(new Uint8Array(7)), null);
  assert.equal(decodeI64(new Uint8Array(9)), null);
});

test('lease keep-alive and time-to-live through followers, across a kill -9 of the leader', async (t) => {
  const c = await startCluster({ size: 3 });
  t.after(() => c.stop());
  const leader = await c.leader();
  const [f1, f2] = [0, 1, 2].filter((i) => i !== leader) as [number, number];
  const lease = (i: number) => connect('etcdserverpb.Lease', c.members[i]!.clientUrl);
  const l1 = lease(f1);
  const l2 = lease(f2);
  const kv2 = connect('etcdserverpb.KV', c.members[f2]!.clientUrl);
  t.after(() => { l1.close(); l2.close(); kv2.close(); });

  const ttl = 3;
  const granted = await unary(l1, 'LeaseGrant', { ID: 0, TTL: ttl });
  const id = granted.ID;
  await unary(kv2, 'Put', { key: Buffer.from('held'), value: Buffer.from('v'), lease: id });

  // Keep-alives on one stream to the first follower, every 500 ms, answered by the leader.
  const ka = openStream(l1, 'LeaseKeepAlive');
  t.after(() => ka.call.cancel());
  const answers: { at: number; ttl: number }[] = [];
  let keeping = true;
  const keeper = (async () => {
    while (keeping) {
      ka.call.write({ ID: id });
      const r = await ka.reader.next(15_000);
      assert.equal(String(r.ID), String(id));
      answers.push({ at: Date.now(), ttl: num(r.TTL) });
      await sleep(500);
    }
  })();

  await sleep(1500);
  assert.ok(answers.length >= 2 && answers.every((a) => a.ttl === ttl), `renewed to the granted TTL: ${JSON.stringify(answers)}`);
  const ttlResp = await unary(l2, 'LeaseTimeToLive', { ID: id, keys: true });
  assert.equal(num(ttlResp.grantedTTL), ttl);
  assert.ok(num(ttlResp.TTL) >= 1 && num(ttlResp.TTL) <= ttl, `remaining TTL from the leader: ${num(ttlResp.TTL)}`);
  assert.deepEqual(ttlResp.keys.map((k) => Buffer.from(k).toString()), ['held']);
  const m2 = connect('etcdserverpb.Maintenance', c.members[f2]!.clientUrl);
  t.after(() => m2.close());
  const st = await unary(m2, 'Status', {});
  assert.equal(String(ttlResp.header!.member_id), String(st.header!.member_id), 'the header is the asked member\'s');

  // The leader dies: the keep-alives wait for the new leader and go on.
  const killedAt = Date.now();
  await c.kill(leader);
  await sleep(3 * ttl * 1000);
  const after = answers.filter((a) => a.at > killedAt);
  assert.ok(after.length >= 3 && after.every((a) => a.ttl === ttl), `keep-alives after the leader died: ${JSON.stringify(after)}`);
  const alive = await unary(l2, 'LeaseTimeToLive', { ID: id });
  assert.ok(num(alive.TTL) >= 1, `the lease outlived the old leader and ${3} TTLs: ${num(alive.TTL)}`);
  assert.equal((await unary(kv2, 'Range', { key: Buffer.from('held') })).kvs.length, 1);

  // The forward connections show in etcd's peer families on a follower's /metrics.
  const metrics = await get(`${c.members[f1]!.clientUrl}/metrics`);
  const sent = [...metrics.matchAll(/^etcd_network_peer_sent_bytes_total\{To="([0-9a-f]+)"\} (\d+)/gm)];
  assert.ok(sent.length >= 1 && sent.some((m) => Number(m[2]) > 0), 'etcd_network_peer_sent_bytes_total counts');
  assert.match(metrics, /^etcd_network_peer_round_trip_time_seconds_count\{To="[0-9a-f]+"\} \d+/m);
  assert.match(metrics, /^etcd_network_active_peers\{Local="[0-9a-f]+",Remote="[0-9a-f]+"\} 1/m);

  // Without keep-alives the lease expires: the new leader revokes it and its key goes.
  keeping = false;
  await keeper;
  const stoppedAt = Date.now();
  for (;;) {
    const r = await unary(l2, 'LeaseTimeToLive', { ID: id });
    if (num(r.TTL) === -1) break;
    assert.ok(Date.now() - stoppedAt < (ttl + 5) * 1000, 'the lease expired once the keep-alives stopped');
    await sleep(200);
  }
  assert.equal((await unary(kv2, 'Range', { key: Buffer.from('held') })).kvs.length, 0);
});
