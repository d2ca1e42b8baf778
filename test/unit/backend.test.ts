// Backend (LMDB with batched commits): what a reader sees before, during and after a commit,
// batch limits, persistence across a reopen.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { Backend } from '../../src/storage/backend';
import * as schema from '../../src/storage/schema';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-backend-'));
const opened: Backend[] = [];
after(async () => {
  for (const b of opened) await b.close();
  fs.rmSync(root, { recursive: true, force: true });
});
let seq = 0;

function openAt(dir: string, batchLimit = 10000): Backend {
  const b = new Backend({ path: dir, mapSizeBytes: 32 * 1024 * 1024, batchIntervalMs: 50, batchLimit });
  opened.push(b);
  return b;
}

async function close(b: Backend): Promise<void> {
  await b.close();
  opened.splice(opened.indexOf(b), 1);
}

function fresh(batchLimit?: number): { b: Backend; dir: string } {
  const dir = path.join(root, 'db' + seq++);
  fs.mkdirSync(dir);
  return { b: openAt(dir, batchLimit), dir };
}

const hex = (u: Uint8Array | undefined): string | undefined => (u === undefined ? undefined : Buffer.from(u).toString('hex'));

describe('Backend', () => {
  test('schema: revision keys sort as (main, sub), tombstones marked', () => {
    const k = schema.revKey(2 ** 40 + 3, 7, false);
    assert.equal(k.length, 16);
    assert.deepEqual([schema.revKeyMain(k), schema.revKeySub(k), schema.revKeyIsTombstone(k)], [2 ** 40 + 3, 7, false]);
    const t = schema.revKey(5, 1, true);
    assert.deepEqual([t.length, schema.revKeyIsTombstone(t), schema.revKeyMain(t)], [17, true, 5]);
    const keys = [schema.revKey(256, 0, false), schema.revKey(1, 300, false), schema.revKey(1, 2, true), schema.revKey(1, 2, false)];
    const sorted = keys.slice().sort(Buffer.compare).map((x) => [schema.revKeyMain(x), schema.revKeySub(x), schema.revKeyIsTombstone(x)]);
    assert.deepEqual(sorted, [[1, 2, false], [1, 2, true], [1, 300, false], [256, 0, false]]);
    assert.throws(() => schema.u64Bytes(-1));
    assert.throws(() => schema.u64Bytes(2 ** 53));
  });

  test('records are readable at once, during the commit and after it', async () => {
    const { b } = fresh();
    const k = schema.revKey(2, 0, false);
    b.putKv(k, Buffer.from('v2'));
    assert.equal(hex(b.getKv(k)), '7632', 'queued');
    b.flush();
    assert.equal(hex(b.getKv(k)), '7632', 'handed to LMDB, not committed');
    await b.flushed();
    assert.equal(hex(b.getKv(k)), '7632', 'committed');
    assert.equal(hex(b.kv.getBinary(k)), '7632', 'in LMDB');
    b.removeKv(k);
    await b.flushed();
    assert.equal(b.getKv(k), undefined);
  });

  test('meta values are readable at once, during the commit and after it', async () => {
    const { b } = fresh();
    assert.equal(b.getMetaU64(schema.metaCurrentRev), 0, 'absent = 0');
    b.putMetaU64(schema.metaCurrentRev, 5);
    assert.equal(b.getMetaU64(schema.metaCurrentRev), 5, 'queued');
    b.flush();
    assert.equal(b.getMetaU64(schema.metaCurrentRev), 5, 'handed to LMDB, not committed');
    b.putMetaU64(schema.metaCurrentRev, 6);
    b.flush();
    assert.equal(b.getMetaU64(schema.metaCurrentRev), 6, 'the newest value wins');
    await b.flushed();
    assert.equal(b.getMetaU64(schema.metaCurrentRev), 6, 'committed');
    b.putMetaBytes(schema.metaClusterId, Buffer.from('0102030405060708', 'hex'));
    assert.equal(hex(b.getMetaBytes(schema.metaClusterId)), '0102030405060708');
  });

  test('a batch limit hands writes to LMDB without waiting for the timer', async () => {
    const { b } = fresh(3);
    for (let i = 1; i <= 3; i++) b.putKv(schema.revKey(i, 0, false), Buffer.from([i]));
    await b.env.committed;
    assert.equal(hex(b.kv.getBinary(schema.revKey(3, 0, false))), '03', 'committed after the 3rd write');
  });

  test('everything survives close and reopen', async () => {
    const { b, dir } = fresh();
    b.putKv(schema.revKey(2, 0, false), Buffer.from('a'));
    b.putKv(schema.revKey(3, 1, true), Buffer.from('t'));
    b.putMetaU64(schema.metaConsistentIndex, 12);
    await close(b);
    const b2 = openAt(dir);
    assert.equal(hex(b2.getKv(schema.revKey(2, 0, false))), '61');
    assert.equal(hex(b2.getKv(schema.revKey(3, 1, true))), '74');
    assert.equal(b2.getMetaU64(schema.metaConsistentIndex), 12);
    const keys = [...b2.kv.getKeys({})].map((k) => Buffer.from(k as Buffer).toString('hex'));
    assert.deepEqual(keys, [schema.revKey(2, 0, false).toString('hex'), schema.revKey(3, 1, true).toString('hex')]);
    const sizes = b2.sizes();
    assert.ok(sizes.dbSize > 0 && sizes.dbSizeInUse > 0 && sizes.dbSizeInUse <= sizes.dbSize, JSON.stringify(sizes));
  });
});
