// Cluster differential (issue #12): a 3-member real etcd 3.4 cluster and a 3-member concord
// cluster, started with the same flag shape (test/helpers/etcd_cluster.ts, test/helpers/cluster.ts),
// get the same request sequences on the member with the same role (the leader, or the first or
// second follower by member index), and must answer the same way, revisions included (header
// member_id, raft_term and cluster_id removed: see test/helpers/cluster_diff.ts). Ids are checked
// on each side against what etcd derives from that cluster's own flags (memberIdOf, clusterIdOf):
// the two clusters listen on different ports, so their ids differ.
//
// etcdctl outputs (member list, endpoint status --cluster, endpoint health --cluster, put/get
// through three endpoints) are compared after ids, URLs (ports), db sizes, raft indexes and terms
// are replaced by placeholders; rows are compared by member, and each side's row order is checked
// to be etcd's (ascending member id).
//
// The tests share the two clusters and run in order: each builds on the state (and revisions)
// the previous ones left. Near the end the leader of each cluster is killed (kill -9), then the
// new leader too (quorum lost: what the last member answers).
//
// No known difference is skipped. CLUSTER_DIFF_SOFT=1 prints every
// difference instead of stopping at the first; CLUSTER_DIFF_VERBOSE=1 prints timings and raft
// indexes, =2 every compared answer.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';

import { etcdserverpb } from '../../src/gen/proto';

import {
  ClusterDiff, FOLLOWER1, FOLLOWER2, LEADER, plainMessage, SIDES, show, type Side,
} from '../helpers/cluster_diff';
import { b, expectError, okOf, revOf, type Outcome } from '../helpers/differential';
import { type CtlRun, etcdctlSkipReason, runEtcdctl } from '../helpers/etcdctl';
import { openStream, prefixEnd, type StreamReader } from '../helpers/grpc_client';

const TOKEN = 'cluster-diff';
const T = etcdserverpb.Compare.CompareTarget;
const R = etcdserverpb.Compare.CompareResult;
const ROLES = [LEADER, FOLLOWER1, FOLLOWER2] as const;
const COMPACTED = 'etcdserver: mvcc: required revision has been compacted';

