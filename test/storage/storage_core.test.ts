// The storage worker's durability contract, one finding of issue #10 at a time, on the
// simulated disk and store engine (test/helpers/sim_disk.ts, sim_engine.ts) so that the power
// can go at any chosen moment:
//  - finding 3: a batch carrying only a new term and vote is synced before Persisted, and a
//    power cut right after Persisted keeps them;
//  - finding 1: every state the backend can leave at a crash holds whole entries with their
//    applied index: replay from any of them ends in the same state (a lease revoke whose key
//    deletions span several backend batches included);
//  - finding 6: a failed fdatasync or WAL write stops the storage with a clear message before
//    anything more is acknowledged; a failed store commit raises NOSPACE, reads go on, the
//    commit is retried and the alarm clears; a failed preallocation of the next WAL segment
//    raises NOSPACE until a retry succeeds.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Long from 'long';

import { concordpb, etcdserverpb } from '../../src/gen/proto';
import type { Entry, HardState } from '../../src/raft/types';
import { Prng } from '../../src/util/prng';
import { ErrorCode } from '../../src/util/errors';
import { StorageCore } from '../../src/workers/storage_core';
import {
  decodeApplied, decodeEntries, decodePersisted, encodeBatch, PackWriter, ReadKind, ReadRequest, WorkerAlarm,
  WorkerInit, WorkerMessageType,
} from '../../src/workers/protocol';
import { newStatsBuffer } from '../../src/workers/stats';
import { newRingBuffer } from '../../src/watch/ring';
import { SimDisk, noDiskFaults } from '../helpers/sim_disk';
import { SimEngine, SimStore, noEngineFaults } from '../helpers/sim_engine';
import { drainMicrotasks, SimScheduler } from '../helpers/sim_scheduler';

const dataDir = '/sim/data';

function init(): WorkerInit {
  return {
    type: WorkerMessageType.Init, dataDir, mapSizeBytes: 1 << 30, walSegmentBytes: 64 * 1024,
    statsBuffer: newStatsBuffer(), watchEventRing: newRingBuffer(64 * 1024), watchCompactRev: new SharedArrayBuffer(8),
    leaseTtlMin: 5, unsafeNoFsync: false,
  };
}

/** One storage process on a simulated disk and store, with everything it posts recorded. */
class Node {
  readonly core: StorageCore;
  readonly persisted: { seq: number; index: number; term: number }[] = [];
  readonly results = new Map<number, { code: number; response: Uint8Array }>();
  readonly reads = new Map<number, { code: number; response: Uint8Array }>();
  readonly alarms: WorkerAlarm[] = [];
  fatal: string | null = null;
  applied = 0;
  readonly ready;
  private readonly w = new PackWriter(1024);
  private seq = 0;

  constructor(readonly sched: SimScheduler, readonly disk: SimDisk, readonly engine: SimEngine, batchLimit = 1000) {
    this.core = new StorageCore(init(), {
      io: disk, engine, timers: sched, backendBatchLimit: batchLimit, backendBatchIntervalMs: 10,
      post: (m) => this.onPost(m),
      alarm: (a) => this.alarms.push(a),
      fatal: (message) => {
        this.fatal = message;
      },
    });
    this.ready = this.core.ready();
  }

  private onPost(m: Uint8Array): void {
    if (this.fatal !== null) assert.fail(`posted after the fatal error: ${this.fatal}`);
    if (m[0] === WorkerMessageType.Persisted) {
      this.persisted.push(decodePersisted(m));
      return;
    }
    const h = decodeApplied(m, {
      result: (id, code, response) => this.results.set(id, { code, response: Uint8Array.from(response) }),
      read: (id, code, response) => this.reads.set(id, { code, response: Uint8Array.from(response) }),
      leaseChange: () => undefined,
    });
    this.applied = h.appliedIndex;
  }

