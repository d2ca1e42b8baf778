// The single-voter raft core concord ran on before the full core (raft.ts + raw_node.ts) existed.
// It stays, unchanged in behaviour, until the server driver switches to RawNode; then it goes.
//
// Original header: the raft consensus core (after etcd-io/raft raft.go + rawnode.go), pure and
// deterministic: no I/O, no clocks, no timers, no Promises. Inputs: tick(), campaign(), propose(),
// storageAppended(), appliedTo();
// output: ready() with entries to persist, committed entries to apply and (once peers exist)
// messages to send; then advance(). Randomness comes from the injected Prng.
//
// This is the single-voter subset of raft: one voter is its own quorum, so it elects itself on
// its first election timeout. Peers, messages and membership changes plug into the same stages
// in the replication issue.
//
// Durability contract with the driver (etcd 3.4's raft: a leader counts its own append at once,
// "the leader can write to its disk in parallel with replicating", raft thesis §10.2.1): a Ready
// may list an entry both in `entries` (to persist) and in `committedEntries`. The driver must not
// apply a committed entry before every entry up to it is durable on this member. Concord's
// storage worker enforces this (it applies an entry only after the WAL fsync that covers it), so
// nothing is acknowledged before it is on disk, while a lone voter needs one hand-off per write
// instead of two (persist, then apply).
import { assert } from '../util/assert';
import { Prng } from '../util/prng';
import { Entry, EntryType, HardState, StateType, emptyBytes } from './types';

/** What the driver must do, in order: persist, send, apply; then call advance(). */
export interface SingleVoterReady {
  /** Set when term/vote/commit changed; persist with `entries` before sending messages. */
  hardState: HardState | null;
  /** Entries to append to stable storage. */
  entries: Entry[];
  /** Entries committed and ready to apply, in log order. */
  committedEntries: Entry[];
  /** True when hardState or entries must reach disk (fsync) before anything else. */
  mustSync: boolean;
}

// ---- the in-memory log (formerly log.ts) ----
// The single voter's raft log held in memory (etcd-io/raft log.go + log_unstable.go +
// MemoryStorage): the entries after the last compaction point, a prefix of which is stable.
//
//   firstIndex-1 = snapshot point (index, term known)
//   [firstIndex .. stableIndex]      on disk
//   (stableIndex .. lastIndex]       unstable: handed to the driver to persist
// Invariant: applied <= committed <= lastIndex; stableIndex <= lastIndex.

export class SingleVoterLog {
  /** entries[i] has index offset + i. */
  private entries: Entry[];
  private offset: number;
  private snapshotTerm: number;
  /** Last index known to be on stable storage. */
  stableIndex: number;
  /** Last index handed out in a Ready for persisting (not yet acknowledged). */
  persistingIndex: number;
  committed: number;
  /** Last index handed out in a Ready for applying. */
  applying: number;
  applied: number;

  constructor(snapshotIndex: number, snapshotTerm: number, stable: Entry[], applied: number) {
    this.offset = snapshotIndex + 1;
    this.snapshotTerm = snapshotTerm;
    this.entries = [];
    for (const e of stable) this.appendOne(e);
    this.stableIndex = this.lastIndex();
    this.persistingIndex = this.stableIndex;
    assert(applied >= snapshotIndex, 'applied before snapshot');
    assert(applied <= this.lastIndex(), 'applied beyond log');
    this.committed = applied;
    this.applying = applied;
    this.applied = applied;
  }

  firstIndex(): number {
    return this.offset;
  }

  lastIndex(): number {
    return this.offset + this.entries.length - 1;
  }

  lastTerm(): number {
    return this.term(this.lastIndex());
  }

  term(index: number): number {
    if (index === this.offset - 1) return this.snapshotTerm;
    assert(index >= this.offset && index <= this.lastIndex(), 'term of unavailable index');
    return this.entries[index - this.offset]!.term;
  }

  append(e: Entry): void {
    assert(e.index === this.lastIndex() + 1, 'log gap');
    this.appendOne(e);
  }

