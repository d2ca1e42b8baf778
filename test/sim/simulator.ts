// The deterministic cluster simulator (TigerBeetle VOPR / FoundationDB style): N raft cores in one
// process, a virtual clock, and one seeded PRNG that draws the whole run — the scenario, message
// delays, drops, duplicates, partitions (symmetric and one-way), disk latencies, crashes with lost
// or torn writes, restarts, membership changes, leader transfers, snapshot transfers that fail,
// client writes and linearizable reads. Each node has a driver shaped like concord's: writes go to
// a storage queue that completes them some time later, in order, and the core learns it later
// still; committed entries are applied at once (or, with early apply, right at fsync time).
//
// Two phases: faults for `faultTicks`, then a liveness phase with every fault stopped, in which a
// leader must be elected and a new proposal committed within `livenessTicks`.
// The checker (checker.ts) checks the invariants after every step.
import { bootstrapLog, decodeConfChange } from '../../src/raft/confchange';
import { RaftConfig } from '../../src/raft/raft';
import { RawNode } from '../../src/raft/raw_node';
import {
  ConfChangeType, Entry, EntryType, Message, MessageType, Ready, StateType, entryOverheadBytes,
  stateName,
} from '../../src/raft/types';
import { Checker, CheckedNode, Violation } from './checker';
import { SimDisk } from './disk';
import { EventKind, EventQueue, SimEvent } from './event_queue';
import { SimRandom } from './random';
import { Scenario, ScenarioOptions, drawScenario, unitsPerTick } from './scenario';
import { encodeWrite, entryKey, parseWrite } from './state_machine';
import { Trace, formatMessage } from './trace';

interface ClientOp {
  client: number;
  seq: number;
  write: boolean;
  key: string;
  node: number;
  deadlineTick: number;
  /** Reads: what was acknowledged when the read started, and the index raft gave it. */
  ackedAtStart: number;
  perKeyAtStart: Map<string, number>;
  readIndex: number;
}

class SimNode implements CheckedNode {
  readonly id: number;
  rn!: RawNode;
  disk: SimDisk;
  up = false;
  /** Stopped for good (it applied its own removal, as etcd's server stops). */
  decommissioned = false;
  inc = 0;
  seenCommit = 0;
  seenState = StateType.Follower;
  seenTerm = 0;
  /** A sync is in flight: it covers every write handed out before it started (group commit). */
  syncing = false;
  /** Completions not yet told to the core, and when the last one will be (in order too). */
  notifyPending = 0;
  notifyAt = 0;
  readonly writes = new Map<string, ClientOp>();
  readonly reads = new Map<string, ClientOp>();
  /** Reads with an index, waiting until applied >= index. */
  waitingReads: ClientOp[] = [];

  constructor(id: number) {
    this.id = id;
    this.disk = new SimDisk();
  }
}

export interface SimStats {
  ticks: number;
  events: number;
  delivered: number;
  commitIndex: number;
  leaders: number;
  crashes: number;
  snapshotsInstalled: number;
  confChanges: number;
  transfers: number;
  writesAcked: number;
  readsServed: number;
  livenessTicks: number;
}

export interface SimResult {
  seed: number;
  ok: boolean;
  failure: string | null;
  scenario: Scenario;
  stats: SimStats;
  trace: string[];
}

export interface SimOptions extends ScenarioOptions {
  /** Print every step as it happens. */
  traceLive?: boolean;
  traceOut?: (line: string) => void;
  traceRing?: number;
}

export function runSeed(seed: number, opts: SimOptions = {}): SimResult {
  const sim = new Simulator(seed, opts);
  return sim.run();
}

class Simulator {
  private readonly rnd: SimRandom;
  readonly s: Scenario;
  private now = 0;
  private tickNo = 0;
  private readonly queue = new EventQueue();
  private readonly nodes = new Map<number, SimNode>();
  private readonly checker = new Checker();
  private readonly trace: Trace;
  private readonly stats: SimStats;
  /** Blocked directed links (from * 1024 + to) -> number of partitions blocking it. */
  private readonly blocked = new Map<number, number>();
  private partitions: { links: number[]; untilTick: number }[] = [];
  private readonly clients: { op: ClientOp | null; seq: number }[] = [];
  private nextNodeId: number;
  private liveness = false;
  private livenessStart = 0;
  private probe: { node: number; term: number; seq: number } | null = null;
  private probeSeq = 0;
  private livenessBound = 0;
  /** Nodes whose removal some node applied (so it committed): never members again. */
  private readonly removed = new Set<number>();
  private done = false;

