// The storage worker: owns the LMDB environment, the raft log on disk and the MVCC state.
//
// Per batch from the main thread, in this order:
//   1. queue the new raft entries (and hard state) as LMDB writes;
//   2. apply the committed entries to MVCC (index in memory, records queued as LMDB writes),
//      encode each response, and record the applied index with them;
//   3. serve the reads, which see everything applied so far;
//   4. post the answers of 2 and 3 at once (reads never wait for a fsync);
//   5. when LMDB has fsynced the transaction carrying 1, post Persisted: only then may raft
//      count the entries as durable and commit them.
// All writes queued in one event turn share one LMDB transaction and one fsync (group commit).
import { parentPort } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';
import Long from 'long';
import { concordpb, etcdserverpb } from '../gen/proto';
import { Applier, RangeAnswer } from '../apply/applier';
import { KVStore, toNumber } from '../mvcc/kvstore';
import { Backend } from '../storage/backend';
import * as schema from '../storage/schema';
import { assert } from '../util/assert';
import { ConcordError } from '../util/errors';
import { compactionBatchKeys, logRetainEntries } from '../config/limits';
import {
  FromWorker, PackReader, PackWriter, ReadKind, ToWorker, WorkerInit, WorkerMessageType,
} from './protocol';

type Header = etcdserverpb.ResponseHeader.$Properties;

interface Compaction {
  rev: number;
  nextKey: string;
  /** Proposal ids waiting for the sweep to finish (physical compaction). */
  waiters: { id: number; response: Uint8Array }[];
}

class StorageWorker {
  private readonly backend: Backend;
  private readonly store: KVStore;
  private readonly applier: Applier;
  private readonly clusterId: Long;
  private readonly memberId: Long;
  private appliedIndex: number;
  private logFirst: number; // first index still in the log db
  private raftTerm: number;
  private readonly results: PackWriter;
  private resultCount: number;
  private readonly reads: PackWriter;
  private readCount: number;
  private compaction: Compaction | null;
  private compactionScheduled: boolean;
  private sizesAtMs: number;
  private sizes: { dbSize: number; dbSizeInUse: number };

  constructor(init: WorkerInit) {
    this.backend = new Backend({ path: init.dataDir, mapSizeBytes: init.mapSizeBytes });
    this.store = new KVStore(this.backend);
    this.store.restore();
    this.applier = new Applier(this.store);
    this.clusterId = this.loadId(schema.metaClusterId);
    this.memberId = this.loadId(schema.metaMemberId);
    this.appliedIndex = this.backend.getMetaU64(schema.metaConsistentIndex);
    const first = this.backend.getMetaBytes(schema.metaLogFirst);
    this.logFirst = first ? schema.readU64(first, 0) + 1 : 1;
    this.raftTerm = 0;
    this.results = new PackWriter(64 * 1024);
    this.resultCount = 0;
    this.reads = new PackWriter(64 * 1024);
    this.readCount = 0;
    this.compaction = null;
    this.compactionScheduled = false;
    this.sizesAtMs = 0;
    this.sizes = this.backend.sizes();
    // A compaction that was scheduled but not finished before a restart is finished now.
    const scheduled = this.backend.getMetaU64(schema.metaScheduledCompact);
    const finished = this.backend.getMetaU64(schema.metaFinishedCompact);
    if (scheduled > finished) this.startCompaction(scheduled);
  }

  private loadId(name: string): Long {
    let b = this.backend.getMetaBytes(name);
    if (b === undefined) {
      b = randomBytes(8);
      b[0]! &= 0x7f; // keep it positive as int64 too
      this.backend.putMetaBytes(name, b);
    }
    return Long.fromBits(b.readUInt32BE(4), b.readUInt32BE(0), true);
  }

  ready(): FromWorker {
    const hsBytes = this.backend.getMetaBytes(schema.metaHardState);
    const hardState = hsBytes ? schema.decodeHardState(hsBytes) : { term: 0, vote: 0, commit: 0 };
    const firstBytes = this.backend.getMetaBytes(schema.metaLogFirst);
    const snapshotIndex = firstBytes ? schema.readU64(firstBytes, 0) : 0;
    const snapshotTerm = firstBytes ? schema.readU64(firstBytes, 8) : 0;
    const w = new PackWriter(64 * 1024);
    const countAt = w.u32Placeholder();
    let count = 0;
    let expect = snapshotIndex + 1;
    for (const { key, value } of this.backend.log.getRange({ start: schema.logKey(snapshotIndex + 1) })) {
      const index = schema.readU64(key, 0);
      assert(index === expect, 'raft log gap on disk');
      expect++;
      w.entry({ index, term: schema.readU64(value, 0), type: value[8]!, data: value.subarray(9) });
      count++;
    }
    w.patchU32(countAt, count);
    return {
      type: WorkerMessageType.Ready,
      clusterId: this.clusterId.toString(),
      memberId: this.memberId.toString(),
      hardState,
      appliedIndex: this.appliedIndex,
      snapshotIndex,
      snapshotTerm,
      entries: w.finish(),
      currentRev: this.store.currentRev,
      compactRev: this.store.compactMainRev,
    };
  }

