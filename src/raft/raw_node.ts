// RawNode: the raft core's interface to its driver (etcd-io/raft rawnode.go, in its
// AsyncStorageWrites mode). Pure and deterministic like the rest of src/raft.
//
// ---- The contract with the driver (concord's server: main thread + storage worker) ----
//
// Inputs:  tick() every heartbeat interval; step(msg) for every message from a peer; propose(),
//          proposeConfChange(), readIndex(), transferLeader(), campaign() for local requests;
//          reportSnapshot(), reportUnreachable() from the transport; persisted(seq), appliedTo(),
//          applyConfChange(), compact() from storage and the state machine.
// Output:  ready() (call when hasReady()); every item in a Ready is handed out exactly once.
//
// 1. Writes are pipelined. rd.persist (a PersistBatch) goes to the storage thread at once; the
//    main thread never waits for it and may call ready() again before earlier batches are
//    durable. Storage makes batches durable strictly in seq order (snapshot first, then the
//    entries, then the hard state; writing entry i discards stored entries >= i) and the driver
//    calls persisted(seq) for each, in the same order, as soon as it knows. A batch whose
//    mustSync is false (only the commit index moved) may skip fsync.
// 2. rd.messages may be sent at once, in any order, including the leader's MsgApp for entries
//    that are still being written in parallel (raft thesis §10.2.1: the leader counts its own
//    copy only once durable). Messages that vouch for durable state — MsgAppResp, MsgVoteResp,
//    MsgPreVoteResp, and the node's own vote and append acknowledgement — are held inside the
//    core and attached to the newest write (etcd msgsAfterAppend); persisted(seq) releases them
//    into a later Ready (self-addressed ones are stepped at once). So a node never tells anyone
//    about a vote or an entry its disk does not hold, even while several writes are in flight.
//    A held response of a term the node has left by the time it is released is dropped.
// 3. rd.committedEntries are committed (on a quorum's disks) and durable here: apply them in
//    order, call applyConfChange(index, cc) for each EntryType.ConfChange entry when applying
//    it (membership changes take effect when applied, etcd 3.4 semantics), then appliedTo(last).
//    A lone voter thus needs two hand-offs per write: persist, then apply.
//    Latency option: right after ready(), commitIndexIfLocalDurable() says up to which index
//    the entries will be committed as soon as this batch is durable (for a lone voter: all of
//    them). Storage may apply the Normal entries up to it right after the fsync, before
//    persisted() reaches the core; they come back in committedEntries later and the driver
//    skips them (it reports them with appliedTo as usual). ConfChange entries must wait.
//    Reads answered after that call are served at or above the reported index, so a write
//    acknowledged early is never missed by a linearizable read.
// 4. rd.persist.snapshot (a follower catching up from the leader's snapshot): when storage makes
//    that batch durable the state machine must hold the snapshot's state (concord streams the
//    leader's LMDB state out of band before stepping the MsgSnap) and every stored entry is
//    discarded. No committed entry is handed out while a snapshot is pending, so every entry
//    handed out before it is older and is applied before it.
// 5. rd.readStates: serve each linearizable read once applied >= its index; the context is the
//    one given to readIndex(). Reads are dropped (no answer) when leadership changes: retry.
// 6. rd.softState (leader, role) when it changed: fail or redirect waiting requests on a leader
//    change (etcd "leader changed").
// 7. A MsgSnap in rd.messages carries metadata at the index where the core knows the state
//    machine is (applied); the driver sends its state at that index or later, with metadata
//    rewritten to what it actually sends (etcd createMergedSnapshotMessage), then calls
//    reportSnapshot(to, ok). reportUnreachable(to) when a send to `to` failed.
// 8. compact(index) drops log entries up to index once the state machine holds them durably
//    (index <= applied); how long a tail to keep for lagging followers is the driver's policy
//    (etcd keeps 5,000 entries). Followers behind the first index get a snapshot.
//
// Start: a new cluster's members start from bootstrapLog(voters) (confchange.ts), written to
// storage first; a member added later starts empty (no entries, empty configuration).
// Restart: build a new RawNode from what storage holds durably (hard state, snapshot point,
// entries, the state machine's applied index and the configuration as of it).
import { assert } from '../util/assert';
import { encodeConfChange } from './confchange';
import { ProposalDroppedError } from './errors';
import { quorumIndex } from './quorum';
import { Raft, RaftConfig, raftDefaults } from './raft';
import { ProgressState } from './tracker/progress';
import {
  ConfChange, ConfState, EntryType, HardState, Message, MessageType, PersistBatch, Ready,
  SoftState, StateType, newMessage,
} from './types';

