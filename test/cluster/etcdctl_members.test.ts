// Runtime membership from the command line (issue #12): the real etcdctl 3.4 against a 3-member
// concord cluster. `etcdctl member add` prints the lines a new member is started with
// (ETCD_NAME, ETCD_INITIAL_CLUSTER, ETCD_INITIAL_ADVERTISE_PEER_URLS, ETCD_INITIAL_CLUSTER_STATE)
// exactly as against real etcd (a single etcd member is asked the same, and the same rules
// checked on its answer: members in ascending id order, the new one under the given name); the
// member is then started with those very values and must become a voter that serves reads and
// writes. Then `member add --learner`, `member promote`, `member update`, `move-leader` and
// `member remove` give etcd's output and do what they say. The same commands are run against a
// real etcd first (test/helpers/etcd.ts, loopback, free ports): concord's outputs and errors
// (exit code, gRPC code and message, the final "Error:" line; member and cluster ids replaced)
// must equal etcd's for promoting a voter, promoting a learner not in sync, update, remove, a
// second remove and move-leader to a removed member.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { type ClusterHandle, type JoinValues, startCluster } from '../helpers/cluster';
import { freePort, startEtcd } from '../helpers/etcd';
import { type CtlRun, etcdctlSkipReason, runEtcdctl } from '../helpers/etcdctl';
import { connect, str, unary } from '../helpers/grpc_client';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const etcdctl = runEtcdctl;

/** etcdctl again while the answer is `retryOn` (etcd's strict reconfig check, a learner not in sync). */
async function etcdctlRetry(endpoints: string[], args: string[], retryOn: RegExp, timeoutMs = 15_000): Promise<CtlRun> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await etcdctl(endpoints, args);
    if (r.code === 0 || !retryOn.test(r.stderr) || Date.now() > deadline) return r;
    await sleep(300);
  }
}

/** etcdctl prints ids with %16x (space-padded hex). */
const hex16 = (id: bigint): string => id.toString(16).padStart(16, ' ');

interface MemberView { id: bigint; name: string; peerUrls: string[]; clientUrls: string[]; isLearner: boolean }

async function memberList(endpoint: string): Promise<{ clusterId: bigint; members: MemberView[] }> {
  const cl = connect('etcdserverpb.Cluster', endpoint);
  try {
    const r = await unary(cl, 'MemberList', {});
    return {
      clusterId: BigInt(String(r.header!.cluster_id)),
      members: r.members.map((m) => ({ id: BigInt(String(m.ID)), name: m.name ?? '', peerUrls: m.peerURLs ?? [], clientUrls: m.clientURLs ?? [], isLearner: m.isLearner === true })),
    };
  } finally {
    cl.close();
  }
}

interface AddOutput { id: bigint; clusterId: bigint; name: string; initialCluster: string; peerUrls: string; state: string }

/**
 * `member add` output, checked line by line against etcdctl's format (member_command.go):
 * "Member %16x added to cluster %16x", an empty line, then the four ETCD_* lines with %q values.
 */
