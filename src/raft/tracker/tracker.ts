// The leader's view of the configuration and of every member's progress, plus election votes
// (etcd-io/raft tracker/tracker.go, for a single majority configuration).
import { assert } from '../../util/assert';
import { quorumIndex, VoteResult, voteResult } from '../quorum';
import { ConfState } from '../types';
import { Inflights } from './inflights';
import { Progress } from './progress';

export class ProgressTracker {
  /** Sorted ascending. Invariant: voters and learners are disjoint. */
  voters: number[];
  /** Sorted ascending. */
  learners: number[];
  /** One entry per voter and learner (the local node included when it is a member). */
  readonly progress: Map<number, Progress>;
  /** Votes received in the current (pre-)election: id -> granted. */
  readonly votes: Map<number, boolean>;
  readonly inflightMsgsMax: number;
  readonly inflightBytesMax: number;
  /** Reused by committed() and quorumOf(): no allocation per acknowledgement. */
  private readonly scratch: number[];
  /** voters then learners, rebuilt by setConfig (members() is called per broadcast). */
  private memberIds: number[];

  constructor(inflightMsgsMax: number, inflightBytesMax: number) {
    this.voters = [];
    this.learners = [];
    this.progress = new Map();
    this.votes = new Map();
    this.inflightMsgsMax = inflightMsgsMax;
    this.inflightBytesMax = inflightBytesMax;
    this.scratch = [];
    this.memberIds = [];
  }

  confState(): ConfState {
    return { voters: this.voters.slice(), learners: this.learners.slice() };
  }

  isVoter(id: number): boolean {
    return this.voters.includes(id);
  }

  isLearner(id: number): boolean {
    return this.learners.includes(id);
  }

  isSingleton(): boolean {
    return this.voters.length === 1;
  }

  /** Every member, voters first, each group ascending: a deterministic broadcast order. */
  members(): readonly number[] {
    return this.memberIds;
  }

  newProgress(next: number, isLearner: boolean): Progress {
    const inflights = new Inflights(this.inflightMsgsMax, this.inflightBytesMax);
    return new Progress(next, inflights, isLearner);
  }

  /** The highest index durable on a quorum of voters (etcd Committed). */
  committed(): number {
    const s = this.scratch;
    s.length = 0;
    for (const id of this.voters) s.push(this.progress.get(id)!.match);
    return quorumIndex(s);
  }

  /** The quorum-th largest of per-voter values given by `valueOf` (0 for a voter not in it). */
  quorumOf(values: Map<number, number>): number {
    const s = this.scratch;
    s.length = 0;
    for (const id of this.voters) s.push(values.get(id) ?? 0);
    return quorumIndex(s);
  }

  /** A quorum of voters was heard from in the last election timeout (etcd QuorumActive). */
  quorumActive(): boolean {
    let active = 0;
    for (const id of this.voters) if (this.progress.get(id)!.recentActive) active++;
    return voteResult(this.voters.length, active, this.voters.length - active) === VoteResult.Won;
  }

  resetVotes(): void {
    this.votes.clear();
  }

  /** The first answer of each voter counts; repeats and non-voters are ignored. */
  recordVote(id: number, granted: boolean): void {
    if (!this.votes.has(id)) this.votes.set(id, granted);
  }

  tallyVotes(): VoteResult {
    let granted = 0;
    let rejected = 0;
    for (const id of this.voters) {
      const v = this.votes.get(id);
      if (v === true) granted++;
      else if (v === false) rejected++;
    }
    return voteResult(this.voters.length, granted, rejected);
  }

  /** Replaces the configuration; progress for members that left is dropped. */
  setConfig(cs: ConfState): void {
    assert(isSortedUnique(cs.voters) && isSortedUnique(cs.learners), 'conf state sorted');
    for (const id of cs.learners) assert(!cs.voters.includes(id), 'voter and learner at once');
    this.voters = cs.voters.slice();
    this.learners = cs.learners.slice();
    this.memberIds = this.voters.concat(this.learners);
    for (const id of [...this.progress.keys()]) {
      if (!this.voters.includes(id) && !this.learners.includes(id)) this.progress.delete(id);
    }
  }
}

function isSortedUnique(ids: number[]): boolean {
  for (let i = 0; i < ids.length; i++) {
    if (!Number.isSafeInteger(ids[i]) || ids[i]! <= 0) return false;
    if (i > 0 && ids[i]! <= ids[i - 1]!) return false;
  }
  return true;
}