  private appendOne(e: Entry): void {
    if (this.entries.length > 0) assert(e.index === this.lastIndex() + 1, 'log gap');
    else assert(e.index === this.offset, 'first entry index');
    this.entries.push(e);
  }

  /** Entries in (from, to], to <= lastIndex. */
  slice(from: number, to: number): Entry[] {
    if (to <= from) return [];
    assert(from + 1 >= this.offset && to <= this.lastIndex(), 'slice bounds');
    return this.entries.slice(from + 1 - this.offset, to + 1 - this.offset);
  }

  unstableToPersist(): Entry[] {
    const out = this.slice(this.persistingIndex, this.lastIndex());
    this.persistingIndex = this.lastIndex();
    return out;
  }

  /** Storage acknowledged entries up to `index` with `term` (etcd stableTo). */
  stableTo(index: number, term: number): boolean {
    if (index <= this.stableIndex || index > this.lastIndex()) return false;
    if (this.term(index) !== term) return false;
    this.stableIndex = index;
    return true;
  }

  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    assert(index <= this.lastIndex(), 'commit beyond log');
    this.committed = index;
    return true;
  }

  /** Committed entries not yet handed out for applying. */
  nextCommitted(maxEntries: number): Entry[] {
    const to = Math.min(this.committed, this.applying + maxEntries);
    const out = this.slice(this.applying, to);
    this.applying = to;
    return out;
  }

  appliedTo(index: number): void {
    assert(index <= this.applying, 'applied beyond applying');
    if (index > this.applied) this.applied = index;
  }

  /** Drops entries up to `index` (they are covered by the state machine on disk). */
  compactTo(index: number): void {
    if (index < this.offset) return;
    assert(index <= this.applied, 'compact beyond applied');
    const term = this.term(index);
    this.entries = this.entries.slice(index + 1 - this.offset);
    this.offset = index + 1;
    this.snapshotTerm = term;
  }
}

// ---- the core (formerly raft.ts) ----


export interface SingleVoterConfig {
  id: number;
  voters: number[];
  electionTicks: number;
  heartbeatTicks: number;
  prng: Prng;
  /** Restored state. */
  hardState: HardState;
  snapshotIndex: number;
  snapshotTerm: number;
  entries: Entry[];
  applied: number;
  /** Committed entries handed out per Ready at most. */
  applyBatchMax: number;
}

export class SingleVoterDroppedError extends Error {
  constructor() {
    super('raft proposal dropped');
    this.name = 'SingleVoterDroppedError';
  }
}

export class SingleVoterRaft {
  readonly id: number;
  readonly voters: number[];
  readonly log: SingleVoterLog;
  state: StateType;
  term: number;
  vote: number;
  lead: number;
  private readonly electionTicks: number;
  private readonly prng: Prng;
  private readonly applyBatchMax: number;
  private electionElapsed: number;
  private randomizedElectionTimeout: number;
  /** Highest index each voter holds durably; for us, what our storage acknowledged. */
  private readonly match: Map<number, number>;
  private prevHardState: HardState;

