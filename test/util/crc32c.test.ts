// CRC-32C against published check values (RFC 3720 appendix B.4, the "123456789" check value of
// the CRC catalogue) and against itself: slicing-by-8 equals byte-at-a-time at every length and
// alignment, and updates compose.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c, crc32cUpdate } from '../../src/util/crc32c';

function reference(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let j = 0; j < 8; j++) c = (c & 1) !== 0 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

test('crc32c: known vectors', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43); // 32 bytes of 0xff
  const inc = new Uint8Array(32);
  for (let i = 0; i < 32; i++) inc[i] = i;
  assert.equal(crc32c(inc), 0x46dd794e); // incrementing 00..1f
  // Go: crc32.Checksum([]byte("key"), crc32.MakeTable(crc32.Castagnoli))
  assert.equal(crc32c(Buffer.from('key')), reference(Buffer.from('key')));
});

test('crc32c: slicing-by-8 equals byte-at-a-time; updates compose', () => {
  const data = new Uint8Array(300);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff;
  for (let start = 0; start < 9; start++) {
    for (let end = start; end <= data.length; end += 7) {
      assert.equal(crc32cUpdate(0, data, start, end), reference(data.subarray(start, end)));
    }
  }
  for (let cut = 0; cut <= data.length; cut += 13) {
    assert.equal(crc32cUpdate(crc32cUpdate(0, data, 0, cut), data, cut), crc32c(data));
  }
});
