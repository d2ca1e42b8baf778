// The main-thread driver (etcd: etcdserver/server.go + raft.go): turns client requests into
// raft proposals, runs the raft core, and hands its Ready to the storage worker in batches.
//
// Write path:  propose -> raft log (a lone voter commits at once) -> Batch to worker: append,
//              and apply once the WAL fsync returns -> Applied -> answer the client.
// Read path:   serializable reads go into the next Batch at once; linearizable reads wait until
//              every entry committed when they arrived has been handed to the worker (the
//              worker answers them after applying those entries).
// One Batch per event-loop turn carries everything that turn produced.
import Long from 'long';
import { concordpb, etcdserverpb } from '../gen/proto';
import { SingleVoterRaft as Raft } from '../raft/single_voter';
import { Entry } from '../raft/types';
import { Prng } from '../util/prng';
import { monotonicNowMs } from '../util/clock';
import { assert } from '../util/assert';
import { ErrorCode } from '../util/errors';
import * as limits from '../config/limits';
import { StorageWorkerHandle } from '../workers/pool';
import {
  AppliedVisitor, BatchMessage, decodeApplied, decodeEntries, decodePersisted, encodeBatch, FromWorker,
  PackWriter, ReadKind, ReadRequest, WorkerAlarm, WorkerMessageType, WorkerReady,
} from '../workers/protocol';
import { etcdVersion } from '../version';
import { newStatsBuffer, WorkerStats } from '../workers/stats';
import { newRingBuffer } from '../watch/ring';
import { WatchHub } from '../watch/hub';
import { newWatchStatsBuffer } from '../watch/protocol';
import { Lessor } from '../lease/lessor';
import { LeaseChangeKind } from '../lease/lease_store';
import * as schema from '../storage/schema';
import * as path from 'node:path';

/** A proposal or read made by the server itself (lease expiry, checkpoints): no client waits. */
export class InternalWaiter {
  constructor(readonly done: (code: number, response: Uint8Array) => void) {}
}

/** etcd's lease TTL floor: 1.5 election timeouts in heartbeats, rounded up to seconds. */
export function leaseTtlMinSeconds(electionMs: number, heartbeatMs: number): number {
  const electionTicks = Math.floor(electionMs / heartbeatMs);
  return Math.ceil((Math.floor((3 * electionTicks) / 2) * heartbeatMs) / 1000);
}

/** Receives the answer to a proposal or read: code 0 and the encoded response, or an error. */
export type ResultSink = (target: unknown, code: number, response: Uint8Array) => void;

export interface EtcdServerConfig {
  name: string;
  dataDir: string;
  mapSizeBytes: number;
  requestBytesMax: number;
  heartbeatMs: number;
  electionMs: number;
  initialClusterToken: string;
  peerUrls: string[];
  clientUrls: string[];
  quotaBackendBytes: number;
  /** --experimental-watch-progress-notify-interval, in ms. */
  watchProgressNotifyIntervalMs: number;
  /** --experimental-lease-checkpoint-interval, in ms. */
  leaseCheckpointIntervalMs: number;
  /** etcd's --unsafe-no-fsync. */
  unsafeNoFsync: boolean;
  onFatal(message: string): void;
  /** The storage raised or cleared NOSPACE (a full disk, a failing store). */
  onStorageAlarm?(alarm: WorkerAlarm): void;
  /** An exception while handing one answer over (logged; the others go on). */
  onAnswerError?(err: unknown): void;
}

interface PendingRead {
  id: number;
  kind: ReadKind;
  request: Uint8Array;
  linearizable: boolean;
  /** Committed index the read must observe (0 for serializable reads, which may be stale). */
  readIndex: number;
  target: unknown;
}

/** etcd lessor: expiry is checked every 500 ms; leaseRevokeRate 1000/s. */
const leaseTickMs = 500;
const leaseRevokesPerTick = 500;
/** etcd maxLeaseCheckpointBatchSize. */
const leaseCheckpointBatchMax = 1000;
/** A revoke or checkpoint the server proposed itself: a lease revoked meanwhile is no error. */
const ignoreResult = new InternalWaiter(() => undefined);