function parseAdd(out: string): AddOutput {
  const m = /^Member ([ 0-9a-f]{16}) added to cluster ([ 0-9a-f]{16})\n\nETCD_NAME="([^"]*)"\nETCD_INITIAL_CLUSTER="([^"]*)"\nETCD_INITIAL_ADVERTISE_PEER_URLS="([^"]*)"\nETCD_INITIAL_CLUSTER_STATE="([^"]*)"\n$/.exec(out);
  assert.ok(m, `etcdctl member add output:\n${out}`);
  return { id: BigInt('0x' + m[1]!.trim()), clusterId: BigInt('0x' + m[2]!.trim()), name: m[3]!, initialCluster: m[4]!, peerUrls: m[5]!, state: m[6]! };
}

/** ETCD_INITIAL_CLUSTER as etcd's answer makes it: every member in ascending id order, the new one named. */
function expectedInitialCluster(members: MemberView[], newId: bigint, newName: string): string {
  return [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .flatMap((m) => m.peerUrls.map((u) => `${m.id === newId ? newName : m.name}=${u}`)).join(',');
}

/** `etcdctl member add` through `endpoints`, checked; the values to start the member with. */
async function ctlAdd(endpoints: string[], name: string, peerUrl: string, learner: boolean): Promise<{ out: AddOutput; values: JoinValues }> {
  const r = await etcdctlRetry(endpoints, ['member', 'add', name, `--peer-urls=${peerUrl}`, ...(learner ? ['--learner'] : [])], /unhealthy cluster/);
  assert.equal(r.code, 0, `etcdctl member add ${name}: ${r.stderr}`);
  const out = parseAdd(r.stdout);
  const list = await memberList(endpoints[0]!);
  assert.equal(out.name, name);
  assert.equal(out.peerUrls, peerUrl);
  assert.equal(out.state, 'existing');
  assert.equal(out.clusterId, list.clusterId, 'the cluster id printed is the cluster\'s');
  const added = list.members.find((m) => m.peerUrls.includes(peerUrl));
  assert.ok(added !== undefined, 'the new member is listed');
  assert.equal(out.id, added.id, 'the member id printed is the listed one');
  assert.equal(added.isLearner, learner);
  assert.equal(out.initialCluster, expectedInitialCluster(list.members, out.id, name));
  return { out, values: { id: out.id.toString(), name: out.name, initialCluster: out.initialCluster, state: out.state as 'existing' } };
}

function memberLine(m: MemberView, started: boolean): string {
  return `${m.id.toString(16)}, ${started ? 'started' : 'unstarted'}, ${m.name}, ${m.peerUrls.join(',')}, ${m.clientUrls.join(',')}, ${m.isLearner}`;
}

/**
 * A failed etcdctl run as the user sees it: exit code, the gRPC error of clientv3's retry log line
 * ("rpc error: code = NotFound desc = ..."; the line's timestamp and target vary) and the final
 * "Error: ..." line.
 */
function ctlFailure(r: CtlRun): string {
  const lines = r.stderr.trim().split('\n');
  const grpcErrors = lines.filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { error?: string }).error ?? '?');
  return `exit ${r.code} | ${grpcErrors.join(' / ')} | ${lines[lines.length - 1]}`;
}

/** `text` with these ids (as etcdctl prints them: %16x or %x) replaced by their labels. */
function withIds(text: string, ids: [bigint, string][]): string {
  let out = text;
  for (const [id, label] of ids) out = out.split(hex16(id)).join(label).split(id.toString(16)).join(label);
  return out;
}

/** What real etcd answers to the commands the concord test checks (one fresh member). */
interface EtcdAnswers {
  promoteVoter: string;
  promoteUnsynced: string;
  update: string;
  remove: string;
  removeAgain: string;
  moveToRemoved: string;
}

/**
 * The commands run against real etcd (a single member, so those that need a quorum first; the
 * voter add that takes the quorum away last), with the same rules checked on etcd's own answer
 * as on concord's so that both cannot be wrong together.
 */
async function etcdAnswers(endpoint: string): Promise<EtcdAnswers> {
  const ep = [endpoint];
  const solo = (await memberList(endpoint)).members[0]!;
  const list0 = await etcdctl(ep, ['member', 'list']);
  assert.equal(list0.stdout, memberLine(solo, true) + '\n', 'etcd: member list line format');
  const learnerPeer = `http://127.0.0.1:${await freePort()}`;
  const { out: added } = await ctlAdd(ep, 'learner', learnerPeer, true);
  const learner = (await memberList(endpoint)).members.find((m) => m.id === added.id)!;
  const list1 = await etcdctl(ep, ['member', 'list']);
  assert.ok(list1.stdout.split('\n').includes(memberLine(learner, false)), `etcd: an unstarted learner's line:\n${list1.stdout}`);
  const ids: [bigint, string][] = [[added.id, '<member>'], [added.clusterId, '<cluster>']];
  const answers: EtcdAnswers = {
    promoteVoter: ctlFailure(await etcdctl(ep, ['member', 'promote', solo.id.toString(16)])),
    promoteUnsynced: ctlFailure(await etcdctl(ep, ['member', 'promote', added.id.toString(16)])),
    update: withIds((await etcdctl(ep, ['member', 'update', added.id.toString(16), `--peer-urls=${learnerPeer},${learnerPeer.replace('127.0.0.1', 'localhost')}`])).stdout, ids),
    remove: withIds((await etcdctl(ep, ['member', 'remove', added.id.toString(16)])).stdout, ids),
    removeAgain: ctlFailure(await etcdctl(ep, ['member', 'remove', added.id.toString(16)])),
    moveToRemoved: ctlFailure(await etcdctl(ep, ['move-leader', added.id.toString(16)])),
  };
  // Last: a voter that never starts (the single member loses its quorum).
  await ctlAdd(ep, 'newbie', `http://127.0.0.1:${await freePort()}`, false);
  return answers;
}

