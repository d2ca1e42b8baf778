// Maintenance.Defragment, online. Goal: the file gives its free pages back to the file system,
// the state is exactly the same before and after (Hash, HashKV, every key), and the member
// serves reads, writes and watches the whole time without losing an acknowledged write or a
// watch event; what etcd users see (etcdctl defrag's output, the empty response, defrag while
// NOSPACE is raised) is what etcd 3.4 shows.
// Method: a store with half of its pages free (many puts, every other key deleted, compacted);
// a defragmentation with no load (hashes equal, sizes down), then one under a put load with a
// watcher, with the copy held back by a failpoint so that the catch-up has writes to carry
// (every acknowledged put readable live and after kill -9, the watcher saw every revision once,
// a watch from an old revision replays history from the new file); the checker shown to fail:
// the same run with the catch-up skipped (a planted bug) must be caught; etcd side by side.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { etcdserverpb } from '../../src/gen/proto';
import { startCluster } from '../helpers/cluster';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { assertAckedPresent, fillWithFreePages, hashKvAt, putLoad, statusSizes, type AckedPut } from '../helpers/defrag_load';
import { etcdSkipReason, startEtcd } from '../helpers/etcd';
import { etcdctlSkipReason, runEtcdctl } from '../helpers/etcdctl';
import { connect, num, openStream, unary } from '../helpers/grpc_client';

async function hashOf(endpoint: string): Promise<{ hash: number; rev: number }> {
  const m = connect('etcdserverpb.Maintenance', endpoint);
  try {
    const r = await unary(m, 'Hash', {});
    return { hash: r.hash ?? 0, rev: num(r.header!.revision) };
  } finally {
    m.close();
  }
}

/** Watches `prefix` from `startRev`; collects every event's (key, mod revision). */
function watchPrefix(endpoint: string, prefix: string, startRev: number): { events: { key: string; rev: number }[]; close(): void; created: Promise<void> } {
  const w = connect('etcdserverpb.Watch', endpoint);
  const { call, reader } = openStream(w, 'Watch');
  const events: { key: string; rev: number }[] = [];
  let createdResolve: () => void = () => undefined;
  const created = new Promise<void>((r) => { createdResolve = r; });
  const end = Buffer.from(prefix);
  end[end.length - 1]!++;
  call.write({ create_request: { key: Buffer.from(prefix), range_end: end, start_revision: startRev } });
  void (async () => {
    for (;;) {
      let msg: etcdserverpb.WatchResponse;
      try {
        msg = await reader.next(60_000) as etcdserverpb.WatchResponse;
      } catch {
        return;
      }
      if (msg.created) createdResolve();
      for (const ev of msg.events ?? []) events.push({ key: Buffer.from(ev.kv!.key!).toString(), rev: num(ev.kv!.mod_revision) });
    }
  })();
  return { events, created, close: () => { call.end(); w.close(); } };
}