export class EtcdServer {
  readonly cfg: EtcdServerConfig;
  readonly clusterId: Long;
  readonly memberId: Long;
  private readonly worker: StorageWorkerHandle;
  /** The watch worker (set once by start()). */
  watch!: WatchHub;
  /** The leader's lease clock. */
  readonly lessor: Lessor;
  private leaseTicker: NodeJS.Timeout | null = null;
  private readonly raft: Raft;
  private sink: ResultSink;
  /** proposal id -> whoever waits for its answer. */
  private readonly waits: Map<number, unknown>;
  private nextProposalId: number;
  private readonly reads: Map<number, unknown>;
  private pendingReads: PendingRead[];
  private nextReadId: number;
  private turnScheduled: boolean;
  private readonly batch: PackWriter;
  private readonly runTurnBound: () => void;
  private ticker: NodeJS.Timeout | null;
  private stopped: boolean;
  /** MVCC revision as of the last Applied message. */
  currentRev: number;
  compactRev: number;
  dbSize: number;
  dbSizeInUse: number;
  private readyWaiters: (() => void)[];
  private startCommit: number;
  /** The storage worker's counters and histograms (shared memory, read by /metrics). */
  readonly workerStats: WorkerStats;
  /** Proposals refused or failed before they reached the log (etcd_server_proposals_failed_total). */
  proposalsFailed: number;
  /** Times this member saw the leader change (etcd_server_leader_changes_seen_total). */
  leaderChanges: number;
  private lastLead: number;
  /** Hand-offs to the storage worker and what they carried (concord_worker_batch_*). */
  readonly batchStats = { batches: 0, appendEntries: 0, applyEntries: 0, reads: 0 };
  /** Number of the last Batch sent; the worker's Persisted names the last one made durable. */
  private batchSeq: number;
  /** Sizes of the entries in the raft log, for the byte bounds (limits.unappliedBytesMax, ...). */
  private readonly logBytes: LogBytes;
  /** Bytes proposed this turn, not yet handed out by raft (and counted by logBytes). */
  private proposedBytes: number;
  /** Stores that cannot take writes that grow them (storage alarms, NOSPACE). */
  private readonly storageNoSpace: Set<string>;
  private readonly appliedVisitor: AppliedVisitor;
  /** Set for the duration of one Applied message (lease changes read them). */
  private restoring: boolean;
  private leaseNow: number;

  private constructor(cfg: EtcdServerConfig, worker: StorageWorkerHandle, ready: WorkerReady, stats: WorkerStats) {
    this.cfg = cfg;
    this.workerStats = stats;
    this.proposalsFailed = 0;
    this.leaderChanges = 0;
    this.lastLead = 0;
    this.worker = worker;
    this.clusterId = Long.fromString(ready.clusterId, true);
    this.memberId = Long.fromString(ready.memberId, true);
    const entries: Entry[] = decodeEntries(ready.entries);
    const idNum = 1; // raft ids are local to the core; the wire member id is `memberId`
    this.raft = new Raft({
      id: idNum,
      voters: [idNum],
      electionTicks: Math.max(2, Math.round(cfg.electionMs / cfg.heartbeatMs)),
      heartbeatTicks: 1,
      prng: new Prng(Number(this.memberId.low >>> 0) || 1),
      hardState: ready.hardState,
      snapshotIndex: ready.snapshotIndex,
      snapshotTerm: ready.snapshotTerm,
      entries,
      applied: ready.appliedIndex,
      applyBatchMax: limits.batchEntriesMax,
    });
    this.sink = () => undefined;
    this.waits = new Map();
    this.nextProposalId = Date.now() * 1000; // an id seed, not a duration (util/clock.ts)
    this.reads = new Map();
    this.pendingReads = [];
    this.nextReadId = 1;
    this.turnScheduled = false;
    this.batch = new PackWriter(256 * 1024);
    this.runTurnBound = this.runTurn.bind(this);
    this.ticker = null;
    this.stopped = false;
    this.currentRev = ready.currentRev;
    this.compactRev = ready.compactRev;
    this.lessor = new Lessor({ checkpointIntervalMs: cfg.leaseCheckpointIntervalMs, revokeRetryMs: 3000 });
    const now = monotonicNowMs();
    for (const l of ready.leases) this.lessor.restore(Long.fromString(l.id), l.ttl, l.remaining, now);
    this.dbSize = 0;
    this.dbSizeInUse = 0;
    this.readyWaiters = [];
    this.startCommit = ready.hardState.commit;
    this.batchSeq = 0;
    this.proposedBytes = 0;
    this.logBytes = new LogBytes(ready.snapshotIndex + 1);
    for (const e of entries) this.logBytes.push(e.index, e.data.length);
    this.logBytes.appliedTo(ready.appliedIndex);
    this.storageNoSpace = new Set();
    this.restoring = false;
    this.leaseNow = 0;
    this.appliedVisitor = {
      result: (id, code, response) => this.onResult(id, code, response),
      read: (id, code, response) => this.onReadResult(id, code, response),
      leaseChange: (kind, id, ttl, remaining) => this.onLeaseChange(kind, id, ttl, remaining),
    };
    worker.listen({
      onMessage: (msg) => this.onWorkerMessage(msg),
      onFatal: (message) => cfg.onFatal(message),
    });
  }

