// The storage simulator (issue #10): the storage worker's real code (StorageCore, the WAL, the
// backend, MVCC and leases) on a simulated disk and store engine, driven by a seeded "main
// thread" that proposes writes, reads, lease grants and revokes, compactions and elections as a
// lone voter's raft driver does, through the real message encoders. One PRNG draws everything:
// the workload, the fault mix, I/O latencies, when the power goes and what survives it. After
// every restart it checks:
//  - no acknowledged write lost: every entry whose answer reached the driver is in the
//    recovered log (same index, term and bytes), or applied in the backend;
//  - nothing applied that was not proposed: every recovered entry is one the driver appended;
//  - a term or vote acknowledged durable (Persisted) is never forgotten;
//  - the recovered state is exactly what a clean run of the recovered log gives: every key with
//    its revisions, every lease, and every acknowledged answer (revisions never change);
//  - corruption is refused or repaired, never served: a start refuses only after a bit flip;
//  - linearizable reads see every write acknowledged before they were issued;
//  - a storage failure stops the process before it acknowledges anything more;
//  - liveness: with faults off, every request is answered and NOSPACE clears.
// A run is a pure function of its seed; `trace` prints what happened.
import Long from 'long';
import { concordpb, etcdserverpb } from '../../src/gen/proto';
import { Prng } from '../../src/util/prng';
import { StoreCorruptError } from '../../src/mvcc/kvstore';
import { WalCorruptError, WalWriteError, Wal } from '../../src/storage/wal';
import { StorageCore, WalBehindStateError } from '../../src/workers/storage_core';
import {
  BatchMessage, decodeApplied, decodePersisted, encodeBatch, PackWriter, ReadKind, ReadRequest, WorkerAlarm,
  WorkerInit, WorkerMessageType, decodeEntries,
} from '../../src/workers/protocol';
import { newStatsBuffer } from '../../src/workers/stats';
import { newRingBuffer } from '../../src/watch/ring';
import type { Entry, HardState } from '../../src/raft/types';
import * as schema from '../../src/storage/schema';
import { Db } from '../../src/storage/engine';
import { SimDisk, DiskFaults, noDiskFaults } from './sim_disk';
import { SimEngine, SimStore, EngineFaults } from './sim_engine';
import { drainMicrotasks, SimScheduler } from './sim_scheduler';

export interface StorageSimOptions {
  seed: number;
  /** Client operations in the faulty phase. */
  ops?: number;
  /** The mutation the tests must catch: the WAL acknowledges without fdatasync. */
  unsafeNoFsync?: boolean;
  trace?: boolean;
}

export interface StorageSimResult {
  seed: number;
  violations: string[];
  crashes: number;
  refusals: number;
  acked: number;
  virtualMs: number;
  faults: string[];
  trace: string[];
}

const dataDir = '/sim/data';
const keySpace = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];

interface Proposal {
  id: number;
  index: number;
  term: number;
  data: Uint8Array;
  what: string;
}

interface Ack {
  id: number;
  index: number;
  term: number;
  data: string;
  code: number;
  /** The answer with its header's ids and term removed (they differ between runs). */
  answer: string;
  revision: number;
}

/** One process lifetime of the storage worker. */
interface Process {
  core: StorageCore;
  epoch: number;
  fatal: string | null;
  /** Proposals sent to this process not yet answered, by id. */
  waiting: Map<number, Proposal>;
  reads: Map<number, { minRev: number; linearizable: boolean }>;
  /** Reads the checker itself sends, by read id: answer null until answered. */
  probes: Map<number, { kind: ReadKind; answer: string | null }>;
  /** Applied index as the last Applied message said. */
  applied: number;
}

class Violation extends Error {}

export async function runStorageSim(opts: StorageSimOptions): Promise<StorageSimResult> {
  const sim = new StorageSim(opts);
  try {
    await sim.run();
  } catch (err) {
    if (!(err instanceof Violation)) {
      sim.violations.push(`exception: ${(err as Error).stack ?? String(err)}`);
    }
  }
  return sim.result();
}

