// `concord snapshot save | status | restore` on one member (issue #13 item 5, the restore
// half). A member with history (several revisions per key, deletes, a compaction, leases with
// keys) is saved with `concord snapshot save`, restored into a new data dir, and started: every
// revision from the compaction revision to the snapshot's answers a Range of every key the
// same on both (every field), HashKV at the snapshot's revision is the same, the leases are
// there with their keys, and the member is the new cluster's (ids from the restore's flags).
// A restore that loses one revision (failpoint snapshotRestoreDropRev) is caught by the same
// checks. The refusals (a damaged body or trailer, no trailer, an existing data dir) print
// what etcdctl 3.4's restore prints for the same file (its hash check runs before it opens the
// file as bbolt, so it reads concord's backups that far); a file etcdctl saved from concord
// restores; etcd's own bbolt backup is refused as not concord's. `save` refuses a stream whose
// trailer does not match, whose body is not in 512-byte blocks, or that has no trailer (a
// stand-in member streams them), and keeps a whole one byte for byte.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';

import { etcdserverpb } from '../../src/gen/proto';
import { serviceDefinition } from '../../src/api/grpc/services';
import { clusterIdOf, memberIdOf } from '../../src/membership/ids';
import { humanBytes, Progress } from '../../src/cli/progress';
import { startConcord } from '../helpers/concord';
import { freePort, startEtcd } from '../helpers/etcd';
import { etcdctlSkipReason, runEtcdctl } from '../helpers/etcdctl';
import { connect, num, unary } from '../helpers/grpc_client';
import { hashKvAt, historyDiff, leasesOf, runSnapshotCli } from '../helpers/snapshot';

/** The history: 6 keys x 4 versions, 2 deletes, a txn, 2 leases with 3 keys, a compaction. */
async function writeHistory(endpoint: string): Promise<{ compactRev: number; rev: number }> {
  const kv = connect('etcdserverpb.KV', endpoint);
  const lease = connect('etcdserverpb.Lease', endpoint);
  try {
    for (let v = 0; v < 4; v++) {
      for (let k = 0; k < 6; k++) await unary(kv, 'Put', { key: Buffer.from(`key${k}`), value: Buffer.from(`v${v}-${k}`) });
    }
    await unary(kv, 'DeleteRange', { key: Buffer.from('key1') });
    await unary(lease, 'LeaseGrant', { ID: 101, TTL: 900 });
    await unary(lease, 'LeaseGrant', { ID: 102, TTL: 600 });
    await unary(kv, 'Put', { key: Buffer.from('leased-a'), value: Buffer.from('a'), lease: 101 });
    await unary(kv, 'Put', { key: Buffer.from('leased-b'), value: Buffer.from('b'), lease: 101 });
    const mid = num((await unary(kv, 'Put', { key: Buffer.from('leased-c'), value: Buffer.from('c'), lease: 102 })).header!.revision);
    await unary(kv, 'Txn', {
      compare: [{ key: Buffer.from('key0'), target: etcdserverpb.Compare.CompareTarget.VERSION, result: etcdserverpb.Compare.CompareResult.EQUAL, version: 4 }],
      success: [{ request_put: { key: Buffer.from('key0'), value: Buffer.from('txn') } }, { request_delete_range: { key: Buffer.from('key2') } }],
    });
    const compactRev = mid - 8;
    await unary(kv, 'Compact', { revision: compactRev, physical: true });
    let rev = 0;
    for (let k = 0; k < 3; k++) rev = num((await unary(kv, 'Put', { key: Buffer.from(`key${k}`), value: Buffer.from(`after-${k}`) })).header!.revision);
    return { compactRev, rev };
  } finally {
    kv.close();
    lease.close();
  }
}