/** A follower's replication state as the leader sees it (etcd raft.Status Progress). */
export interface ProgressStatus {
  match: number;
  next: number;
  state: ProgressState;
  recentActive: boolean;
  isLearner: boolean;
  inflight: number;
}

/** A snapshot of the core's state for status pages and metrics (etcd raft.Status). */
export interface RaftStatus {
  id: number;
  term: number;
  vote: number;
  commit: number;
  applied: number;
  lead: number;
  state: StateType;
  leadTransferee: number;
  configuration: ConfState;
  /** Per member; only on the leader (empty elsewhere). */
  progress: Map<number, ProgressStatus>;
}

interface HeldMessages {
  seq: number;
  messages: Message[];
}

export class RawNode {
  /** The state machine. Read it for status and tests; change it only through RawNode. */
  readonly raft: Raft;
  private prevSoftState: SoftState;
  /** The hard state last handed out for persisting. */
  private prevHardState: HardState;
  private lastSeq: number;
  /** Per write in flight (same order as the log's writes): messages released by it. */
  private held: HeldMessages[];
  /** Messages released by completed writes, for the next Ready. */
  private outbox: Message[];
  private readonly committedEntriesMax: number;
  private readonly committedBytesMax: number;

  constructor(cfg: RaftConfig) {
    this.raft = new Raft(cfg);
    this.prevSoftState = this.softState();
    this.prevHardState = this.raft.hardState();
    this.lastSeq = 0;
    this.held = [];
    this.outbox = [];
    this.committedEntriesMax = cfg.committedEntriesMax ?? raftDefaults.committedEntriesMax;
    this.committedBytesMax = cfg.committedBytesMax ?? raftDefaults.committedBytesMax;
  }

  get id(): number { return this.raft.id; }
  get term(): number { return this.raft.term; }
  get lead(): number { return this.raft.lead; }
  get state(): StateType { return this.raft.state; }
  get committed(): number { return this.raft.log.committed; }
  get applied(): number { return this.raft.log.applied; }
  isLeader(): boolean { return this.raft.state === StateType.Leader; }

  softState(): SoftState {
    return { lead: this.raft.lead, state: this.raft.state };
  }

  status(): RaftStatus {
    const r = this.raft;
    const progress = new Map<number, ProgressStatus>();
    if (r.state === StateType.Leader) {
      for (const [id, pr] of r.trk.progress) {
        progress.set(id, {
          match: pr.match, next: pr.next, state: pr.state, recentActive: pr.recentActive,
          isLearner: pr.isLearner, inflight: pr.inflights.count(),
        });
      }
    }
    return {
      id: r.id, term: r.term, vote: r.vote, commit: r.log.committed, applied: r.log.applied,
      lead: r.lead, state: r.state, leadTransferee: r.leadTransferee,
      configuration: r.trk.confState(), progress,
    };
  }

  // ---- inputs ----

  tick(): void {
    this.raft.tick();
  }

  /** Starts an election now (etcd Campaign), if a voter with no unapplied conf change. */
  campaign(): void {
    this.raft.campaignNow();
  }

