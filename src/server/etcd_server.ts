// The main-thread driver (etcd: etcdserver/server.go + raft.go): turns client requests into
// raft proposals, runs the raft core (src/raft/raw_node.ts: its contract is in the header
// there) and hands its Ready to the storage worker in batches.
//
// Write path:  propose -> RawNode -> Ready.persist -> Batch{seq, append} -> WAL fsync ->
//              Persisted{seq} -> rn.persisted(seq) -> committed -> apply -> Applied -> answer.
//              Latency (the contract's item 3): entries that commit as soon as the local write
//              is durable (all of a lone voter's) go to the worker for apply in the same Batch
//              as their append; the worker applies them right after the fsync. Raft hands them
//              out as committed later and they are not sent again.
// Read path:   serializable reads go into the next Batch at once; linearizable reads get a read
//              index from raft (ReadIndex: at once for a lone voter, a heartbeat round with
//              peers) and go to the worker once every entry up to it was sent for apply (the
//              worker answers them after applying those entries).
// One Batch per event-loop turn carries everything that turn produced.
import Long from 'long';
import { concordpb, etcdserverpb } from '../gen/proto';
import { RawNode } from '../raft/raw_node';
import { decodeConfChange, encodeConfChange } from '../raft/confchange';
import {
  ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType, Ready, StateType,
} from '../raft/types';
import { ProgressState } from '../raft/tracker/progress';
import { encodeMemberContext, Member, Membership, raftIdOf } from '../membership/membership';
import { idToLong, memberIdOf } from '../membership/ids';
import { PeerTransport, type PeerTransportOptions, type TransportStats } from '../transport/peer_transport';
import { RefuseReason } from '../transport/frame';
import { ForwardError, forwardErrorMin } from '../transport/forward';
import { decodeI64, decodeU64, encodeI64, encodeU64, LeaderOp, leaderRetryMs } from './leader_requests';
import {
  decodeHashKvAnswer, decodeHashKvRequest, encodeHashKvAnswer, encodeHashKvRequest, isMemberOp, MemberOp,
  type HashKvAnswer,
} from './member_requests';
import { CorruptHasher, goDuration, initialCheck, PeerHashKv, periodicCheck } from './corrupt';
import type { LogLevel } from '../util/log';
import { LogBytes } from './log_bytes';
import { AlarmAction, AlarmMember, AlarmStore, AlarmType, alarmMemberString } from '../apply/alarm_store';
import { Prng } from '../util/prng';
import { monotonicNowMs } from '../util/clock';
import { assert } from '../util/assert';
import { ErrorCode } from '../util/errors';
import * as limits from '../config/limits';
import { StorageWorkerHandle } from '../workers/pool';
import {
  AppliedReplaced, AppliedVisitor, BatchMessage, decodeApplied, decodeEntries, decodePersisted, encodeBatch, FromWorker,
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
import * as fs from 'node:fs';
import type { DefragmentDone, HashDone, SnapshotAnswer } from '../workers/protocol';
import { AuthGate } from '../auth/auth_gate';
import { AuthStore } from '../auth/auth_store';
import type { JwtTokens } from '../auth/jwt_tokens';
import type { Caller } from '../auth/request_checks';
import { SnapshotErrorCode } from '../storage/snapshotter';

/** A proposal or read made by the server itself (lease expiry, checkpoints): no client waits. */
export class InternalWaiter {
  constructor(readonly done: (code: number, response: Uint8Array) => void) {}
}

/** A Prometheus histogram's cumulative counts, kept where the events happen (metrics.ts reads it). */
export class BucketCounts {
  readonly bounds: readonly number[];
  readonly counts: number[];
  sum: number;
  count: number;

  constructor(bounds: number[]) {
    this.bounds = bounds;
    this.counts = bounds.map(() => 0);
    this.sum = 0;
    this.count = 0;
  }

  observe(v: number): void {
    for (let i = 0; i < this.bounds.length; i++) if (v <= this.bounds[i]!) this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
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
  /**
   * --experimental-snapshot-catchup-entries: applied entries kept in the raft log for lagging
   * followers (default limits.logRetainEntries); one further behind gets a snapshot.
   */
  snapshotCatchUpEntries?: number;
  onFatal(message: string): void;
  /** The storage raised or cleared NOSPACE (a full disk, a failing store). */
  onStorageAlarm?(alarm: WorkerAlarm): void;
  /** An exception while handing one answer over (logged; the others go on). */
  onAnswerError?(err: unknown): void;
  /** The peer listener (the first --listen-peer-urls); null: no peers (a lone member's tests). */
  peerListen?: { host: string; port: number } | null;
  /** Peer TLS (transport/peer_tls.ts): how peers are dialled and listened for; plain TCP when absent. */
  peerConnect?: PeerTransportOptions['connect'];
  peerServerCreate?: PeerTransportOptions['serverCreate'];
  /**
   * Listen for peers even as a lone member (--listen-peer-urls given); otherwise only when the
   * membership has other members.
   */
  peerListenAlways?: boolean;
  /** --pre-vote (default on, etcd 3.5). */
  preVote?: boolean;
  /** --strict-reconfig-check (default on). */
  strictReconfigCheck?: boolean;
  /** --experimental-max-learners (default 1). */
  maxLearners?: number;
  /** --experimental-auto-promote-learners: the leader promotes a learner once it caught up. */
  autoPromoteLearners?: boolean;
  /** This member was removed from the cluster (etcd stops then). */
  onRemoved?(): void;
  /**
   * A member starting for the first time: its id, the cluster id and the initial members (all of
   * them voters, this one included), as derived from --initial-cluster and the token. Absent: a
   * lone member with random ids. Ignored when the data dir has state (etcd does the same).
   */
  bootstrap?: { memberId: Long; clusterId: Long; members: InitialMember[]; join?: boolean } | null;
  /** etcd's request timeout: 5 s + 2 x the election timeout. */
  requestTimeoutMs?: number;
  /** Told about peers refusing us or transport trouble (logged). */
  onPeerEvent?(msg: string, fields: Record<string, unknown>): void;
  /**
   * --experimental-initial-corrupt-check: a member with data compares its HashKV with its peers'
   * before start() resolves, and start() fails with DataInconsistencyError (server/corrupt.ts).
   */
  initialCorruptCheck?: boolean;
  /** --experimental-corrupt-check-time in ms (0 or absent: off): the leader's periodic check. */
  corruptCheckIntervalMs?: number;
  /** The corruption checks' log lines (server/corrupt.ts). */
  onLog?(level: LogLevel, msg: string, fields: Record<string, unknown>): void;
  /** --auth-token-ttl: seconds a simple token lives after its last use (default 300). */
  authTokenTtlSeconds?: number;
  /** --auth-token jwt: the member's JWT provider (absent: simple tokens). */
  jwtTokens?: JwtTokens | null;
  /** --bcrypt-cost (default 10). */
  bcryptCost?: number;
  /** --auth-password-min-length (default 0). */
  passwordMinLength?: number;
}

interface PendingRead {
  id: number;
  kind: ReadKind;
  request: Uint8Array;
  linearizable: boolean;
  /**
   * Every entry up to this index must be applied before the read: 0 for a serializable read
   * (it may be stale), raft's read index for a linearizable one (-1 until raft gave it).
   */
  readIndex: number;
  target: unknown;
  /** Until when a linearizable read may wait for its read index (etcd's request timeout). */
  at: number;
}

/** A member of the initial cluster (--initial-cluster), with its derived id. */
export interface InitialMember {
  id: Long;
  name: string;
  peerUrls: string[];
}

/** etcd lessor: expiry is checked every 500 ms; leaseRevokeRate 1000/s. */
const leaseTickMs = 500;
const leaseRevokesPerTick = 500;
/** etcd maxLeaseCheckpointBatchSize. */
const leaseCheckpointBatchMax = 1000;
/** etcd HealthInterval: how long peers must have been connected for a membership change. */
const healthIntervalMs = 5000;
/** The peer transport's clock (its activeSince times). */
function peerNowMs(): number {
  return performance.timeOrigin + performance.now();
}
/** etcd applyTimeout: how long a leader waits for its apply to reach its commit index. */
const appliedWaitTimeoutMs = 1000;

/** An answer without payload (errors, empty responses). */
const noBytes = new Uint8Array(0);
/** A revoke or checkpoint the server proposed itself: a lease revoked meanwhile is no error. */
const ignoreResult = new InternalWaiter(() => undefined);

/** etcd quota.go: what a stored key costs beyond its bytes, and a lease. */
const kvOverheadBytes = 256;
const leaseOverheadBytes = 64;

/**
 * The bytes a request may add to the backend (etcd quota.go Cost): a put its key, value and
 * overhead, a txn its larger branch, a lease grant its record; 0 for what cannot grow it
 * (deletes, compactions, a txn without puts), which passes whatever the quota.
 */
function quotaCost(req: concordpb.InternalRequest.$Properties): number {
  if (req.put) return putCost(req.put);
  if (req.txn) return txnCost(req.txn);
  if (req.lease_grant) return leaseOverheadBytes;
  return 0;
}

/**
 * What etcd's corrupt applier (applierV3Corrupt) refuses while a CORRUPT alarm is active: every
 * write (a txn with a put or delete in any branch, nested too), compaction, lease grant and
 * revoke. Reads and read-only txns go on (etcd 3.4 serves them outside the applier).
 */
function refusedWhenCorrupt(req: concordpb.InternalRequest.$Properties): boolean {
  return req.put != null || req.delete_range != null || req.compaction != null ||
    req.lease_grant != null || req.lease_revoke != null || (req.txn != null && txnWrites(req.txn));
}

function txnWrites(t: etcdserverpb.TxnRequest.$Properties): boolean {
  for (const ops of [t.success, t.failure]) {
    for (const op of ops ?? []) {
      if (op.request_put || op.request_delete_range) return true;
      if (op.request_txn && txnWrites(op.request_txn)) return true;
    }
  }
  return false;
}

function putCost(p: etcdserverpb.PutRequest.$Properties): number {
  return (p.key?.length ?? 0) + (p.value?.length ?? 0) + kvOverheadBytes;
}

function txnCost(t: etcdserverpb.TxnRequest.$Properties): number {
  return Math.max(opsCost(t.success), opsCost(t.failure));
}

function opsCost(ops: etcdserverpb.RequestOp.$Properties[] | null | undefined): number {
  let cost = 0;
  for (const op of ops ?? []) {
    if (op.request_put) cost += putCost(op.request_put);
    else if (op.request_txn) cost += txnCost(op.request_txn);
  }
  return cost;
}

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
  private leaseTicks = 0;
  /** The next periodic corruption check (--experimental-corrupt-check-time), null when off. */
  private corruptCheckTimer: NodeJS.Timeout | null = null;
  private readonly rn: RawNode;
  /** This member's raft id. */
  private readonly selfId: number;
  /** The members as of the worker's applied index (copies from its Applied messages). */
  private membership: Membership;
  /** Peer connections; null for a member without a peer listener. */
  private transport: PeerTransport | null;
  /**
   * Proposals made while no leader is known, by id, in arrival order: proposed once one is
   * (etcd: Propose blocks until a leader is known or the request's context ends).
   */
  private readonly awaitingLeader: Map<number, Uint8Array>;
  /** Bytes in awaitingLeader (bounded with the unapplied bytes). */
  private awaitingLeaderBytes: number;
  /** When the current leader became known (monotonic ms; 0: none yet). */
  private leaderKnownAtMs: number;
  /** Waiters for the applied index to reach an index (etcd waitAppliedIndex), by index. */
  private appliedWaiters: { index: number; at: number; done: (code: number) => void }[];
  /** This member is a learner in the applied membership (cached: checked per request). */
  private learner: boolean;
  /** Snapshot requests to the storage worker by request id: a MsgSnap to send, or to step. */
  private readonly snapshotRequests: Map<number, Message>;
  /** Maintenance.Snapshot copies asked of the worker, by request id. */
  private readonly backupRequests: Map<number, (a: SnapshotAnswer) => void>;
  private nextSnapshotRequest: number;
  /** Maintenance.Hash/HashKV waiting for the worker. Invariant: size <= hashRequestsPendingMax. */
  private readonly hashRequests: Map<number, (a: HashDone) => void>;
  /** Maintenance.Defragment waiting for the worker. Invariant: size <= defragmentRequestsPendingMax. */
  private readonly defragmentRequests: Map<number, (a: DefragmentDone) => void>;
  /** Durations of the defragmentations done (etcd_disk_backend_defrag_duration_seconds). */
  readonly defragDurations: BucketCounts;
  /** The last defragmentation's answer (its sizes and times, for logs and tests). */
  lastDefragment: DefragmentDone | null;
  private nextHashRequest: number;
  /** Snapshot files being sent, by the follower's raft id (released when the send ends). */
  private readonly snapshotsOut: Map<number, string>;
  /** A received snapshot the worker staged and raft was given (installed with its Batch). */
  private staged: { index: number; term: number; file: string } | null;
  /** The watch worker runs: a snapshot may be installed (it rebuilds its replica then). */
  private watchStarted: boolean;
  /** Proposal ids in proposal order with their deadlines (etcd's request timeout). */
  private readonly waitDeadlines: { id: number; at: number }[];
  private waitDeadlinesHead: number;
  private readonly requestTimeoutMs: number;
  /** This member's name and client URLs are in the replicated membership. */
  private published: boolean;
  /** Membership changes this member proposed, by ConfChange id, answered once applied. */
  private readonly confWaits: Map<number, { cc: ConfChange; done: (code: number) => void; at: number }>;
  /** A MoveLeader waiting for its target to lead. */
  private transfer: { target: number; at: number; done: (code: number) => void } | null;
  /** Write seqs handed to the worker and not yet reported Persisted, oldest first. */
  private readonly persisting: number[];
  /** The highest index sent to the worker for applying (committed, or early: see the header). */
  private applySent: number;
  /** The highest committed index raft handed out. Invariant: rn.applied <= handedOut. */
  private handedOut: number;
  /** The worker's applied index, from its last Applied message. */
  private workerApplied: number;
  /** ConfChange entries handed out for apply that the worker has not reported applied yet. */
  private readonly confChanges: Entry[];
  /** Linearizable reads not yet given to raft for a read index. */
  private readsUnconfirmed: PendingRead[];
  /** Reads given to raft, by the context of their ReadIndex round. */
  private readonly readRounds: Map<string, PendingRead[]>;
  private readRound: number;
  private sink: ResultSink;
  /** proposal id -> whoever waits for its answer. */
  private readonly waits: Map<number, unknown>;
  private nextProposalId: number;
  private readonly reads: Map<number, unknown>;
  /** Reads with their index known (or serializable), waiting for it to be sent for apply. */
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
  /** The alarms as of the last Applied message (replicated state; the worker owns the copy). */
  private alarms: AlarmStore;
  /** This member proposed ACTIVATE NOSPACE for itself and has no answer yet: propose it once. */
  private noSpaceRaising: boolean;
  private readonly noSpaceRaised: InternalWaiter;
  private readyWaiters: (() => void)[];
  /** The commit index found at start: serving waits until it is applied. */
  private readonly startCommit: number;
  /** The storage worker's counters and histograms (shared memory, read by /metrics). */
  readonly workerStats: WorkerStats;
  /** Auth: this member's copy of the auth store and its simple tokens (auth/auth_gate.ts). */
  readonly auth: AuthGate;
  /** Proposals refused or failed before they reached the log (etcd_server_proposals_failed_total). */
  proposalsFailed: number;
  /** Times this member saw the leader change (etcd_server_leader_changes_seen_total). */
  leaderChanges: number;
  /**
   * Heartbeats sent later than two heartbeat intervals after the previous one to the same peer
   * (etcd_server_heartbeat_send_failures_total: etcd's timeout detector, "leader failed to send
   * out heartbeat on time", a sign of an overloaded leader or slow disk).
   */
  heartbeatsLate: number;
  private readonly lastHeartbeatAt: Map<number, number>;
  /** Hand-offs to the storage worker and what they carried (concord_worker_batch_*). */
  readonly batchStats = { batches: 0, appendEntries: 0, applyEntries: 0, reads: 0 };
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

  private constructor(cfg: EtcdServerConfig, worker: StorageWorkerHandle, ready: WorkerReady,
    boot: { entries: Entry[]; hardState: WorkerReady['hardState'] } | null, stats: WorkerStats) {
    this.cfg = cfg;
    this.workerStats = stats;
    this.proposalsFailed = 0;
    this.leaderChanges = 0;
    this.heartbeatsLate = 0;
    this.lastHeartbeatAt = new Map();
    this.worker = worker;
    this.clusterId = Long.fromString(ready.clusterId, true);
    this.memberId = Long.fromString(ready.memberId, true);
    this.selfId = raftIdOf(this.memberId);
    const entries: Entry[] = boot !== null ? boot.entries : decodeEntries(ready.entries);
    const hardState = boot !== null ? boot.hardState : ready.hardState;
    this.rn = new RawNode({
      id: this.selfId,
      electionTicks: Math.max(2, Math.round(cfg.electionMs / cfg.heartbeatMs)),
      heartbeatTicks: 1,
      prng: new Prng(Number(this.memberId.low >>> 0) || 1),
      hardState,
      snapshotIndex: ready.snapshotIndex,
      snapshotTerm: ready.snapshotTerm,
      entries,
      applied: ready.appliedIndex,
      confState: configuration(ready, this.selfId),
      committedEntriesMax: limits.batchEntriesMax,
      preVote: cfg.preVote ?? true,
    });
    this.membership = Membership.decode(ready.membership);
    this.learner = this.membership.get(this.memberId)?.isLearner ?? false;
    this.transport = null;
    this.awaitingLeader = new Map();
    this.awaitingLeaderBytes = 0;
    this.leaderKnownAtMs = 0;
    this.appliedWaiters = [];
    this.snapshotRequests = new Map();
    this.backupRequests = new Map();
    this.nextSnapshotRequest = 1;
    this.hashRequests = new Map();
    this.defragmentRequests = new Map();
    // etcd's buckets: 100 ms doubling 13 times (to about 6.8 minutes).
    this.defragDurations = new BucketCounts(Array.from({ length: 13 }, (_, i) => 0.1 * 2 ** i));
    this.lastDefragment = null;
    this.nextHashRequest = 1;
    this.snapshotsOut = new Map();
    this.staged = null;
    this.watchStarted = false;
    this.waitDeadlines = [];
    this.waitDeadlinesHead = 0;
    this.requestTimeoutMs = cfg.requestTimeoutMs ?? 5000 + 2 * cfg.electionMs;
    this.published = false;
    this.confWaits = new Map();
    this.transfer = null;
    this.persisting = [];
    this.applySent = ready.appliedIndex;
    this.handedOut = ready.appliedIndex;
    this.workerApplied = ready.appliedIndex;
    this.confChanges = [];
    this.readsUnconfirmed = [];
    this.readRounds = new Map();
    this.readRound = 0;
    this.sink = () => undefined;
    this.waits = new Map();
    // An id seed, not a duration (util/clock.ts); ids need only be unique per proposer: the
    // entry names its proposer and only that member answers it.
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
    const now = monotonicNowMs();
    for (const l of ready.leases) this.lessor.restore(Long.fromString(l.id), l.ttl, l.remaining, now);
    this.dbSize = 0;
    this.dbSizeInUse = 0;
    this.alarms = AlarmStore.decode(ready.alarms);
    this.auth = new AuthGate(AuthStore.decode(ready.auth), cfg.authTokenTtlSeconds ?? 300, monotonicNowMs, cfg.jwtTokens ?? null);
    this.noSpaceRaising = false;
    this.noSpaceRaised = new InternalWaiter(() => { this.noSpaceRaising = false; });
    this.readyWaiters = [];
    this.startCommit = hardState.commit;
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
      newMemberId: cfg.bootstrap?.memberId.toString(),
      newClusterId: cfg.bootstrap?.clusterId.toString(),
    });
    let server: EtcdServer;
    try {
      let boot = null;
      if (isNewMember(ready) && cfg.bootstrap?.join !== true) {
        const self = Long.fromString(ready.memberId, true);
        const members = cfg.bootstrap?.members ?? [{ id: self, name: cfg.name, peerUrls: cfg.peerUrls }];
        boot = await bootstrap(handle, members);
      }
      server = new EtcdServer(cfg, handle, ready, boot, new WorkerStats(statsBuffer));
      const others = Math.max(server.membership.size, cfg.bootstrap?.members.length ?? 1) > 1;
      if (cfg.peerListen && (others || cfg.peerListenAlways === true)) await server.startTransport(cfg.peerListen);
    } catch (err) {
      await handle.close();
      throw err;
    }
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
        currentRaftTerm: () => server.rn.term,
        onFatal: (message) => cfg.onFatal(message),
      });
    } catch (err) {
      await server.transport?.close();
      await handle.close();
      throw err;
    }
    server.watchStarted = true;
    // etcd (embed.StartEtcd) checks before its raft node and peer handlers start; here the
    // transport must run to ask the peers, so raft messages they send meanwhile are handled as
    // usual (this member does not tick yet: it starts no election). That is harmless: the hashes
    // are taken at one fixed revision, which applying more entries does not change. No client
    // is served before start() resolves. A member starting for the first time has nothing to
    // compare (etcd checks only an initialized member).
    if (cfg.initialCorruptCheck === true && !isNewMember(ready)) {
      try {
        await initialCheck(server.corruptHasher(), server.requestTimeoutMs);
      } catch (err) {
        await server.stop();
        throw err;
      }
    }
    server.ticker = setInterval(() => server.tick(), cfg.heartbeatMs);
    server.leaseTicker = setInterval(() => server.leaseTick(), leaseTickMs);
    server.campaignIfAlone();
    server.scheduleTurn();
    await server.whenCaughtUp();
    server.corruptCheckStart();
    return server;
  }

  setResultSink(sink: ResultSink): void {
    this.sink = sink;
  }

  /** Listens for peers and connects to every member of the configuration. */
  private async startTransport(listen: { host: string; port: number }): Promise<void> {
    const snapshotDir = path.join(this.cfg.dataDir, schema.snapDir);
    fs.mkdirSync(snapshotDir, { recursive: true, mode: 0o700 });
    const t = await PeerTransport.listen({
      host: listen.host,
      port: listen.port,
      clusterId: BigInt(this.clusterId.toString()),
      memberId: BigInt(this.memberId.toString()),
      raftId: this.selfId,
      messageBytesMax: this.cfg.requestBytesMax + limits.grpcOverheadBytes + 1024 * 1024,
      membersAnswer: () => this.membership.encode(),
      // Received snapshots land next to where the worker stages them: staging is a rename.
      snapshotDir,
      ...(this.cfg.peerConnect !== undefined ? { connect: this.cfg.peerConnect } : {}),
      ...(this.cfg.peerServerCreate !== undefined ? { serverCreate: this.cfg.peerServerCreate } : {}),
    });
    t.onMessage = (m) => {
      if (this.stopped) return;
      this.rn.step(m);
      this.scheduleTurn();
    };
    t.onForward = (_from, op, payload, reply) => {
      if (this.stopped) reply(ErrorCode.Stopped, noBytes);
      else if (isMemberOp(op)) this.serveMemberRequest(op, payload, reply);
      else this.serveLeaderRequest(op, payload, reply);
    };
    t.onUnreachable = (id) => this.rn.reportUnreachable(id);
    t.onSnapshotStatus = (id, ok) => this.onSnapshotSent(id, ok);
    t.onSnapshot = (m, file) => this.onSnapshotReceived(m, file);
    // A peer that knows this member was removed says so (etcd rafthttp's 410 Gone): the removal
    // may be committed without this member ever learning the commit index that covers it.
    t.onRefused = (_id, reason) => {
      if (reason === RefuseReason.MemberRemoved && this.cfg.onRemoved !== undefined) this.cfg.onRemoved();
    };
    this.transport = t;
    this.syncPeers();
    // A new member knows its peers before the bootstrap entries that name them are applied (a
    // joining one: before it replays the log that names them).
    if (this.membership.size === 0 && this.cfg.bootstrap) {
      for (const m of this.cfg.bootstrap.members) {
        const id = raftIdOf(m.id);
        if (id !== this.selfId && !t.hasPeer(id)) t.addPeer(id, BigInt(m.id.toString()), m.peerUrls);
      }
    }
  }

  /** The transport knows exactly the other members of the membership. */
  private syncPeers(): void {
    const t = this.transport;
    if (t === null) return;
    const want = new Set<number>();
    for (const m of this.membership.list()) {
      const id = raftIdOf(m.id);
      if (id === this.selfId) continue;
      want.add(id);
      if (!t.hasPeer(id)) t.addPeer(id, BigInt(m.id.toString()), m.peerUrls);
      else t.updatePeer(id, m.peerUrls);
    }
    if (this.membership.size === 0) return; // not applied yet: keep the bootstrap peers
    for (const id of t.peerIds()) if (!want.has(id)) t.removePeer(id);
  }

  private peerEvent(msg: string, fields: Record<string, unknown>): void {
    if (this.cfg.onPeerEvent !== undefined) this.cfg.onPeerEvent(msg, fields);
  }

  /** The members, as of the last applied entry. */
  members(): Member[] {
    return this.membership.list();
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
    const rn = this.rn;
    if (rn.applied < this.startCommit) return;
    // A lone voter waits to lead and to have applied its own term's entry; a member with peers
    // serves once it has applied what was committed before it stopped (requests then find the
    // leader or answer "no leader", as etcd's do).
    if (this.isLoneVoter()) {
      if (!rn.isLeader()) return;
      if (rn.applied < rn.committed || rn.committed < rn.raft.log.lastIndex()) return;
    }
    // As etcd's ReadyNotify: serving starts once this member's attributes are published.
    if (!this.published) {
      this.publish(monotonicNowMs());
      if (!this.published) return;
    }
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w();
  }

  private isLoneVoter(): boolean {
    const cs = this.rn.raft.trk.confState();
    return cs.voters.length === 1 && cs.voters[0] === this.selfId;
  }

  /** Proposes ACTIVATE NOSPACE for this member (etcd quotaAlarmer.check), once at a time. */
  private raiseNoSpace(): void {
    if (this.noSpaceRaising) return;
    const alarm = { action: AlarmAction.ACTIVATE, memberID: this.memberId, alarm: AlarmType.NOSPACE };
    this.noSpaceRaising = true;
    if (this.propose({ alarm }, this.noSpaceRaised) !== 0) this.noSpaceRaising = false;
  }

  /** The applied alarms of type `alarm` (every alarm for NONE): Maintenance.Alarm GET. */
  alarmList(alarm: number): AlarmMember[] {
    return this.alarms.get(alarm);
  }

  /**
   * The alarms /health and Status report: the replicated ones, plus this member's local NOSPACE
   * while its storage cannot write (a full disk) and the log holds no NOSPACE for it.
   */
  activeAlarms(): AlarmMember[] {
    const list = this.alarms.get(AlarmType.NONE);
    if (this.storageNoSpace.size > 0 &&
      !list.some((m) => m.alarm === AlarmType.NOSPACE && m.memberId.equals(this.memberId))) {
      list.push({ memberId: this.memberId, alarm: AlarmType.NOSPACE });
    }
    return list;
  }

  /** A lone voter need not wait an election timeout to find out nobody else is there. */
  private campaignIfAlone(): void {
    if (this.isLoneVoter() && !this.rn.isLeader() &&
      this.rn.state !== StateType.Candidate && this.rn.state !== StateType.PreCandidate) {
      this.rn.campaign();
      this.scheduleTurn();
    }
  }

  // ---- requests ----

  /**
   * Proposes a write; the answer reaches the result sink with `target`. Returns an error code
   * when the proposal is refused up front (0 when accepted).
   */
  propose(req: concordpb.InternalRequest.$Properties, target: unknown, caller?: Caller | null): number {
    // A client's request (caller given, null with auth disabled) is checked against the auth
    // store at apply when auth is enabled by then (etcd's auth applier).
    if (caller !== undefined) {
      req.from_client = true;
      if (caller !== null) {
        req.auth_user = caller.user;
        req.auth_revision = caller.revision;
      }
    }
    const code = this.proposeOrRefuse(req, target);
    if (code !== 0) this.proposalsFailed++;
    return code;
  }

  private proposeOrRefuse(req: concordpb.InternalRequest.$Properties, target: unknown): number {
    if (this.stopped) return ErrorCode.Stopped;
    if (this.rn.committed - this.rn.applied > limits.commitApplyGapMax ||
      this.waits.size >= limits.proposalsPendingMax) {
      return ErrorCode.TooManyRequests;
    }
    if (this.alarms.has(AlarmType.CORRUPT) && refusedWhenCorrupt(req)) return ErrorCode.Corrupt;
    const cost = quotaCost(req);
    if (cost > 0) {
      // etcd's capped applier under NOSPACE: writes that can grow the database are refused.
      if (this.hasNoSpaceAlarm()) return ErrorCode.NoSpace;
      // etcd's quota check (v3rpc/quota.go): a write that would take the backend past the quota
      // is refused and this member raises NOSPACE for itself, through the log, for everyone.
      if (this.dbSize + cost >= this.cfg.quotaBackendBytes) {
        this.raiseNoSpace();
        return ErrorCode.NoSpace;
      }
    }
    const id = this.nextProposalId++;
    req.id = id;
    req.member_id = this.memberId;
    const data = concordpb.InternalRequest.encode(req).finish();
    if (data.length > this.cfg.requestBytesMax) return ErrorCode.RequestTooLarge;
    // Memory bounded in bytes too: one large proposal passes when nothing waits.
    const unapplied = this.logBytes.unappliedBytes + this.proposedBytes + this.awaitingLeaderBytes;
    if (unapplied > 0 && unapplied + data.length > limits.unappliedBytesMax) return ErrorCode.TooManyRequests;
    if (this.rn.lead === 0) {
      this.awaitingLeader.set(id, data);
      this.awaitingLeaderBytes += data.length;
    } else {
      const dropped = this.rn.propose(data);
      if (dropped !== null) return dropped.code;
      this.proposedBytes += data.length;
    }
    this.waits.set(id, target);
    this.waitDeadlines.push({ id, at: monotonicNowMs() + this.requestTimeoutMs });
    this.scheduleTurn();
    return 0;
  }

  /** A leader is known: what waited for one goes to raft, in arrival order. */
  private proposeAwaitingLeader(): void {
    if (this.awaitingLeader.size === 0 || this.rn.lead === 0) return;
    const empty = new Uint8Array(0);
    for (const [id, data] of this.awaitingLeader) {
      const dropped = this.rn.propose(data);
      if (dropped !== null) {
        const target = this.waits.get(id);
        this.waits.delete(id);
        this.proposalsFailed++;
        if (target !== undefined) this.answer(target, dropped.code, empty);
        continue;
      }
      this.proposedBytes += data.length;
    }
    this.awaitingLeader.clear();
    this.awaitingLeaderBytes = 0;
  }

  /**
   * Fails proposals not answered within the request timeout (a forwarded proposal lost with a
   * leader change never comes back). As etcd: one that never reached raft (no leader the whole
   * time) fails with the context's "deadline exceeded"; one made shortly before a new leader
   * was elected with "possibly due to previous leader failure"; the rest with "request timed
   * out". Deadlines are in proposal order, so the sweep looks at the oldest only.
   */
  private expireWaits(now: number): void {
    const q = this.waitDeadlines;
    const empty = new Uint8Array(0);
    while (this.waitDeadlinesHead < q.length && q[this.waitDeadlinesHead]!.at <= now) {
      const { id, at } = q[this.waitDeadlinesHead++]!;
      const target = this.waits.get(id);
      if (target === undefined) continue;
      this.waits.delete(id);
      this.proposalsFailed++;
      let code = ErrorCode.Timeout;
      const data = this.awaitingLeader.get(id);
      if (data !== undefined) {
        this.awaitingLeader.delete(id);
        this.awaitingLeaderBytes -= data.length;
        code = ErrorCode.DeadlineExceeded;
      } else if (this.startedBeforeElection(at - this.requestTimeoutMs)) {
        code = ErrorCode.TimeoutDueToLeaderFail;
      }
      this.answer(target, code, empty);
    }
    if (this.waitDeadlinesHead > 1024 && this.waitDeadlinesHead * 2 > q.length) {
      q.splice(0, this.waitDeadlinesHead);
      this.waitDeadlinesHead = 0;
    }
  }

  /** etcd parseProposeCtxErr: a request made within two election timeouts before the current
   * leader was elected probably failed with the previous leader. */
  private startedBeforeElection(startMs: number): boolean {
    const elected = this.leaderKnownAtMs;
    return elected !== 0 && startMs < elected && startMs > elected - 2 * this.cfg.electionMs;
  }

  /**
   * Queues a read; linearizable reads observe every write acknowledged before they arrived.
   * Without a leader a linearizable read waits for one, up to the request timeout (etcd: "request
   * timed out").
   */
  read(kind: ReadKind, request: Uint8Array, serializable: boolean, target: unknown): number {
    if (this.stopped) return ErrorCode.Stopped;
    if (this.pendingReads.length + this.readsUnconfirmed.length + this.reads.size >= limits.readsPendingMax) {
      return ErrorCode.TooManyRequests;
    }
    const id = this.nextReadId++;
    if (this.nextReadId > 0xffffffff) this.nextReadId = 1;
    const at = serializable ? 0 : monotonicNowMs() + this.requestTimeoutMs;
    const rq: PendingRead = { id, kind, request, linearizable: !serializable, readIndex: serializable ? 0 : -1, target, at };
    if (serializable) this.pendingReads.push(rq);
    else this.readsUnconfirmed.push(rq);
    this.scheduleTurn();
    return 0;
  }

  /** Maintenance.Status: raft facts from here, sizes and revision from the worker. */
  status(target: unknown): number {
    const errors: string[] = [];
    const lead = this.rn.lead;
    if (lead === 0) errors.push('etcdserver: no leader');
    // etcd lists alarms as AlarmMember.String(): "memberID:<id> alarm:NOSPACE ".
    for (const m of this.activeAlarms()) errors.push(alarmMemberString(m));
    const template = etcdserverpb.StatusResponse.encode({
      version: etcdVersion,
      leader: this.leaderId(),
      raftIndex: this.rn.committed,
      raftTerm: this.rn.term,
      raftAppliedIndex: this.rn.applied,
      errors,
      isLearner: this.membership.get(this.memberId)?.isLearner ?? false,
    }).finish();
    return this.read(ReadKind.Status, template, true, target);
  }

  raftTerm(): number {
    return this.rn.term;
  }

  /**
   * Maintenance.HashKV (kind 'hashkv', rev 0 = current) and Hash: the storage worker checks the
   * revision and its hash thread scans (workers/hash_worker.ts); like etcd, this member's state
   * as applied, without a read index. Returns a nonzero ErrorCode when refused at once.
   */
  hashRequest(kind: 'hash' | 'hashkv', rev: number, done: (a: HashDone) => void): number {
    if (this.hashRequests.size >= limits.hashRequestsPendingMax) return ErrorCode.TooManyRequests;
    const requestId = this.nextHashRequest++;
    this.hashRequests.set(requestId, done);
    this.worker.send({ type: WorkerMessageType.Hash, requestId, kind, rev });
    return 0;
  }

  /**
   * Maintenance.Defragment: the storage worker's online defragmentation of this member's file
   * (workers/storage_core.ts): requests go on meanwhile. Per member, not through the log, as in
   * etcd. Returns a nonzero ErrorCode when refused at once.
   */
  defragment(done: (a: DefragmentDone) => void): number {
    if (this.defragmentRequests.size >= limits.defragmentRequestsPendingMax) return ErrorCode.TooManyRequests;
    const requestId = this.nextHashRequest++;
    this.defragmentRequests.set(requestId, done);
    this.worker.send({ type: WorkerMessageType.Defragment, requestId });
    return 0;
  }

  private onDefragmentDone(a: DefragmentDone): void {
    const done = this.defragmentRequests.get(a.requestId);
    assert(done !== undefined, 'defragment answer without a request');
    this.defragmentRequests.delete(a.requestId);
    if (a.error === '') this.defragDurations.observe((a.copyMs + a.catchUpMs + a.pauseMs) / 1000);
    this.lastDefragment = a;
    const round = (ms: number): number => Math.round(ms * 10) / 10;
    if (a.error === '') {
      this.cfg.onLog?.('info', 'defragmented', {
        'db-size-before': a.before.dbSize, 'db-size-in-use-before': a.before.dbSizeInUse,
        'db-size-after': a.after.dbSize, 'db-size-in-use-after': a.after.dbSizeInUse,
        'copy-ms': round(a.copyMs), 'catch-up-ms': round(a.catchUpMs), 'switch-pause-ms': round(a.pauseMs),
        'rewritten-bytes': a.journalBytes,
      });
    } else {
      this.cfg.onLog?.('warn', 'defragmentation failed; the member goes on with its old file', { error: a.error });
    }
    done(a);
  }

  private onHashDone(a: HashDone): void {
    const done = this.hashRequests.get(a.requestId);
    assert(done !== undefined, 'hash answer without a request');
    this.hashRequests.delete(a.requestId);
    done(a);
  }

  isLeader(): boolean {
    return this.rn.isLeader();
  }

  /**
   * NOSPACE holds, and writes that grow the database are refused, while any member's NOSPACE
   * alarm is in the applied state (raised by a member past its quota, cleared only by
   * DEACTIVATE: `etcdctl alarm disarm`), or while this member's storage cannot write (a full
   * disk: the backend's commit or the WAL's next segment failed). The second is a local
   * condition, not replicated: it clears itself when a write succeeds again, and proposing an
   * alarm needs the very log that cannot grow; it shows in Status and /health all the same.
   */
  hasNoSpaceAlarm(): boolean {
    return this.alarms.has(AlarmType.NOSPACE) || this.storageNoSpace.size > 0;
  }

  /** Whether /health should answer false: an alarm is active whose type is not excluded. */
  hasAlarmExcept(excluded: ReadonlySet<string>): boolean {
    for (const m of this.activeAlarms()) {
      if (!excluded.has(etcdserverpb.AlarmType[m.alarm] ?? String(m.alarm))) return true;
    }
    return false;
  }

  /** Bytes of proposals not yet applied, and of applied entries kept in the raft log. */
  logByteCounts(): { unapplied: number; retained: number } {
    return { unapplied: this.logBytes.unappliedBytes + this.proposedBytes, retained: this.logBytes.retainedBytes };
  }

  /** Committed and applied raft indexes and the number of proposals awaiting their answer. */
  proposalCounts(): { committed: number; applied: number; pending: number } {
    return { committed: this.rn.committed, applied: this.rn.applied, pending: this.waits.size };
  }

  /** The leader's member id, 0 when there is none. */
  leaderId(): Long | number {
    const lead = this.rn.lead;
    if (lead === 0) return 0;
    if (lead === this.selfId) return this.memberId;
    return this.membership.byRaftId(lead)?.id ?? 0;
  }

  /** The peer transport's counters (etcd_network_* families), null before it started. */
  transportStats(): TransportStats | null {
    return this.transport?.stats() ?? null;
  }

  /** A leader is known (etcd_server_has_leader). */
  hasLeader(): boolean {
    return this.rn.lead !== 0;
  }

  // ---- membership and leadership (Cluster service, MoveLeader) ----

  /** This member was removed: it stops (etcd: "the member has been permanently removed"). */
  private checkRemoved(): void {
    if (this.membership.isRemoved(this.memberId) && this.cfg.onRemoved !== undefined) this.cfg.onRemoved();
  }

  /** Voting members (not learners) that published their attributes (etcd IsStarted). */
  private startedVoters(except: Long | null): { voters: number; started: number } {
    let voters = 0;
    let started = 0;
    for (const m of this.membership.list()) {
      if (m.isLearner || (except !== null && m.id.equals(except))) continue;
      voters++;
      if (m.name !== '') started++;
    }
    return { voters, started };
  }

  /**
   * Cluster.MemberAdd (etcd server.AddMember): the new member's id comes from its peer URLs and
   * the time (etcd membership.NewMember). `done` gets 0 once the change is applied here.
   */
  memberAdd(peerUrls: string[], isLearner: boolean, now: Date, done: (code: number, member: Member | null) => void): number {
    const id = memberIdFromUrls(peerUrls, now);
    for (const m of this.membership.list()) {
      if (m.peerUrls.some((u) => peerUrls.includes(u))) return ErrorCode.PeerUrlExist;
    }
    if (isLearner) {
      const learners = this.membership.list().filter((m) => m.isLearner).length;
      if (learners >= (this.cfg.maxLearners ?? 1)) return ErrorCode.TooManyLearners;
    }
    if (this.cfg.strictReconfigCheck !== false) {
      if (!isLearner) {
        // etcd IsReadyToAddVotingMember: a quorum of the new voters must have started (1 -> 2
        // is allowed: restoring a cluster from one member's data).
        const { voters, started } = this.startedVoters(null);
        const n = voters + 1;
        if (!(started === 1 && n === 2) && started < Math.floor(n / 2) + 1) return ErrorCode.NotEnoughStartedMembers;
      }
      // etcd isConnectedFullySince: every voter connected for the last HealthInterval.
      const voters = this.membership.list().filter((m) => !m.isLearner);
      if (this.connectedSince(peerNowMs() - healthIntervalMs, voters) < voters.length) return ErrorCode.Unhealthy;
    }
    const member: Member = { id, name: '', peerUrls: peerUrls.slice(), clientUrls: [], isLearner };
    return this.proposeMemberChange({
      id: 0, type: isLearner ? ConfChangeType.AddLearnerNode : ConfChangeType.AddNode,
      nodeId: raftIdOf(id), context: encodeMemberContext({ id, peerUrls, isLearner }),
    }, (code) => done(code, code === 0 ? member : null));
  }

  /** Cluster.MemberRemove. */
  memberRemove(id: Long, done: (code: number) => void): number {
    const m = this.membership.get(id);
    if (m === undefined) return ErrorCode.MemberNotFound;
    if (!m.isLearner && this.cfg.strictReconfigCheck !== false) {
      // etcd IsReadyToRemoveVotingMember: the voters left must keep a started quorum.
      const { voters, started } = this.startedVoters(id);
      if (started < Math.floor(voters / 2) + 1) return ErrorCode.NotEnoughStartedMembers;
      // etcd mayRemoveMember: a member that is down is safe to remove; otherwise the members
      // connected for the last HealthInterval, less the removed one, must keep a quorum.
      const raftId = raftIdOf(id);
      const down = raftId !== this.selfId && (this.transport?.activeSince(raftId) ?? 0) === 0;
      if (!down) {
        const vs = this.membership.list().filter((x) => !x.isLearner);
        const active = this.connectedSince(peerNowMs() - healthIntervalMs, vs);
        if (active - 1 < 1 + Math.floor((vs.length - 1) / 2)) return ErrorCode.Unhealthy;
      }
    }
    return this.proposeMemberChange({ id: 0, type: ConfChangeType.RemoveNode, nodeId: raftIdOf(id), context: new Uint8Array(0) }, done);
  }

  /** Cluster.MemberUpdate: new peer URLs. */
  memberUpdate(id: Long, peerUrls: string[], done: (code: number) => void): number {
    const m = this.membership.get(id);
    if (m === undefined) return ErrorCode.MemberNotFound;
    for (const other of this.membership.list()) {
      if (!other.id.equals(id) && other.peerUrls.some((u) => peerUrls.includes(u))) return ErrorCode.PeerUrlExist;
    }
    return this.proposeMemberChange({
      id: 0, type: ConfChangeType.UpdateNode, nodeId: raftIdOf(id),
      context: encodeMemberContext({ id, peerUrls, isLearner: m.isLearner }),
    }, done);
  }

  /**
   * Cluster.MemberPromote: only the leader knows whether the learner caught up, so a follower
   * asks the leader (etcd PromoteMember: promoteMemberHTTP) and answers once it applied the
   * promotion itself, so that its MemberList right after shows it.
   */
  memberPromote(id: Long, done: (code: number) => void): number {
    const code = this.memberPromoteHere(id, done);
    if (code !== ErrorCode.NotLeader) return code;
    const deadline = monotonicNowMs() + this.requestTimeoutMs;
    this.askLeader(LeaderOp.MemberPromote, encodeU64(id), deadline, (c, answer) => {
      const index = c === 0 ? decodeU64(answer) : null;
      if (c !== 0 || index === null) {
        done(c !== 0 ? c : ErrorCode.PeerMalformed);
        return;
      }
      this.whenApplied(index.toNumber(), Math.max(1, deadline - monotonicNowMs()), (w) => {
        done(w === ErrorCode.TimeoutWaitAppliedIndex ? ErrorCode.Timeout : w);
      });
    });
    return 0;
  }

  /**
   * The leader's part of memberPromote. NotLeader first on any other member, whatever its own
   * membership says (etcd isLearnerReady): the leader's is the one that counts.
   */
  private memberPromoteHere(id: Long, done: (code: number) => void): number {
    if (!this.rn.isLeader()) return ErrorCode.NotLeader;
    const m = this.membership.get(id);
    if (m === undefined) return ErrorCode.MemberNotFound;
    if (!m.isLearner) return ErrorCode.MemberNotLearner;
    if (!this.learnerReady(raftIdOf(id))) return ErrorCode.LearnerNotReady;
    return this.proposeMemberChange({
      id: 0, type: ConfChangeType.AddNode, nodeId: raftIdOf(id),
      context: encodeMemberContext({ id, peerUrls: m.peerUrls, isLearner: false }),
    }, done);
  }

  // ---- requests only the leader answers (leader_requests.ts) ----

  /**
   * Lease keep-alive (etcd EtcdServer.LeaseRenew): the leader renews once it applied all it
   * committed; any other member asks the leader. done(0, ttl) with ttl 0 for an unknown lease
   * (etcd's keep-alive answers TTL 0, not an error).
   */
  leaseRenew(id: Long, done: (code: number, ttl: number) => void): void {
    this.askLeader(LeaderOp.LeaseRenew, encodeU64(id), monotonicNowMs() + this.requestTimeoutMs, (code, answer) => {
      if (code !== 0) return done(code, 0);
      const ttl = decodeI64(answer);
      if (ttl === null) done(ErrorCode.PeerMalformed, 0);
      else done(0, ttl);
    });
  }

  /**
   * Lease.LeaseTimeToLive (etcd EtcdServer.LeaseTimeToLive): the remaining TTL is the leader's,
   * so the leader answers the whole request; done(LeaseNotFound) for an unknown lease. The
   * response's header is the leader's: the API layer puts this member's in.
   */
  leaseTimeToLive(request: Uint8Array, done: (code: number, response: Uint8Array) => void): void {
    this.askLeader(LeaderOp.LeaseTimeToLive, request, monotonicNowMs() + this.requestTimeoutMs, done);
  }

  /**
   * Sends a LeaderOp to the leader and calls done once with its answer, or serves it here when
   * this member leads. A failed attempt (no leader yet, the leader unreachable or no longer
   * leading) is tried again every leaderRetryMs until `deadline`, as etcd's forwarding loops do;
   * then NoLeader when no leader was known, otherwise Timeout ("request timed out").
   */
  private askLeader(op: LeaderOp, payload: Uint8Array, deadline: number,
    done: (code: number, answer: Uint8Array) => void): void {
    const attempt = (): void => {
      if (this.stopped) return done(ErrorCode.Stopped, noBytes);
      const lead = this.rn.lead;
      if (lead === this.selfId) return this.serveLeaderRequest(op, payload, done);
      const left = deadline - monotonicNowMs();
      if (left <= 0) return done(lead === 0 ? ErrorCode.NoLeader : ErrorCode.Timeout, noBytes);
      const t = this.transport;
      if (lead === 0 || t === null) {
        setTimeout(attempt, Math.min(leaderRetryMs, left)).unref();
        return;
      }
      t.forward(lead, op, payload, left, (code, answer) => {
        if (code < forwardErrorMin && code !== ErrorCode.NotLeader) return done(code, answer);
        // Not answered (unreachable, busy, timed out) or no longer the leader: ask again.
        if (this.stopped) return done(ErrorCode.Stopped, noBytes);
        const rest = deadline - monotonicNowMs();
        if (rest <= 0) return done(this.rn.lead === 0 ? ErrorCode.NoLeader : ErrorCode.Timeout, noBytes);
        setTimeout(attempt, Math.min(leaderRetryMs, rest)).unref();
      });
    };
    attempt();
  }

  /**
   * The leader's side of a LeaderOp, for a peer's forward request or for this member's own:
   * reply(code, answer) exactly once. NotLeader on a member that does not lead (the asker tries
   * again once it learns the new leader).
   */
  private serveLeaderRequest(op: number, payload: Uint8Array,
    reply: (code: number, answer: Uint8Array) => void): void {
    if (!this.rn.isLeader()) return reply(ErrorCode.NotLeader, noBytes);
    switch (op) {
      case LeaderOp.LeaseRenew: {
        const id = decodeU64(payload);
        if (id === null) return reply(ErrorCode.PeerMalformed, noBytes);
        // etcd 3.5: renew once all that was committed is applied, so that a lease whose grant
        // was acknowledged by any member is known to this lessor.
        if (this.committedIsApplied()) return this.renewHere(id, reply);
        this.whenCommittedApplied((code) => {
          if (code !== 0) reply(code, noBytes);
          else this.renewHere(id, reply);
        });
        return;
      }
      case LeaderOp.LeaseTimeToLive: {
        let id: Long;
        try {
          id = Long.fromValue(etcdserverpb.LeaseTimeToLiveRequest.decode(payload).ID ?? 0);
        } catch {
          return reply(ErrorCode.PeerMalformed, noBytes);
        }
        // The attached keys come from the storage worker (a linearizable read), the remaining
        // TTL from this lessor once they are known.
        const waiter = new InternalWaiter((code, response) => {
          const remaining = this.lessor.remainingSeconds(id, monotonicNowMs());
          if (code === ErrorCode.LeaseNotFound || (code === 0 && remaining === null)) return reply(ErrorCode.LeaseNotFound, noBytes);
          if (code !== 0) return reply(code, noBytes);
          const resp = etcdserverpb.LeaseTimeToLiveResponse.decode(response);
          resp.TTL = Long.fromNumber(remaining!);
          reply(0, etcdserverpb.LeaseTimeToLiveResponse.encode(resp).finish());
        });
        const code = this.read(ReadKind.LeaseTimeToLive, payload, false, waiter);
        if (code !== 0) reply(code, noBytes);
        return;
      }
      case LeaderOp.MemberPromote: {
        const id = decodeU64(payload);
        if (id === null) return reply(ErrorCode.PeerMalformed, noBytes);
        // Answered with the commit index once the promotion applied here: the asker answers its
        // client once it applied as far (its MemberList then shows the promotion).
        const code = this.memberPromoteHere(id, (c) => reply(c, c === 0 ? encodeU64(this.rn.committed) : noBytes));
        if (code !== 0) reply(code, noBytes);
        return;
      }
      default:
        reply(ErrorCode.PeerMalformed, noBytes);
    }
  }

  // ---- requests any member answers (member_requests.ts) and the corruption checks ----

  /**
   * A peer's MemberOp: served on this member whether it leads or not (etcd's peer handler
   * /members/hashkv). reply(code, answer) exactly once.
   */
  private serveMemberRequest(op: number, payload: Uint8Array,
    reply: (code: number, answer: Uint8Array) => void): void {
    switch (op) {
      case MemberOp.HashKv: {
        const rev = decodeHashKvRequest(payload);
        if (rev === null) return reply(ErrorCode.PeerMalformed, noBytes);
        const code = this.hashRequest('hashkv', rev, (a) => {
          if (a.error !== 0) reply(a.error, noBytes);
          else reply(0, encodeHashKvAnswer(a));
        });
        if (code !== 0) reply(code, noBytes);
        return;
      }
      default:
        reply(ErrorCode.PeerMalformed, noBytes);
    }
  }

  /** This member's HashKV at `rev` (0: current), for the corruption checks. */
  private hashKvOwn(rev: number): Promise<{ code: number; answer: HashKvAnswer | null }> {
    return new Promise((resolve) => {
      const code = this.hashRequest('hashkv', rev, (a) => {
        resolve({ code: a.error, answer: a.error === 0 ? { hash: a.hash, compactRev: a.compactRev, currentRev: a.currentRev, rev: a.rev } : null });
      });
      if (code !== 0) resolve({ code, answer: null });
    });
  }

  /**
   * Every other member's HashKV at `rev` (etcd getPeerHashKVs): one forward request each, with
   * the request timeout; a member not answering gets the transport's code, answer null.
   */
  private peerHashKvs(rev: number): Promise<PeerHashKv[]> {
    const others = this.membership.list().filter((m) => !m.id.equals(this.memberId));
    const t = this.transport;
    if (others.length === 0) return Promise.resolve([]);
    const request = encodeHashKvRequest(rev);
    return Promise.all(others.map((m) => new Promise<PeerHashKv>((resolve) => {
      const result: PeerHashKv = { memberId: m.id, peerUrls: m.peerUrls, answer: null, code: ForwardError.Unreachable };
      if (t === null || this.stopped) return resolve(result);
      t.forward(raftIdOf(m.id), MemberOp.HashKv, request, this.requestTimeoutMs, (code, answer) => {
        result.code = code;
        if (code === 0) {
          result.answer = decodeHashKvAnswer(answer);
          if (result.answer === null) result.code = ErrorCode.PeerMalformed;
        }
        resolve(result);
      });
    })));
  }

  /** The corruption checks' view of this server (server/corrupt.ts CorruptHasher). */
  private corruptHasher(): CorruptHasher {
    return {
      memberId: this.memberId,
      hashKv: (rev) => this.hashKvOwn(rev),
      peerHashKvs: (rev) => this.peerHashKvs(rev),
      triggerCorruptAlarm: (id) => this.triggerCorruptAlarm(id),
      log: (level, msg, fields) => this.cfg.onLog?.(level, msg, fields),
    };
  }

  /**
   * Proposes ACTIVATE CORRUPT for `memberId` through the log (etcd triggerCorruptAlarm), unless
   * it is active already: a check every interval must not fill the log with the same alarm.
   */
  private triggerCorruptAlarm(memberId: Long): void {
    if (this.alarms.get(AlarmType.CORRUPT).some((m) => m.memberId.equals(memberId))) return;
    const alarm = { action: AlarmAction.ACTIVATE, memberID: memberId, alarm: AlarmType.CORRUPT };
    const code = this.propose({ alarm }, new InternalWaiter((c) => {
      if (c !== 0) this.cfg.onLog?.('warn', 'failed to raise the CORRUPT alarm', { 'member-id': memberId.toString(16), code: c });
    }));
    if (code !== 0) this.cfg.onLog?.('warn', 'failed to raise the CORRUPT alarm', { 'member-id': memberId.toString(16), code });
  }

  /**
   * The periodic check (etcd monitorKVHash): every interval after the previous check ended,
   * on the leader only; one check at a time.
   */
  private corruptCheckStart(): void {
    const intervalMs = this.cfg.corruptCheckIntervalMs ?? 0;
    if (intervalMs <= 0 || this.stopped) return;
    this.cfg.onLog?.('info', 'enabled corruption checking', {
      'local-member-id': this.memberId.toString(16), interval: goDuration(intervalMs),
    });
    const hasher = this.corruptHasher();
    const next = (): void => {
      if (this.stopped) return;
      this.corruptCheckTimer = setTimeout(() => {
        this.corruptCheckTimer = null;
        if (this.stopped) return;
        if (!this.rn.isLeader()) return next();
        periodicCheck(hasher).then(next, (err: unknown) => {
          this.cfg.onLog?.('warn', 'failed to check hash KV', { error: String(err) });
          next();
        });
      }, intervalMs);
      this.corruptCheckTimer.unref();
    };
    next();
  }

  /** The leader renews lease `id` (renewals are not replicated, as in etcd). */
  private renewHere(id: Long, reply: (code: number, answer: Uint8Array) => void): void {
    const ttl = this.lessor.renew(id, monotonicNowMs());
    if (ttl === 0 || !this.lessor.needsCheckpointClear(id)) return reply(0, encodeI64(ttl));
    // The renewal clears the checkpointed remaining TTL through the log first, so that an
    // acknowledged keep-alive survives a restart and a leader change (etcd 3.6 Renew).
    const code = this.propose({ lease_checkpoint: { checkpoints: [{ ID: id, remaining_TTL: 0 }] } },
      new InternalWaiter((c) => reply(c, c === 0 ? encodeI64(ttl) : noBytes)));
    if (code !== 0) reply(code, noBytes);
  }

  /** etcd numConnectedSince: these members (this one included) connected since `sinceMs`. */
  private connectedSince(sinceMs: number, members: Member[]): number {
    let n = 0;
    for (const m of members) {
      const id = raftIdOf(m.id);
      if (id === this.selfId) {
        n++;
        continue;
      }
      const since = this.transport?.activeSince(id) ?? 0;
      if (since !== 0 && since <= sinceMs) n++;
    }
    return n;
  }

  /** etcd isLearnerReady: the learner holds at least 90% of what the leader holds. */
  private learnerReady(raftId: number): boolean {
    const st = this.rn.status();
    const leader = st.progress.get(this.selfId);
    const learner = st.progress.get(raftId);
    if (leader === undefined || learner === undefined) return false;
    return learner.state === ProgressState.Replicate && learner.match >= leader.match * 0.9;
  }

  /** --experimental-auto-promote-learners: one learner at a time, once it caught up. */
  private autoPromote(): void {
    if (!this.rn.isLeader() || this.confWaits.size > 0) return;
    for (const m of this.membership.list()) {
      if (m.isLearner && m.name !== '' && this.learnerReady(raftIdOf(m.id))) {
        this.memberPromote(m.id, () => undefined);
        return;
      }
    }
  }

  private proposeMemberChange(cc: ConfChange, done: (code: number) => void): number {
    if (this.stopped) return ErrorCode.Stopped;
    if (this.rn.lead === 0) return ErrorCode.NoLeader;
    cc.id = this.nextProposalId++;
    const dropped = this.rn.proposeConfChange(cc);
    if (dropped !== null) return dropped.code;
    this.confWaits.set(cc.id, { cc, done, at: monotonicNowMs() + this.requestTimeoutMs });
    this.scheduleTurn();
    return 0;
  }

  /** Maintenance.MoveLeader (etcd server.MoveLeader): leader only, to a voting member. */
  moveLeader(target: Long, done: (code: number) => void): number {
    if (!this.rn.isLeader()) return ErrorCode.NotLeader;
    const m = this.membership.get(target);
    if (m === undefined || m.isLearner) return ErrorCode.BadLeaderTransferee;
    const id = raftIdOf(target);
    if (id === this.selfId) {
      done(0);
      return 0;
    }
    const dropped = this.rn.transferLeader(id);
    if (dropped !== null) return dropped.code;
    this.transfer = { target: id, at: monotonicNowMs() + this.requestTimeoutMs, done };
    this.scheduleTurn();
    return 0;
  }

  private expireClusterWaits(now: number): void {
    for (const [id, w] of this.confWaits) {
      if (w.at > now) continue;
      this.confWaits.delete(id);
      w.done(ErrorCode.Timeout);
    }
    const t = this.transfer;
    if (t !== null && t.at <= now) {
      this.transfer = null;
      t.done(ErrorCode.LeaderTransferTimeout);
    }
  }

  /** Is this member a learner (etcd serves learners only Status and serializable Range). */
  isLearner(): boolean {
    return this.learner;
  }

  /**
   * Calls `done(0)` once everything committed so far is applied here, at once when it is (etcd
   * waitAppliedIndex, which a leader runs before renewing a lease: a lease whose grant was
   * acknowledged anywhere is then known to its lessor). `done(TimeoutWaitAppliedIndex)` after
   * etcd's applyTimeout (1 s).
   */
  committedIsApplied(): boolean {
    return this.rn.applied >= this.rn.committed;
  }

  whenCommittedApplied(done: (code: number) => void): void {
    this.whenApplied(this.rn.committed, appliedWaitTimeoutMs, done);
  }

  /** done(0) once `index` is applied here (at once when it is), TimeoutWaitAppliedIndex after timeoutMs. */
  private whenApplied(index: number, timeoutMs: number, done: (code: number) => void): void {
    if (this.rn.applied >= index) {
      done(0);
      return;
    }
    this.appliedWaiters.push({ index, at: monotonicNowMs() + timeoutMs, done });
  }

  private releaseAppliedWaiters(): void {
    const applied = this.rn.applied;
    const ws = this.appliedWaiters;
    let kept = 0;
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i]!;
      if (w.index <= applied) w.done(0);
      else ws[kept++] = w;
    }
    ws.length = kept;
  }

  private expireAppliedWaiters(now: number): void {
    const ws = this.appliedWaiters;
    if (ws.length === 0) return;
    let kept = 0;
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i]!;
      if (w.at <= now) w.done(ErrorCode.TimeoutWaitAppliedIndex);
      else ws[kept++] = w;
    }
    ws.length = kept;
  }

  /** Linearizable reads still without a read index at their deadline: "request timed out". */
  private expireReads(now: number): void {
    const empty = new Uint8Array(0);
    const expired = (rq: PendingRead): boolean => {
      if (rq.at > now) return false;
      this.answer(rq.target, ErrorCode.Timeout, empty);
      return true;
    };
    if (this.readsUnconfirmed.some((rq) => rq.at <= now)) {
      this.readsUnconfirmed = this.readsUnconfirmed.filter((rq) => !expired(rq));
    }
    for (const [key, reads] of this.readRounds) {
      if (reads[0]!.at > now) continue;
      const left = reads.filter((rq) => !expired(rq));
      if (left.length === 0) this.readRounds.delete(key);
      else this.readRounds.set(key, left);
    }
  }

  // ---- the loop ----

  private scheduleTurn(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    setImmediate(this.runTurnBound);
  }

  private tick(): void {
    this.rn.tick();
    const now = monotonicNowMs();
    this.expireWaits(now);
    this.expireReads(now);
    this.expireAppliedWaiters(now);
    this.expireClusterWaits(now);
    if (!this.published) this.publish(now);
    if (this.cfg.autoPromoteLearners === true) this.autoPromote();
    this.scheduleTurn();
  }

  private publishAtMs = 0;

  /**
   * Puts this member's name and client URLs into the replicated membership (etcd publish),
   * through the log, retried every second until the membership shows them.
   */
  private publish(now: number): void {
    const self = this.membership.get(this.memberId);
    if (self !== undefined && self.name === this.cfg.name && sameUrls(self.clientUrls, this.cfg.clientUrls)) {
      this.published = true;
      return;
    }
    if (now < this.publishAtMs || this.rn.lead === 0) return;
    this.publishAtMs = now + 1000;
    this.propose({ member_attr_set: { member_id: this.memberId, name: this.cfg.name, client_urls: this.cfg.clientUrls } }, ignoreResult);
  }

  private runTurn(): void {
    this.turnScheduled = false;
    if (this.stopped) return;
    if (this.awaitingLeader.size > 0) this.proposeAwaitingLeader();
    this.askReadIndex();
    if (!this.rn.hasReady() && this.pendingReads.length === 0) return;
    const rd = this.rn.ready();
    if (rd.softState !== null) {
      this.onSoftState(rd.softState.lead);
      // A leader is known now: what waited for one goes out next turn.
      if (this.rn.lead !== 0 && (this.awaitingLeader.size > 0 || this.readsUnconfirmed.length > 0)) this.scheduleTurn();
    }
    if (rd.messages.length > 0) this.send(rd.messages);
    const batch = this.batchOf(rd);
    if (batch.append.length === 0 && batch.apply.length === 0 && batch.reads.length === 0 &&
      batch.hardState === null && rd.persist === null && batch.snapshot === null) {
      return;
    }
    this.worker.send(encodeBatch(this.batch, batch));
    const bs = this.batchStats;
    bs.batches++;
    bs.appendEntries += batch.append.length;
    bs.applyEntries += batch.apply.length;
    bs.reads += batch.reads.length;
    if (this.rn.hasReady() || this.pendingReads.length > 0) this.scheduleTurn();
  }

  private lastLead = 0;

  /**
   * The leader changed. Reads waiting for a read index from the old one will not get it (raft
   * drops them): they ask again. Proposals forwarded to it may be lost: the request timeout
   * answers them.
   */
  private onSoftState(lead: number): void {
    if (lead === this.lastLead) return;
    const wasLeader = this.lastLead === this.selfId;
    this.lastLead = lead;
    if (lead !== 0) {
      this.leaderChanges++;
      this.leaderKnownAtMs = monotonicNowMs();
    }
    // The new leader's lease clock starts now (etcd lessor.Promote): the old leader's renewals
    // are not known here, so every lease gets its checkpointed or whole TTL again.
    if (lead === this.selfId && !wasLeader) {
      this.lessor.promote(monotonicNowMs(), 2 * leaseRevokesPerTick);
      this.lastHeartbeatAt.clear(); // a new term of heartbeats: no gap to count
    }
    for (const reads of this.readRounds.values()) for (const rq of reads) this.readsUnconfirmed.push(rq);
    this.readRounds.clear();
    const t = this.transfer;
    if (t !== null && lead === t.target) {
      this.transfer = null;
      t.done(0);
    }
  }

  /** Raft messages to peers; a MsgSnap first gets a copy of the state to send (sendSnapshot). */
  private send(messages: Message[]): void {
    const t = this.transport;
    if (t === null) return;
    let out = messages;
    let now = 0;
    for (const m of messages) {
      if (m.type !== MessageType.Heartbeat) continue;
      if (now === 0) now = monotonicNowMs();
      const last = this.lastHeartbeatAt.get(m.to);
      if (last !== undefined && now - last > 2 * this.cfg.heartbeatMs) this.heartbeatsLate++;
      this.lastHeartbeatAt.set(m.to, now);
    }
    if (messages.some((m) => m.type === MessageType.Snap)) {
      out = [];
      for (const m of messages) {
        if (m.type === MessageType.Snap) this.sendSnapshot(m);
        else out.push(m);
      }
    }
    t.send(out);
  }

  // ---- raft snapshots (state transfer; the protocol is in workers/protocol.ts) ----

  /**
   * A follower is behind the log's first index: the worker copies the state (at the MsgSnap's
   * index or later) and the transport streams the copy (raw_node.ts item 7).
   */
  private sendSnapshot(m: Message): void {
    if (this.snapshotsOut.has(m.to)) {
      // raft sends one at a time per follower; a second is a leftover of a leadership change.
      this.rn.reportSnapshot(m.to, false);
      return;
    }
    const requestId = this.nextSnapshotRequest++;
    this.snapshotRequests.set(requestId, m);
    this.snapshotsOut.set(m.to, '');
    this.worker.send({ type: WorkerMessageType.SnapshotCreate, requestId, minIndex: m.snapshot!.metadata.index });
    this.peerEvent('sending a snapshot to a follower behind the log', { to: m.to, index: m.snapshot!.metadata.index });
  }

  /**
   * Maintenance.Snapshot: a consistent copy of this member's state at its applied index or later
   * (the same LMDB hot copy a follower behind the log gets, made on the libuv pool while applies
   * go on). done(0, answer) with the file to stream, then releaseBackup(file); TooManyRequests
   * while the worker holds as many copies as it may.
   */
  backupSnapshot(done: (code: number, a: SnapshotAnswer | null) => void): void {
    if (this.stopped) return done(ErrorCode.Stopped, null);
    const requestId = this.nextSnapshotRequest++;
    this.backupRequests.set(requestId, (a) => {
      if (this.stopped) return done(ErrorCode.Stopped, null);
      if (a.error === null) return done(0, a);
      this.peerEvent('backup snapshot failed', { code: a.error.code, error: a.error.message });
      done(a.error.code === SnapshotErrorCode.Busy ? ErrorCode.TooManyRequests : ErrorCode.BackupFailed, null);
    });
    this.worker.send({ type: WorkerMessageType.SnapshotCreate, requestId, minIndex: this.rn.applied });
  }

  /** The stream of a backupSnapshot file ended: the worker may delete it. */
  releaseBackup(file: string): void {
    if (!this.stopped) this.worker.send({ type: WorkerMessageType.SnapshotRelease, file });
  }

  private onSnapshotCreated(a: SnapshotAnswer): void {
    const backup = this.backupRequests.get(a.requestId);
    if (backup !== undefined) {
      this.backupRequests.delete(a.requestId);
      backup(a);
      return;
    }
    const m = this.snapshotRequests.get(a.requestId);
    if (m === undefined) return;
    this.snapshotRequests.delete(a.requestId);
    const t = this.transport;
    if (a.error !== null || t === null || this.stopped || !this.rn.isLeader()) {
      if (a.error === null) this.worker.send({ type: WorkerMessageType.SnapshotRelease, file: a.file });
      else this.peerEvent('snapshot creation failed', { to: m.to, code: a.error.code, error: a.error.message });
      this.snapshotsOut.delete(m.to);
      this.rn.reportSnapshot(m.to, false);
      this.scheduleTurn();
      return;
    }
    // etcd createMergedSnapshotMessage: the metadata says what is actually sent.
    const sent: Message = {
      ...m,
      snapshot: { metadata: { index: a.index, term: a.term, confState: a.confState }, data: new Uint8Array(0) },
    };
    this.snapshotsOut.set(m.to, a.file);
    t.sendSnapshot(sent, fs.createReadStream(a.file, { highWaterMark: 1024 * 1024 }), a.size);
  }

  private onSnapshotSent(to: number, ok: boolean): void {
    const file = this.snapshotsOut.get(to);
    this.snapshotsOut.delete(to);
    if (file !== undefined && file !== '') this.worker.send({ type: WorkerMessageType.SnapshotRelease, file });
    this.peerEvent(ok ? 'snapshot sent' : 'snapshot send failed', { to });
    if (this.stopped) return;
    this.rn.reportSnapshot(to, ok);
    this.scheduleTurn();
  }

  /** A verified snapshot from the leader: the worker stages it, then raft gets the MsgSnap. */
  private onSnapshotReceived(m: Message, file: string): void {
    if (this.stopped || !this.watchStarted) {
      // Too early to install (the watch worker rebuilds from the new state): the leader retries.
      fs.rm(file, { force: true }, () => undefined);
      return;
    }
    const requestId = this.nextSnapshotRequest++;
    this.snapshotRequests.set(requestId, m);
    this.worker.send({ type: WorkerMessageType.SnapshotStage, requestId, file });
  }

  private onSnapshotStaged(a: SnapshotAnswer): void {
    const m = this.snapshotRequests.get(a.requestId);
    if (m === undefined) return;
    this.snapshotRequests.delete(a.requestId);
    if (a.error !== null) {
      this.peerEvent('received snapshot refused', { from: m.from, code: a.error.code, error: a.error.message });
      return;
    }
    if (this.stopped) return;
    const snap = m.snapshot!.metadata;
    if (snap.index !== a.index || snap.term !== a.term) {
      this.peerEvent('received snapshot does not match its message', { from: m.from, index: snap.index, fileIndex: a.index });
      this.worker.send({ type: WorkerMessageType.SnapshotRelease, file: a.file });
      return;
    }
    this.rn.step(m);
    const pending = this.rn.raft.log.pendingSnapshot;
    if (pending === null || pending.metadata.index !== a.index || this.rn.raft.log.snapshotInProgress) {
      // raft did not take it (stale, or another is being installed).
      this.worker.send({ type: WorkerMessageType.SnapshotRelease, file: a.file });
    } else {
      if (this.staged !== null) this.worker.send({ type: WorkerMessageType.SnapshotRelease, file: this.staged.file });
      this.staged = { index: a.index, term: a.term, file: a.file };
    }
    this.scheduleTurn();
  }

  /** The state was replaced by an installed snapshot: lessor, configuration, log bookkeeping. */
  private onReplaced(r: AppliedReplaced): void {
    const now = monotonicNowMs();
    this.lessor.reset(r.leases.map((l) => ({ id: Long.fromString(l.id), ttl: l.ttl, remaining: l.remaining })), now);
    if (this.rn.isLeader()) this.lessor.promote(now, 2 * leaseRevokesPerTick);
    while (this.confChanges.length > 0 && this.confChanges[0]!.index <= r.index) this.confChanges.shift();
  }

  /** One ReadIndex round for every linearizable read that arrived since the last one. */
  private askReadIndex(): void {
    if (this.readsUnconfirmed.length === 0 || this.rn.lead === 0) return;
    const reads = this.readsUnconfirmed;
    this.readsUnconfirmed = [];
    const ctx = Buffer.allocUnsafe(8);
    ctx.writeDoubleLE(++this.readRound, 0);
    const dropped = this.rn.readIndex(ctx);
    if (dropped !== null) {
      const empty = new Uint8Array(0);
      for (const rq of reads) this.answer(rq.target, dropped.code, empty);
      return;
    }
    this.readRounds.set(ctx.toString('latin1'), reads);
  }

  /** The Batch for a Ready: its write, what to apply, and the reads that may be served. */
  private batchOf(rd: Ready): BatchMessage {
    const persist = rd.persist;
    let snapshot: BatchMessage['snapshot'] = null;
    if (persist !== null && persist.snapshot !== null) {
      const meta = persist.snapshot.metadata;
      const staged = this.staged;
      assert(staged !== null && staged.index === meta.index && staged.term === meta.term, 'raft installs the staged snapshot');
      this.staged = null;
      snapshot = { index: meta.index, term: meta.term };
      // Everything up to the snapshot is in it: nothing below is sent for apply again (raft
      // counts it applied once the install is durable: handedOut follows then).
      this.applySent = Math.max(this.applySent, meta.index);
      this.logBytes.reset(meta.index + 1);
    }
    if (persist !== null) {
      this.persisting.push(persist.seq);
      for (const e of persist.entries) this.logBytes.push(e.index, e.data.length);
      // ready() hands out every unstable entry: this turn's proposals are counted above now.
      this.proposedBytes = 0;
    }
    const apply: Entry[] = [];
    for (const e of rd.committedEntries) {
      this.handedOut = e.index;
      if (e.type === EntryType.ConfChange) this.confChanges.push(e);
      if (e.index > this.applySent) {
        apply.push(e);
        this.applySent = e.index;
      }
    }
    // Entries that commit once this write is durable: applied right after its fsync.
    const early = this.rn.commitIndexIfLocalDurable();
    if (early > this.applySent) {
      for (const e of this.rn.raft.log.slice(this.applySent + 1, early + 1)) {
        if (e.type !== EntryType.Normal) break; // a membership change waits to be committed
        apply.push(e);
        this.applySent = e.index;
      }
    }
    this.reportApplied();
    for (const rs of rd.readStates) {
      const key = Buffer.from(rs.context).toString('latin1');
      const reads = this.readRounds.get(key);
      if (reads === undefined) continue; // a round this member gave up on (leader change)
      this.readRounds.delete(key);
      for (const rq of reads) {
        rq.readIndex = rs.index;
        this.pendingReads.push(rq);
      }
    }
    return {
      seq: persist !== null ? persist.seq : 0,
      snapshot,
      hardState: persist !== null ? persist.hardState : null,
      mustSync: persist !== null && persist.mustSync,
      raftTerm: this.rn.term,
      append: persist !== null ? persist.entries : [],
      apply,
      reads: this.readsToServe(),
    };
  }

  /** Reads whose index was sent for apply: the worker serves them after those applies. */
  private readsToServe(): ReadRequest[] {
    const pending = this.pendingReads;
    const out: ReadRequest[] = [];
    let kept = 0;
    for (let i = 0; i < pending.length; i++) {
      const rq = pending[i]!;
      if (rq.readIndex <= this.applySent && out.length < limits.batchReadsMax) {
        out.push(rq);
        this.reads.set(rq.id, rq.target);
      } else {
        pending[kept++] = rq;
      }
    }
    pending.length = kept;
    return out;
  }

  private onWorkerMessage(msg: FromWorker): void {
    if (!(msg instanceof Uint8Array)) {
      if (msg.type === WorkerMessageType.SnapshotCreated) this.onSnapshotCreated(msg);
      else if (msg.type === WorkerMessageType.HashDone) this.onHashDone(msg);
      else if (msg.type === WorkerMessageType.DefragmentDone) this.onDefragmentDone(msg);
      else if (msg.type === WorkerMessageType.SnapshotStaged) this.onSnapshotStaged(msg);
      else {
        assert(msg.type === WorkerMessageType.Alarm, 'unexpected worker message');
        this.onStorageAlarm(msg);
      }
      return;
    }
    if (msg[0] === WorkerMessageType.Persisted) {
      const p = decodePersisted(msg);
      // One sync acknowledges every write before it, in seq order.
      while (this.persisting.length > 0 && this.persisting[0]! <= p.seq) this.rn.persisted(this.persisting.shift()!);
      // An installed snapshot counts as handed out and applied up to its index.
      if (this.rn.applied > this.handedOut) this.handedOut = this.rn.applied;
      this.reportApplied();
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
    if (h.replaced != null) this.onReplaced(h.replaced);
    this.currentRev = h.currentRev;
    this.compactRev = h.compactRev;
    this.dbSize = h.dbSize;
    this.dbSizeInUse = h.dbSizeInUse;
    if (h.appliedIndex > this.workerApplied) this.workerApplied = h.appliedIndex;
    if (h.alarms !== null) this.alarms = AlarmStore.decode(Uint8Array.from(h.alarms));
    if (h.auth !== null) this.auth.applied(concordpb.AuthApplied.decode(Uint8Array.from(h.auth)));
    if (h.membership !== null) {
      this.membership = Membership.decode(Uint8Array.from(h.membership));
      this.learner = this.membership.get(this.memberId)?.isLearner ?? false;
      this.syncPeers();
    }
    this.reportApplied();
    this.logBytes.appliedTo(this.workerApplied);
    this.trimLog();
    if (this.pendingReads.length > 0 || this.rn.hasReady()) this.scheduleTurn();
  }

  /**
   * Tells raft what the worker applied: membership changes first (they take effect when
   * applied), then the applied index, never beyond what raft handed out (entries applied early
   * count once raft hands them out as committed).
   */
  private reportApplied(): void {
    const applied = Math.min(this.workerApplied, this.handedOut);
    let changed = false;
    while (this.confChanges.length > 0 && this.confChanges[0]!.index <= applied) {
      const e = this.confChanges.shift()!;
      const cc = decodeConfChange(e.data);
      this.rn.applyConfChange(e.index, cc);
      changed = true;
      const w = this.confWaits.get(cc.id);
      if (w !== undefined && w.cc.type === cc.type && w.cc.nodeId === cc.nodeId) {
        this.confWaits.delete(cc.id);
        w.done(0);
      }
    }
    if (changed) this.checkRemoved();
    if (applied > this.rn.applied) this.rn.appliedTo(applied);
    if (this.appliedWaiters.length > 0) this.releaseAppliedWaiters();
    if (changed) this.campaignIfAlone();
    this.checkCaughtUp();
  }

  /**
   * Applied entries are in the state machine (and the WAL): keep only the tail a lagging
   * follower may still need, bounded in entries and bytes. Trimming in steps keeps the copy
   * amortized.
   */
  private trimLog(): void {
    const applied = this.rn.applied;
    const log = this.rn.raft.log;
    if (log.pendingSnapshot !== null) return; // the log is being replaced
    const keep = this.cfg.snapshotCatchUpEntries ?? limits.logRetainEntries;
    const retained = applied - log.firstIndex() + 1;
    if (retained < 2 * keep && this.logBytes.retainedBytes < 2 * limits.logRetainBytesMax) return;
    const to = this.logBytes.trimPoint(applied, keep, limits.logRetainBytesMax);
    if (to >= log.firstIndex()) {
      this.rn.compact(to);
      this.logBytes.compactTo(to);
    }
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
    if (this.stopped) return;
    if (++this.leaseTicks % 100 === 0) this.auth.sweep();
    if (!this.rn.isLeader()) return;
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
    if (this.corruptCheckTimer !== null) clearTimeout(this.corruptCheckTimer);
    const empty = new Uint8Array(0);
    for (const target of this.waits.values()) this.answer(target, ErrorCode.Stopped, empty);
    this.waits.clear();
    for (const w of this.confWaits.values()) w.done(ErrorCode.Stopped);
    this.confWaits.clear();
    this.transfer?.done(ErrorCode.Stopped);
    this.transfer = null;
    for (const target of this.reads.values()) this.answer(target, ErrorCode.Stopped, empty);
    this.reads.clear();
    for (const rq of this.pendingReads) this.answer(rq.target, ErrorCode.Stopped, empty);
    this.pendingReads = [];
    for (const rq of this.readsUnconfirmed) this.answer(rq.target, ErrorCode.Stopped, empty);
    this.readsUnconfirmed = [];
    for (const reads of this.readRounds.values()) for (const rq of reads) this.answer(rq.target, ErrorCode.Stopped, empty);
    this.readRounds.clear();
    this.awaitingLeader.clear();
    for (const w of this.appliedWaiters) w.done(ErrorCode.Stopped);
    this.appliedWaiters = [];
    const noFile: SnapshotAnswer = {
      requestId: 0, error: { code: 0, message: 'server stopped' }, file: '', size: 0, index: 0, term: 0,
      confState: { voters: [], learners: [] }, membership: noBytes, currentRev: 0,
    };
    for (const b of this.backupRequests.values()) b(noFile);
    this.backupRequests.clear();
    await this.transport?.close();
    await this.watch.close();
    await this.worker.close();
  }
}