/**
 * Until `pred` holds on MemberList through every live member (names are published after start).
 * `learners`: members not asked, since a learner refuses MemberList ("rpc not supported for
 * learner", etcd 3.4 isRPCSupportedForLearner).
 */
async function waitMembers(c: ClusterHandle, pred: (ms: MemberView[]) => boolean, what: string, learners: number[] = []): Promise<MemberView[]> {
  const deadline = Date.now() + 15_000;
  let last: MemberView[] = [];
  let seen: string[] = [];
  for (;;) {
    let ok = true;
    seen = [];
    for (let i = 0; i < c.members.length; i++) {
      if (c.procs[i] === null || learners.includes(i)) continue;
      try {
        last = (await memberList(c.members[i]!.clientUrl)).members;
        if (!pred(last)) {
          ok = false;
          seen.push(`m${i}: ${JSON.stringify(last, (_k, v) => (typeof v === 'bigint' ? v.toString(16) : v))}`);
        }
      } catch (err) {
        ok = false;
        seen.push(`m${i}: ${(err as Error).message}`);
      }
    }
    if (ok) return last;
    if (Date.now() > deadline) assert.fail(`${what}:\n${seen.join('\n')}`);
    await sleep(200);
  }
}

/** A linearizable read and a write through member i, seen on member j. */
async function servesReadsAndWrites(c: ClusterHandle, i: number, j: number, key: string): Promise<void> {
  const kv = connect('etcdserverpb.KV', c.members[i]!.clientUrl);
  const other = connect('etcdserverpb.KV', c.members[j]!.clientUrl);
  try {
    const before = await unary(kv, 'Range', { key: Buffer.from('before') });
    assert.equal(str(before.kvs[0]?.value), '1', `m${i}: a linearizable read of a key written before it joined`);
    await unary(kv, 'Put', { key: Buffer.from(key), value: Buffer.from(`via m${i}`) });
    const r = await unary(other, 'Range', { key: Buffer.from(key) });
    assert.equal(str(r.kvs[0]?.value), `via m${i}`, `a write through m${i}, read on m${j}`);
  } finally {
    kv.close();
    other.close();
  }
}

