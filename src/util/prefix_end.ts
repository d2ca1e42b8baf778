// The range end that covers every key starting with `prefix` (etcd clientv3 GetPrefixRangeEnd):
// the prefix with its last byte below 0xff incremented and what follows dropped; "\0" (every
// key from the prefix on) when all its bytes are 0xff.
export function prefixEnd(prefix: Uint8Array): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}
