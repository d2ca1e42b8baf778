// Corruption checks (server/corrupt.ts, etcd 3.5's --experimental-initial-corrupt-check and
// --experimental-corrupt-check-time), shown to catch a corruption planted on purpose and to stay
// quiet without one. Method: 3-member clusters; a member is stopped, one revision record's value
// is rewritten in its LMDB (test/helpers/corrupt_kv.ts: the raft log and applied index are left
// as they are, so nothing repairs it) and the member is started again. Initial check: the
// corrupted member refuses to start with etcd's error, an intact one starts. Periodic check: a
// run under a write load (followers lagging, a compaction in the middle) raises nothing; then the
// corrupted follower gets the CORRUPT alarm for its own id, every member refuses writes with
// "etcdserver: corrupt cluster" and reads go on; a corrupted leader (leadership moved to it) names
// itself. The count rule and the peer request layouts are checked without processes first.
// The whole file takes about 20 s.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';

import { goDuration, judgeHashes, type PeerHashKv } from '../../src/server/corrupt';
import {
  decodeHashKvAnswer, decodeHashKvRequest, encodeHashKvAnswer, encodeHashKvRequest, isMemberOp,
  MemberOp, memberOpMin,
} from '../../src/server/member_requests';
import { LeaderOp } from '../../src/server/leader_requests';
import { ErrorCode } from '../../src/util/errors';
import { startCluster, type ClusterHandle } from '../helpers/cluster';
import { corruptNewestValue } from '../helpers/corrupt_kv';
import { etcdctlSkipReason, runEtcdctl } from '../helpers/etcdctl';
import { connect, unary } from '../helpers/grpc_client';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('the count rule and the HashKv request layouts (no processes)', () => {
  const id = (n: number): Long => Long.fromNumber(n, true);
  const at = (hash: number, compactRev = -1): { hash: number; compactRev: number; currentRev: number; rev: number } =>
    ({ hash, compactRev, currentRev: 10, rev: 10 });
  const peer = (n: number, hash: number | null, compactRev = -1, code = 0): PeerHashKv =>
    ({ memberId: id(n), peerUrls: [], answer: hash === null ? null : at(hash, compactRev), code });
  const ids = (xs: Long[]): string[] => xs.map((x) => x.toString());

  test('all equal: nothing; one follower differs: that follower; the leader differs: the leader', () => {
    assert.deepEqual(judgeHashes(id(1), at(7), [peer(2, 7), peer(3, 7)]), { checked: 2, corrupt: [], quorumExists: true });
    assert.deepEqual(ids(judgeHashes(id(1), at(7), [peer(2, 7), peer(3, 9)]).corrupt), ['3']);
    assert.deepEqual(ids(judgeHashes(id(1), at(7), [peer(2, 9), peer(3, 9)]).corrupt), ['1']);
  });

  test('skipped: no answer, another compaction revision; no majority left: member 0', () => {
    // Member 3 lags (FutureRev) and 2 differs: one against one of three, nobody can tell.
    const v = judgeHashes(id(1), at(7), [peer(2, 9), peer(3, null, -1, ErrorCode.FutureRev)]);
    assert.deepEqual({ checked: v.checked, corrupt: ids(v.corrupt), q: v.quorumExists }, { checked: 1, corrupt: ['0'], q: false });
    // Another compaction revision is not compared at all.
    assert.deepEqual(judgeHashes(id(1), at(7, 5), [peer(2, 9, 4), peer(3, 7, 5)]).corrupt, []);
    // Five members: two agreeing against one, two unreachable: no majority of five.
    assert.deepEqual(ids(judgeHashes(id(1), at(7), [peer(2, 7), peer(3, 8), peer(4, null, -1, 1), peer(5, null, -1, 1)]).corrupt), ['0']);
  });

  test('request and answer layouts round-trip; member ops are apart from leader ops', () => {
    assert.equal(decodeHashKvRequest(encodeHashKvRequest(123456789012)), 123456789012);
    assert.equal(decodeHashKvRequest(new Uint8Array(7)), null);
    assert.equal(decodeHashKvRequest(new Uint8Array(8)), null, 'revision 0 is not a request');
    const a = { hash: 0xfedcba98, compactRev: -1, currentRev: 42, rev: 40 };
    assert.deepEqual(decodeHashKvAnswer(encodeHashKvAnswer(a)), a);
    assert.equal(decodeHashKvAnswer(new Uint8Array(27)), null);
    assert.deepEqual([500, 1500, 7000, 90_000].map(goDuration), ['500ms', '1.5s', '7s', '1m30s']);
    assert.ok(isMemberOp(MemberOp.HashKv));
    for (const op of [LeaderOp.LeaseRenew, LeaderOp.LeaseTimeToLive, LeaderOp.MemberPromote]) {
      assert.ok(op < memberOpMin && !isMemberOp(op));
    }
  });
});