  static async start(cfg: EtcdServerConfig): Promise<EtcdServer> {
    const statsBuffer = newStatsBuffer();
    // CONCORD_WATCH_RING_BYTES (a power of two) shrinks the ring so tests can make it overflow.
    const ringBytes = Number(process.env.CONCORD_WATCH_RING_BYTES ?? limits.watchEventRingBytes);
    const watchEventRing = newRingBuffer(ringBytes);
    const watchCompactRev = new SharedArrayBuffer(8);
    const { handle, ready } = await StorageWorkerHandle.start({
      dataDir: cfg.dataDir,
      mapSizeBytes: cfg.mapSizeBytes,
      walSegmentBytes: limits.walSegmentBytes,
      statsBuffer,
      watchEventRing,
      watchCompactRev,
      leaseTtlMin: leaseTtlMinSeconds(cfg.electionMs, cfg.heartbeatMs),
      unsafeNoFsync: cfg.unsafeNoFsync,
    });
    const server = new EtcdServer(cfg, handle, ready, new WorkerStats(statsBuffer));
    // After the storage worker: it creates the LMDB databases the watch worker opens. Entries
    // replayed from the WAL below reach the watch worker through the ring.
    try {
      server.watch = await WatchHub.start({
        kvPath: path.join(cfg.dataDir, schema.kvDir),
        mapSizeBytes: cfg.mapSizeBytes,
        eventRing: watchEventRing,
        compactRev: watchCompactRev,
        clusterId: server.clusterId.toString(),
        memberId: server.memberId.toString(),
        // etcd splits at its gRPC receive limit: --max-request-bytes + grpcOverheadBytes.
        fragmentBytesMax: cfg.requestBytesMax + limits.grpcOverheadBytes,
        streamBytesMax: limits.watchStreamBytesMax,
        progressNotifyIntervalMs: cfg.watchProgressNotifyIntervalMs,
        stats: newWatchStatsBuffer(),
        storeRev: () => server.currentRev,
        currentRaftTerm: () => server.raft.term,
        onFatal: (message) => cfg.onFatal(message),
      });
    } catch (err) {
      await handle.close();
      throw err;
    }
    server.ticker = setInterval(() => server.tick(), cfg.heartbeatMs);
    server.leaseTicker = setInterval(() => server.leaseTick(), leaseTickMs);
    // A lone voter need not wait an election timeout to find out nobody else is there.
    server.raft.campaign();
    server.scheduleTurn();
    await server.whenCaughtUp();
    return server;
  }

  setResultSink(sink: ResultSink): void {
    this.sink = sink;
  }

  /** Resolves once this member leads and has applied everything committed before the start. */
  private whenCaughtUp(): Promise<void> {
    return new Promise((resolve) => {
      this.readyWaiters.push(resolve);
      this.checkCaughtUp();
    });
  }

  private checkCaughtUp(): void {
    if (this.readyWaiters.length === 0) return;
    if (!this.raft.isLeader()) return;
    if (this.raft.log.applied < Math.max(this.startCommit, this.raft.log.committed)) return;
    if (this.raft.log.committed < this.raft.log.lastIndex()) return;
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w();
  }

  // ---- requests ----

  /**
   * Proposes a write. `build` fills the InternalRequest; the answer reaches the result sink with
   * `target`. Returns an error code when the proposal is refused up front (0 when accepted).
   */
  propose(req: concordpb.InternalRequest.$Properties, target: unknown): number {
    const code = this.proposeOrRefuse(req, target);
    if (code !== 0) this.proposalsFailed++;
    return code;
  }