async function memberList(endpoint: string): Promise<{ ids: string[]; names: string[]; peerUrls: string[][]; clusterId: string }> {
  const c = connect('etcdserverpb.Cluster', endpoint);
  try {
    const r = await unary(c, 'MemberList', {});
    return {
      ids: r.members.map((m) => BigInt(String(m.ID)).toString(16)),
      names: r.members.map((m) => m.name ?? ''),
      peerUrls: r.members.map((m) => m.peerURLs ?? []),
      clusterId: BigInt(String(r.header!.cluster_id)).toString(16),
    };
  } finally {
    c.close();
  }
}

test('save, status and restore of one member: every revision since the compaction, HashKV, leases; a lost revision is caught', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-restore-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const original = await startConcord();
  t.after(() => original.stop());
  const { compactRev, rev } = await writeHistory(original.endpoint);

  const file = path.join(dir, 'backup.db');
  const saved = await runSnapshotCli(['save', file, `--endpoints=${original.endpoint}`]);
  assert.equal(saved.code, 0, saved.stderr);
  assert.equal(saved.stdout, `Snapshot saved at ${file}\n`);
  assert.match(saved.stderr, /"msg":"fetched snapshot"/);
  assert.ok(!fs.existsSync(file + '.part'), 'the .part file was renamed');
  const size = fs.statSync(file).size;
  assert.equal(size % 512, 32, 'body in 512-byte blocks, then the 32-byte SHA-256');

  // status: etcdctl's formats; the revision is the snapshot's.
  const json = await runSnapshotCli(['status', file, '-w', 'json']);
  assert.equal(json.code, 0, json.stderr);
  const st = JSON.parse(json.stdout) as { hash: number; revision: number; totalKey: number; totalSize: number };
  assert.equal(st.revision, rev);
  assert.equal(st.totalSize, size - 32);
  assert.ok(st.totalKey >= 20, `records counted: ${st.totalKey}`);
  const simple = await runSnapshotCli(['status', file]);
  assert.equal(simple.stdout, `${st.hash.toString(16)}, ${rev}, ${st.totalKey}, ${humanBytes(st.totalSize)}\n`);
  const table = await runSnapshotCli(['status', file, '--write-out=table']);
  const lines = table.stdout.split('\n');
  assert.match(lines[1]!, /^\| +HASH +\| REVISION \| TOTAL KEYS \| TOTAL SIZE \|$/);
  assert.match(lines[3]!, new RegExp(`^\\| +${st.hash.toString(16)} \\| +${rev} \\| +${st.totalKey} \\| +\\d+ kB \\|$`));
  assert.equal(lines[0], lines[2]);
  assert.equal(lines[0], lines[4]);
  const again = await runSnapshotCli(['status', file, '-w', 'json']);
  assert.equal(again.stdout, json.stdout, 'status is a pure read of the file');

  const peerUrl = `http://127.0.0.1:${await freePort()}`;
  const restoreArgs = (dataDir: string): string[] => ['restore', file, '--name', 'r1', '--initial-cluster', `r1=${peerUrl}`,
    '--initial-cluster-token', 'restored', '--initial-advertise-peer-urls', peerUrl, '--data-dir', dataDir];
  const dataDir = path.join(dir, 'restored');
  const restored = await runSnapshotCli(restoreArgs(dataDir));
  assert.equal(restored.code, 0, restored.stderr);
  assert.equal(restored.stdout, '');
  assert.match(restored.stderr, /"msg":"restoring snapshot"/);
  assert.match(restored.stderr, /"msg":"restored snapshot"/);
  assert.ok(!fs.existsSync(dataDir + '.restoring'));

  let member = await startConcord({ dataDir, name: 'r1' });
  t.after(() => member.stop());
  // Every revision: from the compaction on the same answers; before it the same refusal.
  assert.deepEqual(await historyDiff(original.endpoint, member.endpoint, 1, rev), []);
  const [ha, hb] = await Promise.all([hashKvAt(original.endpoint, rev), hashKvAt(member.endpoint, rev)]);
  assert.deepEqual(hb, ha, 'HashKV at the snapshot revision (compaction revision included)');
  assert.equal(hb.compactRevision, compactRev);
  const leases = await leasesOf(member.endpoint);
  assert.equal(leases, await leasesOf(original.endpoint));
  assert.match(leases, /^101 granted=900 keys=leased-a,leased-b\n102 granted=600 keys=leased-c$/);

  // The new cluster: ids from the restore's flags, as a bootstrap with them derives them.
  const id = memberIdOf([peerUrl], 'restored');
  const ml = await memberList(member.endpoint);
  assert.deepEqual(ml.ids, [id.toString(16)]);
  assert.deepEqual(ml.peerUrls, [[peerUrl]]);
  assert.equal(ml.clusterId, clusterIdOf([id]).toString(16));
  const kv = connect('etcdserverpb.KV', member.endpoint);
  try {
    const put = await unary(kv, 'Put', { key: Buffer.from('new'), value: Buffer.from('x') });
    assert.equal(num(put.header!.revision), rev + 1, 'writes go on from the snapshot revision');
  } finally {
    kv.close();
  }
  // A restart of the restored member (its WAL now holds entries after the restore's start).
  await member.stop();
  member = await startConcord({ dataDir, name: 'r1' });
  assert.deepEqual(await historyDiff(original.endpoint, member.endpoint, 1, rev), []);
  assert.deepEqual(await hashKvAt(member.endpoint, rev), ha);
  const kv2 = connect('etcdserverpb.KV', member.endpoint);
  try {
    const got = await unary(kv2, 'Range', { key: Buffer.from('new') });
    assert.equal(num(got.kvs[0]!.mod_revision), rev + 1);
  } finally {
    kv2.close();
  }

  // A restore that loses one revision: the same checks fail.
  const lossyDir = path.join(dir, 'lossy');
  const lossy = await runSnapshotCli(restoreArgs(lossyDir), { env: { CONCORD_FAILPOINTS: `snapshotRestoreDropRev=${rev - 1}` } });
  assert.equal(lossy.code, 0, lossy.stderr);
  const bad = await startConcord({ dataDir: lossyDir, name: 'r1' });
  t.after(() => bad.stop());
  const diff = await historyDiff(original.endpoint, bad.endpoint, compactRev, rev);
  assert.ok(diff.length > 0 && diff[0]!.rev === rev - 1, `the lost revision is reported: ${JSON.stringify(diff[0])}`);
  assert.notEqual((await hashKvAt(bad.endpoint, rev)).hash, ha.hash, 'HashKV differs');
});