  batch(data: Uint8Array): void {
    const r = new PackReader(data);
    if (r.u8() === 1) {
      const hs = { term: r.u53(), vote: r.u53(), commit: r.u53() };
      this.backend.putMetaBytes(schema.metaHardState, schema.encodeHardState(hs));
    }
    this.raftTerm = r.u53();
    let lastIndex = 0;
    let lastTerm = 0;
    for (let n = r.u32(); n > 0; n--) {
      const e = r.entry();
      void this.backend.log.put(schema.logKey(e.index), schema.encodeLogValue(e.term, e.type, e.data));
      lastIndex = e.index;
      lastTerm = e.term;
    }
    let applied = 0;
    for (let n = r.u32(); n > 0; n--) {
      const e = r.entry();
      if (e.index <= this.appliedIndex) continue; // replayed after a restart: already in MVCC
      assert(e.index === this.appliedIndex + 1, 'apply gap');
      this.applyEntry(e.data);
      this.appliedIndex = e.index;
      applied++;
    }
    if (applied > 0) {
      this.backend.putMetaU64(schema.metaConsistentIndex, this.appliedIndex);
      this.backend.putMetaU64(schema.metaCurrentRev, this.store.currentRev);
      this.truncateLog();
    }
    for (let n = r.u32(); n > 0; n--) {
      const readId = r.u32();
      const kind = r.u8();
      this.serveRead(readId, kind, r.bytes());
    }
    if (applied > 0 || this.resultCount > 0 || this.readCount > 0) this.postApplied();
    if (lastIndex > 0) {
      const index = lastIndex;
      const term = lastTerm;
      void this.backend.flushed().then(() => {
        post({ type: WorkerMessageType.Persisted, index, term });
      });
    }
  }

  private header(revision: number): Header {
    return { cluster_id: this.clusterId, member_id: this.memberId, revision, raft_term: this.raftTerm };
  }

  private applyEntry(data: Uint8Array): void {
    if (data.length === 0) return; // leader's empty entry of a new term
    const req = concordpb.InternalRequest.decode(data);
    const id = toNumber(req.id);
    try {
      let response: Uint8Array;
      if (req.put) {
        const resp = this.applier.put(null, req.put);
        resp.header = this.header(toNumber(resp.header!.revision));
        response = etcdserverpb.PutResponse.encode(resp).finish();
      } else if (req.delete_range) {
        const resp = this.applier.deleteRange(null, req.delete_range);
        resp.header = this.header(toNumber(resp.header!.revision));
        response = etcdserverpb.DeleteRangeResponse.encode(resp).finish();
      } else if (req.txn) {
        const resp = this.applier.txn(req.txn);
        resp.header = this.header(toNumber(resp.header!.revision));
        response = etcdserverpb.TxnResponse.encode(resp).finish();
      } else if (req.compaction) {
        const rev = this.applier.compaction(req.compaction);
        response = etcdserverpb.CompactionResponse.encode({ header: this.header(rev) }).finish();
        this.startCompaction(this.store.compactMainRev);
        if (req.compaction.physical) {
          this.compaction!.waiters.push({ id, response });
          return;
        }
      } else {
        assert(false, 'unknown internal request');
      }
      this.addResult(id, 0, response);
    } catch (err) {
      if (!(err instanceof ConcordError)) throw err;
      this.addResult(id, err.code, emptyResponse);
    }
  }

  private addResult(id: number, code: number, response: Uint8Array): void {
    this.results.u53(id);
    this.results.u8(code);
    this.results.bytes(response);
    this.resultCount++;
  }

  private serveRead(readId: number, kind: number, request: Uint8Array): void {
    let code = 0;
    let response: Uint8Array = emptyResponse;
    try {
      if (kind === ReadKind.Range) {
        const answer = this.applier.range(null, etcdserverpb.RangeRequest.decode(request));
        response = this.encodeRange(answer);
      } else {
        assert(kind === ReadKind.Status, 'read kind');
        const status = etcdserverpb.StatusResponse.decode(request);
        this.refreshSizes(true);
        status.header = this.header(this.store.currentRev) as etcdserverpb.ResponseHeader;
        status.dbSize = this.sizes.dbSize;
        status.dbSizeInUse = this.sizes.dbSizeInUse;
        response = etcdserverpb.StatusResponse.encode(status).finish();
      }
    } catch (err) {
      if (!(err instanceof ConcordError)) throw err;
      code = err.code;
    }
    this.reads.u32(readId);
    this.reads.u8(code);
    this.reads.bytes(response);
    this.readCount++;
  }

