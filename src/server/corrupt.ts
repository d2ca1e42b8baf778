// Corruption checks (etcd 3.5: server/etcdserver/corrupt.go): members compare their HashKV
// (mvcc/hash.ts) at the same revision; equal histories give equal hashes, so a difference under
// the same compaction revision means some member's store no longer holds what the log applied.
//
// Initial check (--experimental-initial-corrupt-check): a member with data, before it serves
// clients, takes its own HashKV at its current revision R and asks every peer for theirs at R
// (MemberOp.HashKv, member_requests.ts). A peer at the same compaction revision with another
// hash: the member refuses to start ("<id> found data inconsistency with peers"). A peer that
// does not answer, is behind R (FutureRev) or has compacted past it (Compacted), or answers under
// another compaction revision is logged and skipped, as etcd does: nothing can be compared then.
//
// Periodic check (--experimental-corrupt-check-time): the leader, every interval, takes its
// HashKV at its current revision R, asks every other member for theirs at R, then takes its own
// again at R (etcd's second hash: a leader whose own store changes under a fixed revision is
// corrupt itself). Every member is hashed at R whatever it applied since, so followers that lag
// or run ahead never differ for that reason; a follower not yet at R answers FutureRev and is
// skipped. The answers at the leader's compaction revision are grouped by hash (etcd 3.6's
// count rule, corrupt.go checkPeerHashes): when the hashes differ, a group holding a majority of
// the members is the truth and the CORRUPT alarm is raised, through the log, for every member
// outside it - the leader too when it is the odd one out; with no majority, nobody can tell who
// is wrong and the alarm is raised for member 0 (the whole cluster), as etcd does. Either way
// the cluster then refuses writes (EtcdServer refusedWhenCorrupt) until `etcdctl alarm disarm`.
//
// Metrics: etcd 3.5 exports none for these checks (its hash metrics time the scans only), so
// neither does concord; the outcome is in the logs and in the alarm list.
import Long from 'long';
import { ErrorCode } from '../util/errors';
import type { LogLevel } from '../util/log';
import type { HashKvAnswer } from './member_requests';

/** One other member's answer to MemberOp.HashKv (etcd peerHashKVResp). */
export interface PeerHashKv {
  memberId: Long;
  peerUrls: string[];
  /** null when it did not answer with a hash: see `code`. */
  answer: HashKvAnswer | null;
  /** 0 with an answer; else ErrorCode (FutureRev, Compacted, ...) or a transport ForwardError. */
  code: number;
}

/** What the checks need from the server (etcd's Hasher interface). */
export interface CorruptHasher {
  readonly memberId: Long;
  /** This member's HashKV at `rev` (0: current): code 0 and the answer, or an ErrorCode. */
  hashKv(rev: number): Promise<{ code: number; answer: HashKvAnswer | null }>;
  /** Every other member's HashKV at `rev` (one attempt each, within the request timeout). */
  peerHashKvs(rev: number): Promise<PeerHashKv[]>;
  /** Proposes ACTIVATE CORRUPT for `memberId` (0: the whole cluster) through the log. */
  triggerCorruptAlarm(memberId: Long): void;
  log(level: LogLevel, msg: string, fields: Record<string, unknown>): void;
}

/** The initial check found a peer with another hash under the same compaction revision. */
export class DataInconsistencyError extends Error {
  constructor(memberIdHex: string) {
    super(`${memberIdHex} found data inconsistency with peers`);
    this.name = 'DataInconsistencyError';
  }
}

/** How the periodic check judged the members' hashes at one revision. */
export interface HashVerdict {
  /** Peers whose hash was compared (answered, at the leader's compaction revision). */
  checked: number;
  /** Members to raise CORRUPT for: outside the majority, or [0] when there is none. */
  corrupt: Long[];
  /** Whether a majority of the members agreed on one hash (true when all agree). */
  quorumExists: boolean;
}

const memberZero = Long.UZERO;

/** A duration as Go prints one in etcd's logs ("500ms", "1.5s", "7s", "1m30s"), under an hour. */
export function goDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${ms / 1000}s`;
  return `${Math.floor(ms / 60_000)}m${(ms % 60_000) / 1000}s`;
}

function hex(id: Long): string {
  return id.toString(16);
}

/**
 * etcd's count rule (corrupt.go checkPeerHashes) on the leader's hash and its peers' answers at
 * the same revision; peers without an answer or under another compaction revision are skipped
 * (logged by the caller). Pure: the caller raises the alarms.
 */
export function judgeHashes(leaderId: Long, leader: HashKvAnswer, peers: PeerHashKv[]): HashVerdict {
  const groups = new Map<number, Long[]>([[leader.hash, [leaderId]]]);
  let checked = 0;
  for (const p of peers) {
    if (!comparable(leader, p)) continue;
    checked++;
    const g = groups.get(p.answer!.hash);
    if (g === undefined) groups.set(p.answer!.hash, [p.memberId]);
    else g.push(p.memberId);
  }
  if (groups.size === 1) return { checked, corrupt: [], quorumExists: true };
  // A majority of all the members, those skipped included: two members agreeing out of five
  // do not outvote three that could not be asked.
  const quorum = Math.floor((peers.length + 1) / 2) + 1;
  const corrupt: Long[] = [];
  let quorumExists = false;
  for (const members of groups.values()) if (members.length >= quorum) quorumExists = true;
  if (!quorumExists) return { checked, corrupt: [memberZero], quorumExists };
  for (const members of groups.values()) if (members.length < quorum) corrupt.push(...members);
  return { checked, corrupt, quorumExists };
}

/** A peer's answer can be compared with the leader's: a hash at the same revision and compaction. */
function comparable(leader: HashKvAnswer, p: PeerHashKv): boolean {
  return p.answer !== null && p.answer.rev === leader.rev && p.answer.compactRev === leader.compactRev;
}

/** Why a peer was skipped, for the log. */
function skipReason(leader: HashKvAnswer, p: PeerHashKv): string {
  if (p.answer === null) {
    if (p.code === ErrorCode.FutureRev) return 'the peer has not reached the revision yet';
    if (p.code === ErrorCode.Compacted) return 'the peer compacted past the revision';
    return 'no response';
  }
  if (p.answer.rev !== leader.rev) return `the peer hashed revision ${p.answer.rev}`;
  return `the peer's CompactRevision ${p.answer.compactRev} doesn't match leader's CompactRevision ${leader.compactRev}`;
}

