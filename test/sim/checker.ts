// The simulator's invariants, checked as the run goes (each check is incremental, so every step
// is checked without re-scanning the cluster):
//   election safety     at most one leader per term
//   log matching        one (index, term) names one entry, whose predecessor has one term
//   leader completeness a new leader of term T holds every entry committed in a term < T
//   state machine safety every node applies the same entry at each index (and reaches the same
//                        state hash), so applied sequences are prefixes of one another
//   commit/apply        per node, the commit index and the applied index never go back, even
//                        across restarts; nothing is applied before it is committed
//   durability          an entry the leader counts as committed is durable on a quorum of its
//                        voters; an entry acknowledged to a client is committed
//   durability contract no message vouches for state its sender's disk does not hold
//   linearizable reads  a read's index is at least every write acknowledged before it started,
//                        and the state it reads includes those writes
// A broken invariant throws a Violation (the runner prints the seed and the trace).
import { quorumSize } from '../../src/raft/quorum';
import { RawNode } from '../../src/raft/raw_node';
import { Entry, Message, MessageType, StateType } from '../../src/raft/types';
import { SimDisk } from './disk';
import { KvValue, entryKey } from './state_machine';

export class Violation extends Error {
  readonly invariant: string;
  constructor(invariant: string, detail: string) {
    super(`${invariant}: ${detail}`);
    this.name = 'Violation';
    this.invariant = invariant;
  }
}

interface CommittedEntry {
  key: string;
  /** The lowest term in which a node was seen to have it committed. */
  commitTerm: number;
}

/** What the checker needs to see of a simulated node. */
export interface CheckedNode {
  id: number;
  rn: RawNode;
  disk: SimDisk;
  /** Commit index last seen for this incarnation. */
  seenCommit: number;
  seenState: StateType;
  seenTerm: number;
}

export class Checker {
  private readonly leaderOfTerm = new Map<number, number>();
  /** index * 2^20 + term -> entry identity and its predecessor's term. */
  private readonly logIds = new Map<number, { key: string; prevTerm: number }>();
  private readonly committed: (CommittedEntry | undefined)[] = [];
  private readonly appliedKey: (string | undefined)[] = [];
  private readonly appliedHash: (number | undefined)[] = [];
  commitMax = 0;
  /** Highest log index of a write acknowledged to a client, and per key. */
  ackedIndexMax = 0;
  readonly ackedPerKey = new Map<string, number>();

  // ---- elections ----

  /** Called whenever a node may have changed role or term. */
  observeRole(n: CheckedNode): void {
    const r = n.rn.raft;
    if (r.state === n.seenState && r.term === n.seenTerm) return;
    n.seenState = r.state;
    n.seenTerm = r.term;
    if (r.state !== StateType.Leader) return;
    const other = this.leaderOfTerm.get(r.term);
    if (other !== undefined && other !== n.id) {
      throw new Violation('election safety', `nodes ${other} and ${n.id} both lead term ${r.term}`);
    }
    this.leaderOfTerm.set(r.term, n.id);
    this.checkLeaderCompleteness(n);
  }

  private checkLeaderCompleteness(n: CheckedNode): void {
    const log = n.rn.raft.log;
    const term = n.rn.raft.term;
    for (let i = log.snapshotIndex + 1; i <= this.commitMax; i++) {
      const c = this.committed[i];
      if (c === undefined || c.commitTerm >= term) continue;
      if (i > log.lastIndex() || entryKey(log.entry(i)) !== c.key) {
        throw new Violation('leader completeness',
          `leader ${n.id} of term ${term} lacks entry ${i} committed in term ${c.commitTerm}`);
      }
    }
    // Entries below the leader's snapshot point are in its state machine: compare states.
    const sm = n.disk.sm;
    const h = this.appliedHash[sm.index];
    if (h !== undefined && h !== sm.hash) {
      throw new Violation('leader completeness', `leader ${n.id} state at ${sm.index} differs`);
    }
  }

  // ---- the log ----

  /** Entries a node is about to persist (every entry of every log passes here once). */
  observeAppend(n: CheckedNode, entries: Entry[]): void {
    const log = n.rn.raft.log;
    for (const e of entries) {
      const prevTerm = log.termOrZero(e.index - 1);
      const id = e.index * 1048576 + e.term;
      const key = entryKey(e);
      const seen = this.logIds.get(id);
      if (seen === undefined) {
        this.logIds.set(id, { key, prevTerm });
      } else if (seen.key !== key || seen.prevTerm !== prevTerm) {
        throw new Violation('log matching', `node ${n.id}: entry (${e.index}, ${e.term}) differs`);
      }
    }
  }

  /** Called after every input to a node: its commit index may have moved. */
  observeCommit(n: CheckedNode): void {
    const r = n.rn.raft;
    const c = r.log.committed;
    if (c < n.seenCommit) {
      throw new Violation('commit monotonic', `node ${n.id}: ${n.seenCommit} -> ${c}`);
    }
    if (c === n.seenCommit) return;
    const from = Math.max(n.seenCommit + 1, r.log.firstIndex());
    const leader = r.state === StateType.Leader;
    for (let i = from; i <= c; i++) {
      const e = r.log.entry(i);
      this.recordCommitted(n.id, i, entryKey(e), r.term);
      if (leader) this.checkDurableOnQuorum(n, i, e.term, r.trk.voters, 'committed');
    }
    n.seenCommit = c;
  }

