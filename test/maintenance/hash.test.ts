// Maintenance.HashKV and Hash. Goal: HashKV answers what etcd 3.4 answers for the same history,
// hash value included, and Hash is a stable fingerprint of a member's replicated state.
// Method: the same puts, deletes, txns, leases and compactions on a real etcd and a concord
// (test/helpers/differential.ts), then HashKV at the current, middle, compacted, compaction
// and future revisions compared field by field, also through `etcdctl endpoint hashkv`; Hash
// and HashKV across a restart of concord; HashKV and Hash on every member of a 3-member cluster.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';

import { etcdserverpb } from '../../src/gen/proto';
import { startCluster } from '../helpers/cluster';
import { startConcord } from '../helpers/concord';
import { b, DiffPair, firstDifference } from '../helpers/differential';
import { etcdSkipReason } from '../helpers/etcd';
import { etcdctlSkipReason, runEtcdctl } from '../helpers/etcdctl';
import { connect, long, unary, type ServiceClient } from '../helpers/grpc_client';

type Maint = ServiceClient<'etcdserverpb.Maintenance'>;
type Outcome = { ok: Record<string, unknown> } | { error: { code: number; details: string } };

const conversion = { longs: String, defaults: true };

/** HashKV normalized as differential.ts does: no ids or term; hash_revision apart (3.5+). */
async function hashKv(m: Maint, revision: number): Promise<{ out: Outcome; hashRev: string }> {
  try {
    const r = await unary(m, 'HashKV', { revision: long(revision) });
    const o = etcdserverpb.HashKVResponse.toObject(r as etcdserverpb.HashKVResponse, conversion) as Record<string, unknown>;
    const h = o.header as Record<string, unknown>;
    delete h.cluster_id;
    delete h.member_id;
    delete h.raft_term;
    const hashRev = String(o.hash_revision);
    delete o.hash_revision;
    return { out: { ok: o }, hashRev };
  } catch (err) {
    const e = err as grpc.ServiceError;
    assert.equal(typeof e.code, 'number', String(err));
    return { out: { error: { code: e.code, details: e.details } }, hashRev: '' };
  }
}

async function hashOf(m: Maint): Promise<{ hash: number; rev: number }> {
  const r = await unary(m, 'Hash', {});
  return { hash: r.hash ?? 0, rev: Number(r.header!.revision) };
}

/** The history both servers get (revision 1 is the empty store). */
async function workload(d: DiffPair, leases: [ServiceClient<'etcdserverpb.Lease'>, ServiceClient<'etcdserverpb.Lease'>]): Promise<void> {
  for (let i = 0; i < 40; i++) await d.kv('Put', { key: b(`k${i % 13}`), value: b(`v${i}`.repeat(1 + (i % 5))) });
  await d.kv('Put', { key: b('empty'), value: b('') });
  await d.kv('DeleteRange', { key: b('k1'), range_end: b('k3') }); // k1, k10, k11, k12, k2
  await d.kv('DeleteRange', { key: b('nothing') });
  await d.kv('Txn', {
    compare: [{ key: b('k0'), target: etcdserverpb.Compare.CompareTarget.VERSION, result: etcdserverpb.Compare.CompareResult.GREATER, version: long(0) }],
    success: [
      { request_put: { key: b('t1'), value: b('x') } },
      { request_delete_range: { key: b('k4') } },
      { request_put: { key: b('k4'), value: b('again') } },
    ],
    failure: [],
  });
  // Leases with fixed ids, so that both stores hold the same lease field.
  for (let i = 0; i < 2; i++) {
    await unary(leases[i]!, 'LeaseGrant', { ID: long(7001), TTL: long(600) });
    await unary(leases[i]!, 'LeaseGrant', { ID: long(7002), TTL: long(600) });
  }
  await d.kv('Put', { key: b('leased/a'), value: b('1'), lease: long(7001) });
  await d.kv('Put', { key: b('leased/b'), value: b('2'), lease: long(7002) });
  await d.kv('Put', { key: b('leased/c'), value: b('3'), lease: long(7002) });
  for (let i = 0; i < 2; i++) await unary(leases[i]!, 'LeaseRevoke', { ID: long(7002) });
  await d.kv('Put', { key: b('bin\x00\xff'), value: b('\x00\x01\xfe') });
}

