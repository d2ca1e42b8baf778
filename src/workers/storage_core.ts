// The storage worker's work, without the thread (workers/storage_worker.ts is the thread around
// it): the WAL (raft log + hard state), the backend and the MVCC and lease state. Its file
// operations, store engine, timers and outgoing messages are injected, so the storage simulator
// (test/storage/) runs this very code on a simulated disk that loses power.
//
// Per Batch from the main thread, in this order:
//   1. write the new raft entries, then the hard state, to the WAL (page cache, no sync yet);
//   2. queue the committed entries; apply those already durable in the WAL to MVCC (index in
//      memory, records to the backend), encoding each response;
//   3. serve the reads: serializable ones at once, linearizable ones after the applies queued
//      before them;
//   4. post the answers of 2 and 3 at once;
//   5. when the Batch must be synced (new entries, or a new term or vote: raft's MustSync),
//      sync the WAL; when that fdatasync returns, post Persisted{seq}, apply the entries it made
//      durable and answer them and the reads that waited.
// The durability contract (docs/architecture.md): Persisted{seq} is posted only after every
// byte of batches <= seq is on disk; nothing is answered before the entry it reports on is.
// One WAL fdatasync covers every batch written while the previous one ran (group commit), and
// the backend commits whole entries in batches of its own (storage/backend.ts).
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import Long from 'long';
import { concordpb, etcdserverpb } from '../gen/proto';
import { Applier, RangeAnswer } from '../apply/applier';
import { KVStore, toNumber } from '../mvcc/kvstore';
import { Backend } from '../storage/backend';
import type { StoreEngine } from '../storage/engine';
import type { FileIo } from '../storage/file_io';
import { Wal, WalReplay, WalWriteError } from '../storage/wal';
import { StatSlot, WorkerStats } from './stats';
import * as schema from '../storage/schema';
import { assert } from '../util/assert';
import { ConcordError, errLeaseNotFound } from '../util/errors';
import type { Timers } from '../util/timers';
import {
  backendBatchIntervalMs, backendBatchLimit, compactionBatchKeys, logRetainEntries,
} from '../config/limits';
import { EventRingWriter } from '../watch/events';
import { varintSize, writeVarint } from '../util/protobuf_wire';
import { LeaseStore } from '../lease/lease_store';
import { EntryType, type ConfState, type Entry } from '../raft/types';
import { applyChange, decodeConfChange } from '../raft/confchange';
import { Membership } from '../membership/membership';
import {
  AppliedWriter, decodeBatch, encodeEntries, encodePersisted, ReadKind, WorkerAlarm, WorkerInit,
  WorkerMessageType, WorkerReady,
} from './protocol';

type Header = etcdserverpb.ResponseHeader.$Properties;

/** What the core needs from its surroundings. */
export interface StorageCoreEnv {
  io: FileIo;
  /** The backend's store; LMDB under the data dir when absent. */
  engine?: StoreEngine;
  timers: Timers;
  /** Applied and Persisted messages to the main thread. */
  post(msg: Uint8Array): void;
  /** NOSPACE raised or cleared. */
  alarm(msg: WorkerAlarm): void;
  /** The storage failed (fsync, WAL write): the process must stop before it acknowledges more. */
  fatal(message: string): void;
  /** Backend batch limits (tests shrink them). */
  backendBatchLimit?: number;
  backendBatchIntervalMs?: number;
}

interface Compaction {
  rev: number;
  nextKey: string;
  /** Proposal ids waiting for the sweep to finish (physical compaction). */
  waiters: { id: number; response: Uint8Array }[];
}

/** The state machine was applied beyond what the WAL holds: entries were lost from the log. */
export class WalBehindStateError extends Error {
  readonly code = 'WAL_BEHIND_STATE';
  constructor(walLast: number, applied: number) {
    super(`wal: the log ends at index ${walLast} but the state was applied up to index ${applied}; ` +
      'the WAL lost entries. Refusing to start');
    this.name = 'WalBehindStateError';
  }
}

