// Member and cluster ids equal etcd's for the same flags: unit vectors for the hash and its
// formatting, then real etcd 3.4 single members and a 3-member cluster bootstrapped on loopback
// with chosen tokens, several peer URLs per member, URLs in scrambled order and URLs that Go
// normalizes, whose ids (etcdctl member list / endpoint status) must be what
// memberIdOf/clusterIdOf compute; and a member added at run time (empty token + Unix time).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import Long from 'long';

import { clusterIdOf, formatId, idFromLong, idToLong, memberIdOf, parseId } from '../../src/membership/ids';
import { parsePeerUrls } from '../../src/membership/urls';
import { etcdSkipReason } from '../helpers/etcd';
import type { EtcdHandle } from '../helpers/etcd';
import { endpointStatus, etcdctl, loopbackUrls, memberList, startMember, type MemberFlags } from './etcd_members';

describe('ids: unit', () => {
  test('etcd defaults: member 8e9e05c52164694d in cluster cdf818194e3a8c32', () => {
    const id = memberIdOf(['http://localhost:2380'], 'etcd-cluster');
    assert.equal(formatId(id), '8e9e05c52164694d');
    assert.equal(formatId(clusterIdOf([id])), 'cdf818194e3a8c32');
  });

  test('peer URL order and member order do not matter; the token and the time do', () => {
    const a = memberIdOf(['http://10.0.0.1:2380', 'http://10.0.0.2:2380'], 't');
    assert.equal(memberIdOf(['http://10.0.0.2:2380', 'http://10.0.0.1:2380'], 't'), a);
    assert.notEqual(memberIdOf(['http://10.0.0.1:2380', 'http://10.0.0.2:2380'], 'u'), a);
    const b = memberIdOf(['http://10.0.0.3:2380'], 't');
    assert.equal(clusterIdOf([a, b]), clusterIdOf([b, a]));
    const t = new Date(Date.UTC(2024, 0, 1, 0, 0, 0, 999));
    const added = memberIdOf(['http://10.0.0.4:2380'], '', t);
    // Only the Unix seconds count.
    assert.equal(memberIdOf(['http://10.0.0.4:2380'], '', new Date(Date.UTC(2024, 0, 1))), added);
    assert.notEqual(memberIdOf(['http://10.0.0.4:2380'], '', new Date(t.getTime() + 1)), added);
    // token '' + time = the same bytes as the token "1704067200" without a time.
    assert.equal(memberIdOf(['http://10.0.0.4:2380'], '1704067200'), added);
  });

  test('formatting: lower-case hex without leading zeros, as etcdctl prints; parse and Long round trips', () => {
    let small = 0n;
    for (let i = 0; small === 0n; i++) {
      const id = memberIdOf(['http://a:1'], `t${i}`);
      if (id < 1n << 60n) small = id;
    }
    assert.equal(formatId(small), small.toString(16));
    assert.ok(formatId(small).length < 16 && !formatId(small).startsWith('0'));
    assert.equal(formatId(0xfn), 'f');
    for (const id of [small, 1n, (1n << 64n) - 1n, 1n << 63n, 0x8e9e05c52164694dn]) {
      assert.equal(parseId(formatId(id)), id);
      assert.equal(idFromLong(idToLong(id)), id);
      assert.equal(idToLong(id).toString(16), formatId(id));
      assert.equal(idFromLong(Long.fromString(id.toString(), true).toSigned()), id, 'a signed Long has the same bits');
    }
    assert.equal(parseId(''), null);
    assert.equal(parseId('12345678901234567'), null);
    assert.equal(parseId('xyz'), null);
  });

  test('clusterIdOf refuses a duplicate member id (a bug)', () => {
    assert.throws(() => clusterIdOf([1n, 1n]), /duplicate member id/);
  });
});

/** The ids concord computes for flags as etcd holds them. */
function idsFor(cluster: { name: string; urls: string[] }[], token: string): { members: Map<string, bigint>; clusterId: bigint } {
  const members = new Map<string, bigint>();
  for (const m of cluster) members.set(m.name, memberIdOf(parsePeerUrls(m.urls), token));
  return { members, clusterId: clusterIdOf([...members.values()]) };
}