/** Puts `count` keys k0.. through member 0 and waits until every running member has applied them. */
async function writeKeys(c: ClusterHandle, count: number): Promise<number> {
  const kv = connect('etcdserverpb.KV', c.members[0]!.clientUrl);
  let rev = 0;
  try {
    for (let i = 0; i < count; i++) {
      const r = await unary(kv, 'Put', { key: Buffer.from(`k${i}`), value: Buffer.from(`value-${i}`) });
      rev = Number(r.header!.revision);
    }
  } finally {
    kv.close();
  }
  await waitApplied(c, rev);
  return rev;
}

async function waitApplied(c: ClusterHandle, rev: number): Promise<void> {
  for (let i = 0; i < c.members.length; i++) {
    if (c.procs[i] === null) continue;
    const kv = connect('etcdserverpb.KV', c.members[i]!.clientUrl);
    try {
      for (let attempt = 0; ; attempt++) {
        const r = await unary(kv, 'Range', { key: Buffer.from('k0'), serializable: true });
        if (Number(r.header!.revision) >= rev) break;
        assert.ok(attempt < 100, `member ${i} never applied revision ${rev}`);
        await sleep(50);
      }
    } finally {
      kv.close();
    }
  }
}

/** Member i's id (decimal), from its Status header. */
async function memberIdOf(c: ClusterHandle, i: number): Promise<string> {
  const m = connect('etcdserverpb.Maintenance', c.members[i]!.clientUrl);
  try {
    return String((await unary(m, 'Status', {})).header!.member_id);
  } finally {
    m.close();
  }
}

/** The log lines (parsed) of member i with message `msg`. */
function logLines(c: ClusterHandle, i: number, msg: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of c.logs(i).split('\n')) {
    if (!line.includes(msg)) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o['msg'] === msg) out.push(o);
    } catch {
      // a line cut by the helper's ring: not one of ours
    }
  }
  return out;
}