  constructor(seed: number, opts: SimOptions) {
    this.rnd = new SimRandom(seed);
    this.s = drawScenario(seed, this.rnd, opts);
    const out = opts.traceOut ?? console.log;
    this.trace = new Trace(opts.traceRing ?? 400, opts.traceLive === true, out);
    this.stats = {
      ticks: 0, events: 0, delivered: 0, commitIndex: 0, leaders: 0, crashes: 0,
      snapshotsInstalled: 0, confChanges: 0, transfers: 0, writesAcked: 0, readsServed: 0,
      livenessTicks: 0,
    };
    this.nextNodeId = this.s.voters + 1;
    for (let c = 0; c < this.s.clients; c++) this.clients.push({ op: null, seq: 0 });
  }

  run(): SimResult {
    let failure: string | null = null;
    try {
      this.start();
      while (!this.done) {
        const ev = this.queue.pop();
        if (ev === undefined) throw new Error('simulator: empty agenda');
        this.now = ev.time;
        this.stats.events++;
        this.handle(ev);
      }
    } catch (e) {
      failure = e instanceof Violation ? `violation of ${e.message}` :
        `${(e as Error).name}: ${(e as Error).message}\n${(e as Error).stack ?? ''}`;
      this.trace.add(this.now, `FAILURE ${failure.split('\n')[0]!}`);
    }
    this.stats.ticks = this.tickNo;
    this.stats.commitIndex = this.checker.commitMax;
    return {
      seed: this.s.seed, ok: failure === null, failure, scenario: this.s, stats: this.stats,
      trace: failure === null || this.trace.live ? [] : this.trace.lines(),
    };
  }

  // ---- set-up ----

  private start(): void {
    const ids: number[] = [];
    for (let id = 1; id <= this.s.voters; id++) ids.push(id);
    const boot = bootstrapLog(ids);
    for (const id of ids) {
      const n = new SimNode(id);
      n.disk.entries = boot.entries.slice();
      n.disk.hardState = { ...boot.hardState };
      n.disk.durableCommitMax = boot.hardState.commit;
      this.nodes.set(id, n);
      this.checker.disks.set(id, n.disk);
      this.boot(n);
    }
    this.trace.add(this.now, `start: voters [${ids.join(',')}]`);
    this.queue.push(0, EventKind.Tick, 0, 0);
  }

  /** (Re)starts a node from its disk. */
  private boot(n: SimNode): void {
    const d = n.disk;
    const cfg: RaftConfig = {
      id: n.id,
      electionTicks: this.s.electionTicks,
      heartbeatTicks: this.s.heartbeatTicks,
      prng: this.rnd.fork(),
      hardState: { ...d.hardState },
      snapshotIndex: d.logStartIndex,
      snapshotTerm: d.logStartTerm,
      entries: d.entries.slice(),
      applied: d.sm.index,
      confState: {
        voters: d.sm.confState.voters.slice(), learners: d.sm.confState.learners.slice(),
      },
      preVote: this.s.preVote,
      checkQuorum: this.s.checkQuorum,
      msgBytesMax: this.s.msgBytesMax,
      inflightMsgsMax: this.s.inflightMsgsMax,
      inflightBytesMax: this.s.inflightBytesMax,
      uncommittedBytesMax: this.s.uncommittedBytesMax,
      committedEntriesMax: this.s.committedEntriesMax,
      testBugs: this.s.bugs,
    };
    n.rn = new RawNode(cfg);
    n.up = true;
    n.inc++;
    n.seenCommit = 0;
    n.seenState = StateType.Follower;
    n.seenTerm = n.rn.term;
    n.syncing = false;
    n.notifyPending = 0;
    n.notifyAt = this.now;
    if (n.rn.committed < d.durableCommitMax) {
      throw new Violation('commit monotonic', `node ${n.id} restarts at commit ${n.rn.committed} ` +
        `below its durable ${d.durableCommitMax}`);
    }
    this.checker.observeCommit(n);
    this.process(n);
  }

  // ---- events ----