  /** A message from a peer. */
  step(m: Message): void {
    assert(m.to === this.raft.id, 'message for another node');
    // A forwarded proposal or read keeps its origin and may come back to it (A -> B -> A when
    // leadership moved); a MsgTransferLeader comes "from" its target.
    const t = m.type;
    const forwarded = t === MessageType.Prop || t === MessageType.ReadIndex ||
      t === MessageType.TransferLeader;
    assert(m.from !== this.raft.id || forwarded, 'message from self over the network');
    this.raft.step(m);
  }

  /** Proposes a normal entry; a follower forwards it to the leader (lost if the leader changes). */
  propose(data: Uint8Array): ProposalDroppedError | null {
    return this.stepLocal(MessageType.Prop, [{ term: 0, index: 0, type: EntryType.Normal, data }]);
  }

  /** Proposes one membership change; it takes effect when applied (applyConfChange). */
  proposeConfChange(cc: ConfChange): ProposalDroppedError | null {
    const data = encodeConfChange(cc);
    const e = { term: 0, index: 0, type: EntryType.ConfChange, data };
    return this.stepLocal(MessageType.Prop, [e]);
  }

  /** Asks for a linearizable read point; the answer comes as a ReadState with `context`. */
  readIndex(context: Uint8Array): ProposalDroppedError | null {
    const m = newMessage(MessageType.ReadIndex, this.raft.id, this.raft.id, 0);
    m.context = context;
    return this.raft.step(m);
  }

  /** Asks the leader to hand leadership to `target` (etcd TransferLeader / MoveLeader). */
  transferLeader(target: number): ProposalDroppedError | null {
    // etcd's convention: a MsgTransferLeader comes "from" its target.
    const m = newMessage(MessageType.TransferLeader, this.raft.id, target, 0);
    return this.raft.step(m);
  }

  private stepLocal(type: MessageType, entries: Message['entries']): ProposalDroppedError | null {
    const m = newMessage(type, this.raft.id, this.raft.id, 0);
    m.entries = entries;
    return this.raft.step(m);
  }

  reportUnreachable(to: number): void {
    this.raft.reportUnreachable(to);
  }

  reportSnapshot(to: number, ok: boolean): void {
    this.raft.reportSnapshot(to, ok);
  }

  /** Applies the committed ConfChange entry at `index`; returns the configuration in force. */
  applyConfChange(index: number, cc: ConfChange): ConfState {
    return this.raft.applyConfChange(index, cc);
  }

  /** The state machine applied every entry up to `index` handed out so far. */
  appliedTo(index: number): void {
    this.raft.log.appliedTo(index);
  }

  /** Drops log entries up to `index`; the state machine holds them durably (index <= applied). */
  compact(index: number): void {
    this.raft.log.compact(index);
  }

  // ---- outputs ----

  hasReady(): boolean {
    const r = this.raft;
    if (this.outbox.length > 0 || r.msgs.length > 0 || r.readStates.length > 0) return true;
    if (r.log.hasUnstable() || this.hardStateChanged()) return true;
    // Held messages with no write in flight are releasable now.
    if (r.msgsAfterAppend.length > 0 && r.log.writesInFlight() === 0) return true;
    const ss = this.prevSoftState;
    if (ss.lead !== r.lead || ss.state !== r.state) return true;
    return r.log.hasNextCommitted();
  }

  /** Compared field by field: hasReady() runs every turn and should not allocate. */
  private hardStateChanged(): boolean {
    const r = this.raft;
    const p = this.prevHardState;
    return r.term !== p.term || r.vote !== p.vote || r.log.committed !== p.commit;
  }

