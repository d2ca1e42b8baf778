// The leader's lease clock (etcd: lease/lessor.go, the primary's half). It knows when each lease
// expires, renews leases on keep-alive, and decides which leases to revoke and which remaining
// TTLs to checkpoint; both go through the replicated log as proposals, so every member applies
// the same revokes and checkpoints (lease_store.ts) and only the leader looks at the clock.
//
// Scale: one coarse clock read per tick and two binary heaps keyed by time (expiry, next
// checkpoint), not a timer per lease. Each lease has at most one entry in each heap: a
// keep-alive only moves the lease's expiry (a Map lookup and a store); when its old entry
// surfaces, it goes back in at the new time. So memory stays one entry per lease whatever the
// keep-alive rate (etcd updates its heap in place; pushing per renewal grew to ~800 MiB at
// 140k keep-alives/s with 60 s TTLs).
//
// Pure: time comes in as arguments, so tests drive it with any clock.
import Long from 'long';
import { randomBytes } from 'node:crypto';
import { LeaseChangeKind, leaseKey } from './lease_store';

/**
 * Kept small on purpose: 100,000 leases are 100,000 of these on the main thread's heap, and a
 * major GC marks them all (no Long per lease: ids are rebuilt from `key` when needed).
 */
interface LiveLease {
  /** The id as a decimal int64 (lease_store.ts leaseKey). */
  readonly key: string;
  ttl: number;
  /** When it expires (ms, the caller's clock). */
  expiryMs: number;
  /** Remaining TTL checkpointed in the replicated state (0 = none). */
  checkpointed: number;
  /** When a revoke was last proposed for it (0 = never): retried after revokeRetryMs. */
  revokeProposedMs: number;
  /** When its next checkpoint is due (0 = none scheduled). */
  checkpointAtMs: number;
  /** Time of its one entry in the expiry heap (a renewal moves expiryMs only: no new entry). */
  heapAtMs: number;
}

/** A min-heap of (time, lease key) in two parallel arrays: no object per entry. */
class TimeHeap {
  private readonly times: number[] = [];
  private readonly keys: string[] = [];

  get size(): number {
    return this.times.length;
  }

  push(atMs: number, key: string): void {
    const t = this.times;
    const k = this.keys;
    let i = t.length;
    t.push(atMs);
    k.push(key);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (t[p]! <= atMs) break;
      t[i] = t[p]!;
      k[i] = k[p]!;
      i = p;
    }
    t[i] = atMs;
    k[i] = key;
  }

  clear(): void {
    this.times.length = 0;
    this.keys.length = 0;
  }

  /** Time of the earliest entry, or Infinity when empty. */
  peekTime(): number {
    return this.times.length > 0 ? this.times[0]! : Infinity;
  }

  peekKey(): string {
    return this.keys[0]!;
  }

  /** Removes the earliest entry (the heap must not be empty). */
  pop(): void {
    const t = this.times;
    const k = this.keys;
    const lastT = t.pop()!;
    const lastK = k.pop()!;
    const n = t.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const m = r < n && t[r]! < t[l]! ? r : l;
      if (t[m]! >= lastT) break;
      t[i] = t[m]!;
      k[i] = k[m]!;
      i = m;
    }
    t[i] = lastT;
    k[i] = lastK;
  }
}

export interface LessorOptions {
  /** etcd --experimental-lease-checkpoint-interval (default 5 min). */
  checkpointIntervalMs: number;
  /** etcd: a revoke that did not apply is proposed again after 3 s. */
  revokeRetryMs: number;
}

export class Lessor {
  private readonly leases = new Map<string, LiveLease>();
  private readonly expiries = new TimeHeap();
  private readonly checkpoints = new TimeHeap();
  private readonly options: LessorOptions;

  constructor(options: LessorOptions) {
    this.options = options;
  }

  get size(): number {
    return this.leases.size;
  }

  /**
   * A lease known from the replicated state at start (restart or new leader): it expires after
   * its checkpointed remaining TTL when there is one, else after its whole TTL, so never before
   * it would have (etcd 3.6 with lease checkpoints).
   */
  restore(id: Long, ttl: number, remaining: number, nowMs: number): void {
    this.add(id, ttl, remaining > 0 ? remaining : ttl, remaining, nowMs);
  }

