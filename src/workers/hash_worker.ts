// The hash thread: Maintenance.Hash and HashKV scans (mvcc/hash.ts), started by the storage
// worker on the first request and kept for later ones.
//
// Why a thread of its own reading LMDB, rather than chunks on the storage worker: a scan reads
// every revision record (100k keys: tens of ms of CPU), and LMDB gives a consistent snapshot to
// any thread for free (one read transaction; lmdb-js shares the process's environment between
// threads, as the watch worker does). The storage worker only commits what it applied first
// (so the snapshot holds the revision asked for) and goes on applying and reading meanwhile;
// chunking on its thread would need a snapshot kept consistent across its own writes, and would
// still spend its CPU. The main thread never sees the scan.
//
// The kv environment: opened by path under the kv environment lock and reopened when a raft
// snapshot install replaced the store (its generation moved; watch/events.ts KvEnvSlots). An
// install waits for a running scan (the storage worker runs scans on its create chain).
import { parentPort, workerData } from 'node:worker_threads';
import { open, RootDatabase, Database } from 'lmdb';
import * as schema from '../storage/schema';
import { hashKv, hashState, StateSource } from '../mvcc/hash';
import { KvEnvSlots } from '../watch/events';
import { ErrorCode } from '../util/errors';
import type { HashThreadAnswer, HashThreadInit, HashThreadRequest } from './protocol';

const init = workerData as HashThreadInit;
const kvEnv = new KvEnvSlots(init.eventRing);

let env: RootDatabase | null = null;
let generation = -1;
let kv: Database<Buffer, Buffer> = null as unknown as Database<Buffer, Buffer>;
let meta: Database<Buffer, string> = null as unknown as Database<Buffer, string>;
let lease: Database<Buffer, Buffer> = null as unknown as Database<Buffer, Buffer>;

function openEnv(): void {
  if (env !== null && kvEnv.generation === generation) return;
  const old = env;
  kvEnv.lock();
  try {
    // The storage worker's options (storage/lmdb_engine.ts): one environment per process.
    env = open({ path: init.kvPath, maxDbs: 8, mapSize: init.mapSizeBytes, overlappingSync: false });
    generation = kvEnv.generation;
  } finally {
    kvEnv.unlock();
  }
  if (old !== null) void old.close();
  kv = env.openDB<Buffer, Buffer>({ name: schema.dbKey, keyEncoding: 'binary', encoding: 'binary' });
  meta = env.openDB<Buffer, string>({ name: schema.dbMeta, encoding: 'binary' });
  lease = env.openDB<Buffer, Buffer>({ name: schema.dbLease, keyEncoding: 'binary', encoding: 'binary' });
}

function run(rq: HashThreadRequest): HashThreadAnswer {
  const t0 = performance.now();
  openEnv();
  const txn = env!.useReadTransaction();
  try {
    const metaOf = (name: string): Uint8Array | undefined => (meta.get as (k: string, o: unknown) => Buffer | undefined)(name, { transaction: txn });
    const cur = metaOf(schema.metaCurrentRev);
    const currentRev = Math.max(1, cur !== undefined ? schema.readU64(cur, 0) : 0);
    const sc = metaOf(schema.metaScheduledCompact);
    const compactRev = sc !== undefined ? schema.readU64(sc, 0) : -1;
    const src: StateSource = {
      forEach(fromMain, toMain, visit) {
        if (fromMain > toMain) return;
        const range = kv.getRange({ start: schema.revKey(fromMain, 0, false), end: schema.revKey(toMain + 1, 0, false), transaction: txn } as never);
        for (const { key, value } of range) visit(key as Buffer, value as Buffer);
      },
      forEachLease(visit) {
        for (const { key, value } of lease.getRange({ transaction: txn } as never)) visit(key as Buffer, value as Buffer);
      },
      meta: metaOf,
    };
    const answer: HashThreadAnswer = { id: rq.id, error: 0, hash: 0, compactRev, currentRev, rev: 0, records: 0, ms: 0 };
    if (rq.kind === 'hash') {
      answer.hash = hashState(src, currentRev, compactRev);
      answer.rev = currentRev;
    } else {
      // The storage worker checked the revision against its state; a compaction applied since
      // may have moved past it (etcd checks once, under its lock: the same answer, later).
      const rev = rq.rev === 0 ? currentRev : rq.rev;
      if (rq.rev > 0 && rev <= compactRev) {
        answer.error = ErrorCode.Compacted;
      } else {
        // The storage worker committed everything applied before asking.
        if (rev > currentRev) throw new Error(`hash: revision ${rev} asked, the snapshot is at ${currentRev}`);
        const r = hashKv(src, rev, compactRev);
        answer.hash = r.hash;
        answer.records = r.records;
        answer.rev = rev;
      }
    }
    answer.ms = performance.now() - t0;
    return answer;
  } finally {
    txn.done();
  }
}

parentPort!.on('message', (rq: HashThreadRequest) => {
  parentPort!.postMessage(run(rq));
});
