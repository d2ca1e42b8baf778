// The raft state machine (etcd-io/raft raft.go), pure and deterministic: no I/O, no clock, no
// timers, no Promises; randomness only from the injected Prng. Inputs are step(message) and
// tick(); outputs accumulate in `msgs` (send now), `msgsAfterAppend` (send once every write
// handed out so far is durable), `readStates` and the log. RawNode (raw_node.ts) turns them into
// Ready batches and owns the durability bookkeeping; drivers use RawNode, not this class.
//
// Roles: Follower, PreCandidate (pre-vote, thesis §9.6), Candidate, Leader. Messages of a higher
// term make us follow that term (except pre-votes and the lease rule below); lower-term messages
// are ignored, with the replies etcd gives to unstick a partitioned node (#8243).
//
// Deviation from etcd-io/raft, for asynchronous writes: a candidate becomes leader only once its
// own vote is durable, not merely when other voters form a quorum. Otherwise a candidate could
// lead term T, crash before (T, vote=self) reaches disk, restart at T-1, win T again (its voters
// repeat their vote for it) and write different entries under the same (index, term).
import { assert } from '../util/assert';
import { Prng } from '../util/prng';
import { applyChange, decodeConfChange } from './confchange';
import { dropped, DropReason, ProposalDroppedError } from './errors';
import { RaftLog } from './log';
import { VoteResult } from './quorum';
import { decodeRound, encodeRound, ReadOnly } from './read_only';
import { Progress, ProgressState } from './tracker/progress';
import { ProgressTracker } from './tracker/tracker';
import {
  ConfChange, ConfState, Entry, EntryType, HardState, Message, MessageType, ReadState, Snapshot,
  StateType, campaignTransferContext, emptyBytes, entryBytes, isResponseToHold, newMessage,
  voteRespType,
} from './types';

/** Defaults, after etcd's server (server/etcdserver/raft.go) where it has one. */
export const raftDefaults = {
  /** etcd MaxSizePerMsg: 1 MiB ("100MB/s ... 1MB max size is large enough"). */
  msgBytesMax: 1024 * 1024,
  /** etcd MaxInflightMsgs: 4096 / 8, sized to rafthttp's stream buffer. */
  inflightMsgsMax: 512,
  /** etcd leaves MaxInflightBytes unlimited; 128 MiB still allows ~1.3 GB/s at 100 ms RTT. */
  inflightBytesMax: 128 * 1024 * 1024,
  /** etcd raftexample's MaxUncommittedEntriesSize (etcd's server leaves it unlimited). */
  uncommittedBytesMax: 1024 * 1024 * 1024,
  /** Committed entries per Ready (concord's batchEntriesMax). */
  committedEntriesMax: 4096,
  /** etcd MaxCommittedSizePerReady defaults to MaxSizePerMsg; concord batches more per turn. */
  committedBytesMax: 64 * 1024 * 1024,
  /** Reads queued at a leader (concord readsPendingMax). */
  readIndexPendingMax: 65536,
} as const;

/**
 * Deliberate bugs for the simulator's self-test (test/sim): each breaks one safety rule, and
 * the simulator must report a violation. Never set outside tests.
 */
export interface TestBugs {
  /** Grant votes without the log up-to-date check (§5.4.1). */
  voteWithoutLogCheck?: boolean;
  /** Commit any entry a quorum holds, of any term (violates §5.4.2, Figure 8). */
  commitPriorTermByCount?: boolean;
  /** Send MsgAppResp before the appended entries are durable (thesis §3.8). */
  ackBeforeDurable?: boolean;
  /** Answer ReadIndex without confirming leadership with a heartbeat quorum (§6.4). */
  readIndexWithoutQuorum?: boolean;
  /** The leader counts its own append before it is durable (etcd #14370). */
  leaderSelfAckBeforeDurable?: boolean;
}

export interface RaftConfig {
  /** Non-zero, never reused for another member. */
  id: number;
  /** Ticks without hearing from a leader before an election: randomized in [e, 2e). */
  electionTicks: number;
  /** Ticks between a leader's heartbeats. Invariant: electionTicks > heartbeatTicks > 0. */
  heartbeatTicks: number;
  prng: Prng;
  /** Restored state; zeros and empty for a new member. */
  hardState: HardState;
  /** The log starts after this point (the last compaction or installed snapshot). */
  snapshotIndex: number;
  snapshotTerm: number;
  /** Durable entries after snapshotIndex, in order. */
  entries: Entry[];
  /** The state machine's applied index: entries up to it are never handed out again. */
  applied: number;
  /** The configuration as of `applied` (the driver keeps it with its state machine). */
  confState: ConfState;
  /** etcd --pre-vote; default on (etcd 3.5+). */
  preVote?: boolean;
  /** Leader steps down without an active quorum; enables the lease rule. Default on (etcd). */
  checkQuorum?: boolean;
  msgBytesMax?: number;
  inflightMsgsMax?: number;
  inflightBytesMax?: number;
  uncommittedBytesMax?: number;
  committedEntriesMax?: number;
  committedBytesMax?: number;
  readIndexPendingMax?: number;
  /** Followers drop proposals instead of forwarding them (etcd DisableProposalForwarding). */
  disableProposalForwarding?: boolean;
  testBugs?: TestBugs;
}

