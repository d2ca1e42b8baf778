// The storage worker: owns the WAL (raft log + hard state), the LMDB environment and the MVCC
// state.
//
// Per batch from the main thread, in this order:
//   1. write the new raft entries, then the hard state, to the WAL (page cache, no sync yet);
//   2. queue the committed entries; apply those already durable in the WAL to MVCC (index in
//      memory, records to LMDB in the background), encoding each response;
//   3. serve the reads: serializable ones at once, linearizable ones after the applies queued
//      before them;
//   4. post the answers of 2 and 3 at once;
//   5. when the WAL's fdatasync covering 1 returns, post Persisted, apply the entries it made
//      durable and answer them and the reads that waited. Nothing is answered before the entry
//      it reports on is on disk (raft.ts: the durability contract).
// One WAL fdatasync covers every batch written while the previous one ran (group commit), and
// all LMDB writes of one event turn share one LMDB transaction, committed in the background.
import { parentPort } from 'node:worker_threads';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import Long from 'long';
import { concordpb, etcdserverpb } from '../gen/proto';
import { Applier, RangeAnswer } from '../apply/applier';
import { KVStore, toNumber } from '../mvcc/kvstore';
import { Backend } from '../storage/backend';
import { Wal } from '../storage/wal';
import { StatSlot, WorkerStats } from './stats';
import * as schema from '../storage/schema';
import { assert } from '../util/assert';
import { ConcordError, errLeaseNotFound } from '../util/errors';
import {
  backendBatchIntervalMs, backendBatchLimit, compactionBatchKeys, logRetainEntries, protoDepthMax,
} from '../config/limits';
import { setProtoDepthMax } from '../util/proto_depth';
import { EventRingWriter } from '../watch/events';
import { LeaseStore } from '../lease/lease_store';
import type { Entry } from '../raft/types';
import {
  FromWorker, PackReader, PackWriter, ReadKind, ToWorker, WorkerInit, WorkerMessageType, WorkerReady,
} from './protocol';

type Header = etcdserverpb.ResponseHeader.$Properties;

setProtoDepthMax(protoDepthMax);

interface Compaction {
  rev: number;
  nextKey: string;
  /** Proposal ids waiting for the sweep to finish (physical compaction). */
  waiters: { id: number; response: Uint8Array }[];
}

class StorageWorker {
  private readonly backend: Backend;
  private readonly wal: Wal;
  private walReplay: { hardState: { term: number; vote: number; commit: number }; prevIndex: number; prevTerm: number; entries: Entry[] } | null;
  private readonly store: KVStore;
  private readonly applier: Applier;
  private readonly leases: LeaseStore;
  private readonly clusterId: Long;
  private readonly memberId: Long;
  private appliedIndex: number;
  /** Last raft index known durable in the WAL. Invariant: appliedIndex <= durableIndex. */
  private durableIndex: number;
  /** Committed entries waiting for their WAL fsync, oldest first from applyQueueHead. */
  private readonly applyQueue: Entry[];
  private applyQueueHead: number;
  /** Linearizable reads that arrived behind queued applies, in order. */
  private readonly deferredReads: { readId: number; kind: number; request: Uint8Array; after: number }[];
  /** Applied index that LMDB has made durable: the WAL may be released up to here. */
  private durableAppliedIndex: number;
  private raftTerm: number;
  private readonly results: PackWriter;
  private resultCount: number;
  private readonly reads: PackWriter;
  private readCount: number;
  private readonly leaseChanges = new PackWriter(1024);
  private compaction: Compaction | null;
  private compactionScheduled: boolean;
  private sizesAtMs: number;
  private sizes: { dbSize: number; dbSizeInUse: number };
  private readonly stats: WorkerStats;
  /** Every applied change, compaction and LMDB commit, for the watch worker. */
  private readonly events: EventRingWriter;
  /** The compaction revision for the watch worker, visible before the sweep removes anything. */
  private readonly compactRevShared: BigInt64Array;

