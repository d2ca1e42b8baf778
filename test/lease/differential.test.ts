// Differential tests of the Lease API (issue #5): the same requests go to a fresh real etcd 3.4
// and a fresh concord, and every answer must be equal — header revision included, errors by code
// and message (see test/helpers/lease_diff.ts for the normal form: cluster/member id and raft term
// only checked for being set, server-chosen lease IDs by shape, remaining TTLs within ±1 s, map
// orders sorted). Every case says in a comment what etcd does and checks etcd's own answer, so a
// case cannot silently stop testing what it claims.
//
// The tests of one describe block share one pair of servers and run in order (revisions must keep
// matching from one test to the next).
//
// LEASE_DIFF_AGAINST=etcd runs every comparison against a second real etcd (harness check).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { etcdserverpb } from '../../src/gen/proto';
import { etcdSkipReason } from '../helpers/etcd';
import { long, prefixEnd } from '../helpers/grpc_client';
import { b, expectError, LeasePair, normalizeResponse, okOf, revOf, type Outcome, type Side } from '../helpers/lease_diff';

const CompareTarget = etcdserverpb.Compare.CompareTarget;
const CompareResult = etcdserverpb.Compare.CompareResult;

/** etcd's minimum lease TTL with the default --heartbeat-interval 100 / --election-timeout 1000:
 * ceil(((3 * electionTicks) / 2) * heartbeat) = ceil(15 * 100 ms) = 2 s. */
const MIN_TTL = 2;
/** etcd's lease.MaxLeaseTTL. */
const MAX_TTL = 9_000_000_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const ttlOf = (o: Outcome): number => Number(okOf(o).TTL);
type Ev = { type: string; kv: { key: string; mod_revision: string; lease: string }; prev_kv: { key: string; lease: string } | null };
/** 'DELETE k@rev' per event of a normalized WatchResponse. */
const evs = (r: Record<string, unknown>): string[] =>
  (r.events as Ev[]).map((e) => `${e.type} ${e.kv.key}@${e.kv.mod_revision}${e.prev_kv ? ` prev-lease=${e.prev_kv.lease}` : ''}`);