  /** What an apply changed (lease_store.ts LeaseChange), in apply order. */
  applied(kind: LeaseChangeKind, id: Long, ttl: number, remaining: number, nowMs: number, restoring = false): void {
    const key = leaseKey(id);
    switch (kind) {
      case LeaseChangeKind.Granted:
        this.add(id, ttl, ttl, 0, nowMs);
        return;
      case LeaseChangeKind.Revoked:
        this.leases.delete(key);
        return;
      case LeaseChangeKind.Checkpointed: {
        const l = this.leases.get(key);
        if (l === undefined) return;
        if (restoring) {
          // Replayed at start-up: the lease runs from this checkpoint, as restore() would.
          this.add(id, l.ttl, remaining > 0 ? remaining : l.ttl, remaining, nowMs);
          return;
        }
        l.checkpointed = remaining;
        this.scheduleCheckpoint(l, nowMs);
        return;
      }
    }
  }

  private add(id: Long, ttl: number, runSeconds: number, checkpointed: number, nowMs: number): void {
    const key = leaseKey(id);
    const l: LiveLease = {
      key, ttl, expiryMs: nowMs + runSeconds * 1000, checkpointed, revokeProposedMs: 0, checkpointAtMs: 0,
      heapAtMs: 0,
    };
    l.heapAtMs = l.expiryMs;
    this.leases.set(key, l);
    this.expiries.push(l.expiryMs, key);
    this.scheduleCheckpoint(l, nowMs);
  }

  /**
   * This member became leader (etcd lessor.Promote): every lease runs again from now for its
   * checkpointed remaining TTL, or its whole TTL, since the old leader's clock (and the
   * keep-alives it took) are not known here. Leases whose new expiries pile up in one second
   * are spread so that at most 3/4 of `revokesPerSecond` expire per second (etcd: piled-up
   * expiries would use the whole revoke rate and starve the rest).
   */
  promote(nowMs: number, revokesPerSecond: number): void {
    const leases = [...this.leases.values()];
    for (const l of leases) {
      l.expiryMs = nowMs + (l.checkpointed > 0 ? l.checkpointed : l.ttl) * 1000;
      l.revokeProposedMs = 0;
    }
    leases.sort((a, b) => a.expiryMs - b.expiryMs);
    const perSecond = Math.max(1, Math.floor((3 * revokesPerSecond) / 4));
    let windowStart = -Infinity;
    let windowEnd = -Infinity;
    let inWindow = 0;
    for (const l of leases) {
      if (l.expiryMs > windowEnd) {
        windowStart = l.expiryMs;
        windowEnd = windowStart + 1000;
        inWindow = 1;
        continue;
      }
      inWindow++;
      if (inWindow <= perSecond) continue;
      // Delay this one by its share of the window, less how far into the window it already is.
      const delayMs = (1000 * inWindow) / perSecond - (l.expiryMs - windowStart);
      windowEnd = windowStart + delayMs;
      l.expiryMs += delayMs;
    }
    for (const l of leases) {
      if (l.heapAtMs !== l.expiryMs) {
        l.heapAtMs = l.expiryMs;
        this.expiries.push(l.expiryMs, l.key);
      }
      l.checkpointAtMs = 0;
      this.scheduleCheckpoint(l, nowMs);
    }
  }

  /** The state was replaced (a raft snapshot installed): exactly these leases, as at start. */
  reset(leases: { id: Long; ttl: number; remaining: number }[], nowMs: number): void {
    this.leases.clear();
    this.expiries.clear();
    this.checkpoints.clear();
    for (const l of leases) this.restore(l.id, l.ttl, l.remaining, nowMs);
  }

  /** A fresh lease id (etcd: its request id generator masked to a positive int64). */
  newId(): Long {
    for (;;) {
      const b = randomBytes(8);
      const id = Long.fromBits(b.readUInt32LE(0), b.readUInt32LE(4) & 0x7fffffff, false);
      if (!id.isZero() && !this.leases.has(id.toString())) return id;
    }
  }