const enum CampaignType {
  PreElection = 1,
  Election = 2,
  Transfer = 3,
}

export class Raft {
  readonly id: number;
  term: number;
  vote: number;
  lead: number;
  state: StateType;
  readonly log: RaftLog;
  trk: ProgressTracker;
  /** Send at once. */
  msgs: Message[];
  /** Send once every write handed out so far is durable (etcd msgsAfterAppend). */
  msgsAfterAppend: Message[];
  readStates: ReadState[];
  /** Leader transfer target, 0 for none (thesis §3.10). */
  leadTransferee: number;
  /** No configuration change may be proposed until applied >= this (etcd pendingConfIndex). */
  pendingConfIndex: number;
  /** The configuration reflects entries up to this index (a restart, restore or conf change). */
  configIndex: number;
  /** Payload bytes of the leader's uncommitted tail (etcd uncommittedSize). */
  uncommittedBytes: number;
  /**
   * The highest index RawNode.commitIndexIfLocalDurable() reported in this term: the driver may
   * already have acknowledged entries up to it to clients, so reads must not be served below it.
   */
  commitPromised: number;
  private readonly readOnly: ReadOnly;
  /** MsgReadIndex held until the leader commits an entry of its term. */
  private pendingReadIndexMessages: Message[];
  private electionElapsed: number;
  private heartbeatElapsed: number;
  private randomizedElectionTimeout: number;
  readonly electionTicks: number;
  readonly heartbeatTicks: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  readonly msgBytesMax: number;
  readonly uncommittedBytesMax: number;
  readonly readIndexPendingMax: number;
  private readonly disableProposalForwarding: boolean;
  private readonly prng: Prng;
  readonly bugs: TestBugs;