  private proposeOrRefuse(req: concordpb.InternalRequest.$Properties, target: unknown): number {
    if (this.stopped) return ErrorCode.Stopped;
    if (!this.raft.isLeader()) return ErrorCode.NoLeader;
    if (this.raft.log.committed - this.raft.log.applied > limits.commitApplyGapMax ||
      this.waits.size >= limits.proposalsPendingMax) {
      return ErrorCode.TooManyRequests;
    }
    // etcd's capped applier under NOSPACE: writes that can grow the database are refused.
    if ((req.put || req.txn || req.lease_grant) && this.hasNoSpaceAlarm()) return ErrorCode.NoSpace;
    const id = this.nextProposalId++;
    req.id = id;
    const data = concordpb.InternalRequest.encode(req).finish();
    if (data.length > this.cfg.requestBytesMax) return ErrorCode.RequestTooLarge;
    // Memory bounded in bytes too: one large proposal passes when nothing waits.
    const unapplied = this.logBytes.unappliedBytes + this.proposedBytes;
    if (unapplied > 0 && unapplied + data.length > limits.unappliedBytesMax) return ErrorCode.TooManyRequests;
    this.raft.propose(data);
    this.proposedBytes += data.length;
    this.waits.set(id, target);
    this.scheduleTurn();
    return 0;
  }

  /** Queues a read; linearizable reads observe every write committed before they arrived. */
  read(kind: ReadKind, request: Uint8Array, serializable: boolean, target: unknown): number {
    if (this.stopped) return ErrorCode.Stopped;
    if (!serializable && !this.raft.isLeader()) return ErrorCode.NoLeader;
    if (this.pendingReads.length + this.reads.size >= limits.readsPendingMax) {
      return ErrorCode.TooManyRequests;
    }
    const id = this.nextReadId++;
    if (this.nextReadId > 0xffffffff) this.nextReadId = 1;
    this.pendingReads.push({
      id, kind, request, linearizable: !serializable,
      readIndex: serializable ? 0 : this.raft.log.committed, target,
    });
    this.scheduleTurn();
    return 0;
  }

  /** Maintenance.Status: raft facts from here, sizes and revision from the worker. */
  status(target: unknown): number {
    const errors: string[] = [];
    if (!this.raft.isLeader() && this.raft.lead === 0) errors.push('etcdserver: no leader');
    // etcd lists alarms as AlarmMember.String(): "memberID:<id> alarm:NOSPACE ".
    if (this.hasNoSpaceAlarm()) errors.push(`memberID:${this.memberId.toString()} alarm:NOSPACE `);
    const template = etcdserverpb.StatusResponse.encode({
      version: etcdVersion,
      leader: this.raft.lead !== 0 ? this.memberId : 0,
      raftIndex: this.raft.log.committed,
      raftTerm: this.raft.term,
      raftAppliedIndex: this.raft.log.applied,
      errors,
      isLearner: false,
    }).finish();
    return this.read(ReadKind.Status, template, true, target);
  }

  raftTerm(): number {
    return this.raft.term;
  }

  isLeader(): boolean {
    return this.raft.isLeader();
  }

  /**
   * NOSPACE: etcd raises it once the backend exceeds its quota; concord also when the storage
   * cannot write (a full disk: the backend's commit or the WAL's next segment failed).
   */
  hasNoSpaceAlarm(): boolean {
    return this.dbSize > this.cfg.quotaBackendBytes || this.storageNoSpace.size > 0;
  }

  /** Bytes of proposals not yet applied, and of applied entries kept in the raft log. */
  logByteCounts(): { unapplied: number; retained: number } {
    return { unapplied: this.logBytes.unappliedBytes + this.proposedBytes, retained: this.logBytes.retainedBytes };
  }

  /** Committed and applied raft indexes and the number of proposals awaiting their answer. */
  proposalCounts(): { committed: number; applied: number; pending: number } {
    return { committed: this.raft.log.committed, applied: this.raft.log.applied, pending: this.waits.size };
  }

  leaderId(): Long | number {
    return this.raft.lead !== 0 ? this.memberId : 0;
  }

  // ---- the loop ----

  private scheduleTurn(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    setImmediate(this.runTurnBound);
  }

  private tick(): void {
    this.raft.tick();
    if (this.raft.lead !== this.lastLead) {
      if (this.raft.lead !== 0) this.leaderChanges++;
      this.lastLead = this.raft.lead;
    }
    this.scheduleTurn();
  }

