// The replicated lease state (etcd: lease/lessor.go, the parts every member applies): which
// leases exist, their granted TTL, the remaining TTL last checkpointed, and which keys each one
// holds. It lives in the storage worker next to the MVCC store, changes only by applying log
// entries (grant, revoke, checkpoint, and puts/deletes attaching and detaching keys), and is
// persisted in LMDB's `lease` db with the same batched commits as the MVCC records.
//
// Time is not here: when a lease expires is the leader's business (lease/lessor.ts, main
// thread), which proposes a revoke through the log like any write.
import Long from 'long';
import { Backend } from '../storage/backend';
import { errLeaseExist, errLeaseNotFound, errLeaseTtlTooLarge } from '../util/errors';
import { leaseTtlMaxSeconds } from '../config/limits';
import { assert } from '../util/assert';

export interface Lease {
  readonly id: Long;
  /** Granted TTL in seconds (after raising it to the minimum). */
  readonly ttl: number;
  /** Remaining TTL at the last checkpoint, seconds; 0 = none (etcd RemainingTTL). */
  remaining: number;
  /** Attached keys (latin1). */
  readonly keys: Set<string>;
}

export const enum LeaseChangeKind {
  Granted = 1,
  Revoked = 2,
  Checkpointed = 3,
}

/** What the main thread's lessor must learn from an apply. */
export interface LeaseChange {
  kind: LeaseChangeKind;
  id: Long;
  ttl: number;
  remaining: number;
}

export function leaseKey(id: Long | number): string {
  return (typeof id === 'number' ? Long.fromNumber(id) : id).toString();
}

export class LeaseStore {
  private readonly backend: Backend;
  private readonly ttlMin: number;
  private readonly leases = new Map<string, Lease>();
  /** key (latin1) -> id of the lease it is attached to. */
  private readonly keyLease = new Map<string, string>();
  /** Changes since the last takeChanges(), in apply order. */
  private changes: LeaseChange[] = [];

  constructor(backend: Backend, ttlMin: number) {
    this.backend = backend;
    this.ttlMin = ttlMin;
  }

  /** Loads the leases from LMDB and the attachments the MVCC store found on live keys. */
  restore(liveKeyLeases: Map<string, Long>): void {
    for (const { id, record } of this.backend.leaseRecords()) {
      const l = Long.fromBits(id.readUInt32BE(4), id.readInt32BE(0), false);
      const lease: Lease = { id: l, ttl: record.readDoubleLE(0), remaining: record.readDoubleLE(8), keys: new Set() };
      this.leases.set(l.toString(), lease);
    }
    for (const [key, id] of liveKeyLeases) {
      const k = id.toString();
      const lease = this.leases.get(k);
      // A key whose lease is gone was revoked with it: the backend holds whole entries only.
      if (lease === undefined) continue;
      lease.keys.add(key);
      this.keyLease.set(key, k);
    }
  }

  get size(): number {
    return this.leases.size;
  }

  exists(id: Long | number): boolean {
    return this.leases.has(leaseKey(id));
  }

  get(id: Long | number): Lease | undefined {
    return this.leases.get(leaseKey(id));
  }

  all(): IterableIterator<Lease> {
    return this.leases.values();
  }

  /** etcd lessor.Grant: the TTL is raised to the minimum; id 0 is refused (the API picks ids). */
  grant(id: Long, ttlRequested: number): Lease {
    if (id.isZero()) throw errLeaseNotFound;
    if (ttlRequested > leaseTtlMaxSeconds) throw errLeaseTtlTooLarge;
    const k = id.toString();
    if (this.leases.has(k)) throw errLeaseExist;
    const ttl = Math.max(ttlRequested, this.ttlMin);
    const lease: Lease = { id, ttl, remaining: 0, keys: new Set() };
    this.leases.set(k, lease);
    this.persist(lease);
    this.changes.push({ kind: LeaseChangeKind.Granted, id, ttl, remaining: 0 });
    return lease;
  }

  /**
   * The keys a revoke deletes, in key order (etcd sorts them); the caller deletes them in one
   * write transaction, then calls remove().
   */
  keysToRevoke(id: Long | number): string[] {
    const lease = this.leases.get(leaseKey(id));
    if (lease === undefined) throw errLeaseNotFound;
    return [...lease.keys].sort();
  }

  remove(id: Long | number): void {
    const k = leaseKey(id);
    const lease = this.leases.get(k);
    assert(lease !== undefined, 'removing an unknown lease');
    for (const key of lease.keys) this.keyLease.delete(key);
    this.leases.delete(k);
    this.backend.putLease(idBytes(lease.id), null);
    this.changes.push({ kind: LeaseChangeKind.Revoked, id: lease.id, ttl: lease.ttl, remaining: 0 });
  }

  /** etcd lessor.Checkpoint: an unknown lease is ignored (revoked since it was proposed). */
  checkpoint(id: Long | number, remaining: number): void {
    const lease = this.leases.get(leaseKey(id));
    if (lease === undefined) return;
    lease.remaining = remaining;
    this.persist(lease);
    this.changes.push({ kind: LeaseChangeKind.Checkpointed, id: lease.id, ttl: lease.ttl, remaining });
  }

  /** A put of `key` with `lease` (0 = none): moves the attachment (etcd storeTxnWrite.put). */
  attach(key: string, lease: Long | number): void {
    const old = this.keyLease.get(key);
    const isNone = typeof lease === 'number' ? lease === 0 : lease.isZero();
    const next = isNone ? undefined : leaseKey(lease);
    if (old === next) return;
    if (old !== undefined) this.leases.get(old)?.keys.delete(key);
    if (next === undefined) {
      this.keyLease.delete(key);
      return;
    }
    const l = this.leases.get(next);
    assert(l !== undefined, 'put attached to an unknown lease'); // checked before the write
    l.keys.add(key);
    this.keyLease.set(key, next);
  }

  /** A delete of `key`. */
  detach(key: string): void {
    if (this.keyLease.size === 0) return;
    const old = this.keyLease.get(key);
    if (old === undefined) return;
    this.leases.get(old)?.keys.delete(key);
    this.keyLease.delete(key);
  }

  takeChanges(): LeaseChange[] {
    const c = this.changes;
    if (c.length > 0) this.changes = [];
    return c;
  }

  private persist(lease: Lease): void {
    const rec = Buffer.allocUnsafe(16);
    rec.writeDoubleLE(lease.ttl, 0);
    rec.writeDoubleLE(lease.remaining, 8);
    this.backend.putLease(idBytes(lease.id), rec);
  }
}

function idBytes(id: Long): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeInt32BE(id.high, 0);
  b.writeUInt32BE(id.low >>> 0, 4);
  return b;
}
