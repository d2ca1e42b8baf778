// SPSC byte ring (src/watch/ring.ts): exact positions and refusals on one thread (full, empty,
// wrap padding, zero-length and oversize records, reserve/commit, waitAsync, overflow), checked
// against a queue model over seeded random sizes; then a storage-like producer in a worker
// thread and a waitAsync consumer on this thread move 200,000 records through a small ring and
// every record's order, length and checksum is verified.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';

import { AssertionError } from '../../src/util/assert';
import { crc32 } from '../../src/util/crc32';
import { Prng } from '../../src/util/prng';
import {
  newRingBuffer,
  RingConsumer,
  RingProducer,
  ringDataBytesMax,
  ringDataBytesMin,
} from '../../src/watch/ring';

function ring(dataBytes: number): { p: RingProducer; c: RingConsumer } {
  const sab = newRingBuffer(dataBytes);
  return { p: new RingProducer(sab), c: new RingConsumer(sab) };
}

function payload(length: number, fill: number): Uint8Array {
  return new Uint8Array(length).fill(fill);
}

test('sizes: power of two within [min, max]; a foreign buffer is rejected', () => {
  assert.throws(() => newRingBuffer(48), AssertionError);
  assert.throws(() => newRingBuffer(ringDataBytesMin / 2), AssertionError);
  assert.throws(() => newRingBuffer(ringDataBytesMax * 2), AssertionError);
  assert.throws(() => new RingConsumer(new SharedArrayBuffer(1024)), AssertionError);
  const { p, c } = ring(64);
  assert.equal(p.capacityBytes, 64);
  assert.equal(c.payloadBytesMax, 28);
});

test('empty ring: read is null, readAll visits nothing, nothing used', () => {
  const { c } = ring(64);
  assert.equal(c.read(), null);
  assert.equal(c.readAll(() => assert.fail('visited')), 0);
  assert.equal(c.hasData(), false);
  assert.equal(c.usedBytes, 0);
  assert.equal(c.occupancy, 0);
});

test('fills to capacity exactly, refuses when full, takes a record again once one is read', () => {
  const { p, c } = ring(64);
  for (let i = 0; i < 4; i++) assert.equal(p.tryWrite(payload(12, i)), true); // 4 x (4 + 12)
  assert.equal(p.usedBytes, 64);
  assert.equal(c.occupancy, 1);
  assert.equal(p.tryWrite(new Uint8Array(0)), false, 'not even a bare header fits');
  assert.equal(p.tryWrite(payload(12, 9)), false);
  assert.equal(p.writesRefused, 2);
  assert.deepEqual(c.read(), payload(12, 0));
  assert.equal(c.usedBytes, 48);
  assert.equal(p.tryWrite(payload(12, 4)), true, 'back at offset 0: no padding needed');
  assert.equal(p.usedBytes, 64);
  for (let i = 1; i <= 4; i++) assert.deepEqual(c.read(), payload(12, i));
  assert.equal(c.read(), null);
  assert.equal(c.usedBytes, 0);
  // The largest records: two of payloadBytesMax fill a ring from offset 0 too. (From offset
  // 16, as `p` is now, the second would need 16 bytes of wrap padding.)
  const fresh = ring(64);
  assert.equal(fresh.p.tryWrite(payload(28, 7)), true);
  assert.equal(fresh.p.tryWrite(payload(28, 8)), true);
  assert.equal(fresh.p.usedBytes, 64);
  assert.equal(fresh.p.tryWrite(new Uint8Array(0)), false);
  assert.equal(p.tryWrite(payload(28, 7)), true);
  assert.equal(p.tryWrite(payload(28, 8)), false);
  assert.equal(p.usedBytes, 32);
});