  constructor(c: RaftConfig) {
    validateConfig(c);
    this.id = c.id;
    this.term = 0;
    this.vote = 0;
    this.lead = 0;
    this.state = StateType.Follower;
    this.log = new RaftLog(c.snapshotIndex, c.snapshotTerm, c.entries, c.hardState.commit,
      c.applied);
    this.trk = new ProgressTracker(c.inflightMsgsMax ?? raftDefaults.inflightMsgsMax,
      c.inflightBytesMax ?? raftDefaults.inflightBytesMax);
    this.msgs = [];
    this.msgsAfterAppend = [];
    this.readStates = [];
    this.leadTransferee = 0;
    this.pendingConfIndex = 0;
    this.configIndex = c.applied;
    this.uncommittedBytes = 0;
    this.commitPromised = 0;
    this.readOnly = new ReadOnly();
    this.pendingReadIndexMessages = [];
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = 0;
    this.electionTicks = c.electionTicks;
    this.heartbeatTicks = c.heartbeatTicks;
    this.preVote = c.preVote ?? true;
    this.checkQuorum = c.checkQuorum ?? true;
    this.msgBytesMax = c.msgBytesMax ?? raftDefaults.msgBytesMax;
    this.uncommittedBytesMax = c.uncommittedBytesMax ?? raftDefaults.uncommittedBytesMax;
    this.readIndexPendingMax = c.readIndexPendingMax ?? raftDefaults.readIndexPendingMax;
    this.disableProposalForwarding = c.disableProposalForwarding ?? false;
    this.prng = c.prng;
    this.bugs = c.testBugs ?? {};
    this.switchToConfig(c.confState);
    this.term = c.hardState.term;
    this.vote = c.hardState.vote;
    this.becomeFollower(this.term, 0);
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  isLearner(): boolean {
    return this.trk.isLearner(this.id);
  }

  /** May campaign: a voter with no snapshot pending (etcd promotable). */
  promotable(): boolean {
    return this.trk.isVoter(this.id) && this.log.pendingSnapshot === null;
  }

  // ---- sending ----

  /** Queues `m` (term filled in as etcd raft.send does); vote/append responses are held. */
  send(m: Message): void {
    if (m.from === 0) m.from = this.id;
    const t = m.type;
    if (t === MessageType.Vote || t === MessageType.VoteResp || t === MessageType.PreVote ||
      t === MessageType.PreVoteResp) {
      assert(m.term !== 0, 'campaign messages carry their term');
    } else {
      assert(m.term === 0, 'term set by send');
      // Proposals and read requests are forwarded as local messages, without a term.
      if (t !== MessageType.Prop && t !== MessageType.ReadIndex) m.term = this.term;
    }
    if (isResponseToHold(t) && !(this.bugs.ackBeforeDurable === true && m.to !== this.id)) {
      this.msgsAfterAppend.push(m);
    } else {
      assert(m.to !== this.id, 'message to self');
      this.msgs.push(m);
    }
  }

  /** Sends an append (entries if any, and the commit index) to `to` (etcd sendAppend). */
  sendAppend(to: number): void {
    this.maybeSendAppend(to, true);
  }

  /** etcd maybeSendAppend: false when nothing was sent. */
  maybeSendAppend(to: number, sendIfEmpty: boolean): boolean {
    const pr = this.trk.progress.get(to)!;
    if (pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    // The entry before next was compacted away: only a snapshot can catch the follower up.
    if (!this.log.hasTerm(prevIndex)) return this.maybeSendSnapshot(to, pr);
    let ents: Entry[] = [];
    // A full window in Replicate sends only an empty MsgApp, to learn where the follower is.
    if (pr.state !== ProgressState.Replicate || !pr.inflights.full()) {
      ents = this.log.entriesBetween(pr.next, this.log.lastIndex(), this.msgBytesMax, Infinity);
    }
    if (ents.length === 0 && !sendIfEmpty) return false;
    const m = newMessage(MessageType.App, to, this.id, 0);
    m.index = prevIndex;
    m.logTerm = this.log.term(prevIndex);
    m.entries = ents;
    m.commit = this.log.committed;
    this.send(m);
    let bytes = 0;
    for (const e of ents) bytes += entryBytes(e);
    pr.sentEntries(ents.length, bytes);
    return true;
  }

  /**
   * Sends a snapshot of the state machine at the applied index, to recently active followers
   * only (etcd maybeSendSnapshot). The data is the driver's: it sends its state at that index or
   * later, setting the metadata to match (etcd createMergedSnapshotMessage).
   */
  private maybeSendSnapshot(to: number, pr: Progress): boolean {
    if (!pr.recentActive) return false;
    const index = Math.max(this.log.applied, this.configIndex);
    assert(index <= this.log.committed, 'snapshot beyond commit');
    const snapshot: Snapshot = {
      metadata: { index, term: this.log.term(index), confState: this.trk.confState() },
      data: emptyBytes,
    };
    pr.becomeSnapshot(index);
    const m = newMessage(MessageType.Snap, to, this.id, 0);
    m.snapshot = snapshot;
    this.send(m);
    return true;
  }

  private sendHeartbeat(to: number, context: Uint8Array): void {
    const pr = this.trk.progress.get(to)!;
    // A follower may not hold everything we committed: never move its commit past its match.
    const m = newMessage(MessageType.Heartbeat, to, this.id, 0);
    m.commit = Math.min(pr.match, this.log.committed);
    m.context = context;
    this.send(m);
  }

  bcastAppend(): void {
    for (const id of this.trk.members()) if (id !== this.id) this.sendAppend(id);
  }

  private bcastHeartbeat(): void {
    const round = this.readOnly.lastRound();
    const ctx = round === 0 ? emptyBytes : encodeRound(round);
    for (const id of this.trk.members()) if (id !== this.id) this.sendHeartbeat(id, ctx);
  }

  // ---- state transitions ----

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = 0;
    }
    this.lead = 0;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.leadTransferee = 0;
    this.trk.resetVotes();
    const next = this.log.lastIndex() + 1;
    for (const id of this.trk.members()) {
      const pr = this.trk.newProgress(next, this.trk.isLearner(id));
      // Our own match is what our storage acknowledged, never the unstable tail.
      if (id === this.id) pr.match = this.log.stableIndex;
      this.trk.progress.set(id, pr);
    }
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    this.commitPromised = 0;
    this.readOnly.reset();
    this.pendingReadIndexMessages = [];
  }

  becomeFollower(term: number, lead: number): void {
    this.reset(term);
    this.lead = lead;
    this.state = StateType.Follower;
  }