  private handle(ev: SimEvent): void {
    if (ev.kind === EventKind.Tick) {
      this.onTick();
      return;
    }
    const n = this.nodes.get(ev.node)!;
    if (ev.kind === EventKind.Restart) {
      if (!n.up && !n.decommissioned && ev.inc === n.inc) this.restart(n);
      return;
    }
    if (!n.up) {
      const m = ev.msg;
      if (ev.kind === EventKind.Deliver && m!.type === MessageType.Snap) this.snapshotLost(m!);
      return;
    }
    // Messages reach whatever incarnation is up; storage events belong to the one that wrote.
    if (ev.kind !== EventKind.Deliver && ev.inc !== n.inc) return;
    switch (ev.kind) {
      case EventKind.Deliver: this.deliver(n, ev.msg!, ev.ok); break;
      case EventKind.DiskDone: this.diskDone(n, ev.arg); break;
      case EventKind.Notify:
        n.notifyPending--;
        this.trace.add(this.now, () => `${n.id} persisted seq=${ev.arg}`);
        n.rn.persisted(ev.arg);
        this.process(n);
        break;
      case EventKind.LeaderFault:
        if (!this.liveness) this.leaderFault(n);
        break;
      case EventKind.SnapReport:
        this.trace.add(this.now, () => `${n.id} reportSnapshot(${ev.arg}, ${ev.ok})`);
        n.rn.reportSnapshot(ev.arg, ev.ok);
        this.process(n);
        break;
      default: throw new Error('unknown event');
    }
  }

  private onTick(): void {
    this.tickNo++;
    for (const n of this.nodes.values()) {
      if (!n.up) continue;
      n.rn.tick();
      this.process(n);
    }
    if (!this.liveness) {
      this.faults();
      if (this.tickNo >= this.s.faultTicks) this.startLiveness();
    } else {
      this.driveLiveness();
      if (this.done) return;
    }
    this.clientsTick();
    this.queue.push(this.now + unitsPerTick, EventKind.Tick, 0, 0);
  }

  private deliver(n: SimNode, m: Message, snapOk: boolean): void {
    if (this.linkBlocked(m.from, m.to)) {
      this.trace.add(this.now, () => `drop (partition) ${formatMessage(m)}`);
      this.maybeUnreachable(m);
      if (m.type === MessageType.Snap) this.snapshotLost(m);
      return;
    }
    this.stats.delivered++;
    this.trace.add(this.now, () => `deliver ${formatMessage(m)}`);
    n.rn.step(m);
    this.process(n);
    if (m.type === MessageType.Snap && snapOk) {
      const from = this.nodes.get(m.from)!;
      this.queue.push(this.now + 1, EventKind.SnapReport, m.from, from.inc, null, m.to, true);
    }
  }

  /**
   * A sync finished: every write up to `lastSeq` is durable. Like concord's WAL, one fdatasync at a
   * time covers every write issued before it started; writes issued meanwhile wait for the next.
   */
  private diskDone(n: SimNode, lastSeq: number): void {
    while (n.up && n.disk.pending.length > 0 && n.disk.pending[0]!.batch.seq <= lastSeq) {
      this.writeDone(n, n.disk.pending[0]!.batch.seq);
    }
    n.syncing = false;
    if (n.up && n.disk.pending.length > 0) this.startSync(n);
  }

  private startSync(n: SimNode): void {
    const p = n.disk.pending;
    n.syncing = true;
    const at = this.now + this.rnd.range(1, this.diskLatencyMax());
    this.queue.push(at, EventKind.DiskDone, n.id, n.inc, null, p[p.length - 1]!.batch.seq);
  }

  private writeDone(n: SimNode, seq: number): void {
    const d = n.disk;
    const before = d.durableCommitMax;
    const w = d.completeOldest(seq);
    if (w.batch.hardState !== null && w.batch.hardState.commit < before) {
      throw new Violation('commit monotonic',
        `node ${n.id} writes commit ${w.batch.hardState.commit} after ${before}`);
    }
    this.trace.add(this.now, () => `${n.id} disk done seq=${seq}` +
      (w.batch.snapshot !== null ? ` snapshot=${w.batch.snapshot.metadata.index}` : ''));
    if (w.batch.snapshot !== null) {
      this.stats.snapshotsInstalled++;
      this.checker.observeSnapshotInstalled(n.id, d.sm.index, d.sm.hash);
      this.serveReads(n);
    }
    if (w.earlyApplyIndex > d.sm.index) {
      this.applyEarly(n, w.earlyApplyIndex, w.earlyVoters, w.earlyTerm);
    }
    const delay = this.s.notifyDelayMax === 0 ? 0 : this.rnd.range(0, this.s.notifyDelayMax);
    if (delay === 0 && n.notifyPending === 0) {
      n.rn.persisted(seq);
      this.process(n);
    } else {
      n.notifyAt = Math.max(n.notifyAt, this.now + delay);
      n.notifyPending++;
      this.queue.push(n.notifyAt, EventKind.Notify, n.id, n.inc, null, seq);
    }
  }