describe('Lease differential vs etcd: grant, time-to-live, leases, revoke', { skip: etcdSkipReason() }, () => {
  let d: LeasePair;
  before(async () => {
    d = await LeasePair.start();
  });
  after(async () => {
    await d?.stop();
  });

  test('LeaseGrant with client-chosen IDs: TTL raised to the minimum, too large, duplicates', async () => {
    // etcd: a grant writes no key, so the header revision stays 1; the answer echoes ID and TTL.
    const g = okOf(await d.lease('LeaseGrant', { ID: 100, TTL: 10 }));
    assert.deepEqual([g.ID, g.TTL, g.error, revOf(g)], ['100', '10', '', 1]);
    // etcd: TTL below the minimum (2 s with the default election timeout/heartbeat) is raised to it.
    assert.equal(ttlOf(await d.lease('LeaseGrant', { ID: 101, TTL: 1 }, { label: 'TTL 1' })), MIN_TTL);
    assert.equal(ttlOf(await d.lease('LeaseGrant', { ID: 102, TTL: 2 }, { label: 'TTL 2' })), 2);
    assert.equal(ttlOf(await d.lease('LeaseGrant', { ID: 103, TTL: 3 }, { label: 'TTL 3' })), 3);
    // etcd: TTL 0 and negative TTLs are raised to the minimum too (no error).
    assert.equal(ttlOf(await d.lease('LeaseGrant', { ID: 104, TTL: 0 }, { label: 'TTL 0' })), MIN_TTL);
    assert.equal(ttlOf(await d.lease('LeaseGrant', { ID: 105, TTL: -5 }, { label: 'TTL -5' })), MIN_TTL);
    // etcd: TTL = MaxLeaseTTL (9000000000 s) is accepted, one more is OUT_OF_RANGE.
    assert.equal(ttlOf(await d.lease('LeaseGrant', { ID: 106, TTL: MAX_TTL }, { label: 'max TTL' })), MAX_TTL);
    expectError(await d.lease('LeaseGrant', { ID: 107, TTL: MAX_TTL + 1 }, { label: 'max TTL + 1' }),
      grpc.status.OUT_OF_RANGE, 'etcdserver: too large lease TTL');
    // etcd: an ID in use is FAILED_PRECONDITION, whatever the TTL.
    expectError(await d.lease('LeaseGrant', { ID: 100, TTL: 10 }, { label: 'duplicate' }),
      grpc.status.FAILED_PRECONDITION, 'etcdserver: lease already exists');
    expectError(await d.lease('LeaseGrant', { ID: 101, TTL: 50 }, { label: 'duplicate, other TTL' }),
      grpc.status.FAILED_PRECONDITION, 'etcdserver: lease already exists');
    // etcd: the TTL limit is checked before the log (so before the duplicate check).
    expectError(await d.lease('LeaseGrant', { ID: 100, TTL: MAX_TTL + 1 }, { label: 'duplicate and too large' }),
      grpc.status.OUT_OF_RANGE, 'etcdserver: too large lease TTL');
    // etcd 3.4: any non-zero ID is taken as given, negative and the largest int64 included.
    assert.equal(okOf(await d.lease('LeaseGrant', { ID: -5, TTL: 10 }, { label: 'negative ID' })).ID, '-5');
    assert.equal(okOf(await d.lease('LeaseGrant', { ID: long('9223372036854775807'), TTL: 10 }, { label: 'max int64 ID' })).ID,
      '9223372036854775807');
    // etcd: TimeToLive shows the raised TTL as granted.
    for (const ID of [101, 104, 105]) assert.equal(okOf(await d.lease('LeaseTimeToLive', { ID, keys: true })).grantedTTL, String(MIN_TTL));
    // The short leases go now: expiring during later steps would race between the two servers.
    for (const ID of [101, 102, 103, 104, 105]) await d.lease('LeaseRevoke', { ID }, { label: 'short lease' });
    // etcd: nothing above wrote a key.
    assert.equal(revOf(await d.kv('Range', { key: b('any') })), 1);
  });

  test('LeaseGrant with ID 0: the server chooses a positive ID (compared by shape)', async () => {
    // etcd: ID = request-id generator & (2^63 - 1): positive, new; TTL as asked; revision 1.
    const g = okOf(await d.lease('LeaseGrant', { ID: 0, TTL: 30 }, { save: 'auto1' }));
    assert.deepEqual([g.ID, g.TTL], ['<auto1>', '30']);
    okOf(await d.lease('LeaseGrant', { TTL: 40 }, { save: 'auto2', label: 'ID omitted' }));
    const t = okOf(await d.lease('LeaseTimeToLive', (s: Side) => ({ ID: s.id('auto1') })));
    assert.deepEqual([t.ID, t.grantedTTL], ['<auto1>', '30']);
    await d.lease('LeaseRevoke', (s: Side) => ({ ID: s.id('auto2') }));
  });

  test('LeaseTimeToLive: remaining and granted TTL, keys', async () => {
    // etcd: TTL is the remaining time truncated to seconds (just after a grant: granted - 1),
    // grantedTTL the TTL granted (after raising to the minimum); keys only when asked.
    const t = okOf(await d.lease('LeaseTimeToLive', { ID: 100 }));
    assert.deepEqual([t.ID, t.grantedTTL, t.keys, revOf(t)], ['100', '10', [], 1]);
    assert.ok(Number(t.TTL) >= 8 && Number(t.TTL) <= 10, `remaining ${t.TTL}`);
    assert.equal(okOf(await d.lease('LeaseTimeToLive', { ID: 106 })).grantedTTL, String(MAX_TTL));
    await d.lease('LeaseTimeToLive', { ID: -5 });
    await d.lease('LeaseTimeToLive', { ID: long('9223372036854775807'), keys: true });
    // With keys: attach three (out of key order), ask with and without keys.
    await d.lease('LeaseGrant', { ID: 200, TTL: 60 });
    for (const k of ['t/b', 't/c', 't/a']) await d.kv('Put', { key: b(k), value: b('v'), lease: 200 });
    const withKeys = okOf(await d.lease('LeaseTimeToLive', { ID: 200, keys: true }));
    assert.deepEqual([withKeys.keys, revOf(withKeys)], [['t/a', 't/b', 't/c'], 4]);
    assert.deepEqual(okOf(await d.lease('LeaseTimeToLive', { ID: 200, keys: false })).keys, []);
  });

  test('LeaseTimeToLive of an unknown lease: TTL -1 and a full header, no error', async () => {
    // etcd: no error: TTL -1, grantedTTL 0, the ID echoed, and a full header (current revision,
    // cluster and member id, raft term: v3rpc fills the header of its own TTL -1 answer).
    for (const ID of [999, 0, 107]) {
      const u = okOf(await d.lease('LeaseTimeToLive', { ID, keys: true }, { label: `unknown ${ID}` }));
      assert.deepEqual(u, {
        header: { cluster_id: 'set', member_id: 'set', revision: '4', raft_term: 'set' },
        ID: String(ID), TTL: '-1', grantedTTL: '0', keys: [],
      });
    }
  });

  test('LeaseLeases: every lease, in any order', async () => {
    // etcd: the IDs in map order (compared sorted); header at the current revision.
    const l = okOf(await d.lease('LeaseLeases', {}));
    assert.deepEqual((l.leases as { ID: string }[]).map((x) => x.ID),
      ['-5', '100', '106', '200', '9223372036854775807', '<auto1>']);
    assert.equal(revOf(l), 4);
  });

  test('LeaseRevoke: unknown, no keys, one key, many keys (one revision, DELETEs in key order)', async () => {
    const w = await d.watch({ key: b('r/'), range_end: prefixEnd('r/'), prev_kv: true });
    // etcd: unknown lease (and ID 0) is NOT_FOUND.
    expectError(await d.lease('LeaseRevoke', { ID: 999 }), grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    expectError(await d.lease('LeaseRevoke', { ID: 0 }), grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    // etcd: a lease without keys: no revision, header at the current one.
    const rev0 = revOf(await d.kv('Range', { key: b('r/') }));
    assert.equal(revOf(await d.lease('LeaseRevoke', { ID: 106 })), rev0);
    expectError(await d.lease('LeaseRevoke', { ID: 106 }, { label: 'again' }), grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    // etcd: the ID of a revoked lease can be granted again.
    await d.lease('LeaseGrant', { ID: 106, TTL: 20 }, { label: 'ID reused' });
    await d.lease('LeaseRevoke', { ID: 106 }, { label: 'reused' });

    // One key: one revision, one DELETE event.
    await d.lease('LeaseGrant', { ID: 300, TTL: 60 });
    await d.kv('Put', { key: b('r/one'), value: b('1'), lease: 300 });
    await d.kv('Put', { key: b('r/other'), value: b('no lease') });
    await w.drain('puts');
    const r1 = revOf(await d.lease('LeaseRevoke', { ID: 300 }));
    assert.equal(r1, rev0 + 3);
    const [one] = await w.drain('revoke, one key');
    assert.deepEqual(evs(one!), [`DELETE r/one@${r1} prev-lease=300`]);

    // Many keys, written out of key order, some in a txn: one revision, one response whose events
    // are in key order; keys of other leases or none survive.
    await d.lease('LeaseGrant', { ID: 301, TTL: 60 });
    await d.lease('LeaseGrant', { ID: 302, TTL: 60 });
    for (const k of ['r/m5', 'r/m1', 'r/m4']) await d.kv('Put', { key: b(k), value: b(k), lease: 301 });
    await d.kv('Txn', { success: [
      { request_put: { key: b('r/m3'), value: b('t'), lease: 301 } },
      { request_put: { key: b('r/m2'), value: b('t'), lease: 301 } },
      { request_put: { key: b('r/x'), value: b('t'), lease: 302 } },
    ] });
    await w.drain('puts');
    const r2 = revOf(await d.lease('LeaseRevoke', { ID: 301 }));
    const resps = await w.drain('revoke, many keys');
    assert.equal(resps.length, 1, 'one watch response');
    assert.equal(revOf(resps[0]!), r2);
    assert.deepEqual(evs(resps[0]!), ['r/m1', 'r/m2', 'r/m3', 'r/m4', 'r/m5'].map((k) => `DELETE ${k}@${r2} prev-lease=301`));
    const left = okOf(await d.kv('Range', { key: b('r/'), range_end: prefixEnd('r/') }));
    assert.deepEqual((left.kvs as { key: string }[]).map((kv) => kv.key), ['r/other', 'r/x']);
    await d.lease('LeaseLeases', {});
    // etcd: a revoked lease is unknown to TimeToLive (TTL -1).
    for (const ID of [101, 106, 300, 301]) assert.equal(okOf(await d.lease('LeaseTimeToLive', { ID, keys: true })).TTL, '-1');
    w.cancel();
  });
});

describe('Lease differential vs etcd: puts, txns and deletes with leases', { skip: etcdSkipReason() }, () => {
  let d: LeasePair;
  before(async () => {
    d = await LeasePair.start();
    await d.lease('LeaseGrant', { ID: 1, TTL: 100 });
    await d.lease('LeaseGrant', { ID: 2, TTL: 100 });
  });
  after(async () => {
    await d?.stop();
  });

  const keysOf = async (ID: number): Promise<string[]> => okOf(await d.lease('LeaseTimeToLive', { ID, keys: true }, { label: `keys of ${ID}` })).keys as string[];

  test('Put with an unknown lease: NOT_FOUND, nothing written', async () => {
    // etcd: NOT_FOUND "etcdserver: requested lease not found", no revision.
    expectError(await d.kv('Put', { key: b('k'), value: b('v'), lease: 999 }), grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    expectError(await d.kv('Put', { key: b('k'), value: b('v'), lease: -1 }), grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    assert.equal(revOf(await d.kv('Range', { key: b('k') })), 1);
  });

  test('attach, re-put without lease detaches, ignore_lease keeps, another lease moves the key', async () => {
    // etcd: the key's lease field is set; TimeToLive lists the key.
    await d.kv('Put', { key: b('k'), value: b('1'), lease: 1 });
    assert.equal((okOf(await d.kv('Range', { key: b('k') })).kvs as { lease: string }[])[0]!.lease, '1');
    assert.deepEqual(await keysOf(1), ['k']);
    // etcd: a put without lease detaches (prev_kv still shows lease 1).
    const p = okOf(await d.kv('Put', { key: b('k'), value: b('2'), prev_kv: true }));
    assert.equal((p.prev_kv as { lease: string }).lease, '1');
    assert.equal((okOf(await d.kv('Range', { key: b('k') })).kvs as { lease: string }[])[0]!.lease, '0');
    assert.deepEqual(await keysOf(1), []);
    // etcd: ignore_lease keeps the lease the key has (also with ignore_value).
    await d.kv('Put', { key: b('k'), value: b('3'), lease: 1 });
    await d.kv('Put', { key: b('k'), value: b('4'), ignore_lease: true, prev_kv: true });
    await d.kv('Put', { key: b('k'), ignore_value: true, ignore_lease: true });
    assert.equal((okOf(await d.kv('Range', { key: b('k') })).kvs as { lease: string; value: string }[])[0]!.lease, '1');
    assert.deepEqual(await keysOf(1), ['k']);
    // etcd: ignore_value with a lease attaches with the old value.
    await d.kv('Put', { key: b('iv'), value: b('old') });
    await d.kv('Put', { key: b('iv'), ignore_value: true, lease: 1, prev_kv: true });
    await d.kv('Range', { key: b('iv') });
    assert.deepEqual(await keysOf(1), ['iv', 'k']);
    // etcd: a put with another lease moves the key from the old lease to the new one.
    await d.kv('Put', { key: b('k'), value: b('5'), lease: 2, prev_kv: true });
    assert.deepEqual(await keysOf(1), ['iv']);
    assert.deepEqual(await keysOf(2), ['k']);
  });

  test('Txn: puts with a lease attach; an unknown lease fails only in the branch taken', async () => {
    const missing = { key: b('nokey'), target: CompareTarget.VERSION, result: CompareResult.EQUAL, version: 5 }; // false
    // etcd: a put in a txn attaches like a plain put; the nested response header has ids 0.
    await d.kv('Txn', { success: [{ request_put: { key: b('t1'), value: b('x'), lease: 1 } }, { request_put: { key: b('t2'), value: b('x'), lease: 2 } }] });
    assert.deepEqual(await keysOf(1), ['iv', 't1']);
    await d.kv('Txn', { compare: [missing], failure: [{ request_put: { key: b('t3'), value: b('x'), lease: 2 } }] });
    assert.deepEqual(await keysOf(2), ['k', 't2', 't3']);
    // etcd: NOT_FOUND when the branch taken puts with an unknown lease; nothing is written.
    expectError(await d.kv('Txn', { success: [{ request_put: { key: b('t4'), value: b('x') } }, { request_put: { key: b('t5'), value: b('x'), lease: 999 } }] }),
      grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    expectError(await d.kv('Txn', { compare: [missing], failure: [{ request_put: { key: b('t5'), value: b('x'), lease: 999 } }] }),
      grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    // etcd: the branch not taken is not checked.
    const ok = okOf(await d.kv('Txn', { compare: [missing], success: [{ request_put: { key: b('t5'), value: b('x'), lease: 999 } }] }));
    assert.equal(ok.succeeded, false);
    // etcd: nested txns are checked too.
    expectError(await d.kv('Txn', { success: [{ request_txn: { success: [{ request_put: { key: b('t6'), value: b('x'), lease: 999 } }] } }] }),
      grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    await d.kv('Txn', { success: [{ request_txn: { success: [{ request_put: { key: b('t6'), value: b('x'), lease: 1 } }] } }] });
    assert.deepEqual(await keysOf(1), ['iv', 't1', 't6']);
    await d.kv('Range', { key: b('t'), range_end: b('u') });
  });

  test('delete detaches; revoking then spares detached and moved keys', async () => {
    // etcd: DeleteRange (plain and in a txn) removes the keys from their lease.
    await d.kv('DeleteRange', { key: b('t1') });
    await d.kv('Txn', { success: [{ request_delete_range: { key: b('t2') } }] });
    assert.deepEqual(await keysOf(1), ['iv', 't6']);
    assert.deepEqual(await keysOf(2), ['k', 't3']);
    // etcd: a key recreated without a lease after a delete is not the lease's.
    await d.kv('Put', { key: b('t1'), value: b('again') });
    const w = await d.watch({ key: b('\0'), range_end: b('\0') });
    const r = revOf(await d.lease('LeaseRevoke', { ID: 1 }));
    const [resp] = await w.drain('revoke 1');
    assert.deepEqual(evs(resp!), [`DELETE iv@${r}`, `DELETE t6@${r}`]);
    const all = okOf(await d.kv('Range', { key: b('\0'), range_end: b('\0') }));
    assert.deepEqual((all.kvs as { key: string }[]).map((kv) => kv.key), ['k', 't1', 't3']);
    w.cancel();
  });
});

describe('Lease differential vs etcd: LeaseKeepAlive stream', { skip: etcdSkipReason() }, () => {
  let d: LeasePair;
  before(async () => {
    d = await LeasePair.start();
  });
  after(async () => {
    await d?.stop();
  });

  test('known lease: granted TTL; unknown: TTL 0; several requests on one stream; half-close ends it', async () => {
    await d.lease('LeaseGrant', { ID: 10, TTL: 7 });
    await d.lease('LeaseGrant', { ID: 11, TTL: 1 });
    const ka = d.keepAlive();
    // etcd: ID echoed, TTL = the granted TTL, header at the current revision (1: no writes yet).
    assert.deepEqual(await ka.send({ ID: 10 }), { header: { cluster_id: 'set', member_id: 'set', revision: '1', raft_term: 'set' }, ID: '10', TTL: '7' });
    // etcd: the TTL raised to the minimum.
    assert.equal((await ka.send({ ID: 11 })).TTL, String(MIN_TTL));
    // etcd: unknown lease (and 0, negative): TTL 0, no error, the stream stays open.
    assert.deepEqual(await ka.send({ ID: 999 }), { header: { cluster_id: 'set', member_id: 'set', revision: '1', raft_term: 'set' }, ID: '999', TTL: '0' });
    assert.equal((await ka.send({ ID: 0 })).TTL, '0');
    assert.equal((await ka.send({ ID: -1 })).TTL, '0');
    assert.equal((await ka.send({ ID: 10 }, 'again after unknown ones')).TTL, '7');
    // etcd: the header follows the revision.
    await d.kv('Put', { key: b('a'), value: b('1'), lease: 10 });
    await d.kv('Put', { key: b('b'), value: b('1') });
    assert.equal(revOf(await ka.send({ ID: 10 }, 'after writes')), 3);
    // etcd: several requests written at once are answered in order.
    ka.write({ ID: 10 });
    ka.write({ ID: 998 });
    ka.write({ ID: 11 });
    assert.deepEqual([(await ka.next('1/3')).TTL, (await ka.next('2/3')).TTL, (await ka.next('3/3')).TTL], ['7', '0', String(MIN_TTL)]);
    // etcd: a revoked lease answers TTL 0.
    await d.lease('LeaseRevoke', { ID: 11 });
    assert.equal((await ka.send({ ID: 11 }, 'revoked')).TTL, '0');
    // etcd: the client's half-close ends the stream normally.
    assert.equal(await ka.halfClose(), 'end');
  });

  test('a keep-alive renews the lease to its full TTL', async () => {
    await d.lease('LeaseGrant', { ID: 20, TTL: 3 });
    await sleep(1200);
    // etcd: 1.8 s left -> TTL 1; after the keep-alive 3 s again -> TTL 2 (truncated).
    assert.ok(ttlOf(await d.lease('LeaseTimeToLive', { ID: 20 })) <= 2);
    const ka = d.keepAlive();
    assert.equal((await ka.send({ ID: 20 })).TTL, '3');
    assert.ok(ttlOf(await d.lease('LeaseTimeToLive', { ID: 20 }, { label: 'after keep-alive' })) >= 2);
    assert.equal(await ka.halfClose(), 'end');
  });
});

describe('Lease differential vs etcd: expiry', { skip: etcdSkipReason() }, () => {
  let d: LeasePair;
  before(async () => {
    d = await LeasePair.start();
  });
  after(async () => {
    await d?.stop();
  });

  test('a minimum-TTL lease expires: keys deleted in one revision, DELETE events, TimeToLive -1', async () => {
    const w = await d.watch({ key: b('e/'), range_end: prefixEnd('e/'), prev_kv: true });
    const ka = d.keepAlive();
    // Lease 7 (asked TTL 1, raised to 2) with three keys, lease 8 (TTL 2) kept alive with one key,
    // lease 9 (TTL 2) without keys.
    const t0 = Date.now();
    await d.lease('LeaseGrant', { ID: 7, TTL: 1 });
    const t1 = Date.now();
    await d.lease('LeaseGrant', { ID: 8, TTL: MIN_TTL });
    await d.lease('LeaseGrant', { ID: 9, TTL: MIN_TTL });
    for (const k of ['e/3', 'e/1', 'e/2']) await d.kv('Put', { key: b(k), value: b(k), lease: 7 });
    await d.kv('Put', { key: b('e/kept'), value: b('x'), lease: 8 });
    const rev = revOf(await d.kv('Put', { key: b('e/none'), value: b('x') }));
    assert.equal(rev, 6);
    assert.equal((await w.drain('puts', 100)).length, 5);

    // Each side's first response after the puts is the expiry; its arrival time is taken per side.
    let expired = false;
    const arrivals = Promise.all(w.readers.map(async (r) => ({ msg: await r.next(8000), at: Date.now() })))
      .finally(() => { expired = true; });
    // Lease 8 is kept alive meanwhile (etcd: each keep-alive answers TTL 2). Only ID and TTL are
    // compared: the header revision depends on whether this side's expiry has happened yet.
    while (!expired) {
      ka.write({ ID: 8 });
      const answers = await Promise.all(ka.readers.map(async (r) => {
        const m = normalizeResponse('LeaseKeepAlive', await r.next());
        return { ID: m.ID, TTL: m.TTL };
      }));
      assert.deepEqual(answers, [{ ID: '8', TTL: String(MIN_TTL) }, { ID: '8', TTL: String(MIN_TTL) }], 'keep-alive of 8 (etcd, concord)');
      await sleep(400);
    }
    const got = await arrivals;
    const [want, have] = got.map((g, i) => d.alias(i, normalizeResponse('Watch', g.msg)));
    assert.deepStrictEqual(have, want, 'the expiry as watched');
    // etcd: one response, one revision, the DELETEs in key order (prev_kv shows lease 7).
    assert.deepEqual(evs(want!), ['e/1', 'e/2', 'e/3'].map((k) => `DELETE ${k}@7 prev-lease=7`));
    assert.equal(revOf(want!), 7);
    // etcd: expires no earlier than the TTL after the grant was sent, and soon after (its lessor
    // looks every 500 ms); concord alike.
    got.forEach((g, i) => {
      const who = d.sides[i]!.name;
      assert.ok(g.at - t0 >= MIN_TTL * 1000, `${who}: expired ${g.at - t0} ms after the grant was sent (TTL ${MIN_TTL} s)`);
      assert.ok(g.at - t1 <= MIN_TTL * 1000 + 2000, `${who}: expired ${g.at - t1} ms after the grant was answered (TTL ${MIN_TTL} s)`);
    });
    assert.deepEqual(await w.drain('nothing more'), []);
    // etcd: the expired lease is gone: keep-alive TTL 0, not listed, revoke NOT_FOUND.
    assert.equal((await ka.send({ ID: 7 }, 'expired')).TTL, '0');
    expectError(await d.lease('LeaseRevoke', { ID: 7 }), grpc.status.NOT_FOUND, 'etcdserver: requested lease not found');
    const all = okOf(await d.kv('Range', { key: b('e/'), range_end: prefixEnd('e/') }));
    assert.deepEqual((all.kvs as { key: string }[]).map((kv) => kv.key), ['e/kept', 'e/none']);
    // etcd: lease 9 (no keys) expired too, without a revision; lease 8 lives on.
    for (const s of d.sides) await pollExpired(s, 9, 3000);
    const live = okOf(await d.lease('LeaseLeases', {}));
    assert.deepEqual(live.leases, [{ ID: '8' }]);
    assert.equal(revOf(live), 7);
    assert.deepEqual(okOf(await d.lease('LeaseTimeToLive', { ID: 8, keys: true })).keys, ['e/kept']);
    assert.equal(await ka.halfClose(), 'end');
    // etcd: TimeToLive of the expired leases: TTL -1 (unknown lease).
    for (const ID of [7, 9]) assert.equal(okOf(await d.lease('LeaseTimeToLive', { ID, keys: true })).TTL, '-1');
    w.cancel();
  });
});

describe('Lease differential vs etcd: the minimum TTL follows --heartbeat-interval and --election-timeout', { skip: etcdSkipReason() }, () => {
  for (const { args, min } of [
    // etcd: minTTL = ceil(((3 * electionTicks) / 2) * heartbeat), integer division:
    // 500/5500 ms: 11 ticks -> 16 * 0.5 s = 8 s (not 8.25 -> 9).
    { args: ['--heartbeat-interval', '500', '--election-timeout', '5500'], min: 8 },
    // 10/50 ms: 5 ticks -> 7 * 10 ms = 70 ms -> 1 s.
    { args: ['--heartbeat-interval', '10', '--election-timeout', '50'], min: 1 },
  ]) {
    test(args.join(' '), async () => {
      const d = await LeasePair.start({ args });
      try {
        for (const ttl of [1, min - 1, min, min + 1].filter((x, i, a) => x >= 1 && a.indexOf(x) === i)) {
          assert.equal(ttlOf(await d.lease('LeaseGrant', { ID: ttl, TTL: ttl }, { label: `TTL ${ttl}` })), Math.max(ttl, min));
        }
        assert.equal(ttlOf(await d.lease('LeaseGrant', { ID: 100, TTL: 0 })), min);
        assert.equal(okOf(await d.lease('LeaseTimeToLive', { ID: 100 })).grantedTTL, String(min));
      } finally {
        await d.stop();
      }
    });
  }
});

/** Polls one side's TimeToLive until -1 (fails after `ms`). */
async function pollExpired(s: Side, ID: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const o = await s.call('lease', 'LeaseTimeToLive', { ID }, 'LeaseTimeToLive');
    if ('ok' in o && o.ok.TTL === '-1') return;
    assert.ok(Date.now() < deadline, `${s.name}: lease ${ID} not expired in time (${JSON.stringify(o)})`);
    await sleep(100);
  }
}