test('a record that does not fit in the tail pads it and goes to offset 0', () => {
  const { p, c } = ring(64);
  assert.equal(p.tryWrite(payload(20, 1)), true); // 24 bytes at 0
  assert.equal(p.tryWrite(payload(18, 2)), true); // 4 + 20 = 24 bytes at 24
  assert.deepEqual(c.read(), payload(20, 1));
  assert.deepEqual(c.read(), payload(18, 2));
  assert.equal(c.usedBytes, 0);
  // Offset 48, tail 16: a 24-byte record pads the tail and takes [0, 24).
  assert.equal(p.tryWrite(payload(20, 3)), true);
  assert.equal(p.usedBytes, 16 + 24);
  // Offset 24, tail 40, free 24: a 24-byte record fits, a 28-byte one does not.
  assert.equal(p.tryWrite(payload(21, 4)), false);
  assert.equal(p.tryWrite(payload(19, 4)), true);
  assert.equal(p.usedBytes, 64);
  assert.deepEqual(c.read(), payload(20, 3));
  assert.deepEqual(c.read(), payload(19, 4));
  assert.equal(c.usedBytes, 0);
  // Offset 48 again, empty ring; tail 16 + a 28-byte record still fits in 64.
  assert.equal(p.tryWrite(payload(24, 5)), true);
  assert.equal(p.usedBytes, 16 + 28);
  // Offset 28, tail 36, free 20: an 8-byte record fits in place; then 12 free: 20 bytes do not.
  assert.equal(p.tryWrite(payload(4, 6)), true);
  assert.equal(p.tryWrite(payload(16, 6)), false);
  assert.deepEqual(c.read(), payload(24, 5));
  assert.deepEqual(c.read(), payload(4, 6));
  assert.equal(c.read(), null);
});

test('zero-length records are records, not "empty"', () => {
  const { p, c } = ring(16);
  for (let i = 0; i < 4; i++) assert.equal(p.tryWrite(new Uint8Array(0)), true);
  assert.equal(p.usedBytes, 16);
  assert.equal(p.tryWrite(new Uint8Array(0)), false);
  for (let i = 0; i < 4; i++) {
    const r = c.read();
    assert.ok(r !== null);
    assert.equal(r.length, 0);
  }
  assert.equal(c.read(), null);
});

test('a record larger than payloadBytesMax is refused, even by an empty ring', () => {
  const { p, c } = ring(64);
  assert.equal(p.tryWrite(payload(29, 1)), false);
  assert.equal(p.tryWrite(payload(64, 1)), false);
  assert.equal(p.tryWrite(payload(200, 1)), false);
  assert.equal(p.reserve(29), null);
  assert.equal(p.writesRefused, 4);
  assert.equal(c.read(), null);
});

test('payloadBytesMax fits an empty ring wherever the write position is', () => {
  const { p, c } = ring(64);
  for (let shift = 0; shift < 16; shift++) {
    assert.equal(p.tryWrite(payload(28, shift)), true, `at shift ${shift}`);
    assert.deepEqual(c.read(), payload(28, shift));
    assert.equal(p.tryWrite(new Uint8Array(shift % 3)), true); // moves the offset by 4 or 8
    assert.equal(c.read()?.length, shift % 3);
  }
});

test('reserve/commit encodes in place; a smaller commit and abort publish what they should', () => {
  const { p, c } = ring(64);
  const view = p.reserve(20);
  assert.ok(view !== null);
  assert.equal(c.hasData(), false, 'nothing visible before commit');
  view.set([1, 2, 3, 4, 5]);
  p.commit(5);
  assert.equal(p.usedBytes, 12);
  assert.deepEqual(c.read(), new Uint8Array([1, 2, 3, 4, 5]));
  assert.ok(p.reserve(8) !== null);
  p.abort();
  assert.throws(() => p.commit(0), AssertionError);
  assert.equal(c.read(), null);
  assert.ok(p.reserve(8) !== null);
  assert.throws(() => p.commit(9), AssertionError);
});