  /** Hands out everything ready (see the contract above). */
  ready(): Ready {
    const r = this.raft;
    const prev = this.prevSoftState;
    let softState: SoftState | null = null;
    if (prev.lead !== r.lead || prev.state !== r.state) {
      softState = this.softState();
      this.prevSoftState = softState;
    }
    const persist = this.takePersist();
    const messages = this.outbox.length === 0 ? r.msgs : this.outbox.concat(r.msgs);
    this.outbox = [];
    r.msgs = [];
    const committedEntries = r.log.nextCommitted(this.committedEntriesMax, this.committedBytesMax);
    if (committedEntries.length > 0) r.reduceUncommittedBytes(committedEntries);
    const readStates = r.readStates;
    r.readStates = [];
    return { softState, persist, messages, committedEntries, readStates };
  }

  /** The next write, if anything is unstable; held messages ride on the newest write. */
  private takePersist(): PersistBatch | null {
    const r = this.raft;
    const hsChanged = this.hardStateChanged();
    if (!r.log.hasUnstable() && !hsChanged) {
      this.attachHeld();
      return null;
    }
    const hs = r.hardState();
    const seq = ++this.lastSeq;
    const { entries, snapshot } = r.log.takeUnstable(seq);
    const prev = this.prevHardState;
    this.prevHardState = hs;
    this.held.push({ seq, messages: r.msgsAfterAppend });
    r.msgsAfterAppend = [];
    // A new term or vote must reach the disk before what depends on it (etcd MustSync).
    const mustSync = entries.length > 0 || snapshot !== null || prev.term !== hs.term ||
      prev.vote !== hs.vote;
    return { seq, snapshot, entries, hardState: hsChanged ? hs : null, mustSync };
  }

  /** Held messages with nothing new to write depend only on writes already in flight. */
  private attachHeld(): void {
    const r = this.raft;
    if (r.msgsAfterAppend.length === 0) return;
    if (this.held.length > 0) {
      const last = this.held[this.held.length - 1]!;
      for (const m of r.msgsAfterAppend) last.messages.push(m);
    } else {
      // Everything they vouch for is durable already. A self-addressed one always follows a
      // write of its own (a new term and vote, or new entries), so none can be here.
      for (const m of r.msgsAfterAppend) {
        assert(m.to !== r.id, 'held self message without a write');
        this.outbox.push(m);
      }
    }
    r.msgsAfterAppend = [];
  }

  /** Storage made write `seq` durable; writes complete in seq order. */
  persisted(seq: number): void {
    const r = this.raft;
    assert(this.held.length > 0 && this.held[0]!.seq === seq, 'persisted out of order');
    r.log.persisted(seq);
    const h = this.held.shift()!;
    for (const m of h.messages) {
      if (m.to === r.id) r.step(m); // our own vote or append acknowledgement
      else if (m.term >= r.term || m.type === MessageType.PreVoteResp) this.outbox.push(m);
      // else: a response of a term we have left. It vouched for state that a later write may
      // have replaced (a new leader truncating the tail it acknowledged); its leader or
      // candidate is superseded anyway, so it is dropped rather than sent stale.
    }
  }

  /**
   * The highest index that will be committed as soon as the writes handed out so far are
   * durable here: the commit index, or, on a leader, the quorum index counting our whole log as
   * durable, if that entry is of the current term (an entry of the current term durable on a
   * quorum is committed, §5.4.2). Call right after ready(); see the contract, item 3.
   */
  commitIndexIfLocalDurable(): number {
    const r = this.raft;
    const log = r.log;
    let c = log.committed;
    if (r.state === StateType.Leader && r.trk.isVoter(r.id)) {
      const matches: number[] = [];
      for (const id of r.trk.voters) {
        matches.push(id === r.id ? log.lastIndex() : r.trk.progress.get(id)!.match);
      }
      const q = quorumIndex(matches);
      if (q > c && log.termOrZero(q) === r.term) c = q;
      // Reads from now on are served at or above it (the driver may acknowledge up to it).
      if (c > r.commitPromised) r.commitPromised = c;
    }
    assert(c <= log.lastIndex(), 'commit beyond the log');
    return c;
  }
}