  /**
   * RangeResponse{header, more, count} followed by the stored KeyValue records as field 2, as
   * they are on disk: no decode and re-encode per key. Field order is free in protobuf.
   */
  private encodeRange(a: RangeAnswer): Uint8Array {
    const head = etcdserverpb.RangeResponse.encode({
      header: this.header(a.revision), more: a.more, count: a.count,
    }).finish();
    let size = head.length;
    for (const kv of a.kvs) size += 1 + varintSize(kv.length) + kv.length;
    const out = Buffer.allocUnsafe(size);
    out.set(head, 0);
    let pos = head.length;
    for (const kv of a.kvs) {
      out[pos++] = 0x12; // field 2, length-delimited
      pos = writeVarint(out, pos, kv.length);
      out.set(kv, pos);
      pos += kv.length;
    }
    assert(pos === size, 'range encoding size');
    return out;
  }

  private postApplied(): void {
    const w = new PackWriter(32 + this.results.length + this.reads.length);
    w.u53(this.appliedIndex);
    w.u53(this.store.currentRev);
    w.u53(Math.max(this.store.compactMainRev, 0));
    w.u32(this.resultCount);
    const results = this.results.finish();
    const reads = this.reads.finish();
    const data = new Uint8Array(w.length + results.length + 4 + reads.length);
    data.set(w.finish(), 0);
    data.set(results, w.length);
    Buffer.from(data.buffer).writeUInt32LE(this.readCount, w.length + results.length);
    data.set(reads, w.length + results.length + 4);
    this.results.reset();
    this.reads.reset();
    this.resultCount = 0;
    this.readCount = 0;
    this.refreshSizes(false);
    post({ type: WorkerMessageType.Applied, data, dbSize: this.sizes.dbSize, dbSizeInUse: this.sizes.dbSizeInUse },
      [data.buffer]);
  }

  private refreshSizes(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.sizesAtMs < 100) return;
    this.sizesAtMs = now;
    this.sizes = this.backend.sizes();
  }

  /** Drops raft log entries far behind the applied index (etcd: snapshot + log compaction). */
  private truncateLog(): void {
    const keepFrom = this.appliedIndex - logRetainEntries;
    if (keepFrom - this.logFirst < logRetainEntries) return;
    const lastDropped = keepFrom - 1;
    const v = this.backend.log.getBinary(schema.logKey(lastDropped));
    assert(v !== undefined, 'log entry to truncate missing');
    const first = Buffer.allocUnsafe(16);
    schema.writeU64(first, 0, lastDropped);
    schema.writeU64(first, 8, schema.readU64(v, 0));
    for (let i = this.logFirst; i <= lastDropped; i++) void this.backend.log.remove(schema.logKey(i));
    this.backend.putMetaBytes(schema.metaLogFirst, first);
    this.logFirst = keepFrom;
  }

  // ---- compaction sweep, in steps so that apply and reads go on meanwhile ----

  private startCompaction(rev: number): void {
    if (this.compaction === null) {
      this.compaction = { rev, nextKey: '', waiters: [] };
    } else {
      // A newer target supersedes the running sweep: restart it at the new revision.
      this.compaction.rev = rev;
      this.compaction.nextKey = '';
    }
    this.scheduleCompactionStep();
  }

  private scheduleCompactionStep(): void {
    if (this.compactionScheduled) return;
    this.compactionScheduled = true;
    setImmediate(() => {
      this.compactionScheduled = false;
      this.compactionStep();
    });
  }

  private compactionStep(): void {
    const c = this.compaction;
    if (c === null) return;
    const next = this.store.compactStep(c.rev, c.nextKey, compactionBatchKeys);
    if (next !== null) {
      c.nextKey = next;
      this.scheduleCompactionStep();
      return;
    }
    this.compaction = null;
    if (c.waiters.length === 0) return;
    // physical: answer once the removal is durable
    void this.backend.flushed().then(() => {
      for (const wtr of c.waiters) this.addResult(wtr.id, 0, wtr.response);
      this.postApplied();
    });
  }

  async close(): Promise<void> {
    await this.backend.close();
  }
}

const emptyResponse = new Uint8Array(0);

function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

function post(msg: FromWorker, transfer?: ArrayBuffer[]): void {
  parentPort!.postMessage(msg, transfer);
}

let worker: StorageWorker | null = null;

parentPort!.on('message', (msg: ToWorker) => {
  try {
    switch (msg.type) {
      case WorkerMessageType.Init:
        worker = new StorageWorker(msg);
        post(worker.ready());
        break;
      case WorkerMessageType.Batch:
        worker!.batch(msg.data);
        break;
      case WorkerMessageType.Close:
        void worker!.close().then(() => post({ type: WorkerMessageType.Closed }));
        break;
    }
  } catch (err) {
    // A bug or a storage failure: the process must stop before it acknowledges anything more.
    post({ type: WorkerMessageType.Fatal, message: (err as Error).stack ?? String(err) });
  }
});
