// Maintenance.Snapshot (issue #13 item 5, the backup half): the stream has etcd 3.4's shape (no
// header, 32 KiB blobs with the bytes still to come, then the SHA-256 of the body as the last
// blob, the body a multiple of 512 bytes), `etcdctl snapshot save` against concord saves it as
// against etcd, and the file is a consistent copy of the state: an LMDB environment at one
// revision between what was acknowledged before the save and after it, taken while a write load
// runs. (etcd's own tools cannot read concord's LMDB file, nor concord's tools a bbolt file:
// `concord snapshot status | restore` are tested in snapshot_restore.test.ts.)
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { inspectSnapshotFile } from '../../src/storage/snapshotter';
import { startConcord } from '../helpers/concord';
import { etcdSkipReason, startEtcd } from '../helpers/etcd';
import { etcdctlSkipReason, runEtcdctl } from '../helpers/etcdctl';
import { collect, connect, num, unary } from '../helpers/grpc_client';

async function fill(endpoint: string, n: number): Promise<number> {
  const kv = connect('etcdserverpb.KV', endpoint);
  try {
    let rev = 0;
    for (let i = 0; i < n; i++) rev = num((await unary(kv, 'Put', { key: Buffer.from(`k${i}`), value: Buffer.alloc(2000, i) })).header!.revision);
    return rev;
  } finally {
    kv.close();
  }
}

interface Shape { responses: number; headers: number; chunks: number[]; remaining: number[]; body: number; shaOk: boolean }

/** The stream's shape, as comparable between etcd and concord (sizes differ: bbolt vs LMDB). */
async function snapshotShape(endpoint: string): Promise<Shape> {
  const m = connect('etcdserverpb.Maintenance', endpoint);
  try {
    const rs = await collect(m, 'Snapshot', {});
    const blobs = rs.map((r) => Buffer.from(r.blob));
    const body = Buffer.concat(blobs.slice(0, -1));
    const sha = createHash('sha256').update(body).digest();
    return {
      responses: rs.length, headers: rs.filter((r) => r.header != null).length,
      chunks: blobs.slice(0, -2).map((b) => b.length),
      remaining: rs.map((r) => num(r.remaining_bytes)),
      body: body.length, shaOk: sha.equals(blobs[blobs.length - 1]!),
    };
  } finally {
    m.close();
  }
}

test('Maintenance.Snapshot: etcd 3.4\'s stream shape', { skip: etcdSkipReason() }, async (t) => {
  const [e, c] = await Promise.all([startEtcd(), startConcord()]);
  t.after(() => Promise.all([e.stop(), c.stop()]));
  await Promise.all([fill(e.endpoint, 60), fill(c.endpoint, 60)]);
  for (const [name, s] of [['etcd', await snapshotShape(e.endpoint)], ['concord', await snapshotShape(c.endpoint)]] as const) {
    assert.equal(s.headers, 0, `${name}: no header`);
    assert.ok(s.chunks.every((n) => n === 32 * 1024), `${name}: 32 KiB blobs`);
    assert.equal(s.body % 512, 0, `${name}: whole 512-byte blocks`);
    assert.ok(s.shaOk, `${name}: the last blob is the body's SHA-256`);
    // remaining_bytes counts down to 0 with each blob; the digest's response says 0 too.
    let left = s.body;
    const expected = s.remaining.map((_, i) => (i === s.remaining.length - 1 ? 0 : (left -= Math.min(32 * 1024, left))));
    assert.deepEqual(s.remaining, expected, `${name}: remaining_bytes`);
  }
});

test('etcdctl snapshot save: the same output as against etcd; the file is a consistent copy taken under writes', { skip: etcdctlSkipReason() }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-backup-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const [e, c] = await Promise.all([startEtcd(), startConcord()]);
  t.after(() => Promise.all([e.stop(), c.stop()]));
  await Promise.all([fill(e.endpoint, 100), fill(c.endpoint, 100)]);

  // A write load on concord while it saves.
  let writing = true;
  let acked = 0;
  const kv = connect('etcdserverpb.KV', c.endpoint);
  t.after(() => kv.close());
  const writer = (async () => {
    for (let i = 0; writing; i++) acked = num((await unary(kv, 'Put', { key: Buffer.from(`w${i % 50}`), value: Buffer.alloc(500, i) })).header!.revision);
  })();
  const before = acked || 100;
  const saved = await Promise.all([e, c].map((s, i) => runEtcdctl([s.endpoint], ['snapshot', 'save', path.join(dir, `${i}.db`)])));
  const after = acked;
  writing = false;
  await writer;

  for (const [i, r] of saved.entries()) {
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `Snapshot saved at ${path.join(dir, `${i}.db`)}\n`);
    assert.match(r.stderr, /"msg":"fetched snapshot"/);
  }
  const file = path.join(dir, '1.db');
  const meta = await inspectSnapshotFile(file, 1 << 30, null);
  assert.ok(meta.currentRev >= before && meta.currentRev <= after + 1,
    `the copy is at one revision between the save's start and end: ${before} <= ${meta.currentRev} <= ${after}`);
});
