// How a member finds its cluster at start-up: --initial-cluster parsing and the checks etcd makes
// on it, the initial membership of a new cluster, and the restart / new / join plans, as pure
// functions with etcd 3.4.23's messages pinned; then the same cases on real etcd 3.4 (a restart
// with other flags keeps the data dir's ids; a member whose data was lost is refused as "already
// bootstrapped"; joins that do not match the running cluster, or find no peer, are refused) with
// etcd's own error compared to what the pure functions say for the cluster etcd reports.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  BootstrapError, checkNotBootstrapped, errCannotFetchCluster, fetchFailed, formatInitialCluster, goClusterString,
  hostsToResolve, initialClusterFromName, initialMembership, joinExisting, parseInitialCluster, peerClusterIdMismatch,
  peerClusterIdMismatchFields, planBootstrap,
  remotePeerUrls, urlListsDiffer, verifyBootstrapFlags, type BootstrapFlags, type Membership, type RemoteCluster,
} from '../../src/membership/bootstrap_config';
import { clusterIdOf, formatId, memberIdOf } from '../../src/membership/ids';
import { etcdSkipReason, type EtcdHandle } from '../helpers/etcd';
import { loopbackUrls, memberList, runUntilRefused, startMember, tmpDataDir, type MemberFlags } from './etcd_members';

function flags(over: Partial<BootstrapFlags>): BootstrapFlags {
  return {
    name: 'default', dataDir: '/d', initialCluster: 'default=http://localhost:2380', initialClusterState: 'new',
    initialClusterToken: 'etcd-cluster', initialAdvertisePeerUrls: ['http://localhost:2380'], ...over,
  };
}

function refusal(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof BootstrapError, String(err));
    return { code: err.code, message: err.message };
  }
  assert.fail('not refused');
}

const A = 'http://127.0.0.1:1';
const B = 'http://127.0.0.1:2';
const C = 'http://127.0.0.1:3';

describe('--initial-cluster', () => {
  test('parsed as etcd: names repeat for several URLs, URLs normalized and sorted, empty items skipped', () => {
    assert.deepEqual(parseInitialCluster(`a=${B},b=${C},,a=${A}`), [
      { name: 'a', peerUrls: [A, B] },
      { name: 'b', peerUrls: [C] },
    ]);
    assert.deepEqual(parseInitialCluster('x= HTTP://Host:1 '), [{ name: 'x', peerUrls: ['http://Host:1'] }]);
    assert.deepEqual(parseInitialCluster(''), []);
    assert.equal(formatInitialCluster(parseInitialCluster(`b=${C},a=${B},a=${A}`)), `a=${A},a=${B},b=${C}`);
    assert.equal(initialClusterFromName('n1', [A, B]), `n1=${A},n1=${B}`);
    assert.equal(initialClusterFromName('', [A]), `default=${A}`);
  });

  test("malformed values: etcd's messages", () => {
    const cases: [string, string][] = [
      ['a', 'URL scheme must be http, https, unix, or unixs: '],
      ['a=', 'URL scheme must be http, https, unix, or unixs: '],
      ['default=foo', 'URL scheme must be http, https, unix, or unixs: foo'],
      ['default=ftp://127.0.0.1:1', 'URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:1'],
      ['default=http://127.0.0.1', 'URL address does not have the form "host:port": http://127.0.0.1'],
      ['default=http://127.0.0.1:1/p', 'URL must not contain a path: http://127.0.0.1:1/p'],
      [`default=${A};b=${B}`, `URL address does not have the form "host:port": ${A};b=${B}`],
      ['default=%zz', 'parse "%zz": invalid URL escape "%zz"'],
      ['default=http://127.0.0.1:x', 'parse "http://127.0.0.1:x": invalid port ":x" after host'],
      ['default=http://a b:1', 'parse "http://a b:1": invalid character " " in host name'],
      ['default=http://[::1:1', 'parse "http://[::1:1": missing \']\' in host'],
      ['default=://x:1', 'parse "://x:1": missing protocol scheme'],
      ['default=http://h\u0001:1', 'parse "http://h\\x01:1": net/url: invalid control character in URL'],
    ];
    for (const [value, reason] of cases) {
      assert.deepEqual(refusal(() => parseInitialCluster(value)),
        { code: 'initial-cluster-invalid', message: `error setting up initial cluster: ${reason}` }, value);
    }
  });
});

