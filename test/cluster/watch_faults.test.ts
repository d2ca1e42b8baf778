// Watch guarantees on every member under faults (issue #12): writers put, delete, range-delete
// and run txns through all three members while watchers on every member (a prefix from revision
// 1 with prev_kv, a prefix from now requiring a leader, a sub-range from 1, a prefix from a past
// revision created mid-run) stay open through a seeded fault schedule (leader isolation, a
// one-way cut, delays, kill -9 of a follower and of the leader, each restarted). A watcher whose
// stream ends resumes on the next member from the revision after the last event it saw, as
// clientv3 does. Then every member must converge, and every watcher's concatenated stream is
// checked against the history read back with a Range at every revision (test/helpers/
// cluster_watch.ts): ordered by (revision, sub-revision), no duplicate, no gap, kvs and prev_kvs
// equal to the history, the same contents from every member. The checker is shown to fail: on
// hand-made streams and on this run's own streams mutated (a gap, a duplicate, a reorder).
// More schedules: `npm run faults` (WATCH_FAULT_SEEDS, a list or ranges, 1-10 by default).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { seedsFromEnv } from '../helpers/seeds';
import { startCluster } from '../helpers/cluster';
import { runFaultSchedule, waitConverged } from '../helpers/cluster_faults';
import {
  buildOracle, checkWatchRecords, ClusterWriter, DELETE, type Kv, PUT, readOracle, ResumingWatcher,
  type WatchEvent, type WatchRecord, type WatchSpec,
} from '../helpers/cluster_watch';

const seeds = seedsFromEnv('WATCH_FAULT_SEEDS', '1');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const PREFIX = { key: 'w/', end: 'w0' };

/** The watchers opened on member m before the writes start. */
function earlySpecs(m: number): WatchSpec[] {
  return [
    { name: `m${m}-prefix-from-1-prev`, home: m, range: PREFIX, startRev: 1, prevKv: true, requireLeader: false },
    { name: `m${m}-prefix-now-leader`, home: m, range: PREFIX, startRev: 0, prevKv: false, requireLeader: true },
    { name: `m${m}-subrange-from-1`, home: m, range: { key: 'w/k2', end: 'w/k5' }, startRev: 1, prevKv: false, requireLeader: true },
  ];
}

/** Mutations of one recorded stream the checker must catch, by the violation kind expected. */
function mutations(rec: WatchRecord): [string, WatchRecord][] {
  const events = rec.segments.flatMap((s) => s.events);
  const mid = Math.floor(events.length / 2);
  const withEvents = (evs: WatchEvent[]): WatchRecord => ({ spec: rec.spec, segments: [{ member: rec.spec.home, startRev: rec.spec.startRev, created: rec.segments[0]!.created ?? 0, events: evs }] });
  return [
    ['gap', withEvents(events.filter((_, i) => i !== mid))],
    ['duplicate', withEvents([...events.slice(0, mid + 1), events[mid]!, ...events.slice(mid + 1)])],
    ['order', withEvents([...events.slice(0, mid), events[mid + 1]!, events[mid]!, ...events.slice(mid + 2)])],
  ];
}

