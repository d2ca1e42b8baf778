// Worker message layouts (src/workers/protocol.ts): PackWriter/PackReader primitives and round
// trips of Batch, Applied, Persisted and the Ready entries through the one encoder and decoder
// of each, which server/etcd_server.ts and workers/storage_core.ts use too.

import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';

import type { Entry } from '../../src/raft/types';
import { AssertionError } from '../../src/util/assert';
import {
  AppliedHeader, AppliedWriter, BatchMessage, decodeApplied, decodeBatch, decodeEntries, decodePersisted, encodeBatch,
  encodeEntries, encodePersisted, PackReader, PackWriter, ReadKind, WorkerMessageType,
} from '../../src/workers/protocol';

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

// ---- the message layouts, through the one encoder and decoder both threads use ----

interface AppliedItems {
  results: { id: number; code: number; response: string }[];
  reads: { id: number; code: number; response: string }[];
  leases: { kind: number; id: string; ttl: number; remaining: number }[];
}

/** Everything decodeApplied hands out, collected. */
function collectApplied(data: Uint8Array): { header: AppliedHeader; items: AppliedItems } {
  const items: AppliedItems = { results: [], reads: [], leases: [] };
  const header = decodeApplied(data, {
    result: (id, code, response) => items.results.push({ id, code, response: hex(response) }),
    read: (id, code, response) => items.reads.push({ id, code, response: hex(response) }),
    leaseChange: (kind, id, ttl, remaining) => items.leases.push({ kind, id, ttl, remaining }),
  });
  return { header, items };
}

const plainBatch = (b: BatchMessage): unknown => ({
  ...b, append: b.append.map(plainEntry), apply: b.apply.map(plainEntry),
  reads: b.reads.map((x) => ({ ...x, request: hex(x.request) })),
});