describe('checks before bootstrapping (etcd VerifyBootstrap / VerifyJoinExisting)', () => {
  test("the local name, the advertised URLs and duplicates, in etcd's order and words", () => {
    const cases: [Partial<BootstrapFlags>, string, string][] = [
      [{ initialCluster: `=${A}` }, 'local-member-missing', 'couldn\'t find local name "default" in the initial cluster configuration'],
      [{ initialCluster: '' }, 'local-member-missing', 'couldn\'t find local name "default" in the initial cluster configuration'],
      [{ name: 'x', initialCluster: `default=${A},y=${B}` }, 'local-member-missing', 'couldn\'t find local name "x" in the initial cluster configuration'],
      [{ initialCluster: `default=${A}`, initialAdvertisePeerUrls: [B] }, 'advertise-mismatch',
        `--initial-cluster has default=${A} but missing from --initial-advertise-peer-urls=${B} (resolved urls: "${B}" != "${A}")`],
      [{ initialCluster: `default=${A},default=${B}`, initialAdvertisePeerUrls: [A] }, 'advertise-mismatch',
        `--initial-cluster has default=${B} but missing from --initial-advertise-peer-urls=${A} (len(["${A}"]) != len(["${A}" "${B}"]))`],
      [{ initialCluster: `default=${A}`, initialAdvertisePeerUrls: [A, B] }, 'advertise-mismatch',
        `--initial-advertise-peer-urls has ${B} but missing from --initial-cluster=default=${A},default=${B}`],
      [{ initialCluster: `default=${A},default=${C}`, initialAdvertisePeerUrls: [B, A] }, 'advertise-mismatch',
        `--initial-cluster has default=${C} but missing from --initial-advertise-peer-urls=${A},${B} (resolved urls: "${B}" != "${C}")`],
      [{ initialCluster: `default=${A},default=${A}`, initialAdvertisePeerUrls: [A] }, 'advertise-mismatch',
        `failed to resolve ${A} to match --initial-cluster=default=${A} (len(["${A}"]) != len(["${A}" "${A}"]))`],
      [{ initialCluster: `default=${A}`, initialAdvertisePeerUrls: [A, A] }, 'advertise-mismatch',
        `failed to resolve ${A},${A} to match --initial-cluster=default=${A},default=${A} (len(["${A}" "${A}"]) != len(["${A}"]))`],
      [{ initialCluster: 'default=http://localhost:1', initialAdvertisePeerUrls: [A] }, 'advertise-mismatch',
        `--initial-cluster has default=http://localhost:1 but missing from --initial-advertise-peer-urls=${A} (resolved urls: "${A}" != "http://localhost:1")`],
      [{ initialCluster: `default=${A},b=${A}`, initialAdvertisePeerUrls: [A] }, 'duplicate-url',
        `initial cluster b=${A},default=${A} has duplicate url`],
    ];
    for (const [over, code, message] of cases) {
      assert.deepEqual(refusal(() => verifyBootstrapFlags(flags(over))), { code, message }, JSON.stringify(over));
    }
  });

  test('joining (state existing) does not compare the advertised URLs; a good cluster parses', () => {
    const f = flags({ initialClusterState: 'existing', initialCluster: `default=${A},b=${B}`, initialAdvertisePeerUrls: [C] });
    assert.deepEqual(verifyBootstrapFlags(f), [{ name: 'default', peerUrls: [A] }, { name: 'b', peerUrls: [B] }]);
    assert.equal(refusal(() => verifyBootstrapFlags({ ...f, initialCluster: `default=${A},b=${A}` })).code, 'duplicate-url');
  });

  test('host names compare as DNS resolves them (etcd resolves all but IPs and localhost)', () => {
    const f = flags({ initialCluster: 'default=http://node1:2380', initialAdvertisePeerUrls: ['http://10.0.0.1:2380'] });
    assert.equal(refusal(() => verifyBootstrapFlags(f)).code, 'advertise-mismatch');
    assert.deepEqual(hostsToResolve(['http://node1:2380', 'http://10.0.0.1:2380', 'http://localhost:1', 'http://[::1]:2', 'unix://s:1']), ['node1']);
    const resolved = new Map([['node1', '10.0.0.1']]);
    assert.deepEqual(verifyBootstrapFlags(f, resolved), [{ name: 'default', peerUrls: ['http://node1:2380'] }]);
    assert.equal(urlListsDiffer(['http://node6:1'], ['http://[fe80::1]:1'], new Map([['node6', 'fe80::1']])), null);
    assert.equal(urlListsDiffer(['http://node6:1'], ['http://[fe80::1]:2'], new Map([['node6', 'fe80::1']])),
      'resolved urls: "http://[fe80::1]:1" != "http://[fe80::1]:2"');
  });
});