  private runTurn(): void {
    this.turnScheduled = false;
    if (this.stopped) return;
    const hasReady = this.raft.hasReady();
    if (!hasReady && this.pendingReads.length === 0) return;
    const rd = this.raft.ready();
    for (const e of rd.entries) this.logBytes.push(e.index, e.data.length);
    // ready() hands out every unstable entry: this turn's proposals are counted above now.
    this.proposedBytes = 0;
    const applying = this.raft.log.applying;
    const pending = this.pendingReads;
    const reads: ReadRequest[] = [];
    let kept = 0;
    for (let i = 0; i < pending.length; i++) {
      const rq = pending[i]!;
      if (rq.readIndex <= applying && reads.length < limits.batchReadsMax) {
        reads.push(rq);
        this.reads.set(rq.id, rq.target);
      } else {
        pending[kept++] = rq;
      }
    }
    pending.length = kept;
    if (rd.entries.length === 0 && rd.committedEntries.length === 0 && reads.length === 0 &&
      rd.hardState === null) {
      return;
    }
    const batch: BatchMessage = {
      seq: ++this.batchSeq,
      hardState: rd.hardState,
      mustSync: rd.mustSync,
      raftTerm: this.raft.term,
      append: rd.entries,
      apply: rd.committedEntries,
      reads,
    };
    this.worker.send(encodeBatch(this.batch, batch));
    const bs = this.batchStats;
    bs.batches++;
    bs.appendEntries += rd.entries.length;
    bs.applyEntries += rd.committedEntries.length;
    bs.reads += reads.length;
    if (this.raft.hasReady() || kept > 0) this.scheduleTurn();
  }

  private onWorkerMessage(msg: FromWorker): void {
    if (!(msg instanceof Uint8Array)) {
      assert(msg.type === WorkerMessageType.Alarm, 'unexpected worker message');
      this.onStorageAlarm(msg);
      return;
    }
    if (msg[0] === WorkerMessageType.Persisted) {
      const p = decodePersisted(msg);
      if (p.index > 0) this.raft.storageAppended(p.index, p.term);
      this.scheduleTurn();
      return;
    }
    this.onApplied(msg);
  }

  private onStorageAlarm(alarm: WorkerAlarm): void {
    if (alarm.raised) this.storageNoSpace.add(alarm.source);
    else this.storageNoSpace.delete(alarm.source);
    if (this.cfg.onStorageAlarm !== undefined) this.cfg.onStorageAlarm(alarm);
  }

  private onApplied(data: Uint8Array): void {
    // Entries replayed from the WAL at start-up restore leases as the restart found them.
    this.restoring = this.readyWaiters.length > 0;
    this.leaseNow = monotonicNowMs();
    const h = decodeApplied(data, this.appliedVisitor);
    this.currentRev = h.currentRev;
    this.compactRev = h.compactRev;
    this.dbSize = h.dbSize;
    this.dbSizeInUse = h.dbSizeInUse;
    this.raft.appliedTo(h.appliedIndex);
    this.logBytes.appliedTo(h.appliedIndex);
    // Applied entries are in the state machine (and the WAL): keep only the tail a lagging
    // follower may still need, bounded in entries and bytes. Trimming in steps keeps the copy
    // amortized.
    const log = this.raft.log;
    const retained = log.applied - log.firstIndex() + 1;
    if (retained >= 2 * limits.logRetainEntries || this.logBytes.retainedBytes >= 2 * limits.logRetainBytesMax) {
      const to = this.logBytes.trimPoint(log.applied, limits.logRetainEntries, limits.logRetainBytesMax);
      if (to >= log.firstIndex()) {
        log.compactTo(to);
        this.logBytes.compactTo(to);
      }
    }
    this.checkCaughtUp();
    if (this.pendingReads.length > 0 || this.raft.hasReady()) this.scheduleTurn();
  }

  private onResult(id: number, code: number, response: Uint8Array): void {
    const target = this.waits.get(id);
    if (target === undefined) return; // proposed before a restart
    this.waits.delete(id);
    this.answer(target, code, response);
  }

  private onReadResult(id: number, code: number, response: Uint8Array): void {
    const target = this.reads.get(id);
    assert(target !== undefined, 'read answered twice');
    this.reads.delete(id);
    this.answer(target, code, response);
  }

  private onLeaseChange(kind: number, id: string, ttl: number, remaining: number): void {
    this.lessor.applied(kind as LeaseChangeKind, Long.fromString(id), ttl, remaining, this.leaseNow, this.restoring);
  }