  /**
   * The driver's latency option: apply, at fsync time, the Normal entries the core said would be
   * committed once this write is durable (stopping at a ConfChange, which must wait).
   */
  private applyEarly(n: SimNode, upTo: number, voters: number[], term: number): void {
    const d = n.disk;
    const last = Math.min(upTo, d.lastIndex());
    for (let i = d.sm.index + 1; i <= last; i++) {
      const e = d.entries[i - d.logStartIndex - 1]!;
      if (e.type === EntryType.ConfChange) break;
      if (voters.length > 0 && e.term === term) {
        this.checker.checkDurableOnQuorum(n, i, e.term, voters, 'applied early');
      }
      this.trace.add(this.now, () => `${n.id} applies ${i} early`);
      this.applyEntry(n, e, true);
    }
    this.serveReads(n);
  }

  // ---- the driver ----

  /** Runs the node's Ready loop until it has nothing more (concord's driver turn). */
  private process(n: SimNode): void {
    const rn = n.rn;
    for (let k = 0; k < 100 && n.up && rn.hasReady(); k++) {
      this.checker.observeCommit(n);
      this.checker.observeRole(n);
      const rd = rn.ready();
      this.traceReady(n, rd);
      if (rd.persist !== null) this.persist(n, rd);
      for (const m of rd.messages) this.send(n, m);
      this.applyCommitted(n, rd.committedEntries);
      for (const rs of rd.readStates) {
        this.readState(n, Buffer.from(rs.context).toString(), rs.index);
      }
      this.serveReads(n);
      this.maybeCompact(n);
    }
    if (!n.up) return;
    this.checker.observeCommit(n);
    this.checker.observeRole(n);
  }

  private persist(n: SimNode, rd: Ready): void {
    const b = rd.persist!;
    this.checker.observeAppend(n, b.entries);
    const r = n.rn.raft;
    let early = 0;
    let voters: number[] = [];
    if (this.s.earlyApply) {
      early = n.rn.commitIndexIfLocalDurable();
      if (early > r.log.committed) voters = r.trk.voters.slice();
    }
    n.disk.enqueue({ batch: b, earlyApplyIndex: early, earlyVoters: voters, earlyTerm: r.term });
    if (!n.syncing) this.startSync(n);
  }

  private applyCommitted(n: SimNode, ents: Entry[]): void {
    if (ents.length === 0) return;
    for (const e of ents) {
      if (e.index <= n.disk.sm.index) {
        // Applied early at fsync time: it must be the very entry the core now hands out.
        if (this.checker.appliedKeyAt(e.index) !== entryKey(e)) {
          throw new Violation('state machine safety',
            `node ${n.id} applied early another entry at ${e.index}`);
        }
        continue;
      }
      this.applyEntry(n, e, false);
      if (!n.up) return;
    }
    n.rn.appliedTo(ents[ents.length - 1]!.index);
  }

  private applyEntry(n: SimNode, e: Entry, early: boolean): void {
    const sm = n.disk.sm;
    sm.apply(e);
    this.checker.observeApply(n, e, sm.hash, early);
    if (e.type === EntryType.ConfChange) {
      const cc = decodeConfChange(e.data);
      sm.confState = n.rn.applyConfChange(e.index, cc);
      this.stats.confChanges++;
      const cs = sm.confState;
      this.trace.add(this.now, () => `${n.id} applies conf change ${e.index}: ${ccName(cc.type)} ` +
        `${cc.nodeId} -> voters [${cs.voters.join(',')}] learners [${cs.learners.join(',')}]`);
      if (cc.type === ConfChangeType.RemoveNode) this.removed.add(cc.nodeId);
      if (cc.type === ConfChangeType.RemoveNode && cc.nodeId === n.id) this.decommission(n);
      return;
    }
    const w = parseWrite(e);
    if (w !== null) {
      const op = n.writes.get(`${w.client}.${w.seq}`);
      if (op !== undefined) {
        n.writes.delete(`${w.client}.${w.seq}`);
        this.checker.observeWriteAck(n.id, w.key, e.index, entryKey(e));
        this.stats.writesAcked++;
        this.finishOp(op);
      }
    } else if (this.probe !== null && this.probe.node === n.id && isProbe(e, this.probe.seq)) {
      this.trace.add(this.now, () => `liveness: probe committed at ${e.index}`);
      this.stats.livenessTicks = this.tickNo - this.livenessStart;
      this.done = true;
    }
  }