describe('initial membership and plans', () => {
  const three = `a=${A},b=${B},b=${C},c=http://127.0.0.1:4`;

  test('a new cluster: ids from the URLs and the token, members sorted by id, the cluster id over them', () => {
    const cluster = parseInitialCluster(three);
    const m = initialMembership(cluster, 'tok', 'b');
    const ids = { a: memberIdOf([A], 'tok'), b: memberIdOf([B, C], 'tok'), c: memberIdOf(['http://127.0.0.1:4'], 'tok') };
    assert.equal(m.localId, ids.b);
    assert.equal(m.clusterId, clusterIdOf([ids.a, ids.b, ids.c]));
    assert.deepEqual(m.members.map((x) => x.id), [ids.a, ids.b, ids.c].sort((x, y) => (x < y ? -1 : 1)));
    assert.deepEqual(m.members.find((x) => x.name === 'b'), { id: ids.b, name: 'b', peerUrls: [B, C], clientUrls: [], isLearner: false });
    assert.deepEqual(remotePeerUrls(cluster, 'b'), [A, 'http://127.0.0.1:4']);
  });

  test('planBootstrap: new, join, and a restart that ignores every --initial-* flag', () => {
    const f = flags({ name: 'b', initialCluster: three, initialAdvertisePeerUrls: [C, B], initialClusterToken: 'tok' });
    const plan = planBootstrap(f, null);
    assert.equal(plan.kind, 'new');
    assert.ok(plan.kind === 'new');
    assert.deepEqual(plan.membership, initialMembership(parseInitialCluster(three), 'tok', 'b'));
    assert.deepEqual(plan.remotePeerUrls, [A, 'http://127.0.0.1:4']);

    const join = planBootstrap({ ...f, initialClusterState: 'existing', initialAdvertisePeerUrls: ['http://127.0.0.1:9'] }, null);
    assert.equal(join.kind, 'join');

    assert.equal(refusal(() => planBootstrap({ ...f, initialCluster: 'garbage' }, null)).code, 'initial-cluster-invalid');
    const dataDir = plan.membership;
    for (const restartFlags of [f, { ...f, initialCluster: 'garbage', initialClusterToken: 'other' }, { ...f, initialClusterState: 'existing' as const }]) {
      const r = planBootstrap(restartFlags, dataDir);
      assert.equal(r.kind, 'restart');
      assert.ok(r.kind === 'restart');
      assert.equal(r.membership, dataDir);
      assert.deepEqual(r.notices[0], { level: 'info', msg: 'server has been already initialized', fields: { 'data-dir': '/d', 'dir-type': 'member' } });
    }
    // Concord warns when the flags describe another new cluster (etcd says nothing).
    assert.equal(planBootstrap(f, dataDir).notices.length, 1);
    const other = planBootstrap({ ...f, initialClusterToken: 'other' }, dataDir);
    assert.equal(other.notices.length, 2);
    assert.equal(other.notices[1]!.level, 'warn');
    assert.equal(other.notices[1]!.fields['cluster-id'], formatId(dataDir.clusterId));
  });

  test('checkNotBootstrapped: refused only when the running cluster has this member started', () => {
    const m = initialMembership(parseInitialCluster(three), 'tok', 'b');
    const remote = (clientUrls: string[]): RemoteCluster => ({
      clusterId: m.clusterId, removedIds: [], members: m.members.map((x) => (x.id === m.localId ? { ...x, clientUrls } : x)),
    });
    checkNotBootstrapped(m, null);
    checkNotBootstrapped(m, remote([]));
    checkNotBootstrapped(m, { clusterId: 1n, members: [], removedIds: [] });
    assert.deepEqual(refusal(() => checkNotBootstrapped(m, remote(['http://127.0.0.1:7']))),
      { code: 'already-bootstrapped', message: `member ${formatId(m.localId)} has already been bootstrapped` });
    assert.equal(fetchFailed().message, errCannotFetchCluster);
  });

  test("joinExisting: the running cluster's ids (an added member's included); mismatches in etcd's words", () => {
    const boot = initialMembership(parseInitialCluster(`a=${A},b=${B}`), 'tok', 'a');
    const addedId = memberIdOf([C], '', new Date(1_700_000_000_000));
    const remote: RemoteCluster = {
      clusterId: boot.clusterId,
      removedIds: [5n],
      members: [...boot.members.map((x) => ({ ...x, clientUrls: [`${x.peerUrls[0]}0`] })),
        { id: addedId, name: '', peerUrls: [C], clientUrls: [], isLearner: true }],
    };
    const joined = joinExisting(parseInitialCluster(`c=${C},a=${A},b=${B}`), 'tok', 'c', remote);
    assert.equal(joined.localId, addedId);
    assert.equal(joined.clusterId, boot.clusterId);
    assert.equal(joined.members.length, 3);

    const str = goClusterString(remote);
    const sorted = [...remote.members].sort((x, y) => (x.id < y.id ? -1 : 1));
    assert.equal(str, `{ClusterID:${formatId(boot.clusterId)} Members:[${sorted.map((x) =>
      `&{ID:${formatId(x.id)} RaftAttributes:{PeerURLs:[${x.peerUrls.join(' ')}] IsLearner:${x.isLearner}} Attributes:{Name:${x.name} ClientURLs:[${x.clientUrls.join(' ')}]}}`).join(' ')}] RemovedMemberIDs:[5]}`);
    assert.deepEqual(refusal(() => joinExisting(parseInitialCluster(`c=${C},a=${A}`), 'tok', 'c', remote)),
      { code: 'cluster-mismatch', message: `error validating peerURLs ${str}: member count is unequal` });
    const wrong = refusal(() => joinExisting(parseInitialCluster(`c=http://127.0.0.1:9,a=${A},b=${B}`), 'tok', 'c', remote));
    assert.equal(wrong.code, 'cluster-mismatch');
    assert.match(wrong.message, new RegExp(`: PeerURLs: no match found for existing member \\(${formatId(addedId)}, \\[${C}\\]\\), last resolver error \\(resolved urls: "${C}" != "[^"]+"\\)$`));
  });
});