class StorageSim {
  readonly violations: string[] = [];
  private readonly prng: Prng;
  private readonly sched = new SimScheduler();
  private readonly disk: SimDisk;
  private readonly store = new SimStore();
  private readonly engineFaults: EngineFaults;
  private readonly diskFaults: DiskFaults;
  private readonly trace: string[] = [];
  private readonly traceOn: boolean;
  private readonly ops: number;
  private readonly segmentBytes: number;
  private readonly batchLimit: number;
  private readonly batchIntervalMs: number;
  private readonly crashChance: number;
  private readonly flipChance: number;
  private proc: Process | null = null;
  private epoch = 0;
  private engine: SimEngine | null = null;
  // ---- the driver's raft state (a lone voter) ----
  private log: Entry[] = [];
  private prevIndex = 0;
  private term = 0;
  private vote = 0;
  private lastHardState: HardState = { term: 0, vote: 0, commit: 0 };
  private unsent: Entry[] = [];
  private pendingReads: ReadRequest[] = [];
  private seq = 0;
  private batchTerms = new Map<number, { term: number; vote: number }>();
  private turnScheduled = false;
  /** Messages between the threads are delivered in order: a channel never reorders. */
  private toCoreAt = 0;
  private fromCoreAt = 0;
  private readonly writer = new PackWriter(4096);
  // ---- what the world knows ----
  private nextId = 1;
  private nextReadId = 1;
  private readonly proposed = new Map<string, string>(); // "index:term" -> data hex
  private readonly acks = new Map<number, Ack>(); // index -> ack
  private readonly byId = new Map<number, Proposal>();
  private durableTerm = 0;
  private durableVote = 0;
  private maxAckedRev = 0;
  private leaseIds: Long[] = [];
  private noSpace = new Set<string>();
  private flips = 0;
  private startAttempts = 0;
  private crashes = 0;
  private refusals = 0;

  constructor(private readonly opts: StorageSimOptions) {
    this.prng = new Prng(opts.seed);
    const p = this.prng;
    this.traceOn = opts.trace === true;
    this.ops = opts.ops ?? 150;
    this.segmentBytes = [8192, 16384, 65536][p.int(3)]!;
    this.batchLimit = [2, 5, 50][p.int(3)]!;
    this.batchIntervalMs = [3, 20, 100][p.int(3)]!;
    this.crashChance = [0.01, 0.02, 0.05][p.int(3)]!;
    this.flipChance = [0, 0, 0.2][p.int(3)]!;
    this.diskFaults = {
      writeEio: [0, 0, 0, 0.002][p.int(4)]!,
      syncEio: [0, 0, 0, 0.01][p.int(4)]!,
      preallocateEnospc: [0, 0, 0.3][p.int(3)]!,
      syncMsMin: 0,
      syncMsMax: [1, 4, 20][p.int(3)]!,
    };
    this.engineFaults = { commitFail: [0, 0, 0.15][p.int(3)]!, commitMsMin: 0, commitMsMax: [1, 10, 50][p.int(3)]! };
    this.disk = new SimDisk(this.sched, p, this.diskFaults);
    this.note(`seed ${opts.seed}: segment ${this.segmentBytes} B, backend batch ${this.batchLimit}/${this.batchIntervalMs} ms, ` +
      `crash ${this.crashChance}, flip ${this.flipChance}, disk ${JSON.stringify(this.diskFaults)}, engine ${JSON.stringify(this.engineFaults)}` +
      (opts.unsafeNoFsync ? ', UNSAFE no fsync' : ''));
  }

  result(): StorageSimResult {
    return {
      seed: this.opts.seed, violations: this.violations, crashes: this.crashes, refusals: this.refusals,
      acked: this.acks.size, virtualMs: this.sched.now,
      faults: [...this.disk.fired, ...(this.engine?.fired ?? [])], trace: this.trace,
    };
  }

  private note(line: string): void {
    if (this.trace.length >= 4000) this.trace.shift();
    this.trace.push(`[${this.sched.now}ms] ${line}`);
    if (this.traceOn) console.log(`[${this.sched.now}ms] ${line}`);
  }

  private violation(what: string): never {
    this.note('VIOLATION ' + what);
    this.violations.push(what);
    throw new Violation(what);
  }