test('initial check: a corrupted member refuses to start, an intact one starts', { skip: etcdctlSkipReason(), timeout: 60_000 }, async (t) => {
  const c = await startCluster({ size: 3, token: 'corrupt-initial', extraArgs: ['--experimental-initial-corrupt-check'] });
  t.after(() => c.stop());
  // A new cluster's members have nothing to compare: no check at their first start.
  for (let i = 0; i < 3; i++) assert.equal(logLines(c, i, 'starting initial corruption check').length, 0);
  await writeKeys(c, 20);
  const leader = await c.leader();
  const [intact, corrupted] = [0, 1, 2].filter((i) => i !== leader) as [number, number];

  // An intact member restarted with the flag compares with both peers and starts.
  await c.stopMember(intact);
  await c.restart(intact);
  assert.equal(logLines(c, intact, 'initial corruption checking passed; no corruption').length, 1, c.logs(intact));
  assert.equal(logLines(c, intact, 'found different hash values from remote peer').length, 0);

  const peerIdOf = new Map<number, string>();
  for (const i of [0, 1, 2]) peerIdOf.set(i, BigInt(await memberIdOf(c, i)).toString(16));
  await c.stopMember(corrupted);
  const r = await corruptNewestValue(c.members[corrupted]!.dataDir, 'k7');
  assert.equal(r.before, 'value-7');
  await assert.rejects(c.restart(corrupted), (err: Error) => {
    // Exit code 1, etcd's error naming this member, and a warning naming each disagreeing peer.
    assert.match(err.message, /concord exited early \(code 1/);
    const errors = err.message.split('\n').filter((l) => l.includes('found data inconsistency with peers'));
    assert.ok(errors.some((l) => /"level":"fatal".*"msg":"discovery failed","error":"[0-9a-f]+ found data inconsistency with peers"/.test(l)), err.message);
    const warned = err.message.split('\n').filter((l) => l.includes('"msg":"found different hash values from remote peer"'));
    assert.equal(warned.length, 2, 'both peers disagree');
    return true;
  });
  assert.equal(c.procs[corrupted], null);
  // The warnings name the peers by id.
  const text = c.logs(corrupted);
  for (const i of [leader, intact]) assert.match(text, new RegExp(`"remote-peer-id":"${peerIdOf.get(i)}"`));
  // The others go on serving (the corrupted member never joined in).
  await writeKeys(c, 1);
  // A peer that cannot be asked (the corrupted one is down) is logged and skipped, as etcd does:
  // the intact member starts again, having compared with the leader only.
  const downId = peerIdOf.get(corrupted)!;
  await c.stopMember(intact);
  await c.restart(intact);
  const failed = logLines(c, intact, 'failed hash kv request');
  assert.ok(failed.some((l) => l['remote-peer-id'] === downId), c.logs(intact));
  assert.equal(logLines(c, intact, 'initial corruption checking passed; no corruption').length, 2);
});

test('periodic check: no alarm under a write load; a corrupted follower gets CORRUPT and the cluster refuses writes', { skip: etcdctlSkipReason(), timeout: 90_000 }, async (t) => {
  const c = await startCluster({ size: 3, token: 'corrupt-periodic', extraArgs: ['--experimental-corrupt-check-time', '500ms'] });
  t.after(() => c.stop());
  await writeKeys(c, 20);
  const leader = await c.leader();

  // A write load on every member for 4 s (about 8 checks), with a compaction in the middle: the
  // followers lag the leader and compact after it, and nothing may be raised for that.
  const stopAt = Date.now() + 4000;
  let puts = 0;
  let compactedAt = 0;
  await Promise.all(c.members.map(async (m, i) => {
    const kv = connect('etcdserverpb.KV', m.clientUrl);
    try {
      for (let n = 0; Date.now() < stopAt; n++) {
        const r = await unary(kv, 'Put', { key: Buffer.from(`load/${i}/${n % 50}`), value: Buffer.alloc(100 + n % 400, 'x') });
        puts++;
        if (i === 0 && compactedAt === 0 && Date.now() > stopAt - 2000) {
          compactedAt = Number(r.header!.revision) - 50;
          await unary(kv, 'Compact', { revision: compactedAt });
        }
      }
    } finally {
      kv.close();
    }
  }));
  await sleep(1200);
  const quiet = await runEtcdctl(c.endpoints(), ['alarm', 'list']);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stdout, '', 'no alarm without corruption');
  const checks = logLines(c, leader, 'finished peer corruption check');
  assert.ok(checks.length >= 6, `only ${checks.length} checks ran`);
  assert.ok(checks.filter((l) => l['number-of-peers-checked'] === 2).length >= 1, 'some check compared both followers');
  assert.equal(logLines(c, leader, 'detected hash mismatch').length, 0);
  assert.ok(compactedAt > 0);
  assert.ok(checks.some((l) => l['compact-revision'] === compactedAt && l['number-of-peers-checked'] === 2),
    'a check compared both followers after the compaction');
  assert.ok(puts > 100, `only ${puts} puts`);

  // Corrupt a follower's copy of k7 and start it again (without the initial check).
  const follower = [0, 1, 2].find((i) => i !== leader)!;
  const followerId = await memberIdOf(c, follower);
  await c.stopMember(follower);
  await corruptNewestValue(c.members[follower]!.dataDir, 'k7');
  await c.restart(follower);

  let listed = '';
  for (let attempt = 0; attempt < 100 && listed === ''; attempt++) {
    await sleep(200);
    const r = await runEtcdctl([c.members[leader]!.clientUrl], ['alarm', 'list']);
    assert.equal(r.code, 0, r.stderr);
    listed = r.stdout;
  }
  // Exactly the follower: the leader and the other follower agree, a majority of three.
  // (etcdctl prints etcd's AlarmMember.String(), which ends in a space.)
  assert.equal(listed, `memberID:${followerId} alarm:CORRUPT \n`, c.logs(leader));
  const mismatch = logLines(c, leader, 'detected hash mismatch');
  assert.ok(mismatch.length >= 1);
  assert.deepEqual(mismatch[0]!['corrupted-member-ids'], [BigInt(followerId).toString(16)]);

  for (let i = 0; i < 3; i++) {
    const kv = connect('etcdserverpb.KV', c.members[i]!.clientUrl);
    try {
      // Every member has applied the alarm once it answers a linearizable read after it.
      await unary(kv, 'Range', { key: Buffer.from('k1') });
      await assert.rejects(unary(kv, 'Put', { key: Buffer.from('after'), value: Buffer.from('1') }),
        (err: grpc.ServiceError) => err.code === grpc.status.DATA_LOSS && err.details === 'etcdserver: corrupt cluster');
      const r = await unary(kv, 'Range', { key: Buffer.from('k1') });
      assert.equal(Buffer.from(r.kvs[0]!.value!).toString(), 'value-1');
      const s = await unary(kv, 'Range', { key: Buffer.from('k2'), serializable: true });
      assert.equal(Buffer.from(s.kvs[0]!.value!).toString(), 'value-2');
    } finally {
      kv.close();
    }
  }
  const put = await runEtcdctl([c.members[follower]!.clientUrl], ['put', 'after', '1']);
  assert.notEqual(put.code, 0);
  assert.match(put.stderr, /etcdserver: corrupt cluster/);
});

