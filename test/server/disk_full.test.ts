// A full disk (issue #10, finding 6): the LMDB file cannot grow (RLIMIT_FSIZE makes its writes
// fail as on a full disk). The member raises NOSPACE: puts are refused with etcd's "database
// space exceeded", reads keep being served (what LMDB lacks is held in memory and in the WAL),
// /health says false, Status lists the alarm; nothing crashes, and a kill -9 and a restart on
// the still-full disk come back the same way (no crash loop). With room again, the pending
// commit goes through, the alarm clears, and every acknowledged write is there.
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';

import { startConcord } from '../helpers/concord';
import { connectAll, unary, str } from '../helpers/grpc_client';

/** Larger than a WAL segment and its spare (16 MiB each): only LMDB's file runs into it. */
const limitBytes = 20 * 1024 * 1024;

function health(endpoint: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(endpoint + '/health', (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

test('a full disk: NOSPACE, writes refused, reads served, no crash loop; cleared once there is room', async () => {
  const c = await startConcord({ fileSizeLimitBytes: limitBytes, keepDataDir: true });
  const dataDir = c.dataDir;
  let client = connectAll(c.endpoint);
  const acked = new Map<string, number>();
  const value = Buffer.alloc(100 * 1024, 0x61);
  let refused: grpc.ServiceError | null = null;
  try {
    for (let i = 0; i < 600 && refused === null; i++) {
      const key = 'k' + String(i).padStart(4, '0');
      try {
        const r = await unary(client.kv, 'Put', { key: Buffer.from(key), value });
        acked.set(key, Number(r.header!.revision));
      } catch (err) {
        refused = err as grpc.ServiceError;
      }
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 120)); // let LMDB commits land
    }
    assert.ok(refused !== null, `the disk never filled (${acked.size} puts)`);
    assert.equal(refused.code, grpc.status.RESOURCE_EXHAUSTED, `${refused.details}\n${c.logs().slice(-3000)}`);
    assert.equal(refused.details, 'etcdserver: mvcc: database space exceeded');
    assert.ok(acked.size > 50, `${acked.size} puts before the disk filled`);
    assert.match(c.logs(), /NOSPACE alarm raised/);
    // Reads of every acknowledged key work, deletes are taken, the process is up.
    for (const key of [...acked.keys()].filter((_, i) => i % 25 === 0)) {
      const r = await unary(client.kv, 'Range', { key: Buffer.from(key) });
      assert.equal(r.kvs.length, 1, key);
      assert.equal(Number(r.kvs[0]!.mod_revision), acked.get(key));
    }
    const status = await unary(client.maintenance, 'Status', {});
    assert.ok(status.errors.some((e) => /alarm:NOSPACE/.test(e)), JSON.stringify(status.errors));
    const h = await health(c.endpoint);
    assert.equal(h.status, 503);
    assert.match(h.body, /"health":"false"/);
    await assert.rejects(unary(client.kv, 'Put', { key: Buffer.from('more'), value: Buffer.from('x') }), /database space exceeded/);
    assert.equal(c.proc.exitCode, null, 'still running');

    // kill -9 and restart on the still-full disk: replays, raises NOSPACE again, serves reads.
    client.close();
    await c.kill();
    const c2 = await startConcord({ dataDir, fileSizeLimitBytes: limitBytes, keepDataDir: true });
    client = connectAll(c2.endpoint);
    try {
      await assert.rejects(async () => {
        for (let i = 0; i < 50; i++) {
          await unary(client.kv, 'Put', { key: Buffer.from('again' + i), value });
          await new Promise((r) => setTimeout(r, 50));
        }
      }, /database space exceeded/);
      const last = [...acked.keys()].at(-1)!;
      const r = await unary(client.kv, 'Range', { key: Buffer.from(last) });
      assert.equal(Number(r.kvs[0]?.mod_revision), acked.get(last));
      assert.equal(c2.proc.exitCode, null);
    } finally {
      client.close();
      await c2.kill();
    }

    // Room again: the retried commit lands, the alarm clears, everything acknowledged is there.
    const c3 = await startConcord({ dataDir });
    client = connectAll(c3.endpoint);
    try {
      for (let i = 0; i < 100; i++) {
        const st = await unary(client.maintenance, 'Status', {});
        if (!st.errors.some((e) => /NOSPACE/.test(e))) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const put = await unary(client.kv, 'Put', { key: Buffer.from('after'), value: Buffer.from('ok') });
      assert.ok(Number(put.header!.revision) > Math.max(...acked.values()));
      const all = await unary(client.kv, 'Range', { key: Buffer.from('k'), range_end: Buffer.from('l'), keys_only: true });
      const got = new Map(all.kvs.map((kv) => [str(kv.key), Number(kv.mod_revision)]));
      for (const [key, rev] of acked) assert.equal(got.get(key), rev, `acknowledged ${key} kept`);
      assert.equal((await health(c3.endpoint)).status, 200);
    } finally {
      client.close();
      await c3.stop();
    }
  } finally {
    client.close();
    await c.stop();
  }
});
