// Runtime membership changes under a recorded write load (issue #12): a learner is added and
// joins with --initial-cluster-state existing (catching up from the leader's snapshot: the raft
// log is kept short), serves serializable reads and nothing else, is promoted on the leader
// (refused on a follower, as concord does not forward promotes yet), the leader moves to it, an
// old member is removed and stops by itself, and etcd's errors answer the bad requests (member
// not found, Peer URLs already exists, can only promote a learner). The history of the clients
// stays linearizable throughout, and every member ends with the same state.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';

import { startCluster } from '../helpers/cluster';
import { ClusterWorkload } from '../helpers/cluster_workload';
import { connect, unary } from '../helpers/grpc_client';
import { checkKvHistory } from '../helpers/linearizability';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function rejects(p: Promise<unknown>, code: grpc.status, details: string): Promise<void> {
  await assert.rejects(p, (e: grpc.ServiceError) => {
    assert.equal(e.details, details);
    assert.equal(e.code, code);
    return true;
  });
}

test('membership under load: add a learner, join, promote, move the leader, remove a member', async (t) => {
  // A short raft log: the learner added under load can only catch up from a snapshot.
  const c = await startCluster({ size: 3, token: 'membership', extraArgs: ['--experimental-snapshot-catchup-entries', '20'] });
  t.after(() => c.stop());
  const w = new ClusterWorkload({ endpoints: c.endpoints(), clients: 4, keys: 3, seed: 11 });
  w.start();
  const cl = (i: number): ReturnType<typeof connect<'etcdserverpb.Cluster'>> => connect('etcdserverpb.Cluster', c.members[i]!.clientUrl);
  try {
    await sleep(500);
    const leader = await c.leader();
    const follower = (leader + 1) % 3;

    // Bad requests get etcd's answers.
    const cf = cl(follower);
    t.after(() => cf.close());
    await rejects(unary(cf, 'MemberRemove', { ID: Long.fromString('12345', true) }), grpc.status.NOT_FOUND, 'etcdserver: member not found');
    await rejects(unary(cf, 'MemberAdd', { peerURLs: [c.members[0]!.peerUrl] }), grpc.status.FAILED_PRECONDITION, 'etcdserver: Peer URLs already exists');
    await rejects(unary(cf, 'MemberAdd', { peerURLs: ['ftp://nope'] }), grpc.status.INVALID_ARGUMENT, 'etcdserver: given member URLs are invalid');

    // A learner joins through a follower's MemberAdd and replays the log.
    const { index: learner, id: learnerId } = await c.join(follower, { learner: true });
    const lid = Long.fromString(learnerId, true);
    const list = await unary(cf, 'MemberList', {});
    assert.equal(list.members.find((m) => String(m.ID) === learnerId)?.isLearner, true);
    await rejects(unary(cf, 'MemberPromote', { ID: Long.fromString(String(list.members.find((m) => !m.isLearner)!.ID), true) }),
      grpc.status.FAILED_PRECONDITION, 'etcdserver: can only promote a learner member');
    // It serves serializable reads once caught up.
    const lkv = connect('etcdserverpb.KV', c.members[learner]!.clientUrl);
    t.after(() => lkv.close());
    for (let i = 0; i < 50; i++) {
      const r = await unary(lkv, 'Range', { key: Buffer.from('k0'), serializable: true }).catch(() => null);
      if (r !== null && r.kvs.length > 0) break;
      await sleep(100);
    }
    assert.match(c.logs(learner), /received and saved database snapshot/, 'the learner caught up from a snapshot');
    // As etcd's interceptors: a learner serves Status and serializable Range only.
    const notForLearner = 'etcdserver: rpc not supported for learner';
    await rejects(unary(lkv, 'Put', { key: Buffer.from('k0'), value: Buffer.from('x') }), grpc.status.UNAVAILABLE, notForLearner);
    await rejects(unary(lkv, 'Range', { key: Buffer.from('k0') }), grpc.status.UNAVAILABLE, notForLearner);
    const lcl = cl(learner);
    t.after(() => lcl.close());
    await rejects(unary(lcl, 'MemberList', {}), grpc.status.UNAVAILABLE, notForLearner);
    const lm = connect('etcdserverpb.Maintenance', c.members[learner]!.clientUrl);
    t.after(() => lm.close());
    assert.equal((await unary(lm, 'Status', {})).isLearner, true);

    // Promote on the leader (the learner is in sync), then move the leader to it.
    const cleader = cl(leader);
    t.after(() => cleader.close());
    for (let i = 0; ; i++) {
      try {
        await unary(cleader, 'MemberPromote', { ID: lid });
        break;
      } catch (err) {
        if ((err as grpc.ServiceError).details !== 'etcdserver: can only promote a learner member which is in sync with leader' || i > 50) throw err;
        await sleep(100);
      }
    }
    const after = await unary(cleader, 'MemberList', {});
    assert.equal(after.members.length, 4);
    assert.ok(after.members.every((m) => m.isLearner !== true), 'every member votes');
    const mleader = connect('etcdserverpb.Maintenance', c.members[leader]!.clientUrl);
    t.after(() => mleader.close());
    await unary(mleader, 'MoveLeader', { targetID: lid });
    assert.equal(await c.leader(), learner, 'the promoted member leads');

    // Remove the old leader: it stops by itself; the cluster goes on with 3 voters.
    const oldId = Long.fromString(String(after.members.find((m) => m.name === c.members[leader]!.name)!.ID), true);
    const cl2 = cl(learner);
    t.after(() => cl2.close());
    // etcd refuses the removal until the members have been connected for 5 s (the new leader
    // just joined): "unhealthy cluster", retried as an operator would.
    let removed: Awaited<ReturnType<typeof unary<'etcdserverpb.Cluster', 'MemberRemove'>>>;
    for (let i = 0; ; i++) {
      try {
        removed = await unary(cl2, 'MemberRemove', { ID: oldId });
        break;
      } catch (err) {
        if ((err as grpc.ServiceError).details !== 'etcdserver: unhealthy cluster' || i > 100) throw err;
        await sleep(100);
      }
    }
    assert.equal(removed.members.length, 3);
    for (let i = 0; i < 50 && c.procs[leader]!.proc.exitCode === null; i++) await sleep(100);
    assert.equal(c.procs[leader]!.proc.exitCode, 0, 'the removed member stopped');
    c.procs[leader] = null;
    await sleep(1000);
  } finally {
    await w.stop();
  }
  const result = checkKvHistory(w.history.history());
  t.diagnostic(`${w.history.size} operations (${w.counts.ok} ok, ${w.counts.fail} failed, ${w.counts.unknown} unknown); checker: ${result.verdict}`);
  assert.ok(result.ok, result.ok ? '' : `${result.verdict} on ${result.key}:\n${result.explanation}`);
  // The members left agree.
  const states = new Set<string>();
  for (let i = 0; i < c.members.length; i++) {
    if (c.procs[i] === null) continue;
    const kv = connect('etcdserverpb.KV', c.members[i]!.clientUrl);
    try {
      const r = await unary(kv, 'Range', { key: Buffer.from('k'), range_end: Buffer.from('l') });
      states.add(r.kvs.map((x) => `${Buffer.from(x.key ?? []).toString()}=${Buffer.from(x.value ?? []).toString()}@${String(x.mod_revision)}`).join(' '));
    } finally {
      kv.close();
    }
  }
  assert.equal(states.size, 1, [...states].join('\n'));
});