  constructor(cfg: SingleVoterConfig) {
    assert(cfg.voters.includes(cfg.id), 'self must be a voter');
    assert(cfg.voters.length === 1, 'multi-voter raft arrives with replication');
    assert(cfg.electionTicks > cfg.heartbeatTicks, 'election ticks > heartbeat ticks');
    this.id = cfg.id;
    this.voters = cfg.voters.slice();
    this.log = new SingleVoterLog(cfg.snapshotIndex, cfg.snapshotTerm, cfg.entries, cfg.applied);
    this.state = StateType.Follower;
    this.term = cfg.hardState.term;
    this.vote = cfg.hardState.vote;
    this.lead = 0;
    this.electionTicks = cfg.electionTicks;
    this.prng = cfg.prng;
    this.applyBatchMax = cfg.applyBatchMax;
    this.electionElapsed = 0;
    this.randomizedElectionTimeout = 0;
    this.resetRandomizedElectionTimeout();
    this.match = new Map();
    for (const v of this.voters) this.match.set(v, 0);
    this.match.set(this.id, this.log.stableIndex);
    if (cfg.hardState.commit > this.log.committed) {
      assert(cfg.hardState.commit <= this.log.lastIndex(), 'commit beyond restored log');
      this.log.commitTo(cfg.hardState.commit);
    }
    this.prevHardState = this.hardState();
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  isLeader(): boolean {
    return this.state === StateType.Leader;
  }

  /** One logical clock tick (the driver ticks every heartbeat interval). */
  tick(): void {
    if (this.state === StateType.Leader) return;
    this.electionElapsed++;
    if (this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.campaign();
    }
  }

  /** Starts an election now (etcd: MsgHup). */
  campaign(): void {
    if (this.state === StateType.Leader) return;
    this.becomeCandidate();
    // A single voter is a quorum of itself.
    if (this.voters.length === 1) this.becomeLeader();
  }

  /** Appends a normal entry; returns its index. Only a leader accepts proposals. */
  propose(data: Uint8Array): number {
    if (this.state !== StateType.Leader) throw new SingleVoterDroppedError();
    return this.appendEntry(data);
  }

  /** etcd raft appendEntry: the leader's own log counts toward the quorum at once. */
  private appendEntry(data: Uint8Array): number {
    const e: Entry = { term: this.term, index: this.log.lastIndex() + 1, type: EntryType.Normal, data };
    this.log.append(e);
    this.match.set(this.id, e.index);
    this.maybeCommit();
    return e.index;
  }

  /** Storage made entries up to `index` (of `term`) durable (etcd: MsgStorageAppendResp). */
  storageAppended(index: number, term: number): void {
    this.log.stableTo(index, term);
  }

  /** The driver applied entries up to `index`. */
  appliedTo(index: number): void {
    this.log.appliedTo(index);
  }

  hasReady(): boolean {
    return this.log.persistingIndex < this.log.lastIndex() ||
      this.log.applying < this.log.committed || !sameHardState(this.prevHardState, this.hardState());
  }

  /** Collects the work for the driver. Entries handed out are not handed out again. */
  ready(): SingleVoterReady {
    const prev = this.prevHardState;
    const hs = this.hardState();
    const hsChanged = !sameHardState(prev, hs);
    const termOrVoteChanged = prev.term !== hs.term || prev.vote !== hs.vote;
    const entries = this.log.unstableToPersist();
    const committedEntries = this.log.nextCommitted(this.applyBatchMax);
    this.prevHardState = hs;
    return {
      hardState: hsChanged ? hs : null,
      entries,
      committedEntries,
      // etcd MustSync: a new term or vote, or new entries, must be on disk before we go on.
      mustSync: entries.length > 0 || termOrVoteChanged,
    };
  }

  private becomeCandidate(): void {
    this.term++;
    this.vote = this.id;
    this.lead = 0;
    this.state = StateType.Candidate;
    this.resetRandomizedElectionTimeout();
  }

  private becomeLeader(): void {
    assert(this.state === StateType.Candidate, 'leader from candidate only');
    this.state = StateType.Leader;
    this.lead = this.id;
    // An empty entry of the new term lets the leader commit entries of earlier terms (raft §5.4.2).
    this.appendEntry(emptyBytes);
  }

  private maybeCommit(): void {
    const matches: number[] = [];
    for (const v of this.voters) matches.push(this.match.get(v) ?? 0);
    matches.sort((a, b) => b - a);
    const quorumIndex = matches[Math.floor(this.voters.length / 2)]!;
    // Only entries of the current term commit by counting (raft §5.4.2).
    if (quorumIndex > this.log.committed && this.log.term(quorumIndex) === this.term) {
      this.log.commitTo(quorumIndex);
    }
  }

  private resetRandomizedElectionTimeout(): void {
    this.randomizedElectionTimeout = this.electionTicks + this.prng.int(this.electionTicks);
  }
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}