  /** Sends one Batch; returns its seq. */
  batch(hs: HardState | null, mustSync: boolean, append: Entry[], apply: Entry[], reads: ReadRequest[] = []): number {
    const seq = ++this.seq;
    this.core.batch(encodeBatch(this.w, { seq, hardState: hs, mustSync, raftTerm: hs?.term ?? 1, append, apply, reads }));
    return seq;
  }

  async run(until: () => boolean, stepsMax = 10_000): Promise<void> {
    for (let i = 0; i < stepsMax && !until(); i++) {
      await drainMicrotasks();
      if (!this.sched.step()) break;
    }
    await drainMicrotasks();
  }
}

function fresh(batchLimit = 1000): { sched: SimScheduler; disk: SimDisk; store: SimStore; node: Node } {
  const sched = new SimScheduler();
  const prng = new Prng(7);
  const disk = new SimDisk(sched, prng);
  const store = new SimStore();
  const node = new Node(sched, disk, new SimEngine(store, sched, prng), batchLimit);
  return { sched, disk, store, node };
}

function restart(sched: SimScheduler, disk: SimDisk, store: SimStore, batchLimit = 1000): Node {
  sched.clear();
  return new Node(sched, disk, new SimEngine(store, sched, new Prng(9)), batchLimit);
}

let nextId = 1;
function entry(index: number, req: concordpb.InternalRequest.$Properties, term = 1): Entry {
  req.id = nextId++;
  return { index, term, type: 0, data: concordpb.InternalRequest.encode(req).finish() };
}

const rangeAll = (id: number): ReadRequest => ({
  id, kind: ReadKind.Range, linearizable: false,
  request: etcdserverpb.RangeRequest.encode({ key: Buffer.from([0]), range_end: Buffer.from([0]) }).finish(),
});

function keysOf(response: Uint8Array): string[] {
  return etcdserverpb.RangeResponse.decode(response).kvs.map((kv) => Buffer.from(kv.key ?? []).toString());
}