/** Every acknowledged put's revision was delivered exactly once, in revision order. */
function assertWatchSawAll(events: { key: string; rev: number }[], acked: AckedPut[], label: string): void {
  for (let i = 1; i < events.length; i++) assert.ok(events[i]!.rev > events[i - 1]!.rev, `${label}: events out of order or repeated at ${i}: ${events[i - 1]!.rev} then ${events[i]!.rev}`);
  const seen = new Map(events.map((e) => [e.rev, e.key]));
  const lost = acked.filter((a) => seen.get(a.rev) !== a.key);
  assert.equal(lost.length, 0, `${label}: ${lost.length} of ${acked.length} acknowledged puts not seen by the watcher (first at revision ${lost[0]?.rev})`);
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A defragmentation under a put load with a watcher on the load's keys, the copy held back
 * 300 ms by a failpoint so that writes land between the copy and the switch. Returns what went
 * wrong (empty when nothing did): the checker of the online defragmentation.
 */
async function defragUnderLoad(c: ConcordHandle): Promise<string[]> {
  const problems: string[] = [];
  const kv = connect('etcdserverpb.KV', c.endpoint);
  const maint = connect('etcdserverpb.Maintenance', c.endpoint);
  try {
    const startRev = (await statusSizes(maint)).revision + 1;
    const watcher = watchPrefix(c.endpoint, 'load/', startRev);
    await watcher.created;
    const load = putLoad(c.endpoint, 'load/', 4);
    await waitFor(() => load.acked.length >= 50, 10_000, 'the load to start');
    try {
      await unary(maint, 'Defragment', {}, { timeoutMs: 60_000 });
    } catch (err) {
      problems.push(`Defragment failed: ${(err as Error).message}`);
    }
    const atSwitch = load.acked.length;
    await waitFor(() => load.acked.length >= atSwitch + 50 || load.errors.length > 100, 10_000, 'puts after the defragmentation');
    const acked = await load.stop();
    try {
      await assertAckedPresent(kv, acked, 'live, after the defragmentation');
      const last = acked.reduce((m, a) => Math.max(m, a.rev), 0);
      await waitFor(() => watcher.events.length > 0 && watcher.events[watcher.events.length - 1]!.rev >= last, 10_000, 'the watcher to catch up');
      assertWatchSawAll(watcher.events, acked, 'watcher across the defragmentation');
      // History from before the defragmentation, read by the watch worker from the new file.
      const old = watchPrefix(c.endpoint, 'load/', startRev);
      await waitFor(() => old.events.length >= acked.length, 10_000, 'a watch from an old revision');
      assertWatchSawAll(old.events, acked, 'watch from before the defragmentation');
      old.close();
    } catch (err) {
      problems.push((err as Error).message);
    }
    watcher.close();
  } finally {
    kv.close();
    maint.close();
  }
  return problems;
}

test('defragment: free pages go back to the file system, the state is the same, a restart opens it', async (t) => {
  const c = await startConcord();
  t.after(() => c.stop());
  const kv = connect('etcdserverpb.KV', c.endpoint);
  const maint = connect('etcdserverpb.Maintenance', c.endpoint);
  t.after(() => { kv.close(); maint.close(); });
  await fillWithFreePages(kv, 'fill/', 2000, 8192);
  const before = await statusSizes(maint);
  const hashBefore = await hashOf(c.endpoint);
  const hkvBefore = await hashKvAt(maint, 0);
  const r = await unary(maint, 'Defragment', {});
  assert.deepEqual(etcdserverpb.DefragmentResponse.encode(r).finish().length, 0, 'etcd answers an empty DefragmentResponse');
  const after = await statusSizes(maint);
  assert.ok(after.dbSize < before.dbSize * 0.7, `db size ${before.dbSize} -> ${after.dbSize}: the free pages should be gone`);
  assert.ok(after.dbSizeInUse <= before.dbSizeInUse, `db size in use ${before.dbSizeInUse} -> ${after.dbSizeInUse}`);
  assert.equal(after.revision, before.revision, 'a defragmentation is no write');
  assert.deepEqual(await hashOf(c.endpoint), hashBefore, 'Hash of the whole state is the same');
  assert.equal(await hashKvAt(maint, 0), hkvBefore, 'HashKV is the same');
  const fileBytes = fs.statSync(path.join(c.dataDir, 'member/kv/data.mdb')).size;
  assert.ok(fileBytes <= after.dbSize + 4096 * 16, `the file itself shrank: ${fileBytes} bytes on disk, db size ${after.dbSize}`);
  assert.equal(fs.existsSync(path.join(c.dataDir, 'member/kv-defrag')), false, 'the copy directory is gone');
  const got = await unary(kv, 'Range', { key: Buffer.from('fill/'), range_end: Buffer.from('fill0'), count_only: true });
  assert.equal(num(got.count), 1001, 'every other key and the marker');
  // A defragmented file opens after kill -9 and holds the same state (the same client URL: a
  // member publishes its URLs into the membership, which Hash covers).
  await c.kill();
  const c2 = await startConcord({ dataDir: c.dataDir, fixedPort: c.port });
  t.after(() => c2.stop());
  assert.deepEqual(await hashOf(c2.endpoint), hashBefore, 'Hash after a restart');
  const m2 = connect('etcdserverpb.Maintenance', c2.endpoint);
  t.after(() => m2.close());
  assert.equal(await hashKvAt(m2, 0), hkvBefore, 'HashKV after a restart');
});

test('defragment under a put load: no acknowledged write or watch event lost, live and after kill -9', async (t) => {
  const c = await startConcord({ env: { CONCORD_FAILPOINTS: 'defragCopyDelayMs=300' } });
  t.after(() => c.stop());
  const kv = connect('etcdserverpb.KV', c.endpoint);
  t.after(() => kv.close());
  await fillWithFreePages(kv, 'fill/', 1000, 8192);
  const problems = await defragUnderLoad(c);
  assert.deepEqual(problems, []);
  // After kill -9: the same acknowledged writes, the same HashKV at the last revision.
  const maint = connect('etcdserverpb.Maintenance', c.endpoint);
  const last = (await statusSizes(maint)).revision;
  const hkv = await hashKvAt(maint, last);
  maint.close();
  await c.kill();
  const c2 = await startConcord({ dataDir: c.dataDir });
  t.after(() => c2.stop());
  const m2 = connect('etcdserverpb.Maintenance', c2.endpoint);
  t.after(() => m2.close());
  assert.equal(await hashKvAt(m2, last), hkv, 'HashKV at the last revision after kill -9');
});

test('the checker catches a defragmentation that skips its catch-up (planted bug)', async (t) => {
  const c = await startConcord({ env: { CONCORD_FAILPOINTS: 'defragCopyDelayMs=300,defragSkipCatchUp' } });
  t.after(() => c.stop());
  const kv = connect('etcdserverpb.KV', c.endpoint);
  t.after(() => kv.close());
  await fillWithFreePages(kv, 'fill/', 1000, 8192);
  const problems = await defragUnderLoad(c);
  t.diagnostic(`caught: ${problems.join(' | ').slice(0, 400)}`);
  assert.ok(problems.length > 0, 'writes committed during the copy were dropped from the new file, and the checker must say so');
});

test('defragment as etcd 3.4: etcdctl defrag output, empty response, allowed while NOSPACE is raised', { skip: etcdSkipReason() ?? etcdctlSkipReason() }, async (t) => {
  const quota = ['--quota-backend-bytes', String(2 * 1024 * 1024)];
  const etcd = await startEtcd({ extraArgs: quota });
  t.after(() => etcd.stop());
  const c = await startConcord({ extraArgs: quota });
  t.after(() => c.stop());
  for (const [name, endpoint] of [['etcd', etcd.endpoint], ['concord', c.endpoint]] as const) {
    const kv = connect('etcdserverpb.KV', endpoint);
    const maint = connect('etcdserverpb.Maintenance', endpoint);
    try {
      // Up to the quota: NOSPACE raised, puts refused.
      let refused = '';
      for (let i = 0; i < 400 && refused === ''; i++) {
        try {
          await unary(kv, 'Put', { key: Buffer.from(`q${i}`), value: Buffer.alloc(16 * 1024, 'q') });
        } catch (err) {
          refused = (err as Error).message;
        }
      }
      assert.match(refused, /database space exceeded/, `${name}: the quota is reached`);
      const out = await runEtcdctl([endpoint], ['defrag']);
      assert.equal(out.code, 0, `${name}: etcdctl defrag: ${out.stderr}`);
      assert.equal(out.stdout, `Finished defragmenting etcd member[${endpoint}]\n`, `${name}: etcdctl defrag's line`);
      const r = await unary(maint, 'Defragment', {});
      assert.equal(etcdserverpb.DefragmentResponse.encode(r).finish().length, 0, `${name}: empty DefragmentResponse`);
      const s = await unary(maint, 'Status', {});
      assert.ok((s.errors ?? []).some((e) => /NOSPACE/.test(e)), `${name}: the alarm stays until disarmed: ${JSON.stringify(s.errors)}`);
    } finally {
      kv.close();
      maint.close();
    }
  }
});

test('defragment --cluster on 3 members under a put load: every member shrinks, holds every acknowledged put, HashKV agrees', { skip: etcdctlSkipReason() }, async (t) => {
  const cl = await startCluster({ size: 3 });
  t.after(() => cl.stop());
  const leader = await cl.leader();
  const kv = connect('etcdserverpb.KV', cl.endpoints()[leader]!);
  t.after(() => kv.close());
  await fillWithFreePages(kv, 'fill/', 600, 8192);
  const before = await Promise.all(cl.endpoints().map(async (e) => {
    const m = connect('etcdserverpb.Maintenance', e);
    try { return await statusSizes(m); } finally { m.close(); }
  }));
  // The load goes to a follower (forwarded to the leader): every member applies it.
  const load = putLoad(cl.endpoints()[(leader + 1) % 3]!, 'load/', 4);
  await waitFor(() => load.acked.length >= 30, 10_000, 'the load to start');
  const out = await runEtcdctl([cl.endpoints()[0]!], ['defrag', '--cluster']);
  assert.equal(out.code, 0, `etcdctl defrag --cluster: ${out.stderr}`);
  for (const e of cl.endpoints()) assert.ok(out.stdout.includes(`Finished defragmenting etcd member[${e}]`), `${e} defragmented: ${out.stdout}`);
  const atEnd = load.acked.length;
  await waitFor(() => load.acked.length >= atEnd + 30, 10_000, 'puts after the defragmentation');
  const acked = await load.stop();
  const last = acked.reduce((m, a) => Math.max(m, a.rev), 0);
  const hashes: number[] = [];
  for (const [i, e] of cl.endpoints().entries()) {
    const k = connect('etcdserverpb.KV', e);
    const m = connect('etcdserverpb.Maintenance', e);
    try {
      for (let tries = 0; (await statusSizes(m)).revision < last && tries < 100; tries++) await new Promise((r) => setTimeout(r, 50));
      await assertAckedPresent(k, acked, `member ${i}`);
      hashes.push(await hashKvAt(m, last));
      const after = await statusSizes(m);
      assert.ok(after.dbSize < before[i]!.dbSize, `member ${i}: db size ${before[i]!.dbSize} -> ${after.dbSize}`);
    } finally {
      k.close();
      m.close();
    }
  }
  assert.equal(new Set(hashes).size, 1, `HashKV at ${last} on the three members: ${hashes.join(', ')}`);
});
