// Applies committed requests to the MVCC store with etcd's semantics
// (etcd 3.4: etcdserver/apply.go applierV3backend). Every function here is deterministic in the
// store's state and the request, so every member that applies the same log gets the same store.
import Long from 'long';
import { etcdserverpb, mvccpb } from '../gen/proto';
import { KVStore, RangeResult, TxnWrite, toNumber } from '../mvcc/kvstore';
import { RangeEnd } from '../mvcc/index';
import { assert } from '../util/assert';
import { errCompacted, errFutureRev, errKeyNotFound, errLeaseNotFound } from '../util/errors';
import { goSort, goSortReverse } from '../util/go_sort';
import type { LeaseStore } from '../lease/lease_store';

type RangeRequest = etcdserverpb.RangeRequest.$Properties;
type PutRequest = etcdserverpb.PutRequest.$Properties;
type DeleteRangeRequest = etcdserverpb.DeleteRangeRequest.$Properties;
type TxnRequest = etcdserverpb.TxnRequest.$Properties;
type RequestOp = etcdserverpb.RequestOp.$Properties;
type Compare = etcdserverpb.Compare.$Properties;
type KeyValue = mvccpb.KeyValue.$Properties;

const SortOrder = etcdserverpb.RangeRequest.SortOrder;
const SortTarget = etcdserverpb.RangeRequest.SortTarget;
const CompareResult = etcdserverpb.Compare.CompareResult;
const CompareTarget = etcdserverpb.Compare.CompareTarget;

const emptyBytes = new Uint8Array(0);

/** Leases are a later issue; until then no lease exists, as on a server with none granted. */
export interface LeaseLookup {
  exists(id: Long | number): boolean;
}

export const noLeases: LeaseLookup = { exists: () => false };

/** A Range answer: raw KeyValue records, ready to be spliced into a RangeResponse. */
export interface RangeAnswer {
  revision: number;
  kvs: Uint8Array[];
  more: boolean;
  count: number;
}

export function keyString(key: Uint8Array | null | undefined): string {
  if (!key || key.length === 0) return '';
  return Buffer.from(key.buffer, key.byteOffset, key.length).toString('latin1');
}

/** etcd mkGteRange + the nil/empty distinction of treeIndex.Range. */
export function rangeEnd(end: Uint8Array | null | undefined): RangeEnd {
  if (!end || end.length === 0) return null;
  if (end.length === 1 && end[0] === 0) return '';
  return keyString(end);
}

function isZero(v: number | Long | null | undefined): boolean {
  if (v === null || v === undefined) return true;
  if (typeof v === 'number') return v === 0;
  return v.isZero();
}

type Reader = { range(key: string, end: RangeEnd, rev: number, limit: number, countOnly: boolean): RangeResult };

export class Applier {
  readonly store: KVStore;
  leases: LeaseLookup;

  constructor(store: KVStore) {
    this.store = store;
    this.leases = noLeases;
  }

  /** Sets the lease state puts are checked against and revokes delete from. */
  useLeases(leases: LeaseStore): void {
    this.leases = leases;
    this.leaseStore = leases;
    this.store.leaseAttachments = leases;
  }

  private leaseStore: LeaseStore | null = null;

  // ---- Lease (etcd applierV3backend.LeaseGrant, LeaseRevoke, LeaseCheckpoint) ----

  leaseGrant(r: etcdserverpb.LeaseGrantRequest.$Properties): etcdserverpb.LeaseGrantResponse.$Properties {
    const lease = this.leaseStore!.grant(Long.fromValue(r.ID ?? 0), toNumber(r.TTL));
    return { header: { revision: this.store.currentRev }, ID: lease.id, TTL: lease.ttl };
  }

  /** Deletes every attached key in one revision (one DELETE event each, key order), then the lease. */
  leaseRevoke(r: etcdserverpb.LeaseRevokeRequest.$Properties): etcdserverpb.LeaseRevokeResponse.$Properties {
    const leases = this.leaseStore!;
    const id = Long.fromValue(r.ID ?? 0);
    const keys = leases.keysToRevoke(id);
    if (keys.length > 0) {
      const w = this.store.write();
      for (const key of keys) w.deleteRange(key, null);
      w.end();
    }
    leases.remove(id);
    return { header: { revision: this.store.currentRev } };
  }

