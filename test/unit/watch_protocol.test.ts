// The watch worker's thread messages (src/watch/protocol.ts): every Control op and Output stream
// goes through the very encoder and decoder watch/hub.ts and watch/watch_worker.ts use
// (ControlWriter/readControl, OutputWriter/readOutput), and must come back field for field:
// i64 watch ids at their extremes, empty and binary keys, many ops, buffers that grow, and a
// writer that is empty again after each message.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Long from 'long';

import { AssertionError } from '../../src/util/assert';
import type { WatchId } from '../../src/watch/encode';
import {
  ControlVisitor, ControlWriter, CreateFlag, EndKind, OutputVisitor, OutputWriter, readControl,
  readI64, readOutput, writeI64,
} from '../../src/watch/protocol';
import { PackReader, PackWriter } from '../../src/workers/protocol';

const hex = (u: Uint8Array): string => Buffer.from(u).toString('hex');
const id = (v: WatchId): string => (typeof v === 'bigint' ? `${v}n` : String(v));

/** Records every call readControl makes, as strings (bytes in hex). */
class Recorder implements ControlVisitor {
  readonly calls: string[] = [];
  turn(raftTerm: number, storeRev: number): void {
    this.calls.push(`turn ${raftTerm} ${storeRev}`);
  }
  open(streamId: number): void {
    this.calls.push(`open ${streamId}`);
  }
  close(streamId: number): void {
    this.calls.push(`close ${streamId}`);
  }
  progress(streamId: number): void {
    this.calls.push(`progress ${streamId}`);
  }
  create(streamId: number, watchId: WatchId, createdRev: number, startRev: number, flags: number,
    key: Uint8Array, endKind: EndKind, end: Uint8Array): void {
    this.calls.push(`create ${streamId} ${id(watchId)} ${createdRev} ${startRev} ${flags} ${hex(key)} ${endKind} ${hex(end)}`);
  }
  cancel(streamId: number, watchId: WatchId): void {
    this.calls.push(`cancel ${streamId} ${id(watchId)}`);
  }
  ack(streamId: number, bytes: number): void {
    this.calls.push(`ack ${streamId} ${bytes}`);
  }
}

function read(m: Uint8Array): string[] {
  const r = new Recorder();
  readControl(m, r);
  return r.calls;
}

const none = new Uint8Array(0);
const k = (s: string): Uint8Array => Buffer.from(s, 'latin1');