for (const seed of seeds) {
  // A hang must fail the test rather than block the suite: it runs about 35 s, so 3 min is
  // generous on a loaded 2-core machine.
  test(`watch guarantees on every member under faults (seed ${seed})`, { timeout: 180_000 }, async (t) => {
    const c = await startCluster({ size: 3, faults: true, token: `watch-faults-${seed}` });
    t.after(() => c.stop());
    const endpoints = c.endpoints();
    const watchers: ResumingWatcher[] = [];
    t.after(() => {
      for (const w of watchers) w.stop();
    });
    const writer = new ClusterWriter(endpoints, { seed, prefix: 'w/', outside: 'x/', writers: 3 });
    for (let m = 0; m < 3; m++) for (const spec of earlySpecs(m)) watchers.push(new ResumingWatcher(spec, endpoints));
    for (const w of watchers) w.start();
    await sleep(300);
    const log: string[] = [];
    writer.start();
    try {
      await sleep(2000);
      // From a past revision, created while the writes go on.
      const past = Math.max(1, writer.acked - 40);
      for (let m = 0; m < 3; m++) {
        const w = new ResumingWatcher({ name: `m${m}-prefix-from-past-${past}-prev`, home: m, range: PREFIX, startRev: past, prevKv: true, requireLeader: false }, endpoints);
        watchers.push(w);
        w.start();
      }
      await runFaultSchedule(c, seed, log);
      await sleep(1000);
    } finally {
      await writer.stop();
    }
    const context = `seed ${seed}; faults: ${log.join('; ')}`;
    const head = await waitConverged(c);
    const oracle = await readOracle(endpoints[0]!, PREFIX, head, writer.opsByValue);
    assert.deepEqual(oracle.problems, [], `${context}: the history read back is not explained by the requests`);
    // Every watcher must deliver everything up to the head.
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && !watchers.every((w) => w.complete(oracle))) await sleep(200);
    for (const w of watchers) w.stop();
    const records = watchers.map((w) => w.record);
    const violations = checkWatchRecords(oracle, records);
    const resumes = records.reduce((a, r) => a + r.segments.length - 1, 0);
    const byMember = [0, 1, 2].map((m) => records.reduce((a, r) => a + r.segments.filter((s) => s.member === m).reduce((b, s) => b + s.events.length, 0), 0));
    const ends = [...new Set(records.flatMap((r) => r.segments.map((s) => s.end).filter((e) => e !== undefined)))];
    t.diagnostic(`${context}; head ${head}, ${oracle.events.length} events under w/, writes ${writer.counts.ok} ok ${writer.counts.failed} failed; ` +
      `${records.length} watchers, ${resumes} resumes (stream ends: ${ends.join(' / ') || 'none'}); events delivered by m0/m1/m2: ${byMember.join('/')}`);
    assert.deepEqual(violations.slice(0, 20).map((v) => `${v.kind}: ${v.detail}`), [], `${context}: ${violations.length} violations`);
    assert.ok(oracle.events.length > 200, `${context}: too few events (${oracle.events.length})`);
    assert.ok(oracle.events.some((e) => e.type === DELETE), `${context}: no delete in the history`);
    assert.ok(oracle.events.some((e, i) => i > 0 && oracle.events[i - 1]!.rev === e.rev), `${context}: no multi-event revision`);
    assert.ok(resumes >= 3, `${context}: the kills should have made watchers resume elsewhere (${resumes})`);
    for (let m = 0; m < 3; m++) assert.ok(byMember[m]! > 0, `${context}: m${m} delivered no event`);

    // The checker catches a gap, a duplicate and a reorder in this run's own streams.
    const full = records.find((r) => r.spec.startRev === 1 && r.spec.range === PREFIX)!;
    assert.deepEqual(checkWatchRecords(oracle, [full]), [], 'the unmutated stream passes alone');
    for (const [kind, mutated] of mutations(full)) {
      const found = checkWatchRecords(oracle, [mutated]).map((v) => v.kind);
      assert.ok(found.includes(kind as never), `${context}: the checker missed a ${kind} (found ${found.join(',') || 'nothing'})`);
    }
  });
}

// ------------------------------------------------------------------ the checker on made-up streams

const kv = (key: string, value: string, create: number, mod: number, version: number): Kv => ({ key, value, create, mod, version, lease: 0 });