  private becomeCandidate(): void {
    assert(this.state !== StateType.Leader, 'leader -> candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.state = StateType.Candidate;
  }

  /** Pre-candidates keep their term and vote and forget their leader (etcd PR #8334). */
  private becomePreCandidate(): void {
    assert(this.state !== StateType.Leader, 'leader -> pre-candidate');
    this.trk.resetVotes();
    this.lead = 0;
    this.state = StateType.PreCandidate;
  }

  private becomeLeader(): void {
    assert(this.state === StateType.Candidate, 'leader from candidate only');
    this.reset(this.term);
    this.lead = this.id;
    this.state = StateType.Leader;
    const pr = this.trk.progress.get(this.id)!;
    pr.becomeReplicate();
    pr.recentActive = true;
    // Any entry in the log may be an unapplied configuration change: wait for all of them.
    this.pendingConfIndex = this.log.lastIndex();
    // An empty entry of the new term commits the earlier terms' entries (§5.4.2, §8).
    const ok = this.appendEntry([{ term: 0, index: 0, type: EntryType.Normal, data: emptyBytes }]);
    assert(ok, 'the empty entry of a new leader is never refused');
  }

  private resetRandomizedElectionTimeout(): void {
    this.randomizedElectionTimeout = this.electionTicks + this.prng.int(this.electionTicks);
  }

  // ---- ticks ----

  tick(): void {
    if (this.state === StateType.Leader) this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(this.preVote ? CampaignType.PreElection : CampaignType.Election);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTicks) {
      this.electionElapsed = 0;
      if (this.checkQuorum) this.stepCheckQuorum();
      // A transfer that did not finish within an election timeout is abandoned (thesis §3.10).
      if (this.state === StateType.Leader && this.leadTransferee !== 0) this.leadTransferee = 0;
    }
    if (this.state !== StateType.Leader) return;
    if (this.heartbeatElapsed >= this.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  private stepCheckQuorum(): void {
    if (!this.trk.quorumActive()) {
      this.becomeFollower(this.term, 0);
      return;
    }
    for (const [id, pr] of this.trk.progress) if (id !== this.id) pr.recentActive = false;
  }

  // ---- elections ----

  /** Starts an election if allowed (etcd hup). */
  hup(t: CampaignType = CampaignType.PreElection): void {
    if (this.state === StateType.Leader) return;
    if (!this.promotable()) return;
    // A configuration change committed but not applied could change who may vote.
    if (this.log.hasUnappliedConfChange()) return;
    this.campaign(t === CampaignType.PreElection && !this.preVote ? CampaignType.Election : t);
  }

  campaignNow(): void {
    this.hup(this.preVote ? CampaignType.PreElection : CampaignType.Election);
  }

  private campaign(t: CampaignType): void {
    let voteType: MessageType;
    let term: number;
    if (t === CampaignType.PreElection) {
      this.becomePreCandidate();
      voteType = MessageType.PreVote;
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      voteType = MessageType.Vote;
      term = this.term;
    }
    for (const id of this.trk.voters) {
      if (id === this.id) {
        if (t === CampaignType.PreElection) {
          // A pre-vote changes nothing durable: count ours at once.
          if (this.poll(id, true) === VoteResult.Won) this.campaign(CampaignType.Election);
          if (this.state !== StateType.PreCandidate) return;
        } else {
          // Our own vote counts once (term, vote) is durable: it comes back after the write.
          this.send(voteMessage(MessageType.VoteResp, id, term));
        }
        continue;
      }
      const m = voteMessage(voteType, id, term);
      m.index = this.log.lastIndex();
      m.logTerm = this.log.lastTerm();
      if (t === CampaignType.Transfer) m.context = campaignTransferContext;
      this.send(m);
    }
  }

  private poll(id: number, granted: boolean): VoteResult {
    this.trk.recordVote(id, granted);
    return this.trk.tallyVotes();
  }

  private handleVoteRequest(m: Message): void {
    const preVote = m.type === MessageType.PreVote;
    // A repeat of our vote, or no vote and no leader this term, or a pre-vote for a later term.
    const canVote = this.vote === m.from || (this.vote === 0 && this.lead === 0) ||
      (preVote && m.term > this.term);
    const upToDate = this.bugs.voteWithoutLogCheck === true ||
      this.log.isUpToDate(m.index, m.logTerm);
    // Learners vote when asked: a promoted learner may not know it yet (etcd raft.go, #7625).
    if (canVote && upToDate) {
      // The reply carries the request's term: a pre-vote's term is ahead of ours.
      this.send(voteMessage(voteRespType(m.type), m.from, m.term));
      if (!preVote) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      const r = voteMessage(voteRespType(m.type), m.from, this.term);
      r.reject = true;
      this.send(r);
    }
  }

  // ---- step ----

  /** Processes one message; returns an error only for a refused local request. */
  step(m: Message): ProposalDroppedError | null {
    if (m.term > this.term) {
      if (!this.stepHigherTerm(m)) return null;
    } else if (m.term !== 0 && m.term < this.term) {
      this.stepLowerTerm(m);
      return null;
    }
    if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
      this.handleVoteRequest(m);
      return null;
    }
    switch (this.state) {
      case StateType.Leader: return this.stepLeader(m);
      case StateType.Candidate:
      case StateType.PreCandidate: return this.stepCandidate(m);
      case StateType.Follower: return this.stepFollower(m);
    }
  }

  /** etcd Step, m.Term > r.Term. Returns false when the message is to be ignored. */
  private stepHigherTerm(m: Message): boolean {
    if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
      const force = m.context.length === 1 && m.context[0] === campaignTransferContext[0];
      // Lease rule (thesis §4.2.3): within an election timeout of hearing from a leader, a vote
      // request neither moves our term nor gets a vote, unless it is a transfer campaign.
      const inLease = this.checkQuorum && this.lead !== 0 &&
        this.electionElapsed < this.electionTicks;
      if (!force && inLease) return false;
    }
    if (m.type === MessageType.PreVote) return true; // never change term for a pre-vote
    // A granted pre-vote carries the term we will campaign for; a rejection moves us there.
    if (m.type === MessageType.PreVoteResp && !m.reject) return true;
    const fromLeader = m.type === MessageType.App || m.type === MessageType.Heartbeat ||
      m.type === MessageType.Snap;
    this.becomeFollower(m.term, fromLeader ? m.from : 0);
    return true;
  }