  leaseCheckpoint(r: etcdserverpb.LeaseCheckpointRequest.$Properties): etcdserverpb.LeaseCheckpointResponse.$Properties {
    for (const cp of r.checkpoints ?? []) this.leaseStore!.checkpoint(Long.fromValue(cp.ID ?? 0), toNumber(cp.remaining_TTL));
    return { header: { revision: this.store.currentRev } };
  }

  // ---- Range (etcd applierV3backend.Range) ----

  range(reader: Reader | null, r: RangeRequest): RangeAnswer {
    const rd: Reader = reader ?? this.store;
    const sortOrder = r.sort_order ?? SortOrder.NONE;
    const sortTarget = r.sort_target ?? SortTarget.KEY;
    const minMod = toNumber(r.min_mod_revision);
    const maxMod = toNumber(r.max_mod_revision);
    const minCreate = toNumber(r.min_create_revision);
    const maxCreate = toNumber(r.max_create_revision);
    const limitReq = toNumber(r.limit);
    let limit = limitReq;
    if (sortOrder !== SortOrder.NONE || minMod !== 0 || maxMod !== 0 || minCreate !== 0 ||
      maxCreate !== 0) {
      limit = 0; // fetch everything; filter, sort and truncate afterwards
    }
    if (limit > 0) limit++; // one more, to know whether there is more
    const rr = rd.range(keyString(r.key), rangeEnd(r.range_end), toNumber(r.revision), limit,
      r.count_only === true);
    let kvs = rr.kvs;
    const filtering = minMod !== 0 || maxMod !== 0 || minCreate !== 0 || maxCreate !== 0;
    let order = sortOrder;
    if (sortTarget !== SortTarget.KEY && order === SortOrder.NONE) order = SortOrder.ASCEND;
    // etcd sorts only for ASCEND and DESCEND: an order outside the enum keeps key order (it still
    // turned the limit into fetch-all-then-truncate above, as in etcd).
    const sorting = (order === SortOrder.ASCEND || order === SortOrder.DESCEND) &&
      !(sortTarget === SortTarget.KEY && order === SortOrder.ASCEND);
    if (filtering || sorting) {
      let decoded = kvs.map((b) => ({ b, kv: mvccpb.KeyValue.decode(b) }));
      if (filtering) {
        decoded = decoded.filter(({ kv }) => {
          const mod = toNumber(kv.mod_revision);
          const create = toNumber(kv.create_revision);
          if (maxMod !== 0 && mod > maxMod) return false;
          if (minMod !== 0 && mod < minMod) return false;
          if (maxCreate !== 0 && create > maxCreate) return false;
          if (minCreate !== 0 && create < minCreate) return false;
          return true;
        });
      }
      if (sorting) {
        // etcd: sort.Sort(sorter) or sort.Sort(sort.Reverse(sorter)); Go's sort is not stable,
        // and which of equal elements comes first is part of the answer (util/go_sort.ts).
        const d = decoded;
        const data = {
          length: d.length,
          less: (i: number, j: number) => compareBy(sortTarget, d[i]!.kv, d[j]!.kv) < 0,
          swap: (i: number, j: number) => {
            const t = d[i]!;
            d[i] = d[j]!;
            d[j] = t;
          },
        };
        if (order === SortOrder.DESCEND) goSortReverse(data);
        else goSort(data);
      }
      kvs = decoded.map((d) => d.b);
    }
    let more = false;
    if (limitReq > 0 && kvs.length > limitReq) {
      kvs = kvs.slice(0, limitReq);
      more = true;
    }
    if (r.keys_only === true) kvs = kvs.map(stripValue);
    return { revision: rr.rev, kvs, more, count: rr.count };
  }

  // ---- Put (etcd applierV3backend.Put) ----