  /**
   * The leader revokes expired leases and checkpoints remaining TTLs, through the log (etcd
   * lessor runLoop: every 500 ms, at most leaseRevokeRate / 2 revokes per round).
   */
  private leaseTick(): void {
    if (this.stopped || !this.raft.isLeader()) return;
    const now = monotonicNowMs();
    for (const id of this.lessor.expired(now, leaseRevokesPerTick)) {
      this.propose({ lease_revoke: { ID: id } }, ignoreResult);
    }
    const due = this.lessor.dueCheckpoints(now, leaseCheckpointBatchMax);
    if (due.length > 0) {
      this.propose({ lease_checkpoint: { checkpoints: due.map((c) => ({ ID: c.id, remaining_TTL: c.remaining })) } }, ignoreResult);
    }
  }

  /** Hands an answer to whoever waits: a client (the result sink) or the server itself. */
  private answer(target: unknown, code: number, response: Uint8Array): void {
    // An exception while answering one request (a waiter's decode, a call the client left)
    // must not stop the rest of this Applied message, nor the server (issue #10, finding 6).
    try {
      if (target instanceof InternalWaiter) target.done(code, response);
      else this.sink(target, code, response);
    } catch (err) {
      if (this.cfg.onAnswerError === undefined) throw err;
      this.cfg.onAnswerError(err);
    }
  }

  /** Stops taking requests, fails what waits, flushes and closes storage. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker !== null) clearInterval(this.ticker);
    if (this.leaseTicker !== null) clearInterval(this.leaseTicker);
    const empty = new Uint8Array(0);
    for (const target of this.waits.values()) this.answer(target, ErrorCode.Stopped, empty);
    this.waits.clear();
    for (const target of this.reads.values()) this.answer(target, ErrorCode.Stopped, empty);
    this.reads.clear();
    for (const rq of this.pendingReads) this.answer(rq.target, ErrorCode.Stopped, empty);
    this.pendingReads = [];
    await this.watch.close();
    await this.worker.close();
  }
}

/**
 * Sizes of the entries in the in-memory raft log, in index order, for the byte bounds: bytes
 * proposed but not applied (limits.unappliedBytesMax) and bytes of applied entries kept for
 * catching up (limits.logRetainBytesMax). Invariant: base <= applied + 1 <= base + count.
 */
export class LogBytes {
  /** Index of sizes[head]. */
  private base: number;
  private sizes: number[];
  private head: number;
  private applied: number;
  unappliedBytes: number;
  retainedBytes: number;

  constructor(firstIndex: number) {
    this.base = firstIndex;
    this.sizes = [];
    this.head = 0;
    this.applied = firstIndex - 1;
    this.unappliedBytes = 0;
    this.retainedBytes = 0;
  }

  /** The entry at `index` holds `bytes`; an index already known replaces it and what follows. */
  push(index: number, bytes: number): void {
    const next = this.base + this.sizes.length - this.head;
    assert(index <= next && index > this.applied, 'log bytes: index out of order');
    while (this.base + this.sizes.length - this.head > index) this.unappliedBytes -= this.sizes.pop()!;
    this.sizes.push(bytes);
    if (index > this.applied) this.unappliedBytes += bytes;
    else this.retainedBytes += bytes;
  }

  appliedTo(index: number): void {
    const last = this.base + this.sizes.length - this.head - 1;
    const to = Math.min(index, last);
    for (let i = this.applied + 1; i <= to; i++) {
      const b = this.sizes[this.head + i - this.base]!;
      this.unappliedBytes -= b;
      this.retainedBytes += b;
    }
    if (index > this.applied) this.applied = index;
  }

  /**
   * The index to compact the log to so that at most `entriesMax` applied entries and
   * `bytesMax` bytes of them stay (never beyond `applied`).
   */
  trimPoint(applied: number, entriesMax: number, bytesMax: number): number {
    let to = Math.max(this.base - 1, applied - entriesMax);
    let bytes = 0;
    for (let i = this.base; i <= to; i++) bytes += this.sizes[this.head + i - this.base]!;
    let kept = this.retainedBytes - bytes;
    while (kept > bytesMax && to < applied) {
      to++;
      kept -= this.sizes[this.head + to - this.base]!;
    }
    return to;
  }

  /** Entries up to `index` left the log. */
  compactTo(index: number): void {
    while (this.base <= index && this.head < this.sizes.length) {
      const b = this.sizes[this.head++]!;
      if (this.base <= this.applied) this.retainedBytes -= b;
      else this.unappliedBytes -= b;
      this.base++;
    }
    if (this.head > 1024 && this.head * 2 > this.sizes.length) {
      this.sizes = this.sizes.slice(this.head);
      this.head = 0;
    }
  }
}