test('readAll lends views until visit returns; a throwing visit leaves its record unread', () => {
  const { p, c } = ring(64);
  for (let i = 0; i < 3; i++) p.tryWrite(payload(4, i));
  const seen: number[] = [];
  assert.throws(() => c.readAll((v) => {
    if (v[0] === 1) throw new Error('visitor failed');
    seen.push(v[0]!);
  }), /visitor failed/);
  assert.deepEqual(seen, [0]);
  assert.equal(c.readAll((v) => seen.push(v[0]!)), 2);
  assert.deepEqual(seen, [0, 1, 2]);
  assert.equal(c.usedBytes, 0);
});

test('readAll visits only what was published when it started', () => {
  const { p, c } = ring(64);
  p.tryWrite(payload(4, 0));
  let visits = 0;
  const n = c.readAll(() => {
    visits++;
    p.tryWrite(payload(4, visits)); // published during the visit: left for the next call
  });
  assert.equal(n, 1);
  assert.equal(visits, 1);
  assert.deepEqual(c.read(), payload(4, 1));
});

test('random sizes against a queue model: contents, order, usedBytes', () => {
  const prng = new Prng(7);
  const { p, c } = ring(256);
  const model: Uint8Array[] = [];
  let written = 0;
  let refused = 0;
  for (let step = 0; step < 20_000; step++) {
    if (prng.int(3) !== 0) {
      const len = prng.int(p.payloadBytesMax + 1);
      const b = new Uint8Array(len);
      for (let i = 0; i < len; i++) b[i] = prng.int(256);
      if (p.tryWrite(b)) {
        model.push(b);
        written++;
      } else {
        refused++;
      }
    } else {
      const got = c.read();
      const want = model.shift();
      assert.deepEqual(got, want ?? null);
    }
    assert.ok(c.usedBytes <= c.capacityBytes);
    if (model.length === 0) assert.equal(c.usedBytes, 0);
  }
  assert.ok(written > 5000, 'exercised writes');
  assert.ok(refused > 500, 'exercised refusals');
  assert.equal(p.writesRefused, refused);
});

test('waitAsync: immediate with data, woken by notify, resolves on timeout', async () => {
  const { p, c } = ring(64);
  p.tryWrite(payload(4, 1));
  await c.waitAsync(); // data is there: no wait at all
  c.read();
  let woken = false;
  const waiting = c.waitAsync().then(() => {
    woken = true;
  });
  await new Promise<void>((resolve) => setImmediate(resolve));
  assert.equal(woken, false, 'no data, no notify: still waiting');
  p.tryWrite(payload(4, 2));
  p.notify();
  await waiting;
  assert.equal(woken, true);
  assert.deepEqual(c.read(), payload(4, 2));
  // Nothing comes: the 1 ms timeout ends the wait. A pending Atomics.waitAsync holds no
  // event-loop handle, so this timer keeps the test process alive meanwhile.
  const keepAlive = setTimeout(() => {}, 10_000);
  await c.waitAsync(1);
  clearTimeout(keepAlive);
  assert.equal(c.hasData(), false);
});

test('overflow flag: set by the producer, taken once by the consumer', () => {
  const { p, c } = ring(64);
  assert.equal(c.takeOverflow(), false);
  p.markOverflow();
  p.markOverflow();
  assert.equal(c.takeOverflow(), true);
  assert.equal(c.takeOverflow(), false);
});