test('the watch checker catches gaps, duplicates, reorders, divergence, wrong kvs and bad resumes', () => {
  // rev 2: put a=1; rev 3: txn put b=2, put a=3 (op order b, a); rev 4: delete a; rev 5: put c=4.
  const states = new Map<number, Map<string, Kv>>([
    [1, new Map()],
    [2, new Map([['a', kv('a', '1', 2, 2, 1)]])],
    [3, new Map([['a', kv('a', '3', 2, 3, 2)], ['b', kv('b', '2', 3, 3, 1)]])],
    [4, new Map([['b', kv('b', '2', 3, 3, 1)]])],
    [5, new Map([['b', kv('b', '2', 3, 3, 1)], ['c', kv('c', '4', 5, 5, 1)]])],
  ]);
  const txn = [{ t: 'put' as const, key: 'b', value: '2' }, { t: 'put' as const, key: 'a', value: '3' }];
  const ops = new Map([['1', [{ t: 'put' as const, key: 'a', value: '1' }]], ['2', txn], ['3', txn], ['4', [{ t: 'put' as const, key: 'c', value: '4' }]]]);
  const oracle = buildOracle(5, (r) => states.get(r)!, ops);
  assert.deepEqual(oracle.problems, []);
  assert.deepEqual(oracle.events.map((e) => `${e.rev}:${e.key}:${e.type}`), ['2:a:0', '3:b:0', '3:a:0', '4:a:1', '5:c:0'], 'sub-revision order from the txn');
  const ev = (i: number, header = 5): WatchEvent => {
    const e = oracle.events[i]!;
    return { rev: e.rev, key: e.key, type: e.type, kv: e.kv, prev: e.prev, header };
  };
  const spec: WatchSpec = { name: 'w', home: 0, range: { key: 'a', end: 'z' }, startRev: 1, prevKv: true, requireLeader: false };
  const one = (events: WatchEvent[]): WatchRecord[] => [{ spec, segments: [{ member: 0, startRev: 1, created: 1, events }] }];
  const kinds = (recs: WatchRecord[]): string[] => [...new Set(checkWatchRecords(oracle, recs).map((v) => v.kind))].sort();

  assert.deepEqual(kinds(one([0, 1, 2, 3, 4].map((i) => ev(i)))), [], 'the right stream passes');
  assert.deepEqual(kinds(one([0, 1, 3, 4].map((i) => ev(i)))), ['gap'], 'a gap inside a txn');
  assert.deepEqual(kinds(one([0, 1, 2, 3].map((i) => ev(i)))), ['gap'], 'a missing tail');
  assert.deepEqual(kinds(one([0, 1, 2, 2, 3, 4].map((i) => ev(i)))), ['duplicate']);
  assert.deepEqual(kinds(one([0, 2, 1, 3, 4].map((i) => ev(i)))), ['order'], 'txn events in the wrong sub-revision order');
  assert.deepEqual(kinds(one([0, 3, 1, 2, 4].map((i) => ev(i)))), ['order'], 'revisions out of order');
  const wrongValue = ev(4);
  wrongValue.kv = { ...wrongValue.kv, value: 'x' };
  assert.deepEqual(kinds(one([ev(0), ev(1), ev(2), ev(3), wrongValue])), ['kv']);
  const noPrev = ev(2);
  noPrev.prev = null;
  assert.deepEqual(kinds(one([ev(0), ev(1), noPrev, ev(3), ev(4)])), ['prev_kv']);
  assert.deepEqual(kinds(one([ev(0), ev(1), ev(2), ev(3), ev(4, 4)])), ['header']);
  const extra = { ...ev(4, 6), rev: 6, kv: { ...ev(4).kv, mod: 6 } };
  assert.deepEqual(kinds(one([ev(0), ev(1), ev(2), ev(3), ev(4), extra])), ['spurious']);
  // Two segments: resumed at the right revision, then one that skipped ahead.
  const resumed = (startRev: number, after: number[]): WatchRecord[] => [{
    spec, segments: [{ member: 0, startRev: 1, created: 1, events: [ev(0), ev(1), ev(2)] }, { member: 1, startRev, created: 5, events: after.map((i) => ev(i)) }],
  }];
  assert.deepEqual(kinds(resumed(4, [3, 4])), [], 'a resumed stream passes');
  assert.deepEqual(kinds(resumed(5, [4])), ['gap', 'resume']);
  assert.deepEqual(kinds(resumed(3, [1, 2, 3, 4])), ['duplicate', 'resume'], 'resumed too early: the txn again');
  // Two members disagreeing about one event.
  const other: WatchRecord = { spec: { ...spec, name: 'w2', home: 1 }, segments: [{ member: 1, startRev: 1, created: 1, events: [ev(0), ev(1), ev(2), ev(3), wrongValue] }] };
  assert.deepEqual(kinds([...one([0, 1, 2, 3, 4].map((i) => ev(i))), other]), ['divergent', 'kv']);
  // The history itself: a put of a value nobody wrote.
  const bad = buildOracle(5, (r) => r === 5 ? new Map([...states.get(5)!, ['d', kv('d', '?', 5, 5, 1)]]) : states.get(r)!, ops);
  assert.equal(bad.problems.length, 1);
  assert.equal(PUT, 0);
});
