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
//
// Raft snapshots (docs/architecture.md "Raft snapshots"; file work in storage/snapshotter.ts):
//   create  (leader)   SnapshotCreate: commit what is applied, copy the LMDB environment on the
//                      libuv pool (applies go on), read (index, term, ...) back from the copy.
//   stage   (follower) SnapshotStage: take the received file into member/snap, check it, write
//                      our member id into it, keep it as `staged`.
//   install (follower) a Batch with `snapshot`: every message after it waits (`held`) while
//                      the install runs, in this order (InstallStep):
//     1. wait for the WAL syncs in flight (their Persisted go out first) and running copies;
//        drop queued applies (all <= index: raft hands out nothing beyond a pending snapshot);
//     2. abandon the backend: nothing queued is committed, the transaction in flight finishes,
//        the environment closes (the old state stays whole on disk, and the WAL has the rest);
//     3. restart the WAL after (index, term), hard state kept: a new segment written and synced
//        under a temporary name, renamed into place, directory synced = THE COMMIT POINT; then
//        the old segments go;
//     4. under the kv environment lock: remove kv/lock.mdb, rename the staged file over
//        kv/data.mdb, sync both directories, open it and rebuild everything from it (index,
//        leases, membership, configuration, revisions), bump the environment generation;
//     5. tell the watch worker (ring record Replaced) and the main thread (Applied.replaced);
//        then the rest of the batch as usual, and Persisted{seq} once it is synced.
//   A crash before 3's rename restarts on the old WAL and the old environment: the old state.
//   After it, the WAL starts after the snapshot's index; start-up finds the kv environment
//   behind the WAL and the staged file `in-<index>-<term>.mdb` still in member/snap, and does
//   step 4 again before anything opens LMDB: the new state. The staged file is fsynced and its
//   name durable (stage) before the install starts, and goes only by 4's rename, so it is
//   there whenever start-up needs it. Never a mix: the WAL and LMDB are each replaced whole,
//   the WAL first, and LMDB's state is taken from the file the WAL names.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import Long from 'long';
import { concordpb, etcdserverpb } from '../gen/proto';
import { Applier, RangeAnswer } from '../apply/applier';
import { KVStore, toNumber } from '../mvcc/kvstore';
import { Backend } from '../storage/backend';
import type { EngineWrites, StoreEngine } from '../storage/engine';
import type { FileIo } from '../storage/file_io';
import { Wal, WalReplay, WalRestartStep, WalWriteError } from '../storage/wal';
import { LmdbEngine } from '../storage/lmdb_engine';
import { Worker } from 'node:worker_threads';
import { Db } from '../storage/engine';
import { hashKv, hashState, type StateSource } from '../mvcc/hash';
import { ErrorCode } from '../util/errors';
import type { DefragmentDone, DefragmentRequest, HashDone, HashRequest, HashThreadAnswer, HashThreadInit } from './protocol';
import { failpointsEnabled, failpointValue } from '../util/failpoints';
import {
  cleanSnapDir, copyEnvironment, fsyncDir, fsyncFile, inFileName, inspectSnapshotFile, moveInto,
  replaceKvDataFile, SnapshotError, SnapshotErrorCode, SnapshotMeta, snapshotOutFilesMax,
} from '../storage/snapshotter';
import { StatSlot, WorkerStats } from './stats';
import * as schema from '../storage/schema';
import { assert } from '../util/assert';
import { ConcordError, errLeaseNotFound } from '../util/errors';
import type { Timers } from '../util/timers';
import {
  backendBatchIntervalMs, backendBatchLimit, compactionBatchKeys, defragCatchUpRoundsMax,
  defragJournalBytesMax, defragSwitchBytes, logRetainEntries,
} from '../config/limits';
import { EventRingWriter, KvEnvSlots } from '../watch/events';
import { varintSize, writeVarint } from '../util/protobuf_wire';
import { LeaseStore } from '../lease/lease_store';
import { EntryType, type ConfState, type Entry } from '../raft/types';
import { applyChange, decodeConfChange } from '../raft/confchange';
import { Membership } from '../membership/membership';
import { AlarmAction, AlarmStore, AlarmType } from '../apply/alarm_store';
import { AuthStore, errAuthFailed, errAuthNotEnabled, errPermissionDenied, rootRole } from '../auth/auth_store';
import { checkDelete, checkLeaseKeys, checkPut, checkTxn, type Caller } from '../auth/request_checks';
import {
  AppliedReplaced, AppliedWriter, BatchMessage, decodeBatch, encodeEntries, encodePersisted,
  ReadKind, SnapshotAnswer, SnapshotCreate, SnapshotCreated, SnapshotRelease, SnapshotStage,
  SnapshotStaged, WorkerAlarm, WorkerInit, WorkerMessageType, WorkerReady,
} from './protocol';

/** etcd warnApplyDuration. */
const slowApplyMs = 100;

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
  /** SnapshotCreated and SnapshotStaged answers (required to use raft snapshots). */
  snapshotAnswer?(msg: SnapshotCreated | SnapshotStaged): void;
  /** HashDone answers (required to use Maintenance.Hash and HashKV). */
  hashAnswer?(msg: HashDone): void;
  /** DefragmentDone answers (required to use Maintenance.Defragment). */
  defragmentAnswer?(msg: DefragmentDone): void;
  /**
   * Tests: told each step of an install; returning true simulates a crash there (the core stops
   * as a killed process would; crashForTest() then releases its files).
   */
  installCrashPoint?(step: InstallStep): boolean;
}

/** The steps of a snapshot install (header), for crash tests. */
export const enum InstallStep {
  /** Syncs and copies drained, applies dropped: nothing changed on disk yet. */
  Drained = 1,
  /** The old backend is closed (its environment untouched on disk). */
  BackendClosed = 2,
  /** The WAL's restart segment is written and synced under its temporary name. */
  WalSegmentWritten = 3,
  /** ... renamed into place: the commit point. The old segments are still there. */
  WalRenamed = 4,
  /** The old segments are removed. */
  WalRestarted = 5,
  /** kv/lock.mdb is removed. */
  KvLockRemoved = 6,
  /** The staged file is renamed over kv/data.mdb and the directories synced. */
  KvReplaced = 7,
  /** The new state is open and rebuilt; Applied.replaced not posted yet. */
  Reopened = 8,
}

/** Thrown at an installCrashPoint: the test's simulated crash. */
class InstallCrash extends Error {
  constructor(readonly step: InstallStep) {
    super(`simulated crash at install step ${step}`);
  }
}

/** A message that arrived during an install, handled after it, in order. */
type HeldMessage =
  | { kind: WorkerMessageType.Batch; data: Uint8Array }
  | { kind: WorkerMessageType.SnapshotCreate; msg: SnapshotCreate }
  | { kind: WorkerMessageType.SnapshotStage; msg: SnapshotStage }
  | { kind: WorkerMessageType.SnapshotRelease; msg: SnapshotRelease }
  | { kind: WorkerMessageType.Hash; msg: HashRequest }
  | { kind: WorkerMessageType.Defragment; msg: DefragmentRequest };

