// A 3-member concord cluster with etcd's flags, as real processes on loopback: every member
// knows the others (MemberList with names and client URLs, etcd's ids), any member takes
// writes (a follower forwards them) and linearizable reads (ReadIndex), watchers on a follower
// see the leader's writes with the same revisions, the loss of the leader elects another one
// and writes go on, and a restarted member catches up.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { clusterIdOf, memberIdOf } from '../../src/membership/ids';
import { startCluster } from '../helpers/cluster';
import { connect, openStream, str, unary } from '../helpers/grpc_client';

test('3 members: membership, writes and reads anywhere, watch on a follower, leader loss, restart', async (t) => {
  const c = await startCluster({ size: 3, token: 'basic-test' });
  t.after(() => c.stop());
  const kv = c.members.map((m) => connect('etcdserverpb.KV', m.clientUrl));
  const cl = c.members.map((m) => connect('etcdserverpb.Cluster', m.clientUrl));
  t.after(() => {
    for (const x of [...kv, ...cl]) x.close();
  });
  const leader = await c.leader();

  // Membership: the same list on every member, etcd's ids for these flags.
  const ids = c.members.map((m) => memberIdOf([m.peerUrl], 'basic-test'));
  for (let i = 0; i < 3; i++) {
    const r = await unary(cl[i]!, 'MemberList', {});
    assert.equal(BigInt(String(r.header!.cluster_id)), clusterIdOf(ids), `member ${i}: cluster id`);
    const got = r.members.map((m) => [BigInt(m.ID!.toString()), m.name, (m.peerURLs ?? []).join(), (m.clientURLs ?? []).join()]);
    const want = c.members.map((m, j) => [ids[j], m.name, m.peerUrl, m.clientUrl]).sort((a, b) => ((a[0] as bigint) < (b[0] as bigint) ? -1 : 1));
    assert.deepEqual(got, want, `member ${i}: member list`);
  }

  // A watcher on a follower; writes on the other follower; reads everywhere.
  const f1 = (leader + 1) % 3;
  const f2 = (leader + 2) % 3;
  const watchClient = connect('etcdserverpb.Watch', c.members[f1]!.clientUrl);
  t.after(() => watchClient.close());
  const w = openStream(watchClient, 'Watch');
  w.call.write({ create_request: { key: Buffer.from('k'), range_end: Buffer.from('l') } });
  await w.reader.next();
  const revs: number[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await unary(kv[f2]!, 'Put', { key: Buffer.from('k' + i), value: Buffer.from('v' + i) });
    revs.push(Number(r.header!.revision));
  }
  for (let i = 0; i < 3; i++) {
    const r = await unary(kv[i]!, 'Range', { key: Buffer.from('k9') });
    assert.equal(str(r.kvs[0]?.value), 'v9', `linearizable read on member ${i}`);
    assert.equal(Number(r.kvs[0]!.mod_revision), revs[9]);
  }
  const seen: number[] = [];
  while (seen.length < 10) {
    const ev = await w.reader.next();
    for (const e of ev.events ?? []) seen.push(Number(e.kv!.mod_revision));
  }
  assert.deepEqual(seen, revs, 'the follower watcher saw every write with its revision');
  w.call.end();

  // The leader dies: another one is elected, writes go on.
  await c.kill(leader);
  const next = await c.leader();
  assert.notEqual(next, leader);
  const after = await unary(kv[(next + 1) % 3 === leader ? (next + 2) % 3 : (next + 1) % 3]!, 'Put', { key: Buffer.from('after'), value: Buffer.from('x') });
  assert.ok(Number(after.header!.revision) > revs[9]!);
  // It comes back and catches up.
  await c.restart(leader);
  const back = connect('etcdserverpb.KV', c.members[leader]!.clientUrl);
  try {
    const r = await unary(back, 'Range', { key: Buffer.from('after') });
    assert.equal(str(r.kvs[0]?.value), 'x');
    const all = await unary(back, 'Range', { key: Buffer.from('k'), range_end: Buffer.from('l'), serializable: true });
    assert.equal(all.kvs.length, 10);
  } finally {
    back.close();
  }
});
