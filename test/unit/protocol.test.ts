// Worker message layouts (src/workers/protocol.ts): PackWriter/PackReader primitives and round
// trips of Batch, Applied, Persisted and the Ready entries, written and read the way
// server/etcd_server.ts and workers/storage_worker.ts do.

import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';

import type { Entry, HardState } from '../../src/raft/types';
import { AssertionError } from '../../src/util/assert';
import { PackReader, PackWriter, ReadKind, WorkerMessageType } from '../../src/workers/protocol';

const bytes = (...xs: number[]): Uint8Array => Uint8Array.from(xs);
const hex = (u: Uint8Array): string => Buffer.from(u).toString('hex');

function entry(index: number, term: number, data: Uint8Array, type = 0): Entry {
  return { index, term, type, data };
}

function plainEntry(e: Entry): [number, number, number, string] {
  return [e.index, e.term, e.type, hex(e.data)];
}

describe('PackWriter / PackReader', () => {
  test('primitives round trip, little-endian, at their boundaries', () => {
    const w = new PackWriter(8);
    w.u8(0);
    w.u8(255);
    w.u32(0);
    w.u32(0xffffffff);
    w.u53(0);
    w.u53(Number.MAX_SAFE_INTEGER);
    w.u53(-1);
    w.u53(-Number.MAX_SAFE_INTEGER);
    w.bytes(new Uint8Array(0));
    w.bytes(bytes(1, 2, 3));
    assert.equal(w.length, 2 + 8 + 32 + 4 + 7);
    const msg = w.finish();
    assert.equal(msg.length, w.length);
    // u32 is little-endian, u53 a float64 (little-endian)
    assert.equal(hex(msg.subarray(2, 10)), '00000000ffffffff');
    assert.equal(Buffer.from(msg).readDoubleLE(10 + 8), Number.MAX_SAFE_INTEGER);
    const r = new PackReader(msg);
    assert.deepEqual([r.u8(), r.u8(), r.u32(), r.u32()], [0, 255, 0, 0xffffffff]);
    assert.deepEqual([r.u53(), r.u53(), r.u53(), r.u53()], [0, Number.MAX_SAFE_INTEGER, -1, -Number.MAX_SAFE_INTEGER]);
    assert.equal(r.done(), false);
    assert.deepEqual(hex(r.bytes()), '');
    assert.deepEqual(hex(r.bytes()), '010203');
    assert.equal(r.done(), true);
  });

  test('u53 refuses what a float64 cannot hold exactly', () => {
    const w = new PackWriter(16);
    for (const v of [2 ** 53, 1.5, Number.NaN, Infinity]) assert.throws(() => w.u53(v), AssertionError);
    assert.equal(w.length, 0, 'nothing written by a refused value');
  });

  test('u32 refuses values out of range', () => {
    const w = new PackWriter(16);
    assert.throws(() => w.u32(2 ** 32), RangeError);
    assert.throws(() => w.u32(-1), RangeError);
  });

  test('the buffer grows; placeholders patched after growth keep their place', () => {
    const w = new PackWriter(2);
    w.u8(WorkerMessageType.Batch);
    const at = w.u32Placeholder();
    const big = Buffer.alloc(300_000);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    let n = 0;
    for (; n < 5; n++) w.bytes(big);
    w.patchU32(at, n);
    const r = new PackReader(w.finish());
    assert.equal(r.u8(), WorkerMessageType.Batch);
    assert.equal(r.u32(), 5);
    for (let i = 0; i < 5; i++) assert.ok(Buffer.from(r.bytes()).equals(big), `chunk ${i}`);
    assert.equal(r.done(), true);
  });

  test('a writer created with 0 bytes grows too', async () => {
    // Run in a worker: a broken growth loop would never return, and a worker can be stopped.
    const protocol = path.resolve(__dirname, '../../src/workers/protocol.js');
    const code = `
      const { parentPort } = require('node:worker_threads');
      const { PackWriter, PackReader } = require(${JSON.stringify(protocol)});
      const w = new PackWriter(0);
      w.u32(7); w.bytes(Buffer.from('abc'));
      const r = new PackReader(w.finish());
      parentPort.postMessage([r.u32(), Buffer.from(r.bytes()).toString()]);`;
    const worker = new Worker(code, { eval: true });
    const result = await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        void worker.terminate();
        reject(new Error('PackWriter(0) did not return'));
      }, 3000);
      worker.once('message', (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      worker.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    await worker.terminate();
    assert.deepEqual(result, [7, 'abc']);
  });

  test('finish copies; reset reuses; copyTo writes at an offset', () => {
    const w = new PackWriter(4);
    w.u32(0x01020304);
    const first = w.finish();
    w.reset();
    assert.equal(w.length, 0);
    w.u32(0x0a0b0c0d);
    assert.equal(hex(first), '04030201', 'finish() is not affected by later writes');
    const dst = new Uint8Array(7);
    assert.equal(w.copyTo(dst, 3), 4);
    assert.equal(hex(dst), '0000000d0c0b0a');
  });

  test('a reader over a view of a larger buffer; bytes() is a view into the message', () => {
    const w = new PackWriter(16);
    w.u8(9);
    w.bytes(bytes(5, 6));
    const inner = w.finish();
    const outer = new Uint8Array(3 + inner.length + 2);
    outer.fill(0xee);
    outer.set(inner, 3);
    const view = outer.subarray(3, 3 + inner.length);
    const r = new PackReader(view);
    assert.equal(r.u8(), 9);
    const b = r.bytes();
    assert.equal(hex(b), '0506');
    assert.equal(r.done(), true);
    outer[3 + 5] = 0x77;
    assert.equal(hex(b), '7706', 'a view, not a copy');
  });

  test('entries: index, term, type and data', () => {
    const w = new PackWriter(8);
    const es = [entry(1, 1, new Uint8Array(0)), entry(2 ** 40, 7, bytes(1, 2, 3), 1), entry(3, 2, Buffer.alloc(70_000, 0x5a))];
    for (const e of es) w.entry(e);
    const r = new PackReader(w.finish());
    const back = es.map(() => r.entry());
    assert.deepEqual(back.map(plainEntry), es.map(plainEntry));
    assert.equal(r.done(), true);
  });
});