  async run(): Promise<void> {
    await this.start();
    for (let op = 0; op < this.ops; op++) {
      this.sched.at(this.prng.int(4), () => this.clientOp());
      await this.runFor(1 + this.prng.int(6));
      if (this.prng.int(1_000_000) < this.crashChance * 1_000_000 || (this.proc !== null && this.proc.fatal !== null)) {
        await this.crashAndRestart();
      }
    }
    // Liveness: faults stop; everything sent must be answered and NOSPACE must clear.
    this.disk.faults = { writeEio: 0, syncEio: 0, preallocateEnospc: 0, syncMsMin: 0, syncMsMax: 2 };
    if (this.engine !== null) this.engine.faults = { commitFail: 0, commitMsMin: 0, commitMsMax: 2 };
    // (A failure decided before the faults stopped may still land: restart after it.)
    for (let round = 0; round < 3; round++) {
      if (this.proc === null || this.proc.fatal !== null) await this.crashAndRestart();
      await this.runFor(5000);
      if (this.proc !== null && this.proc.fatal === null) break;
    }
    const p = this.proc!;
    if (p.waiting.size > 0) this.violation(`liveness: ${p.waiting.size} proposals never answered (first: ${[...p.waiting.values()][0]!.what})`);
    if (p.reads.size > 0) this.violation(`liveness: ${p.reads.size} reads never answered`);
    if (this.noSpace.size > 0) this.violation(`liveness: NOSPACE still raised (${[...this.noSpace].join(', ')}) with faults off`);
    await this.checkAgainstReference('end');
  }

  /** Runs the scheduler for `ms` virtual milliseconds. */
  private async runFor(ms: number): Promise<void> {
    const until = this.sched.now + ms;
    let spins = 0;
    for (;;) {
      await drainMicrotasks();
      if (this.sched.pending === 0) break;
      // Peek: stop before events later than `until`.
      const before = this.sched.now;
      let ran = false;
      const marker = this.sched.at(Math.max(0, until - before), () => undefined);
      ran = this.sched.step();
      this.sched.clearTimeout(marker);
      if (!ran || this.sched.now >= until) break;
      if (++spins > 100_000) this.violation('livelock: too many events');
    }
    if (this.sched.now < until) this.sched.now = until;
    await drainMicrotasks();
  }

  // ---- process lifetime ----

  private init(): WorkerInit {
    return {
      type: WorkerMessageType.Init,
      dataDir,
      mapSizeBytes: 1 << 30,
      walSegmentBytes: this.segmentBytes,
      statsBuffer: newStatsBuffer(),
      watchEventRing: newRingBuffer(64 * 1024),
      watchCompactRev: new SharedArrayBuffer(8),
      leaseTtlMin: 5,
      unsafeNoFsync: this.opts.unsafeNoFsync === true,
    };
  }

  private async start(): Promise<void> {
    const epoch = ++this.epoch;
    this.engine = new SimEngine(this.store, this.sched, this.prng, this.engineFaults);
    this.noSpace.clear();
    let core: StorageCore;
    let ready;
    try {
      core = new StorageCore(this.init(), {
        io: this.disk,
        engine: this.engine,
        timers: this.sched,
        backendBatchLimit: this.batchLimit,
        backendBatchIntervalMs: this.batchIntervalMs,
        post: (msg) => this.fromCore(epoch, msg),
        alarm: (a) => this.fromCore(epoch, a),
        fatal: (message) => this.fromCore(epoch, { type: WorkerMessageType.Fatal, message }),
      });
      ready = core.ready();
    } catch (err) {
      if (err instanceof WalWriteError && this.startAttempts++ < 20) {
        // A disk fault at start (a failed preallocation or sync): the process exits; start again.
        this.note(`start failed: ${err.message.slice(0, 120)}`);
        this.disk.kill();
        return this.start();
      }
      if (err instanceof WalCorruptError || err instanceof StoreCorruptError || err instanceof WalBehindStateError) {
        this.refusals++;
        this.note(`start refused: ${err.message.slice(0, 160)}`);
        if (this.flips === 0) this.violation(`start refused without any damage injected: ${err.message}`);
        // The operator accepts the loss: repair and start again. Acknowledged writes after the
        // cut may be gone now, by the operator's choice.
        const meta = this.store.dbs[Db.Meta]!.get('s' + schema.metaConsistentIndex);
        const applied = meta === undefined ? 0 : schema.readU64(meta, 0);
        // The operator repairs on a working disk.
        const faults = this.disk.faults;
        this.disk.faults = noDiskFaults;
        const cut = Wal.repair({ dir: `${dataDir}/${schema.walDir}`, segmentBytes: this.segmentBytes, io: this.disk }, applied);
        this.note(`repair: ${JSON.stringify(cut)}`);
        this.forgetAcksAfterRepair(applied);
        this.disk.faults = faults;
        this.flips = 0;
        return this.start();
      }
      throw err;
    }
    this.startAttempts = 0;
    this.proc = { core, epoch, fatal: null, waiting: new Map(), reads: new Map(), probes: new Map(), applied: ready.appliedIndex };
    this.recover(ready.hardState, ready.snapshotIndex, decodeEntries(ready.entries), ready.appliedIndex);
  }

