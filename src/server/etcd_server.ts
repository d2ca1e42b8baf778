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
import { assert } from '../util/assert';
import { ErrorCode } from '../util/errors';
import * as limits from '../config/limits';
import { StorageWorkerHandle } from '../workers/pool';
import {
  FromWorker, PackReader, PackWriter, ReadKind, WorkerMessageType, WorkerReady,
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
  onFatal(message: string): void;
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

  private constructor(cfg: EtcdServerConfig, worker: StorageWorkerHandle, ready: WorkerReady, stats: WorkerStats) {
    this.cfg = cfg;
    this.workerStats = stats;
    this.proposalsFailed = 0;
    this.leaderChanges = 0;
    this.lastLead = 0;
    this.worker = worker;
    this.clusterId = Long.fromString(ready.clusterId, true);
    this.memberId = Long.fromString(ready.memberId, true);
    const entries: Entry[] = [];
    const r = new PackReader(ready.entries);
    for (let n = r.u32(); n > 0; n--) entries.push(r.entry());
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
    this.nextProposalId = Date.now() * 1000;
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
    const now = Date.now();
    for (const l of ready.leases) this.lessor.restore(Long.fromString(l.id), l.ttl, l.remaining, now);
    this.dbSize = 0;
    this.dbSizeInUse = 0;
    this.readyWaiters = [];
    this.startCommit = ready.hardState.commit;
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
    // etcd's quota applier: writes that can grow the database stop once it exceeds the quota.
    if ((req.put || req.txn) && this.dbSize > this.cfg.quotaBackendBytes) return ErrorCode.NoSpace;
    const id = this.nextProposalId++;
    req.id = id;
    const data = concordpb.InternalRequest.encode(req).finish();
    if (data.length > this.cfg.requestBytesMax) return ErrorCode.RequestTooLarge;
    this.raft.propose(data);
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

  /** etcd raises the NOSPACE alarm once the backend exceeds its quota. */
  hasNoSpaceAlarm(): boolean {
    return this.dbSize > this.cfg.quotaBackendBytes;
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
    const w = this.batch;
    w.reset();
    w.u8(WorkerMessageType.Batch);
    const rd = this.raft.ready();
    if (rd.hardState !== null) {
      w.u8(1);
      w.u53(rd.hardState.term);
      w.u53(rd.hardState.vote);
      w.u53(rd.hardState.commit);
    } else {
      w.u8(0);
    }
    w.u53(this.raft.term);
    w.u32(rd.entries.length);
    for (const e of rd.entries) w.entry(e);
    w.u32(rd.committedEntries.length);
    for (const e of rd.committedEntries) w.entry(e);
    const countAt = w.u32Placeholder();
    let count = 0;
    const applying = this.raft.log.applying;
    const reads = this.pendingReads;
    let kept = 0;
    for (let i = 0; i < reads.length; i++) {
      const rq = reads[i]!;
      if (rq.readIndex <= applying && count < limits.batchReadsMax) {
        w.u32(rq.id);
        w.u8(rq.kind);
        w.u8(rq.linearizable ? 1 : 0);
        w.bytes(rq.request);
        this.reads.set(rq.id, rq.target);
        count++;
      } else {
        reads[kept++] = rq;
      }
    }
    reads.length = kept;
    w.patchU32(countAt, count);
    if (rd.entries.length === 0 && rd.committedEntries.length === 0 && count === 0 &&
      rd.hardState === null) {
      return;
    }
    this.worker.send(w.finish());
    const bs = this.batchStats;
    bs.batches++;
    bs.appendEntries += rd.entries.length;
    bs.applyEntries += rd.committedEntries.length;
    bs.reads += count;
    if (this.raft.hasReady() || kept > 0) this.scheduleTurn();
  }

  private onWorkerMessage(msg: FromWorker): void {
    assert(msg instanceof Uint8Array, 'unexpected worker message');
    if (msg[0] === WorkerMessageType.Persisted) {
      const b = Buffer.from(msg.buffer, msg.byteOffset, msg.length);
      this.raft.storageAppended(b.readDoubleLE(1), b.readDoubleLE(9));
      this.scheduleTurn();
      return;
    }
    assert(msg[0] === WorkerMessageType.Applied, 'unexpected worker message type');
    this.onApplied(msg);
  }

  private onApplied(data: Uint8Array): void {
    const r = new PackReader(data);
    r.u8(); // message type
    const appliedIndex = r.u53();
    this.currentRev = r.u53();
    this.compactRev = r.u53();
    this.dbSize = r.u53();
    this.dbSizeInUse = r.u53();
    this.raft.appliedTo(appliedIndex);
    // Applied entries are in the state machine (and the WAL): keep only the tail a lagging
    // follower may still need. Trimming in steps of logRetainEntries keeps the copy amortized.
    const log = this.raft.log;
    if (log.applied - log.firstIndex() >= 2 * limits.logRetainEntries) log.compactTo(log.applied - limits.logRetainEntries);
    for (let n = r.u32(); n > 0; n--) {
      const id = r.u53();
      const code = r.u8();
      const response = r.bytes();
      const target = this.waits.get(id);
      if (target === undefined) continue; // proposed before a restart
      this.waits.delete(id);
      this.answer(target, code, response);
    }
    for (let n = r.u32(); n > 0; n--) {
      const id = r.u32();
      const code = r.u8();
      const response = r.bytes();
      const target = this.reads.get(id);
      assert(target !== undefined, 'read answered twice');
      this.reads.delete(id);
      this.answer(target, code, response);
    }
    const now = Date.now();
    // Entries replayed from the WAL at start-up restore leases as the restart found them.
    const restoring = this.readyWaiters.length > 0;
    for (let n = r.u32(); n > 0; n--) {
      const kind = r.u8() as LeaseChangeKind;
      const id = Long.fromString(Buffer.from(r.bytes()).toString('latin1'));
      const ttl = r.u53();
      const remaining = r.u53();
      this.lessor.applied(kind, id, ttl, remaining, now, restoring);
    }
    this.checkCaughtUp();
    if (this.pendingReads.length > 0 || this.raft.hasReady()) this.scheduleTurn();
  }

  /**
   * The leader revokes expired leases and checkpoints remaining TTLs, through the log (etcd
   * lessor runLoop: every 500 ms, at most leaseRevokeRate / 2 revokes per round).
   */
  private leaseTick(): void {
    if (this.stopped || !this.raft.isLeader()) return;
    const now = Date.now();
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
    if (target instanceof InternalWaiter) target.done(code, response);
    else this.sink(target, code, response);
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