  private send(n: SimNode, m: Message): void {
    this.checker.observeSend(n, m);
    if (m.type === MessageType.Snap) {
      this.sendSnapshot(n, m);
      return;
    }
    if (this.linkBlocked(m.from, m.to)) {
      this.trace.add(this.now, () => `drop (partition) ${formatMessage(m)}`);
      this.maybeUnreachable(m);
      return;
    }
    if (this.rnd.chance(this.liveness ? 0 : this.s.dropRate)) {
      this.trace.add(this.now, () => `drop ${formatMessage(m)}`);
      return;
    }
    this.schedule(m, true);
    if (this.rnd.chance(this.liveness ? 0 : this.s.dupRate)) this.schedule(m, true);
  }

  /** The driver merges its state into the MsgSnap (etcd createMergedSnapshotMessage). */
  private sendSnapshot(n: SimNode, m: Message): void {
    const sm = n.disk.sm;
    if (sm.index < m.snapshot!.metadata.index) throw new Error('snapshot beyond the state machine');
    const merged: Message = {
      ...m,
      snapshot: {
        metadata: { index: sm.index, term: sm.term, confState: sm.confState },
        data: sm.encode(),
      },
    };
    const fail = !this.liveness && this.rnd.chance(this.s.snapshotFailRate);
    if (fail || this.linkBlocked(m.from, m.to)) {
      this.trace.add(this.now, () => `snapshot transfer fails ${formatMessage(merged)}`);
      const at = this.now + this.rnd.range(1, 30);
      this.queue.push(at, EventKind.SnapReport, n.id, n.inc, null, m.to, false);
      return;
    }
    this.schedule(merged, true, this.rnd.range(5, 50));
  }

  /**
   * Raft is live only while broadcast time << election timeout (§5.6). Slow disks and networks
   * are faults: once faults stop, a round trip (two delays and two syncs) fits in half an
   * election timeout.
   */
  private delayMax(): number {
    return this.liveness ? Math.min(this.s.delayMax, this.timingCap()) : this.s.delayMax;
  }

  private diskLatencyMax(): number {
    const max = this.s.diskLatencyMax;
    return this.liveness ? Math.min(max, this.timingCap()) : max;
  }

  private timingCap(): number {
    return Math.max(1, Math.floor((this.s.electionTicks * unitsPerTick) / 8));
  }

  /** The transport always reports a snapshot's outcome (raw_node contract, item 7). */
  private snapshotLost(m: Message): void {
    const from = this.nodes.get(m.from)!;
    this.queue.push(this.now + 1, EventKind.SnapReport, m.from, from.inc, null, m.to, false);
  }

  private schedule(m: Message, ok: boolean, extra = 0): void {
    const to = this.nodes.get(m.to);
    if (to === undefined) return;
    let delay = this.rnd.range(this.s.delayMin, this.delayMax()) + extra;
    if (!this.liveness && this.rnd.chance(this.s.delayLongRate)) delay += this.rnd.range(50, 500);
    // Delivered to whatever incarnation is up then (a restarted node gets stale messages too).
    this.queue.push(this.now + delay, EventKind.Deliver, m.to, -1, m, 0, ok);
  }

  private maybeUnreachable(m: Message): void {
    const from = this.nodes.get(m.from);
    if (from === undefined || !from.up || !this.rnd.chance(this.s.unreachableRate)) return;
    from.rn.reportUnreachable(m.to);
  }

  private traceReady(n: SimNode, rd: Ready): void {
    if (rd.softState !== null) {
      const ss = rd.softState;
      const term = n.rn.term;
      this.trace.add(this.now, () => `${n.id} ${stateName(ss.state)} term=${term} lead=${ss.lead}`);
      if (ss.state === StateType.Leader) {
        this.stats.leaders++;
        if (!this.liveness && this.rnd.chance(this.s.leaderFaultRate)) {
          // Right away (its first entries never leave it) or a few round trips later (some did).
          const delay = this.rnd.chance(0.5) ? this.rnd.range(0, 5) :
            this.rnd.range(5, 10 * this.s.delayMax);
          this.queue.push(this.now + delay, EventKind.LeaderFault, n.id, n.inc);
        }
      }
    }
    const p = rd.persist;
    if (p !== null) {
      this.trace.add(this.now, () => `${n.id} persist seq=${p.seq}` +
        (p.snapshot !== null ? ` snapshot=${p.snapshot.metadata.index}` : '') +
        (p.entries.length > 0 ? ` entries=${p.entries[0]!.index}..${p.entries.at(-1)!.index}` +
          `@${p.entries.at(-1)!.term}` : '') +
        (p.hardState !== null ?
          ` hs=(${p.hardState.term},${p.hardState.vote},${p.hardState.commit})` : ''));
    }
    const c = rd.committedEntries;
    if (c.length > 0) {
      this.trace.add(this.now, () => `${n.id} apply ${c[0]!.index}..${c[c.length - 1]!.index}`);
    }
  }

