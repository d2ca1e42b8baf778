// CRC-32 (IEEE, zlib polynomial): the WAL record checksum. Short inputs take the table, long
// ones zlib.crc32 (src/util/crc32.ts crc32ZlibBytesMin); both must give the standard check
// values and agree with a bit-at-a-time reference at every length around the switch, at any
// offset, up to 1 MiB.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AssertionError } from '../../src/util/assert';
import { crc32, crc32ZlibBytesMin } from '../../src/util/crc32';
import { Prng } from '../../src/util/prng';

/** The definition, one bit at a time (no table, no zlib): the reference both paths must match. */
function crc32Bitwise(buf: Uint8Array, start: number, end: number): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) {
    c ^= buf[i]!;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return (c ^ 0xffffffff) >>> 0;
}

test('standard check values', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
  assert.equal(crc32(Buffer.from('The quick brown fox jumps over the lazy dog')), 0x414fa339);
  assert.equal(crc32(Buffer.alloc(32, 0xff)), 0xff6cab0b);
  // long enough for zlib: the same polynomial
  assert.equal(crc32(Buffer.from('The quick brown fox jumps over the lazy dog'.repeat(4))),
    crc32Bitwise(Buffer.from('The quick brown fox jumps over the lazy dog'.repeat(4)), 0, 172));
  assert.equal(crc32(Buffer.alloc(1 << 20)), 0xa738ea1c, '1 MiB of zeros');
});

test('start/end select a sub-range', () => {
  const b = Buffer.from('xx123456789yy');
  assert.equal(crc32(b, 2, 11), 0xcbf43926);
  assert.equal(crc32(b, 5, 5), 0);
  const long = Buffer.concat([Buffer.from('xx'), Buffer.from('123456789'.repeat(20)), Buffer.from('yy')]);
  assert.equal(crc32(long, 2, 182), crc32(Buffer.from('123456789'.repeat(20))));
});

test('table and zlib agree with the reference around the switch, at any offset', () => {
  const prng = new Prng(32);
  const data = new Uint8Array(4096);
  for (let i = 0; i < data.length; i++) data[i] = prng.int(256);
  for (let len = 0; len <= crc32ZlibBytesMin * 2 + 3; len++) {
    for (const start of [0, 1, 7, 1000]) {
      assert.equal(crc32(data, start, start + len), crc32Bitwise(data, start, start + len), `len ${len} at ${start}`);
    }
    // a whole buffer (zlib is handed the buffer itself, no view)
    const own = data.slice(3, 3 + len);
    assert.equal(crc32(own), crc32Bitwise(own, 0, len), `whole buffer of ${len}`);
  }
  const big = new Uint8Array(1 << 20);
  for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
  assert.equal(crc32(big, 5, big.length - 3), crc32Bitwise(big, 5, big.length - 3));
});

test('one flipped bit changes the checksum', () => {
  const b = Buffer.from('123456789');
  b[4]! ^= 0x10;
  assert.notEqual(crc32(b), 0xcbf43926);
  const long = Buffer.alloc(300, 0x61);
  const before = crc32(long);
  long[299]! ^= 1;
  assert.notEqual(crc32(long), before);
});

test('a range outside the buffer is a bug', () => {
  const b = Buffer.alloc(200);
  assert.throws(() => crc32(b, 0, 201), AssertionError);
  assert.throws(() => crc32(b, 10, 5), AssertionError);
  assert.throws(() => crc32(b, -1, 5), AssertionError);
});