  has(id: Long | number): boolean {
    return this.leases.has(leaseKey(id));
  }

  ids(): Long[] {
    return [...this.leases.keys()].map((k) => Long.fromString(k));
  }

  /**
   * etcd lessor.Renew: the lease runs its whole TTL again. Returns the TTL, or 0 when the lease
   * is unknown or already expired (waiting for its revoke), which is what KeepAlive answers.
   */
  renew(id: Long | number, nowMs: number): number {
    const l = this.leases.get(leaseKey(id));
    if (l === undefined || l.expiryMs <= nowMs) return 0;
    l.expiryMs = nowMs + l.ttl * 1000;
    if (l.checkpointAtMs === 0) this.scheduleCheckpoint(l, nowMs);
    return l.ttl;
  }

  /**
   * True when the lease has a checkpointed remaining TTL that a renewal must clear: a restart
   * would otherwise bring the old remaining TTL back. etcd 3.6 proposes the clearing checkpoint
   * and answers the keep-alive once it is applied; so does the caller.
   */
  needsCheckpointClear(id: Long | number): boolean {
    const l = this.leases.get(leaseKey(id));
    return l !== undefined && l.checkpointed > 0;
  }

  /** Remaining TTL in whole seconds (etcd truncates), or null when unknown. */
  remainingSeconds(id: Long | number, nowMs: number): number | null {
    const l = this.leases.get(leaseKey(id));
    if (l === undefined) return null;
    return Math.trunc((l.expiryMs - nowMs) / 1000);
  }

  ttlOf(id: Long | number): number | null {
    return this.leases.get(leaseKey(id))?.ttl ?? null;
  }

  /** Leases past their expiry to revoke now, at most `max` (etcd leaseRevokeRate). */
  expired(nowMs: number, max: number): Long[] {
    const out: Long[] = [];
    const retryTimes: number[] = [];
    const retryKeys: string[] = [];
    const heap = this.expiries;
    while (out.length < max && heap.peekTime() <= nowMs) {
      const atMs = heap.peekTime();
      const key = heap.peekKey();
      heap.pop();
      const l = this.leases.get(key);
      if (l === undefined || l.heapAtMs !== atMs) continue; // revoked, or an older entry
      if (l.expiryMs > atMs) {
        // Renewed since: its entry goes back in at the new expiry.
        l.heapAtMs = l.expiryMs;
        heap.push(l.expiryMs, key);
        continue;
      }
      retryTimes.push(atMs); // stays due until the revoke applies
      retryKeys.push(key);
      if (l.revokeProposedMs !== 0 && nowMs - l.revokeProposedMs < this.options.revokeRetryMs) continue;
      l.revokeProposedMs = nowMs;
      out.push(Long.fromString(key));
    }
    for (let i = 0; i < retryTimes.length; i++) heap.push(retryTimes[i]!, retryKeys[i]!);
    return out;
  }

  /** Remaining TTLs to checkpoint now (etcd: at most maxLeaseCheckpointBatchSize per batch). */
  dueCheckpoints(nowMs: number, max: number): { id: Long; remaining: number }[] {
    const out: { id: Long; remaining: number }[] = [];
    const heap = this.checkpoints;
    while (out.length < max && heap.peekTime() <= nowMs) {
      const atMs = heap.peekTime();
      const key = heap.peekKey();
      heap.pop();
      const l = this.leases.get(key);
      if (l === undefined || l.checkpointAtMs !== atMs) continue;
      l.checkpointAtMs = 0;
      const remaining = Math.ceil((l.expiryMs - nowMs) / 1000);
      if (remaining <= 0) continue;
      out.push({ id: Long.fromString(key), remaining });
    }
    return out;
  }

  /** etcd scheduleCheckpointIfNeeded: only leases that outlive one interval get checkpoints. */
  private scheduleCheckpoint(l: LiveLease, nowMs: number): void {
    const interval = this.options.checkpointIntervalMs;
    if (interval <= 0 || l.expiryMs - nowMs <= interval || l.checkpointAtMs !== 0) return;
    l.checkpointAtMs = nowMs + interval;
    this.checkpoints.push(l.checkpointAtMs, l.key);
  }
}