  private maybeCompact(n: SimNode): void {
    const log = n.rn.raft.log;
    if (log.pendingSnapshot !== null) return;
    const applied = n.rn.applied;
    if (applied - log.snapshotIndex < this.s.snapshotThreshold) return;
    const index = applied - this.s.snapshotKeep;
    if (index <= log.snapshotIndex || index <= n.disk.logStartIndex) return;
    this.trace.add(this.now, () => `${n.id} compact ${index}`);
    n.rn.compact(index);
    n.disk.compact(index);
  }

  // ---- reads ----

  private readState(n: SimNode, ctx: string, index: number): void {
    const op = n.reads.get(ctx);
    if (op === undefined) return; // abandoned (timed out)
    n.reads.delete(ctx);
    op.readIndex = index;
    n.waitingReads.push(op);
    this.trace.add(this.now, () => `${n.id} read ${ctx} gets index ${index}`);
  }

  private serveReads(n: SimNode): void {
    if (n.waitingReads.length === 0) return;
    const sm = n.disk.sm;
    const still: ClientOp[] = [];
    for (const op of n.waitingReads) {
      if (sm.index < op.readIndex) {
        still.push(op);
        continue;
      }
      this.trace.add(this.now, () => `${n.id} serves read ${op.client}.${op.seq} at ${sm.index}`);
      this.checker.observeRead(n.id, op.readIndex, sm.kv, op.ackedAtStart, op.perKeyAtStart);
      this.stats.readsServed++;
      this.finishOp(op);
    }
    n.waitingReads = still;
  }

  // ---- clients ----

  private clientsTick(): void {
    if (this.liveness) return; // a fixed backlog: the liveness bound depends on it
    for (let c = 0; c < this.clients.length; c++) {
      const cl = this.clients[c]!;
      if (cl.op !== null) {
        if (this.tickNo >= cl.op.deadlineTick) this.abandon(cl.op);
        continue;
      }
      if (!this.rnd.chance(this.s.opRate)) continue;
      const up = [...this.nodes.values()].filter((x) => x.up);
      if (up.length === 0) continue;
      this.startOp(c, this.rnd.pick(up));
    }
  }

  private startOp(c: number, n: SimNode): void {
    const cl = this.clients[c]!;
    const op: ClientOp = {
      client: c, seq: ++cl.seq, write: !this.rnd.chance(this.s.readRatio),
      key: `k${this.rnd.int(this.s.keys)}`, node: n.id,
      deadlineTick: this.tickNo + this.s.opTimeoutTicks,
      ackedAtStart: this.checker.ackedIndexMax, perKeyAtStart: new Map(this.checker.ackedPerKey),
      readIndex: 0,
    };
    const id = `${c}.${op.seq}`;
    if (op.write) {
      const err = n.rn.propose(encodeWrite(c, op.seq, op.key));
      this.trace.add(this.now, () => `client ${id} write ${op.key} at ${n.id}${why(err)}`);
      if (err !== null) return;
      n.writes.set(id, op);
    } else {
      const ctx = `r ${id}`;
      const err = n.rn.readIndex(Buffer.from(ctx));
      this.trace.add(this.now, () => `client ${id} read at ${n.id}${why(err)}`);
      if (err !== null) return;
      n.reads.set(ctx, op);
    }
    cl.op = op;
    this.process(n);
  }

  private finishOp(op: ClientOp): void {
    const cl = this.clients[op.client]!;
    if (cl.op === op) cl.op = null;
  }

  /** The client gives up (outcome unknown: a write may still commit later). */
  private abandon(op: ClientOp): void {
    const n = this.nodes.get(op.node)!;
    n.writes.delete(`${op.client}.${op.seq}`);
    n.reads.delete(`r ${op.client}.${op.seq}`);
    n.waitingReads = n.waitingReads.filter((x) => x !== op);
    this.finishOp(op);
  }

  // ---- faults ----

  private faults(): void {
    const s = this.s;
    for (const n of this.nodes.values()) {
      if (n.up && this.rnd.chance(s.crashRate)) this.crash(n);
    }
    this.partitions = this.partitions.filter((p) => {
      if (p.untilTick > this.tickNo) return true;
      for (const l of p.links) this.blocked.set(l, this.blocked.get(l)! - 1);
      this.trace.add(this.now, 'partition healed');
      return false;
    });
    if (this.rnd.chance(s.partitionRate)) this.partition();
    if (this.rnd.chance(s.confChangeRate)) this.confChange();
    if (this.rnd.chance(s.transferRate)) this.transfer();
  }

