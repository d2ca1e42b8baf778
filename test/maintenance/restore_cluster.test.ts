// Disaster recovery of a cluster (issue #13 item 5): a backup saved with `concord snapshot save`
// from a 3-member concord cluster while a write load runs is restored into a NEW 3-member
// cluster (one `concord snapshot restore` per member, new names, URLs and token), as the README's
// "Disaster recovery" section does. All three start on their restored data dirs, elect a
// leader, serve every key at every revision the backup holds as the old cluster does (from its
// compaction revision on), agree on HashKV at the backup's revision with each other and with the
// old cluster, list the new members (ids derived from the restore's flags), take new writes,
// and take a fourth member (sent a raft snapshot by the restored leader).
// (The checks themselves are shown to catch a lost revision in snapshot_restore.test.ts.)
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { clusterIdOf, memberIdOf } from '../../src/membership/ids';
import { startCluster } from '../helpers/cluster';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { freePort } from '../helpers/etcd';
import { connect, num, unary } from '../helpers/grpc_client';
import { hashKvAt, historyDiff, leasesOf, runSnapshotCli } from '../helpers/snapshot';

test('restore into a new 3-member cluster from a backup of a 3-member cluster taken under writes', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-restore-cluster-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const old = await startCluster({ size: 3 });
  t.after(() => old.stop());
  const endpoints = old.endpoints();

  // History before the load: versions, a delete, a lease with keys, a compaction.
  const kv = connect('etcdserverpb.KV', endpoints[0]!);
  const lease = connect('etcdserverpb.Lease', endpoints[0]!);
  t.after(() => { kv.close(); lease.close(); });
  for (let i = 0; i < 60; i++) await unary(kv, 'Put', { key: Buffer.from(`pre${i % 15}`), value: Buffer.from(`v${i}`) });
  await unary(kv, 'DeleteRange', { key: Buffer.from('pre3') });
  await unary(lease, 'LeaseGrant', { ID: 7, TTL: 900 });
  await unary(kv, 'Put', { key: Buffer.from('leased'), value: Buffer.from('x'), lease: 7 });
  const compactRev = 40;
  await unary(kv, 'Compact', { revision: compactRev });

  // A write load on every member while the backup is taken from member 1.
  let writing = true;
  const writers = endpoints.map(async (ep, w) => {
    const c = connect('etcdserverpb.KV', ep);
    try {
      for (let i = 0; writing; i++) await unary(c, 'Put', { key: Buffer.from(`load${w}-${i % 20}`), value: Buffer.alloc(200, i) });
    } finally {
      c.close();
    }
  });
  await new Promise((r) => setTimeout(r, 300));
  const file = path.join(dir, 'backup.db');
  const saved = await runSnapshotCli(['save', file, `--endpoints=${endpoints[1]}`]);
  await new Promise((r) => setTimeout(r, 200));
  writing = false;
  await Promise.all(writers);
  assert.equal(saved.code, 0, saved.stderr);
  const status = await runSnapshotCli(['status', file, '-w', 'json']);
  const snapRev = (JSON.parse(status.stdout) as { revision: number }).revision;
  const lastRev = num((await unary(kv, 'Range', { key: Buffer.from('x') })).header!.revision);
  assert.ok(snapRev > 62 && snapRev < lastRev, `the backup is taken inside the load: ${snapRev} < ${lastRev}`);

  // Restore: one command per member of the new cluster.
  const token = 'recovered';
  const members = await Promise.all([0, 1, 2].map(async (i) => {
    const peerUrl = `http://127.0.0.1:${await freePort()}`;
    return { name: `n${i}`, peerUrl, clientPort: await freePort(), dataDir: path.join(dir, `n${i}`) };
  }));
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  const runs = await Promise.all(members.map((m) => runSnapshotCli(['restore', file, '--name', m.name,
    '--initial-cluster', initialCluster, '--initial-cluster-token', token,
    '--initial-advertise-peer-urls', m.peerUrl, '--data-dir', m.dataDir])));
  for (const r of runs) assert.equal(r.code, 0, r.stderr);

  const procs: ConcordHandle[] = [];
  t.after(() => Promise.all(procs.map((p) => p.stop())));
  const started = await Promise.allSettled(members.map((m) => startConcord({
    dataDir: m.dataDir, name: m.name, fixedPort: m.clientPort, keepDataDir: true, readyTimeoutMs: 30_000,
    extraArgs: ['--listen-peer-urls', m.peerUrl, '--initial-advertise-peer-urls', m.peerUrl,
      '--initial-cluster', initialCluster, '--initial-cluster-token', token],
  })));
  for (const s of started) if (s.status === 'fulfilled') procs.push(s.value);
  for (const s of started) if (s.status === 'rejected') throw s.reason;

  // A leader.
  const deadline = Date.now() + 15_000;
  let leader = '0';
  while (leader === '0') {
    const m = connect('etcdserverpb.Maintenance', procs[0]!.endpoint);
    try {
      leader = String((await unary(m, 'Status', {}, { timeoutMs: 1000 })).leader);
    } catch { /* not yet */ } finally {
      m.close();
    }
    if (leader === '0') {
      assert.ok(Date.now() < deadline, 'no leader elected');
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  // Every revision of the backup, on every new member, as the old cluster answers.
  const oldHash = await hashKvAt(endpoints[0]!, snapRev);
  for (const p of procs) {
    assert.deepEqual(await historyDiff(endpoints[0]!, p.endpoint, 1, snapRev), [], p.endpoint);
    assert.deepEqual(await hashKvAt(p.endpoint, snapRev), oldHash, `HashKV at ${snapRev} on ${p.endpoint}`);
    assert.match(await leasesOf(p.endpoint), /^7 granted=900 keys=leased$/);
  }
  assert.equal(oldHash.compactRevision, compactRev);

  // The new members, as a bootstrap with the restore's flags names them.
  const ids = members.map((m) => memberIdOf([m.peerUrl], token));
  const expected = members.map((m, i) => ({ id: ids[i]!.toString(16), name: m.name, peer: m.peerUrl }))
    .sort((a, b) => (BigInt('0x' + a.id) < BigInt('0x' + b.id) ? -1 : 1));
  for (const p of procs) {
    const c = connect('etcdserverpb.Cluster', p.endpoint);
    try {
      const r = await unary(c, 'MemberList', {});
      assert.deepEqual(r.members.map((m) => ({ id: BigInt(String(m.ID)).toString(16), name: m.name, peer: m.peerURLs![0] })), expected);
      assert.equal(BigInt(String(r.header!.cluster_id)).toString(16), clusterIdOf(ids).toString(16));
    } finally {
      c.close();
    }
  }

  // New writes, read back through another member.
  const k0 = connect('etcdserverpb.KV', procs[0]!.endpoint);
  const k2 = connect('etcdserverpb.KV', procs[2]!.endpoint);
  try {
    const put = await unary(k0, 'Put', { key: Buffer.from('after-restore'), value: Buffer.from('yes') }, { timeoutMs: 15_000 });
    assert.equal(num(put.header!.revision), snapRev + 1);
    const got = await unary(k2, 'Range', { key: Buffer.from('after-restore') });
    assert.equal(Buffer.from(got.kvs[0]!.value!).toString(), 'yes');
  } finally {
    k0.close();
    k2.close();
  }
  // The restored cluster grows: a fourth member joins (its log starts at the restore's index,
  // so the leader sends it a raft snapshot) and serves the same history.
  const joinPeer = `http://127.0.0.1:${await freePort()}`;
  const cl = connect('etcdserverpb.Cluster', procs[0]!.endpoint);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await unary(cl, 'MemberAdd', { peerURLs: [joinPeer] });
        break;
      } catch (err) {
        // etcd refuses an add until every voter has been connected for 5 s.
        if ((err as { details?: string }).details !== 'etcdserver: unhealthy cluster' || attempt >= 100) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    cl.close();
  }
  const joinedDir = path.join(dir, 'n3');
  const joined = await startConcord({
    dataDir: joinedDir, name: 'n3', keepDataDir: true, readyTimeoutMs: 30_000,
    extraArgs: ['--listen-peer-urls', joinPeer, '--initial-advertise-peer-urls', joinPeer,
      '--initial-cluster', `${initialCluster},n3=${joinPeer}`, '--initial-cluster-state', 'existing'],
  });
  procs.push(joined);
  assert.deepEqual(await historyDiff(endpoints[0]!, joined.endpoint, 1, snapRev), []);
  const hashes = await Promise.all(procs.map((p) => hashKvAt(p.endpoint, snapRev + 1)));
  assert.ok(hashes.every((h) => h.hash === hashes[0]!.hash), 'the new cluster agrees after new writes, the joined member too');
});