  constructor(init: WorkerInit) {
    this.backend = new Backend({
      path: path.join(init.dataDir, schema.kvDir),
      mapSizeBytes: init.mapSizeBytes,
      batchIntervalMs: backendBatchIntervalMs,
      batchLimit: backendBatchLimit,
    });
    const opened = Wal.open({ dir: path.join(init.dataDir, schema.walDir), segmentBytes: init.walSegmentBytes });
    this.wal = opened.wal;
    const stats = new WorkerStats(init.statsBuffer);
    this.stats = stats;
    this.wal.syncObserver = (seconds) => stats.observe(StatSlot.WalFsync, seconds);
    this.backend.commitObserver = (seconds, writes) => {
      stats.observe(StatSlot.BackendCommit, seconds);
      stats.add(StatSlot.BackendCommitWrites, writes);
    };
    this.walReplay = opened.replay;
    this.store = new KVStore(this.backend);
    const keyLeases = this.store.restore();
    this.leases = new LeaseStore(this.backend, init.leaseTtlMin);
    this.leases.restore(keyLeases);
    this.compactRevShared = new BigInt64Array(init.watchCompactRev);
    Atomics.store(this.compactRevShared, 0, BigInt(this.store.compactMainRev));
    const events = new EventRingWriter(init.watchEventRing);
    this.events = events;
    this.store.changeObserver = (rev, changes) => events.revision(rev, changes);
    this.backend.metaCommitObserver = (name, value) => {
      if (name !== schema.metaCurrentRev) return;
      events.committed(schema.readU64(value, 0));
      events.flush();
    };
    this.applier = new Applier(this.store);
    this.applier.useLeases(this.leases);
    this.clusterId = this.loadId(schema.metaClusterId);
    this.memberId = this.loadId(schema.metaMemberId);
    this.backend.flush(); // new ids go to disk with the first commit, not 100 ms later
    this.appliedIndex = this.backend.getMetaU64(schema.metaConsistentIndex);
    const replayed = opened.replay.entries;
    this.durableIndex = replayed.length > 0 ? replayed[replayed.length - 1]!.index : opened.replay.prevIndex;
    this.applyQueue = [];
    this.applyQueueHead = 0;
    this.deferredReads = [];
    this.durableAppliedIndex = this.appliedIndex;
    this.raftTerm = 0;
    this.results = new PackWriter(64 * 1024);
    this.resultCount = 0;
    this.reads = new PackWriter(64 * 1024);
    this.readCount = 0;
    this.compaction = null;
    this.compactionScheduled = false;
    this.sizesAtMs = 0;
    this.sizes = this.backend.sizes();
    // A compaction that was scheduled but not finished before a restart is finished now.
    const scheduled = this.backend.getMetaU64(schema.metaScheduledCompact);
    const finished = this.backend.getMetaU64(schema.metaFinishedCompact);
    if (scheduled > finished) this.startCompaction(scheduled);
  }

  private loadId(name: string): Long {
    let b = this.backend.getMetaBytes(name);
    if (b === undefined) {
      b = randomBytes(8);
      b[0]! &= 0x7f; // keep it positive as int64 too
      this.backend.putMetaBytes(name, b);
    }
    return Long.fromBits(b.readUInt32BE(4), b.readUInt32BE(0), true);
  }

  ready(): WorkerReady {
    const replay = this.walReplay!;
    // The WAL is released only up to what LMDB holds durably, so it always reaches back to the
    // applied index; and LMDB never gets ahead of what the WAL made durable.
    assert(replay.prevIndex <= this.appliedIndex, 'wal released beyond the applied index');
    const lastIndex = replay.entries.length > 0 ? replay.entries[replay.entries.length - 1]!.index : replay.prevIndex;
    assert(this.appliedIndex <= lastIndex, 'applied index beyond the wal');
    const w = new PackWriter(64 * 1024);
    w.u32(replay.entries.length);
    for (const e of replay.entries) w.entry(e);
    const ready: WorkerReady = {
      type: WorkerMessageType.Ready,
      clusterId: this.clusterId.toString(),
      memberId: this.memberId.toString(),
      hardState: replay.hardState,
      appliedIndex: this.appliedIndex,
      snapshotIndex: replay.prevIndex,
      snapshotTerm: replay.prevTerm,
      entries: w.finish(),
      currentRev: this.store.currentRev,
      compactRev: this.store.compactMainRev,
      leases: [...this.leases.all()].map((l) => ({ id: l.id.toString(), ttl: l.ttl, remaining: l.remaining })),
    };
    this.walReplay = null; // the main thread owns the in-memory log from here on
    return ready;
  }