  private crash(n: SimNode): void {
    const torn = this.rnd.chance(this.s.tornWriteRate);
    const first = n.disk.pending[0];
    const keep = torn && first !== undefined ? this.rnd.range(0, first.batch.entries.length) : -1;
    const keepSnapshot = this.rnd.chance(0.5);
    this.trace.add(this.now, () => `${n.id} CRASH (${n.disk.pending.length} writes lost` +
      (keep >= 0 ? `, torn write keeps ${keep} entries` : '') +
      (keep >= 0 && keepSnapshot ? ' and its snapshot' : '') + ')');
    n.disk.crash(keep, keepSnapshot);
    if (keep >= 0 && keepSnapshot && first!.batch.snapshot !== null) {
      this.checker.observeSnapshotInstalled(n.id, n.disk.sm.index, n.disk.sm.hash);
    }
    this.stats.crashes++;
    this.down(n);
    const at = this.now + this.rnd.range(1, this.s.restartTicksMax) * unitsPerTick;
    this.queue.push(at, EventKind.Restart, n.id, n.inc);
  }

  /** A just-elected leader crashes (if crashes are on) or is cut off from everyone for a while. */
  private leaderFault(n: SimNode): void {
    if (this.s.crashRate > 0 && this.rnd.chance(0.5)) {
      this.crash(n);
      return;
    }
    const links: number[] = [];
    for (const b of this.nodes.keys()) if (b !== n.id) links.push(n.id * 1024 + b, b * 1024 + n.id);
    for (const l of links) this.blocked.set(l, (this.blocked.get(l) ?? 0) + 1);
    const until = this.tickNo + this.rnd.range(1, this.s.partitionTicksMax);
    this.partitions.push({ links, untilTick: until });
    this.trace.add(this.now, `leader ${n.id} cut off until tick ${until}`);
  }

  private down(n: SimNode): void {
    n.up = false;
    n.writes.clear();
    n.reads.clear();
    n.waitingReads = [];
    for (const cl of this.clients) if (cl.op !== null && cl.op.node === n.id) cl.op = null;
  }

  private restart(n: SimNode): void {
    const d = n.disk;
    this.trace.add(this.now, () => `${n.id} restart (term ${d.hardState.term}, applied ` +
      `${d.sm.index}, log ${d.logStartIndex}..${d.lastIndex()})`);
    this.boot(n);
  }

  private decommission(n: SimNode): void {
    this.trace.add(this.now, () => `${n.id} removed: stops`);
    n.decommissioned = true;
    this.down(n);
  }

  private partition(): void {
    const ids = [...this.nodes.keys()];
    if (ids.length < 2) return;
    const links: number[] = [];
    let what: string;
    if (this.rnd.chance(0.5)) {
      // Symmetric: a random side against the rest.
      const side = new Set(ids.filter(() => this.rnd.chance(0.5)));
      if (side.size === 0 || side.size === ids.length) side.clear(), side.add(this.rnd.pick(ids));
      for (const a of side) {
        for (const b of ids) if (!side.has(b)) links.push(a * 1024 + b, b * 1024 + a);
      }
      what = `symmetric [${[...side].join(',')}] | rest`;
    } else {
      // One-way clogging: a few directed links.
      const count = this.rnd.range(1, ids.length);
      for (let k = 0; k < count; k++) {
        const a = this.rnd.pick(ids);
        const b = this.rnd.pick(ids);
        if (a !== b) links.push(a * 1024 + b);
      }
      what = `one-way ${links.map((l) => `${Math.floor(l / 1024)}->${l % 1024}`).join(' ')}`;
    }
    for (const l of links) this.blocked.set(l, (this.blocked.get(l) ?? 0) + 1);
    const until = this.tickNo + this.rnd.range(1, this.s.partitionTicksMax);
    this.partitions.push({ links, untilTick: until });
    this.trace.add(this.now, `partition ${what} until tick ${until}`);
  }

  private linkBlocked(from: number, to: number): boolean {
    return (this.blocked.get(from * 1024 + to) ?? 0) > 0;
  }

  private leader(): SimNode | null {
    let best: SimNode | null = null;
    for (const n of this.nodes.values()) {
      if (!n.up || n.rn.state !== StateType.Leader) continue;
      if (best === null || n.rn.term > best.rn.term) best = n;
    }
    return best;
  }

