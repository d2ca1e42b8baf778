// Differential tests of the Watch API: every scenario runs against a fresh real etcd 3.4 and a
// fresh concord (test/helpers/watch_diff.ts), and the full sequence of WatchResponses of every
// stream must be equal, header revisions included. Each scenario says in a comment what etcd
// does, and checks the most telling part of etcd's own record, so that a scenario cannot silently
// stop testing what it claims.

import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { etcdSkipReason } from '../helpers/etcd';
import { prefixEnd } from '../helpers/grpc_client';
import { responsesOf, runWatchScenario, segmentOf, type Resp, type ScenarioOpts, type ScenarioResult, type SideResult, type Step } from '../helpers/watch_diff';

const ZERO = '\0';
const end = (p: string): string => prefixEnd(Buffer.from(p, 'latin1')).toString('latin1');

/** `n` puts `${prefix}${i}` = `${value}${i}`, no waiting (for building history before any stream). */
function puts(prefix: string, n: number, value = 'v', from = 0): Step[] {
  return Array.from({ length: n }, (_, i) => ({ put: `${prefix}${from + i}`, value: `${value}${from + i}`, wait: false as const }));
}

type Ev = { type: string; kv: Record<string, string>; prev_kv: Record<string, string> | null };
const eventsOf = (r: Resp): Ev[] => r.events as Ev[];
/** 'PUT a=1@5' / 'DELETE a@6' (+ ' prev=0@4' when prev_kv is set) for each event of `rs`. */
function evs(rs: Resp[]): string[] {
  return rs.flatMap((r) => eventsOf(r).map((e) => {
    const kv = e.type === 'PUT' ? `${e.kv.key}=${e.kv.value}@${e.kv.mod_revision}` : `${e.kv.key}@${e.kv.mod_revision}`;
    return `${r.watch_id} ${e.type} ${kv}${e.prev_kv ? ` prev=${e.prev_kv.value}@${e.prev_kv.mod_revision}` : ''}`;
  }));
}
/** runWatchScenario labelled with the test's name (for failure messages). */
const run = (t: TestContext, steps: Step[], opts: ScenarioOpts = {}): Promise<ScenarioResult> => runWatchScenario(steps, { ...opts, label: t.name });
const rev = (r: Resp): string => (r.header as { revision: string } | null)?.revision ?? 'none';

