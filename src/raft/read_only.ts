// Linearizable reads without log writes: ReadIndex in safe mode (etcd-io/raft read_only.go,
// raft thesis §6.4), with etcd main's counter context so that one heartbeat round confirms every
// read queued before it.
//
// The leader gives each read a round number (increasing), records its commit index, and sends a
// heartbeat carrying the newest round. A follower echoes the round in its response. Once a quorum
// of voters (the leader counts itself) has echoed round >= r in this term, the leader knows it was
// still leader when every read of round <= r arrived, so those reads may be served at the index
// recorded for them. Example: reads a (round 1) and b (round 2) queued, heartbeat round 2 goes
// out, two of three voters answer with 2: both a and b are released.
import { assert } from '../util/assert';
import { ProgressTracker } from './tracker/tracker';

export interface ReadRequest {
  /** Who asked: the leader itself (answer in Ready.readStates) or a follower (MsgReadIndexResp). */
  from: number;
  /** The driver's opaque context, returned with the answer. */
  context: Uint8Array;
  /** The leader's commit index when the read arrived. */
  index: number;
  round: number;
}

export class ReadOnly {
  /** Pending reads, oldest first, from `head` on (rounds increase along the queue). */
  private queue: ReadRequest[];
  private head: number;
  private nextRound: number;
  /** Per voter: the highest round it echoed in this term. */
  private readonly acked: Map<number, number>;

  constructor() {
    this.queue = [];
    this.head = 0;
    // Rounds are never reused within a process; acks from another term are filtered by term.
    this.nextRound = 1;
    this.acked = new Map();
  }

  pendingCount(): number {
    return this.queue.length - this.head;
  }

  add(from: number, context: Uint8Array, index: number): number {
    const round = this.nextRound++;
    this.queue.push({ from, context, index, round });
    return round;
  }

  /** The newest pending round, 0 when nothing is pending (heartbeats then carry no context). */
  lastRound(): number {
    return this.pendingCount() === 0 ? 0 : this.queue[this.queue.length - 1]!.round;
  }

  recvAck(id: number, round: number): void {
    if (round > (this.acked.get(id) ?? 0)) this.acked.set(id, round);
  }

  /** Pops and returns the reads confirmed by a quorum; `self` acks its own rounds. */
  release(trk: ProgressTracker, self: number): ReadRequest[] {
    if (this.pendingCount() === 0) return [];
    this.acked.set(self, this.lastRound());
    const confirmed = trk.quorumOf(this.acked);
    const out: ReadRequest[] = [];
    while (this.head < this.queue.length && this.queue[this.head]!.round <= confirmed) {
      out.push(this.queue[this.head]!);
      this.head++;
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return out;
  }

  /** Drops every pending read and ack (term change: the driver retries, etcd's read loop does). */
  reset(): void {
    this.queue.length = 0;
    this.head = 0;
    this.acked.clear();
  }
}

/** The heartbeat context carrying a read round: 8 bytes, big-endian. */
export function encodeRound(round: number): Uint8Array {
  assert(Number.isSafeInteger(round) && round > 0, 'read round');
  const b = new Uint8Array(8);
  let v = round;
  for (let i = 7; i >= 0; i--) {
    b[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return b;
}

/** 0 for a heartbeat without a round. */
export function decodeRound(ctx: Uint8Array): number {
  if (ctx.length !== 8) return 0;
  let v = 0;
  for (let i = 0; i < 8; i++) v = v * 256 + ctx[i]!;
  return v;
}
