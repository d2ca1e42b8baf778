// The in-memory raft log is trimmed behind the applied index (limits.logRetainEntries): a server
// that has applied more than twice that many entries keeps serving, and restarts to the same
// revision from its WAL and LMDB.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { bytes, connect, num, str, unary } from '../helpers/grpc_client';
import * as limits from '../../src/config/limits';

let c: ConcordHandle | undefined;
after(async () => {
  await c?.stop();
});

test('more than 2 x logRetainEntries writes, then reads and a restart', async () => {
  c = await startConcord({ keepDataDir: true });
  const total = 2 * limits.logRetainEntries + 1500;
  let kv = connect('etcdserverpb.KV', c.endpoint);
  let next = 0;
  let lastRev = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < total; i = next++) {
      const r = await unary(kv, 'Put', { key: bytes(`log/${i}`), value: bytes(`v${i}`) });
      lastRev = Math.max(lastRev, num(r.header?.revision));
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  assert.equal(lastRev, total + 1);
  const one = await unary(kv, 'Range', { key: bytes('log/7') });
  assert.equal(str(one.kvs[0]?.value), 'v7');
  const count = await unary(kv, 'Range', { key: bytes('log/'), range_end: bytes('log0'), count_only: true });
  assert.equal(num(count.count), total);
  kv.close();

  const dataDir = c.dataDir;
  await c.stop();
  c = await startConcord({ dataDir });
  kv = connect('etcdserverpb.KV', c.endpoint);
  try {
    const after = await unary(kv, 'Range', { key: bytes(`log/${total - 1}`) });
    assert.equal(num(after.header?.revision), total + 1);
    assert.equal(str(after.kvs[0]?.value), `v${total - 1}`);
    const put = await unary(kv, 'Put', { key: bytes('log/after'), value: bytes('x') });
    assert.equal(num(put.header?.revision), total + 2);
  } finally {
    kv.close();
    await c.stop();
    const fs = await import('node:fs');
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