test('restore refuses a damaged file (etcdctl\'s messages), --skip-hash-check accepts it, an existing data dir is refused', { skip: etcdctlSkipReason() }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-restore-bad-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = await startConcord();
  t.after(() => c.stop());
  const kv = connect('etcdserverpb.KV', c.endpoint);
  for (let i = 0; i < 20; i++) await unary(kv, 'Put', { key: Buffer.from(`k${i}`), value: Buffer.alloc(300, i) });
  kv.close();
  const good = path.join(dir, 'good.db');
  assert.equal((await runSnapshotCli(['save', good, `--endpoints=${c.endpoint}`])).code, 0);
  const bytes = fs.readFileSync(good);

  /** Runs concord's and etcdctl's restore of `file` into fresh dirs; returns both "Error:" lines. */
  const both = async (file: string, extra: string[] = []): Promise<{ concord: string; etcdctl: string; code: number | null }> => {
    const n = fs.readdirSync(dir).length;
    const mine = await runSnapshotCli(['restore', file, '--data-dir', path.join(dir, `c${n}`), ...extra]);
    const theirs = await runEtcdctl([], ['snapshot', 'restore', file, '--data-dir', path.join(dir, `e${n}`), ...extra]);
    const err = (s: string): string => s.split('\n').filter((l) => l.startsWith('Error:')).join('\n');
    assert.equal(theirs.code, 1, theirs.stderr);
    assert.ok(!fs.existsSync(path.join(dir, `c${n}`)) || extra.length > 0);
    return { concord: err(mine.stderr), etcdctl: err(theirs.stderr), code: mine.code };
  };

  // One byte of the body flipped: the SHA-256 check catches it.
  const flipped = Buffer.from(bytes);
  flipped[4096 + 100]! ^= 0x01;
  fs.writeFileSync(path.join(dir, 'flipped.db'), flipped);
  let r = await both(path.join(dir, 'flipped.db'));
  assert.equal(r.code, 1);
  assert.match(r.concord, /^Error: expected sha256 \[[0-9 ]+\], got \[[0-9 ]+\]$/);
  assert.equal(r.concord, r.etcdctl);

  // The trailer damaged instead: refused, and accepted with --skip-hash-check (the body is whole).
  const badTrailer = Buffer.from(bytes);
  badTrailer[badTrailer.length - 1]! ^= 0xff;
  fs.writeFileSync(path.join(dir, 'trailer.db'), badTrailer);
  r = await both(path.join(dir, 'trailer.db'));
  assert.equal(r.concord, r.etcdctl);
  const skipped = path.join(dir, 'skipped');
  const ok = await runSnapshotCli(['restore', path.join(dir, 'trailer.db'), '--data-dir', skipped, '--skip-hash-check']);
  assert.equal(ok.code, 0, ok.stderr);
  const m = await startConcord({ dataDir: skipped });
  t.after(() => m.stop());
  assert.deepEqual(await historyDiff(c.endpoint, m.endpoint, 1, 21), []);

  // No trailer at all.
  fs.writeFileSync(path.join(dir, 'nohash.db'), bytes.subarray(0, bytes.length - 32));
  r = await both(path.join(dir, 'nohash.db'));
  assert.equal(r.concord, 'Error: snapshot missing hash but --skip-hash-check=false');
  assert.equal(r.concord, r.etcdctl);

  // A backup saved by etcdctl from concord restores the same way.
  const byEtcdctl = path.join(dir, 'etcdctl.db');
  assert.equal((await runEtcdctl([c.endpoint], ['snapshot', 'save', byEtcdctl])).code, 0);
  const fromEtcdctl = path.join(dir, 'from-etcdctl');
  assert.equal((await runSnapshotCli(['restore', byEtcdctl, '--data-dir', fromEtcdctl])).code, 0);
  const m2 = await startConcord({ dataDir: fromEtcdctl });
  t.after(() => m2.stop());
  assert.deepEqual(await historyDiff(c.endpoint, m2.endpoint, 1, 21), []);

  // etcd's own backup (bbolt) is not concord's: status and restore say so, after the hash check.
  const e = await startEtcd();
  t.after(() => e.stop());
  const ekv = connect('etcdserverpb.KV', e.endpoint);
  await unary(ekv, 'Put', { key: Buffer.from('a'), value: Buffer.from('b') });
  ekv.close();
  const bolt = path.join(dir, 'bolt.db');
  assert.equal((await runEtcdctl([e.endpoint], ['snapshot', 'save', bolt])).code, 0);
  const boltStatus = await runSnapshotCli(['status', bolt]);
  assert.equal(boltStatus.code, 1);
  assert.match(boltStatus.stderr, /^Error: snapshot file is not a concord backup: bolt\.db: not an LMDB data file: /);
  const boltRestore = await runSnapshotCli(['restore', bolt, '--data-dir', path.join(dir, 'from-bolt')]);
  assert.equal(boltRestore.code, 1);
  assert.match(boltRestore.stderr, /^Error: snapshot file is not a concord backup: /m);
  assert.ok(!fs.existsSync(path.join(dir, 'from-bolt')) && !fs.existsSync(path.join(dir, 'from-bolt.restoring')));

  // An existing data dir (even empty) is refused and left alone.
  const existing = path.join(dir, 'existing');
  fs.mkdirSync(existing);
  fs.writeFileSync(path.join(existing, 'mine'), 'x');
  const mine = await runSnapshotCli(['restore', good, '--data-dir', existing]);
  const theirs = await runEtcdctl([], ['snapshot', 'restore', good, '--data-dir', existing]);
  assert.equal(mine.code, 1);
  assert.equal(mine.stderr, `Error: data-dir "${existing}" exists\n`);
  assert.equal(mine.stderr, theirs.stderr);
  assert.deepEqual(fs.readdirSync(existing), ['mine']);
});