// ---- the message layouts, as the two threads write and read them ----

interface ReadReq { id: number; kind: ReadKind; linearizable: boolean; request: Uint8Array }
interface Batch { hardState: HardState | null; raftTerm: number; append: Entry[]; apply: Entry[]; reads: ReadReq[] }

/** etcd_server.runTurn */
function writeBatch(w: PackWriter, b: Batch): Uint8Array {
  w.reset();
  w.u8(WorkerMessageType.Batch);
  if (b.hardState !== null) {
    w.u8(1);
    w.u53(b.hardState.term);
    w.u53(b.hardState.vote);
    w.u53(b.hardState.commit);
  } else {
    w.u8(0);
  }
  w.u53(b.raftTerm);
  w.u32(b.append.length);
  for (const e of b.append) w.entry(e);
  w.u32(b.apply.length);
  for (const e of b.apply) w.entry(e);
  const countAt = w.u32Placeholder();
  for (const rq of b.reads) {
    w.u32(rq.id);
    w.u8(rq.kind);
    w.u8(rq.linearizable ? 1 : 0);
    w.bytes(rq.request);
  }
  w.patchU32(countAt, b.reads.length);
  return w.finish();
}

/** storage_worker.batch */
function readBatch(data: Uint8Array): Batch {
  const r = new PackReader(data);
  assert.equal(r.u8(), WorkerMessageType.Batch);
  const hasHardState = r.u8() === 1;
  const hardState = hasHardState ? { term: r.u53(), vote: r.u53(), commit: r.u53() } : null;
  const raftTerm = r.u53();
  const append: Entry[] = [];
  for (let n = r.u32(); n > 0; n--) append.push(r.entry());
  const apply: Entry[] = [];
  for (let n = r.u32(); n > 0; n--) apply.push(r.entry());
  const reads: ReadReq[] = [];
  for (let n = r.u32(); n > 0; n--) {
    const id = r.u32();
    const kind = r.u8() as ReadKind;
    const linearizable = r.u8() === 1;
    reads.push({ id, kind, linearizable, request: r.bytes() });
  }
  assert.equal(r.done(), true, 'nothing left over');
  return { hardState, raftTerm, append, apply, reads };
}

