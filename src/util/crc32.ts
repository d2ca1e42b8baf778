// CRC-32 (IEEE 802.3, reflected polynomial 0xedb88320: zlib's), the WAL record checksum.
//
// zlib.crc32 (node 20.15+, 22.2+) runs zlib's native code, SIMD where the CPU has it; a call costs
// ~100-150 ns of its own (the JS->C++ crossing and a view of the range), so small inputs stay on
// the table. Measured on dev-2vcpu (hardware.md), node 20.20, min of 9 rounds, ns per call:
//
//   bytes        16    64   128   300   4 KiB     1 MiB
//   table        30   142   284   689   14380   3.38 ms   (~400 MiB/s)
//   zlib.crc32  113   219   187   257    1125   0.23 ms   (~4.4 GiB/s)
//
// The two cross between 112 and 128 bytes: a WAL hard-state record (~25 bytes) stays on the
// table, an entry with a 256-byte value (~300 bytes) goes to zlib.
import * as zlib from 'node:zlib';
import { assert } from './assert';

/** Inputs at least this long go to zlib.crc32; shorter ones to the table (see above). */
export const crc32ZlibBytesMin = 128;

const table = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  table[n] = c;
}

/** CRC-32 of buf[start, end). */
export function crc32(buf: Uint8Array, start = 0, end = buf.length): number {
  assert(start >= 0 && start <= end && end <= buf.length, 'crc32 range outside the buffer');
  if (end - start >= crc32ZlibBytesMin) {
    return zlib.crc32(start === 0 && end === buf.length ? buf : buf.subarray(start, end), 0);
  }
  let c = -1;
  for (let i = start; i < end; i++) c = table[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