  /** Checks what the restart recovered against what was acknowledged, then campaigns. */
  private recover(hs: HardState, prevIndex: number, entries: Entry[], applied: number): void {
    const last = entries.length > 0 ? entries[entries.length - 1]!.index : prevIndex;
    this.note(`recovered: hard state ${JSON.stringify(hs)}, log (${prevIndex}, ${last}], applied ${applied}`);
    for (const e of entries) {
      const want = this.proposed.get(`${e.index}:${e.term}`);
      if (want === undefined || want !== hex(e.data)) this.violation(`entry ${e.index} (term ${e.term}) recovered but never appended with these bytes`);
    }
    for (const [index, ack] of this.acks) {
      if (index <= prevIndex) {
        if (index > applied) this.violation(`acknowledged entry ${index} released from the WAL before it was applied`);
        continue;
      }
      const e = entries[index - prevIndex - 1];
      if (e === undefined) this.violation(`acknowledged write lost: entry ${index} (${ack.answer.slice(0, 60)}) is not in the recovered log (ends at ${last})`);
      if (e.term !== ack.term || hex(e.data) !== ack.data) this.violation(`acknowledged entry ${index} recovered with other contents`);
    }
    if (hs.term < this.durableTerm) this.violation(`term ${this.durableTerm} was acknowledged durable, recovered ${hs.term}`);
    if (hs.term === this.durableTerm && this.durableVote !== 0 && hs.vote !== this.durableVote) {
      this.violation(`vote ${this.durableVote} in term ${hs.term} was acknowledged durable, recovered ${hs.vote}`);
    }
    if (applied > last) this.violation(`applied index ${applied} beyond the recovered log ${last}`);
    this.log = entries.slice();
    this.prevIndex = prevIndex;
    this.term = hs.term;
    this.vote = hs.vote;
    this.lastHardState = hs;
    this.unsent = [];
    this.pendingReads = [];
    this.batchTerms.clear();
    // As the raft core does at start: campaign (a new term), append the leader's empty entry,
    // commit everything (a lone voter), apply what the backend lacks.
    this.campaign(false);
    const toApply = this.log.filter((e) => e.index > applied);
    this.sendBatch(toApply);
  }

  /** A new term with a vote for itself; `hardStateOnly` sends that change alone first (F3). */
  private campaign(hardStateOnly: boolean): void {
    this.term++;
    this.vote = 1;
    this.note(`campaign: term ${this.term}${hardStateOnly ? ' (hard state alone)' : ''}`);
    if (hardStateOnly) this.sendBatch([]);
    this.append(new Uint8Array(0), null);
  }

  private async crashAndRestart(): Promise<void> {
    this.crashes++;
    const kind = this.prng.int(4);
    const keep = [0, 0.5][this.prng.int(2)]!;
    const tear = this.prng.int(2) === 0;
    this.sched.clear();
    this.turnScheduled = false;
    this.engine?.crash();
    if (kind === 0) {
      this.disk.kill();
      this.note('kill -9');
    } else {
      this.disk.powerCut(keep, tear);
      this.note(`power cut (unsynced pages kept with p=${keep}, torn page ${tear})`);
    }
    if (this.prng.int(1_000_000) < this.flipChance * 1_000_000) {
      const flip = this.disk.flipBit();
      if (flip !== null) {
        this.flips++;
        this.note(`bit flip in ${flip.file} at ${flip.offset}`);
      }
    }
    if (this.proc !== null) {
      // Answers that were in flight to clients are lost with the process; nothing to check.
      this.proc = null;
    }
    await this.start();
    await this.runFor(200);
    await this.checkAgainstReference('after restart');
  }

