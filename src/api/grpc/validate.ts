// Request checks done before a request reaches raft (etcd: v3rpc/key.go check*Request and
// checkIntervals). Returns 0 when the request is acceptable, else an ErrorCode.
import Long from 'long';
import { etcdserverpb } from '../../gen/proto';
import { ErrorCode } from '../../util/errors';
import { keyString } from '../../apply/applier';

type RangeRequest = etcdserverpb.RangeRequest.$Properties;
type PutRequest = etcdserverpb.PutRequest.$Properties;
type DeleteRangeRequest = etcdserverpb.DeleteRangeRequest.$Properties;
type TxnRequest = etcdserverpb.TxnRequest.$Properties;
type RequestOp = etcdserverpb.RequestOp.$Properties;

function empty(b: Uint8Array | null | undefined): boolean {
  return !b || b.length === 0;
}

function nonZero(v: number | Long | null | undefined): boolean {
  if (v === null || v === undefined) return false;
  return typeof v === 'number' ? v !== 0 : !v.isZero();
}

const SortOrder = etcdserverpb.RangeRequest.SortOrder;
const SortTarget = etcdserverpb.RangeRequest.SortTarget;

export function checkRangeRequest(r: RangeRequest): ErrorCode | 0 {
  if (empty(r.key)) return ErrorCode.EmptyKey;
  // etcd 3.4 sorts by a target outside the enum with a nil sorter and the process panics
  // (apply.go Range: sort.Sort(nil)) whenever the order it ends up with is ASCEND or DESCEND
  // (NONE becomes ASCEND for a non-KEY target). Those requests get etcd 3.5's answer instead;
  // with any other order etcd 3.4 does not sort, and neither does concord (applier.ts).
  const order = r.sort_order ?? SortOrder.NONE;
  if (!validSortTarget(r.sort_target ?? SortTarget.KEY) &&
    (order === SortOrder.NONE || order === SortOrder.ASCEND || order === SortOrder.DESCEND)) {
    return ErrorCode.InvalidSortOption;
  }
  return 0;
}

function validSortTarget(t: number): boolean {
  return t === SortTarget.KEY || t === SortTarget.VERSION || t === SortTarget.CREATE ||
    t === SortTarget.MOD || t === SortTarget.VALUE;
}

export function checkPutRequest(r: PutRequest): ErrorCode | 0 {
  if (empty(r.key)) return ErrorCode.EmptyKey;
  if (r.ignore_value && !empty(r.value)) return ErrorCode.ValueProvided;
  if (r.ignore_lease && nonZero(r.lease)) return ErrorCode.LeaseProvided;
  return 0;
}

export function checkDeleteRequest(r: DeleteRangeRequest): ErrorCode | 0 {
  if (empty(r.key)) return ErrorCode.EmptyKey;
  return 0;
}

export function checkTxnRequest(r: TxnRequest, txnOpsMax: number): ErrorCode | 0 {
  const compare = r.compare ?? [];
  const success = r.success ?? [];
  const failure = r.failure ?? [];
  const opc = Math.max(compare.length, success.length, failure.length);
  if (opc > txnOpsMax) return ErrorCode.TooManyOps;
  for (const c of compare) if (empty(c.key)) return ErrorCode.EmptyKey;
  for (const op of success) {
    const e = checkRequestOp(op, txnOpsMax - opc);
    if (e !== 0) return e;
  }
  for (const op of failure) {
    const e = checkRequestOp(op, txnOpsMax - opc);
    if (e !== 0) return e;
  }
  return 0;
}

function checkRequestOp(op: RequestOp, txnOpsMax: number): ErrorCode | 0 {
  if (op.request_range) return checkRangeRequest(op.request_range);
  if (op.request_put) return checkPutRequest(op.request_put);
  if (op.request_delete_range) return checkDeleteRequest(op.request_delete_range);
  if (op.request_txn) return checkTxnRequest(op.request_txn, txnOpsMax);
  return ErrorCode.KeyNotFound; // an empty op (etcd answers "key not found")
}

/** A deleted interval [start, end); `end === null` for a single key. Compared as bytes. */
interface Interval { start: string; end: string | null }

function intersects(dels: Interval[], key: string): boolean {
  for (const d of dels) {
    if (d.end === null) {
      if (d.start === key) return true;
    } else if (d.start <= key && key < d.end) {
      return true;
    }
  }
  return false;
}

/**
 * etcd checkIntervals: within one branch, a key may be written once; puts in the then and else
 * branches of a nested txn may repeat (only one runs); puts must not fall in deleted ranges.
 */
export function checkIntervals(reqs: RequestOp[]): { puts: Set<string>; dels: Interval[] } | null {
  const dels: Interval[] = [];
  for (const req of reqs) {
    const d = req.request_delete_range;
    if (!d) continue;
    dels.push({ start: keyString(d.key), end: empty(d.range_end) ? null : keyString(d.range_end) });
  }
  const puts = new Set<string>();
  for (const req of reqs) {
    const t = req.request_txn;
    if (!t) continue;
    const thenSide = checkIntervals(t.success ?? []);
    if (thenSide === null) return null;
    const elseSide = checkIntervals(t.failure ?? []);
    if (elseSide === null) return null;
    for (const k of thenSide.puts) {
      if (puts.has(k) || intersects(dels, k)) return null;
      puts.add(k);
    }
    for (const k of elseSide.puts) {
      if (puts.has(k) && !thenSide.puts.has(k)) return null;
      if (intersects(dels, k)) return null;
      puts.add(k);
    }
    dels.push(...thenSide.dels, ...elseSide.dels);
  }
  for (const req of reqs) {
    const p = req.request_put;
    if (!p) continue;
    const k = keyString(p.key);
    if (puts.has(k) || intersects(dels, k)) return null;
    puts.add(k);
  }
  return { puts, dels };
}