  /** etcd Step, m.Term < r.Term: mostly ignored, with two replies that unstick peers. */
  private stepLowerTerm(m: Message): void {
    if (m.type === MessageType.Heartbeat || m.type === MessageType.App) {
      // A leader of an old term: tell it our term (it steps down), else it may never learn it.
      // Deviation: etcd answers only with check-quorum or pre-vote on, counting on our own
      // campaign to spread the term otherwise; but a node that believes it is a learner (a
      // promotion it has not applied) never campaigns, and the simulator found that cluster
      // stuck: a leader sending to a higher-term voter forever. The raft paper always answers.
      this.send(newMessage(MessageType.AppResp, m.from, this.id, 0));
    } else if (m.type === MessageType.PreVote || m.type === MessageType.Vote) {
      // Reject explicitly with our term, or a candidate of a lower term could wait forever
      // (etcd #8243 for pre-votes). Deviation: etcd ignores a lower-term MsgVote; the raft paper
      // answers it with the current term, and so do we. The simulator found the case: without
      // pre-vote, a voter lagging in applying conf changes campaigned in its stale
      // configuration (which left the up-to-date candidate out), so its term kept ahead of the
      // only candidate that could win, which never heard of it.
      const r = voteMessage(voteRespType(m.type), m.from, this.term);
      r.reject = true;
      this.send(r);
    }
  }

  private stepLeader(m: Message): ProposalDroppedError | null {
    switch (m.type) {
      case MessageType.Prop: return this.leaderPropose(m);
      case MessageType.ReadIndex: return this.leaderReadIndex(m);
      default: break;
    }
    const pr = this.trk.progress.get(m.from);
    if (pr === undefined) return null; // not a member (any more)
    switch (m.type) {
      case MessageType.AppResp: this.leaderAppResp(m, pr); break;
      case MessageType.HeartbeatResp: this.leaderHeartbeatResp(m, pr); break;
      case MessageType.TransferLeader: this.leaderTransfer(m.from, pr); break;
      default: break;
    }
    return null;
  }

  private leaderPropose(m: Message): ProposalDroppedError | null {
    assert(m.entries.length > 0, 'empty proposal');
    // Removed while leading: the step-down happens when the change applies; refuse meanwhile.
    if (!this.trk.progress.has(this.id)) return dropped(DropReason.NotInConfig);
    if (this.leadTransferee !== 0) return dropped(DropReason.LeaderTransferring);
    for (let i = 0; i < m.entries.length; i++) {
      const e = m.entries[i]!;
      if (e.type !== EntryType.ConfChange) continue;
      const err = this.checkConfChange(decodeConfChange(e.data));
      if (err !== null) return err;
      this.pendingConfIndex = this.log.lastIndex() + i + 1;
    }
    if (!this.appendEntry(m.entries)) return dropped(DropReason.UncommittedBytesMax);
    this.bcastAppend();
    return null;
  }

  /** Whether a configuration change may enter the log now. */
  private checkConfChange(cc: ConfChange): ProposalDroppedError | null {
    // One change at a time: the previous one must be applied (etcd pendingConfIndex).
    if (this.pendingConfIndex > this.log.applied) return dropped(DropReason.ConfChangePending);
    // The fix for the 2015 single-server change bug (Ongaro, raft-dev): no configuration entry
    // before an entry of this leader's term is committed.
    if (!this.committedEntryInCurrentTerm()) return dropped(DropReason.ConfChangeTooEarly);
    if (applyChange(this.trk.confState(), cc) === null) {
      return dropped(DropReason.ConfChangeInvalid);
    }
    return null;
  }

  /** Appends entries of our term (etcd appendEntry); false if the uncommitted limit refuses. */
  appendEntry(ents: Entry[]): boolean {
    const li = this.log.lastIndex();
    const out: Entry[] = [];
    for (let i = 0; i < ents.length; i++) {
      const e = ents[i]!;
      out.push({ term: this.term, index: li + 1 + i, type: e.type, data: e.data });
    }
    if (!this.increaseUncommittedBytes(out)) return false;
    this.log.append(out);
    const last = this.log.lastIndex();
    if (this.bugs.leaderSelfAckBeforeDurable === true) {
      this.trk.progress.get(this.id)!.maybeUpdate(last);
      this.maybeCommit();
      return true;
    }
    // Our own acknowledgement comes back once the entries are durable (thesis §10.2.1: the
    // leader writes in parallel with replicating, but counts itself only when durable).
    // Proposals between two Readys share one: the newest index covers the earlier ones.
    const held = this.msgsAfterAppend;
    const prev = held.length > 0 ? held[held.length - 1]! : null;
    if (prev !== null && prev.type === MessageType.AppResp && prev.to === this.id &&
      prev.term === this.term) {
      assert(prev.index < last, 'own acknowledgements increase');
      prev.index = last;
      return true;
    }
    const ack = newMessage(MessageType.AppResp, this.id, this.id, 0);
    ack.index = last;
    this.send(ack);
    return true;
  }

  private increaseUncommittedBytes(ents: Entry[]): boolean {
    let s = 0;
    for (const e of ents) s += e.data.length;
    // An empty tail accepts any proposal; empty entries are always accepted (etcd).
    const over = this.uncommittedBytes + s > this.uncommittedBytesMax;
    if (this.uncommittedBytes > 0 && s > 0 && over) return false;
    this.uncommittedBytes += s;
    return true;
  }

