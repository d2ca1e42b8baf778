// Raft snapshots between real members (state transfer): with a short raft log
// (--experimental-snapshot-catchup-entries 20), a member that was down while the log moved on,
// and a learner added later, can only catch up from a copy of the leader's LMDB state. Both must
// end with exactly the leader's state: every key at every revision still kept, the compaction
// point, the leases with their keys, and then follow new writes like any member.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Long from 'long';

import { startCluster, ClusterHandle } from '../helpers/cluster';
import { connect, unary } from '../helpers/grpc_client';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Everything a member serves about the keyspace, serializable (its own applied state). */
async function stateOf(c: ClusterHandle, i: number, revs: number[], rangesOnly: boolean): Promise<string> {
  const kv = connect('etcdserverpb.KV', c.members[i]!.clientUrl);
  const lease = connect('etcdserverpb.Lease', c.members[i]!.clientUrl);
  try {
    const out: unknown[] = [];
    const all = await unary(kv, 'Range', { key: Buffer.from([0]), range_end: Buffer.from([0]), serializable: true });
    out.push(['rev', String(all.header!.revision), all.kvs.map((k) => [String(k.key), String(k.value), String(k.create_revision), String(k.mod_revision), String(k.version), String(k.lease)])]);
    for (const rev of revs) {
      const r = await unary(kv, 'Range', { key: Buffer.from([0]), range_end: Buffer.from([0]), serializable: true, revision: rev })
        .catch((err: { details?: string }) => err.details);
      out.push([rev, typeof r === 'object' ? r.kvs.map((k) => [String(k.key), String(k.value), String(k.mod_revision)]) : r]);
    }
    if (rangesOnly) return JSON.stringify(out); // a learner serves serializable ranges only
    const leases = await unary(lease, 'LeaseLeases', {});
    const ids = leases.leases.map((l) => String(l.ID)).sort();
    for (const id of ids) {
      const ttl = await unary(lease, 'LeaseTimeToLive', { ID: Long.fromString(id), keys: true });
      out.push(['lease', id, String(ttl.grantedTTL), (ttl.keys ?? []).map((k) => String(k)).sort()]);
    }
    return JSON.stringify(out);
  } finally {
    kv.close();
    lease.close();
  }
}

async function waitSame(c: ClusterHandle, a: number, b: number, revs: number[], rangesOnly = false): Promise<void> {
  let last = '';
  for (let i = 0; i < 100; i++) {
    try {
      const [sa, sb] = await Promise.all([stateOf(c, a, revs, rangesOnly), stateOf(c, b, revs, rangesOnly)]);
      if (sa === sb) return;
      last = `member ${a}: ${sa.slice(0, 600)}\nmember ${b}: ${sb.slice(0, 600)}`;
    } catch (err) {
      last = String(err);
    }
    await sleep(200);
  }
  assert.fail(`member ${b} did not converge to member ${a}:\n${last}\n--- member ${b} log:\n${c.logs(b).slice(-3000)}`);
}

test('a restarted member and a new learner catch up from the leader\'s snapshot', async (t) => {
  const c = await startCluster({ size: 3, token: 'snapshot-test', extraArgs: ['--experimental-snapshot-catchup-entries', '20'] });
  t.after(() => c.stop());
  const leader = await c.leader();
  const down = (leader + 1) % 3;
  const kv = connect('etcdserverpb.KV', c.members[leader]!.clientUrl);
  const lease = connect('etcdserverpb.Lease', c.members[leader]!.clientUrl);
  t.after(() => {
    kv.close();
    lease.close();
  });
  const put = async (k: string, v: string, leaseId?: Long): Promise<number> =>
    Number((await unary(kv, 'Put', { key: Buffer.from(k), value: Buffer.from(v), lease: leaseId })).header!.revision);

  for (let i = 0; i < 30; i++) await put(`a${i % 7}`, `v${i}`);
  await c.kill(down);
  // While it is down: far more entries than the log keeps, a lease with keys, deletes, a compaction.
  const granted = await unary(lease, 'LeaseGrant', { TTL: 600, ID: Long.fromNumber(4242) });
  assert.equal(String(granted.ID), '4242');
  const revs: number[] = [];
  for (let i = 0; i < 200; i++) revs.push(await put(`b${i % 13}`, `w${i}`, i % 5 === 0 ? Long.fromNumber(4242) : undefined));
  await unary(kv, 'DeleteRange', { key: Buffer.from('a0') });
  await unary(kv, 'Compact', { revision: revs[50]! });
  for (let i = 0; i < 40; i++) revs.push(await put(`c${i % 3}`, `x${i}`));
  const check = revs.filter((_, i) => i % 17 === 0); // some compacted, some kept

  await c.restart(down);
  await waitSame(c, leader, down, check);
  assert.match(c.logs(leader), /sending a snapshot to a follower behind the log/, 'the leader sent a snapshot');

  // It follows new writes like any member.
  const after = await put('after-restart', '1');
  await waitSame(c, leader, down, [...check, after]);

  // A learner added now starts empty and can only catch up from a snapshot.
  const { index: learner, id: learnerId } = await c.join(leader, { learner: true });
  await waitSame(c, leader, learner, check, true);
  assert.match(c.logs(learner), /received and saved database snapshot/, 'the learner caught up from a snapshot');
  assert.match(c.logs(down), /received and saved database snapshot/, 'the restarted member caught up from a snapshot');
  const cl = connect('etcdserverpb.Cluster', c.members[leader]!.clientUrl);
  t.after(() => cl.close());
  for (let i = 0; ; i++) {
    try {
      await unary(cl, 'MemberPromote', { ID: Long.fromString(learnerId, true) });
      break;
    } catch (err) {
      if (i > 50) throw err;
      await sleep(100);
    }
  }
  await put('after-promote', '2');
  for (const m of [down, learner]) await waitSame(c, leader, m, check);
  // A snapshot install survives a restart of the member that installed it.
  await c.kill(learner);
  await c.restart(learner);
  await waitSame(c, leader, learner, check);
});