describe('i64 (watch ids)', () => {
  test('extremes round trip: a number when safe, a bigint beyond', () => {
    const cases: [Long, WatchId][] = [
      [Long.ZERO, 0], [Long.ONE, 1], [Long.NEG_ONE, -1],
      [Long.fromNumber(2 ** 32 - 1), 2 ** 32 - 1], [Long.fromNumber(2 ** 32), 2 ** 32],
      [Long.fromNumber(-(2 ** 32)), -(2 ** 32)], [Long.fromNumber(-(2 ** 32) - 1), -(2 ** 32) - 1],
      [Long.fromNumber(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER],
      [Long.fromNumber(-Number.MAX_SAFE_INTEGER), -Number.MAX_SAFE_INTEGER],
      [Long.fromString('9007199254740992'), 9007199254740992n],
      [Long.fromString('-9007199254740992'), -9007199254740992n],
      [Long.MAX_VALUE, 9223372036854775807n], [Long.MIN_VALUE, -9223372036854775808n],
      // unsigned: the same 64 bits, read back as the int64 they are on the wire
      [Long.MAX_UNSIGNED_VALUE, -1], [Long.fromString('9223372036854775808', true), -9223372036854775808n],
    ];
    for (const [v, want] of cases) {
      const w = new PackWriter(0);
      writeI64(w, v);
      assert.equal(w.length, 8);
      const r = new PackReader(w.finish());
      assert.equal(r.u32(), v.high >>> 0, `high of ${v.toString()}`);
      assert.equal(r.u32(), v.low >>> 0, `low of ${v.toString()}`);
      const got = readI64(new PackReader(w.finish()));
      assert.equal(typeof got, typeof want, `type of ${v.toString()}`);
      assert.equal(got, want, `value of ${v.toString()}`);
    }
  });

  test('every safe boundary by high word reads as a number, the next one out as a bigint', () => {
    for (const v of [2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 52, -(2 ** 52), -(2 ** 53 - 2 ** 32)]) {
      const w = new PackWriter(8);
      writeI64(w, Long.fromNumber(v));
      assert.equal(readI64(new PackReader(w.finish())), v);
    }
    for (const v of [2n ** 53n, -(2n ** 53n), 2n ** 53n + 1n, -(2n ** 53n) - 1n]) {
      const w = new PackWriter(8);
      writeI64(w, Long.fromString(v.toString()));
      assert.equal(readI64(new PackReader(w.finish())), v);
    }
  });
});

describe('Control', () => {
  test('every op round trips, in order, with the header', () => {
    const w = new ControlWriter(16);
    w.open(1);
    w.create(1, Long.fromNumber(0), 10, 11, 0, k('a'), EndKind.Single, none);
    w.create(1, Long.fromNumber(7), 10, 3, CreateFlag.PrevKv | CreateFlag.Fragment, k('a'), EndKind.Range, k('b'));
    w.create(2, Long.MIN_VALUE, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER,
      CreateFlag.PrevKv | CreateFlag.ProgressNotify | CreateFlag.Fragment | CreateFlag.NoPut | CreateFlag.NoDelete,
      Uint8Array.from([0]), EndKind.FromKey, none);
    w.cancel(1, Long.fromNumber(7));
    w.cancel(2, Long.MAX_VALUE);
    w.cancel(3, Long.NEG_ONE);
    w.progress(2);
    w.ack(1, 0);
    w.ack(0xffffffff, Number.MAX_SAFE_INTEGER);
    w.close(1);
    assert.equal(w.opCount, 11);
    const m = w.finish(5, 10);
    assert.equal(w.opCount, 0, 'empty after finish');
    assert.equal(m.byteOffset, 0);
    assert.equal(m.buffer.byteLength, m.length, 'own ArrayBuffer: postMessage copies just the message');
    assert.deepEqual(read(m), [
      'turn 5 10',
      'open 1',
      'create 1 0 10 11 0 61 0 ',
      'create 1 7 10 3 5 61 1 62',
      'create 2 -9223372036854775808n 9007199254740991 -9007199254740991 31 00 2 ',
      'cancel 1 7',
      'cancel 2 9223372036854775807n',
      'cancel 3 -1',
      'progress 2',
      'ack 1 0',
      `ack ${0xffffffff} ${Number.MAX_SAFE_INTEGER}`,
      'close 1',
    ]);
  });

  test('the layout: header, then u8 op + u32 stream id per op', () => {
    const w = new ControlWriter(0);
    w.open(0x01020304);
    const m = w.finish(1, 2);
    assert.equal(m.length, 8 + 8 + 4 + 1 + 4);
    const b = Buffer.from(m);
    assert.equal(b.readDoubleLE(0), 1);
    assert.equal(b.readDoubleLE(8), 2);
    assert.equal(b.readUInt32LE(16), 1);
    assert.equal(b[20], 1, 'ControlOp.Open');
    assert.equal(b.readUInt32LE(21), 0x01020304);
  });

  test('binary keys and ends of every byte, large ones, views into the message', () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const big = Buffer.alloc(100_000, 0xab);
    const w = new ControlWriter(8);
    w.create(9, Long.ONE, 1, 1, 0, all, EndKind.Range, Uint8Array.from([0xff, 0xff]));
    w.create(9, Long.ONE, 1, 1, 0, big, EndKind.Range, big);
    const m = w.finish(1, 1);
    const seen: [Uint8Array, Uint8Array][] = [];
    class Keys extends Recorder {
      override create(_s: number, _id: WatchId, _c: number, _r: number, _f: number, key: Uint8Array,
        _e: EndKind, end: Uint8Array): void {
        seen.push([key, end]);
      }
    }
    readControl(m, new Keys());
    assert.equal(seen.length, 2);
    assert.deepEqual([...seen[0]![0]], [...all]);
    assert.deepEqual([...seen[0]![1]], [0xff, 0xff]);
    assert.ok(Buffer.from(seen[1]![0]).equals(big));
    assert.ok(Buffer.from(seen[1]![1]).equals(big));
    assert.equal(seen[1]![0].buffer, m.buffer, 'a view, not a copy');
  });

  test('many ops over several turns: the writer grows, then starts each message empty', () => {
    const w = new ControlWriter(4);
    for (let turn = 1; turn <= 3; turn++) {
      const want = [`turn ${turn} ${turn * 100}`];
      for (let i = 0; i < 5000 * turn; i++) {
        switch (i % 4) {
          case 0:
            w.create(i, Long.fromNumber(i * 3 - 7), i, i + 1, i % 32, k(`key/${i}`), EndKind.Range, k(`key/${i}0`));
            want.push(`create ${i} ${i * 3 - 7} ${i} ${i + 1} ${i % 32} ${hex(k(`key/${i}`))} 1 ${hex(k(`key/${i}0`))}`);
            break;
          case 1:
            w.ack(i, i * 1000);
            want.push(`ack ${i} ${i * 1000}`);
            break;
          case 2:
            w.cancel(i, Long.fromNumber(-i));
            want.push(`cancel ${i} ${-i}`);
            break;
          default:
            w.progress(i);
            want.push(`progress ${i}`);
        }
      }
      assert.deepEqual(read(w.finish(turn, turn * 100)), want, `turn ${turn}`);
    }
  });

  test('refused before anything is written: the message stays whole', () => {
    const w = new ControlWriter();
    w.open(1);
    assert.throws(() => w.create(1, Long.ONE, 1, 1, 64, k('a'), EndKind.Single, none), AssertionError, 'unknown flag');
    assert.throws(() => w.create(1, Long.ONE, 1, 1, 0, none, EndKind.Single, none), AssertionError, 'empty key');
    assert.throws(() => w.create(1, Long.ONE, 1, 1, 0, k('a'), EndKind.Single, k('b')), AssertionError, 'end for a single key');
    assert.throws(() => w.create(1, Long.ONE, 1, 1, 0, k('a'), EndKind.Range, none), AssertionError, 'range without end');
    assert.throws(() => w.create(1, Long.ONE, 2 ** 53, 1, 0, k('a'), EndKind.Single, none), AssertionError, 'unsafe rev');
    assert.throws(() => w.create(1, Long.ONE, 1, 0.5, 0, k('a'), EndKind.Single, none), AssertionError, 'unsafe start');
    assert.throws(() => w.ack(1, -1), AssertionError);
    assert.throws(() => w.ack(1, 1.5), AssertionError);
    assert.equal(w.opCount, 1);
    assert.deepEqual(read(w.finish(1, 1)), ['turn 1 1', 'open 1']);
    assert.throws(() => w.finish(1, 1), AssertionError, 'an empty message is never sent');
  });

  test('a malformed message is a bug: unknown op, unknown end kind, trailing bytes', () => {
    const w = new ControlWriter();
    w.open(1);
    const m = w.finish(1, 1);
    const badOp = Uint8Array.from(m);
    badOp[20] = 99;
    assert.throws(() => read(badOp), AssertionError);
    const longer = new Uint8Array(m.length + 1);
    longer.set(m);
    assert.throws(() => read(longer), AssertionError);
    w.create(1, Long.ONE, 1, 1, 0, k('a'), EndKind.Single, none);
    const c = w.finish(1, 1);
    const badEnd = Uint8Array.from(c);
    badEnd[20 + 1 + 4 + 8 + 8 + 8 + 1 + 4 + 1] = 3; // the endKind byte
    assert.throws(() => read(badEnd), AssertionError);
  });
});