describe('worker message layouts', () => {
  test('message type bytes are distinct', () => {
    const types = [
      WorkerMessageType.Init, WorkerMessageType.Batch, WorkerMessageType.Close, WorkerMessageType.Ready,
      WorkerMessageType.Applied, WorkerMessageType.Persisted, WorkerMessageType.Closed, WorkerMessageType.Fatal,
      WorkerMessageType.Alarm,
    ];
    assert.equal(new Set(types).size, types.length);
  });

  test('Batch with hard state, appends, applies (overlapping) and reads', () => {
    const e1 = entry(10, 3, bytes(0xaa, 0xbb));
    const e2 = entry(11, 3, new Uint8Array(0));
    const batch: BatchMessage = {
      seq: 0xffffffff,
      hardState: { term: 3, vote: 1, commit: 11 },
      mustSync: true,
      raftTerm: 3,
      append: [e1, e2],
      apply: [entry(9, 2, bytes(1)), e1, e2], // committed entries may include this batch's appends
      reads: [
        { id: 1, kind: ReadKind.Range, linearizable: true, request: bytes(0x0a, 0x01, 0x61) },
        { id: 0xffffffff, kind: ReadKind.Status, linearizable: false, request: new Uint8Array(0) },
        { id: 7, kind: ReadKind.LeaseTimeToLive, linearizable: true, request: bytes(8, 1) },
      ],
    };
    const w = new PackWriter(4);
    const msg = encodeBatch(w, batch);
    assert.equal(msg[0], WorkerMessageType.Batch);
    assert.deepEqual(plainBatch(decodeBatch(msg)), plainBatch(batch));
    // the writer is reused turn after turn; a hard-state-only batch that must be synced
    const hsOnly: BatchMessage = { seq: 2, hardState: { term: 9, vote: 2, commit: 0 }, mustSync: true, raftTerm: 9, append: [], apply: [], reads: [] };
    const msg2 = encodeBatch(w, hsOnly);
    assert.equal(msg2.length, 1 + 4 + 1 + 24 + 8 + 4 + 4 + 4);
    assert.deepEqual(plainBatch(decodeBatch(msg2)), plainBatch(hsOnly));
    const empty: BatchMessage = { seq: 3, hardState: null, mustSync: false, raftTerm: 4, append: [], apply: [], reads: [] };
    assert.deepEqual(plainBatch(decodeBatch(encodeBatch(w, empty))), plainBatch(empty));
    assert.deepEqual(plainBatch(decodeBatch(msg)), plainBatch(batch), 'an earlier message is unaffected');
  });

  test('Applied with results, reads and lease changes; the writer is empty after finish', () => {
    const w = new AppliedWriter();
    assert.equal(w.isEmpty(), true);
    const id = Date.now() * 1000;
    w.result(id, 0, bytes(0x0a, 0x02, 0x08, 0x05));
    w.read(42, 0, Buffer.alloc(1000, 7));
    w.result(1, 8, new Uint8Array(0));
    w.leaseChange(1, '-9223372036854775808', 60, 0);
    w.read(43, 7, new Uint8Array(0));
    w.leaseChange(3, '9223372036854775807', 2 ** 40, 59);
    assert.equal(w.isEmpty(), false);
    const header: AppliedHeader = { appliedIndex: 123456789, currentRev: 2 ** 45, compactRev: 0, dbSize: 20480, dbSizeInUse: 16384, membership: null, alarms: null, auth: null };
    const got = collectApplied(w.finish(header));
    assert.deepEqual(got.header, header);
    assert.deepEqual(got.items, {
      results: [{ id, code: 0, response: '0a020805' }, { id: 1, code: 8, response: '' }],
      reads: [{ id: 42, code: 0, response: '07'.repeat(1000) }, { id: 43, code: 7, response: '' }],
      leases: [
        { kind: 1, id: '-9223372036854775808', ttl: 60, remaining: 0 },
        { kind: 3, id: '9223372036854775807', ttl: 2 ** 40, remaining: 59 },
      ],
    });
    assert.equal(w.isEmpty(), true);
    const none = w.finish({ appliedIndex: 1, currentRev: 1, compactRev: 0, dbSize: 0, dbSizeInUse: 0, membership: null, alarms: null, auth: null });
    assert.equal(none.length, 1 + 40 + 24);
    const withMembers = collectApplied(w.finish({ appliedIndex: 2, currentRev: 1, compactRev: 0, dbSize: 0, dbSizeInUse: 0, membership: bytes(9, 8, 7), alarms: bytes(0, 0, 0, 0), auth: bytes(8, 1) }));
    assert.equal(hex(withMembers.header.membership!), '090807');
    assert.equal(hex(withMembers.header.alarms!), '00000000', 'an empty alarm list is a change too');
    assert.equal(hex(withMembers.header.auth!), '0801');
    assert.deepEqual(collectApplied(none).items, { results: [], reads: [], leases: [] });
    assert.throws(() => w.finish({ ...header, currentRev: 2 ** 53 }), AssertionError);
  });

  test('Persisted: seq, index and term of the last durable entry', () => {
    const m = encodePersisted({ seq: 0xfffffffe, index: 2 ** 40 + 1, term: 9 });
    assert.equal(m[0], WorkerMessageType.Persisted);
    assert.deepEqual(decodePersisted(m), { seq: 0xfffffffe, index: 2 ** 40 + 1, term: 9 });
    assert.deepEqual(decodePersisted(encodePersisted({ seq: 1, index: 0, term: 0 })), { seq: 1, index: 0, term: 0 });
  });

  test('Ready entries: count, then entries', () => {
    const es = Array.from({ length: 100 }, (_, i) => entry(50 + i, 1 + (i >> 4), Buffer.from(`put ${i}`)));
    assert.deepEqual(decodeEntries(encodeEntries(es)).map(plainEntry), es.map(plainEntry));
    assert.deepEqual(decodeEntries(encodeEntries([])), []);
  });

  test('a decoder refuses another message type and trailing bytes', () => {
    const p = encodePersisted({ seq: 1, index: 1, term: 1 });
    assert.throws(() => decodeBatch(p), AssertionError);
    assert.throws(() => decodeApplied(p, { result() {}, read() {}, leaseChange() {} }), AssertionError);
    const longer = new Uint8Array(p.length + 1);
    longer.set(p);
    assert.throws(() => decodePersisted(longer), AssertionError);
  });
});
