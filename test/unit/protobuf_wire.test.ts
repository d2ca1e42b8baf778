// util/protobuf_wire.ts: varint sizes and writes are checked byte for byte against protobufjs's
// Writer (uint64/int64), at every byte-count boundary and on seeded random values; reads are
// checked against the bytes written, and malformed input against what Go's generated decoders
// (gogo/protobuf, as etcd 3.4 runs them) answer: truncation, 11-byte varints, bits past 64 in the
// 10th byte, overlong encodings, negative lengths, groups skipped by depth.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Long from 'long';
import * as protobuf from 'protobufjs/minimal';

import { mvccpb } from '../../src/gen/proto';
import { AssertionError } from '../../src/util/assert';
import { Prng } from '../../src/util/prng';
import {
  fieldTag, varintBytes, varintSize, varintSize64, varintSizeBigInt, varintSizeLong, WireCursor,
  WireError, WireType, writeVarint, writeVarint64, writeVarintBigInt, writeVarintLong,
} from '../../src/util/protobuf_wire';

const hex = (u: Uint8Array): string => Buffer.from(u).toString('hex');
const bytes = (...xs: number[]): Uint8Array => Uint8Array.from(xs);

/** protobufjs's encoding of an int64 (negative: ten bytes) or a uint64. */
function reference(v: number | bigint | Long, signed: boolean): string {
  const w = protobuf.Writer.create();
  const l = Long.isLong(v) ? v : Long.fromString(v.toString(), !signed);
  (signed ? w.int64(l) : w.uint64(l));
  return hex(w.finish());
}

/** writeVarint into a buffer with a guard byte on each side; checks the returned position. */
function written(v: number): string {
  const size = varintSize(v);
  const buf = new Uint8Array(size + 2).fill(0xee);
  const end = writeVarint(buf, 1, v);
  assert.equal(end, 1 + size, `end position of ${v}`);
  assert.equal(buf[0], 0xee, 'byte before untouched');
  assert.equal(buf[size + 1], 0xee, 'byte after untouched');
  return hex(buf.subarray(1, end));
}

/** Every power of two up to 2^53 and its neighbours, and the byte-count boundaries (7k bits). */
const boundaries: number[] = [0, 1, 127, 128, 255, 256, 300, 16383, 16384, 2 ** 21 - 1, 2 ** 21,
  2 ** 28 - 1, 2 ** 28, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 35 - 1, 2 ** 35,
  2 ** 42 - 1, 2 ** 42, 2 ** 49 - 1, 2 ** 49, 2 ** 52, Number.MAX_SAFE_INTEGER];
for (let b = 1; b <= 52; b++) boundaries.push(2 ** b - 1, 2 ** b);

