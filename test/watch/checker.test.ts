// Watch API guarantees under a concurrent workload (issue #4): test/helpers/watch_checker.ts
// runs seeded writers, compactions, and ~200 watchers with cancels and progress requests, then
// checks every watcher against the MVCC history read back with Range. The same checker runs
// against real etcd 3.4 (so a checker bug cannot hide behind concord) and against concord, and
// once with faults injected into the responses it sees (it must report them).
//
//   WATCH_CHECK_SEED=123          reproduce a run (the seed is printed as a diagnostic)
//   WATCH_CHECK_TARGET=concord    only concord (or: etcd; default both; the fault test always runs)
//   WATCH_CHECK_MS=4000 WATCH_CHECK_WATCHERS=200   workload size

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { startConcord } from '../helpers/concord';
import { etcdSkipReason, startEtcd } from '../helpers/etcd';
import { num } from '../helpers/grpc_client';
import { runWatchCheck } from '../helpers/watch_checker';

const seed = process.env.WATCH_CHECK_SEED !== undefined
  ? Number(process.env.WATCH_CHECK_SEED)
  : (Date.now() ^ (process.pid << 16)) >>> 0;
const target = process.env.WATCH_CHECK_TARGET ?? 'both';
const writeMs = Number(process.env.WATCH_CHECK_MS ?? 4000);
const watchers = Number(process.env.WATCH_CHECK_WATCHERS ?? 200);

// A small request limit keeps etcd's fragmenting threshold (limit + 512 KiB) reachable by
// catch-up responses of fragment watchers; the biggest request here is a ~12 KB put.
const serverArgs = ['--max-request-bytes', '16384'];

/**
 * Known bugs of etcd 3.4.23 (the oracle), by the tag the checker gives a violation that has
 * exactly their signature (test/helpers/watch_checker.ts):
 *  - 'late': a WatchProgressRequest is answered on etcd's control channel, which can overtake
 *    events still queued for the stream; every overtaken event arrives afterwards
 *    (etcd-io/etcd#15220, fixed upstream by etcd-io/etcd#15237).
 *  - 'compacted-skip': a watcher needing a compacted revision while its stream's channel is full
 *    is neither canceled nor caught up; it skips one run of events, from below a compaction, to
 *    the batch the other watchers get (etcd-io/etcd#17529).
 *  - 'prevkv-response': a whole response without any prev_kv though the watcher asked for it and
 *    nothing was compacted. For a first response the cause is visible in v3rpc/watch.go (the
 *    watcher is registered before its prev_kv flag is recorded); later responses like that were
 *    seen too, cause not identified.
 * They are reported but do not fail the real-etcd run; any other violation fails it. The concord
 * run tolerates nothing.
 */
const ETCD_3_4_23_BUGS: Record<string, string> = {
  late: 'etcd-io/etcd#15220 (progress answer overtakes queued events)',
  'compacted-skip': 'etcd-io/etcd#17529 (compacted watcher with a full channel skips events instead of being canceled)',
  'prevkv-response': 'whole responses without prev_kv (v3rpc/watch.go sets the prev_kv flag after registering the watcher; later responses: cause not identified)',
};

async function check(t: TestContext, endpoint: string, name: string, oracle = false): Promise<void> {
  t.diagnostic(`${name}: seed ${seed} (WATCH_CHECK_SEED=${seed} to reproduce)`);
  const report = await runWatchCheck(endpoint, { seed, writeMs, watchers, log: (l) => t.diagnostic(`${name}: ${l}`) });
  for (const line of report.summary(8)) t.diagnostic(`${name}: ${line}`);
  const known = oracle ? report.violations.filter((v) => v.tag !== undefined && v.tag in ETCD_3_4_23_BUGS) : [];
  for (const [tag, what] of Object.entries(ETCD_3_4_23_BUGS)) {
    const n = known.filter((v) => v.tag === tag).length;
    if (n > 0) t.diagnostic(`${name}: ${n} violations tagged '${tag}', etcd 3.4.23's ${what}: reported, not failed for etcd`);
  }
  const failing = report.violations.filter((v) => !known.includes(v));
  const shown = failing.slice(0, 20).map((v) => `  [${v.kind}] ${v.detail}`).join('\n');
  assert.equal(failing.length, 0,
    `${name}: ${failing.length} watch guarantee violations (seed ${seed}): ${JSON.stringify(report.byKind)}\n${shown}`);
}