  private forgetAcksAfterRepair(applied: number): void {
    // Repair cuts the log where it was damaged: acknowledged entries after the cut are lost by
    // the operator's decision. Keep only the ones still in the WAL or applied.
    const dir = `${dataDir}/${schema.walDir}`;
    let kept = 0;
    try {
      const { wal, replay } = Wal.open({ dir, segmentBytes: this.segmentBytes, io: this.disk });
      wal.close();
      const last = Math.max(applied, replay.entries.length > 0 ? replay.entries[replay.entries.length - 1]!.index : replay.prevIndex);
      for (const index of [...this.acks.keys()]) {
        if (index > last) this.acks.delete(index);
        else kept++;
      }
      // Hard state records after the cut are gone too, by the same decision.
      this.durableTerm = replay.hardState.term;
      this.durableVote = replay.hardState.vote;
      this.maxAckedRev = 0;
      for (const a of this.acks.values()) this.maxAckedRev = Math.max(this.maxAckedRev, a.revision);
    } catch (err) {
      this.violation(`the WAL does not open after repair: ${(err as Error).message}`);
    }
    this.note(`after repair ${kept} acknowledged entries remain`);
  }

  // ---- the driver: proposals, batches, answers ----

  private append(data: Uint8Array, p: Proposal | null): Entry {
    const index = this.prevIndex + this.log.length + 1;
    const e: Entry = { index, term: this.term, type: 0, data };
    this.log.push(e);
    this.unsent.push(e);
    this.proposed.set(`${index}:${this.term}`, hex(data));
    if (p !== null) {
      p.index = index;
      p.term = this.term;
    }
    this.scheduleTurn();
    return e;
  }

  private scheduleTurn(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    this.sched.setImmediate(() => {
      this.turnScheduled = false;
      if (this.proc === null || this.proc.fatal !== null) return;
      this.sendBatch(this.unsent);
    });
  }

  /** One Batch: the unsent entries to append and (a lone voter) apply, plus `alsoApply`. */
  private sendBatch(alsoApply: Entry[]): void {
    const proc = this.proc;
    if (proc === null) return;
    const append = this.unsent;
    this.unsent = [];
    const last = this.prevIndex + this.log.length;
    const hs: HardState = { term: this.term, vote: this.vote, commit: last };
    const l = this.lastHardState;
    const hsChanged = hs.term !== l.term || hs.vote !== l.vote || hs.commit !== l.commit;
    const termOrVote = hs.term !== l.term || hs.vote !== l.vote;
    const reads = this.pendingReads;
    this.pendingReads = [];
    const apply = alsoApply === append ? append : [...alsoApply, ...append.filter((e) => !alsoApply.includes(e))];
    if (append.length === 0 && apply.length === 0 && reads.length === 0 && !hsChanged) return;
    const b: BatchMessage = {
      seq: ++this.seq, hardState: hsChanged ? hs : null, mustSync: append.length > 0 || termOrVote,
      raftTerm: this.term, append, apply, reads,
    };
    this.lastHardState = hs;
    if (termOrVote) this.batchTerms.set(b.seq, { term: hs.term, vote: hs.vote });
    const msg = encodeBatch(this.writer, b);
    const epoch = proc.epoch;
    this.toCoreAt = Math.max(this.toCoreAt, this.sched.now + this.prng.int(2));
    this.sched.at(this.toCoreAt - this.sched.now, () => {
      if (this.proc === null || this.proc.epoch !== epoch || this.proc.fatal !== null) return;
      this.proc.core.batch(msg);
    });
  }

  private fromCore(epoch: number, msg: Uint8Array | WorkerAlarm | { type: WorkerMessageType.Fatal; message: string }): void {
    const proc = this.proc;
    if (proc === null || proc.epoch !== epoch) return;
    if (proc.fatal !== null && msg instanceof Uint8Array) {
      this.violation(`the storage posted a message after it failed (${proc.fatal})`);
    }
    if (!(msg instanceof Uint8Array)) {
      if (msg.type === WorkerMessageType.Fatal) {
        proc.fatal = msg.message;
        this.note(`fatal: ${msg.message.slice(0, 160)}`);
        return;
      }
      if (msg.raised) this.noSpace.add(msg.source);
      else this.noSpace.delete(msg.source);
      this.note(`alarm ${msg.source} ${msg.raised ? 'raised' : 'cleared'}: ${msg.message.slice(0, 100)}`);
      return;
    }
    // Thread hand-off: delivered a little later, never inside the core's own call.
    const copy = Uint8Array.from(msg);
    this.fromCoreAt = Math.max(this.fromCoreAt, this.sched.now + this.prng.int(2));
    this.sched.at(this.fromCoreAt - this.sched.now, () => {
      if (this.proc === null || this.proc.epoch !== epoch) return;
      if (copy[0] === WorkerMessageType.Persisted) this.onPersisted(copy);
      else this.onApplied(copy);
    });
  }