describe('varint sizes and writes', () => {
  test('non-negative safe integers: as protobufjs uint64, at every boundary', () => {
    for (const v of boundaries) {
      const want = reference(v, false);
      assert.equal(written(v), want, `value ${v}`);
      assert.equal(varintSize(v), want.length / 2, `size of ${v}`);
      assert.equal(hex(varintBytes(v)), want);
    }
    assert.equal(written(0), '00');
    assert.equal(written(127), '7f');
    assert.equal(written(128), '8001');
    assert.equal(written(300), 'ac02');
    assert.equal(written(2 ** 32 - 1), 'ffffffff0f');
    assert.equal(written(Number.MAX_SAFE_INTEGER), 'ffffffffffffff0f');
    assert.equal(varintSize(Number.MAX_SAFE_INTEGER), 8);
  });

  test('negative safe integers: an int64 in ten bytes, as protobufjs int64', () => {
    for (const v of [-1, -2, -127, -128, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 32), -(2 ** 52), -Number.MAX_SAFE_INTEGER]) {
      assert.equal(written(v), reference(v, true), `value ${v}`);
      assert.equal(varintSize(v), 10);
    }
    assert.equal(written(-1), 'ffffffffffffffffff01');
    assert.equal(written(-0), '00');
  });

  test('numbers that are not safe integers are refused (a bug, not a value)', () => {
    const buf = new Uint8Array(16);
    for (const v of [2 ** 53, -(2 ** 53), 1.5, -0.5, 2 ** 32 + 0.5, NaN, Infinity, -Infinity]) {
      assert.throws(() => writeVarint(buf, 0, v), AssertionError, `write ${v}`);
      assert.throws(() => varintSize(v), AssertionError, `size ${v}`);
    }
  });

  test('64-bit values as (high, low), Long and bigint: as protobufjs, at the extremes', () => {
    const longs = [Long.UZERO, Long.fromNumber(1, true), Long.fromNumber(2 ** 32 - 1, true), Long.fromNumber(2 ** 32, true),
      Long.fromString('9223372036854775807', true), Long.fromString('9223372036854775808', true), Long.MAX_UNSIGNED_VALUE,
      Long.fromString('14841639068965178418', true)];
    for (let b = 0; b < 64; b++) longs.push(Long.UONE.shiftLeft(b), Long.UONE.shiftLeft(b).subtract(1));
    for (const l of longs) {
      const want = reference(l, false);
      const buf = new Uint8Array(12);
      assert.equal(hex(buf.subarray(0, writeVarintLong(buf, 0, l))), want, `Long ${l.toString()}`);
      assert.equal(varintSizeLong(l), want.length / 2);
      assert.equal(varintSize64(l.high, l.low), want.length / 2);
      assert.equal(hex(buf.subarray(0, writeVarint64(buf, 0, l.high >>> 0, l.low >>> 0))), want);
      // The same bits as a bigint, unsigned and as a signed int64.
      const u = BigInt(l.toString());
      assert.equal(hex(buf.subarray(0, writeVarintBigInt(buf, 0, u))), want);
      assert.equal(hex(buf.subarray(0, writeVarintBigInt(buf, 0, BigInt.asIntN(64, u)))), want);
      assert.equal(varintSizeBigInt(u), want.length / 2);
    }
    for (const v of [Long.MIN_VALUE, Long.MAX_VALUE, Long.NEG_ONE, Long.fromNumber(-(2 ** 40))]) {
      const want = reference(v, true);
      const buf = new Uint8Array(12);
      assert.equal(hex(buf.subarray(0, writeVarintLong(buf, 0, v))), want, `signed Long ${v.toString()}`);
      assert.equal(varintSizeLong(v), want.length / 2);
    }
    assert.equal(varintSizeBigInt(-(2n ** 63n)), 10);
    assert.equal(varintSizeBigInt(2n ** 63n - 1n), 9);
    assert.equal(varintSizeBigInt(2n ** 64n - 1n), 10);
    assert.throws(() => varintSizeBigInt(2n ** 64n), AssertionError);
    assert.throws(() => writeVarintBigInt(new Uint8Array(12), 0, -(2n ** 63n) - 1n), AssertionError);
  });

  test('seeded random values: numbers and 64-bit halves agree with protobufjs', () => {
    const prng = new Prng(20261207);
    const buf = new Uint8Array(12);
    for (let i = 0; i < 20_000; i++) {
      const bits = prng.int(54);
      const v = Math.floor((prng.nextU32() * 2 ** 21 + (prng.nextU32() >>> 11)) / 2 ** (53 - bits));
      assert.equal(written(v), reference(v, false), `value ${v}`);
      assert.equal(written(-v), reference(-v, true), `value ${-v}`);
      const hi = prng.nextU32() >>> prng.int(32);
      const lo = prng.nextU32();
      const l = new Long(lo | 0, hi | 0, true);
      assert.equal(hex(buf.subarray(0, writeVarint64(buf, 0, hi, lo))), reference(l, false));
      assert.equal(varintSize64(hi, lo), reference(l, false).length / 2);
    }
  });

  test('field tags', () => {
    assert.equal(fieldTag(1, WireType.Bytes), 0x0a);
    assert.equal(fieldTag(2, WireType.Varint), 0x10);
    assert.equal(fieldTag(11, WireType.Bytes), 0x5a);
    assert.equal(fieldTag(2 ** 29 - 1, WireType.Fixed32), 2 ** 32 - 3);
    assert.equal(written(fieldTag(100, WireType.StartGroup)), 'a306');
    for (const n of [0, -1, 2 ** 29, 1.5]) assert.throws(() => fieldTag(n, WireType.Varint), AssertionError);
  });
});