/** etcd membership.NewMember for a runtime add: peer URLs, no token, the Unix time. */
function memberIdFromUrls(peerUrls: string[], now: Date): Long {
  return idToLong(memberIdOf(peerUrls, '', now));
}

function sameUrls(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((u, i) => u === b[i]);
}

/** Nothing on disk yet: a member starting for the first time. */
function isNewMember(ready: WorkerReady): boolean {
  const hs = ready.hardState;
  return hs.term === 0 && hs.vote === 0 && hs.commit === 0 && ready.appliedIndex === 0 &&
    ready.snapshotIndex === 0 && decodeEntries(ready.entries).length === 0;
}

/**
 * The start of a new cluster's log (etcd raft.Bootstrap): one configuration entry per initial
 * member, in raft-id order, at term 1, committed, each carrying the member (id and peer URLs),
 * the same on every initial member; durable before raft starts (raw_node.ts, "Start").
 */
async function bootstrap(worker: StorageWorkerHandle, members: InitialMember[]): Promise<{ entries: Entry[]; hardState: WorkerReady['hardState'] }> {
  const sorted = members.slice().sort((a, b) => raftIdOf(a.id) - raftIdOf(b.id));
  const entries: Entry[] = sorted.map((m, i) => ({
    term: 1,
    index: i + 1,
    type: EntryType.ConfChange,
    data: encodeConfChange({
      id: 0, type: ConfChangeType.AddNode, nodeId: raftIdOf(m.id),
      context: encodeMemberContext({ id: m.id, peerUrls: m.peerUrls, isLearner: false }),
    }),
  }));
  const hardState = { term: 1, vote: 0, commit: entries.length };
  await new Promise<void>((resolve, reject) => {
    worker.listen({
      onMessage: (msg) => {
        if (msg instanceof Uint8Array && msg[0] === WorkerMessageType.Persisted) resolve();
      },
      onFatal: (message) => reject(new Error(message)),
    });
    // seq 1, before raft exists: raft numbers its own writes from 1 again, and this one is
    // acknowledged (and consumed here) before the first of them is sent.
    worker.send(encodeBatch(new PackWriter(1024), {
      seq: 1, hardState, mustSync: true, raftTerm: 1, append: entries, apply: [], reads: [],
    }));
  });
  return { entries, hardState };
}

/**
 * The configuration as of the applied index. A data dir written before configurations were kept
 * (applied > 0, none stored) was a lone member's: it is its own voter.
 */
function configuration(ready: WorkerReady, selfId: number): ConfState {
  const cs = ready.confState;
  if (cs.voters.length === 0 && cs.learners.length === 0 && ready.appliedIndex > 0) {
    return { voters: [selfId], learners: [] };
  }
  return cs;
}