// Timeouts: a hang fails the test instead of blocking the suite (it runs about 20 s).
test('etcdctl member add/promote/update/remove and move-leader against concord', { skip: etcdctlSkipReason(), timeout: 180_000 }, async (t) => {
  const [cs, es] = await Promise.allSettled([startCluster({ size: 3, token: 'etcdctl-members' }), startEtcd({ name: 'solo' })]);
  if (cs.status === 'fulfilled') t.after(() => cs.value.stop());
  if (es.status === 'fulfilled') t.after(() => es.value.stop());
  if (cs.status === 'rejected') throw cs.reason;
  if (es.status === 'rejected') throw es.reason;
  const c = cs.value;
  const e = es.value;

  // Real etcd: the same commands, the same rules on its answers (so the expectations are etcd's).
  const etcd = await etcdAnswers(e.endpoint);
  t.diagnostic(`etcd: ${JSON.stringify(etcd)}`);

  const kv0 = connect('etcdserverpb.KV', c.members[0]!.clientUrl);
  t.after(() => kv0.close());
  await unary(kv0, 'Put', { key: Buffer.from('before'), value: Buffer.from('1') });
  const all = (): string[] => c.members.filter((_, i) => c.procs[i] !== null).map((m) => m.clientUrl);

  // member add, then start the member with exactly the values printed.
  const first = all();
  let printed: AddOutput | null = null;
  const { index: m3 } = await c.join(0, {
    add: async (m) => {
      const { out, values } = await ctlAdd(first, 'm3', m.peerUrl, false);
      printed = out;
      return values;
    },
  });
  const m3Id = printed!.id;
  const clusterId = printed!.clusterId;
  let members = await waitMembers(c, (ms) => ms.some((m) => m.id === m3Id && m.name === 'm3' && !m.isLearner && m.clientUrls.length === 1),
    'm3 is listed as a started voter on every member');
  const m3Status = connect('etcdserverpb.Maintenance', c.members[m3]!.clientUrl);
  t.after(() => m3Status.close());
  const st = await unary(m3Status, 'Status', {});
  assert.equal(st.isLearner, false, 'm3 is a voter');
  assert.equal(BigInt(String(st.header!.member_id)), m3Id);
  await servesReadsAndWrites(c, m3, 1, 'via-m3');
  const list1 = await etcdctl(all(), ['member', 'list']);
  assert.equal(list1.code, 0, list1.stderr);
  assert.ok(list1.stdout.split('\n').includes(memberLine(members.find((m) => m.id === m3Id)!, true)), `member list:\n${list1.stdout}`);

  // A learner: member add --learner, started the same way, listed as a learner.
  let learnerOut: AddOutput | null = null;
  const { index: m4 } = await c.join(0, {
    add: async (m) => {
      const { out, values } = await ctlAdd(all(), 'm4', m.peerUrl, true);
      learnerOut = out;
      // Before it starts, the learner is not in sync: etcd's refusal.
      // Through a follower: it asks the leader, which decides (etcd PromoteMember).
      const lead = await c.leader();
      const unsynced = await etcdctl([c.members[lead === 0 ? 1 : 0]!.clientUrl], ['member', 'promote', out.id.toString(16)]);
      assert.equal(ctlFailure(unsynced), etcd.promoteUnsynced, 'promoting a learner not started yet');
      return values;
    },
  });
  const m4Id = learnerOut!.id;
  members = await waitMembers(c, (ms) => ms.some((m) => m.id === m4Id && m.name === 'm4' && m.isLearner), 'm4 is listed as a learner', [m4]);
  const list2 = await etcdctl(all().filter((_, i) => i !== m4), ['member', 'list']);
  assert.ok(list2.stdout.split('\n').includes(memberLine(members.find((m) => m.id === m4Id)!, true)), `member list:\n${list2.stdout}`);

  // member promote through a follower: a voter is refused with etcd's error; the learner is
  // promoted (the next test checks the follower's answer against etcd's).
  const leader = await c.leader();
  const follower = [0, 1, 2, m3].find((i) => i !== leader && c.procs[i] !== null)!;
  const bad = await etcdctl([c.members[follower]!.clientUrl], ['member', 'promote', m3Id.toString(16)]);
  assert.equal(ctlFailure(bad), etcd.promoteVoter, 'promoting a voter');
  assert.match(bad.stderr, /\nError: etcdserver: can only promote a learner member\n$/);
  const promoted = await etcdctlRetry([c.members[follower]!.clientUrl], ['member', 'promote', m4Id.toString(16)], /in sync with leader/);
  assert.equal(promoted.code, 0, promoted.stderr);
  assert.equal(promoted.stdout, `Member ${hex16(m4Id)} promoted in cluster ${hex16(clusterId)}\n`);
  await waitMembers(c, (ms) => ms.some((m) => m.id === m4Id && !m.isLearner), 'm4 is a voter');
  await servesReadsAndWrites(c, m4, 0, 'via-m4');

  // member update: a second peer URL for m4 (the same port under another name).
  const peer4 = c.members[m4]!.peerUrl;
  const peers4 = `${peer4},${peer4.replace('127.0.0.1', 'localhost')}`;
  const updated = await etcdctl(all(), ['member', 'update', m4Id.toString(16), `--peer-urls=${peers4}`]);
  assert.equal(updated.code, 0, updated.stderr);
  assert.equal(updated.stdout, `Member ${hex16(m4Id)} updated in cluster ${hex16(clusterId)}\n`);
  assert.equal(withIds(updated.stdout, [[m4Id, '<member>'], [clusterId, '<cluster>']]), etcd.update);
  await waitMembers(c, (ms) => ms.find((m) => m.id === m4Id)?.peerUrls.join(',') === peers4, 'm4 has both peer URLs');

  // move-leader to m3 (etcdctl finds the leader among the endpoints); without the leader among
  // them, etcdctl's own error.
  const from = await c.leader();
  const fromId = members.find((m) => m.name === c.members[from]!.name)!.id;
  const target = from === m3 ? m4 : m3;
  const targetId = target === m3 ? m3Id : m4Id;
  const noLeader = all().filter((u) => u !== c.members[from]!.clientUrl);
  const refused = await etcdctl(noLeader, ['move-leader', targetId.toString(16)]);
  assert.equal(refused.code, 128);
  assert.equal(refused.stderr, `Error: no leader endpoint given at [${noLeader.join(' ')}]\n`);
  const moved = await etcdctl(all(), ['move-leader', targetId.toString(16)]);
  assert.equal(moved.code, 0, moved.stderr);
  assert.equal(moved.stdout, `Leadership transferred from ${fromId.toString(16)} to ${targetId.toString(16)}\n`);
  assert.equal(await c.leader(), target, 'the transferee leads');

  // member remove of an original member (the old leader): it stops by itself; a second remove
  // gets etcd's error. etcd's strict reconfig check refuses to remove a live voter unless the
  // others keep a quorum connected for 5 s ("unhealthy cluster"), and m4's connections were just
  // re-dialled at its new peer URLs: retry as an operator would.
  const removed = await etcdctlRetry(all(), ['member', 'remove', fromId.toString(16)], /unhealthy cluster/);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal(removed.stdout, `Member ${hex16(fromId)} removed from cluster ${hex16(clusterId)}\n`);
  assert.equal(withIds(removed.stdout, [[fromId, '<member>'], [clusterId, '<cluster>']]), etcd.remove);
  for (let i = 0; i < 100 && c.procs[from]!.proc.exitCode === null; i++) await sleep(100);
  assert.equal(c.procs[from]!.proc.exitCode, 0, 'the removed member stopped');
  c.procs[from] = null;
  const again = await etcdctl(all(), ['member', 'remove', fromId.toString(16)]);
  assert.equal(ctlFailure(again), etcd.removeAgain, 'removing a removed member');
  assert.match(again.stderr, /\nError: etcdserver: member not found\n$/);
  const moveToRemoved = await etcdctl(all(), ['move-leader', fromId.toString(16)]);
  assert.equal(ctlFailure(moveToRemoved), etcd.moveToRemoved, 'move-leader to a removed member');
  members = await waitMembers(c, (ms) => ms.length === 4 && !ms.some((m) => m.id === fromId), 'four members left');
  const list3 = await etcdctl(all(), ['member', 'list']);
  assert.deepEqual(list3.stdout.trim().split('\n'), [...members].sort((a, b) => (a.id < b.id ? -1 : 1)).map((m) => memberLine(m, true)));
  for (const i of [0, 1, 2, m3, m4]) if (i !== from) await servesReadsAndWrites(c, i, target, `after-remove-${i}`);
});