test('HashKV equals etcd 3.4: values, compaction, errors, etcdctl', { skip: etcdSkipReason() || etcdctlSkipReason() }, async (t) => {
  const d = await DiffPair.start();
  t.after(() => d.stop());
  const maint: [Maint, Maint] = [connect('etcdserverpb.Maintenance', d.etcd.endpoint), connect('etcdserverpb.Maintenance', d.concord.endpoint)];
  const leases: [ServiceClient<'etcdserverpb.Lease'>, ServiceClient<'etcdserverpb.Lease'>] = [connect('etcdserverpb.Lease', d.etcd.endpoint), connect('etcdserverpb.Lease', d.concord.endpoint)];
  t.after(() => { for (const c of [...maint, ...leases]) c.close(); });

  const same = async (rev: number, label: string): Promise<Outcome> => {
    const [want, got] = await Promise.all([hashKv(maint[0], rev), hashKv(maint[1], rev)]);
    assert.deepStrictEqual(got.out, want.out, `HashKV(${rev}) ${label}: concord differs at ${firstDifference(want.out, got.out)}`);
    if ('ok' in got.out) {
      const cur = Number((got.out.ok.header as Record<string, unknown>).revision);
      assert.equal(got.hashRev, String(rev === 0 ? cur : rev), `HashKV(${rev}) hash_revision`);
    }
    return want.out;
  };

  await same(0, 'empty store');
  await same(1, 'empty store at 1');
  await workload(d, leases);
  const cur = Number(((await same(0, 'before compaction')) as { ok: { header: { revision: string } } }).ok.header.revision);
  assert.ok(cur > 45, `current revision ${cur}`);
  for (const rev of [1, 2, 10, 25, 41, 42, cur - 3, cur]) await same(rev, 'before compaction');
  await same(cur + 1, 'future');

  // A compaction in the middle of the history: below it only what the compaction keeps counts.
  const mid = 30;
  await d.kv('Compact', { revision: long(mid) });
  for (const rev of [0, mid - 1, mid, mid + 1, 41, 42, 43, cur - 1, cur, cur + 5]) await same(rev, `compacted at ${mid}`);
  // More writes over compacted keys, and a physical compaction past the deletions.
  for (let i = 0; i < 10; i++) await d.kv('Put', { key: b(`k${i}`), value: b(`after${i}`) });
  await d.kv('DeleteRange', { key: b('k5') });
  const mid2 = cur + 4;
  await d.kv('Compact', { revision: long(mid2), physical: true });
  const cur2 = cur + 11;
  for (const rev of [0, mid, mid2, mid2 + 1, cur, cur2 - 1, cur2, cur2 + 1]) await same(rev, `compacted at ${mid2}`);

  // A compaction whose sweep has work to do (2,560 superseded revisions, swept 1,000 keys a
  // step): HashKV right after it counts what etcd counts, however far the sweep has got.
  const bulk = async (round: number): Promise<number> => {
    let rev = 0;
    for (let t0 = 0; t0 < 20; t0++) {
      const success = [];
      for (let i = 0; i < 128; i++) success.push({ request_put: { key: b(`bulk/${String(t0 * 128 + i).padStart(5, '0')}`), value: b(`r${round}`) } });
      const out = await d.kv('Txn', { compare: [], success, failure: [] });
      rev = Number(((out as { ok: { header: { revision: string } } }).ok.header.revision));
    }
    return rev;
  };
  const r1 = await bulk(1);
  const r2 = await bulk(2);
  await d.kv('Compact', { revision: long(r2 - 5) });
  for (const rev of [0, r1, r2 - 4, r2]) await same(rev, 'right after a compaction with a sweep to do');
  // Compacted at the current revision: HashKV(0) still answers (etcd checks only rev > 0).
  await d.kv('Compact', { revision: long(r2), physical: true });
  for (const rev of [0, r2, r2 + 1]) await same(rev, 'compacted at the current revision');
  await d.kv('Put', { key: b('last'), value: b('x') });
  await same(r2 + 1, 'after the last compaction');

  // etcdctl prints the same lines; only ids differ in the JSON.
  const ids = (s: string): string => s.replace(/"(cluster_id|member_id)":\d+/g, '"$1":ID').replace(/"raft_term":\d+/g, '"raft_term":T');
  for (const args of [['endpoint', 'hashkv'], ['endpoint', 'hashkv', '--rev', String(r2 + 1)], ['endpoint', 'hashkv', '-w', 'json'], ['endpoint', 'hashkv', '--rev', String(mid), '-w', 'json']]) {
    const [e, c] = await Promise.all([runEtcdctl([d.etcd.endpoint], args), runEtcdctl([d.concord.endpoint], args)]);
    const ce = (s: string, ep: string): string => ids(s.split(ep).join('EP')).split('\n').filter((l) => !l.startsWith('{"level"')).join('\n');
    assert.equal(ce(c.stdout, d.concord.endpoint.replace('http://', '')), ce(e.stdout, d.etcd.endpoint.replace('http://', '')), `etcdctl ${args.join(' ')} stdout`);
    assert.equal(ce(c.stderr, d.concord.endpoint.replace('http://', '')), ce(e.stderr, d.etcd.endpoint.replace('http://', '')), `etcdctl ${args.join(' ')} stderr`);
    assert.equal(c.code, e.code, `etcdctl ${args.join(' ')} exit code`);
  }
});