interface Applied {
  appliedIndex: number; currentRev: number; compactRev: number; dbSize: number; dbSizeInUse: number;
  results: { id: number; code: number; response: Uint8Array }[];
  reads: { id: number; code: number; response: Uint8Array }[];
}

/** storage_worker: addResult / serveRead / postApplied */
function writeApplied(a: Applied): Uint8Array {
  const results = new PackWriter(16);
  for (const x of a.results) {
    results.u53(x.id);
    results.u8(x.code);
    results.bytes(x.response);
  }
  const reads = new PackWriter(16);
  for (const x of a.reads) {
    reads.u32(x.id);
    reads.u8(x.code);
    reads.bytes(x.response);
  }
  const m = new Uint8Array(1 + 5 * 8 + 4 + results.length + 4 + reads.length);
  const b = Buffer.from(m.buffer);
  let pos = 0;
  b[pos++] = WorkerMessageType.Applied;
  pos = b.writeDoubleLE(a.appliedIndex, pos);
  pos = b.writeDoubleLE(a.currentRev, pos);
  pos = b.writeDoubleLE(a.compactRev, pos);
  pos = b.writeDoubleLE(a.dbSize, pos);
  pos = b.writeDoubleLE(a.dbSizeInUse, pos);
  pos = b.writeUInt32LE(a.results.length, pos);
  pos += results.copyTo(m, pos);
  pos = b.writeUInt32LE(a.reads.length, pos);
  pos += reads.copyTo(m, pos);
  assert.equal(pos, m.length);
  return m;
}

/** etcd_server.onApplied */
function readApplied(data: Uint8Array): Applied {
  const r = new PackReader(data);
  assert.equal(r.u8(), WorkerMessageType.Applied);
  const out: Applied = {
    appliedIndex: r.u53(), currentRev: r.u53(), compactRev: r.u53(), dbSize: r.u53(), dbSizeInUse: r.u53(),
    results: [], reads: [],
  };
  for (let n = r.u32(); n > 0; n--) out.results.push({ id: r.u53(), code: r.u8(), response: r.bytes() });
  for (let n = r.u32(); n > 0; n--) out.reads.push({ id: r.u32(), code: r.u8(), response: r.bytes() });
  assert.equal(r.done(), true, 'nothing left over');
  return out;
}

const plainBatch = (b: Batch): unknown => ({
  ...b, append: b.append.map(plainEntry), apply: b.apply.map(plainEntry),
  reads: b.reads.map((x) => ({ ...x, request: hex(x.request) })),
});
const plainApplied = (a: Applied): unknown => ({
  ...a,
  results: a.results.map((x) => ({ ...x, response: hex(x.response) })),
  reads: a.reads.map((x) => ({ ...x, response: hex(x.response) })),
});