  put(txn: TxnWrite | null, p: PutRequest): etcdserverpb.PutResponse.$Properties {
    const own = txn === null;
    if (own && !isZero(p.lease) && !this.leases.exists(p.lease!)) throw errLeaseNotFound;
    const w = txn ?? this.store.write();
    try {
      return this.putIn(w, p);
    } finally {
      if (own) w.end();
    }
  }

  private putIn(w: TxnWrite, p: PutRequest): etcdserverpb.PutResponse.$Properties {
    const key = p.key ?? emptyBytes;
    const keyStr = keyString(key);
    let value = p.value ?? emptyBytes;
    let lease: Long | number = p.lease ?? 0;
    let prev: Uint8Array | undefined;
    if (p.ignore_value || p.ignore_lease || p.prev_kv) {
      const rr = w.range(keyStr, null, 0, 0, false);
      prev = rr.kvs[0];
    }
    let prevKv: KeyValue | undefined;
    if (prev !== undefined) prevKv = mvccpb.KeyValue.decode(prev);
    if (p.ignore_value || p.ignore_lease) {
      if (prevKv === undefined) throw errKeyNotFound;
    }
    if (p.ignore_value) value = prevKv!.value ?? emptyBytes;
    if (p.ignore_lease) lease = prevKv!.lease ?? 0;
    const rev = w.put(key, keyStr, value, lease);
    const resp: etcdserverpb.PutResponse.$Properties = { header: { revision: rev } };
    if (p.prev_kv && prevKv !== undefined) resp.prev_kv = prevKv;
    return resp;
  }

  // ---- DeleteRange (etcd applierV3backend.DeleteRange) ----

  deleteRange(txn: TxnWrite | null, dr: DeleteRangeRequest): etcdserverpb.DeleteRangeResponse.$Properties {
    const w = txn ?? this.store.write();
    try {
      const key = keyString(dr.key);
      const end = rangeEnd(dr.range_end);
      const resp: etcdserverpb.DeleteRangeResponse.$Properties = {};
      if (dr.prev_kv) {
        const rr = w.range(key, end, 0, 0, false);
        resp.prev_kvs = rr.kvs.map((b) => mvccpb.KeyValue.decode(b));
      }
      const deleted = w.deleteRange(key, end);
      resp.deleted = deleted;
      resp.header = { revision: deleted > 0 || w.changes.length > 0 ? w.beginRev + 1 : w.beginRev };
      return resp;
    } finally {
      if (txn === null) w.end();
    }
  }

  // ---- Txn (etcd applierV3backend.Txn) ----

  txn(rt: TxnRequest): etcdserverpb.TxnResponse.$Properties {
    // Compares of the whole tree are evaluated first, against the state before any write.
    const path: boolean[] = [];
    this.compareToPath(rt, path);
    if (!isTxnReadonly(rt)) {
      const deleted: DeletedSpan[] = [];
      this.checkRequests(rt, path, 0, (a, op) => checkPut(a, op, deleted));
    }
    this.checkRequests(rt, path, 0, checkRange);
    const w = this.store.write();
    const resp: etcdserverpb.TxnResponse.$Properties = { header: {} };
    try {
      this.applyTxn(w, rt, path, 0, resp);
    } catch (err) {
      // The checks above make every op succeed (etcd panics otherwise). An error after a write
      // would leave the writes in the index and backend at a revision the store never reaches.
      assert(w.changes.length === 0, 'txn failed after writing: ' + String(err));
      throw err;
    }
    const rev = w.changes.length > 0 ? w.beginRev + 1 : w.beginRev;
    w.end();
    resp.header = { revision: rev };
    return resp;
  }

  private compareToPath(rt: TxnRequest, path: boolean[]): void {
    const ok = this.applyCompares(rt.compare ?? []);
    path.push(ok);
    const ops = ok ? rt.success ?? [] : rt.failure ?? [];
    for (const op of ops) if (op.request_txn) this.compareToPath(op.request_txn, path);
  }