test('etcdctl member promote through a follower is forwarded to the leader', {
  timeout: 120_000,
  skip: etcdctlSkipReason(),
}, async (t) => {
  const c = await startCluster({ size: 3, token: 'etcdctl-promote' });
  t.after(() => c.stop());
  const kv0 = connect('etcdserverpb.KV', c.members[0]!.clientUrl);
  t.after(() => kv0.close());
  await unary(kv0, 'Put', { key: Buffer.from('before'), value: Buffer.from('1') });
  let learnerId = 0n;
  let clusterId = 0n;
  const { index } = await c.join(0, {
    add: async (m) => {
      const { out, values } = await ctlAdd(c.endpoints(), 'm3', m.peerUrl, true);
      learnerId = out.id;
      clusterId = out.clusterId;
      return values;
    },
  });
  const leader = await c.leader();
  const follower = (leader + 1) % 3;
  const r = await etcdctlRetry([c.members[follower]!.clientUrl], ['member', 'promote', learnerId.toString(16)], /in sync with leader/);
  assert.equal(r.code, 0, `etcdctl member promote through follower m${follower}: ${r.stderr}`);
  assert.equal(r.stdout, `Member ${hex16(learnerId)} promoted in cluster ${hex16(clusterId)}\n`);
  await waitMembers(c, (ms) => ms.some((m) => m.id === learnerId && !m.isLearner), 'the learner is a voter');
  await servesReadsAndWrites(c, index, follower, 'promoted');
});