/**
 * The initial check (etcd corruptionMonitor.InitialCheck). Resolves when no peer disagrees;
 * rejects with DataInconsistencyError when one does, with another Error when this member cannot
 * hash its own store.
 */
export async function initialCheck(h: CorruptHasher, requestTimeoutMs: number): Promise<void> {
  const local = hex(h.memberId);
  h.log('info', 'starting initial corruption check', { 'local-member-id': local, timeout: goDuration(requestTimeoutMs) });
  const own = await h.hashKv(0);
  if (own.code !== 0 || own.answer === null) {
    throw new Error(`${local} failed to fetch hash (error code ${own.code})`);
  }
  const mine = own.answer;
  const peers = await h.peerHashKvs(mine.rev);
  let mismatch = 0;
  for (const p of peers) {
    const fields: Record<string, unknown> = {
      'local-member-id': local, 'local-member-revision': mine.rev,
      'local-member-compact-revision': mine.compactRev, 'local-member-hash': mine.hash,
      'remote-peer-id': hex(p.memberId), 'remote-peer-endpoints': p.peerUrls,
    };
    if (p.answer !== null) {
      fields['remote-peer-revision'] = p.answer.currentRev;
      fields['remote-peer-compact-revision'] = p.answer.compactRev;
      fields['remote-peer-hash'] = p.answer.hash;
      if (p.answer.hash === mine.hash) continue;
      if (p.answer.compactRev === mine.compactRev && p.answer.rev === mine.rev) {
        h.log('warn', 'found different hash values from remote peer', fields);
        mismatch++;
      } else {
        h.log('warn', 'found different compact revision values from remote peer', fields);
      }
      continue;
    }
    if (p.code === ErrorCode.FutureRev) h.log('warn', 'cannot fetch hash from slow remote peer', fields);
    else if (p.code === ErrorCode.Compacted) h.log('warn', 'cannot fetch hash from remote peer; local member is behind', fields);
    else h.log('warn', 'failed hash kv request', { ...fields, 'requested-revision': mine.rev, code: p.code });
  }
  if (mismatch > 0) throw new DataInconsistencyError(local);
  h.log('info', 'initial corruption checking passed; no corruption', { 'local-member-id': local });
}

/**
 * One periodic check on the leader (etcd corruptionMonitor.periodicCheck, with the count rule).
 * Returns the verdict, or null when this member could not hash its own store (logged).
 */
export async function periodicCheck(h: CorruptHasher): Promise<HashVerdict | null> {
  const leaderId = h.memberId;
  const first = await h.hashKv(0);
  if (first.code !== 0 || first.answer === null) {
    h.log('warn', 'failed to check hash KV', { 'local-member-id': hex(leaderId), code: first.code });
    return null;
  }
  const mine = first.answer;
  const peers = await h.peerHashKvs(mine.rev);
  const corrupt: Long[] = [];
  // The second hash of the same revision, after the peers answered: it can only differ if this
  // member's own store changed under a revision it had already applied.
  const second = await h.hashKv(mine.rev);
  if (second.answer !== null && second.answer.compactRev === mine.compactRev && second.answer.hash !== mine.hash) {
    h.log('warn', 'found hash mismatch', {
      'revision-1': mine.rev, 'compact-revision-1': mine.compactRev, 'hash-1': mine.hash,
      'revision-2': second.answer.rev, 'compact-revision-2': second.answer.compactRev, 'hash-2': second.answer.hash,
    });
    corrupt.push(leaderId);
  }
  for (const p of peers) {
    if (comparable(mine, p)) continue;
    h.log('warn', 'skipped peer\'s hash', {
      'number-of-peers': peers.length, 'leader-id': hex(leaderId), 'peer-id': hex(p.memberId),
      reason: skipReason(mine, p), revision: mine.rev,
    });
  }
  const verdict = judgeHashes(leaderId, mine, peers);
  if (verdict.corrupt.length > 0) {
    h.log('error', verdict.quorumExists
      ? 'detected hash mismatch'
      : 'detected hash mismatch but cannot identify the corrupted members, so intentionally set the memberID as 0', {
      'leader-id': hex(leaderId), 'leader-revision': mine.rev, 'leader-compact-revision': mine.compactRev,
      'leader-hash': mine.hash, 'quorum-exist': verdict.quorumExists,
      'corrupted-member-ids': verdict.corrupt.map(hex),
      peers: peers.map((p) => ({ 'peer-id': hex(p.memberId), hash: p.answer?.hash, 'compact-revision': p.answer?.compactRev, code: p.code })),
    });
  }
  for (const id of verdict.corrupt) if (!corrupt.some((c) => c.equals(id))) corrupt.push(id);
  for (const id of corrupt) h.triggerCorruptAlarm(id);
  h.log('info', 'finished peer corruption check', {
    'number-of-peers-checked': verdict.checked, revision: mine.rev, 'compact-revision': mine.compactRev,
  });
  return { ...verdict, corrupt };
}