  batch(data: Uint8Array): void {
    const r = new PackReader(data);
    r.u8(); // message type
    const hasHardState = r.u8() === 1;
    const hsTerm = hasHardState ? r.u53() : 0;
    const hsVote = hasHardState ? r.u53() : 0;
    const hsCommit = hasHardState ? r.u53() : 0;
    this.raftTerm = r.u53();
    let lastIndex = 0;
    let lastTerm = 0;
    for (let n = r.u32(); n > 0; n--) {
      const e = r.entry();
      this.wal.appendEntry(e);
      lastIndex = e.index;
      lastTerm = e.term;
    }
    // After the entries: a torn tail can lose the hard state, never leave a commit index that
    // points past the entries on disk.
    if (hasHardState) this.wal.appendHardState({ term: hsTerm, vote: hsVote, commit: hsCommit });
    for (let n = r.u32(); n > 0; n--) {
      const e = r.entry();
      if (e.index <= this.appliedIndex) continue; // replayed after a restart: already in MVCC
      this.applyQueue.push(e);
    }
    for (let n = r.u32(); n > 0; n--) {
      const readId = r.u32();
      const kind = r.u8();
      const linearizable = r.u8() === 1;
      const request = r.bytes();
      if (linearizable && this.applyQueueHead < this.applyQueue.length) {
        // Must see the applies queued before it, which wait for their fsync.
        this.deferredReads.push({ readId, kind, request, after: this.applyQueue[this.applyQueue.length - 1]!.index });
      } else {
        this.serveRead(readId, kind, request);
      }
    }
    this.applyDurable();
    this.events.flush();
    if (this.resultCount > 0 || this.readCount > 0) this.postApplied();
    if (lastIndex > 0) {
      const index = lastIndex;
      const term = lastTerm;
      this.wal.sync(() => this.onWalSynced(index, term));
    }
  }

  private onWalSynced(index: number, term: number): void {
    if (index > this.durableIndex) this.durableIndex = index;
    this.postPersisted(index, term);
    const applied = this.applyDurable();
    this.events.flush();
    if (applied > 0 || this.resultCount > 0 || this.readCount > 0) this.postApplied();
  }

  /**
   * Applies queued committed entries that are durable in the WAL (raft.ts: the durability
   * contract), then serves the reads that waited for them. Returns the number applied.
   */
  private applyDurable(): number {
    const queue = this.applyQueue;
    let applied = 0;
    while (this.applyQueueHead < queue.length) {
      const e = queue[this.applyQueueHead]!;
      if (e.index > this.durableIndex) break;
      assert(e.index === this.appliedIndex + 1, 'apply gap');
      this.applyEntry(e.data);
      this.appliedIndex = e.index;
      this.applyQueueHead++;
      applied++;
    }
    if (this.applyQueueHead === queue.length) {
      queue.length = 0;
      this.applyQueueHead = 0;
    } else if (this.applyQueueHead > 1024) {
      queue.splice(0, this.applyQueueHead);
      this.applyQueueHead = 0;
    }
    if (applied > 0) {
      this.backend.putMetaU64(schema.metaConsistentIndex, this.appliedIndex);
      this.backend.putMetaU64(schema.metaCurrentRev, this.store.currentRev);
      this.releaseWalWhenDurable(this.appliedIndex);
    }
    const reads = this.deferredReads;
    let served = 0;
    while (served < reads.length && reads[served]!.after <= this.appliedIndex) {
      const d = reads[served]!;
      this.serveRead(d.readId, d.kind, d.request);
      served++;
    }
    if (served > 0) reads.splice(0, served);
    return applied;
  }

  private postPersisted(index: number, term: number): void {
    const m = new Uint8Array(17);
    const b = Buffer.from(m.buffer);
    b[0] = WorkerMessageType.Persisted;
    b.writeDoubleLE(index, 1);
    b.writeDoubleLE(term, 9);
    post(m);
  }

  /**
   * Once LMDB has made the MVCC state at `index` durable, WAL segments far enough behind it
   * can go (etcd keeps --snapshot-catchup-entries for slow followers; so do we).
   */
  private releaseWalWhenDurable(index: number): void {
    if (index - this.durableAppliedIndex < logRetainEntries) return;
    this.durableAppliedIndex = index; // at most one release in flight per logRetainEntries
    void this.backend.flushed().then(() => {
      this.wal.releaseTo(index - logRetainEntries);
    });
  }

  private header(revision: number): Header {
    return { cluster_id: this.clusterId, member_id: this.memberId, revision, raft_term: this.raftTerm };
  }