  private onPersisted(msg: Uint8Array): void {
    const p = decodePersisted(msg);
    for (const [seq, hs] of this.batchTerms) {
      if (seq > p.seq) continue;
      if (hs.term > this.durableTerm || (hs.term === this.durableTerm && hs.vote !== 0)) {
        this.durableTerm = hs.term;
        this.durableVote = hs.vote;
      }
      this.batchTerms.delete(seq);
    }
  }

  private onApplied(msg: Uint8Array): void {
    const proc = this.proc!;
    const h = decodeApplied(msg, {
      result: (id, code, response) => {
        const p = proc.waiting.get(id);
        if (p === undefined) return; // proposed by an earlier process (replayed)
        proc.waiting.delete(id);
        const { answer, revision } = stripHeader(p.what, response);
        if (code === 0) this.maxAckedRev = Math.max(this.maxAckedRev, revision);
        this.acks.set(p.index, { id, index: p.index, term: p.term, data: hex(p.data), code, answer, revision });
      },
      read: (id, code, response) => {
        const probe = proc.probes.get(id);
        if (probe !== undefined) {
          probe.answer = `${code}:${describeRead(probe.kind, response)}`;
          return;
        }
        const r = proc.reads.get(id);
        if (r === undefined) this.violation(`read ${id} answered but never asked`);
        proc.reads.delete(id);
        if (code !== 0 || !r.linearizable) return;
        const rev = Number(etcdserverpb.RangeResponse.decode(response).header?.revision ?? 0);
        if (rev < r.minRev) this.violation(`stale linearizable read: revision ${rev} < ${r.minRev} acknowledged before it was issued`);
      },
      leaseChange: () => undefined,
    });
    if (h.appliedIndex < proc.applied) this.violation(`applied index went back: ${h.appliedIndex} after ${proc.applied}`);
    proc.applied = h.appliedIndex;
  }

  private clientOp(): void {
    const proc = this.proc;
    if (proc === null || proc.fatal !== null) return;
    const p = this.prng;
    const roll = p.int(100);
    if (roll < 12) {
      const linearizable = p.int(2) === 0;
      const id = this.nextReadId++;
      proc.reads.set(id, { minRev: this.maxAckedRev, linearizable });
      const request = etcdserverpb.RangeRequest.encode({ key: Buffer.from('a'), range_end: Buffer.from('z'), serializable: !linearizable }).finish();
      this.pendingReads.push({ id, kind: ReadKind.Range, linearizable, request });
      this.scheduleTurn();
      return;
    }
    if (roll < 14) {
      this.campaign(true);
      return;
    }
    const grows = roll < 80;
    if (grows && this.noSpace.size > 0) return; // refused with NOSPACE by the main thread
    const key = Buffer.from(keySpace[p.int(keySpace.length)]!);
    let req: concordpb.InternalRequest.$Properties;
    let what: string;
    if (roll < 55) {
      const size = [1, 10, 100, 2000][p.int(4)]!;
      const value = Buffer.alloc(size, 0x61 + p.int(26));
      const lease = this.leaseIds.length > 0 && p.int(3) === 0 ? this.leaseIds[p.int(this.leaseIds.length)]! : Long.ZERO;
      req = { put: { key, value, lease } };
      what = `put ${key} (${size} B${lease.isZero() ? '' : ', lease ' + lease.toString()})`;
    } else if (roll < 70) {
      req = {
        txn: {
          compare: [{ key, target: etcdserverpb.Compare.CompareTarget.VERSION, result: etcdserverpb.Compare.CompareResult.GREATER, version: 0 }],
          success: [{ request_put: { key, value: Buffer.from('t' + this.nextId) } }],
          failure: [{ request_put: { key: Buffer.from(keySpace[p.int(keySpace.length)]!), value: Buffer.from('f') } }],
        },
      };
      what = `txn on ${key}`;
    } else if (roll < 80) {
      const id = Long.fromNumber(1 + p.int(1 << 30));
      this.leaseIds.push(id);
      req = { lease_grant: { ID: id, TTL: 10 + p.int(100) } };
      what = `lease grant ${id.toString()}`;
    } else if (roll < 88) {
      req = { delete_range: { key, range_end: p.int(3) === 0 ? Buffer.from('z') : undefined } };
      what = `delete ${key}`;
    } else if (roll < 96) {
      if (this.leaseIds.length === 0) return;
      const id = this.leaseIds[p.int(this.leaseIds.length)]!;
      req = { lease_revoke: { ID: id } };
      what = `lease revoke ${id.toString()}`;
    } else {
      const rev = Math.max(1, this.maxAckedRev - p.int(5));
      req = { compaction: { revision: rev, physical: p.int(2) === 0 } };
      what = `compact ${rev}`;
    }
    const id = this.nextId++;
    req.id = id;
    const data = concordpb.InternalRequest.encode(req).finish();
    const prop: Proposal = { id, index: 0, term: 0, data, what };
    this.append(data, prop);
    proc.waiting.set(id, prop);
    this.byId.set(id, prop);
    this.note(`propose ${what} at ${prop.index}`);
  }