  private recordCommitted(id: number, i: number, key: string, term: number): void {
    const c = this.committed[i];
    if (c === undefined) {
      this.committed[i] = { key, commitTerm: term };
      if (i > this.commitMax) this.commitMax = i;
    } else if (c.key !== key) {
      throw new Violation('state machine safety', `node ${id} committed another entry at ${i}`);
    } else if (term < c.commitTerm) {
      c.commitTerm = term;
    }
  }

  /** Entry (i, term) must be durable on a quorum of `voters` (their simulated disks). */
  checkDurableOnQuorum(n: CheckedNode, i: number, term: number, voters: number[],
    what: string): void {
    let durable = 0;
    for (const v of voters) if (this.disks.get(v)?.holds(i, term) === true) durable++;
    if (durable < quorumSize(voters.length)) {
      throw new Violation('durability', `node ${n.id}: entry (${i}, ${term}) ${what} but ` +
        `durable on ${durable} of voters [${voters.join(',')}]`);
    }
  }

  /** Every node's disk, by id (the simulator keeps it current). */
  disks = new Map<number, SimDisk>();

  // ---- applying ----

  /** A node applies entry e (early: before the core handed it out, on the leader's claim). */
  observeApply(n: CheckedNode, e: Entry, hashAfter: number, early: boolean): void {
    const key = entryKey(e);
    if (!early) {
      const c = this.committed[e.index];
      if (c === undefined || c.key !== key) {
        throw new Violation('applied before committed', `node ${n.id} applies entry ${e.index}`);
      }
    } else {
      this.recordCommitted(n.id, e.index, key, n.rn.raft.term);
    }
    const seen = this.appliedKey[e.index];
    if (seen === undefined) {
      this.appliedKey[e.index] = key;
      this.appliedHash[e.index] = hashAfter;
    } else if (seen !== key || this.appliedHash[e.index] !== hashAfter) {
      throw new Violation('state machine safety',
        `node ${n.id} applies another entry at ${e.index}`);
    }
  }

  appliedKeyAt(index: number): string | undefined {
    return this.appliedKey[index];
  }

  /** A node installs a snapshot: its state must be the state every node had at that index. */
  observeSnapshotInstalled(id: number, index: number, hash: number): void {
    const h = this.appliedHash[index];
    if (h !== undefined && h !== hash) {
      throw new Violation('state machine safety',
        `node ${id} installs a different state at ${index}`);
    }
  }

  // ---- the durability contract ----

  /** A message leaves node n: what it vouches for must be on n's disk. */
  observeSend(n: CheckedNode, m: Message): void {
    const d = n.disk;
    if (m.type === MessageType.AppResp) {
      if (d.hardState.term < m.term) {
        throw new Violation('durability contract',
          `node ${n.id} sends MsgAppResp at term ${m.term}, durable term ${d.hardState.term}`);
      }
      if (m.reject) return;
      // The entries up to m.index must be on disk. (Their terms may differ from the log's by now:
      // a later write in flight may overwrite an uncommitted tail; the message predates it.)
      if (d.termAt(m.index) === 0) {
        throw new Violation('durability contract',
          `node ${n.id} acks index ${m.index}, durable up to ${d.lastIndex()}`);
      }
    } else if (m.type === MessageType.VoteResp && !m.reject) {
      const hs = d.hardState;
      if (hs.term < m.term || (hs.term === m.term && hs.vote !== m.to)) {
        throw new Violation('durability contract', `node ${n.id} grants a vote in term ${m.term} ` +
          `for ${m.to} not durable (disk: term ${hs.term} vote ${hs.vote})`);
      }
    }
  }

  // ---- clients ----

  /** A write is acknowledged to its client (its node applied it at `index`). */
  observeWriteAck(id: number, key: string, index: number, entryKeyStr: string): void {
    const c = this.committed[index];
    if (c === undefined || c.key !== entryKeyStr) {
      throw new Violation('durability',
        `node ${id} acknowledges a write at ${index} that is not committed`);
    }
    if (index > this.ackedIndexMax) this.ackedIndexMax = index;
    if (index > (this.ackedPerKey.get(key) ?? 0)) this.ackedPerKey.set(key, index);
  }

  /**
   * A read served at node `id`: `readIndex` from raft, the state read `kv`, and what was
   * acknowledged when the read started.
   */
  observeRead(id: number, readIndex: number, kv: Map<string, KvValue>, ackedAtStart: number,
    perKeyAtStart: Map<string, number>): void {
    if (readIndex < ackedAtStart) {
      throw new Violation('linearizable read', `node ${id} read index ${readIndex} below write ` +
        `${ackedAtStart} acknowledged before the read`);
    }
    for (const [key, index] of perKeyAtStart) {
      const v = kv.get(key);
      if (v === undefined || v.index < index) {
        throw new Violation('linearizable read', `node ${id} reads ${key}@${v?.index ?? 0}, ` +
          `write @${index} acknowledged before the read`);
      }
    }
  }
}