test('periodic check: a corrupted leader is the odd one out and gets CORRUPT for itself', { skip: etcdctlSkipReason(), timeout: 60_000 }, async (t) => {
  // The helper reads `extraArgs` at every (re)start: the flag is added once the data is
  // corrupted, so that no check runs before.
  const extraArgs: string[] = [];
  const c = await startCluster({ size: 3, token: 'corrupt-leader', extraArgs });
  t.after(() => c.stop());
  await writeKeys(c, 20);
  const victim = await c.leader();
  const victimId = await memberIdOf(c, victim);
  for (let i = 0; i < 3; i++) await c.stopMember(i);
  await corruptNewestValue(c.members[victim]!.dataDir, 'k7');
  extraArgs.push('--experimental-corrupt-check-time', '500ms');
  await Promise.all([0, 1, 2].map((i) => c.restart(i)));
  // Make the corrupted member lead (it may already): its own checks must name itself.
  for (let attempt = 0; ; attempt++) {
    const leader = await c.leader();
    if (leader === victim) break;
    assert.ok(attempt < 20, 'leadership never moved to the corrupted member');
    const m = connect('etcdserverpb.Maintenance', c.members[leader]!.clientUrl);
    try {
      await unary(m, 'MoveLeader', { targetID: Long.fromString(victimId, true) }).catch(() => undefined);
    } finally {
      m.close();
    }
    await sleep(200);
  }
  let own: Record<string, unknown>[] = [];
  for (let attempt = 0; attempt < 50 && own.length === 0; attempt++) {
    await sleep(200);
    own = logLines(c, victim, 'detected hash mismatch');
  }
  assert.ok(own.length >= 1, c.logs(victim));
  // Both followers agree with each other: a majority of three against the leader.
  assert.deepEqual(own[0]!['corrupted-member-ids'], [BigInt(victimId).toString(16)]);
  assert.equal(own[0]!['quorum-exist'], true);
  const r = await runEtcdctl(c.endpoints(), ['alarm', 'list']);
  assert.equal(r.stdout, `memberID:${victimId} alarm:CORRUPT \n`);
});
