// The permission each KV and lease write needs, checked against the auth store as of the
// request's place in the log (etcd: server/etcdserver/apply_auth.go, 3.5 with the 3.4 holes
// closed). Used by the storage worker before it applies a proposal whose `auth_user` is set.
//
//   Put            WRITE on the key; READ on it too with prev_kv; with a lease, WRITE on every
//                  key attached to that lease (etcd checkLeasePuts)
//   DeleteRange    WRITE on the range; READ on it too with prev_kv
//   Txn            READ on every compare's range, and each operation of BOTH branches as above,
//                  nested txns included (etcd 3.4 skipped nested ones and a txn put's prev_kv
//                  and lease)
//   LeaseRevoke    WRITE on every attached key
//   Compaction     root (etcd 3.6, CVE-2026-33413: 3.4/3.5 checked nothing)
import { etcdserverpb } from '../gen/proto';
import { AuthStore, PermType } from './auth_store';

const empty = Buffer.alloc(0);

function buf(b: Uint8Array | null | undefined): Buffer {
  return b === null || b === undefined ? empty : Buffer.from(b.buffer, b.byteOffset, b.length);
}

/** Keys (latin1) attached to a lease, or null when the lease does not exist. */
export type LeaseKeys = (leaseId: string) => Iterable<string> | null;

export interface Caller {
  user: string;
  revision: number;
}

export function checkPut(a: AuthStore, c: Caller, p: etcdserverpb.IPutRequest, leaseKeys: LeaseKeys): void {
  a.checkOp(c.user, c.revision, buf(p.key), empty, PermType.WRITE);
  if (p.prev_kv === true) a.checkOp(c.user, c.revision, buf(p.key), empty, PermType.READ);
  const lease = p.lease === null || p.lease === undefined ? '0' : p.lease.toString();
  if (lease !== '0') checkLeaseKeys(a, c, lease, leaseKeys);
}

export function checkDelete(a: AuthStore, c: Caller, d: etcdserverpb.IDeleteRangeRequest): void {
  a.checkOp(c.user, c.revision, buf(d.key), buf(d.range_end), PermType.WRITE);
  if (d.prev_kv === true) a.checkOp(c.user, c.revision, buf(d.key), buf(d.range_end), PermType.READ);
}

export function checkRange(a: AuthStore, c: Caller, r: etcdserverpb.IRangeRequest): void {
  a.checkOp(c.user, c.revision, buf(r.key), buf(r.range_end), PermType.READ);
}

export function checkTxn(a: AuthStore, c: Caller, t: etcdserverpb.ITxnRequest, leaseKeys: LeaseKeys): void {
  for (const cmp of t.compare ?? []) a.checkOp(c.user, c.revision, buf(cmp.key), buf(cmp.range_end), PermType.READ);
  for (const branch of [t.success ?? [], t.failure ?? []]) {
    for (const op of branch) {
      if (op.request_range) checkRange(a, c, op.request_range);
      else if (op.request_put) checkPut(a, c, op.request_put, leaseKeys);
      else if (op.request_delete_range) checkDelete(a, c, op.request_delete_range);
      else if (op.request_txn) checkTxn(a, c, op.request_txn, leaseKeys);
    }
  }
}

/** WRITE on every key attached to the lease (an unknown lease is left to the apply's own error). */
export function checkLeaseKeys(a: AuthStore, c: Caller, leaseId: string, leaseKeys: LeaseKeys): void {
  a.checkUser(c.user, c.revision);
  const keys = leaseKeys(leaseId);
  if (keys === null) return;
  for (const k of keys) a.checkOp(c.user, c.revision, Buffer.from(k, 'latin1'), empty, PermType.WRITE);
}