  /** Returns the number of nested txns visited (etcd checkRequests). */
  private checkRequests(rt: TxnRequest, path: boolean[], at: number,
    check: (a: Applier, op: RequestOp) => void): number {
    const ops = path[at] ? rt.success ?? [] : rt.failure ?? [];
    let txns = 0;
    for (const op of ops) {
      if (op.request_txn) {
        const n = this.checkRequests(op.request_txn, path, at + txns + 1, check);
        txns += n + 1;
      } else {
        check(this, op);
      }
    }
    return txns;
  }

  private applyTxn(w: TxnWrite, rt: TxnRequest, path: boolean[], at: number,
    resp: etcdserverpb.TxnResponse.$Properties): number {
    const succeeded = path[at]!;
    resp.succeeded = succeeded;
    const ops = succeeded ? rt.success ?? [] : rt.failure ?? [];
    const responses: etcdserverpb.ResponseOp.$Properties[] = [];
    let txns = 0;
    for (const op of ops) {
      if (op.request_range) {
        const a = this.range(w, op.request_range);
        responses.push({
          response_range: {
            header: { revision: a.revision },
            kvs: a.kvs.map((b) => mvccpb.KeyValue.decode(b)),
            more: a.more,
            count: a.count,
          },
        });
      } else if (op.request_put) {
        responses.push({ response_put: this.put(w, op.request_put) });
      } else if (op.request_delete_range) {
        responses.push({ response_delete_range: this.deleteRange(w, op.request_delete_range) });
      } else if (op.request_txn) {
        const nested: etcdserverpb.TxnResponse.$Properties = { header: {} };
        const n = this.applyTxn(w, op.request_txn, path, at + txns + 1, nested);
        txns += n + 1;
        responses.push({ response_txn: nested });
      }
    }
    resp.responses = responses;
    return txns;
  }

  /** etcd applyCompares: all must hold. */
  private applyCompares(cmps: Compare[]): boolean {
    for (const c of cmps) if (!this.applyCompare(c)) return false;
    return true;
  }

  private applyCompare(c: Compare): boolean {
    let rr: RangeResult;
    try {
      rr = this.store.range(keyString(c.key), rangeEnd(c.range_end), 0, 0, false);
    } catch {
      return false;
    }
    const target = c.target ?? CompareTarget.VERSION;
    if (rr.kvs.length === 0) {
      // A value compare on a missing key always fails: nil and "" look alike on the wire.
      if (target === CompareTarget.VALUE) return false;
      return compareKV(c, zeroKv);
    }
    for (const b of rr.kvs) if (!compareKV(c, mvccpb.KeyValue.decode(b))) return false;
    return true;
  }

  // ---- Compaction (etcd applierV3backend.Compaction) ----

  /** Validates and schedules; the caller runs the physical sweep. Returns the header revision. */
  compaction(c: etcdserverpb.CompactionRequest.$Properties): number {
    this.store.scheduleCompaction(toNumber(c.revision));
    return this.store.currentRev;
  }
}

const zeroKv: KeyValue = {
  key: emptyBytes, create_revision: 0, mod_revision: 0, version: 0, value: emptyBytes, lease: 0,
};

/** A key range a delete of the txn covers: [key, end), end as rangeEnd() gives it. */
interface DeletedSpan { key: string; end: RangeEnd }

function inSpan(s: DeletedSpan, key: string): boolean {
  if (s.end === null) return key === s.key;
  return key >= s.key && (s.end === '' || key < s.end);
}

/**
 * etcd checkRequestPut, over the ops in the order they will run; `deleted` collects the deletes
 * met so far. etcd checks ignore_value / ignore_lease against the store before the txn only; the
 * duplicate-key rule keeps a put from following a delete of its key, except a from-key delete
 * (range_end "\0", which etcd's interval check does not treat as a range). After such a delete
 * etcd's Put fails in the middle of the txn and etcd 3.4 panics ("unexpected error during txn");
 * concord refuses the txn here, whole, with the error that Put met.
 */