  // ---- the reference: a clean run of the same log ----

  /** The recovered state must be what a clean run of the same log gives, answers included. */
  private async checkAgainstReference(when: string): Promise<void> {
    const proc = this.proc;
    if (proc === null || proc.fatal !== null) return;
    if (this.prevIndex !== 0) return; // the log was released: no full log to replay
    // Wait until this process has applied its whole log.
    for (let i = 0; i < 400 && proc.applied < this.prevIndex + this.log.length; i++) await this.runFor(20);
    if (this.proc !== proc || proc.fatal !== null) return;
    const applied = proc.applied;
    if (applied !== this.log.length) this.violation(`${when}: the log (${this.log.length} entries) was not applied (${applied})`);
    const mine = await this.probeState(proc);
    const ref = await this.referenceState(this.log.slice(0, applied));
    if (mine !== ref.state) {
      this.violation(`${when}: the state differs from a clean run of the same ${applied} entries:\n  here:  ${mine.slice(0, 600)}\n  clean: ${ref.state.slice(0, 600)}`);
    }
    for (const ack of this.acks.values()) {
      if (ack.index > applied) continue;
      const want = ref.answers.get(ack.id);
      if (want === undefined) this.violation(`${when}: acknowledged entry ${ack.index} has no answer in a clean run`);
      if (want.code !== ack.code || want.answer !== ack.answer) {
        this.violation(`${when}: entry ${ack.index} (${this.byId.get(ack.id)?.what}) was answered ${ack.code}/${ack.answer.slice(0, 160)} but a clean run answers ${want.code}/${want.answer.slice(0, 160)}`);
      }
    }
  }

  /** Reads every key with its revisions and every lease through the running process. */
  private async probeState(proc: Process): Promise<string> {
    const reads = this.stateReads();
    for (const r of reads) proc.probes.set(r.id, { kind: r.kind, answer: null });
    this.pendingReads.push(...reads);
    this.scheduleTurn();
    for (let i = 0; i < 400 && [...proc.probes.values()].some((v) => v.answer === null); i++) await this.runFor(5);
    const out = reads.map((r) => proc.probes.get(r.id)?.answer ?? 'no answer');
    for (const r of reads) proc.probes.delete(r.id);
    return out.join('\n');
  }

  /** A range over every key and a TimeToLive of every lease ever granted. */
  private stateReads(): ReadRequest[] {
    const reads: ReadRequest[] = [{
      id: this.nextReadId++, kind: ReadKind.Range, linearizable: false,
      request: etcdserverpb.RangeRequest.encode({ key: Buffer.from([0]), range_end: Buffer.from([0]) }).finish(),
    }];
    for (const l of this.leaseIds) {
      reads.push({
        id: this.nextReadId++, kind: ReadKind.LeaseTimeToLive, linearizable: false,
        request: etcdserverpb.LeaseTimeToLiveRequest.encode({ ID: l, keys: true }).finish(),
      });
    }
    return reads;
  }