// The producer thread: records are [u32 seq][u32 crc32 of the rest][random bytes], lengths from
// a Prng the consumer replays. Even records are encoded in place (reserve/commit), odd ones
// copied (tryWrite). One notify per 16 records; when full, it notifies and sleeps 50 µs (the
// storage worker would instead keep the events for its next turn).
const PRODUCER_SCRIPT = `
const { workerData, parentPort } = require('node:worker_threads');
const { RingProducer } = require(workerData.ringPath);
const { crc32 } = require(workerData.crcPath);
const { Prng } = require(workerData.prngPath);
const ring = new RingProducer(workerData.sab);
const lengths = new Prng(workerData.seed);
const bytes = new Prng(workerData.seed + 1);
const sleepCell = new Int32Array(new SharedArrayBuffer(4));
const scratch = new Uint8Array(ring.payloadBytesMax);
let fullWaits = 0;
for (let seq = 0; seq < workerData.records; seq++) {
  const big = lengths.int(64) === 0;
  const len = 8 + lengths.int(big ? ring.payloadBytesMax - 7 : 300);
  let out = seq % 2 === 0 ? null : scratch.subarray(0, len);
  for (;;) {
    if (out === null) out = ring.reserve(len);
    if (out !== null) break;
    ring.notify();
    fullWaits++;
    Atomics.wait(sleepCell, 0, 0, 0.05);
  }
  for (let i = 8; i < len; i++) out[i] = bytes.nextU32() & 0xff;
  const dv = new DataView(out.buffer, out.byteOffset, len);
  dv.setUint32(0, seq, true);
  dv.setUint32(4, crc32(out, 8, len), true);
  if (seq % 2 === 0) {
    ring.commit(len);
  } else {
    while (!ring.tryWrite(out)) {
      ring.notify();
      fullWaits++;
      Atomics.wait(sleepCell, 0, 0, 0.05);
    }
  }
  if (seq % 16 === 15) ring.notify();
}
ring.notify();
parentPort.postMessage({ fullWaits });
`;

test('two threads: 200,000 records of random sizes arrive in order and intact', { timeout: 30_000 },
  async () => {
    const records = 200_000;
    const seed = 20240601;
    const sab = newRingBuffer(16 * 1024);
    const c = new RingConsumer(sab);
    const lengths = new Prng(seed);
    const dist = path.join(__dirname, '..', '..', 'src');
    const worker = new Worker(PRODUCER_SCRIPT, {
      eval: true,
      workerData: {
        sab,
        seed,
        records,
        ringPath: path.join(dist, 'watch', 'ring.js'),
        crcPath: path.join(dist, 'util', 'crc32.js'),
        prngPath: path.join(dist, 'util', 'prng.js'),
      },
    });
    const done = new Promise<{ fullWaits: number }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`producer exited ${code} before finishing`)));
    });
    done.catch(() => {}); // awaited below; no unhandled rejection if consume() throws first

    let next = 0;
    let waits = 0;
    let bytesTotal = 0;
    const verify = (rec: Uint8Array): void => {
      const big = lengths.int(64) === 0;
      const len = 8 + lengths.int(big ? c.payloadBytesMax - 7 : 300);
      assert.equal(rec.length, len, `length of record ${next}`);
      const dv = new DataView(rec.buffer, rec.byteOffset, rec.length);
      assert.equal(dv.getUint32(0, true), next, 'sequence');
      assert.equal(dv.getUint32(4, true), crc32(rec, 8, rec.length), `checksum of record ${next}`);
      bytesTotal += len;
      next++;
    };
    const started = performance.now();
    // A failed check throws out of here; the finally stops the producer, which would otherwise
    // retry on a full ring forever and keep the test process alive.
    let fullWaits: number;
    try {
      await consume();
      ({ fullWaits } = await done);
    } finally {
      await worker.terminate();
    }
    const ms = performance.now() - started;
    assert.equal(c.read(), null);
    assert.equal(c.usedBytes, 0);
    assert.ok(waits < records, 'the consumer waits per batch, not per record');
    console.log(`ring stress: ${records} records, ${(bytesTotal / 1e6).toFixed(1)} MB in ` +
      `${ms.toFixed(0)} ms; consumer waits ${waits}, producer full waits ${fullWaits}, ` +
      `writes refused ${c.writesRefused}`);

    async function consume(): Promise<void> {
      while (next < records) {
        // Alternate the two read paths: views through readAll, copies through read.
        if (waits % 2 === 0) {
          c.readAll(verify);
        } else {
          for (let r = c.read(); r !== null; r = c.read()) verify(r);
        }
        if (next < records) {
          waits++;
          await c.waitAsync();
        }
      }
    }
  });
