// Majority quorums (etcd-io/raft quorum/majority.go), for one configuration: concord uses
// single-server membership changes only, so there is no joint (two-majority) quorum.
import { assert } from '../util/assert';

export const enum VoteResult {
  /** Neither enough grants nor enough rejections yet. */
  Pending = 1,
  Lost = 2,
  Won = 3,
}

/** Votes needed out of `voterCount`: a strict majority. */
export function quorumSize(voterCount: number): number {
  assert(voterCount > 0, 'quorum of an empty configuration');
  return Math.floor(voterCount / 2) + 1;
}

/**
 * The largest index that a quorum of voters has reached, given each voter's index in `indexes`
 * (sorted in place, descending). etcd majority.go CommittedIndex: the quorum-th largest value.
 * Example: [5, 3, 9] -> sorted [9, 5, 3], quorum 2 -> 5.
 */
export function quorumIndex(indexes: number[]): number {
  assert(indexes.length > 0, 'quorum index of no voters');
  indexes.sort(descending);
  return indexes[quorumSize(indexes.length) - 1]!;
}

function descending(a: number, b: number): number {
  return b - a;
}

/** etcd majority.go VoteResult: won on a majority of grants, lost once a majority is impossible. */
export function voteResult(voterCount: number, granted: number, rejected: number): VoteResult {
  assert(granted >= 0 && rejected >= 0, 'vote counts');
  assert(granted + rejected <= voterCount, 'more votes than voters');
  const q = quorumSize(voterCount);
  if (granted >= q) return VoteResult.Won;
  if (voterCount - rejected < q) return VoteResult.Lost;
  return VoteResult.Pending;
}