/** The cluster a running etcd member reports, as the fetch hook would give it. */
async function remoteOf(endpoint: string): Promise<RemoteCluster> {
  const list = await memberList(endpoint);
  return { clusterId: list.clusterId, members: list.members, removedIds: [] };
}

/**
 * etcd prints the members of a cluster in Go map order (random): compare the messages with the
 * members of `{ClusterID:... Members:[...] ...}` sorted.
 */
function membersSorted(message: string): string {
  return message.replace(/Members:\[(.*?)\] RemovedMemberIDs/, (_all, inner: string) =>
    `Members:[${(inner.match(/&\{ID:.*?\}\}/g) ?? []).sort().join(' ')}] RemovedMemberIDs`);
}

describe('against real etcd 3.4: restarts, lost data, joins', { skip: etcdSkipReason() }, () => {
  const running: EtcdHandle[] = [];
  const dirs: string[] = [];
  after(async () => {
    await Promise.all(running.map((h) => h.stop()));
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  test('a restart with another token, a garbage --initial-cluster and state existing keeps the ids of the data dir', async () => {
    const [u, other] = await loopbackUrls(2);
    const dataDir = tmpDataDir();
    dirs.push(dataDir);
    const first: MemberFlags = { name: 'm', listenPeerUrls: [u!], advertisePeerUrls: [u!], initialCluster: `m=${u!}`, token: 'first', dataDir };
    const h1 = await startMember(first);
    const ids1 = await memberList(h1.endpoint);
    await h1.stop();
    const concord = planBootstrap(flags({ name: 'm', initialCluster: `m=${u!}`, initialAdvertisePeerUrls: [u!], initialClusterToken: 'first' }), null);
    assert.ok(concord.kind === 'new');
    assert.equal(concord.membership.clusterId, ids1.clusterId);
    assert.equal(concord.membership.localId, ids1.memberId);

    const second: MemberFlags = { ...first, token: 'second', initialCluster: 'garbage', advertisePeerUrls: [other!], state: 'existing' };
    const h2 = await startMember(second);
    running.push(h2);
    const ids2 = await memberList(h2.endpoint);
    await h2.stop();
    assert.equal(ids2.clusterId, ids1.clusterId);
    assert.equal(ids2.memberId, ids1.memberId);
    assert.deepEqual(ids2.members[0]!.peerUrls, [u!], 'the peer URLs of the data dir, not the flag');
    assert.match(h2.logs(), /server has been already initialized/);
    const restart = planBootstrap(flags({
      name: 'm', initialCluster: 'garbage', initialAdvertisePeerUrls: [other!], initialClusterToken: 'second', initialClusterState: 'existing',
    }), concord.membership);
    assert.equal(restart.kind, 'restart');
    assert.equal(restart.notices[0]!.msg, 'server has been already initialized');
  });

  test('a member restarted on the data of another cluster starts anyway (flags ignored); its peers refuse it: "cluster ID mismatch"', async (t) => {
    const urls = await loopbackUrls(3);
    const aDir = tmpDataDir();
    dirs.push(aDir);
    const cluster = `a=${urls[0]!},b=${urls[1]!},c=${urls[2]!}`;
    const mk = (name: string, i: number, token: string, dataDir?: string): MemberFlags =>
      ({ name, listenPeerUrls: [urls[i]!], advertisePeerUrls: [urls[i]!], initialCluster: cluster, token, ...(dataDir ? { dataDir } : {}) });
    const first = await Promise.all([mk('a', 0, 'old', aDir), mk('b', 1, 'old'), mk('c', 2, 'old')].map(startMember));
    const old = await memberList(first[0]!.endpoint);
    await Promise.all(first.map((h) => h.stop())); // b and c lose their data dirs
    const fresh = await Promise.all([mk('b', 1, 'new'), mk('c', 2, 'new')].map(startMember));
    running.push(...fresh);
    const now = await memberList(fresh[0]!.endpoint);
    assert.notEqual(now.clusterId, old.clusterId);

    // a restarts on its old data with the flags of the new cluster.
    // Stopped once it logged the refusal (other lines mention the mismatch earlier).
    const a = await runUntilRefused(mk('a', 0, 'new', aDir), 20_000, new RegExp(`"msg":"${peerClusterIdMismatch.senderMsg}"`));
    assert.equal(a.error, null, `etcd does not refuse to start:\n${a.output.slice(-3000)}`);
    const aOld = old.members.find((m) => m.name === 'a')!.id;
    assert.match(a.output, new RegExp(`"msg":"restarting local member","cluster-id":"${formatId(old.clusterId)}","local-member-id":"${formatId(aOld)}"`));
    // Its peers refuse what it sends, and say so (their log lines may reach us a little after
    // the sender's: a loaded machine delays the pipes).
    const refusals = () => fresh.flatMap((h) => h.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((r) => r.msg === peerClusterIdMismatch.receiverMsg));
    let refusedBy = refusals();
    for (const until = Date.now() + 10_000; refusedBy.length === 0 && Date.now() < until; refusedBy = refusals()) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(refusedBy.length > 0, fresh.map((h) => h.logs()).join('\n').slice(-3000));
    const rec = refusedBy[0]!;
    const receiver = now.members.find((m) => formatId(m.id) === rec['local-member-id'])!;
    for (const [k, v] of Object.entries(peerClusterIdMismatchFields(receiver.id, now.clusterId, aOld, old.clusterId))) assert.equal(rec[k], v, k);
    assert.match(a.output, new RegExp(`"msg":"${peerClusterIdMismatch.senderMsg}".*"error":"${peerClusterIdMismatch.error}"`));
    t.diagnostic(`${rec.msg}: ${JSON.stringify(peerClusterIdMismatchFields(receiver.id, now.clusterId, aOld, old.clusterId))}`);

    // Concord: the same restart (the data dir's ids), and a warning naming both clusters.
    const dataDir: Membership = {
      clusterId: old.clusterId, localId: aOld,
      members: [...old.members].sort((x, y) => (x.id < y.id ? -1 : 1)),
    };
    const plan = planBootstrap(flags({ name: 'a', dataDir: aDir, initialCluster: cluster, initialAdvertisePeerUrls: [urls[0]!], initialClusterToken: 'new' }), dataDir);
    assert.ok(plan.kind === 'restart');
    assert.equal(plan.membership.clusterId, old.clusterId);
    assert.equal(plan.notices[1]!.fields['cluster-id'], formatId(old.clusterId));
    assert.equal(plan.notices[1]!.fields['initial-cluster-id'], formatId(now.clusterId), 'the flags name the cluster b and c formed');
  });

  describe('a running 3-member cluster; member c loses its data', () => {
    let urls: string[] = [];
    let handles: EtcdHandle[] = [];
    const token = 'concord-bootstrap';
    const clusterOf = (u: string[]): string => `a=${u[0]!},b=${u[1]!},c=${u[2]!}`;
    const cFlags = (over: Partial<MemberFlags>): MemberFlags => ({
      name: 'c', listenPeerUrls: [urls[2]!], advertisePeerUrls: [urls[2]!], initialCluster: clusterOf(urls), token, ...over,
    });

    before(async () => {
      urls = await loopbackUrls(3);
      const names = ['a', 'b', 'c'];
      handles = await Promise.all(names.map((name, i) => startMember({
        name, listenPeerUrls: [urls[i]!], advertisePeerUrls: [urls[i]!], initialCluster: clusterOf(urls), token,
      })));
      running.push(...handles);
      await handles[2]!.stop(); // c: stopped, data dir removed
    });

    test('restarted as new: "member <id> has already been bootstrapped"', async (t) => {
      const etcd = await runUntilRefused(cFlags({ state: 'new' }));
      assert.equal(etcd.code, 1, etcd.output.slice(-2000));
      const plan = planBootstrap(flags({ name: 'c', initialCluster: clusterOf(urls), initialAdvertisePeerUrls: [urls[2]!], initialClusterToken: token }), null);
      assert.ok(plan.kind === 'new');
      const remote = await remoteOf(handles[0]!.endpoint);
      const concord = refusal(() => checkNotBootstrapped(plan.membership, remote));
      assert.equal(concord.message, etcd.error);
      t.diagnostic(`etcd: ${etcd.error}`);
    });

    test('joining with a cluster that lacks a member: "member count is unequal"', async (t) => {
      const initialCluster = `a=${urls[0]!},c=${urls[2]!}`;
      const etcd = await runUntilRefused(cFlags({ state: 'existing', initialCluster }));
      assert.equal(etcd.code, 1);
      const remote = await remoteOf(handles[0]!.endpoint);
      const concord = refusal(() => joinExisting(parseInitialCluster(initialCluster), token, 'c', remote));
      assert.ok(etcd.error !== null, etcd.output.slice(-2000));
      assert.equal(membersSorted(concord.message), membersSorted(etcd.error));
      t.diagnostic(`etcd: ${etcd.error}`);
      assert.match(concord.message, /: member count is unequal$/);
    });

    test('joining with a wrong URL for a member: "PeerURLs: no match found for existing member"', async (t) => {
      const [wrong] = await loopbackUrls(1);
      const initialCluster = `a=${urls[0]!},b=${wrong!},c=${urls[2]!}`;
      const etcd = await runUntilRefused(cFlags({ state: 'existing', initialCluster }));
      assert.equal(etcd.code, 1);
      const remote = await remoteOf(handles[0]!.endpoint);
      const concord = refusal(() => joinExisting(parseInitialCluster(initialCluster), token, 'c', remote));
      assert.ok(etcd.error !== null, etcd.output.slice(-2000));
      assert.equal(membersSorted(concord.message), membersSorted(etcd.error));
      t.diagnostic(`etcd: ${etcd.error}`);
    });

    test('joining with the right cluster: the ids etcd has for it', async () => {
      const remote = await remoteOf(handles[0]!.endpoint);
      const joined: Membership = joinExisting(parseInitialCluster(clusterOf(urls)), token, 'c', remote);
      assert.equal(joined.clusterId, remote.clusterId);
      assert.equal(joined.localId, remote.members.find((m) => m.name === 'c')!.id);
    });

    test('joining when no peer answers: "cannot fetch cluster info from peer urls"', async (t) => {
      const [x, y] = await loopbackUrls(2);
      const etcd = await runUntilRefused(cFlags({ state: 'existing', initialCluster: `c=${urls[2]!},x=${x!},y=${y!}` }));
      assert.equal(etcd.code, 1);
      assert.equal(etcd.error, errCannotFetchCluster);
      assert.equal(fetchFailed().message, etcd.error);
      t.diagnostic(`etcd: ${etcd.error}`);
    });
  });
});