test('progress: a bar on a terminal, otherwise at most a line per second or per tenth', () => {
  // Sizes as etcdctl prints them (go-humanize Bytes), e.g. its "25 kB" for a 24576-byte file.
  assert.deepEqual([5, 999, 1000, 24576, 2_100_000, 3 * 1024 ** 3].map(humanBytes), ['5 B', '999 B', '1.0 kB', '25 kB', '2.1 MB', '3.2 GB']);
  let now = 0;
  const out: string[] = [];
  const p = new Progress({ label: 'saving', total: 1000, tty: false, write: (s) => out.push(s), now: () => now });
  for (let i = 0; i < 100; i++) {
    now += 5; // 100 chunks of 10 bytes in 0.5 s: one line per tenth, no more
    p.add(10);
  }
  p.finish();
  assert.equal(out.length, 10, out.join(''));
  assert.ok(out.every((l) => l.endsWith('\n')));
  assert.match(out[9]!, /^saving: 1\.0 kB of 1\.0 kB \(100%\), 2\.0 kB\/s, 0s left\n$/);
  out.length = 0;
  const slow = new Progress({ label: 'restoring', total: 1e9, tty: false, write: (s) => out.push(s), now: () => now });
  for (let i = 0; i < 50; i++) {
    now += 100; // 5 s of small chunks: a line per second
    slow.add(1000);
  }
  assert.equal(out.length, 5);
  out.length = 0;
  const bar = new Progress({ label: 'saving', total: 1000, tty: true, write: (s) => out.push(s), now: () => now });
  now += 1000;
  bar.add(500);
  bar.finish();
  assert.match(out[0]!, /^\rsaving \[#{15} {15}\]  50% 500 B \/ 1\.0 kB 500 B\/s 1s left\x1b\[K$/);
  assert.equal(out[out.length - 1], '\n');
});

test('save checks the stream: a wrong SHA-256 trailer, a body not in 512-byte blocks or no trailer is refused, no file left', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-save-check-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // A stand-in member whose Maintenance.Snapshot streams what the case says (etcd's shape).
  let blobs: Buffer[] = [];
  const server = new grpc.Server();
  server.addService(serviceDefinition('etcdserverpb.Maintenance'), {
    Snapshot(call: grpc.ServerWritableStream<unknown, Uint8Array>) {
      let left = blobs.reduce((n, b) => n + b.length, 0);
      for (const b of blobs) {
        left -= b.length;
        call.write(etcdserverpb.SnapshotResponse.encode({ blob: b, remaining_bytes: left }).finish());
      }
      call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
    (err, p) => (err ? reject(err) : resolve(p))));
  t.after(() => new Promise<void>((r) => server.tryShutdown(() => r())));
  const body = Buffer.alloc(2048, 7);
  const sha = (b: Buffer): Buffer => createHash('sha256').update(b).digest();
  const cases: { name: string; blobs: Buffer[]; error: RegExp | null }[] = [
    { name: 'whole', blobs: [body.subarray(0, 1024), body.subarray(1024), sha(body)], error: null },
    { name: 'wrong trailer', blobs: [body, sha(Buffer.alloc(2048, 8))], error: /^Error: sha256 checksum of the received snapshot does not match its trailer\n$/ },
    { name: 'not in blocks', blobs: [body.subarray(0, 2000), sha(body.subarray(0, 2000))], error: /^Error: snapshot body is 2000 bytes, not a multiple of 512\n$/ },
    { name: 'no trailer', blobs: [body.subarray(0, 1024), body.subarray(1024)], error: /^Error: snapshot stream ended without its sha256 trailer\n$/ },
  ];
  for (const c of cases) {
    blobs = c.blobs;
    const file = path.join(dir, `${c.name}.db`);
    const r = await runSnapshotCli(['save', file, `--endpoints=http://127.0.0.1:${port}`]);
    if (c.error === null) {
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(fs.readFileSync(file), Buffer.concat(c.blobs), c.name);
    } else {
      assert.equal(r.code, 5, `${c.name}: etcdctl's ExitInterrupted`);
      assert.match(r.stderr.split('\n').filter((l) => l.startsWith('Error:')).join('\n') + '\n', c.error, c.name);
      assert.ok(!fs.existsSync(file) && !fs.existsSync(file + '.part'), `${c.name}: no file left`);
    }
  }
});

test('command line: etcdctl 3.4\'s error messages and exit codes', { skip: etcdctlSkipReason() }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-snapshot-args-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const missing = path.join(dir, 'missing.db');
  const cases: string[][] = [
    ['save'],
    ['status'],
    ['restore'],
    ['status', missing],
    ['status', missing, '-w', 'xyz'],
    ['status', missing, '-w', 'protobuf'],
    ['save', path.join(dir, 'x.db'), '--endpoints=http://127.0.0.1:1,http://127.0.0.1:2'],
    ['restore', missing, '--data-dir', path.join(dir, 'r')],
  ];
  for (const args of cases) {
    const mine = await runSnapshotCli(args);
    // etcdctl takes global flags anywhere; no --endpoints of its own here beyond the case's.
    const theirs = await runEtcdctl([], ['snapshot', ...args]);
    const errorLine = (s: string): string => s.split('\n').filter((l) => l.startsWith('Error:')).join('\n');
    assert.equal(errorLine(mine.stderr), errorLine(theirs.stderr), args.join(' '));
    assert.equal(mine.code, theirs.code, `exit code of ${args.join(' ')}`);
  }
});

test('save with auth on: --user as etcdctl (root gets the backup; no user or a wrong password: etcdctl\'s errors); restore keeps auth', { skip: etcdctlSkipReason() }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-save-auth-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = await startConcord();
  t.after(() => c.stop());
  for (const args of [['user', 'add', 'root:secret'], ['auth', 'enable']]) {
    const r = await runEtcdctl([c.endpoint], args);
    assert.equal(r.code, 0, r.stderr);
  }
  const errorLine = (s: string): string => s.split('\n').filter((l) => l.startsWith('Error:')).join('\n');
  for (const user of [[], ['--user=root:wrong'], ['--user=root:secret']]) {
    const mine = await runSnapshotCli(['save', path.join(dir, 'mine.db'), `--endpoints=${c.endpoint}`, ...user]);
    const theirs = await runEtcdctl([c.endpoint], ['snapshot', 'save', path.join(dir, 'theirs.db'), ...user]);
    assert.equal(errorLine(mine.stderr), errorLine(theirs.stderr), user.join(' '));
    assert.equal(mine.code, theirs.code, `exit code with ${user.join(' ') || 'no user'}`);
    assert.equal(mine.stdout, theirs.stdout.replace('theirs.db', 'mine.db'));
  }
  assert.ok(fs.existsSync(path.join(dir, 'mine.db')));

  // The restored member keeps the auth state: auth on, root with its password.
  const restoredDir = path.join(dir, 'restored');
  assert.equal((await runSnapshotCli(['restore', path.join(dir, 'mine.db'), '--data-dir', restoredDir])).code, 0);
  const m = await startConcord({ dataDir: restoredDir });
  t.after(() => m.stop());
  const anonymous = await runEtcdctl([m.endpoint], ['put', 'k', 'v']);
  assert.notEqual(anonymous.code, 0, 'auth is still on');
  const [onOriginal, onRestored] = await Promise.all([c, m].map((s) => runEtcdctl([s.endpoint], ['put', 'k', 'v'])));
  assert.equal(errorLine(onRestored.stderr), errorLine(onOriginal.stderr));
  const root = await runEtcdctl([m.endpoint], ['--user=root:secret', 'put', 'k', 'v']);
  assert.equal(root.code, 0, root.stderr);
});