  reduceUncommittedBytes(ents: Entry[]): void {
    let s = 0;
    for (const e of ents) s += e.data.length;
    // The estimate may be low (entries of an earlier term), never high: saturate at 0.
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes - s);
  }

  /** Advances the commit index from the quorum's durable matches (etcd maybeCommit). */
  maybeCommit(): boolean {
    const mci = this.trk.committed();
    if (mci <= this.log.committed) return false;
    // Only entries of our term commit by counting replicas (§5.4.2); earlier ones follow them.
    if (this.bugs.commitPriorTermByCount !== true && this.log.termOrZero(mci) !== this.term) {
      return false;
    }
    this.log.commitTo(mci);
    return true;
  }

  committedEntryInCurrentTerm(): boolean {
    return this.log.termOrZero(this.log.committed) === this.term;
  }

  private leaderAppResp(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      this.leaderAppReject(m, pr);
      return;
    }
    if (m.from === this.id) {
      assert(m.index <= this.log.stableIndex, 'self ack of a non-durable entry');
    }
    // A probing follower that acks its match again goes back to replicating.
    if (!pr.maybeUpdate(m.index) && !(pr.match === m.index && pr.state === ProgressState.Probe)) {
      return;
    }
    if (pr.state === ProgressState.Probe) {
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Snapshot && pr.match + 1 >= this.log.firstIndex()) {
      // The follower installed a snapshot (any index that reaches our log will do).
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Replicate) {
      pr.inflights.freeLE(m.index);
    }
    // A new commit index goes to everyone at once (else they learn it with the next heartbeat).
    if (this.maybeCommit()) {
      this.releasePendingReadIndexMessages();
      this.bcastAppend();
    }
    if (m.from !== this.id) {
      while (this.maybeSendAppend(m.from, false)) { /* send while the window allows */ }
    }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.send(newMessage(MessageType.TimeoutNow, m.from, this.id, 0));
    }
  }

  /** Fast backtracking with the follower's (index, term) hint (etcd stepLeader MsgAppResp). */
  private leaderAppReject(m: Message, pr: Progress): void {
    let nextProbe = m.rejectHint;
    if (m.logTerm > 0) {
      // Skip every index of ours whose term is above the follower's term at the hint: they
      // cannot match. At most one probe per term of our log.
      nextProbe = this.log.findConflictByTerm(m.rejectHint, m.logTerm)[0];
    }
    if (pr.maybeDecrTo(m.index, nextProbe)) {
      if (pr.state === ProgressState.Replicate) pr.becomeProbe();
      this.sendAppend(m.from);
    }
  }

  private leaderHeartbeatResp(m: Message, pr: Progress): void {
    pr.recentActive = true;
    pr.msgAppFlowPaused = false;
    // Probe again or catch up; with a full window this is the empty MsgApp that unsticks it.
    if (pr.match < this.log.lastIndex() || pr.state === ProgressState.Probe) {
      this.sendAppend(m.from);
    }
    const round = decodeRound(m.context);
    if (round === 0) return;
    this.readOnly.recvAck(m.from, round);
    for (const rs of this.readOnly.release(this.trk, this.id)) {
      this.respondReadIndex(rs.from, rs.context, rs.index);
    }
  }

  private leaderTransfer(transferee: number, pr: Progress): void {
    if (pr.isLearner) return; // only a voter can lead
    if (this.leadTransferee !== 0) {
      if (this.leadTransferee === transferee) return;
      this.leadTransferee = 0; // a new target replaces the old one
    }
    if (transferee === this.id) return;
    // The transfer must finish within an election timeout (tickHeartbeat aborts it).
    this.electionElapsed = 0;
    this.leadTransferee = transferee;
    if (pr.match === this.log.lastIndex()) {
      this.send(newMessage(MessageType.TimeoutNow, transferee, this.id, 0));
    } else {
      this.sendAppend(transferee);
    }
  }

  /** The transport could not reach `to` (etcd MsgUnreachable). */
  reportUnreachable(to: number): void {
    if (this.state !== StateType.Leader) return;
    const pr = this.trk.progress.get(to);
    // During optimistic replication a lost connection very likely lost an append.
    if (pr !== undefined && pr.state === ProgressState.Replicate) pr.becomeProbe();
  }

  reportSnapshot(to: number, ok: boolean): void {
    if (this.state !== StateType.Leader) return;
    const pr = this.trk.progress.get(to);
    if (pr === undefined || pr.state !== ProgressState.Snapshot) return;
    // On failure probe from match again (the snapshot never arrived), else after the snapshot.
    if (!ok) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    // Wait for the follower's answer (success) or a heartbeat interval (failure) before sending.
    pr.msgAppFlowPaused = true;
  }

  // ---- reads ----

  private leaderReadIndex(m: Message): ProposalDroppedError | null {
    const pending = this.readOnly.pendingCount() + this.pendingReadIndexMessages.length;
    if (pending >= this.readIndexPendingMax) {
      return dropped(DropReason.ReadIndexPendingMax);
    }
    // Until an entry of our term commits, our commit index may be behind the last leader's.
    if (!this.committedEntryInCurrentTerm()) {
      this.pendingReadIndexMessages.push(m);
      return null;
    }
    this.readIndexAtCommit(m);
    return null;
  }

  private readIndexAtCommit(m: Message): void {
    // A write the driver acknowledged early (commitIndexIfLocalDurable) must be visible too.
    const index = Math.max(this.log.committed, this.commitPromised);
    const singleVoter = this.trk.isSingleton() && this.trk.isVoter(this.id);
    if (singleVoter || this.bugs.readIndexWithoutQuorum === true) {
      this.respondReadIndex(m.from, m.context, index);
      return;
    }
    const round = this.readOnly.add(m.from, m.context, index);
    const ctx = encodeRound(round);
    for (const id of this.trk.members()) if (id !== this.id) this.sendHeartbeat(id, ctx);
  }

  private releasePendingReadIndexMessages(): void {
    if (this.pendingReadIndexMessages.length === 0 || !this.committedEntryInCurrentTerm()) return;
    const ms = this.pendingReadIndexMessages;
    this.pendingReadIndexMessages = [];
    for (const m of ms) this.readIndexAtCommit(m);
  }

  private respondReadIndex(from: number, context: Uint8Array, index: number): void {
    if (from === this.id) {
      this.readStates.push({ index, context });
      return;
    }
    const r = newMessage(MessageType.ReadIndexResp, from, this.id, 0);
    r.index = index;
    r.context = context;
    this.send(r);
  }

  // ---- candidates and followers ----

  private stepCandidate(m: Message): ProposalDroppedError | null {
    const myVoteResp = this.state === StateType.PreCandidate ? MessageType.PreVoteResp :
      MessageType.VoteResp;
    switch (m.type) {
      case MessageType.Prop:
      case MessageType.ReadIndex:
      case MessageType.TransferLeader: return dropped(DropReason.NoLeader);
      case MessageType.App:
      case MessageType.Heartbeat:
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from); // m.term === this.term: the term's leader exists
        return this.stepFollower(m);
      case myVoteResp: this.candidateVoteResp(m); return null;
      default: return null; // MsgTimeoutNow and stale responses
    }
  }

  private candidateVoteResp(m: Message): void {
    const res = this.poll(m.from, !m.reject);
    if (res === VoteResult.Lost) {
      this.becomeFollower(this.term, 0);
      return;
    }
    if (res !== VoteResult.Won) return;
    if (this.state === StateType.PreCandidate) {
      this.campaign(CampaignType.Election);
      return;
    }
    // Lead only once our own vote is durable (see the file comment).
    if (this.trk.votes.get(this.id) !== true) return;
    this.becomeLeader();
    this.bcastAppend();
  }

  private stepFollower(m: Message): ProposalDroppedError | null {
    switch (m.type) {
      case MessageType.Prop:
        if (this.lead === 0) return dropped(DropReason.NoLeader);
        if (this.disableProposalForwarding) return dropped(DropReason.NotLeader);
        return this.forward(m);
      case MessageType.ReadIndex:
      case MessageType.TransferLeader:
        if (this.lead === 0) return dropped(DropReason.NoLeader);
        return this.forward(m);
      case MessageType.App: this.heardFromLeader(m); this.handleAppendEntries(m); return null;
      case MessageType.Heartbeat: this.heardFromLeader(m); this.handleHeartbeat(m); return null;
      case MessageType.Snap: this.heardFromLeader(m); this.handleSnapshot(m); return null;
      // A transfer campaign skips pre-vote and overrides the lease rule.
      case MessageType.TimeoutNow: this.hup(CampaignType.Transfer); return null;
      case MessageType.ReadIndexResp:
        this.readStates.push({ index: m.index, context: m.context });
        return null;
      default: return null;
    }
  }

  private forward(m: Message): null {
    // A forwarded request keeps its origin (a transfer: its target, as etcd's MsgTransferLeader).
    const f = newMessage(m.type, this.lead, m.from, 0);
    f.entries = m.entries;
    f.context = m.context;
    this.send(f);
    return null;
  }

  private heardFromLeader(m: Message): void {
    this.electionElapsed = 0;
    this.lead = m.from;
  }

  private handleAppendEntries(m: Message): void {
    const resp = newMessage(MessageType.AppResp, m.from, this.id, 0);
    if (m.index < this.log.committed) {
      resp.index = this.log.committed;
      this.send(resp);
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew >= 0) {
      resp.index = lastNew;
      this.send(resp);
      return;
    }
    // Mismatch at m.index: hint the largest (index, term) of ours with term <= m.logTerm, so the
    // leader skips our whole divergent tail of later terms at once.
    const [hintIndex, hintTerm] =
      this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    resp.index = m.index;
    resp.reject = true;
    resp.rejectHint = hintIndex;
    resp.logTerm = hintTerm;
    this.send(resp);
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(m.commit);
    const r = newMessage(MessageType.HeartbeatResp, m.from, this.id, 0);
    r.context = m.context;
    this.send(r);
  }

  private handleSnapshot(m: Message): void {
    assert(m.snapshot !== null, 'MsgSnap without a snapshot');
    const resp = newMessage(MessageType.AppResp, m.from, this.id, 0);
    resp.index = this.restore(m.snapshot) ? this.log.lastIndex() : this.log.committed;
    this.send(resp);
  }

  /** Installs a leader's snapshot unless we already hold its state (etcd restore). */
  private restore(s: Snapshot): boolean {
    const md = s.metadata;
    if (md.index <= this.log.committed) return false;
    assert(this.state === StateType.Follower, 'restore as non-follower');
    // Defense in depth (etcd): a snapshot whose configuration lacks us is a bug elsewhere.
    if (!md.confState.voters.includes(this.id) && !md.confState.learners.includes(this.id)) {
      return false;
    }
    // We hold the snapshot's last entry: our log matches up to it, just move the commit index.
    if (this.log.matchTerm(md.index, md.term)) {
      this.log.commitTo(md.index);
      return false;
    }
    this.log.restore(s);
    this.configIndex = md.index;
    this.switchToConfig(md.confState);
    return true;
  }

  // ---- membership ----

  /**
   * Applies a committed configuration change found at log index `index` (etcd ApplyConfChange).
   * A change the configuration already reflects (a snapshot or restart at or after `index`) is
   * skipped. Returns the configuration now in force.
   */
  applyConfChange(index: number, cc: ConfChange): ConfState {
    if (index <= this.configIndex) return this.trk.confState();
    assert(index <= this.log.applying, 'conf change applied before it was handed out');
    const cs = applyChange(this.trk.confState(), cc);
    // Checked at proposal time against this same configuration (one change at a time).
    assert(cs !== null, 'conf change leaves no voter');
    this.configIndex = index;
    this.switchToConfig(cs);
    return this.trk.confState();
  }

  /** Puts a configuration in force (etcd switchToConfig). */
  private switchToConfig(cs: ConfState): void {
    this.trk.setConfig(cs);
    const next = this.log.lastIndex() + 1;
    for (const id of this.trk.members()) {
      let pr = this.trk.progress.get(id);
      if (pr === undefined) {
        // A new member: probe from our last entry; count it active so check-quorum waits for it.
        pr = this.trk.newProgress(Math.max(next - 1, 1), this.trk.isLearner(id));
        pr.recentActive = true;
        this.trk.progress.set(id, pr);
      }
      pr.isLearner = this.trk.isLearner(id);
    }
    if (this.state !== StateType.Leader) return;
    if (!this.trk.isVoter(this.id)) {
      // Removed or demoted while leading: step down (etcd StepDownOnRemoval).
      this.becomeFollower(this.term, 0);
      return;
    }
    if (this.maybeCommit()) {
      this.releasePendingReadIndexMessages();
      this.bcastAppend();
    } else {
      for (const id of this.trk.members()) if (id !== this.id) this.maybeSendAppend(id, false);
    }
    // A transfer to a member that left or is now a learner cannot finish (etcd #11326).
    if (this.leadTransferee !== 0 && !this.trk.isVoter(this.leadTransferee)) {
      this.leadTransferee = 0;
    }
  }
}