describe('ids: equal to real etcd 3.4', { skip: etcdSkipReason() }, () => {
  const running: EtcdHandle[] = [];
  after(async () => {
    await Promise.all(running.map((h) => h.stop()));
  });

  async function checkAgainstEtcd(handles: EtcdHandle[], want: { members: Map<string, bigint>; clusterId: bigint }, what: string): Promise<void> {
    for (const h of handles) {
      const list = await memberList(h.endpoint);
      assert.equal(formatId(list.clusterId), formatId(want.clusterId), `${what}: cluster id (member list on ${h.name})`);
      const got = new Map(list.members.map((m) => [m.name, m.id]));
      assert.deepEqual([...got.keys()].sort(), [...want.members.keys()].sort(), `${what}: names`);
      for (const [name, id] of want.members) assert.equal(formatId(got.get(name)!), formatId(id), `${what}: id of ${name}`);
      const status = await endpointStatus(h.endpoint);
      assert.equal(status.clusterId, want.clusterId, `${what}: cluster id (endpoint status on ${h.name})`);
      assert.equal(status.memberId, want.members.get(h.name), `${what}: member id (endpoint status on ${h.name})`);
      // etcdctl's own text form: the hex id without leading zeros.
      const simple = await etcdctl(h.endpoint, ['member', 'list']);
      for (const [name, id] of want.members) {
        assert.ok(simple.stdout.split('\n').some((l) => l.startsWith(`${formatId(id)}, started, ${name},`)), `${what}: ${simple.stdout}`);
      }
    }
  }

  test('single members: default token, other tokens, an empty token, two URLs in any order, URLs Go rewrites', async (t) => {
    const [u1, u2, u3, u4, u5, u6] = await loopbackUrls(6);
    const configs: { what: string; token: string; listen: string[]; advertise: string[]; cluster: string[] }[] = [
      { what: 'default token', token: 'etcd-cluster', listen: [u1!], advertise: [u1!], cluster: [u1!] },
      { what: 'non-ASCII token', token: 'tøken-ü-1', listen: [u1!], advertise: [u1!], cluster: [u1!] },
      { what: 'empty token', token: '', listen: [u1!], advertise: [u1!], cluster: [u1!] },
      // Advertised in one order, listed in --initial-cluster in the other.
      { what: 'two peer URLs', token: 'two-urls', listen: [u2!, u3!], advertise: [u3!, u2!], cluster: [u2!, u3!] },
      // Go's url.String(): the scheme lower-cased, a lone '?' kept, %41 in the user name decoded
      // and %3a re-escaped as %3A, a valid %-escape in a fragment kept as typed and a space in one
      // escaped, a non-ASCII host %-escaped, IPv6 with a zone. Advertised only (nobody dials them).
      {
        what: 'URLs Go normalizes', token: 'norm', listen: [u4!], cluster: [],
        advertise: [`HTTP://${u5!.slice('http://'.length)}?`, `http://u%41:p@${u6!.slice('http://'.length)}#fr%41g`,
          'http://[::1]:1?x=1&y', 'http://hé:2', 'http://h%C3%A9:3', 'http://a:4#a b', 'https://[fe80::1%25en0]:5',
          'HTTPS://User%3a@a:6', 'unix://sock:7', 'http://a:8#'],
      },
    ];
    for (const c of configs) {
      const cluster = c.cluster.length > 0 ? c.cluster : c.advertise;
      const flags: MemberFlags = {
        name: 'm1', listenPeerUrls: c.listen, advertisePeerUrls: c.advertise, token: c.token,
        initialCluster: cluster.map((u) => `m1=${u}`).join(','),
      };
      const h = await startMember(flags);
      running.push(h);
      try {
        const want = idsFor([{ name: 'm1', urls: cluster }], c.token);
        await checkAgainstEtcd([h], want, c.what);
        t.diagnostic(`${c.what}: member ${formatId(want.members.get('m1')!)} cluster ${formatId(want.clusterId)}`);
      } finally {
        await h.stop();
      }
    }
  });

  test('a 3-member cluster (one member with two peer URLs, --initial-cluster in scrambled order), then a member added at run time', async (t) => {
    const [a, b1, b2, c] = await loopbackUrls(4);
    const token = 'concord-ids-3';
    const cluster = [{ name: 'a', urls: [a!] }, { name: 'b', urls: [b1!, b2!] }, { name: 'c', urls: [c!] }];
    // Scrambled: c first, b's URLs split around a and in reverse order.
    const initialCluster = `c=${c!},b=${b2!},a=${a!},b=${b1!}`;
    const flags = (name: string, urls: string[]): MemberFlags => ({
      name, listenPeerUrls: urls, advertisePeerUrls: [...urls].reverse(), initialCluster, token,
    });
    const handles = await Promise.all([flags('a', [a!]), flags('b', [b1!, b2!]), flags('c', [c!])].map(startMember));
    running.push(...handles);
    const want = idsFor(cluster, token);
    await checkAgainstEtcd(handles, want, '3 members');
    t.diagnostic(`3 members: ${[...want.members].map(([n, id]) => `${n}=${formatId(id)}`).join(' ')} cluster ${formatId(want.clusterId)}`);

    // MemberAdd: id from the peer URLs, an empty token and the Unix time of the add.
    const [d] = await loopbackUrls(1);
    // etcd's strict reconfig check wants 5 s of connectivity to every voter first
    // ("etcdserver: unhealthy cluster" until then).
    let before = 0;
    let afterMs = 0;
    let added = { stdout: '', stderr: '', code: -1 };
    for (const deadline = Date.now() + 20_000; Date.now() < deadline;) {
      before = Date.now();
      added = await etcdctl(handles[0]!.endpoint, ['member', 'add', 'd', `--peer-urls=${d!}`, '--learner']);
      afterMs = Date.now();
      if (added.code === 0 || !added.stderr.includes('unhealthy cluster')) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(added.code, 0, added.stderr);
    const m = /^Member\s+(\w+) added to cluster\s+(\w+)$/m.exec(added.stdout);
    assert.ok(m, added.stdout);
    assert.equal(m[2], formatId(want.clusterId), 'the cluster id does not change with the membership');
    const candidates = new Set<string>();
    for (let s = Math.floor(before / 1000) - 1; s <= Math.floor(afterMs / 1000) + 1; s++) {
      candidates.add(formatId(memberIdOf(parsePeerUrls([d!]), '', new Date(s * 1000))));
    }
    assert.ok(candidates.has(m[1]!), `added id ${m[1]} is one of ${[...candidates].join(', ')}`);
    const list = await memberList(handles[1]!.endpoint);
    assert.equal(list.clusterId, want.clusterId);
    const learner = list.members.find((x) => formatId(x.id) === m[1]);
    assert.ok(learner && learner.isLearner && learner.name === '', JSON.stringify(list.members.map((x) => ({ ...x, id: formatId(x.id) }))));
  });
});