describe('Output', () => {
  /** gRPC frames: [u8 0][u32 BE length][message] each. */
  function frames(...messages: Uint8Array[]): Uint8Array {
    return Buffer.concat(messages.map((msg) => {
      const h = Buffer.alloc(5);
      h.writeUInt32BE(msg.length, 1);
      return Buffer.concat([h, msg]);
    }));
  }

  function readAll(m: Uint8Array): [number, number, string][] {
    const out: [number, number, string][] = [];
    const v: OutputVisitor = { frames: (s, n, f) => void out.push([s, n, hex(f)]) };
    readOutput(m, v);
    return out;
  }

  test('streams round trip in order; the layout is count, then (id, responses, bytes)', () => {
    const w = new OutputWriter(0);
    const a = frames(Uint8Array.from([1, 2, 3]));
    const b = frames(new Uint8Array(0), Uint8Array.from([9]));
    w.stream(1, 1, a);
    w.stream(0xffffffff, 2, b);
    assert.equal(w.streamCount, 2);
    const m = w.finish();
    assert.equal(w.streamCount, 0);
    assert.equal(m.buffer.byteLength, m.length, 'own ArrayBuffer');
    assert.deepEqual(readAll(m), [[1, 1, hex(a)], [0xffffffff, 2, hex(b)]]);
    const buf = Buffer.from(m);
    assert.equal(buf.readUInt32LE(0), 2);
    assert.deepEqual([buf.readUInt32LE(4), buf.readUInt32LE(8), buf.readUInt32LE(12)], [1, 1, a.length]);
  });

  test('many streams and large frames over several turns', () => {
    const w = new OutputWriter(16);
    for (let turn = 0; turn < 3; turn++) {
      const want: [number, number, string][] = [];
      for (let s = 0; s < 2000; s++) {
        const f = frames(Buffer.alloc((s * 37 + turn) % 500, s & 0xff), Buffer.alloc(s % 3, 1));
        w.stream(s + turn, 2, f);
        want.push([s + turn, 2, hex(f)]);
      }
      const big = frames(Buffer.alloc(1 << 20, 7));
      w.stream(99_999, 1, big);
      want.push([99_999, 1, hex(big)]);
      assert.deepEqual(readAll(w.finish()), want, `turn ${turn}`);
    }
  });

  test('refused: a stream without responses, frames shorter than their headers, an empty message', () => {
    const w = new OutputWriter();
    assert.throws(() => w.stream(1, 0, new Uint8Array(0)), AssertionError);
    assert.throws(() => w.stream(1, 2, frames(Uint8Array.from([1]))), AssertionError);
    assert.throws(() => w.finish(), AssertionError);
    w.stream(1, 1, frames(Uint8Array.from([1])));
    const m = w.finish();
    const longer = new Uint8Array(m.length + 4);
    longer.set(m);
    assert.throws(() => readAll(longer), AssertionError);
  });
});