/** A cursor over `b`, having read one varint: [ok, value, error, pos]. */
function readOne(b: Uint8Array): [boolean, number, WireError, number, WireCursor] {
  const c = new WireCursor(b);
  const ok = c.readVarint();
  return [ok, c.value, c.error, c.pos, c];
}

describe('WireCursor reads', () => {
  test('every boundary value reads back, exact below 2^53', () => {
    for (const v of boundaries) {
      const b = Buffer.from(written(v), 'hex');
      const [ok, value, , pos, c] = readOne(b);
      assert.ok(ok);
      assert.equal(value, v);
      assert.equal(pos, b.length);
      assert.equal(c.uint64(), BigInt(v));
      assert.equal(Number.isSafeInteger(c.value), true);
    }
  });

  test('64-bit values: value rounded but never safe, uint64()/int64() exact', () => {
    for (const s of ['9007199254740992', '9223372036854775807', '9223372036854775808', '18446744073709551615']) {
      const b = Buffer.from(reference(Long.fromString(s, true), false), 'hex');
      const [ok, value, , pos, c] = readOne(b);
      assert.ok(ok);
      assert.equal(pos, b.length);
      assert.equal(Number.isSafeInteger(value), false, `${s} is not exact as a number`);
      assert.equal(value, Number(s));
      assert.equal(c.uint64(), BigInt(s));
      assert.equal(c.int64(), BigInt.asIntN(64, BigInt(s)));
    }
    const [, , , , c] = readOne(Buffer.from(written(-1), 'hex'));
    assert.equal(c.int64(), -1n);
    assert.equal(c.uint64(), 2n ** 64n - 1n);
  });

  test('truncated: every proper prefix of a varint, and an empty input', () => {
    const b = Buffer.from(written(2 ** 50), 'hex');
    for (let n = 0; n < b.length; n++) {
      const [ok, , error] = readOne(b.subarray(0, n));
      assert.equal(ok, false);
      assert.equal(error, WireError.Truncated, `prefix of ${n} bytes`);
    }
    // `end` bounds the read, not the buffer
    const c = new WireCursor(bytes(0x80, 0x01), 0, 1);
    assert.equal(c.readVarint(), false);
    assert.equal(c.error, WireError.Truncated);
  });

  test('Go: an 11th byte is an overflow (checked before the end of input), bits past 64 are dropped', () => {
    const ten = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80];
    const [ok11, , error11] = readOne(bytes(...ten, 0x80, 0x01));
    assert.equal(ok11, false);
    assert.equal(error11, WireError.Overflow);
    // ten continuation bytes and nothing after: Go checks `shift >= 64` first
    assert.equal(readOne(bytes(...ten, 0x80))[2], WireError.Overflow);
    // 10th byte 0x7f: only bit 63 is kept (Go: uint64(b&0x7F) << 63)
    const [ok, , , pos, c] = readOne(bytes(...ten, 0x7f));
    assert.ok(ok);
    assert.equal(pos, 10);
    assert.equal(c.uint64(), 2n ** 63n);
    const [ok2, value2, , , c2] = readOne(bytes(0x81, ...ten.slice(1), 0x02));
    assert.ok(ok2);
    assert.equal(value2, 1, 'bit 64 dropped: the value is 1');
    assert.equal(c2.uint64(), 1n);
  });

  test('overlong encodings of small values read as their value (Go accepts them)', () => {
    assert.deepEqual(readOne(bytes(0x80, 0x00)).slice(0, 4), [true, 0, WireError.None, 2]);
    assert.deepEqual(readOne(bytes(0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00)).slice(0, 4), [true, 1, WireError.None, 9]);
  });

  test('readTag: field number int32(tag >> 3), wire type tag & 7, as gogo', () => {
    const tag = (b: Uint8Array): [number, number, number] => {
      const c = new WireCursor(b);
      assert.ok(c.readTag());
      return [c.fieldNumber, c.wireType, c.value];
    };
    assert.deepEqual(tag(bytes(0x0a)), [1, 2, 10]);
    assert.deepEqual(tag(bytes(0xa3, 0x06)), [100, 3, 803]);
    assert.deepEqual(tag(bytes(0xf8, 0xff, 0xff, 0xff, 0x3f)), [2 ** 31 - 1, 0, 2 ** 34 - 8]);
    assert.deepEqual(tag(bytes(0xf8, 0xff, 0xff, 0xff, 0x7f)), [-1, 0, 2 ** 35 - 8]);
    assert.deepEqual(tag(bytes(0x80, 0x80, 0x80, 0x80, 0x40)), [-(2 ** 31), 0, 2 ** 34]);
    assert.deepEqual(tag(bytes(0x80, 0x80, 0x80, 0x80, 0x80, 0x02)), [0, 0, 2 ** 36]);
    assert.deepEqual(tag(Buffer.from(written((2 ** 32 + 2) * 8 + 5), 'hex')), [2, 5, (2 ** 32 + 2) * 8 + 5]);
    // 2^63 + 2: beyond 2^53, read through the bigint
    const c = new WireCursor(bytes(0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01));
    assert.ok(c.readTag());
    assert.deepEqual([c.fieldNumber, c.wireType], [0, 2]);
    assert.equal(c.uint64(), 2n ** 63n + 2n);
  });

  test('readLength: within the message, past it, negative, overflowing the position', () => {
    const len = (b: Uint8Array, end = b.length): [boolean, number, WireError] => {
      const c = new WireCursor(b, 0, end);
      const ok = c.readLength();
      return [ok, c.value, c.error];
    };
    assert.deepEqual(len(bytes(0x02, 0x61, 0x62)), [true, 2, WireError.None]);
    assert.deepEqual(len(bytes(0x00)), [true, 0, WireError.None]);
    assert.equal(len(bytes(0x03, 0x61, 0x62))[2], WireError.Truncated);
    assert.equal(len(bytes(0x02, 0x61, 0x62), 2)[2], WireError.Truncated, 'end bounds the field');
    assert.equal(len(bytes(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01))[2], WireError.NegativeLength);
    assert.equal(len(bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01))[2], WireError.NegativeLength, '-1');
    assert.equal(len(bytes(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40))[2], WireError.Truncated, '2^62');
    // 2^63 - 1: non-negative, but the end position overflows int64
    assert.equal(len(bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f))[2], WireError.NegativeLength);
    assert.equal(len(bytes(0xff, 0xff, 0xff, 0xff, 0x0f))[2], WireError.Truncated, '2^32 - 1');
    // an overlong 9-byte encoding of 1 is a length of 1, as Go reads it
    assert.deepEqual(len(bytes(0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x61)), [true, 1, WireError.None]);
  });

  test('skipField: each wire type, as gogo skipRpc', () => {
    const skip = (b: number[]): [boolean, WireError, number, number] => {
      const c = new WireCursor(Uint8Array.from(b));
      assert.ok(c.readTag());
      const ok = c.skipField(c.wireType);
      return [ok, c.error, c.pos, c.wireType];
    };
    assert.deepEqual(skip([0xa0, 0x06, 0x96, 0x01, 0x0a]).slice(0, 3), [true, WireError.None, 4]);
    assert.deepEqual(skip([0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]).slice(0, 3), [true, WireError.None, 10]);
    assert.deepEqual(skip([0xa1, 0x06, 1, 2, 3]).slice(0, 2), [false, WireError.Truncated]);
    assert.deepEqual(skip([0xa2, 0x06, 0x02, 1, 2, 9]).slice(0, 3), [true, WireError.None, 5]);
    assert.deepEqual(skip([0xa2, 0x06, 0x05, 1]).slice(0, 2), [false, WireError.Truncated]);
    assert.deepEqual(skip([0xa2, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).slice(0, 2),
      [false, WireError.NegativeLength]);
    assert.deepEqual(skip([0xa5, 0x06, 1, 2, 3, 4]).slice(0, 3), [true, WireError.None, 6]);
    assert.deepEqual(skip([0xa6, 0x06]), [false, WireError.IllegalWireType, 2, 6]);
    assert.deepEqual(skip([0xa7, 0x06]), [false, WireError.IllegalWireType, 2, 7]);
    assert.deepEqual(skip([0xa0, 0x06, 0x80]).slice(0, 2), [false, WireError.Truncated]);
    assert.deepEqual(skip([0xa0, 0x06, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).slice(0, 2),
      [false, WireError.Overflow]);
  });

  test('skipField: groups are skipped by depth, whatever field numbers their tags carry', () => {
    const skip = (b: number[]): [boolean, WireError, number] => {
      const c = new WireCursor(Uint8Array.from(b));
      assert.ok(c.readTag());
      const ok = c.skipField(c.wireType);
      return [ok, c.error, c.pos];
    };
    assert.deepEqual(skip([0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06, 0x0a]), [true, WireError.None, 6]);
    assert.deepEqual(skip([0xa3, 0x06, 0x0c, 0x0a]), [true, WireError.None, 3], 'closed by field 1');
    assert.deepEqual(skip([0xa3, 0x06, 0xab, 0x06, 0xac, 0x06, 0xa4, 0x06]), [true, WireError.None, 8], 'nested');
    assert.deepEqual(skip([0xa3, 0x06, 0x08, 0x01]).slice(0, 2), [false, WireError.Truncated], 'unterminated');
    assert.deepEqual(skip([0xa3, 0x06, 0x0a, 0x05, 0x01]).slice(0, 2), [false, WireError.Truncated], 'bytes past the end');
    assert.deepEqual(skip([0xa3, 0x06, 0x0e]).slice(0, 2), [false, WireError.IllegalWireType]);
    assert.deepEqual(skip([0xa4, 0x06]).slice(0, 2), [false, WireError.EndOfGroup], 'a lone end group');
  });

  test('walks a message protobufjs wrote: fields in order, values and lengths exact', () => {
    const kv = mvccpb.KeyValue.encode({
      key: Buffer.from('k1'), create_revision: 2 ** 40, mod_revision: Number.MAX_SAFE_INTEGER, version: 1,
      value: Buffer.alloc(300, 0x61), lease: Long.fromString('7587869346879012345'),
    }).finish();
    const c = new WireCursor(kv);
    const seen: string[] = [];
    while (c.pos < c.end) {
      const tag = c.varint();
      if ((tag & 7) === WireType.Bytes) {
        const n = c.length();
        seen.push(`${tag >>> 3}:${Buffer.from(kv.subarray(c.pos, c.pos + n)).toString('latin1').slice(0, 3)}/${n}`);
        c.pos += n;
      } else {
        c.varint();
        seen.push(`${tag >>> 3}:${Number.isSafeInteger(c.value) ? c.value : c.uint64()}`);
      }
    }
    assert.deepEqual(seen, ['1:k1/2', `2:${2 ** 40}`, `3:${Number.MAX_SAFE_INTEGER}`, '4:1', '5:aaa/300',
      '6:7587869346879012345']);
    // skip() over the same message lands at its end
    c.reset(kv);
    while (c.pos < c.end) c.skip(c.varint() & 7);
    assert.equal(c.pos, kv.length);
  });

  test('the asserting readers refuse malformed bytes; reset checks its range', () => {
    assert.throws(() => new WireCursor(bytes(0x80)).varint(), AssertionError);
    assert.throws(() => new WireCursor(bytes(0x05, 0x01)).length(), AssertionError);
    assert.throws(() => new WireCursor(bytes(0x00)).skip(7), AssertionError);
    const c = new WireCursor();
    assert.throws(() => c.reset(bytes(1, 2), 0, 3), AssertionError);
    assert.throws(() => c.reset(bytes(1, 2), 2, 1), AssertionError);
    c.reset(bytes(1, 2), 1);
    assert.deepEqual([c.pos, c.end, c.varint()], [1, 2, 2]);
  });
});