  private applyEntry(data: Uint8Array): void {
    if (data.length === 0) return; // leader's empty entry of a new term
    const req = concordpb.InternalRequest.decode(data);
    const id = toNumber(req.id);
    try {
      let response: Uint8Array;
      if (req.put) {
        this.stats.add(StatSlot.PutTotal, 1);
        const resp = this.applier.put(null, req.put);
        resp.header = this.header(toNumber(resp.header!.revision));
        response = etcdserverpb.PutResponse.encode(resp).finish();
      } else if (req.delete_range) {
        this.stats.add(StatSlot.DeleteTotal, 1);
        const resp = this.applier.deleteRange(null, req.delete_range);
        resp.header = this.header(toNumber(resp.header!.revision));
        response = etcdserverpb.DeleteRangeResponse.encode(resp).finish();
      } else if (req.txn) {
        this.stats.add(StatSlot.TxnTotal, 1);
        const resp = this.applier.txn(req.txn);
        resp.header = this.header(toNumber(resp.header!.revision));
        response = etcdserverpb.TxnResponse.encode(resp).finish();
      } else if (req.lease_grant) {
        const resp = this.applier.leaseGrant(req.lease_grant);
        resp.header = this.header(this.store.currentRev);
        response = etcdserverpb.LeaseGrantResponse.encode(resp).finish();
      } else if (req.lease_revoke) {
        const resp = this.applier.leaseRevoke(req.lease_revoke);
        resp.header = this.header(this.store.currentRev);
        response = etcdserverpb.LeaseRevokeResponse.encode(resp).finish();
      } else if (req.lease_checkpoint) {
        const resp = this.applier.leaseCheckpoint(req.lease_checkpoint);
        resp.header = this.header(this.store.currentRev);
        response = etcdserverpb.LeaseCheckpointResponse.encode(resp).finish();
      } else if (req.compaction) {
        const rev = this.applier.compaction(req.compaction);
        response = etcdserverpb.CompactionResponse.encode({ header: this.header(rev) }).finish();
        Atomics.store(this.compactRevShared, 0, BigInt(this.store.compactMainRev));
        this.events.compact(this.store.compactMainRev, this.store.currentRev);
        this.startCompaction(this.store.compactMainRev);
        if (req.compaction.physical) {
          this.compaction!.waiters.push({ id, response });
          return;
        }
      } else {
        assert(false, 'unknown internal request');
      }
      this.addResult(id, 0, response);
    } catch (err) {
      if (!(err instanceof ConcordError)) throw err;
      this.addResult(id, err.code, emptyResponse);
    }
  }

  private addResult(id: number, code: number, response: Uint8Array): void {
    this.results.u53(id);
    this.results.u8(code);
    this.results.bytes(response);
    this.resultCount++;
  }

  private serveRead(readId: number, kind: number, request: Uint8Array): void {
    let code = 0;
    let response: Uint8Array = emptyResponse;
    try {
      if (kind === ReadKind.Range) {
        this.stats.add(StatSlot.RangeTotal, 1);
        const answer = this.applier.range(null, etcdserverpb.RangeRequest.decode(request));
        response = this.encodeRange(answer);
      } else if (kind === ReadKind.LeaseTimeToLive) {
        const rq = etcdserverpb.LeaseTimeToLiveRequest.decode(request);
        const lease = this.leases.get(Long.fromValue(rq.ID));
        if (lease === undefined) throw errLeaseNotFound;
        response = etcdserverpb.LeaseTimeToLiveResponse.encode({
          header: this.header(this.store.currentRev), ID: lease.id, grantedTTL: lease.ttl,
          keys: rq.keys ? [...lease.keys].sort().map((k) => Buffer.from(k, 'latin1')) : [],
        }).finish();
      } else {
        assert(kind === ReadKind.Status, 'read kind');
        const status = etcdserverpb.StatusResponse.decode(request);
        this.refreshSizes(true);
        status.header = this.header(this.store.currentRev) as etcdserverpb.ResponseHeader;
        status.dbSize = this.sizes.dbSize;
        status.dbSizeInUse = this.sizes.dbSizeInUse;
        response = etcdserverpb.StatusResponse.encode(status).finish();
      }
    } catch (err) {
      if (!(err instanceof ConcordError)) throw err;
      code = err.code;
    }
    this.reads.u32(readId);
    this.reads.u8(code);
    this.reads.bytes(response);
    this.readCount++;
  }

  /**
   * RangeResponse{header, more, count} followed by the stored KeyValue records as field 2, as
   * they are on disk: no decode and re-encode per key. Field order is free in protobuf.
   */
  private encodeRange(a: RangeAnswer): Uint8Array {
    const head = etcdserverpb.RangeResponse.encode({
      header: this.header(a.revision), more: a.more, count: a.count,
    }).finish();
    let size = head.length;
    for (const kv of a.kvs) size += 1 + varintSize(kv.length) + kv.length;
    const out = Buffer.allocUnsafe(size);
    out.set(head, 0);
    let pos = head.length;
    for (const kv of a.kvs) {
      out[pos++] = 0x12; // field 2, length-delimited
      pos = writeVarint(out, pos, kv.length);
      out.set(kv, pos);
      pos += kv.length;
    }
    assert(pos === size, 'range encoding size');
    return out;
  }