test('strict reconfig check: no member added while a voter is down; a down member may be removed', async (t) => {
  const c = await startCluster({ size: 3, token: 'reconfig-check' });
  t.after(() => c.stop());
  const leader = await c.leader();
  const down = (leader + 1) % 3;
  const cl = connect('etcdserverpb.Cluster', c.members[leader]!.clientUrl);
  t.after(() => cl.close());
  const list = await unary(cl, 'MemberList', {});
  const downId = Long.fromString(String(list.members.find((m) => m.name === c.members[down]!.name)!.ID), true);
  await c.kill(down);
  // etcd isConnectedFullySince: every voter connected for the last 5 s.
  await rejects(unary(cl, 'MemberAdd', { peerURLs: ['http://127.0.0.1:1'], isLearner: true }),
    grpc.status.UNAVAILABLE, 'etcdserver: unhealthy cluster');
  // Removing a voter that is up would leave 1 of 2 connected: refused. The down one may go.
  const other = 3 - leader - down;
  const otherId = Long.fromString(String(list.members.find((m) => m.name === c.members[other]!.name)!.ID), true);
  await rejects(unary(cl, 'MemberRemove', { ID: otherId }), grpc.status.UNAVAILABLE, 'etcdserver: unhealthy cluster');
  const r = await unary(cl, 'MemberRemove', { ID: downId });
  assert.equal(r.members.length, 2);
});