  /** A fresh core on a fault-free disk applies `entries` in one batch; its state and answers. */
  private async referenceState(entries: Entry[]): Promise<{ state: string; answers: Map<number, { code: number; answer: string }> }> {
    const sched = new SimScheduler();
    const prng = new Prng(1);
    const posted: Uint8Array[] = [];
    const core = new StorageCore({ ...this.init(), unsafeNoFsync: false }, {
      io: new SimDisk(sched, prng), engine: new SimEngine(new SimStore(), sched, prng), timers: sched,
      backendBatchLimit: 1000, backendBatchIntervalMs: 1000,
      post: (m) => posted.push(Uint8Array.from(m)),
      alarm: () => undefined,
      fatal: (m) => this.violation(`reference run failed: ${m}`),
    });
    core.ready();
    const w = new PackWriter(1024);
    const last = entries.length > 0 ? entries[entries.length - 1]!.index : 0;
    core.batch(encodeBatch(w, { seq: 1, hardState: { term: 1, vote: 1, commit: last }, mustSync: true, raftTerm: 1, append: entries, apply: entries, reads: [] }));
    for (let i = 0; i < 100_000 && sched.step(); i++) await drainMicrotasks();
    const reads = this.stateReads();
    core.batch(encodeBatch(w, { seq: 2, hardState: null, mustSync: false, raftTerm: 1, append: [], apply: [], reads }));
    const answers = new Map<number, { code: number; answer: string }>();
    const readAnswers = new Map<number, string>();
    const kinds = new Map(reads.map((r) => [r.id, r.kind]));
    for (const m of posted) {
      if (m[0] !== WorkerMessageType.Applied) continue;
      decodeApplied(m, {
        result: (id, code, response) => answers.set(id, { code, answer: stripHeader(this.byId.get(id)?.what ?? '', response).answer }),
        read: (id, code, response) => readAnswers.set(id, `${code}:${describeRead(kinds.get(id)!, response)}`),
        leaseChange: () => undefined,
      });
    }
    const state = reads.map((r) => readAnswers.get(r.id) ?? 'no answer').join('\n');
    return { state, answers };
  }
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

/** The response without header ids and term (they differ between runs), and its revision. */
function stripHeader(what: string, response: Uint8Array): { answer: string; revision: number } {
  if (response.length === 0) return { answer: '', revision: 0 };
  const type = what.startsWith('put') ? etcdserverpb.PutResponse
    : what.startsWith('txn') ? etcdserverpb.TxnResponse
      : what.startsWith('delete') ? etcdserverpb.DeleteRangeResponse
        : what.startsWith('lease grant') ? etcdserverpb.LeaseGrantResponse
          : what.startsWith('lease revoke') ? etcdserverpb.LeaseRevokeResponse
            : what.startsWith('compact') ? etcdserverpb.CompactionResponse : null;
  if (type === null) return { answer: hex(response), revision: 0 };
  const m = (type as { decode(b: Uint8Array): { header?: etcdserverpb.IResponseHeader | null; toJSON(): unknown } }).decode(response);
  const revision = Number(m.header?.revision ?? 0);
  const json = m.toJSON() as Record<string, unknown>;
  delete json['header'];
  stripNestedHeaders(json);
  return { answer: `rev ${revision} ${JSON.stringify(json)}`, revision };
}

function stripNestedHeaders(v: unknown): void {
  if (Array.isArray(v)) {
    for (const x of v) stripNestedHeaders(x);
  } else if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    delete o['header'];
    for (const x of Object.values(o)) stripNestedHeaders(x);
  }
}

/** A Range or LeaseTimeToLive answer, readable, without header ids and term. */
function describeRead(kind: ReadKind, response: Uint8Array): string {
  if (response.length === 0) return '';
  if (kind === ReadKind.Range) {
    const r = etcdserverpb.RangeResponse.decode(response);
    return `rev ${String(r.header?.revision)} count ${String(r.count)} ` + r.kvs.map((kv) =>
      `${Buffer.from(kv.key ?? []).toString()}@${String(kv.create_revision)}/${String(kv.mod_revision)}/v${String(kv.version)}/l${String(kv.lease)}=${hex(kv.value ?? new Uint8Array(0)).slice(0, 16)}#${kv.value?.length ?? 0}`).join(' ');
  }
  const t = etcdserverpb.LeaseTimeToLiveResponse.decode(response);
  return `lease ${String(t.ID)} ttl ${String(t.grantedTTL)} keys ${t.keys.map((k) => Buffer.from(k).toString()).join(',')}`;
}