describe('storage durability contract', () => {
  test('finding 3: a term and vote alone are synced before Persisted and survive a power cut right after', async () => {
    const { sched, disk, store, node } = fresh();
    const seq = node.batch({ term: 5, vote: 2, commit: 0 }, true, [], []);
    await node.run(() => node.persisted.some((p) => p.seq >= seq));
    assert.ok(node.persisted.some((p) => p.seq >= seq), 'Persisted for a batch with only a hard state');
    disk.powerCut(0, false); // only what was synced
    const after = restart(sched, disk, store);
    assert.deepEqual(after.ready.hardState, { term: 5, vote: 2, commit: 0 });
  });

  test('finding 3: a commit-only hard state needs no sync (raft MustSync): acknowledged with the sync before it, or at once', async () => {
    const { sched, node } = fresh();
    const e1 = entry(1, { put: { key: Buffer.from('k'), value: Buffer.from('v') } });
    const s1 = node.batch({ term: 1, vote: 1, commit: 1 }, true, [e1], [e1]);
    // Sent while the first sync runs: rides on it.
    const s2 = node.batch({ term: 1, vote: 1, commit: 1 }, false, [], []);
    assert.equal(node.persisted.length, 0, 'nothing acknowledged before the sync returns');
    await node.run(() => node.applied >= 1);
    assert.deepEqual(node.persisted.map((p) => p.seq), [s2], 'one acknowledgement covers both');
    assert.ok(s2 > s1);
    // With no sync pending it needs none: acknowledged at once, without an fdatasync.
    const pending = sched.pending;
    const s3 = node.batch({ term: 1, vote: 1, commit: 1 }, false, [], []);
    assert.deepEqual(node.persisted.at(-1), { seq: s3, index: 1, term: 1 });
    assert.equal(sched.pending, pending, 'no fdatasync was started');
  });

  test('finding 1: every state a crash can leave in the backend replays to the same end, a revoke spanning batches included', async () => {
    const batchLimit = 3;
    const { sched, disk, store, node } = fresh(batchLimit);
    // Every committed state of the store, as a crash right after that commit would leave it.
    const states: SimStore[] = [];
    store.onCommit = (s) => states.push(s.clone());
    const lease = Long.fromNumber(777);
    const log: Entry[] = [entry(1, { lease_grant: { ID: lease, TTL: 60 } })];
    for (let i = 0; i < 10; i++) log.push(entry(log.length + 1, { put: { key: Buffer.from('k' + i), value: Buffer.alloc(50, i), lease } }));
    log.push(entry(log.length + 1, { put: { key: Buffer.from('other'), value: Buffer.from('x') } }));
    // One entry per batch, the backend committing in between, so that crash states fall
    // between all of them.
    for (const e of log) {
      node.batch({ term: 1, vote: 1, commit: e.index }, true, [e], [e]);
      await node.run(() => node.applied >= e.index && sched.pending === 0);
    }
    // Then, in one apply loop (as a loaded server applies), the revoke (10 deletions: more than
    // a backend batch) and writes after it: before the fix a batch cut by those writes carried
    // the revoke's lease removal with the applied index of before the loop.
    const tail = [entry(log.length + 1, { lease_revoke: { ID: lease } })];
    for (const k of ['after', 'after2', 'after3']) tail.push(entry(log.length + tail.length + 1, { put: { key: Buffer.from(k), value: Buffer.from('y') } }));
    log.push(...tail);
    const last = log.length;
    node.batch({ term: 1, vote: 1, commit: last }, true, tail, tail);
    await node.run(() => node.applied >= last && sched.pending === 0);
    assert.ok(states.length >= 4, `several backend commits (${states.length})`);
    const synced = disk.cloneDurable(new SimScheduler(), new Prng(1));
    for (const [i, state] of states.entries()) {
      const s2 = new SimScheduler();
      const replayDisk = synced.cloneDurable(s2, new Prng(2));
      const n = new Node(s2, replayDisk, new SimEngine(state.clone(), s2, new Prng(3)), batchLimit);
      const entries = decodeEntries(n.ready.entries);
      assert.equal(entries.length, last, 'the whole log is in the WAL');
      n.batch({ term: 2, vote: 1, commit: last }, true, [], entries.filter((e) => e.index > n.ready.appliedIndex));
      await n.run(() => n.applied >= last);
      n.batch(null, false, [], [], [rangeAll(1)]);
      await n.run(() => n.reads.has(1));
      assert.deepEqual(keysOf(n.reads.get(1)!.response), ['after', 'after2', 'after3', 'other'], `state after commit ${i + 1} replays to the same end`);
      const revoke = [...n.results.values()].filter((r) => r.code === ErrorCode.LeaseNotFound);
      assert.deepEqual(revoke, [], `commit ${i + 1}: the replayed revoke found its lease`);
    }
  });

  test('finding 6: a failed fdatasync stops the storage before anything of that sync is acknowledged', async () => {
    const { disk, node } = fresh();
    disk.faults = { ...noDiskFaults, syncEio: 1 };
    const e1 = entry(1, { put: { key: Buffer.from('k'), value: Buffer.from('v') } });
    node.batch({ term: 1, vote: 1, commit: 1 }, true, [e1], [e1], [rangeAll(1)]);
    await node.run(() => node.fatal !== null);
    assert.match(node.fatal ?? '', /wal: fdatasync of .*\.wal failed: EIO .*fsyncgate/);
    assert.deepEqual(node.persisted, []);
    assert.equal(node.results.size, 0, 'the put is never answered');
    // The read queued behind nothing was answered before the sync: it saw no write.
    assert.deepEqual(keysOf(node.reads.get(1)!.response), []);
    node.batch({ term: 1, vote: 1, commit: 2 }, true, [entry(2, { put: { key: Buffer.from('j'), value: Buffer.from('v') } })], []);
    assert.equal(node.results.size, 0, 'nothing is taken after the failure');
  });

  test('finding 6: a failed WAL write (EIO, a short write) stops the storage, naming the file', async () => {
    const { disk, node } = fresh();
    disk.faults = { ...noDiskFaults, writeEio: 1 };
    const e1 = entry(1, { put: { key: Buffer.from('k'), value: Buffer.from('v') } });
    node.batch({ term: 1, vote: 1, commit: 1 }, true, [e1], [e1]);
    await node.run(() => false, 50);
    assert.match(node.fatal ?? '', /wal: write of .*0000000000000001-0000000000000001\.wal failed: EIO/);
    assert.deepEqual(node.persisted, []);
    assert.equal(node.results.size, 0);
  });

  test('finding 6: a failed store commit raises NOSPACE, reads go on from memory, the retry clears it, nothing is lost', async () => {
    const { sched, disk, store, node } = fresh(2);
    await node.run(() => store.commits > 0); // the member ids, at start
    const commitsBefore = store.commits;
    node.engine.faults = { ...noEngineFaults, commitFail: 1 };
    const log: Entry[] = [];
    for (let i = 0; i < 6; i++) log.push(entry(i + 1, { put: { key: Buffer.from('k' + i), value: Buffer.from('v' + i) } }));
    node.batch({ term: 1, vote: 1, commit: 6 }, true, log, log);
    await node.run(() => node.alarms.length > 0);
    assert.deepEqual(node.alarms.map((a) => [a.source, a.raised]), [['backend', true]]);
    assert.match(node.alarms[0]!.message, /backend: commit failed: EIO/);
    assert.equal(store.commits, commitsBefore, 'nothing reached the store');
    await node.run(() => node.applied >= 6);
    node.batch(null, false, [], [], [rangeAll(1)]);
    await node.run(() => node.reads.has(1));
    assert.deepEqual(keysOf(node.reads.get(1)!.response), ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'], 'served from memory');
    node.engine.faults = noEngineFaults;
    await node.run(() => node.alarms.length > 1, 100_000);
    assert.deepEqual(node.alarms.map((a) => [a.source, a.raised]), [['backend', true], ['backend', false]]);
    disk.powerCut(0, false);
    const after = restart(sched, disk, store);
    after.batch({ term: 2, vote: 1, commit: 6 }, true, [], decodeEntries(after.ready.entries).filter((e) => e.index > after.ready.appliedIndex));
    await after.run(() => after.applied >= 6);
    after.batch(null, false, [], [], [rangeAll(2)]);
    await after.run(() => after.reads.has(2));
    assert.deepEqual(keysOf(after.reads.get(2)!.response), ['k0', 'k1', 'k2', 'k3', 'k4', 'k5']);
  });

  test('finding 6: the next WAL segment cannot be preallocated: NOSPACE until a retry succeeds', async () => {
    const { disk, node } = fresh();
    disk.faults = { ...noDiskFaults, preallocateEnospc: 1 };
    // Past half of the 64 KiB segment the next one is prepared in the background.
    const log: Entry[] = [];
    for (let i = 0; i < 40; i++) log.push(entry(i + 1, { put: { key: Buffer.from('k'), value: Buffer.alloc(1000, i) } }));
    node.batch({ term: 1, vote: 1, commit: 40 }, true, log, log);
    await node.run(() => node.alarms.length > 0);
    assert.deepEqual(node.alarms.map((a) => [a.source, a.raised]), [['wal', true]]);
    assert.match(node.alarms[0]!.message, /cannot preallocate the next segment: ENOSPC/);
    disk.faults = noDiskFaults;
    await node.run(() => node.alarms.length > 1, 100_000); // retried on a timer, with no writes
    assert.deepEqual(node.alarms.map((a) => [a.source, a.raised]), [['wal', true], ['wal', false]]);
    assert.equal(node.fatal, null);
  });
});