export class StorageCore {
  private readonly env: StorageCoreEnv;
  private readonly backend: Backend;
  private readonly wal: Wal;
  private walReplay: WalReplay | null;
  private readonly store: KVStore;
  private readonly applier: Applier;
  private readonly leases: LeaseStore;
  private readonly clusterId: Long;
  private readonly memberId: Long;
  private appliedIndex: number;
  /** Last raft index known durable in the WAL. Invariant: appliedIndex <= durableIndex. */
  private durableIndex: number;
  /** The last entry written to the WAL (durable or not). */
  private writtenIndex: number;
  private writtenTerm: number;
  /** Committed entries waiting for their WAL fsync, oldest first from applyQueueHead. */
  private readonly applyQueue: Entry[];
  private applyQueueHead: number;
  /** Linearizable reads that arrived behind queued applies, in order. */
  private readonly deferredReads: { readId: number; kind: number; request: Uint8Array; after: number }[];
  /** Applied index that the backend has made durable: the WAL may be released up to here. */
  private durableAppliedIndex: number;
  private raftTerm: number;
  private readonly out: AppliedWriter;
  private compaction: Compaction | null;
  private compactionScheduled: boolean;
  private sizesAtMs: number;
  private sizes: { dbSize: number; dbSizeInUse: number };
  private readonly stats: WorkerStats;
  /** Every applied change, compaction and LMDB commit, for the watch worker. */
  private readonly events: EventRingWriter;
  /** The compaction revision for the watch worker, visible before the sweep removes anything. */
  private readonly compactRevShared: BigInt64Array;
  /** The raft configuration as of appliedIndex, kept with the state (meta confState). */
  private confState: ConfState;
  /** The members as of appliedIndex (meta membership); `membershipChanged` until posted. */
  private readonly membership: Membership;
  private membershipChanged: boolean;
  /**
   * The WAL syncs asked for and not yet returned, oldest first: each acknowledges batches up to
   * its seq; a batch that needs no sync rides on the newest (or is acknowledged at once).
   */
  private readonly syncsPending: { seq: number }[];
  /** The storage failed: nothing more is written or answered. */
  private failed: boolean;
  private readonly compactionStepBound: () => void;
  private spareRetryTimer: unknown;
  private readonly retrySpareBound: () => void;

  constructor(init: WorkerInit, env: StorageCoreEnv) {
    this.env = env;
    this.failed = false;
    this.syncsPending = [];
    this.spareRetryTimer = null;
    this.retrySpareBound = this.retrySpare.bind(this);
    this.backend = new Backend({
      path: path.join(init.dataDir, schema.kvDir),
      mapSizeBytes: init.mapSizeBytes,
      batchIntervalMs: env.backendBatchIntervalMs ?? backendBatchIntervalMs,
      batchLimit: env.backendBatchLimit ?? backendBatchLimit,
      engine: env.engine,
      timers: env.timers,
    });
    const opened = Wal.open({
      dir: path.join(init.dataDir, schema.walDir),
      segmentBytes: init.walSegmentBytes,
      io: env.io,
      unsafeNoFsync: init.unsafeNoFsync,
      onFailure: (err) => this.fail(err),
      onSpareFailure: (err) => this.walSpareFailure(err),
    });
    this.wal = opened.wal;
    const stats = new WorkerStats(init.statsBuffer);
    this.stats = stats;
    this.wal.syncObserver = (seconds) => stats.observe(StatSlot.WalFsync, seconds);
    this.backend.commitObserver = (seconds, writes) => {
      stats.observe(StatSlot.BackendCommit, seconds);
      stats.add(StatSlot.BackendCommitWrites, writes);
    };
    this.backend.failureObserver = (err) => env.alarm({
      type: WorkerMessageType.Alarm, source: 'backend', raised: err !== null,
      message: err === null ? 'backend: commits succeed again' : `backend: commit failed: ${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`,
    });
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
    this.clusterId = this.loadId(schema.metaClusterId, init.newClusterId);
    this.memberId = this.loadId(schema.metaMemberId, init.newMemberId);
    this.backend.flush(); // new ids go to disk with the first commit, not 100 ms later
    this.appliedIndex = this.backend.getMetaU64(schema.metaConsistentIndex);
    const cs = this.backend.getMetaBytes(schema.metaConfState);
    this.confState = cs === undefined ? { voters: [], learners: [] } : schema.decodeConfState(cs);
    const ms = this.backend.getMetaBytes(schema.metaMembership);
    this.membership = ms === undefined ? Membership.empty() : Membership.decode(ms);
    this.membershipChanged = false;
    this.backend.restoreApplied(this.appliedIndex, this.store.currentRev);
    const replayed = opened.replay.entries;
    this.durableIndex = replayed.length > 0 ? replayed[replayed.length - 1]!.index : opened.replay.prevIndex;
    this.writtenIndex = this.durableIndex;
    this.writtenTerm = replayed.length > 0 ? replayed[replayed.length - 1]!.term : opened.replay.prevTerm;
    this.applyQueue = [];
    this.applyQueueHead = 0;
    this.deferredReads = [];
    this.durableAppliedIndex = this.appliedIndex;
    this.raftTerm = 0;
    this.out = new AppliedWriter();
    this.compaction = null;
    this.compactionScheduled = false;
    this.sizesAtMs = 0;
    this.sizes = this.backend.sizes();
    this.compactionStepBound = this.compactionStep.bind(this);
    // A compaction that was scheduled but not finished before a restart is finished now.
    const scheduled = this.backend.getMetaU64(schema.metaScheduledCompact);
    const finished = this.backend.getMetaU64(schema.metaFinishedCompact);
    if (scheduled > finished) this.startCompaction(scheduled);
  }

