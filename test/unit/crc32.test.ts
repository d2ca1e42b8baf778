// CRC-32 (IEEE, zlib polynomial): the WAL record checksum.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { crc32 } from '../../src/util/crc32';

test('standard check values', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
  assert.equal(crc32(Buffer.from('The quick brown fox jumps over the lazy dog')), 0x414fa339);
  assert.equal(crc32(Buffer.alloc(32, 0xff)), 0xff6cab0b);
});

test('start/end select a sub-range', () => {
  const b = Buffer.from('xx123456789yy');
  assert.equal(crc32(b, 2, 11), 0xcbf43926);
  assert.equal(crc32(b, 5, 5), 0);
});

test('one flipped bit changes the checksum', () => {
  const b = Buffer.from('123456789');
  b[4]! ^= 0x10;
  assert.notEqual(crc32(b), 0xcbf43926);
});