describe('cluster differential: 3 etcd 3.4 members vs 3 concord members', { skip: etcdctlSkipReason() }, () => {
  let d: ClusterDiff;

  before(async () => {
    d = await ClusterDiff.start({ token: TOKEN });
  });
  after(async () => {
    if (d?.soft && d.diffs.length > 0) console.log(`${d.diffs.length} difference(s) recorded`);
    await d?.stop();
  });

  /** Linearizable then serializable ranges of `req` on every member (after a linearizable read, a serializable one is up to date). */
  async function rangeEverywhere(req: Parameters<ClusterDiff['kv']>[2], label: string): Promise<void> {
    for (const role of d.roles.etcd.keys()) {
      await d.kv('Range', role, req, `${label} linearizable`);
      await d.kv('Range', role, { ...req, serializable: true }, `${label} serializable`);
    }
  }

  test('both clusters: one leader, members in step, revision 1', async () => {
    for (const role of ROLES) {
      assert.equal(revOf(await d.kv('Range', role, { key: b('nothing') })), 1, 'both start at revision 1');
    }
  });

  test('puts and txns on the leader and on each follower', async () => {
    let rev = 1;
    for (const role of ROLES) {
      const o = await d.kv('Put', role, { key: b(`k/${role}`), value: b(`v${role}`) });
      assert.equal(revOf(o), ++rev);
    }
    await d.kv('Put', FOLLOWER1, { key: b('k/0'), value: b('v0-2'), prev_kv: true }, 'overwrite with prev_kv on a follower');
    await d.kv('Put', FOLLOWER2, { key: b('k/1'), ignore_value: true, prev_kv: true }, 'ignore_value on a follower');
    await d.kv('Put', LEADER, { key: b('k/2'), value: b('v2-2'), prev_kv: true });
    expectError(await d.kv('Put', FOLLOWER1, { key: b(''), value: b('x') }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');
    expectError(await d.kv('Put', FOLLOWER2, { key: b('missing'), ignore_value: true }), grpc.status.INVALID_ARGUMENT,
      'etcdserver: key not found');
    expectError(await d.kv('Put', FOLLOWER1, { key: b('k/l'), value: b('x'), lease: 424242 }), grpc.status.NOT_FOUND,
      'etcdserver: requested lease not found');

    // Txns: success and failure branches, ranges inside, nested txn, on each member.
    for (const role of ROLES) {
      await d.kv('Txn', role, {
        compare: [{ key: b('k/0'), target: T.VALUE, result: R.EQUAL, value: b('v0-2') }],
        success: [
          { request_put: { key: b(`t/${role}`), value: b('yes'), prev_kv: true } },
          { request_range: { key: b('k/'), range_end: prefixEnd('k/') } },
        ],
        failure: [{ request_put: { key: b(`t/${role}`), value: b('no') } }],
      }, 'success branch');
      await d.kv('Txn', role, {
        compare: [{ key: b('k/1'), target: T.MOD, result: R.GREATER, mod_revision: 1000 }],
        success: [{ request_delete_range: { key: b('k/') , range_end: prefixEnd('k/') } }],
        failure: [
          { request_put: { key: b(`f/${role}`), value: b('fail') } },
          { request_delete_range: { key: b('nothing'), prev_kv: true } },
          { request_txn: { compare: [{ key: b(`f/${role}`), target: T.VERSION, result: R.EQUAL, version: 1 }],
            success: [{ request_range: { key: b(`f/${role}`) } }] } },
        ],
      }, 'failure branch with a nested txn');
    }
    await d.kv('Txn', FOLLOWER2, {
      compare: [{ key: b('k/0'), target: T.CREATE, result: R.LESS, create_revision: 3 }],
      success: [{ request_put: { key: b('dup'), value: b('1') } }, { request_put: { key: b('dup'), value: b('2') } }],
    }, 'duplicate key in a txn on a follower');
    await d.kv('Txn', FOLLOWER1, {}, 'empty txn on a follower');
    await d.kv('Txn', FOLLOWER2, {
      compare: [{ key: b('t/'), range_end: prefixEnd('t/'), target: T.VALUE, result: R.EQUAL, value: b('yes') }],
      success: [{ request_put: { key: b('t/all'), value: b('yes') } }],
      failure: [{ request_range: { key: b('t/'), range_end: prefixEnd('t/'), count_only: true } }],
    }, 'compare over a range');
  });

  test('linearizable and serializable ranges on each member after the writes', async () => {
    await rangeEverywhere({ key: b('\0'), range_end: b('\0') }, 'everything');
    await rangeEverywhere({ key: b('k/'), range_end: prefixEnd('k/'), sort_order: etcdserverpb.RangeRequest.SortOrder.DESCEND, sort_target: etcdserverpb.RangeRequest.SortTarget.MOD, limit: 2 }, 'sorted, limited');
    await rangeEverywhere({ key: b('k/0'), revision: 2 }, 'history');
    await rangeEverywhere({ key: b('\0'), range_end: b('\0'), count_only: true }, 'count');
    await rangeEverywhere({ key: b('k/'), range_end: prefixEnd('k/'), keys_only: true, min_mod_revision: 4 }, 'keys only, min mod');
    for (const role of ROLES) {
      expectError(await d.kv('Range', role, { key: b('k/0'), revision: 1000 }), grpc.status.OUT_OF_RANGE,
        'etcdserver: mvcc: required revision is a future revision');
    }
  });

  test('deletes on each member', async () => {
    await d.kv('DeleteRange', FOLLOWER1, { key: b('k/0'), prev_kv: true }, 'one key on a follower');
    await d.kv('DeleteRange', FOLLOWER2, { key: b('t/'), range_end: prefixEnd('t/'), prev_kv: true }, 'a range on a follower');
    await d.kv('DeleteRange', LEADER, { key: b('nothing') }, 'nothing to delete: no new revision');
    await d.kv('DeleteRange', FOLLOWER2, { key: b('f/'), range_end: prefixEnd('f/') });
    await d.kv('Put', FOLLOWER1, { key: b('k/0'), value: b('again'), prev_kv: true }, 'a recreated key: version 1');
    await rangeEverywhere({ key: b('\0'), range_end: b('\0') }, 'after the deletes');
  });

  test('compaction on a follower, a compacted revision read on the other follower', async () => {
    const rev = revOf(await d.kv('Range', LEADER, { key: b('nothing') }));
    await d.call('etcdserverpb.KV', 'Compact', FOLLOWER1, { revision: rev - 4 }, { label: 'on a follower' });
    expectError(await d.kv('Range', FOLLOWER2, { key: b('k/0'), revision: rev - 5 }), grpc.status.OUT_OF_RANGE, COMPACTED);
    await d.kv('Range', FOLLOWER2, { key: b('\0'), range_end: b('\0'), revision: rev - 4 }, 'at the compacted revision');
    expectError(await d.kv('Range', FOLLOWER2, { key: b('k/0'), revision: rev - 5, serializable: true }), grpc.status.OUT_OF_RANGE, COMPACTED);
    expectError(await d.kv('Range', LEADER, { key: b('k/0'), revision: rev - 5 }), grpc.status.OUT_OF_RANGE, COMPACTED);
    expectError(await d.call('etcdserverpb.KV', 'Compact', LEADER, { revision: rev - 4 }), grpc.status.OUT_OF_RANGE, COMPACTED);
    expectError(await d.call('etcdserverpb.KV', 'Compact', FOLLOWER2, { revision: rev + 10 }), grpc.status.OUT_OF_RANGE,
      'etcdserver: mvcc: required revision is a future revision');
    await d.call('etcdserverpb.KV', 'Compact', FOLLOWER2, { revision: rev - 2, physical: true }, { label: 'physical, on a follower' });
    for (const role of ROLES) {
      expectError(await d.kv('Range', role, { key: b('k/0'), revision: rev - 3 }), grpc.status.OUT_OF_RANGE, COMPACTED);
    }
    await rangeEverywhere({ key: b('\0'), range_end: b('\0'), revision: rev - 2 }, 'at the physically compacted revision');
  });

  /** An auto-assigned lease id is each server's own: check it is set, and replace it. */
  function leaseIdTweak(o: Outcome): Outcome {
    if (!('ok' in o)) return o;
    assert.notEqual(o.ok.ID, '0', 'an id was assigned');
    return { ok: { ...o.ok, ID: '<id>' } };
  }
  /**
   * A remaining TTL in (ttl-3, ttl]: replaced (the two clusters do not grant at the same instant).
   * The attached keys sorted: etcd 3.4 lists them in Go map order (random from call to call).
   */
  function ttlTweak(ttl: number) {
    return (o: Outcome): Outcome => {
      if (!('ok' in o) || Number(o.ok.TTL) < 0) return o;
      const left = Number(o.ok.TTL);
      assert.ok(left > ttl - 3 && left <= ttl, `remaining TTL ${left} of ${ttl}`);
      return { ok: { ...o.ok, TTL: '<ttl>', keys: [...(o.ok.keys as string[])].sort() } };
    };
  }

  test('lease on a follower: grant, put with it, time-to-live and leases everywhere, revoke', async () => {
    await d.call('etcdserverpb.Lease', 'LeaseGrant', FOLLOWER1, { ID: 7001, TTL: 60 }, { label: 'with an id, on a follower' });
    const auto = await d.call('etcdserverpb.Lease', 'LeaseGrant', FOLLOWER2, { TTL: 30 }, { label: 'id assigned, on a follower', tweak: leaseIdTweak });
    const autoIds: Record<Side, string> = { etcd: String(okOf(auto).ID), concord: '' };
    expectError(await d.call('etcdserverpb.Lease', 'LeaseGrant', LEADER, { ID: 7001, TTL: 60 }), grpc.status.FAILED_PRECONDITION,
      'etcdserver: lease already exists');
    await d.kv('Put', FOLLOWER2, { key: b('l/a'), value: b('1'), lease: 7001 }, 'with the lease, on the other follower');
    await d.kv('Put', LEADER, { key: b('l/b'), value: b('2'), lease: 7001 }, 'with the lease, on the leader');
    await d.kv('Put', FOLLOWER1, { key: b('l/b'), ignore_lease: true, value: b('3'), prev_kv: true }, 'ignore_lease');
    await rangeEverywhere({ key: b('l/'), range_end: prefixEnd('l/') }, 'leased keys');
    for (const role of ROLES) {
      await d.call('etcdserverpb.Lease', 'LeaseTimeToLive', role, { ID: 7001, keys: true }, { label: 'with keys', tweak: ttlTweak(60) });
      await d.call('etcdserverpb.Lease', 'LeaseTimeToLive', role, { ID: 999 }, { label: 'unknown lease' });
    }
    // The auto-assigned id of concord's lease: from concord's leader's lessor.
    const leases = await Promise.all(SIDES.map((s) => d.callOne(s, d.member(s, LEADER), 'etcdserverpb.Lease', 'LeaseLeases', {})));
    const ids = (o: Outcome): string[] => (okOf(o).leases as { ID: string }[]).map((l) => l.ID).sort();
    autoIds.concord = ids(leases[1]!.outcome).find((id) => id !== '7001') ?? '';
    for (const role of ROLES) {
      await d.call('etcdserverpb.Lease', 'LeaseLeases', role, {}, {
        label: 'leases, ids sorted, the assigned one replaced',
        tweak: (o, side) => ('ok' in o ? { ok: { ...o.ok, leases: ids(o).map((id) => (id === autoIds[side] ? '<auto>' : id)).sort() } } : o),
      });
    }
    await d.call('etcdserverpb.Lease', 'LeaseRevoke', FOLLOWER2, { ID: 7001 }, { label: 'on a follower' });
    await rangeEverywhere({ key: b('l/'), range_end: prefixEnd('l/') }, 'after the revoke');
    for (const role of ROLES) {
      await d.call('etcdserverpb.Lease', 'LeaseTimeToLive', role, { ID: 7001, keys: true }, { label: 'revoked' });
    }
    expectError(await d.call('etcdserverpb.Lease', 'LeaseRevoke', FOLLOWER1, { ID: 7001 }), grpc.status.NOT_FOUND,
      'etcdserver: requested lease not found');
    // Revoke the assigned one by its own id on each side.
    const [re, rc] = await Promise.all(SIDES.map((s) =>
      d.callOne(s, d.member(s, FOLLOWER1), 'etcdserverpb.Lease', 'LeaseRevoke', { ID: Long.fromString(autoIds[s]) })));
    d.same('LeaseRevoke of the assigned lease on a follower', re!.outcome, rc!.outcome);
  });

  /** One LeaseKeepAlive round trip on member `i` of `side`: the answer, or the stream's error. */
  async function keepAliveOnce(side: Side, i: number, id: number): Promise<Outcome> {
    const c = d.client(side, i, 'etcdserverpb.Lease');
    const s = openStream(c, 'LeaseKeepAlive');
    try {
      s.call.write({ ID: id });
      const r = await s.reader.next(10_000);
      return { ok: plainMessage(r) };
    } catch (err) {
      const e = err as grpc.ServiceError;
      if (typeof e.code === 'number') return { error: { code: e.code, details: e.details } };
      throw err;
    } finally {
      s.call.cancel();
    }
  }

  test('lease keep-alive on the leader', async () => {
    // Granted on the leader: a grant acknowledged by a follower may not be applied on the leader
    // yet (see the next tests).
    await d.call('etcdserverpb.Lease', 'LeaseGrant', LEADER, { ID: 7002, TTL: 60 });
    const [e, c] = await Promise.all(SIDES.map((s) => keepAliveOnce(s, d.member(s, LEADER), 7002)));
    d.same('LeaseKeepAlive on the leader', e, c);
    assert.equal(okOf(e!).TTL, '60', 'etcd renews to the granted TTL');
    const [ue, uc] = await Promise.all(SIDES.map((s) => keepAliveOnce(s, d.member(s, LEADER), 4242)));
    d.same('LeaseKeepAlive of an unknown lease on the leader', ue, uc);
  });

  test('a lease granted through a follower is at once known to the leader (keep-alive, time-to-live)', async () => {
    const tries = 200;
    const misses = await Promise.all(SIDES.map(async (s) => {
      const ka = openStream(d.client(s, d.member(s, LEADER), 'etcdserverpb.Lease'), 'LeaseKeepAlive');
      let keepAlive = 0;
      let timeToLive = 0;
      try {
        for (let n = 0; n < tries; n++) {
          const id = 8000 + n;
          okOf((await d.callOne(s, d.member(s, n % 2 === 0 ? FOLLOWER1 : FOLLOWER2), 'etcdserverpb.Lease', 'LeaseGrant', { ID: id, TTL: 60 })).outcome);
          ka.call.write({ ID: id });
          const [r, t] = await Promise.all([ka.reader.next(10_000), d.callOne(s, d.member(s, LEADER), 'etcdserverpb.Lease', 'LeaseTimeToLive', { ID: id })]);
          if (String(r.TTL) !== '60') keepAlive++;
          if (okOf(t.outcome).TTL === '-1') timeToLive++;
        }
      } finally {
        ka.call.cancel();
      }
      return { keepAlive, timeToLive };
    }));
    if (process.env.CLUSTER_DIFF_VERBOSE) console.log(`lease grant on a follower, then on the leader: misses of ${tries} ${show(misses)}`);
    d.same(`lease granted on a follower, then keep-alive and time-to-live on the leader: misses of ${tries}`, { keepAlive: 0, timeToLive: 0 }, misses[1]);
  });

  test('lease keep-alive on a follower', async () => {
    for (const role of [FOLLOWER1, FOLLOWER2]) {
      const [e, c] = await Promise.all(SIDES.map((s) => keepAliveOnce(s, d.member(s, role), 7002)));
      d.same(`LeaseKeepAlive on follower role ${role}`, e, c);
      assert.equal(okOf(e!).TTL, '60', 'etcd: a follower forwards the renewal to the leader');
      const [ue, uc] = await Promise.all(SIDES.map((s) => keepAliveOnce(s, d.member(s, role), 4242)));
      d.same(`LeaseKeepAlive of an unknown lease on follower role ${role}`, ue, uc);
    }
  });

  /** Opens a watch on member `i` of `side`; returns the stream and the creation answer. */
  async function openWatch(side: Side, i: number, create: Record<string, unknown>) {
    const s = openStream(d.client(side, i, 'etcdserverpb.Watch'), 'Watch');
    s.call.write({ create_request: create });
    const created = plainMessage(await s.reader.next(10_000));
    return { s, created };
  }
  type WatchStream = Awaited<ReturnType<typeof openWatch>>['s'];

  /** Collects `n` events (flattened over responses) with their watch ids. */
  async function events(reader: StreamReader<unknown>, n: number): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    while (out.length < n) {
      const r = plainMessage(await reader.next(10_000));
      const evs = r.events as Record<string, unknown>[];
      if (evs.length === 0) out.push({ nonEvent: r });
      for (const e of evs) out.push({ watch_id: r.watch_id, ...e });
    }
    return out;
  }

  /** Watchers created during the test on the first follower, kept for the leader loss test. */
  const survivors: Record<Side, WatchStream | null> = { etcd: null, concord: null };

  test('watches on a follower see writes made on the other members (events and revisions)', async () => {
    // A linearizable read on the watcher's member first: its watch is created at the latest revision.
    const start = revOf(await d.kv('Range', FOLLOWER1, { key: b('nothing') })) + 1;
    const w = await Promise.all(SIDES.map((s) => openWatch(s, d.member(s, FOLLOWER1), { key: b('w/'), range_end: prefixEnd('w/'), prev_kv: true })));
    d.same('watch created on a follower', w[0]!.created, w[1]!.created);
    await d.kv('Put', FOLLOWER2, { key: b('w/1'), value: b('a') }, 'on the other follower');
    await d.kv('Put', LEADER, { key: b('w/2'), value: b('b') }, 'on the leader');
    await d.kv('Put', FOLLOWER1, { key: b('w/1'), value: b('c') }, 'on the watcher\'s member');
    await d.kv('DeleteRange', FOLLOWER2, { key: b('w/2') });
    await d.kv('Txn', LEADER, { success: [{ request_put: { key: b('w/3'), value: b('d') } }, { request_put: { key: b('w/4'), value: b('e') } }] });
    const got = await Promise.all(w.map((x) => events(x.s.reader as StreamReader<unknown>, 6)));
    d.same('events seen by the follower watcher', got[0], got[1]);
    assert.deepEqual(got[0]!.map((e) => Number((e.kv as { mod_revision: string }).mod_revision)), [start, start + 1, start + 2, start + 3, start + 4, start + 4]);

    // A second watcher on the same stream, from a past revision, on the follower: history replayed.
    for (const x of w) x.s.call.write({ create_request: { key: b('w/1'), start_revision: start, watch_id: 5 } });
    const replay = await Promise.all(w.map(async (x) => {
      const created = plainMessage(await x.s.reader.next(10_000));
      return { created, events: await events(x.s.reader as StreamReader<unknown>, 2) };
    }));
    d.same('watch from a past revision on a follower', replay[0], replay[1]);
    for (const x of w) x.s.call.write({ cancel_request: { watch_id: 5 } });
    const cancelled = await Promise.all(w.map(async (x) => plainMessage(await x.s.reader.next(10_000))));
    d.same('cancel on a follower', cancelled[0], cancelled[1]);

    // A watcher on the other follower from a compacted revision: etcd cancels it.
    await d.kv('Range', FOLLOWER2, { key: b('nothing') }, 'the second follower has applied every write');
    const old = await Promise.all(SIDES.map((s) => openWatch(s, d.member(s, FOLLOWER2), { key: b('k/0'), start_revision: 2 })));
    d.same('watch from a compacted revision on a follower', old[0]!.created, old[1]!.created);
    const cancel = await Promise.all(old.map(async (x) => plainMessage(await x.s.reader.next(10_000))));
    d.same('watch from a compacted revision on a follower: cancelled', cancel[0], cancel[1]);
    for (const x of old) x.s.call.cancel();
    survivors.etcd = w[0]!.s;
    survivors.concord = w[1]!.s;
  });

  // ------------------------------------------------------------------ members and status

  /** Side-specific values (URLs by port, ids in decimal and hex) replaced by placeholders naming the member. */
  function placeholders(side: Side): [RegExp, string][] {
    const out: [RegExp, string][] = [];
    for (const v of d.views[side]) {
      out.push([new RegExp(`${escape(v.clientUrl)}(?!\\d)`, 'g'), `<${v.name}-client>`]);
      out.push([new RegExp(`${escape(v.peerUrl)}(?!\\d)`, 'g'), `<${v.name}-peer>`]);
      out.push([new RegExp(`127\\.0\\.0\\.1:${v.clientUrl.split(':')[2]}(?!\\d)`, 'g'), `<${v.name}-client-addr>`]);
      out.push([new RegExp(`(?<![0-9a-z])${v.id.toString(10)}(?![0-9a-z])`, 'g'), `<${v.name}-id>`]);
      out.push([new RegExp(`(?<![0-9a-z])${v.id.toString(16)}(?![0-9a-z])`, 'g'), `<${v.name}-id>`]);
    }
    const cid = d.clusterIds[side];
    out.push([new RegExp(`(?<![0-9a-z])${cid.toString(10)}(?![0-9a-z])`, 'g'), '<cluster-id>']);
    out.push([new RegExp(`(?<![0-9a-z])${cid.toString(16)}(?![0-9a-z])`, 'g'), '<cluster-id>']);
    return out;
  }
  function escape(s: string): string {
    return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  function normText(side: Side, s: string): string {
    for (const [re, to] of placeholders(side)) s = s.replace(re, to);
    return s;
  }

  /** MemberList members in comparable form: ids checked against the flags' and replaced. */
  function members(side: Side, ok: Record<string, unknown>): Record<string, unknown>[] {
    const ms = ok.members as { ID: string; name: string; peerURLs: string[]; clientURLs: string[]; isLearner: boolean }[];
    const ids = ms.map((m) => BigInt(m.ID));
    assert.deepEqual(ids, [...ids].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)), `${side}: members in ascending id order`);
    return ms.map((m) => {
      const v = d.views[side].find((x) => x.id === BigInt(m.ID));
      assert.ok(v, `${side}: member id ${m.ID} is one the flags give (${show(m)})`);
      assert.equal(m.name, v.name, `${side}: the id of ${v.name}`);
      return JSON.parse(normText(side, JSON.stringify(m))) as Record<string, unknown>;
    }).sort((x, y) => String(x.name).localeCompare(String(y.name)));
  }

  /** Header ids of a raw answer: the cluster id and the answering member's, as the flags give them. */
  function checkHeader(side: Side, i: number, raw: unknown): void {
    const h = (raw as { header: { cluster_id: unknown; member_id: unknown } }).header;
    assert.equal(BigInt(String(h.cluster_id)), d.clusterIds[side], `${side}: header cluster_id`);
    assert.equal(BigInt(String(h.member_id)), d.views[side][i]!.id, `${side}: header member_id of m${i}`);
  }

  async function memberListEverywhere(label: string): Promise<void> {
    for (const role of d.roles.etcd.keys()) {
      const both = await Promise.all(SIDES.map(async (s) => {
        const i = d.member(s, role);
        const r = await d.callOne(s, i, 'etcdserverpb.Cluster', 'MemberList', {});
        const ok = okOf(r.outcome, `${s} MemberList`);
        checkHeader(s, i, r.raw);
        return { ...ok, members: members(s, ok) };
      }));
      d.same(`MemberList on role ${role} ${label}`, both[0], both[1]);
      assert.equal((both[0]!.members as unknown[]).length, 3);
    }
  }

  test('MemberList on each member: names, URLs, is_learner, etcd-derived ids', async () => {
    await memberListEverywhere('');
  });

  /** Status of every live member of each side: leader agreement, one term, is_learner false; comparable parts compared. */
  async function statusEverywhere(label: string): Promise<Record<Side, number>> {
    const terms: Record<Side, number> = { etcd: 0, concord: 0 };
    const indexes: Record<Side, string[]> = { etcd: [], concord: [] };
    // Every member has applied every write (its Status header revision is its own).
    for (const role of d.roles.etcd.keys()) await d.kv('Range', role, { key: b('nothing') }, `before Status ${label}`);
    for (const role of d.roles.etcd.keys()) {
      const both = await Promise.all(SIDES.map(async (s) => {
        const i = d.member(s, role);
        const r = await d.callOne(s, i, 'etcdserverpb.Maintenance', 'Status', {});
        const ok = okOf(r.outcome, `${s} Status`);
        checkHeader(s, i, r.raw);
        const raw = r.raw as { header: { raft_term: unknown }; leader: unknown; raftTerm: unknown };
        assert.equal(BigInt(String(raw.leader)), d.views[s][d.member(s, LEADER)]!.id, `${s} m${i}: the leader every member names`);
        const term = Number(String(raw.raftTerm));
        assert.equal(Number(String(raw.header.raft_term)), term, `${s} m${i}: header raft_term = raftTerm`);
        if (terms[s] === 0) terms[s] = term;
        assert.equal(term, terms[s], `${s} m${i}: one raft term across the members`);
        assert.equal(ok.isLearner, false);
        assert.ok(Number(ok.dbSize) > 0 && Number(ok.dbSizeInUse) > 0, `${s} m${i}: db sizes`);
        assert.ok(Number(ok.raftIndex) > 0 && Number(ok.raftAppliedIndex) > 0, `${s} m${i}: raft indexes`);
        indexes[s].push(`${ok.raftIndex}/${ok.raftAppliedIndex}`);
        const { dbSize: _a, dbSizeInUse: _b, raftIndex: _c, raftAppliedIndex: _d, raftTerm: _e, leader: _f, ...rest } = ok;
        return rest;
      }));
      d.same(`Status on role ${role} ${label}`, both[0], both[1]);
    }
    if (process.env.CLUSTER_DIFF_VERBOSE) console.log(`Status ${label}: terms ${show(terms)}, raft index/applied by role ${show(indexes)}`);
    return terms;
  }

  let termsBefore: Record<Side, number> = { etcd: 0, concord: 0 };
  test('Status on each member: one leader named by all, one raft term, not learners, same revision and version', async () => {
    termsBefore = await statusEverywhere('');
  });

  // ------------------------------------------------------------------ etcdctl

  const etcdctl = runEtcdctl;

  /** etcdctl on both sides (concurrently), through the members with `roles` (in that order). */
  async function ctlBoth(args: string[] | ((s: Side) => string[]), roles: readonly number[] = [LEADER]): Promise<Record<Side, CtlRun>> {
    const [e, c] = await Promise.all(SIDES.map((s) => {
      const urls = roles.map((r) => d.views[s][d.member(s, r)]!.clientUrl);
      return etcdctl(urls, typeof args === 'function' ? args(s) : args);
    }));
    return { etcd: e!, concord: c! };
  }

  function parseTable(out: string): { header: string[]; rows: string[][] } {
    const lines = out.split('\n').filter((l) => l.startsWith('|'));
    const cells = lines.map((l) => l.slice(1, -1).split('|').map((c) => c.trim()));
    assert.ok(cells.length >= 1, `a table: ${out}`);
    return { header: cells[0]!, rows: cells.slice(1) };
  }

  /** etcdctl prints uint64 ids as JSON numbers: quote them before JSON.parse loses their bits. */
  function parseJson(text: string): unknown {
    return JSON.parse(text.replace(/("(?:ID|cluster_id|member_id|leader)"):(\d+)/g, '$1:"$2"'));
  }

  /** etcdctl JSON output parsed (ids kept exact) with side-specific values replaced by placeholders. */
  function jsonNorm(side: Side, text: string): unknown {
    return JSON.parse(normText(side, JSON.stringify(parseJson(text))));
  }

  /** etcdctl's log lines on stderr: timestamps, client ids and the endpoint that answered replaced. */
  function stderrNorm(side: Side, text: string): string {
    return normText(side, text)
      .replace(/"ts":"[^"]*"/g, '"ts":"<ts>"')
      .replace(/client-[0-9a-f-]{36}\/<m\d-client-addr>/g, 'client-<uuid>/<endpoint>');
  }

  /** The member names of rows (by their placeholder in column `col`), to check the row order is ascending id. */
  function checkIdOrder(side: Side, names: string[]): void {
    const ids = names.map((n) => d.views[side].find((v) => `<${v.name}-id>` === n || `<${v.name}-client>` === n)!.id);
    assert.deepEqual(ids, [...ids].sort((x, y) => (x < y ? -1 : 1)), `${side}: rows in ascending member id order (${names.join(' ')})`);
  }

  test('etcdctl member list: simple, -w table, -w json', async () => {
    const simple = await ctlBoth(['member', 'list']);
    const rows = (side: Side) => {
      assert.equal(simple[side].code, 0, simple[side].stderr);
      const lines = normText(side, simple[side].stdout).split('\n').filter((l) => l !== '');
      checkIdOrder(side, lines.map((l) => l.split(', ')[0]!));
      return lines.sort();
    };
    d.same('etcdctl member list', { rows: rows('etcd'), stderr: simple.etcd.stderr }, { rows: rows('concord'), stderr: simple.concord.stderr });
    assert.deepEqual(rows('etcd'), [0, 1, 2].map((i) => `<m${i}-id>, started, m${i}, <m${i}-peer>, <m${i}-client>, false`));

    const table = await ctlBoth(['member', 'list', '-w', 'table']);
    const cells = (side: Side) => {
      assert.equal(table[side].code, 0, table[side].stderr);
      const t = parseTable(normText(side, table[side].stdout));
      checkIdOrder(side, t.rows.map((r) => r[0]!));
      return { header: t.header, rows: t.rows.sort((x, y) => x[2]!.localeCompare(y[2]!)) };
    };
    d.same('etcdctl member list -w table', cells('etcd'), cells('concord'));

    for (const role of ROLES) {
      const json = await ctlBoth(['member', 'list', '-w', 'json'], [role]);
      const doc = (side: Side) => {
        assert.equal(json[side].code, 0, json[side].stderr);
        const o = jsonNorm(side, json[side].stdout) as { header: Record<string, unknown>; members: { ID: string; name: string }[] };
        assert.equal(o.header.member_id, `<m${d.member(side, role)}-id>`, `${side}: answered by the member asked`);
        assert.equal(o.header.cluster_id, '<cluster-id>');
        checkIdOrder(side, o.members.map((m) => m.ID));
        o.members.sort((x, y) => x.name.localeCompare(y.name));
        return { ...o, header: { ...o.header, member_id: '<asked>', raft_term: '<term>' } };
      };
      d.same(`etcdctl member list -w json on role ${role}`, doc('etcd'), doc('concord'));
    }
  });

  /**
   * `endpoint status --cluster` rows (ENDPOINT, ID, VERSION, DB SIZE, IS LEADER, IS LEARNER, RAFT
   * TERM, RAFT INDEX, RAFT APPLIED INDEX, ERRORS) in comparable form: the ID is the endpoint's
   * member's, db sizes and raft indexes are checked then replaced, one term per side; each row is
   * named by its member's role (the leader is not the same member index on both sides).
   */
  function statusRows(side: Side, rows: string[][]): string[][] {
    checkIdOrder(side, rows.map((r) => r[1]!));
    const terms = new Set(rows.map((r) => r[6]));
    assert.equal(terms.size, 1, `${side}: one raft term in ${show(rows)}`);
    return rows.map((r) => {
      assert.equal(r.length, 10, `${side}: ${show(r)}`);
      const name = /^<(m\d)-client>$/.exec(r[0]!)?.[1];
      assert.ok(name !== undefined, `${side}: endpoint ${r[0]}`);
      assert.equal(r[1], `<${name}-id>`, `${side}: the id of ${name}`);
      assert.match(r[3]!, /^\d+(\.\d+)? (B|kB|MB|GB)$/, `${side} db size`);
      assert.match(r[6]!, /^[1-9]\d*$/, `${side} raft term`);
      assert.match(r[7]!, /^[1-9]\d*$/, `${side} raft index`);
      assert.match(r[8]!, /^[1-9]\d*$/, `${side} raft applied index`);
      const role = d.roles[side].indexOf(Number(name.slice(1)));
      return [`role ${role}`, r[2]!, '<size>', r[4]!, r[5]!, '<term>', '<index>', '<index>', r[9]!];
    }).sort((x, y) => x[0]!.localeCompare(y[0]!));
  }

  test('etcdctl endpoint status --cluster: simple, -w table, -w json', async () => {
    const simple = await ctlBoth(['endpoint', 'status', '--cluster']);
    const lines = (side: Side) => {
      assert.equal(simple[side].code, 0, simple[side].stderr);
      const rows = normText(side, simple[side].stdout).split('\n').filter((l) => l !== '').map((l) => l.split(', '));
      return { rows: statusRows(side, rows), stderr: simple[side].stderr };
    };
    const se = lines('etcd');
    d.same('etcdctl endpoint status --cluster (rows by role)', se, lines('concord'));
    assert.deepEqual(se.rows.map((r) => [r[0], r[3]]), [['role 0', 'true'], ['role 1', 'false'], ['role 2', 'false']]);

    const table = await ctlBoth(['endpoint', 'status', '--cluster', '-w', 'table']);
    const cells = (side: Side) => {
      assert.equal(table[side].code, 0, table[side].stderr);
      const t = parseTable(normText(side, table[side].stdout));
      return { header: t.header, rows: statusRows(side, t.rows) };
    };
    const te = cells('etcd');
    d.same('etcdctl endpoint status --cluster -w table (rows by role)', te, cells('concord'));
    assert.deepEqual(te.header, ['ENDPOINT', 'ID', 'VERSION', 'DB SIZE', 'IS LEADER', 'IS LEARNER', 'RAFT TERM', 'RAFT INDEX', 'RAFT APPLIED INDEX', 'ERRORS']);

    const json = await ctlBoth(['endpoint', 'status', '--cluster', '-w', 'json']);
    const doc = (side: Side) => {
      assert.equal(json[side].code, 0, json[side].stderr);
      const arr = jsonNorm(side, json[side].stdout) as { Endpoint: string; Status: Record<string, unknown> & { header: Record<string, unknown> } }[];
      checkIdOrder(side, arr.map((x) => x.Status.header.member_id as string));
      const terms = new Set(arr.flatMap((x) => [x.Status.raftTerm, x.Status.header.raft_term]));
      assert.equal(terms.size, 1, `${side}: one raft term`);
      return arr.map((x) => {
        const st = x.Status;
        for (const k of ['dbSize', 'dbSizeInUse', 'raftIndex', 'raftAppliedIndex']) assert.ok(Number(st[k]) > 0, `${side} ${k}`);
        assert.equal(st.leader, `<m${d.member(side, LEADER)}-id>`, `${side}: the leader`);
        assert.equal(st.header.member_id, x.Endpoint.replace('-client>', '-id>'), `${side}: answered by ${x.Endpoint}`);
        return {
          Endpoint: x.Endpoint, role: d.roles[side].indexOf(Number(x.Endpoint.slice(2, 3))),
          Status: { ...st, dbSize: '<n>', dbSizeInUse: '<n>', raftIndex: '<n>', raftAppliedIndex: '<n>', raftTerm: '<term>', leader: '<leader>',
            header: { ...st.header, raft_term: '<term>' } },
        };
      }).sort((x, y) => x.role - y.role).map(({ Endpoint: _e, ...rest }) => ({ ...rest, Status: { ...rest.Status, header: { ...rest.Status.header, member_id: '<member>' } } }));
    };
    d.same('etcdctl endpoint status --cluster -w json (by role)', doc('etcd'), doc('concord'));
  });

  test('etcdctl endpoint health --cluster: simple, -w json', async () => {
    const simple = await ctlBoth(['endpoint', 'health', '--cluster']);
    const lines = (side: Side) => ({
      code: simple[side].code,
      stdout: simple[side].stdout,
      stderr: normText(side, simple[side].stderr).replace(/took = [\d.]+[µnm]?s/g, 'took = <d>').split('\n').filter((l) => l !== '').sort(),
    });
    const he = lines('etcd');
    d.same('etcdctl endpoint health --cluster', he, lines('concord'));
    assert.deepEqual(he.stderr, [0, 1, 2].map((i) => `<m${i}-client> is healthy: successfully committed proposal: took = <d>`));
    const json = await ctlBoth(['endpoint', 'health', '--cluster', '-w', 'json']);
    const doc = (side: Side) => {
      assert.equal(json[side].code, 0, json[side].stderr);
      const arr = JSON.parse(normText(side, json[side].stdout)) as { endpoint: string; took: string }[];
      return arr.map((x) => ({ ...x, took: '<d>' })).sort((x, y) => x.endpoint.localeCompare(y.endpoint));
    };
    d.same('etcdctl endpoint health --cluster -w json', doc('etcd'), doc('concord'));
  });

  test('etcdctl put/get/del through --endpoints listing the three members', async () => {
    const all = [LEADER, FOLLOWER1, FOLLOWER2];
    const run = async (args: string[]) => {
      const r = await ctlBoth(args, all);
      const norm = (side: Side) => ({
        code: r[side].code,
        stderr: stderrNorm(side, r[side].stderr),
        stdout: normText(side, r[side].stdout)
          .replace(/"member_id":<m\d-id>/g, '"member_id":<member>')
          .replace(/"raft_term":\d+/g, '"raft_term":<term>'),
      });
      d.same(`etcdctl ${args.join(' ')}`, norm('etcd'), norm('concord'));
      return r.etcd;
    };
    for (let i = 0; i < 6; i++) assert.equal((await run(['put', `c/${i}`, `v${i}`])).stdout, 'OK\n');
    await run(['put', 'c/0', 'new', '--prev-kv']);
    await run(['get', 'c/', '--prefix']);
    await run(['get', 'c/', '--prefix', '-w', 'json']);
    await run(['get', 'c/', '--prefix', '--consistency=s', '-w', 'json', '--order=DESCEND', '--sort-by=MODIFY']);
    await run(['del', 'c/1', '--prev-kv']);
    await run(['get', 'c/0', '--rev', '3']);
    await run(['get', '', '--from-key', '--keys-only']);
    await run(['compaction', '1']);
  });

  /** Member names in `text` (`<mI-...>`) replaced by their roles in `roles` (a member not in `roles`, a dead one, is role -1). */
  function byRole(text: string, roles: number[]): string {
    return text.replace(/<m(\d)-/g, (_m, i: string) => `<role ${roles.indexOf(Number(i))}-`);
  }

  test('MoveLeader: refused by a follower and for an unknown member, then to a follower (gRPC), and back (etcdctl move-leader)', async () => {
    const idOf = (s: Side, i: number) => Long.fromString(d.views[s][i]!.id.toString(), true);
    const original = { etcd: d.member('etcd', LEADER), concord: d.member('concord', LEADER) };
    const target = { etcd: d.member('etcd', FOLLOWER2), concord: d.member('concord', FOLLOWER2) };
    expectError(await d.call('etcdserverpb.Maintenance', 'MoveLeader', FOLLOWER1, { targetID: 0 }, { label: 'to a follower' }),
      grpc.status.FAILED_PRECONDITION, 'etcdserver: not leader');
    await d.call('etcdserverpb.Maintenance', 'MoveLeader', LEADER, { targetID: Long.fromString('12345', true) }, { label: 'to an unknown member' });
    const moved = await Promise.all(SIDES.map((s) =>
      d.callOne(s, d.member(s, LEADER), 'etcdserverpb.Maintenance', 'MoveLeader', { targetID: idOf(s, target[s]) })));
    d.same('MoveLeader to the second follower', moved[0]!.outcome, moved[1]!.outcome);
    okOf(moved[0]!.outcome);
    const rolesBefore = { etcd: d.roles.etcd, concord: d.roles.concord };
    await d.refreshRoles();
    for (const s of SIDES) assert.equal(d.member(s, LEADER), target[s], `${s}: the transferee leads`);
    await d.kv('Put', FOLLOWER1, { key: b('moved'), value: b('1') }, 'after the transfer');

    // Back to the original leader, with etcdctl (it finds the leader among the endpoints).
    const r = await ctlBoth((s) => ['move-leader', d.views[s][original[s]]!.id.toString(16)], [LEADER, FOLLOWER1, FOLLOWER2]);
    const out = (side: Side) => ({
      code: r[side].code,
      stdout: byRole(normText(side, r[side].stdout), rolesBefore[side]),
      stderr: r[side].stderr,
    });
    const oe = out('etcd');
    d.same('etcdctl move-leader (members by their role before the first transfer)', oe, out('concord'));
    assert.equal(oe.stdout, 'Leadership transferred from <role 2-id> to <role 0-id>\n');
    await d.refreshRoles();
    for (const s of SIDES) assert.equal(d.member(s, LEADER), original[s], `${s}: the original leader leads again`);
    await d.kv('Put', FOLLOWER2, { key: b('moved'), value: b('2'), prev_kv: true }, 'after the transfer back');
    await statusEverywhere('after the transfers');
  });

  // ------------------------------------------------------------------ leader loss

  test('kill -9 the leader: a new leader, the same answers to the same requests afterwards', async () => {
    const old = { etcd: d.member('etcd', LEADER), concord: d.member('concord', LEADER) };
    const rev = revOf(await d.kv('Range', FOLLOWER1, { key: b('nothing') }));
    await Promise.all([d.etcd.kill(old.etcd), d.concord.kill(old.concord)]);
    await d.refreshRoles(20_000);
    for (const s of SIDES) {
      assert.notEqual(d.member(s, LEADER), old[s], `${s}: another leader`);
      assert.equal(d.roles[s].length, 2, `${s}: two live members`);
    }
    assert.equal(revOf(await d.kv('Range', LEADER, { key: b('nothing') })), rev, 'no write lost, none added');

    await d.kv('Put', LEADER, { key: b('after/1'), value: b('x'), prev_kv: true }, 'on the new leader');
    await d.kv('Put', FOLLOWER1, { key: b('after/2'), value: b('y') }, 'on the surviving follower');
    await d.kv('Put', FOLLOWER1, { key: b('w/after'), value: b('z') }, 'seen by the watcher made before the loss');
    await d.kv('Txn', FOLLOWER1, {
      compare: [{ key: b('after/1'), target: T.VERSION, result: R.EQUAL, version: 1 }],
      success: [{ request_put: { key: b('after/1'), value: b('x2'), prev_kv: true } }, { request_range: { key: b('after/'), range_end: prefixEnd('after/') } }],
    });
    await d.kv('DeleteRange', LEADER, { key: b('c/'), range_end: prefixEnd('c/'), prev_kv: true });
    await rangeEverywhere({ key: b('\0'), range_end: b('\0') }, 'after the leader loss');
    await d.call('etcdserverpb.Lease', 'LeaseGrant', FOLLOWER1, { ID: 7003, TTL: 60 }, { label: 'after the leader loss' });
    await d.kv('Put', LEADER, { key: b('after/l'), value: b('l'), lease: 7003 });
    await d.call('etcdserverpb.Lease', 'LeaseRevoke', FOLLOWER1, { ID: 7003 });
    await rangeEverywhere({ key: b('after/'), range_end: prefixEnd('after/') }, 'after the revoke');

    // The watcher created on a follower before the loss goes on (if its member survived: it
    // was a follower, so it did), with the same revisions.
    const seen = await Promise.all(SIDES.map((s) => events(survivors[s]!.reader as StreamReader<unknown>, 1)));
    d.same('the watcher made before the leader loss', seen[0], seen[1]);
    for (const s of SIDES) survivors[s]!.call.cancel();

    // Membership is unchanged (the dead member is still a member); the live ones agree on the
    // new leader and a higher term.
    await memberListEverywhere('after the leader loss');
    const terms = await statusEverywhere('after the leader loss');
    for (const s of SIDES) assert.ok(terms[s] > termsBefore[s], `${s}: term ${terms[s]} > ${termsBefore[s]}`);

    // etcdctl --cluster with a dead member: the live ones answer, the dead one is reported.
    const timeouts = ['--dial-timeout=1s', '--command-timeout=2s'];
    const [status, health] = await Promise.all([
      ctlBoth(['endpoint', 'status', '--cluster', '-w', 'table', ...timeouts], [LEADER, FOLLOWER1]),
      ctlBoth(['endpoint', 'health', '--cluster', ...timeouts], [LEADER, FOLLOWER1]),
    ]);
    const statusOut = (side: Side) => {
      const t = parseTable(normText(side, status[side].stdout));
      return { code: status[side].code, stderr: byRole(stderrNorm(side, status[side].stderr), d.roles[side]), header: t.header, rows: statusRows(side, t.rows) };
    };
    const se = statusOut('etcd');
    d.same('etcdctl endpoint status --cluster with a dead member', se, statusOut('concord'));
    assert.equal(se.rows.length, 2, 'etcd: the two live members');
    const healthOut = (side: Side) => ({
      code: health[side].code,
      stdout: health[side].stdout,
      stderr: byRole(stderrNorm(side, health[side].stderr), d.roles[side]).replace(/took = [\d.]+[µnm]?s/g, 'took = <d>')
        .split('\n').filter((l) => l !== '').sort(),
    });
    d.same('etcdctl endpoint health --cluster with a dead member (members by role, the dead one is role -1)', healthOut('etcd'), healthOut('concord'));
  });

  /** The last member of each side (after the quorum loss) and the watches with hasleader opened on it. */
  const last: Record<Side, number> = { etcd: -1, concord: -1 };
  const leaderWatches: ReturnType<typeof openStream<'etcdserverpb.Watch', 'Watch'>>[] = [];
  const hasLeader = (): grpc.Metadata => {
    const md = new grpc.Metadata();
    md.set('hasleader', 'true');
    return md;
  };
  /** Runs f on both sides concurrently; the outcomes and how long each took. */
  async function timed(label: string, f: (s: Side) => Promise<Outcome>): Promise<Outcome[]> {
    const r = await Promise.all(SIDES.map(async (s) => {
      const t0 = Date.now();
      const o = await f(s);
      return { o, ms: Date.now() - t0 };
    }));
    if (process.env.CLUSTER_DIFF_VERBOSE) console.log(`${label}: ${r.map((x, i) => `${SIDES[i]} ${x.ms} ms ${JSON.stringify(x.o)}`).join(' | ')}`);
    return r.map((x) => x.o);
  }

  test('quorum lost: kill -9 the new leader too; the last member answers Status and serializable reads as etcd does', async () => {
    for (const s of SIDES) last[s] = d.member(s, FOLLOWER1);
    // A watch that requires a leader (clientv3.WithRequireLeader), opened while there is one.
    for (const s of SIDES) {
      const w = openStream(d.client(s, last[s], 'etcdserverpb.Watch'), 'Watch', hasLeader());
      w.call.write({ create_request: { key: b('w/'), range_end: prefixEnd('w/') } });
      leaderWatches.push(w);
    }
    const created = await Promise.all(leaderWatches.map(async (w) => plainMessage(await w.reader.next(10_000))));
    d.same('a watch with hasleader, created while there is a leader', created[0], created[1]);
    await Promise.all([d.etcd.kill(d.member('etcd', LEADER)), d.concord.kill(d.member('concord', LEADER))]);

    // Once the last member knows it has no leader (Status leader 0)...
    const leaderless = await timed('Status until leader 0', async (s) => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const r = await d.callOne(s, last[s], 'etcdserverpb.Maintenance', 'Status', {});
        const ok = okOf(r.outcome, `${s} Status`);
        if (ok.leader === '0' || Date.now() > deadline) return { ok: { leader: ok.leader, isLearner: ok.isLearner, header: ok.header } };
        await new Promise((res) => setTimeout(res, 100));
      }
    });
    d.same('Status on the last member once leaderless', leaderless[0], leaderless[1]);
    assert.equal(okOf(leaderless[0]!).leader, '0', 'etcd: no leader');

    const ser = await timed('serializable Range on the last member', (s) =>
      d.callOne(s, last[s], 'etcdserverpb.KV', 'Range', { key: b('after/'), range_end: prefixEnd('after/'), serializable: true }).then((r) => r.outcome));
    d.same('serializable Range on the last member', ser[0], ser[1]);
    okOf(ser[0]!);
  });

  test('quorum lost: a serializable Range with hasleader metadata on the last member', async () => {
    const r = await timed('serializable Range with hasleader on the last member', (s) => new Promise<Outcome>((resolve) => {
      d.client(s, last[s], 'etcdserverpb.KV').Range({ key: b('after/1'), serializable: true }, hasLeader(), { deadline: Date.now() + 10_000 },
        (err, res) => resolve(err ? { error: { code: err.code, details: err.details } } : { ok: plainMessage(res) }));
    }));
    d.same('serializable Range with hasleader metadata on the last member', r[0], r[1]);
    expectError(r[0]!, grpc.status.UNAVAILABLE, 'etcdserver: no leader');
  });

  test('quorum lost: a Put on the last member', async () => {
    const put = await timed('Put on the last member', (s) =>
      d.callOne(s, last[s], 'etcdserverpb.KV', 'Put', { key: b('q/1'), value: b('x') }, 30_000).then((r) => r.outcome));
    d.same('Put on the last member', put[0], put[1]);
  });

  test('quorum lost: lease keep-alive and time-to-live on the last member (no leader to ask)', async () => {
    const ka = await timed('LeaseKeepAlive on the last member', (s) => keepAliveOnce(s, last[s], 7002));
    d.same('LeaseKeepAlive on the last member', ka[0], ka[1]);
    expectError(ka[0]!, grpc.status.UNAVAILABLE, 'etcdserver: no leader');
    const ttl = await timed('LeaseTimeToLive on the last member', (s) =>
      d.callOne(s, last[s], 'etcdserverpb.Lease', 'LeaseTimeToLive', { ID: 7002 }, 30_000).then((r) => r.outcome));
    d.same('LeaseTimeToLive on the last member', ttl[0], ttl[1]);
  });

  test('quorum lost: a linearizable Range on the last member', async () => {
    const lin = await timed('linearizable Range on the last member', (s) =>
      d.callOne(s, last[s], 'etcdserverpb.KV', 'Range', { key: b('after/1') }, 30_000).then((r) => r.outcome));
    d.same('linearizable Range on the last member', lin[0], lin[1]);
  });

  test('quorum lost: the watch with hasleader on the last member is cancelled', async () => {
    const ends = await timed('the hasleader watch', async (s) => {
      const w = leaderWatches[SIDES.indexOf(s)]!;
      return w.reader.next(15_000).then(
        (m) => ({ ok: plainMessage(m) }),
        (e: grpc.ServiceError) => ({ error: { code: e.code, details: e.details } }));
    });
    d.same('the hasleader watch on the last member', ends[0], ends[1]);
  });

  after(() => {
    for (const w of leaderWatches) w.call.cancel();
  });
});