function voteMessage(type: MessageType, to: number, term: number): Message {
  return newMessage(type, to, 0, term);
}

function validateConfig(c: RaftConfig): void {
  assert(Number.isSafeInteger(c.id) && c.id > 0, 'raft id must be a positive safe integer');
  assert(Number.isSafeInteger(c.heartbeatTicks) && c.heartbeatTicks > 0, 'heartbeat ticks > 0');
  assert(Number.isSafeInteger(c.electionTicks) && c.electionTicks > c.heartbeatTicks,
    'election ticks > heartbeat ticks');
  const msgBytes = c.msgBytesMax ?? raftDefaults.msgBytesMax;
  assert(msgBytes > 0, 'msgBytesMax > 0');
  assert((c.inflightMsgsMax ?? raftDefaults.inflightMsgsMax) > 0, 'inflightMsgsMax > 0');
  // A window smaller than one message could never send a full message.
  const d = raftDefaults;
  assert((c.inflightBytesMax ?? d.inflightBytesMax) >= msgBytes, 'inflightBytesMax >= msgBytesMax');
  assert((c.uncommittedBytesMax ?? d.uncommittedBytesMax) > 0, 'uncommittedBytesMax > 0');
  assert((c.committedEntriesMax ?? d.committedEntriesMax) > 0, 'committedEntriesMax > 0');
  assert((c.committedBytesMax ?? raftDefaults.committedBytesMax) > 0, 'committedBytesMax > 0');
  assert((c.readIndexPendingMax ?? d.readIndexPendingMax) > 0, 'readIndexPendingMax > 0');
  const hs = c.hardState;
  assert(Number.isSafeInteger(hs.term) && hs.term >= 0, 'hard state term');
  assert(Number.isSafeInteger(hs.vote) && hs.vote >= 0, 'hard state vote');
  // NB: entries (or a snapshot) of a term above hs.term are possible: a torn write may keep
  // entries written before the hard state of the same batch. That is safe (the leader of that
  // term holds a quorum of durable votes), so it is not asserted against.
}