  /** NOSPACE from the WAL: raised when the next segment cannot be made, retried every second. */
  private walSpareFailure(err: NodeJS.ErrnoException | null): void {
    this.env.alarm({
      type: WorkerMessageType.Alarm, source: 'wal', raised: err !== null,
      message: err === null ? 'wal: the next segment was preallocated' : `wal: cannot preallocate the next segment: ${err.code ?? ''} ${err.message}`,
    });
    if (err !== null && this.spareRetryTimer === null) this.spareRetryTimer = this.env.timers.setTimeout(this.retrySpareBound, walSpareRetryMs);
  }

  private retrySpare(): void {
    this.spareRetryTimer = null;
    if (this.failed) return;
    this.wal.retrySpare();
  }

  /** The id kept in meta `name`; a new data dir takes `fresh` (or a random one) and keeps it. */
  private loadId(name: string, fresh: string | undefined): Long {
    let b = this.backend.getMetaBytes(name);
    if (b === undefined) {
      if (fresh !== undefined) {
        const id = Long.fromString(fresh, true);
        b = Buffer.allocUnsafe(8);
        b.writeUInt32BE(id.high >>> 0, 0);
        b.writeUInt32BE(id.low >>> 0, 4);
      } else {
        b = randomBytes(8);
        b[0]! &= 0x7f; // keep it positive as int64 too
      }
      this.backend.putMetaBytes(name, b);
    }
    return Long.fromBits(b.readUInt32BE(4), b.readUInt32BE(0), true);
  }

  /** What start-up found: the log to hand to the raft core, the applied index, the leases. */
  ready(): WorkerReady {
    const replay = this.walReplay!;
    // The WAL is released only up to what the backend holds durably, so it always reaches back
    // to the applied index; and the backend never gets ahead of what the WAL made durable.
    assert(replay.prevIndex <= this.appliedIndex, 'wal released beyond the applied index');
    const lastIndex = replay.entries.length > 0 ? replay.entries[replay.entries.length - 1]!.index : replay.prevIndex;
    if (this.appliedIndex > lastIndex) throw new WalBehindStateError(lastIndex, this.appliedIndex);
    const ready: WorkerReady = {
      type: WorkerMessageType.Ready,
      clusterId: this.clusterId.toString(),
      memberId: this.memberId.toString(),
      hardState: replay.hardState,
      appliedIndex: this.appliedIndex,
      snapshotIndex: replay.prevIndex,
      snapshotTerm: replay.prevTerm,
      entries: encodeEntries(replay.entries),
      currentRev: this.store.currentRev,
      compactRev: this.store.compactMainRev,
      leases: [...this.leases.all()].map((l) => ({ id: l.id.toString(), ttl: l.ttl, remaining: l.remaining })),
      confState: { voters: this.confState.voters.slice(), learners: this.confState.learners.slice() },
      membership: this.membership.encode(),
    };
    this.walReplay = null; // the main thread owns the in-memory log from here on
    return ready;
  }