test('Hash and HashKV are the same after a restart', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-hash-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let c = await startConcord({ dataDir: dir, keepDataDir: true });
  t.after(() => c.stop());
  let kv = connect('etcdserverpb.KV', c.endpoint);
  let lease = connect('etcdserverpb.Lease', c.endpoint);
  let m = connect('etcdserverpb.Maintenance', c.endpoint);
  for (let i = 0; i < 200; i++) await unary(kv, 'Put', { key: b(`key${i % 70}`), value: b(`value${i}`) });
  await unary(lease, 'LeaseGrant', { ID: long(42), TTL: long(3600) });
  await unary(kv, 'Put', { key: b('leased'), value: b('v'), lease: long(42) });
  await unary(kv, 'DeleteRange', { key: b('key1'), range_end: b('key2') });
  await unary(kv, 'Compact', { revision: long(150), physical: true });
  const before = await hashOf(m);
  const kvBefore = await hashKv(m, 0);
  const kvMid = await hashKv(m, 180);
  assert.equal(before.rev, 203);
  assert.deepEqual(await hashOf(m), before, 'Hash twice');
  kv.close(); lease.close(); m.close();
  await c.stop();

  // The same client URL: the members' URLs are replicated state (etcd's members bucket too).
  c = await startConcord({ dataDir: dir, keepDataDir: true, fixedPort: c.port });
  kv = connect('etcdserverpb.KV', c.endpoint);
  m = connect('etcdserverpb.Maintenance', c.endpoint);
  t.after(() => { kv.close(); m.close(); });
  assert.deepEqual(await hashOf(m), before, 'Hash after the restart');
  assert.deepEqual(await hashKv(m, 0), kvBefore, 'HashKV(0) after the restart');
  assert.deepEqual(await hashKv(m, 180), kvMid, 'HashKV(180) after the restart');
  await unary(kv, 'Put', { key: b('new'), value: b('v') });
  const after = await hashOf(m);
  assert.notEqual(after.hash, before.hash, 'a write changes Hash');
  const later = (await hashKv(m, 180)).out as { ok: Record<string, unknown> };
  assert.equal(later.ok.hash, (kvMid.out as { ok: Record<string, unknown> }).ok.hash, 'HashKV(180) does not change with later writes');
});

test('3 members: HashKV and Hash equal on every member', async (t) => {
  const c = await startCluster({ size: 3, token: 'hash-test' });
  t.after(() => c.stop());
  const kv = c.members.map((x) => connect('etcdserverpb.KV', x.clientUrl));
  const m = c.members.map((x) => connect('etcdserverpb.Maintenance', x.clientUrl));
  t.after(() => { for (const x of [...kv, ...m]) x.close(); });
  await c.leader();
  let rev = 0;
  for (let i = 0; i < 60; i++) {
    const r = await unary(kv[i % 3]!, 'Put', { key: b(`c${i % 17}`), value: b(`v${i}`) });
    rev = Number(r.header!.revision);
  }
  await unary(kv[1]!, 'DeleteRange', { key: b('c1'), range_end: b('c2') });
  const cr = await unary(kv[2]!, 'Compact', { revision: long(rev - 20) });
  rev = Number(cr.header!.revision);
  // A linearizable read on each member makes it apply everything up to here.
  for (const k of kv) await unary(k, 'Range', { key: b('c0') });
  const kvs = await Promise.all(m.map((x) => hashKv(x, rev)));
  for (let i = 1; i < 3; i++) assert.deepStrictEqual(kvs[i], kvs[0], `HashKV(${rev}) on member ${i}`);
  const zero = await Promise.all(m.map((x) => hashKv(x, 0)));
  for (let i = 1; i < 3; i++) assert.deepStrictEqual(zero[i], zero[0], `HashKV(0) on member ${i}`);
  const hs = await Promise.all(m.map((x) => hashOf(x)));
  for (let i = 1; i < 3; i++) assert.deepStrictEqual(hs[i], hs[0], `Hash on member ${i}`);
});