describe('worker message layouts', () => {
  test('message type bytes are distinct', () => {
    const types = [
      WorkerMessageType.Init, WorkerMessageType.Batch, WorkerMessageType.Close, WorkerMessageType.Ready,
      WorkerMessageType.Applied, WorkerMessageType.Persisted, WorkerMessageType.Closed, WorkerMessageType.Fatal,
    ];
    assert.equal(new Set(types).size, types.length);
    assert.deepEqual([ReadKind.Range, ReadKind.Status], [1, 2]);
  });

  test('Batch with hard state, appends, applies (overlapping) and reads', () => {
    const e1 = entry(10, 3, bytes(0xaa, 0xbb));
    const e2 = entry(11, 3, new Uint8Array(0));
    const batch: Batch = {
      hardState: { term: 3, vote: 1, commit: 11 },
      raftTerm: 3,
      append: [e1, e2],
      apply: [entry(9, 2, bytes(1)), e1, e2], // committed entries may include this batch's appends
      reads: [
        { id: 1, kind: ReadKind.Range, linearizable: true, request: bytes(0x0a, 0x01, 0x61) },
        { id: 0xffffffff, kind: ReadKind.Status, linearizable: false, request: new Uint8Array(0) },
      ],
    };
    const w = new PackWriter(4);
    const msg = writeBatch(w, batch);
    assert.equal(msg[0], WorkerMessageType.Batch);
    assert.deepEqual(plainBatch(readBatch(msg)), plainBatch(batch));
    // the writer is reused turn after turn
    const empty: Batch = { hardState: null, raftTerm: 4, append: [], apply: [], reads: [] };
    const msg2 = writeBatch(w, empty);
    assert.equal(msg2.length, 1 + 1 + 8 + 4 + 4 + 4);
    assert.deepEqual(plainBatch(readBatch(msg2)), plainBatch(empty));
    assert.deepEqual(plainBatch(readBatch(msg)), plainBatch(batch), 'an earlier message is unaffected');
  });

  test('Applied with results and reads', () => {
    const a: Applied = {
      appliedIndex: 123456789, currentRev: 2 ** 45, compactRev: 0, dbSize: 20480, dbSizeInUse: 16384,
      results: [
        { id: Date.now() * 1000, code: 0, response: bytes(0x0a, 0x02, 0x08, 0x05) },
        { id: 1, code: 8, response: new Uint8Array(0) },
      ],
      reads: [{ id: 42, code: 0, response: Buffer.alloc(1000, 7) }, { id: 43, code: 7, response: new Uint8Array(0) }],
    };
    assert.deepEqual(plainApplied(readApplied(writeApplied(a))), plainApplied(a));
    const none: Applied = { appliedIndex: 1, currentRev: 1, compactRev: 0, dbSize: 0, dbSizeInUse: 0, results: [], reads: [] };
    const m = writeApplied(none);
    assert.equal(m.length, 1 + 40 + 8);
    assert.deepEqual(plainApplied(readApplied(m)), plainApplied(none));
  });

  test('Persisted: type, index, term in 17 bytes', () => {
    // storage_worker.postPersisted
    const m = new Uint8Array(17);
    const b = Buffer.from(m.buffer);
    b[0] = WorkerMessageType.Persisted;
    b.writeDoubleLE(2 ** 40 + 1, 1);
    b.writeDoubleLE(9, 9);
    // etcd_server.onWorkerMessage reads it with plain offsets; PackReader reads the same
    const r = new PackReader(m);
    assert.deepEqual([r.u8(), r.u53(), r.u53()], [WorkerMessageType.Persisted, 2 ** 40 + 1, 9]);
    assert.equal(r.done(), true);
  });

  test('Ready entries: count, then entries (storage_worker.ready -> EtcdServer)', () => {
    const es = Array.from({ length: 100 }, (_, i) => entry(50 + i, 1 + (i >> 4), Buffer.from(`put ${i}`)));
    const w = new PackWriter(64);
    w.u32(es.length);
    for (const e of es) w.entry(e);
    const r = new PackReader(w.finish());
    const back: Entry[] = [];
    for (let n = r.u32(); n > 0; n--) back.push(r.entry());
    assert.equal(r.done(), true);
    assert.deepEqual(back.map(plainEntry), es.map(plainEntry));
  });
});