  private confChange(): void {
    const l = this.leader();
    if (l === null) return;
    const trk = l.rn.raft.trk;
    const voters = trk.voters;
    const learners = trk.learners;
    const fresh = this.nextNodeId <= this.s.nodeIdMax ? this.nextNodeId : 0;
    const options: [ConfChangeType, number][] = [];
    if (fresh > 0) {
      options.push([ConfChangeType.AddLearnerNode, fresh], [ConfChangeType.AddNode, fresh]);
    }
    if (voters.length < 5) for (const id of learners) options.push([ConfChangeType.AddNode, id]);
    for (const id of learners) options.push([ConfChangeType.RemoveNode, id]);
    // Never below two voters: removing from two can wedge the cluster (etcd raft README).
    if (voters.length >= 3) {
      for (const id of voters) {
        options.push([ConfChangeType.RemoveNode, id], [ConfChangeType.AddLearnerNode, id]);
      }
    }
    if (options.length === 0) return;
    const [type, id] = this.rnd.pick(options);
    const err = l.rn.proposeConfChange({ id: 0, type, nodeId: id, context: new Uint8Array(0) });
    this.trace.add(this.now, () => `conf change at ${l.id}: ${ccName(type)} ${id}${why(err)}`);
    if (err === null && id === fresh) {
      this.nextNodeId++;
      const n = new SimNode(id);
      this.nodes.set(id, n);
      this.checker.disks.set(id, n.disk);
      this.boot(n);
    }
    this.process(l);
  }

  private transfer(): void {
    const l = this.leader();
    if (l === null) return;
    const targets = l.rn.raft.trk.voters.filter((id) => id !== l.id);
    if (targets.length === 0) return;
    const t = this.rnd.pick(targets);
    const err = l.rn.transferLeader(t);
    this.stats.transfers++;
    this.trace.add(this.now, () => `transfer leadership ${l.id} -> ${t}${why(err)}`);
    this.process(l);
  }

  // ---- liveness ----

  private startLiveness(): void {
    this.liveness = true;
    this.livenessStart = this.tickNo;
    // The bound grows with the backlog still to replicate (no new client writes from now on): the
    // most lagging node may be needed for a quorum, and flow control (message size, window) sets
    // how many entries travel per round trip (a round trip: two delays, two syncs, a notify).
    let last = 0;
    let lowest = Infinity;
    for (const n of this.nodes.values()) {
      if (n.decommissioned) continue;
      last = Math.max(last, n.disk.lastIndex() + 1, n.up ? n.rn.raft.log.lastIndex() : 0);
      lowest = Math.min(lowest, n.disk.sm.index);
    }
    const window = Math.min(this.s.msgBytesMax * this.s.inflightMsgsMax, this.s.inflightBytesMax);
    const perRoundTrip = Math.max(1, Math.floor(window / (entryOverheadBytes + 24)));
    const units = 2 * this.delayMax() + 2 * this.diskLatencyMax() + this.s.notifyDelayMax;
    const roundTrip = Math.ceil(units / unitsPerTick) + 1;
    const trips = Math.ceil((last - lowest) / perRoundTrip);
    this.livenessBound = this.s.livenessTicks + trips * roundTrip;
    this.partitions = [];
    this.blocked.clear();
    this.trace.add(this.now, 'liveness phase: faults stop, crashed nodes restart, removed stop');
    for (const n of this.nodes.values()) {
      // A removed node that never learned it may keep disrupting elections without pre-vote and
      // check-quorum (thesis §4.2.3): the operator stops it, as etcd's server stops itself.
      if (this.removed.has(n.id)) {
        if (!n.decommissioned) this.decommission(n);
      } else if (!n.up && !n.decommissioned) {
        this.restart(n);
      }
    }
  }

  private driveLiveness(): void {
    if (this.tickNo - this.livenessStart > this.livenessBound) {
      throw new Violation('liveness',
        `no leader with a committed proposal ${this.livenessBound} ticks after faults stopped`);
    }
    const l = this.leader();
    if (l === null) return;
    if (this.probe !== null && this.probe.node === l.id && this.probe.term === l.rn.term) return;
    const seq = ++this.probeSeq;
    const err = l.rn.propose(Buffer.from(`probe ${seq}`));
    this.trace.add(this.now, () => `liveness: probe ${seq} at ${l.id}${why(err)}`);
    if (err === null) this.probe = { node: l.id, term: l.rn.term, seq };
    this.process(l);
  }
}

function isProbe(e: Entry, seq: number): boolean {
  return e.type === EntryType.Normal && Buffer.from(e.data).toString() === `probe ${seq}`;
}

function ccName(t: ConfChangeType): string {
  return ['AddNode', 'RemoveNode', 'UpdateNode', 'AddLearnerNode'][t] ?? `type${t}`;
}

function why(err: Error | null): string {
  return err === null ? '' : `: ${err.message}`;
}