/** A snapshot file made for sending, held by the driver `holds` times. */
interface OutFile {
  meta: SnapshotMeta;
  holds: number;
}

/** The WAL starts after a snapshot's index, the state is older, and the snapshot file is gone. */
export class SnapshotMissingError extends Error {
  readonly code = 'SNAPSHOT_MISSING';
  constructor(walStart: number, applied: number, file: string) {
    super(`snapshot: the log starts after index ${walStart} (a raft snapshot was being installed) ` +
      `but the state is at index ${applied} and ${file} is gone. Refusing to start`);
    this.name = 'SnapshotMissingError';
  }
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
  private readonly init: WorkerInit;
  private readonly kvPath: string;
  private readonly snapPath: string;
  /** The state objects, replaced whole by a snapshot install (openState). */
  private backend: Backend;
  private readonly wal: Wal;
  private walReplay: WalReplay | null;
  private store: KVStore;
  private applier: Applier;
  private leases: LeaseStore;
  private readonly clusterId: Long;
  private readonly memberId: Long;
  private appliedIndex: number;
  /** The term of the entry at appliedIndex (0: unknown, see openState). */
  private appliedTerm: number;
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
  private membership: Membership;
  private membershipChanged: boolean;
  /** The alarms as of appliedIndex (meta alarm); `alarmsChanged` until posted. */
  private alarms: AlarmStore;
  private alarmsChanged: boolean;
  /** The auth store as of appliedIndex (meta auth); `authChanged` until posted, with the simple
   * tokens assigned by applied Authenticate requests (every member learns them). */
  private auth: AuthStore;
  private authChanged: boolean;
  private tokensAssigned: concordpb.ITokenAssigned[];
  /** Shared with the watch worker: who may open the kv path, and the store's generation. */
  private readonly kvEnv: KvEnvSlots;
  /** The received snapshot checked and waiting for its install (one at a time). */
  private staged: { file: string; meta: SnapshotMeta } | null;
  /** Snapshot files made for sending, by path. Invariant: size <= snapshotOutFilesMax. */
  private readonly outFiles: Map<string, OutFile>;
  private snapFileSeq: number;
  /** Creates and stages run one at a time each, in arrival order; an install waits for both. */
  private createChain: Promise<void>;
  private stageChain: Promise<void>;
  /** Non-null while an install runs: the messages that arrived meanwhile. */
  private held: HeldMessage[] | null;
  /** An install waiting for syncsPending to empty. */
  private syncsDrained: (() => void) | null;
  /** Goes out with the next Applied (the first after an install). */
  private replacedPending: AppliedReplaced | null;
  private backendOpen: boolean;
  /** The hash thread (workers/hash_worker.ts), started by the first Hash/HashKV on LMDB. */
  private hashThread: Worker | null;
  private readonly hashWaiters: Map<number, (a: HashThreadAnswer) => void>;
  private hashSeq: number;
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
    this.init = init;
    this.kvPath = path.join(init.dataDir, schema.kvDir);
    this.snapPath = path.join(init.dataDir, schema.snapDir);
    this.failed = false;
    this.syncsPending = [];
    this.spareRetryTimer = null;
    this.retrySpareBound = this.retrySpare.bind(this);
    this.stats = new WorkerStats(init.statsBuffer);
    this.events = new EventRingWriter(init.watchEventRing);
    this.kvEnv = new KvEnvSlots(init.watchEventRing);
    this.compactRevShared = new BigInt64Array(init.watchCompactRev);
    this.staged = null;
    this.outFiles = new Map();
    this.snapFileSeq = 0;
    this.createChain = Promise.resolve();
    this.stageChain = Promise.resolve();
    this.held = null;
    this.syncsDrained = null;
    this.replacedPending = null;
    this.hashThread = null;
    this.hashWaiters = new Map();
    this.hashSeq = 0;
    // The WAL first: it says whether an install was cut short (recoverInstall).
    const opened = Wal.open({
      dir: path.join(init.dataDir, schema.walDir),
      segmentBytes: init.walSegmentBytes,
      io: env.io,
      unsafeNoFsync: init.unsafeNoFsync,
      onFailure: (err) => this.fail(err),
      onSpareFailure: (err) => this.walSpareFailure(err),
    });
    this.wal = opened.wal;
    const stats = this.stats;
    this.wal.syncObserver = (seconds) => stats.observe(StatSlot.WalFsync, seconds);
    this.walReplay = opened.replay;
    if (env.engine === undefined) this.recoverInstall(opened.replay);
    // Assigned by openState (TypeScript cannot see through the call).
    this.backend = null as unknown as Backend;
    this.store = null as unknown as KVStore;
    this.applier = null as unknown as Applier;
    this.leases = null as unknown as LeaseStore;
    this.membership = Membership.empty();
    this.alarms = new AlarmStore();
    this.alarmsChanged = false;
    this.auth = new AuthStore();
    this.authChanged = false;
    this.tokensAssigned = [];
    this.confState = { voters: [], learners: [] };
    this.appliedIndex = 0;
    this.appliedTerm = 0;
    this.backendOpen = false;
    // A defragmentation cut short left its copy: the kv environment is whole without it.
    if (env.engine === undefined) {
      fs.rmSync(path.join(init.dataDir, schema.kvDefragDir), { recursive: true, force: true });
      // Before lmdb-js creates it with the process umask: 0700, as every directory of the data dir.
      fs.mkdirSync(this.kvPath, { recursive: true, mode: 0o700 });
    }
    this.openState(env.engine);
    this.clusterId = this.loadId(schema.metaClusterId, init.newClusterId);
    this.memberId = this.loadId(schema.metaMemberId, init.newMemberId);
    this.backend.flush(); // new ids go to disk with the first commit, not 100 ms later
    const replay = opened.replay;
    if (this.appliedIndex < replay.prevIndex && replay.prevTerm > 0 && env.engine === undefined) {
      throw new SnapshotMissingError(replay.prevIndex, this.appliedIndex, path.join(this.snapPath, inFileName(replay.prevIndex, replay.prevTerm)));
    }
    if (this.appliedTerm === 0 && this.appliedIndex > 0) this.appliedTerm = termInLog(replay, this.appliedIndex);
    this.backend.restoreApplied(this.appliedIndex, this.store.currentRev, this.appliedTerm);
    this.membershipChanged = false;
    const replayed = replay.entries;
    this.durableIndex = replayed.length > 0 ? replayed[replayed.length - 1]!.index : replay.prevIndex;
    this.writtenIndex = this.durableIndex;
    this.writtenTerm = replayed.length > 0 ? replayed[replayed.length - 1]!.term : replay.prevTerm;
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
    this.resumeCompaction([]);
  }

  /**
   * Start-up: an install that crashed after its WAL restart (step 3) left the WAL starting after
   * the snapshot and the kv environment older; its staged file is still in member/snap. Redo
   * step 4 before LMDB is opened. Every other snapshot file goes (header of snapshotter.ts).
   * Stage refuses snapshots at or below the applied index, so an `in-` file named after the
   * WAL's start exists only when that install did not finish.
   */
  private recoverInstall(replay: WalReplay): void {
    let keep: string | null = null;
    if (replay.prevIndex > 0) {
      const name = inFileName(replay.prevIndex, replay.prevTerm);
      if (fs.existsSync(path.join(this.snapPath, name))) keep = name;
    }
    if (keep !== null) {
      fs.mkdirSync(this.kvPath, { recursive: true });
      this.kvEnv.lock();
      try {
        replaceKvDataFile(this.kvPath, path.join(this.snapPath, keep));
      } finally {
        this.kvEnv.unlock();
      }
    }
    cleanSnapDir(this.snapPath, null);
  }

  /**
   * Opens the backend on the kv environment and rebuilds every applied-state structure from it:
   * the MVCC index and revisions, leases, the configuration and membership, the applied index
   * and its term. At start-up, and after an install's file swap.
   */
  private openState(engine: StoreEngine | undefined): void {
    const env = this.env;
    const backend = new Backend({
      path: this.kvPath,
      mapSizeBytes: this.init.mapSizeBytes,
      batchIntervalMs: env.backendBatchIntervalMs ?? backendBatchIntervalMs,
      batchLimit: env.backendBatchLimit ?? backendBatchLimit,
      engine,
      timers: env.timers,
    });
    this.backend = backend;
    this.backendOpen = true;
    const stats = this.stats;
    backend.commitObserver = (seconds, writes) => {
      stats.observe(StatSlot.BackendCommit, seconds);
      stats.add(StatSlot.BackendCommitWrites, writes);
    };
    backend.failureObserver = (err) => env.alarm({
      type: WorkerMessageType.Alarm, source: 'backend', raised: err !== null,
      message: err === null ? 'backend: commits succeed again' : `backend: commit failed: ${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`,
    });
    const events = this.events;
    backend.metaCommitObserver = (name, value) => {
      if (name !== schema.metaCurrentRev) return;
      events.committed(schema.readU64(value, 0));
      events.flush();
    };
    this.store = new KVStore(backend);
    const keyLeases = this.store.restore();
    this.leases = new LeaseStore(backend, this.init.leaseTtlMin);
    this.leases.restore(keyLeases);
    Atomics.store(this.compactRevShared, 0, BigInt(this.store.compactMainRev));
    this.store.changeObserver = (rev, changes) => events.revision(rev, changes);
    this.applier = new Applier(this.store);
    this.applier.useLeases(this.leases);
    this.appliedIndex = backend.getMetaU64(schema.metaConsistentIndex);
    this.appliedTerm = backend.getMetaU64(schema.metaConsistentTerm);
    const cs = backend.getMetaBytes(schema.metaConfState);
    this.confState = cs === undefined ? { voters: [], learners: [] } : schema.decodeConfState(cs);
    const ms = backend.getMetaBytes(schema.metaMembership);
    this.membership = ms === undefined ? Membership.empty() : Membership.decode(ms);
    const as = backend.getMetaBytes(schema.metaAlarm);
    this.alarms = as === undefined ? new AlarmStore() : AlarmStore.decode(as);
    const au = backend.getMetaBytes(schema.metaAuth);
    this.auth = au === undefined ? new AuthStore() : AuthStore.decode(au);
    backend.restoreApplied(this.appliedIndex, this.store.currentRev, this.appliedTerm);
  }

  /** A compaction that was scheduled but not finished (before a restart or an install) is
   * finished now; `waiters` (physical compactions of the old state) are answered when it is. */
  private resumeCompaction(waiters: { id: number; response: Uint8Array }[]): void {
    const scheduled = this.backend.getMetaU64(schema.metaScheduledCompact);
    const finished = this.backend.getMetaU64(schema.metaFinishedCompact);
    if (scheduled > finished) {
      this.startCompaction(scheduled);
      this.compaction!.waiters.push(...waiters);
    } else if (waiters.length > 0) {
      for (const wtr of waiters) this.out.result(wtr.id, 0, wtr.response);
    }
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
      alarms: this.alarms.encode(),
      auth: this.auth.encode(),
    };
    this.walReplay = null; // the main thread owns the in-memory log from here on
    return ready;
  }

  batch(data: Uint8Array): void {
    if (this.failed) return;
    if (this.held !== null) {
      this.held.push({ kind: WorkerMessageType.Batch, data });
      return;
    }
    const b = decodeBatch(data);
    if (b.snapshot !== null && b.snapshot !== undefined) {
      this.startInstall(b);
      return;
    }
    this.batchDecoded(b);
  }

  private batchDecoded(b: BatchMessage): void {
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
    if (this.syncsPending.length === 0 && this.syncsDrained !== null) {
      const drained = this.syncsDrained;
      this.syncsDrained = null;
      drained();
    }
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
    // One clock read per entry (~30 ns next to microseconds of apply): etcd counts each apply
    // slower than warnApplyDuration (100 ms).
    let mark = performance.now();
    while (this.applyQueueHead < queue.length) {
      const e = queue[this.applyQueueHead]!;
      if (e.index > this.durableIndex) break;
      assert(e.index === this.appliedIndex + 1, 'apply gap');
      this.backend.beginEntry();
      if (e.type === EntryType.ConfChange) this.applyConfChange(e.data);
      else this.applyEntry(e.data);
      this.backend.endEntry(e.index, this.store.currentRev, e.term);
      const t = performance.now();
      if (t - mark > slowApplyMs) this.stats.add(StatSlot.SlowApplies, 1);
      mark = t;
      this.appliedIndex = e.index;
      this.appliedTerm = e.term;
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

  /**
   * ACTIVATE / DEACTIVATE of one (member, type); the answer lists the alarm that changed, none
   * when nothing did (etcd: applierV3backend.Alarm). ACTIVATE of NONE changes nothing (etcd 3.5,
   * which stopped crashing on it). Unknown actions and types were refused before raft
   * (api/grpc/maintenance.ts), so an entry holding one is a bug.
   */
  private applyAlarm(ar: etcdserverpb.AlarmRequest.$Properties): Uint8Array {
    const action = ar.action ?? AlarmAction.GET;
    const type = ar.alarm ?? AlarmType.NONE;
    const member = Long.fromValue(ar.memberID ?? 0).toUnsigned();
    let changed = null;
    if (action === AlarmAction.ACTIVATE) {
      if (type !== AlarmType.NONE) changed = this.alarms.activate(member, type);
    } else if (action === AlarmAction.DEACTIVATE) {
      changed = this.alarms.deactivate(member, type);
    } else {
      assert(action === AlarmAction.GET, 'alarm action');
    }
    if (changed !== null) {
      this.backend.putMetaBytes(schema.metaAlarm, Buffer.from(this.alarms.encode()));
      this.alarmsChanged = true;
    }
    const alarms = action === AlarmAction.GET ? this.alarms.get(type) : changed === null ? [] : [changed];
    // No header, as etcd's (applierV3backend.Alarm fills none).
    return etcdserverpb.AlarmResponse.encode({
      alarms: alarms.map((m) => ({ memberID: m.memberId, alarm: m.alarm })),
    }).finish();
  }

  // ---- auth (auth/auth_store.ts) ----

  /**
   * What a client's write may do, judged against the auth store as of this entry (etcd's auth
   * applier): refused with the store's error before anything of it is applied.
   */
  private checkPermission(req: concordpb.InternalRequest): void {
    const c: Caller = { user: req.auth_user ?? '', revision: toNumber(req.auth_revision ?? 0) };
    const a = this.auth;
    const leaseKeys = (id: string): Iterable<string> | null => this.leases.get(Long.fromString(id))?.keys ?? null;
    if (req.put) checkPut(a, c, req.put, leaseKeys);
    else if (req.delete_range) checkDelete(a, c, req.delete_range);
    else if (req.txn) checkTxn(a, c, req.txn, leaseKeys);
    else if (req.lease_revoke) checkLeaseKeys(a, c, Long.fromValue(req.lease_revoke.ID ?? 0).toString(), leaseKeys);
    else if (req.lease_grant) a.checkUser(c.user, c.revision);
    else if (req.compaction) a.checkAdmin(c.user, c.revision);
    else if (req.alarm) {
      if ((req.alarm.action ?? AlarmAction.GET) === AlarmAction.GET) a.checkUser(c.user, c.revision);
      else a.checkAdmin(c.user, c.revision);
    } else if (req.auth_user_get) {
      // A user may read itself (etcd authApplierV3.UserGet); anything else needs root.
      if ((req.auth_user_get.name ?? '') !== c.user) a.checkAdmin(c.user, c.revision);
      else a.checkUser(c.user, c.revision);
    } else if (req.auth_role_get) {
      // A user may read the roles it holds (etcd authApplierV3.RoleGet).
      a.checkUser(c.user, c.revision);
      const roles = a.user(c.user)?.roles ?? [];
      if (!roles.includes(req.auth_role_get.role ?? '') && !roles.includes(rootRole)) throw errPermissionDenied;
    } else if (req.authenticate || req.auth_status) {
      // Anyone: Authenticate checked the password before the log; AuthStatus is public (3.5).
    } else if (isAuthRequest(req)) {
      a.checkAdmin(c.user, c.revision);
    }
  }

  /** Applies an Auth request; persists the store when it changed (same transaction). */
  private applyAuth(req: concordpb.InternalRequest): Uint8Array {
    const a = this.auth;
    const before = a.revision;
    const enabledBefore = a.enabled; // enable keeps the revision (etcd)
    const header = this.header(this.store.currentRev);
    let response: Uint8Array;
    if (req.auth_enable) {
      a.enable();
      response = etcdserverpb.AuthEnableResponse.encode({ header }).finish();
    } else if (req.auth_disable) {
      a.disable();
      response = etcdserverpb.AuthDisableResponse.encode({ header }).finish();
    } else if (req.auth_status) {
      response = etcdserverpb.AuthStatusResponse.encode({ header, enabled: a.enabled, authRevision: a.revision }).finish();
    } else if (req.authenticate) {
      const { name, simple_token: token, jwt } = req.authenticate;
      if (!a.enabled) throw errAuthNotEnabled;
      if (a.passwordHash(name ?? '') === null) throw errAuthFailed;
      if (jwt === true) {
        // The proposing member signs the JWT for this auth revision (etcd assign at apply).
        response = etcdserverpb.AuthenticateResponse.encode({ header, token: String(a.revision) }).finish();
      } else {
        this.tokensAssigned.push({ token, user: name, revision: a.revision });
        response = etcdserverpb.AuthenticateResponse.encode({ header, token }).finish();
      }
    } else if (req.auth_user_add) {
      const r = req.auth_user_add;
      a.userAdd(r.name ?? '', r.hashedPassword ?? '', r.options?.no_password === true);
      response = etcdserverpb.AuthUserAddResponse.encode({ header }).finish();
    } else if (req.auth_user_delete) {
      a.userDelete(req.auth_user_delete.name ?? '');
      response = etcdserverpb.AuthUserDeleteResponse.encode({ header }).finish();
    } else if (req.auth_user_change_password) {
      const r = req.auth_user_change_password;
      a.userChangePassword(r.name ?? '', r.hashedPassword ?? '');
      response = etcdserverpb.AuthUserChangePasswordResponse.encode({ header }).finish();
    } else if (req.auth_user_grant_role) {
      a.userGrantRole(req.auth_user_grant_role.user ?? '', req.auth_user_grant_role.role ?? '');
      response = etcdserverpb.AuthUserGrantRoleResponse.encode({ header }).finish();
    } else if (req.auth_user_revoke_role) {
      a.userRevokeRole(req.auth_user_revoke_role.name ?? '', req.auth_user_revoke_role.role ?? '');
      response = etcdserverpb.AuthUserRevokeRoleResponse.encode({ header }).finish();
    } else if (req.auth_role_add) {
      a.roleAdd(req.auth_role_add.name ?? '');
      response = etcdserverpb.AuthRoleAddResponse.encode({ header }).finish();
    } else if (req.auth_role_delete) {
      a.roleDelete(req.auth_role_delete.role ?? '');
      response = etcdserverpb.AuthRoleDeleteResponse.encode({ header }).finish();
    } else if (req.auth_role_grant_permission) {
      const r = req.auth_role_grant_permission;
      const p = r.perm!; // refused before the log when missing
      a.roleGrantPermission(r.name ?? '', { type: p.permType ?? 0, key: Buffer.from(p.key ?? []), rangeEnd: Buffer.from(p.range_end ?? []) });
      response = etcdserverpb.AuthRoleGrantPermissionResponse.encode({ header }).finish();
    } else if (req.auth_role_revoke_permission) {
      const r = req.auth_role_revoke_permission;
      a.roleRevokePermission(r.role ?? '', Buffer.from(r.key ?? []), Buffer.from(r.range_end ?? []));
      response = etcdserverpb.AuthRoleRevokePermissionResponse.encode({ header }).finish();
    } else if (req.auth_user_get) {
      const u = a.user(req.auth_user_get.name ?? '');
      if (u === undefined) throw new ConcordError(ErrorCode.AuthUserNotFound, 'etcdserver: user name not found');
      response = etcdserverpb.AuthUserGetResponse.encode({ header, roles: u.roles }).finish();
    } else if (req.auth_user_list) {
      response = etcdserverpb.AuthUserListResponse.encode({ header, users: a.userNames() }).finish();
    } else if (req.auth_role_get) {
      const r = a.role(req.auth_role_get.role ?? '');
      if (r === undefined) throw new ConcordError(ErrorCode.AuthRoleNotFound, 'etcdserver: role name not found');
      response = etcdserverpb.AuthRoleGetResponse.encode({ header, perm: r.perms.map((p) => ({ permType: p.type, key: p.key, range_end: p.rangeEnd })) }).finish();
    } else {
      assert(req.auth_role_list !== null && req.auth_role_list !== undefined, 'auth request');
      response = etcdserverpb.AuthRoleListResponse.encode({ header, roles: a.roleNames() }).finish();
    }
    if (a.revision !== before || a.enabled !== enabledBefore) {
      this.backend.putMetaBytes(schema.metaAuth, Buffer.from(a.encode()));
      this.authChanged = true;
    }
    return response;
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
      if (req.from_client === true && this.auth.enabled) this.checkPermission(req);
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
      } else if (req.alarm) {
        response = this.applyAlarm(req.alarm);
      } else if (isAuthRequest(req)) {
        response = this.applyAuth(req);
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
      alarms: this.alarmsChanged ? this.alarms.encode() : null,
      auth: this.authChanged || this.tokensAssigned.length > 0
        ? concordpb.AuthApplied.encode({ state: this.authChanged ? this.auth.toState() : null, tokens: this.tokensAssigned }).finish()
        : null,
      replaced: this.replacedPending,
    }));
    this.membershipChanged = false;
    this.alarmsChanged = false;
    this.authChanged = false;
    this.tokensAssigned = [];
    this.replacedPending = null;
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

  // ---- Maintenance.Hash and HashKV (protocol.ts, mvcc/hash.ts) ----

  /**
   * The revision is checked against the state at once, as etcd's HashByRev does under its lock;
   * the scan runs on the hash thread after what is applied is committed. Scans run on the create
   * chain: one at a time, and an install (which closes the environment) waits for them.
   */
  hash(msg: HashRequest): void {
    if (this.failed) return;
    if (this.held !== null) {
      this.held.push({ kind: WorkerMessageType.Hash, msg });
      return;
    }
    if (msg.kind === 'hashkv' && msg.rev > 0) {
      // etcd 3.4 kvstore.go HashByRev: rev <= compactMainRev is compacted (3.5: rev < compact).
      if (msg.rev <= this.store.compactMainRev) return this.hashAnswer(msg, ErrorCode.Compacted, null);
      if (msg.rev > this.store.currentRev) return this.hashAnswer(msg, ErrorCode.FutureRev, null);
    }
    this.createChain = this.createChain.then(() => this.hashOne(msg)).catch((err) => {
      if (this.failed) return;
      this.failed = true;
      this.env.fatal('hash: ' + String((err as Error)?.stack ?? err));
    });
  }

  private async hashOne(msg: HashRequest): Promise<void> {
    if (this.failed) return;
    const engine = this.backend.engine;
    if (!(engine instanceof LmdbEngine)) {
      // The simulator's in-memory store: its committed state plus what is queued is the state;
      // hash the committed records after a flush, synchronously (tests only).
      await this.backend.flushed();
      if (this.failed) return;
      return this.hashAnswer(msg, 0, hashInline(engine, msg));
    }
    await this.backend.flushed();
    if (this.failed) return;
    if (this.hashThread === null) this.hashThread = this.startHashThread();
    const id = ++this.hashSeq;
    const answer = await new Promise<HashThreadAnswer>((resolve) => {
      this.hashWaiters.set(id, resolve);
      this.hashThread!.postMessage({ id, kind: msg.kind, rev: msg.rev });
    });
    if (this.failed) return;
    this.hashAnswer(msg, answer.error, answer);
  }

  private startHashThread(): Worker {
    const init: HashThreadInit = { kvPath: this.kvPath, mapSizeBytes: this.init.mapSizeBytes, eventRing: this.init.watchEventRing };
    const t = new Worker(path.join(__dirname, 'hash_worker.js'), { workerData: init });
    t.unref();
    t.on('message', (a: HashThreadAnswer) => {
      const w = this.hashWaiters.get(a.id);
      assert(w !== undefined, 'hash answer without a request');
      this.hashWaiters.delete(a.id);
      w(a);
    });
    t.on('error', (err) => {
      if (this.failed) return;
      this.failed = true;
      this.env.fatal('hash thread: ' + String(err?.stack ?? err));
    });
    return t;
  }

  private hashAnswer(msg: HashRequest, error: number, a: { hash: number; compactRev: number; currentRev: number; rev: number } | null): void {
    assert(this.env.hashAnswer !== undefined, 'hash answers need env.hashAnswer');
    this.env.hashAnswer({
      type: WorkerMessageType.HashDone,
      requestId: msg.requestId,
      error,
      hash: a?.hash ?? 0,
      compactRev: a?.compactRev ?? this.store.compactMainRev,
      currentRev: a?.currentRev ?? this.store.currentRev,
      rev: a?.rev ?? 0,
    });
  }

  // ---- Online defragmentation (Maintenance.Defragment) ----
  //
  // LMDB never gives pages back to the file system, and etcd's defragmentation (a compacted copy
  // made with every read and write of the member stopped) stops the member for its whole length.
  // Here the member goes on meanwhile:
  //   1. journal: from now on the backend keeps every transaction that commits (Backend.journal*);
  //   2. copy: LMDB's compacting copy of the environment (free pages left out) into kv-defrag/,
  //      in one read transaction on the libuv pool; applies, reads and commits go on;
  //   3. catch-up: the journal so far is written into the copy, again while it grows, until what
  //      is left is small (every journaled write is a blind put or remove of a whole record, so
  //      writing again what the copy already holds changes nothing);
  //   4. commits are suspended (applies and reads go on: reads find uncommitted writes in the
  //      backend), the rest of the journal goes into the copy, the copy is closed and synced;
  //   5. the switch, synchronous (the only moment this thread serves nothing): under the kv
  //      environment lock, kv/lock.mdb removed, the copy renamed over kv/data.mdb, directories
  //      synced, the path opened again and given to the backend, the generation bumped; commits
  //      resume on the new file; the watch worker (ring record Reopened) and the hash thread
  //      (generation) reopen the path when they next read, keeping everything else;
  //   6. the old environment is closed and kv-defrag/ removed.
  // A crash before 5's rename leaves kv/ as it was (start-up removes kv-defrag/); after it, kv/
  // holds the copy, which holds every transaction the old file had: the same state, the same
  // applied index, and the WAL replays from there as after any crash. The WAL is not touched.
  // The copy needs the disk space of the live data; a failure before 5 (ENOSPC) leaves the
  // member as it was and answers the error.

  defragment(msg: DefragmentRequest): void {
    if (this.failed) return;
    if (this.held !== null) {
      this.held.push({ kind: WorkerMessageType.Defragment, msg });
      return;
    }
    // On the create chain: one at a time, after and before copies and hash scans (which read
    // the environment being replaced), and an install waits for it.
    this.createChain = this.createChain.then(() => this.defragmentOne(msg)).catch((err) => {
      if (this.failed) return;
      this.failed = true;
      this.env.fatal('defragment: ' + String((err as Error)?.stack ?? err));
    });
  }

  private defragCrashPoint(step: DefragStep): void {
    if (failpointsEnabled && failpointValue('defragCrashAt') === step) process.kill(process.pid, 'SIGKILL');
  }

  private async defragmentOne(msg: DefragmentRequest): Promise<void> {
    if (this.failed) return;
    const before = this.backend.sizes();
    const answer: DefragmentDone = {
      type: WorkerMessageType.DefragmentDone, requestId: msg.requestId, error: '',
      before, after: before, copyMs: 0, catchUpMs: 0, pauseMs: 0, journalBytes: 0,
    };
    const engine = this.backend.engine;
    if (!(engine instanceof LmdbEngine)) {
      // The simulator's in-memory store has no file to give pages back from.
      this.defragmentAnswer(answer);
      return;
    }
    const backend = this.backend;
    const tmp = path.join(this.init.dataDir, schema.kvDefragDir);
    fs.rmSync(tmp, { recursive: true, force: true });
    let copy: LmdbEngine | null = null;
    const t0 = performance.now();
    backend.journalStart();
    try {
      // 1-2.
      await copyEnvironment(engine.env, tmp);
      answer.copyMs = performance.now() - t0;
      this.defragCrashPoint(DefragStep.Copied);
      if (failpointsEnabled && failpointValue('defragCopyDelayMs') !== undefined) {
        await new Promise((r) => setTimeout(r, Number(failpointValue('defragCopyDelayMs'))));
      }
      if (this.failed) return;
      copy = new LmdbEngine(tmp, this.init.mapSizeBytes);
      // 3.
      for (let round = 0; round < defragCatchUpRoundsMax; round++) {
        if (backend.journalPendingBytes > defragJournalBytesMax) {
          throw new Error(`${backend.journalPendingBytes} bytes were written during the copy, more than the ${defragJournalBytesMax} it may keep; try again when the write load is lower`);
        }
        const taken = backend.journalTake();
        if (taken.writes.keys.length === 0) break;
        answer.journalBytes += taken.bytes;
        if (!(failpointsEnabled && failpointValue('defragSkipCatchUp') !== undefined)) await commitTo(copy, taken.writes);
        if (this.failed) return;
        if (backend.journalPendingBytes < defragSwitchBytes) break;
      }
      this.defragCrashPoint(DefragStep.CaughtUp);
      // 4.
      const t1 = performance.now();
      answer.catchUpMs = t1 - t0 - answer.copyMs;
      await backend.suspendCommits();
      this.defragCrashPoint(DefragStep.Suspended);
      if (this.failed) return;
      const rest = backend.journalTake();
      backend.journalStop();
      answer.journalBytes += rest.bytes;
      if (rest.writes.keys.length > 0 && !(failpointsEnabled && failpointValue('defragSkipCatchUp') !== undefined)) await commitTo(copy, rest.writes);
      const c = copy;
      copy = null;
      await c.close();
      fsyncFile(path.join(tmp, schema.kvDataFile));
      this.defragCrashPoint(DefragStep.CopyClosed);
    } catch (err) {
      backend.journalStop();
      if (copy !== null) await copy.close().catch(() => undefined);
      fs.rmSync(tmp, { recursive: true, force: true });
      backend.resumeCommits();
      answer.error = (err as Error).message;
      this.defragmentAnswer(answer);
      return;
    }
    if (this.failed) return;
    // 5. From the rename on, a failure is fatal: the process stops and start-up finds the copy
    // in place (or the old file before the rename).
    const t2 = performance.now();
    let old: StoreEngine;
    let generation: number;
    this.kvEnv.lock();
    try {
      fs.rmSync(path.join(this.kvPath, schema.kvLockFile), { force: true });
      this.defragCrashPoint(DefragStep.LockRemoved);
      fs.renameSync(path.join(tmp, schema.kvDataFile), path.join(this.kvPath, schema.kvDataFile));
      fsyncDir(this.kvPath);
      fsyncDir(tmp);
      this.defragCrashPoint(DefragStep.Renamed);
      old = backend.replaceEngine(new LmdbEngine(this.kvPath, this.init.mapSizeBytes));
      generation = this.kvEnv.bumpGeneration(false);
    } finally {
      this.kvEnv.unlock();
    }
    backend.resumeCommits();
    this.events.reopened(generation);
    this.events.flush();
    answer.pauseMs = performance.now() - t2;
    this.defragCrashPoint(DefragStep.Reopened);
    // 6.
    await old.close();
    fs.rmSync(tmp, { recursive: true, force: true });
    this.refreshSizes(true);
    answer.after = this.sizes;
    this.defragmentAnswer(answer);
  }

  private defragmentAnswer(a: DefragmentDone): void {
    assert(this.env.defragmentAnswer !== undefined, 'defragment answers need env.defragmentAnswer');
    this.env.defragmentAnswer(a);
  }

  // ---- raft snapshots (header) ----

  /** Leader: a copy of the state at an applied index >= minIndex (protocol.ts). */
  snapshotCreate(msg: SnapshotCreate): void {
    if (this.failed) return;
    if (this.held !== null) {
      this.held.push({ kind: WorkerMessageType.SnapshotCreate, msg });
      return;
    }
    this.createChain = this.createChain.then(() => this.createOne(msg)).catch((err) => this.snapshotFailure(err));
  }

  private async createOne(msg: SnapshotCreate): Promise<void> {
    if (this.failed) return;
    // The driver asks for what its raft core knows applied, which this thread applied first.
    assert(msg.minIndex <= this.appliedIndex, 'snapshot asked for beyond the applied index');
    // A file the driver still holds serves too when it is recent enough.
    let reuse: string | null = null;
    for (const [file, f] of this.outFiles) {
      if (f.meta.index >= msg.minIndex && (reuse === null || f.meta.index > this.outFiles.get(reuse)!.meta.index)) reuse = file;
    }
    if (reuse !== null) {
      const f = this.outFiles.get(reuse)!;
      f.holds++;
      this.answer(WorkerMessageType.SnapshotCreated, msg.requestId, reuse, f.meta, null);
      return;
    }
    const engine = this.backend.engine;
    if (!(engine instanceof LmdbEngine)) {
      this.answer(WorkerMessageType.SnapshotCreated, msg.requestId, '', null, new SnapshotError(SnapshotErrorCode.Unsupported, 'snapshot: the store is not LMDB'));
      return;
    }
    if (this.outFiles.size >= snapshotOutFilesMax) {
      this.answer(WorkerMessageType.SnapshotCreated, msg.requestId, '', null, new SnapshotError(SnapshotErrorCode.Busy, `snapshot: ${this.outFiles.size} snapshot files are being sent already`));
      return;
    }
    // Everything applied so far into LMDB first: the copy then holds at least this index.
    const appliedAtRequest = this.appliedIndex;
    await this.backend.flushed();
    if (this.failed) return;
    const n = ++this.snapFileSeq;
    const tmpDir = path.join(this.snapPath, `out-${n}.tmp`);
    try {
      const tmpFile = await copyEnvironment(engine.env, tmpDir);
      const meta = await inspectSnapshotFile(tmpFile, this.init.mapSizeBytes, null);
      assert(meta.index >= appliedAtRequest, 'snapshot copy older than the applied index');
      assert(meta.index >= msg.minIndex, 'snapshot older than asked for');
      assert(meta.clusterId === this.clusterId.toString(), 'snapshot of another cluster');
      const file = path.join(this.snapPath, outFileNameFor(meta, n));
      fs.renameSync(tmpFile, file);
      fs.rmSync(tmpDir, { recursive: true, force: true });
      this.outFiles.set(file, { meta, holds: 1 });
      this.answer(WorkerMessageType.SnapshotCreated, msg.requestId, file, meta, null);
    } catch (err) {
      fs.rmSync(tmpDir, { recursive: true, force: true });
      if (!(err instanceof SnapshotError)) throw err;
      this.answer(WorkerMessageType.SnapshotCreated, msg.requestId, '', null, err);
    }
  }

  /** Follower: takes and checks a received snapshot file (protocol.ts). */
  snapshotStage(msg: SnapshotStage): void {
    if (this.failed) return;
    if (this.held !== null) {
      this.held.push({ kind: WorkerMessageType.SnapshotStage, msg });
      return;
    }
    this.stageChain = this.stageChain.then(() => this.stageOne(msg)).catch((err) => this.snapshotFailure(err));
  }

  private async stageOne(msg: SnapshotStage): Promise<void> {
    if (this.failed) return;
    if (this.env.engine !== undefined) {
      fs.rmSync(msg.file, { force: true });
      this.answer(WorkerMessageType.SnapshotStaged, msg.requestId, '', null, new SnapshotError(SnapshotErrorCode.Unsupported, 'snapshot: the store is not LMDB'));
      return;
    }
    const n = ++this.snapFileSeq;
    const tmp = path.join(this.snapPath, `in-${n}.tmp.mdb`);
    try {
      try {
        await moveInto(msg.file, tmp);
      } catch (err) {
        fs.rmSync(msg.file, { force: true });
        throw new SnapshotError(SnapshotErrorCode.Io, `snapshot: cannot take ${msg.file}: ${(err as Error).message}`);
      }
      // Its bytes durable whatever the sink did (FileSnapshotSink syncs; this is then cheap).
      fsyncFile(tmp);
      const meta = await inspectSnapshotFile(tmp, this.init.mapSizeBytes, idBytes(this.memberId));
      if (meta.clusterId !== this.clusterId.toString()) {
        throw new SnapshotError(SnapshotErrorCode.ClusterMismatch, `snapshot: of cluster ${BigInt(meta.clusterId).toString(16)}, this member is of cluster ${BigInt(this.clusterId.toString()).toString(16)}`);
      }
      if (meta.index <= this.appliedIndex) {
        throw new SnapshotError(SnapshotErrorCode.Stale, `snapshot: at index ${meta.index}, the state is already at ${this.appliedIndex}`);
      }
      const file = path.join(this.snapPath, inFileName(meta.index, meta.term));
      if (this.staged !== null && this.staged.file !== file) fs.rmSync(this.staged.file, { force: true });
      this.staged = null;
      fs.renameSync(tmp, file);
      // Durable before anything may depend on it: the install's WAL restart names it.
      fsyncDir(this.snapPath);
      this.staged = { file, meta };
      this.answer(WorkerMessageType.SnapshotStaged, msg.requestId, file, meta, null);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      fs.rmSync(tmp + '-lock', { force: true });
      if (!(err instanceof SnapshotError)) throw err;
      this.answer(WorkerMessageType.SnapshotStaged, msg.requestId, '', null, err);
    }
  }

  /** The driver is done with a file it was answered (sent, or not to be installed). */
  snapshotRelease(msg: SnapshotRelease): void {
    if (this.failed) return;
    if (this.held !== null) {
      this.held.push({ kind: WorkerMessageType.SnapshotRelease, msg });
      return;
    }
    const out = this.outFiles.get(msg.file);
    if (out !== undefined) {
      assert(out.holds > 0, 'snapshot file released more than held');
      out.holds--;
      if (out.holds === 0) {
        this.outFiles.delete(msg.file);
        fs.rmSync(msg.file, { force: true });
      }
      return;
    }
    if (this.staged !== null && this.staged.file === msg.file) {
      fs.rmSync(msg.file, { force: true });
      this.staged = null;
    }
  }

  private answer(type: WorkerMessageType.SnapshotCreated | WorkerMessageType.SnapshotStaged,
    requestId: number, file: string, meta: SnapshotMeta | null, err: SnapshotError | null): void {
    const a: SnapshotAnswer = {
      requestId, file,
      error: err === null ? null : { code: err.code, message: err.message },
      size: meta?.size ?? 0, index: meta?.index ?? 0, term: meta?.term ?? 0,
      confState: meta?.confState ?? { voters: [], learners: [] },
      membership: meta?.membership ?? new Uint8Array(0), currentRev: meta?.currentRev ?? 0,
    };
    assert(this.env.snapshotAnswer !== undefined, 'snapshot answers need env.snapshotAnswer');
    if (type === WorkerMessageType.SnapshotCreated) this.env.snapshotAnswer({ type, ...a });
    else this.env.snapshotAnswer({ type, ...a });
  }

  /** An unexpected error in snapshot work: a bug or a storage failure; stop. */
  private snapshotFailure(err: unknown): void {
    if (this.failed) return;
    if (err instanceof InstallCrash) {
      this.failed = true;
      return;
    }
    this.failed = true;
    this.env.fatal('snapshot: ' + String((err as Error)?.stack ?? err));
  }

  private startInstall(b: BatchMessage): void {
    this.held = [];
    this.install(b).then(() => this.resumeHeld(), (err) => this.snapshotFailure(err));
  }

  private crashPoint(step: InstallStep): void {
    if (this.env.installCrashPoint !== undefined && this.env.installCrashPoint(step)) throw new InstallCrash(step);
  }

  /** Installs the staged snapshot, then does the rest of its batch (header: the steps). */
  private async install(b: BatchMessage): Promise<void> {
    const snap = b.snapshot!;
    assert(b.seq !== 0 && b.mustSync, 'a snapshot batch is a synced write');
    await this.stageChain;
    const staged = this.staged;
    assert(staged !== null, 'install without a staged snapshot');
    assert(staged.meta.index === snap.index && staged.meta.term === snap.term, 'install of another snapshot than the staged one');
    assert(this.appliedIndex < snap.index, 'install at or below the applied index');
    // 1. Persisted of earlier batches first; copies read the environment about to close.
    if (this.syncsPending.length > 0) await new Promise<void>((resolve) => { this.syncsDrained = resolve; });
    await this.createChain;
    if (this.failed) return;
    const queue = this.applyQueue;
    for (let i = this.applyQueueHead; i < queue.length; i++) assert(queue[i]!.index <= snap.index, 'an entry beyond the snapshot was queued to apply');
    queue.length = 0;
    this.applyQueueHead = 0;
    const waiters = this.compaction?.waiters ?? [];
    this.compaction = null;
    this.crashPoint(InstallStep.Drained);
    // 2. The old state stays as it is on disk; nothing of it needs to be committed.
    this.backendOpen = false;
    await this.backend.abandon();
    this.crashPoint(InstallStep.BackendClosed);
    // 3. The commit point.
    try {
      this.wal.restartAt(snap.index, snap.term, (step) => this.crashPoint(step === WalRestartStep.SegmentWritten ? InstallStep.WalSegmentWritten : InstallStep.WalRenamed));
    } catch (err) {
      if (err instanceof WalWriteError) {
        this.fail(err);
        return;
      }
      throw err;
    }
    this.crashPoint(InstallStep.WalRestarted);
    // 4. The new state.
    this.kvEnv.lock();
    let generation: number;
    try {
      fs.rmSync(path.join(this.kvPath, schema.kvLockFile), { force: true });
      this.crashPoint(InstallStep.KvLockRemoved);
      replaceKvDataFile(this.kvPath, staged.file);
      this.crashPoint(InstallStep.KvReplaced);
      this.staged = null;
      this.openState(undefined);
      generation = this.kvEnv.bumpGeneration(true);
    } finally {
      this.kvEnv.unlock();
    }
    assert(this.appliedIndex === snap.index, 'installed state at another index than staged');
    assert(this.appliedTerm === snap.term, 'installed state at another term than staged');
    this.durableIndex = snap.index;
    this.writtenIndex = snap.index;
    this.writtenTerm = snap.term;
    this.durableAppliedIndex = snap.index;
    this.sizes = this.backend.sizes();
    this.crashPoint(InstallStep.Reopened);
    // 5. Tell the watch worker and the main thread, then the rest of the batch.
    this.events.replaced(this.store.currentRev, this.store.compactMainRev, generation);
    this.events.flush();
    this.replacedPending = {
      index: snap.index, term: snap.term,
      confState: { voters: this.confState.voters.slice(), learners: this.confState.learners.slice() },
      leases: [...this.leases.all()].map((l) => ({ id: l.id.toString(), ttl: l.ttl, remaining: l.remaining })),
    };
    this.leases.takeChanges(); // none: the lease set goes whole in `replaced`
    this.membershipChanged = true;
    this.alarmsChanged = true; // the alarms of the new state, whole
    this.resumeCompaction(waiters);
    this.postApplied();
    this.batchDecoded(b);
  }

  /** After an install: the messages that waited for it, in order (another install holds again). */
  private resumeHeld(): void {
    const held = this.held!;
    this.held = null;
    for (let i = 0; i < held.length; i++) {
      if (this.failed) return;
      const h = held[i]!;
      if (h.kind === WorkerMessageType.Batch) this.batch(h.data);
      else if (h.kind === WorkerMessageType.SnapshotCreate) this.snapshotCreate(h.msg);
      else if (h.kind === WorkerMessageType.SnapshotStage) this.snapshotStage(h.msg);
      else if (h.kind === WorkerMessageType.Hash) this.hash(h.msg);
      else if (h.kind === WorkerMessageType.Defragment) this.defragment(h.msg);
      else this.snapshotRelease(h.msg);
      if (this.held !== null) {
        (this.held as HeldMessage[]).push(...held.slice(i + 1));
        return;
      }
    }
  }

  /** Resolves once no install, create or stage is running (tests, close). */
  async idle(): Promise<void> {
    for (;;) {
      await this.createChain;
      await this.stageChain;
      if (this.held === null || this.failed) return;
      await new Promise((r) => setImmediate(r));
    }
  }

  /**
   * Tests: stops as a killed process would (after an installCrashPoint, or at any moment):
   * nothing more is written or answered, and the files are let go without committing anything
   * queued, so that a new core can open the same data dir in this process.
   */
  async crashForTest(): Promise<void> {
    this.failed = true;
    this.wal.close();
    if (this.backendOpen) {
      this.backendOpen = false;
      await this.backend.abandon();
    }
  }

  async close(): Promise<void> {
    await this.idle();
    if (this.hashThread !== null) {
      const t = this.hashThread;
      this.hashThread = null;
      await t.terminate();
    }
    // A compaction sweep must not write to a closed backend (it would commit on a closed
    // environment); a restart finishes it (scheduled > finished).
    this.compaction = null;
    if (!this.failed) this.wal.close();
    if (this.backendOpen) {
      this.backendOpen = false;
      await this.backend.close();
    }
  }
}