if (target === 'both' || target === 'etcd') {
  test('watch checker vs real etcd 3.4 (validates the checker)', { skip: etcdSkipReason(), timeout: 60_000 }, async (t) => {
    const etcd = await startEtcd({ extraArgs: serverArgs });
    try {
      await check(t, etcd.endpoint, 'etcd', true);
    } finally {
      await etcd.stop();
    }
  });
}

/**
 * The checker must catch faults: responses of the reference watcher (stream 0, id 0, every key
 * from revision 1 with prev_kv) are dropped (with a fake progress answer at their revision),
 * duplicated, swapped, and corrupted before the checker sees them. The writes run for a fixed
 * time, so a busy machine makes fewer: the faults start early enough (every 50 events) that
 * ~250 events suffice (a loaded 2-core run saw only 400).
 */
function faultInjector(): (stream: number, m: any, deliver: (m: any) => void) => void {
  let seen = 0;
  let phase = 0;
  let held: any;
  return (stream, m, deliver) => {
    const evs: any[] = m.events ?? [];
    if (stream !== 0 || num(m.watch_id) !== 0 || m.created || m.fragment || evs.length === 0) return deliver(m);
    seen += evs.length;
    const lastRev = num(evs[evs.length - 1].kv?.mod_revision);
    if (phase === 0 && seen > 50) {
      phase = 1; // drop it; claim progress past it
      deliver({ header: { revision: lastRev }, watch_id: -1, events: [] });
      return;
    }
    if (phase === 1 && seen > 100) {
      phase = 2; // duplicate
      deliver(m);
      deliver(m);
      return;
    }
    if (phase === 2 && seen > 150) {
      phase = 3; // swap with the next one
      held = m;
      return;
    }
    if (phase === 3) {
      phase = 4;
      deliver(m);
      deliver(held);
      return;
    }
    const i = evs.findIndex((e) => e.prev_kv);
    if (phase === 4 && seen > 200 && i >= 0) {
      phase = 5; // a wrong value, and a missing prev_kv
      const e = evs[i];
      const bad = evs.map((x) => x);
      bad[i] = { ...e, kv: { ...e.kv, value: Buffer.from('corrupted') }, prev_kv: null };
      deliver({ ...m, events: bad });
      return;
    }
    deliver(m);
  };
}

test('watch checker catches injected faults (dropped, duplicated, reordered, corrupted responses)', { timeout: 60_000 }, async (t) => {
  const c = await startConcord({ extraArgs: serverArgs });
  try {
    const report = await runWatchCheck(c.endpoint, { seed, writeMs: 2000, watchers: 40, settleMs: 1500, inject: faultInjector() });
    for (const line of report.summary(2)) t.diagnostic(`injected: ${line}`);
    const reference = report.violations.filter((v) => v.detail.includes('all (reference)'));
    for (const kind of ['gap', 'progress', 'duplicate', 'order', 'kv', 'prev_kv']) {
      assert.ok(reference.some((v) => v.kind === kind), `an injected ${kind} fault of the reference watcher was not reported (seed ${seed}): ${JSON.stringify(report.byKind)}`);
    }
  } finally {
    await c.stop();
  }
});

if (target === 'both' || target === 'concord') {
  test('watch checker vs concord', { timeout: 60_000 }, async (t) => {
    const c = await startConcord({ extraArgs: serverArgs });
    try {
      await check(t, c.endpoint, 'concord');
    } finally {
      await c.stop();
    }
  });
}