function checkPut(a: Applier, op: RequestOp, deleted: DeletedSpan[]): void {
  const d = op.request_delete_range;
  if (d) {
    deleted.push({ key: keyString(d.key), end: rangeEnd(d.range_end) });
    return;
  }
  const p = op.request_put;
  if (!p) return;
  // etcd checkRequestPut: the key first, then the lease (a plain Put checks them the other way).
  if (p.ignore_value || p.ignore_lease) {
    const key = keyString(p.key);
    const rr = a.store.range(key, null, 0, 0, false);
    if (rr.kvs.length === 0) throw errKeyNotFound;
    for (const s of deleted) if (inSpan(s, key)) throw errKeyNotFound;
  }
  if (!isZero(p.lease) && !a.leases.exists(p.lease!)) throw errLeaseNotFound;
}

function checkRange(a: Applier, op: RequestOp): void {
  const r = op.request_range;
  if (!r) return;
  const rev = toNumber(r.revision);
  if (rev === 0) return;
  if (rev > a.store.currentRev) throw errFutureRev;
  if (rev < a.store.compactMainRev) throw errCompacted;
}

export function isTxnReadonly(rt: TxnRequest): boolean {
  for (const ops of [rt.success ?? [], rt.failure ?? []]) {
    for (const op of ops) {
      if (op.request_put || op.request_delete_range) return false;
      if (op.request_txn && !isTxnReadonly(op.request_txn)) return false;
    }
  }
  return true;
}

function compareBytes(a: Uint8Array | null | undefined, b: Uint8Array | null | undefined): number {
  return Buffer.compare(a ? Buffer.from(a.buffer, a.byteOffset, a.length) : emptyBuffer,
    b ? Buffer.from(b.buffer, b.byteOffset, b.length) : emptyBuffer);
}
const emptyBuffer = Buffer.alloc(0);

function compareInt(a: number | Long | null | undefined, b: number | Long | null | undefined): number {
  return Long.fromValue(a ?? 0).compare(Long.fromValue(b ?? 0));
}

function compareBy(target: number, a: KeyValue, b: KeyValue): number {
  switch (target) {
    case SortTarget.KEY: return compareBytes(a.key, b.key);
    case SortTarget.VERSION: return compareInt(a.version, b.version);
    case SortTarget.CREATE: return compareInt(a.create_revision, b.create_revision);
    case SortTarget.MOD: return compareInt(a.mod_revision, b.mod_revision);
    case SortTarget.VALUE: return compareBytes(a.value, b.value);
    default: return 0;
  }
}

/** etcd compareKV: an unknown target compares as equal (0), an unknown result holds. */
function compareKV(c: Compare, kv: KeyValue): boolean {
  let result = 0;
  const u = c.target_union;
  switch (c.target ?? CompareTarget.VERSION) {
    case CompareTarget.VALUE:
      result = compareBytes(kv.value, u === 'value' ? c.value : emptyBytes);
      break;
    case CompareTarget.CREATE:
      result = compareInt(kv.create_revision, u === 'create_revision' ? c.create_revision : 0);
      break;
    case CompareTarget.MOD:
      result = compareInt(kv.mod_revision, u === 'mod_revision' ? c.mod_revision : 0);
      break;
    case CompareTarget.VERSION:
      result = compareInt(kv.version, u === 'version' ? c.version : 0);
      break;
    case CompareTarget.LEASE:
      result = compareInt(kv.lease, u === 'lease' ? c.lease : 0);
      break;
    default:
      result = 0; // etcd compareKV: a target outside the enum compares as equal
  }
  switch (c.result ?? CompareResult.EQUAL) {
    case CompareResult.EQUAL: return result === 0;
    case CompareResult.NOT_EQUAL: return result !== 0;
    case CompareResult.GREATER: return result > 0;
    case CompareResult.LESS: return result < 0;
    default: return true; // etcd compareKV: a result outside the enum holds
  }
}

function stripValue(b: Uint8Array): Uint8Array {
  const kv = mvccpb.KeyValue.decode(b);
  kv.value = emptyBytes;
  return mvccpb.KeyValue.encode(kv).finish();
}