  private postApplied(): void {
    this.refreshSizes(false);
    this.stats.set(StatSlot.KeysTotal, this.store.index.size);
    const results = this.results;
    const reads = this.reads;
    const changes = this.leases.takeChanges();
    const leaseW = this.leaseChanges;
    leaseW.reset();
    for (const c of changes) {
      leaseW.u8(c.kind);
      leaseW.bytes(Buffer.from(c.id.toString(), 'latin1'));
      leaseW.u53(c.ttl);
      leaseW.u53(c.remaining);
    }
    const m = new Uint8Array(1 + 5 * 8 + 4 + results.length + 4 + reads.length + 4 + leaseW.length);
    const b = Buffer.from(m.buffer);
    let pos = 0;
    b[pos++] = WorkerMessageType.Applied;
    pos = b.writeDoubleLE(this.appliedIndex, pos);
    pos = b.writeDoubleLE(this.store.currentRev, pos);
    pos = b.writeDoubleLE(Math.max(this.store.compactMainRev, 0), pos);
    pos = b.writeDoubleLE(this.sizes.dbSize, pos);
    pos = b.writeDoubleLE(this.sizes.dbSizeInUse, pos);
    pos = b.writeUInt32LE(this.resultCount, pos);
    pos += results.copyTo(m, pos);
    pos = b.writeUInt32LE(this.readCount, pos);
    pos += reads.copyTo(m, pos);
    pos = b.writeUInt32LE(changes.length, pos);
    pos += leaseW.copyTo(m, pos);
    assert(pos === m.length, 'applied message size');
    results.reset();
    reads.reset();
    this.resultCount = 0;
    this.readCount = 0;
    post(m);
  }

  private refreshSizes(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.sizesAtMs < 100) return;
    this.sizesAtMs = now;
    this.sizes = this.backend.sizes();
    this.stats.set(StatSlot.WorkerBusyMs, performance.eventLoopUtilization().active);
  }

  // ---- compaction sweep, in steps so that apply and reads go on meanwhile ----

  private startCompaction(rev: number): void {
    if (this.compaction === null) {
      this.compaction = { rev, nextKey: '', waiters: [] };
    } else {
      // A newer target supersedes the running sweep: restart it at the new revision.
      this.compaction.rev = rev;
      this.compaction.nextKey = '';
    }
    this.scheduleCompactionStep();
  }

  private scheduleCompactionStep(): void {
    if (this.compactionScheduled) return;
    this.compactionScheduled = true;
    setImmediate(() => {
      this.compactionScheduled = false;
      this.compactionStep();
    });
  }

  private compactionStep(): void {
    const c = this.compaction;
    if (c === null) return;
    const next = this.store.compactStep(c.rev, c.nextKey, compactionBatchKeys);
    if (next !== null) {
      c.nextKey = next;
      this.scheduleCompactionStep();
      return;
    }
    this.compaction = null;
    if (c.waiters.length === 0) return;
    // physical: answer once the removal is durable
    void this.backend.flushed().then(() => {
      for (const wtr of c.waiters) this.addResult(wtr.id, 0, wtr.response);
      this.postApplied();
    });
  }

  async close(): Promise<void> {
    this.wal.close();
    await this.backend.close();
  }
}

const emptyResponse = new Uint8Array(0);

function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

function post(msg: FromWorker): void {
  parentPort!.postMessage(msg);
}

let worker: StorageWorker | null = null;

parentPort!.on('message', (msg: ToWorker) => {
  try {
    if (msg instanceof Uint8Array) {
      assert(msg[0] === WorkerMessageType.Batch, 'unknown worker message');
      worker!.batch(msg);
      return;
    }
    switch (msg.type) {
      case WorkerMessageType.Init:
        worker = new StorageWorker(msg);
        post(worker.ready());
        break;
      case WorkerMessageType.Close:
        void worker!.close().then(() => post({ type: WorkerMessageType.Closed }));
        break;
    }
  } catch (err) {
    // A bug or a storage failure: the process must stop before it acknowledges anything more.
    post({ type: WorkerMessageType.Fatal, message: (err as Error).stack ?? String(err) });
  }
});