/** Whether `req` is a request of the Auth service. */
function isAuthRequest(req: concordpb.InternalRequest): boolean {
  return !!(req.auth_enable || req.auth_disable || req.auth_status || req.authenticate || req.auth_user_add ||
    req.auth_user_delete || req.auth_user_change_password || req.auth_user_grant_role ||
    req.auth_user_revoke_role || req.auth_role_add || req.auth_role_delete ||
    req.auth_role_grant_permission || req.auth_role_revoke_permission || req.auth_user_get ||
    req.auth_user_list || req.auth_role_get || req.auth_role_list);
}

/** The steps of an online defragmentation (header of defragment()), for the crash tests' failpoint. */
export const enum DefragStep {
  Copied = 'copied',
  CaughtUp = 'caughtUp',
  Suspended = 'suspended',
  CopyClosed = 'copyClosed',
  LockRemoved = 'lockRemoved',
  Renamed = 'renamed',
  Reopened = 'reopened',
}

/** Writes `w` to `engine` as one transaction; resolves once it is durable. */
function commitTo(engine: StoreEngine, w: EngineWrites): Promise<void> {
  return new Promise((resolve, reject) => engine.commit(w, (err) => (err === null ? resolve() : reject(err))));
}

/** Hash/HashKV over a non-LMDB engine's committed records (the simulator's store). */
function hashInline(engine: StoreEngine, msg: HashRequest): { hash: number; compactRev: number; currentRev: number; rev: number } {
  const cur = engine.get(Db.Meta, schema.metaCurrentRev);
  const currentRev = Math.max(1, cur !== undefined ? schema.readU64(cur, 0) : 0);
  const sc = engine.get(Db.Meta, schema.metaScheduledCompact);
  const compactRev = sc !== undefined ? schema.readU64(sc, 0) : -1;
  const src: StateSource = {
    forEach(fromMain, toMain, visit) {
      for (const { key, value } of engine.records(Db.Key)) {
        const main = schema.revKeyMain(key);
        if (main >= fromMain && main <= toMain) visit(key, value);
      }
    },
    forEachLease(visit) {
      for (const { key, value } of engine.records(Db.Lease)) visit(key, value);
    },
    meta: (name) => engine.get(Db.Meta, name),
  };
  if (msg.kind === 'hash') return { hash: hashState(src, currentRev, compactRev), compactRev, currentRev, rev: currentRev };
  const rev = msg.rev === 0 ? currentRev : msg.rev;
  return { hash: hashKv(src, rev, compactRev).hash, compactRev, currentRev, rev };
}

/** The term of `index` in the replayed log, or 0 when the log does not hold it. */
function termInLog(replay: WalReplay, index: number): number {
  if (index === replay.prevIndex) return replay.prevTerm;
  const e = replay.entries[index - replay.prevIndex - 1];
  return e !== undefined && e.index === index ? e.term : 0;
}

function outFileNameFor(meta: SnapshotMeta, n: number): string {
  return `out-${meta.index.toString(16).padStart(16, '0')}-${meta.term.toString(16).padStart(16, '0')}-${n}.mdb`;
}

/** A member or cluster id as meta stores it (u64 BE). */
function idBytes(id: Long): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32BE(id.high >>> 0, 0);
  b.writeUInt32BE(id.low >>> 0, 4);
  return b;
}

const emptyResponse = new Uint8Array(0);
/** How often the WAL tries again to preallocate its next segment while that fails. */
const walSpareRetryMs = 1000;