  batch(data: Uint8Array): void {
    if (this.failed) return;
    const b = decodeBatch(data);
    assert(b.append.length === 0 || b.mustSync, 'entries appended without a sync');
    this.raftTerm = b.raftTerm;
    try {
      for (const e of b.append) {
        this.wal.appendEntry(e);
        this.writtenIndex = e.index;
        this.writtenTerm = e.term;
      }
      // After the entries: a torn tail can lose the hard state, never leave a commit index that
      // points past the entries on disk.
      if (b.hardState !== null) this.wal.appendHardState(b.hardState);
    } catch (err) {
      if (err instanceof WalWriteError) return this.fail(err);
      throw err;
    }
    for (const e of b.apply) {
      if (e.index <= this.appliedIndex) continue; // replayed after a restart: already applied
      this.applyQueue.push(e);
    }
    for (const rq of b.reads) {
      if (rq.linearizable && this.applyQueueHead < this.applyQueue.length) {
        // Must see the applies queued before it, which wait for their fsync.
        this.deferredReads.push({ readId: rq.id, kind: rq.kind, request: rq.request, after: this.applyQueue[this.applyQueue.length - 1]!.index });
      } else {
        this.serveRead(rq.id, rq.kind, rq.request);
      }
    }
    const applied = this.applyDurable();
    this.events.flush();
    // Entries that answer nobody (a membership change, a leader's empty entry) still move the
    // applied index the main thread waits for.
    if (applied > 0 || !this.out.isEmpty()) this.postApplied();
    if (b.seq !== 0) this.acknowledge(b.seq, b.mustSync);
    else assert(b.append.length === 0 && b.hardState === null, 'a write without a seq');
  }

  /**
   * Persisted{seq} once the batch is durable: a MustSync batch after its own fdatasync; any other
   * with the sync in flight before it, or at once when none is (it wrote nothing that needed one).
   */
  private acknowledge(seq: number, mustSync: boolean): void {
    if (mustSync) {
      const pending = { seq };
      this.syncsPending.push(pending);
      const index = this.writtenIndex;
      const term = this.writtenTerm;
      this.wal.sync(() => this.onWalSynced(pending, index, term));
    } else if (this.syncsPending.length > 0) {
      const last = this.syncsPending[this.syncsPending.length - 1]!;
      assert(seq > last.seq, 'batch seqs grow');
      last.seq = seq;
    } else {
      assert(this.durableIndex === this.writtenIndex, 'entries written without a sync');
      this.env.post(encodePersisted({ seq, index: this.writtenIndex, term: this.writtenTerm }));
    }
  }

  private onWalSynced(pending: { seq: number }, index: number, term: number): void {
    if (this.failed) return;
    assert(this.syncsPending[0] === pending, 'wal syncs return in order');
    this.syncsPending.shift();
    if (index > this.durableIndex) this.durableIndex = index;
    this.env.post(encodePersisted({ seq: pending.seq, index, term }));
    const applied = this.applyDurable();
    this.events.flush();
    if (applied > 0 || !this.out.isEmpty()) this.postApplied();
  }

  /** The WAL could not write or sync: stop for good, answering nothing more. */
  private fail(err: WalWriteError): void {
    if (this.failed) return;
    this.failed = true;
    this.env.fatal(err.op === 'fdatasync'
      ? err.message + '; stopping: after a failed fsync the page cache cannot be trusted (fsyncgate), so nothing is retried'
      : err.message + '; stopping');
  }