describe('Watch differential vs etcd', { skip: etcdSkipReason(), concurrency: 3 }, () => {
  test('single key, start_revision 0: only that key, every event field, tombstones', async (t) => {
    // etcd: created at the current revision; one response per write with the event, header
    // revision = the write's revision; DELETE events carry only key and mod_revision; a delete
    // of nothing and writes to other keys (ab, b) send nothing.
    const r = await run(t, [
      { put: 'a', value: 'before' },
      { open: 's' },
      { create: { key: 'a' } },
      { put: 'a', value: '1' },
      { put: 'ab', value: 'x' },
      { put: 'b', value: 'y' },
      { put: 'a', value: '' },
      { del: 'a' },
      { del: 'a' },
      { put: 'a', value: 'again' },
      { txn: [{ put: 'b', value: 'z' }, { put: 'a', value: 'in-txn' }] },
      { del: 'a', range_end: 'b' },
    ]);
    const s = responsesOf(r.etcd, 's');
    assert.equal(rev(s[0]!), '2');
    assert.deepEqual(evs(s), ['0 PUT a=1@3', '0 PUT a=@6', '0 DELETE a@7', '0 PUT a=again@8', '0 PUT a=in-txn@9', '0 DELETE a@10']);
    assert.deepEqual(eventsOf(s[3]!)[0]!.kv, { key: 'a', create_revision: '0', mod_revision: '7', version: '0', value: '', lease: '0' });
  });

  test('range, prefix, from-key, all keys: many watchers on one stream', async (t) => {
    // etcd: range_end "\0" means every key >= key; key "" is taken as "\0" (so key "" with
    // range_end "\0" is every key, and key "" alone watches the single key "\0"); a write that
    // several watchers see gives one response per watcher (in Go map order: compared by id).
    const r = await run(t, [
      { open: 's' },
      { create: { key: 'b', range_end: 'd' } }, // 0
      { create: { key: 'p/', range_end: end('p/') } }, // 1
      { create: { key: 'm', range_end: ZERO } }, // 2
      { create: { key: ZERO, range_end: ZERO } }, // 3
      { create: { key: '', range_end: ZERO } }, // 4
      { create: { key: '' } }, // 5
      { create: { key: ZERO } }, // 6
      { create: { key: '\xff', range_end: ZERO } }, // 7
      { create: { key: 'a', range_end: 'a\0' } }, // 8: exactly "a"
      { create: { key: 'c', range_end: '\0\0' } }, // 9: range_end "\0\0" < key: empty range
      ...['a', 'b', 'b/1', 'c', 'd', 'p', 'p/', 'p/x', 'p0', 'm', 'z', ZERO, '\0\0', '\xff', '\xff\xff', 'a\0'].map((k) => ({ put: k, value: k })),
    ]);
    const s = responsesOf(r.etcd, 's');
    assert.equal(s[9]!.cancel_reason, 'mvcc: watcher range is empty');
    const seen = (id: number): string[] => s.filter((x) => x.watch_id === String(id)).flatMap((x) => eventsOf(x).map((e) => e.kv.key!));
    assert.deepEqual(seen(0), ['b', 'b/1', 'c']);
    assert.deepEqual(seen(1), ['p/', 'p/x']);
    assert.deepEqual(seen(2), ['p', 'p/', 'p/x', 'p0', 'm', 'z', '\xff', '\xff\xff']);
    assert.equal(seen(3).length, 16);
    assert.equal(seen(4).length, 16);
    assert.deepEqual(seen(5), [ZERO]);
    assert.deepEqual(seen(7), ['\xff', '\xff\xff']);
    assert.deepEqual(seen(8), ['a']);
  });

  test('history replay: past revisions, txns with several events, deletes in txns, current and future revisions', async (t) => {
    // etcd: a watcher with start_revision <= current revision replays history in ONE response
    // (all revisions together, header = current revision) ~100 ms after the created response,
    // then is synced; start_revision = current + 1 is synced at once; a future start_revision
    // is created at once and ignores every revision below it. start_revision 1 on keys never
    // compacted replays from the first write.
    const r = await run(t, [
      { put: 'a', value: '1' }, // 2
      { put: 'b', value: '1' }, // 3
      { txn: [{ put: 'a', value: '2' }, { put: 'c', value: '1' }, { del: 'b' }] }, // 4
      { put: 'd', value: '1' }, // 5
      { del: 'a', range_end: 'z' }, // 6: a, c, d deleted at one revision
      { txn: [{ put: 'b', value: '2' }, { del: 'nothing' }, { put: 'a', value: '3' }] }, // 7
      { put: 'e', value: '1' }, // 8
      { open: 's' },
      { create: { key: ZERO, range_end: ZERO, start_revision: 1 } }, // 0
      { create: { key: 'a', range_end: 'c', start_revision: 4 } }, // 1
      { create: { key: ZERO, range_end: ZERO, start_revision: 8 } }, // 2: current revision
      { create: { key: ZERO, range_end: ZERO, start_revision: 9 } }, // 3: next revision, synced
      { create: { key: ZERO, range_end: ZERO, start_revision: 11 } }, // 4: future
      { create: { key: 'a', start_revision: 2, prev_kv: true } }, // 5
      { put: 'f', value: '1' }, // 9
      { put: 'a', value: '4' }, // 10
      { put: 'g', value: '1' }, // 11
    ]);
    const s = responsesOf(r.etcd, 's');
    const byId = (id: number): string[] => evs(s.filter((x) => x.watch_id === String(id)));
    assert.deepEqual(byId(0).slice(0, 12), ['0 PUT a=1@2', '0 PUT b=1@3', '0 PUT a=2@4', '0 PUT c=1@4', '0 DELETE b@4', '0 PUT d=1@5',
      '0 DELETE a@6', '0 DELETE c@6', '0 DELETE d@6', '0 PUT b=2@7', '0 PUT a=3@7', '0 PUT e=1@8']);
    assert.deepEqual(byId(4), ['4 PUT g=1@11']);
    assert.deepEqual(byId(5), ['5 PUT a=1@2', '5 PUT a=2@4 prev=1@2', '5 DELETE a@6 prev=2@4', '5 PUT a=3@7', '5 PUT a=4@10 prev=3@7']);
    const replay = s.find((x) => x.watch_id === '0' && !x.created)!;
    assert.equal(rev(replay), '8');
    assert.equal(eventsOf(replay).length, 12);
  });

  test('history replay of more than 1000 revisions is split at 1000 revisions per response', async (t) => {
    // etcd (watchBatchMaxRevs): an unsynced watcher gets at most 1000 revisions per response;
    // the rest follows in the next sync round.
    const r = await run(t, [
      ...puts('k', 1100),
      { open: 's' },
      { create: { key: 'k', range_end: 'l', start_revision: 1 } },
      { create: { key: 'k', range_end: 'l', start_revision: 50, prev_kv: true, filters: ['NODELETE'] } },
      { put: 'k0', value: 'last' },
    ], { quietMs: 400 });
    const s = responsesOf(r.etcd, 's');
    const w0 = s.filter((x) => x.watch_id === '0' && !x.created).map((x) => eventsOf(x).length);
    assert.deepEqual(w0, [1000, 100, 1]);
  });

  test('compacted start revision: created, then canceled with compact_revision; what survives a compaction', async (t) => {
    // etcd: start_revision below the compaction revision -> a created response (header = current
    // revision), then a canceled response with compact_revision = the compaction revision and
    // header.revision 0; start_revision = the compaction revision works. A delete at exactly the
    // compaction revision is gone from the history (the tombstone is compacted away), and an
    // event at the compaction revision gets no prev_kv (the revision before it is compacted).
    // Watchers created before the compaction are not affected.
    const r = await run(t, [
      { put: 'a', value: '1' }, // 2
      { put: 'b', value: '1' }, // 3
      { put: 'a', value: '2' }, // 4
      { open: 's' },
      { create: { key: 'a', range_end: 'z' } }, // 0: synced before the compaction
      { put: 'c', value: '1' }, // 5
      { txn: [{ put: 'b', value: '2' }, { del: 'c' }] }, // 6
      { compact: 6 },
      { put: 'a', value: '3' }, // 7
      { create: { key: 'a', range_end: 'z', start_revision: 5 } }, // 1: compacted
      { create: { key: 'a', range_end: 'z', start_revision: 1 } }, // 2: compacted
      { create: { key: 'a', range_end: 'z', start_revision: 6, prev_kv: true } }, // 3
      { create: { key: 'a', range_end: 'z', start_revision: 7, prev_kv: true } }, // 4
      { create: { key: 'a', start_revision: -3 } }, // 5: negative
      { put: 'b', value: '3' }, // 8
    ]);
    const s = responsesOf(r.etcd, 's');
    const canceled = s.filter((x) => x.canceled);
    assert.deepEqual(canceled.map((x) => [x.watch_id, x.compact_revision, rev(x), x.created]),
      [['1', '6', '0', false], ['2', '6', '0', false], ['5', '6', '0', false]]);
    assert.deepEqual(evs(s.filter((x) => x.watch_id === '3')), ['3 PUT b=2@6', '3 PUT a=3@7 prev=2@4', '3 PUT b=3@8 prev=2@6']);
    assert.deepEqual(evs(s.filter((x) => x.watch_id === '0')), ['0 PUT c=1@5', '0 PUT b=2@6', '0 DELETE c@6', '0 PUT a=3@7', '0 PUT b=3@8']);
  });

  test('start_revision edge cases on a store never compacted', async (t) => {
    // etcd: the compaction revision of a store never compacted is -1: start_revision -1 is
    // accepted (replays from the start, like 1), start_revision < -1 is "compacted": created,
    // then canceled with compact_revision -1 and header.revision 0. start_revision 1 on a fresh
    // store replays nothing (revision 1 has no events) and is then synced.
    const r = await run(t, [
      { open: 's' },
      { create: { key: 'a', start_revision: 1 } },
      { create: { key: 'a', start_revision: -1 } },
      { create: { key: 'a', start_revision: -100 } },
      { put: 'a', value: '1' },
      { create: { key: 'a', start_revision: 1, prev_kv: true } },
    ]);
    const s = responsesOf(r.etcd, 's');
    assert.deepEqual(s.filter((x) => x.canceled).map((x) => [x.watch_id, x.compact_revision, rev(x)]), [['2', '-1', '0']]);
    assert.deepEqual(evs(s), ['0 PUT a=1@2', '1 PUT a=1@2', '3 PUT a=1@2']);
  });

  test('filters NOPUT, NODELETE, both; with history and prev_kv', async (t) => {
    // etcd: filtered events are left out of the response; a response left with no event is not
    // sent at all (a watcher with both filters never gets anything but its created response).
    const r = await run(t, [
      { put: 'a', value: '0' },
      { del: 'a' },
      { open: 's' },
      { create: { key: 'a', range_end: 'c', filters: ['NOPUT'] } }, // 0
      { create: { key: 'a', range_end: 'c', filters: ['NODELETE'] } }, // 1
      { create: { key: 'a', range_end: 'c', filters: ['NOPUT', 'NODELETE'] } }, // 2
      { create: { key: 'a', range_end: 'c', filters: ['NOPUT'], prev_kv: true } }, // 3
      { create: { key: 'a', range_end: 'c', filters: ['NODELETE', 'NODELETE'] } }, // 4
      { create: { key: 'a', range_end: 'c', filters: ['NOPUT'], start_revision: 1, prev_kv: true } }, // 5
      { put: 'a', value: '1' },
      { put: 'b', value: '1' },
      { del: 'a' },
      { txn: [{ put: 'a', value: '2' }, { del: 'b' }] },
      { del: 'a', range_end: 'c' },
    ]);
    const s = responsesOf(r.etcd, 's');
    assert.equal(s.filter((x) => x.watch_id === '2').length, 1, 'both filters: only the created response');
    assert.deepEqual(evs(s.filter((x) => x.watch_id === '3')), ['3 DELETE a@6 prev=1@4', '3 DELETE b@7 prev=1@5', '3 DELETE a@8 prev=2@7']);
    assert.deepEqual(evs(s.filter((x) => x.watch_id === '5')),
      ['5 DELETE a@3 prev=0@2', '5 DELETE a@6 prev=1@4', '5 DELETE b@7 prev=1@5', '5 DELETE a@8 prev=2@7']);
  });

  test('prev_kv: put after put, delete, put after delete, multi-key delete, txn', async (t) => {
    // etcd: prev_kv is the key's previous version (all fields); a put that creates the key and a
    // put after a delete have no prev_kv; each DELETE of a DeleteRange has its own prev_kv.
    const r = await run(t, [
      { put: 'a', value: '0' },
      { open: 's' },
      { create: { key: 'a', range_end: 'z', prev_kv: true } },
      { create: { key: 'a', range_end: 'z' } },
      { put: 'a', value: '1' },
      { put: 'a', value: '2' },
      { put: 'b', value: '1' },
      { del: 'a' },
      { put: 'a', value: '3' },
      { txn: [{ put: 'c', value: '1' }, { put: 'a', value: '4' }, { del: 'b' }] },
      { del: 'a', range_end: 'z' },
    ]);
    const s = responsesOf(r.etcd, 's');
    assert.deepEqual(evs(s.filter((x) => x.watch_id === '0')), ['0 PUT a=1@3 prev=0@2', '0 PUT a=2@4 prev=1@3', '0 PUT b=1@5',
      '0 DELETE a@6 prev=2@4', '0 PUT a=3@7', '0 PUT c=1@8', '0 PUT a=4@8 prev=3@7', '0 DELETE b@8 prev=1@5',
      '0 DELETE a@9 prev=4@8', '0 DELETE c@9 prev=1@8']);
  });

  test('watch ids: client-chosen, duplicate, auto ids after chosen ones, negative ids, 0 = auto', async (t) => {
    // etcd 3.4: watch_id 0 asks for an automatic id; auto ids count up from 0 and skip ids in use;
    // a duplicate id answers created+canceled with watch_id -1 and cancel_reason
    // "mvcc: duplicate watch ID provided on the WatchStream"; negative ids, -1 included, are
    // accepted as given; an id is free again once canceled.
    const r = await run(t, [
      { open: 's' },
      { create: { key: 'a', watch_id: 2 } },
      { create: { key: 'a' } },
      { create: { key: 'a' } },
      { create: { key: 'a' } },
      { create: { key: 'a', watch_id: 2 } },
      { create: { key: 'b', watch_id: 100 } },
      { create: { key: 'a', watch_id: 0 } },
      { create: { key: 'a', watch_id: -7 } },
      { create: { key: 'a', watch_id: -1 } },
      { create: { key: 'a', watch_id: -1 } },
      { put: 'a', value: '1' },
      { cancel: 2 },
      { create: { key: 'a', watch_id: 2, prev_kv: true } },
      { create: { key: 'a', watch_id: 100 } },
      { put: 'a', value: '2' },
      { put: 'b', value: '2' },
    ]);
    const s = responsesOf(r.etcd, 's');
    const created = s.filter((x) => x.created).map((x) => `${x.watch_id}${x.canceled ? ` canceled: ${x.cancel_reason}` : ''}`);
    assert.deepEqual(created, ['2', '0', '1', '3', '-1 canceled: mvcc: duplicate watch ID provided on the WatchStream', '100', '4', '-7', '-1',
      '-1 canceled: mvcc: duplicate watch ID provided on the WatchStream', '2', '-1 canceled: mvcc: duplicate watch ID provided on the WatchStream']);
  });

  test('invalid ranges and odd create requests', async (t) => {
    // etcd: key >= range_end (range_end not "\0") -> created + canceled, watch_id -1 (even with a
    // chosen watch_id), cancel_reason "mvcc: watcher range is empty", header = current revision;
    // the range check comes before the duplicate-id check. An empty create request watches "\0".
    const r = await run(t, [
      { put: 'x', value: '1' },
      { open: 's' },
      { create: { key: 'b', range_end: 'a' } },
      { create: { key: 'b', range_end: 'b' } },
      { create: { key: 'b', range_end: 'a', watch_id: 9 } },
      { create: {} },
      { create: { key: 'b', range_end: 'a', watch_id: 0 } },
      { create: { key: 'a', range_end: 'c' } },
      { create: { key: 'b', range_end: 'a', watch_id: 1 } },
      { create: { key: 'a', range_end: 'b', watch_id: 1 } },
      { put: ZERO, value: 'nul' },
      { put: 'a', value: '1' },
    ]);
    const s = responsesOf(r.etcd, 's');
    const empty = s.filter((x) => x.cancel_reason === 'mvcc: watcher range is empty');
    assert.deepEqual(empty.map((x) => [x.watch_id, x.created, rev(x)]), Array(5).fill(['-1', true, '2']));
  });

  test('cancel: existing, again, unknown, then events stop; cancel on one stream does not touch another', async (t) => {
    // etcd: canceling a watcher answers {watch_id, canceled: true} with header = current
    // revision (created false, no reason); canceling an id that is not (or no longer) there gets
    // no answer at all.
    const r = await run(t, [
      { open: 's' },
      { create: { key: 'a' } },
      { create: { key: 'a' } },
      { open: 't' },
      { create: { key: 'a' } },
      { put: 'a', value: '1' },
      { cancel: 0, on: 's' },
      { cancel: 0, on: 's' },
      { cancel: 42, on: 's' },
      { cancel: -1, on: 's' },
      { put: 'a', value: '2' },
      { cancel: 1, on: 's' },
      { put: 'a', value: '3' },
      { create: { key: 'a' }, on: 's' },
      { put: 'a', value: '4' },
    ]);
    const s = responsesOf(r.etcd, 's');
    assert.deepEqual(s.filter((x) => x.canceled).map((x) => [x.watch_id, rev(x), x.created, x.cancel_reason]), [['0', '2', false, ''], ['1', '3', false, '']]);
    assert.equal(segmentOf(r.etcd, 's', 7).length, 0, 'second cancel: no answer');
    assert.equal(segmentOf(r.etcd, 's', 8).length, 0, 'unknown id: no answer');
    assert.equal(responsesOf(r.etcd, 't').length, 5);
  });

  test('progress request (WatchProgressRequest) on synced streams', async (t) => {
    // etcd 3.4: a progress request answers one response with watch_id -1, no events, header =
    // current revision; also on a stream that has no watcher.
    const r = await run(t, [
      { open: 'empty' },
      { progress: true },
      { put: 'a', value: '1' },
      { progress: true, on: 'empty' },
      { open: 's' },
      { create: { key: 'a' } },
      { create: { key: 'b', range_end: 'c' } },
      { progress: true },
      { put: 'a', value: '2' },
      { put: 'x', value: '2' },
      { progress: true },
      { progress: true },
    ]);
    assert.deepEqual(responsesOf(r.etcd, 'empty').map((x) => [x.watch_id, rev(x)]), [['-1', '1'], ['-1', '2']]);
    assert.deepEqual(segmentOf(r.etcd, 's', 10).map((x) => [x.watch_id, rev(x), eventsOf(x).length]), [['-1', '4', 0]]);
  });

  test('progress_notify with --experimental-watch-progress-notify-interval=500ms (shape)', async (t) => {
    // etcd: every interval (plus up to 10% jitter) each watcher created with progress_notify that
    // is synced and got no event since the last tick receives {watch_id, header = current
    // revision, no events}; watchers without progress_notify get none. How many arrive depends
    // on timing, so the comparison is on the set of (stream, watch_id, revision) of these
    // notifications, everything else exactly.
    const progressOnly = (x: Resp): boolean => !x.created && !x.canceled && (x.events as unknown[]).length === 0 && x.watch_id !== '-1';
    const shape = (side: SideResult): unknown => {
      const out: Record<string, unknown> = {};
      for (const [name, rec] of Object.entries(side.streams)) {
        const notes = new Set<string>();
        for (const seg of rec.segments) for (const x of seg.responses) if (progressOnly(x)) notes.add(`${x.watch_id}@${rev(x)}`);
        out[name] = {
          notifications: [...notes].sort(),
          rest: rec.segments.map((seg) => ({ step: seg.step, responses: seg.responses.filter((x) => !progressOnly(x)) })),
          end: rec.end,
        };
      }
      return { streams: out, kv: side.kv };
    };
    const r = await run(t, [
      { put: 'a', value: '1' },
      { open: 's' },
      { create: { key: 'a', progress_notify: true } }, // 0
      { create: { key: 'b' } }, // 1: no progress_notify
      { create: { key: 'a', progress_notify: true, start_revision: 1 } }, // 2
      { sleep: 1200 },
      { put: 'a', value: '2' },
      { put: 'b', value: '2' },
      { sleep: 1200 },
    ], { serverArgs: ['--experimental-watch-progress-notify-interval', '500ms'], shape });
    const got = (shape(r.etcd) as { streams: { s: { notifications: string[] } } }).streams.s.notifications;
    assert.deepEqual(got, ['0@2', '0@4', '2@2', '2@4']);
  });

  test('fragment: large history replay and a large revision with fragment=true and fragment=false (--max-request-bytes 65536)', async (t) => {
    // etcd 3.4: the watch server splits a response only for a watcher created with
    // fragment=true, when the response has at least 2 events and is at least max-request-bytes
    // + 512 KiB (grpc overhead) in protobuf size: events are added to a fragment while the
    // fragment stays below that size; every fragment but the last has fragment=true, all have
    // the same header and watch_id. fragment=false sends it whole.
    const big = (i: number, n: number): string => `${String(i).padStart(3, '0')}${'x'.repeat(n - 3)}`;
    const steps: Step[] = [];
    for (let i = 0; i < 12; i++) steps.push({ put: `k${String(i).padStart(2, '0')}`, value: big(i, 60_000), wait: false });
    // Small values after the big ones: the fragment boundary falls among them, so it is pinned
    // to within ~1 KB.
    for (let i = 0; i < 60; i++) steps.push({ put: `m${String(i).padStart(2, '0')}`, value: big(i, 1000), wait: false });
    steps.push(
      { open: 's' },
      { create: { key: 'k', range_end: 'l', start_revision: 1, fragment: true } }, // 0
      { create: { key: 'k', range_end: 'l', start_revision: 1 } }, // 1
      { create: { key: 'k', range_end: 'l', start_revision: 1, fragment: true, prev_kv: true } }, // 2
      { create: { key: ZERO, range_end: ZERO, start_revision: 3, fragment: true } }, // 3
      { create: { key: 'm', range_end: 'n', start_revision: 1, fragment: true } }, // 4: small, not split
      { del: 'k', range_end: 'l' },
    );
    const r = await run(t, steps, { serverArgs: ['--max-request-bytes', '65536'], quietMs: 300 });
    const s = responsesOf(r.etcd, 's').filter((x) => !x.created);
    const shape = s.map((x) => `${x.watch_id}:${eventsOf(x).length}${x.fragment ? '+' : ''}@${rev(x)}`);
    assert.deepEqual(shape.filter((x) => !x.startsWith('3:') && !x.startsWith('4:')),
      ['0:9+@73', '0:3@73', '1:12@73', '2:9+@73', '2:3@73', '0:12@74', '1:12@74', '2:9+@74', '2:3@74']);
    assert.ok(shape.filter((x) => x.startsWith('3:')).length >= 2, 'the mixed replay is split');
  });

  test('several streams: per-stream ids, same key on each, half-close keeps events flowing, abort', async (t) => {
    // etcd: watch ids are per stream (each starts at 0); a client half-close (end of the request
    // stream) does not end the response stream, events keep coming; a client-canceled stream
    // does not disturb the others; a stream opened later works.
    const r = await run(t, [
      { open: 's1' },
      { create: { key: 'a' } },
      { open: 's2' },
      { create: { key: 'a', prev_kv: true } },
      { create: { key: 'b' } },
      { open: 's3' },
      { create: { key: 'a', range_end: 'c' } },
      { put: 'a', value: '1' },
      { halfClose: 's2' },
      { put: 'a', value: '2' },
      { abort: 's3' },
      { put: 'b', value: '1' },
      { open: 's4' },
      { create: { key: 'b', start_revision: 1 } },
      { cancel: 0, on: 's1' },
      { put: 'a', value: '3' },
    ]);
    assert.deepEqual(responsesOf(r.etcd, 's2').filter((x) => x.created).map((x) => x.watch_id), ['0', '1']);
    assert.deepEqual(evs(responsesOf(r.etcd, 's2')), ['0 PUT a=1@2', '0 PUT a=2@3 prev=1@2', '1 PUT b=1@4', '0 PUT a=3@5 prev=2@3']);
    assert.equal(r.etcd.streams.s2!.end, undefined, 'half-closed stream still open');
  });

  test('many events in one revision: DeleteRange of many keys, txn order', async (t) => {
    // etcd: one response per revision: a DeleteRange of 50 keys gives one response with 50
    // DELETE events in key order; a txn's events come in the order of its operations.
    const r = await run(t, [
      ...puts('k', 50),
      { open: 's' },
      { create: { key: 'k', range_end: 'l' } },
      { create: { key: 'k', range_end: 'l', prev_kv: true } },
      { create: { key: ZERO, range_end: ZERO } },
      { del: 'k', range_end: 'l' },
      { txn: [{ put: 'z', value: '1' }, { put: 'k7', value: '1' }, { put: 'a', value: '1' }, { del: 'nothing' }, { put: 'k3', value: '1' }] },
    ]);
    const s = responsesOf(r.etcd, 's');
    const del0 = s.find((x) => x.watch_id === '0' && !x.created)!;
    assert.equal(eventsOf(del0).length, 50);
    assert.equal(eventsOf(del0)[1]!.kv.key, 'k1');
    assert.equal(eventsOf(del0)[2]!.kv.key, 'k10');
    assert.deepEqual(evs(s.filter((x) => x.watch_id === '2')).slice(-4), ['2 PUT z=1@53', '2 PUT k7=1@53', '2 PUT a=1@53', '2 PUT k3=1@53']);
  });

  test('a burst of writes without pauses: one response per revision, in order', async (t) => {
    // etcd: a synced watcher whose client keeps up gets one response per revision (100 writes,
    // 100 responses), in revision order, on every watcher of the stream.
    const burst: Step[] = Array.from({ length: 100 }, (_, i) => ({ put: `b${i % 7}`, value: `${i}`, wait: false as const }));
    const r = await run(t, [
      { open: 's' },
      { create: { key: 'b', range_end: 'c' } },
      { create: { key: 'b3', prev_kv: true } },
      { open: 't' },
      { create: { key: ZERO, range_end: ZERO, filters: ['NODELETE'] } },
      ...burst,
      { del: 'b', range_end: 'c' },
    ]);
    const s = responsesOf(r.etcd, 's').filter((x) => !x.created);
    assert.equal(s.filter((x) => x.watch_id === '0').length, 101);
    assert.equal(responsesOf(r.etcd, 't').filter((x) => !x.created).length, 100);
  });

  test('large values: a 1 MiB value with prev_kv in one response', async (t) => {
    // etcd: events are not split unless the watcher asked for fragments: a 1 MiB put with
    // prev_kv of a 1 MiB value is one ~2 MiB response.
    const big = (c: string): string => c.repeat(1 << 20);
    const r = await run(t, [
      { put: 'L', value: big('a') },
      { open: 's' },
      { create: { key: 'L', prev_kv: true } },
      // A ~2 MiB response can take longer than the default quiet period on a loaded machine.
      { put: 'L', value: big('b'), wait: 1000 },
      { create: { key: 'L', start_revision: 1 } },
    ]);
    const s = responsesOf(r.etcd, 's').filter((x) => !x.created);
    assert.deepEqual(s.map((x) => eventsOf(x).length), [1, 2]);
  });

  test('many watchers on one stream, partly canceled', async (t) => {
    // etcd: 40 watchers get ids 0..39 in order; each write gets one response per watcher it
    // concerns; after canceling every third watcher only the rest receive.
    const steps: Step[] = [{ open: 's' }];
    // watcher i: key k(i % 10), exact when floor(i / 10) is even, else the prefix k(i % 10)
    for (let i = 0; i < 40; i++) {
      steps.push({ create: { key: `k${i % 10}`, range_end: Math.floor(i / 10) % 2 ? `k${i % 10}\xff` : undefined, prev_kv: i % 3 === 0 }, wait: false });
    }
    steps.push({ sleep: 0 });
    steps.push({ put: 'k1', value: '1' }, { put: 'k1x', value: '1' }, { put: 'k5', value: '1' });
    for (let i = 0; i < 40; i += 3) steps.push({ cancel: i, wait: false });
    steps.push({ sleep: 0 });
    steps.push({ put: 'k1', value: '2' }, { put: 'k5', value: '2' });
    const r = await run(t, steps);
    const s = responsesOf(r.etcd, 's');
    assert.deepEqual(s.filter((x) => x.created).map((x) => Number(x.watch_id)), Array.from({ length: 40 }, (_, i) => i));
    assert.deepEqual(segmentOf(r.etcd, 's', 42).map((x) => x.watch_id), ['1', '11', '21', '31'], 'k1: 2 exact + 2 prefix watchers');
    assert.deepEqual(segmentOf(r.etcd, 's', 43).map((x) => x.watch_id), ['11', '31'], 'k1x: the prefix watchers');
    assert.deepEqual(responsesOf(r.etcd, 's').slice(-6).map((x) => x.watch_id), ['1', '11', '31', '5', '25', '35'], 'after the cancels');
  });
});