  /**
   * Applies queued committed entries that are durable in the WAL (the durability contract),
   * then serves the reads that waited for them. Returns the number applied.
   */
  private applyDurable(): number {
    const queue = this.applyQueue;
    let applied = 0;
    while (this.applyQueueHead < queue.length) {
      const e = queue[this.applyQueueHead]!;
      if (e.index > this.durableIndex) break;
      assert(e.index === this.appliedIndex + 1, 'apply gap');
      this.backend.beginEntry();
      if (e.type === EntryType.ConfChange) this.applyConfChange(e.data);
      else this.applyEntry(e.data);
      this.backend.endEntry(e.index, this.store.currentRev);
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
    if (applied > 0) this.releaseWalWhenDurable(this.appliedIndex);
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

  /**
   * Once the backend has made the state at `index` durable, WAL segments far enough behind it
   * can go (etcd keeps --snapshot-catchup-entries for slow followers; so do we).
   */
  private releaseWalWhenDurable(index: number): void {
    if (index - this.durableAppliedIndex < logRetainEntries) return;
    this.durableAppliedIndex = index; // at most one release in flight per logRetainEntries
    void this.backend.flushed().then(() => {
      if (!this.failed) this.wal.releaseTo(index - logRetainEntries);
    });
  }

  private header(revision: number): Header {
    return { cluster_id: this.clusterId, member_id: this.memberId, revision, raft_term: this.raftTerm };
  }

  /**
   * A membership change, applied with the entry: the configuration kept with the state moves
   * (raft's own copy moves when the main thread learns the entry applied). A change raft
   * refuses to make (no voter left) changes nothing here either.
   */
  private applyConfChange(data: Uint8Array): void {
    const cc = decodeConfChange(data);
    const next = applyChange(this.confState, cc);
    if (next === null) return;
    this.confState = next;
    this.backend.putMetaBytes(schema.metaConfState, schema.encodeConfState(next));
    if (this.membership.applyConfChange(cc)) this.persistMembership();
  }

  private persistMembership(): void {
    this.backend.putMetaBytes(schema.metaMembership, Buffer.from(this.membership.encode()));
    this.membershipChanged = true;
  }

  private applyEntry(data: Uint8Array): void {
    if (data.length === 0) return; // leader's empty entry of a new term
    const req = concordpb.InternalRequest.decode(data);
    const id = toNumber(req.id);
    // Only the member that proposed it waits for the answer (0: proposed before members had
    // ids in their proposals, by this lone member).
    const proposer = req.member_id;
    const mine = proposer === null || proposer === undefined || Long.fromValue(proposer).isZero() ||
      Long.fromValue(proposer).toUnsigned().equals(this.memberId);
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
      } else if (req.member_attr_set) {
        const a = req.member_attr_set;
        const changed = this.membership.setAttributes(Long.fromValue(a.member_id ?? 0).toUnsigned(), a.name ?? '', a.client_urls ?? []);
        if (changed) this.persistMembership();
        response = emptyResponse;
      } else if (req.compaction) {
        const rev = this.applier.compaction(req.compaction);
        response = etcdserverpb.CompactionResponse.encode({ header: this.header(rev) }).finish();
        Atomics.store(this.compactRevShared, 0, BigInt(this.store.compactMainRev));
        this.events.compact(this.store.compactMainRev, this.store.currentRev);
        this.startCompaction(this.store.compactMainRev);
        if (req.compaction.physical) {
          if (mine) this.compaction!.waiters.push({ id, response });
          return;
        }
      } else {
        assert(false, 'unknown internal request');
      }
      if (mine) this.out.result(id, 0, response);
    } catch (err) {
      if (!(err instanceof ConcordError)) throw err;
      if (mine) this.out.result(id, err.code, emptyResponse);
    }
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
    this.out.read(readId, code, response);
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
    for (const c of this.leases.takeChanges()) this.out.leaseChange(c.kind, c.id.toString(), c.ttl, c.remaining);
    this.env.post(this.out.finish({
      appliedIndex: this.appliedIndex,
      currentRev: this.store.currentRev,
      compactRev: Math.max(this.store.compactMainRev, 0),
      dbSize: this.sizes.dbSize,
      dbSizeInUse: this.sizes.dbSizeInUse,
      membership: this.membershipChanged ? this.membership.encode() : null,
    }));
    this.membershipChanged = false;
  }

  private refreshSizes(force: boolean): void {
    const now = performance.now();
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
    this.env.timers.setImmediate(this.compactionStepBound);
  }

  private compactionStep(): void {
    this.compactionScheduled = false;
    const c = this.compaction;
    if (c === null || this.failed) return;
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
      if (this.failed) return;
      for (const wtr of c.waiters) this.out.result(wtr.id, 0, wtr.response);
      this.postApplied();
    });
  }

  async close(): Promise<void> {
    if (!this.failed) this.wal.close();
    await this.backend.close();
  }
}

const emptyResponse = new Uint8Array(0);
/** How often the WAL tries again to preallocate its next segment while that fails. */
const walSpareRetryMs = 1000;

