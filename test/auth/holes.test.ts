// The holes etcd 3.4 shipped, closed in concord (issue #14): a nested txn, a txn put's prev_kv
// and lease, a from-key watch, and checks dropped while a NOSPACE alarm is raised. etcd 3.4
// lets each of these through, so there is nothing to compare with: each step asserts the
// refusal concord gives (the one etcd 3.5/3.6 give where they fixed it), and, as a control, that
// the same request within the user's permission succeeds (so a refusal is about permission).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';

import { startConcord } from '../helpers/concord';
import { connect, detailsOf, openStream, unary } from '../helpers/grpc_client';

const b = (s: string): Buffer => Buffer.from(s);
/** A password that must never be found in clear in the data dir (GHSA-528j-9r78-wffx). */
const secret = 'pw-Zq9-never-in-clear';

const outcome = detailsOf;

test('nested txns, a txn put\'s prev_kv and lease, from-key watches, and NOSPACE: every check holds', { timeout: 90_000 }, async (t) => {
  const c = await startConcord({ extraArgs: ['--bcrypt-cost', '4', '--quota-backend-bytes', String(2 * 1024 * 1024), '--auth-password-min-length', '8'] });
  t.after(() => c.stop());
  const kv = connect('etcdserverpb.KV', c.endpoint);
  const auth = connect('etcdserverpb.Auth', c.endpoint);
  const lease = connect('etcdserverpb.Lease', c.endpoint);
  const maint = connect('etcdserverpb.Maintenance', c.endpoint);
  const watch = connect('etcdserverpb.Watch', c.endpoint);
  t.after(() => { for (const x of [kv, auth, lease, maint, watch]) x.close(); });
  await unary(auth, 'UserAdd', { name: 'root', password: 'rootpw-long' });
  await unary(auth, 'UserGrantRole', { user: 'root', role: 'root' });
  await unary(auth, 'RoleAdd', { name: 'w' });
  // READWRITE on [a, b), WRITE only on [w, x).
  await unary(auth, 'RoleGrantPermission', { name: 'w', perm: { permType: 2, key: b('a'), range_end: b('b') } });
  await unary(auth, 'RoleGrantPermission', { name: 'w', perm: { permType: 1, key: b('w'), range_end: b('x') } });
  // Beyond etcd: a minimum password length, names without control characters.
  assert.equal(await outcome(unary(auth, 'UserAdd', { name: 'short', password: 'abc' })), 'etcdserver: password is too short (see --auth-password-min-length)');
  assert.equal(await outcome(unary(auth, 'UserAdd', { name: 'bad\nname', password: 'long-enough' })), 'etcdserver: user or role name is invalid (control characters, or longer than 256 bytes)');
  assert.equal(await outcome(unary(auth, 'RoleAdd', { name: 'x'.repeat(300) })), 'etcdserver: user or role name is invalid (control characters, or longer than 256 bytes)');
  await unary(auth, 'UserAdd', { name: 'u', password: secret });
  await unary(auth, 'UserGrantRole', { user: 'u', role: 'w' });
  // A lease with a key outside u's permission.
  const g = await unary(lease, 'LeaseGrant', { TTL: 600 });
  const leased = Long.fromValue(g.ID!);
  await unary(kv, 'Put', { key: b('z'), value: b('root'), lease: leased });
  await unary(kv, 'Put', { key: b('w1'), value: b('x') });
  await unary(auth, 'AuthEnable', {});
  // Failed logins slow down the next attempt for the name: 100 ms, then 200 ms.
  assert.match(await outcome(unary(auth, 'Authenticate', { name: 'u', password: 'wrong-one' })), /authentication failed/);
  assert.match(await outcome(unary(auth, 'Authenticate', { name: 'u', password: 'wrong-two' })), /authentication failed/);
  const t0 = Date.now();
  const token = (await unary(auth, 'Authenticate', { name: 'u', password: secret })).token!;
  assert.ok(Date.now() - t0 >= 150, `the third attempt waited ${Date.now() - t0} ms`);
  const md = new grpc.Metadata();
  md.set('token', token);
  const as = { metadata: md };
  const denied = 'etcdserver: permission denied';

  // Nested txn: the inner put is outside the permission (etcd 3.4 checked only the top level).
  const nested = (key: string): unknown => ({ success: [{ request_txn: { success: [{ request_put: { key: b(key), value: b('n') } }] } }] });
  assert.equal(await outcome(unary(kv, 'Txn', nested('z') as never, as)), denied, 'nested txn put outside');
  assert.equal(await outcome(unary(kv, 'Txn', nested('a1') as never, as)), 'ok', 'control: nested txn put inside');
  // The failure branch is checked too, even when the success branch would run.
  const failureBranch = { success: [{ request_put: { key: b('a1'), value: b('s') } }], failure: [{ request_delete_range: { key: b('z') } }] };
  assert.equal(await outcome(unary(kv, 'Txn', failureBranch as never, as)), denied, 'a delete outside in the failure branch');
  // A txn put's prev_kv needs READ: write-only on w1.
  const prevKv = (k: string): unknown => ({ success: [{ request_put: { key: b(k), value: b('p'), prev_kv: true } }] });
  assert.equal(await outcome(unary(kv, 'Txn', prevKv('w1') as never, as)), denied, 'txn put prev_kv on a write-only key');
  assert.equal(await outcome(unary(kv, 'Txn', prevKv('a2') as never, as)), 'ok', 'control: prev_kv on a readwrite key');
  assert.equal(await outcome(unary(kv, 'Put', { key: b('w1'), value: b('p'), prev_kv: true }, as)), denied, 'put prev_kv on a write-only key');
  assert.equal(await outcome(unary(kv, 'Put', { key: b('w1'), value: b('p') }, as)), 'ok', 'control: put without prev_kv');
  // A txn put attaching a key to a lease whose keys u may not write.
  const onLease = { success: [{ request_put: { key: b('a3'), value: b('l'), lease: leased } }] };
  assert.equal(await outcome(unary(kv, 'Txn', onLease as never, as)), denied, 'txn put onto a lease holding keys outside');
  // A from-key watch starting inside the permission but running past it.
  const { call, reader } = openStream(watch, 'Watch', md);
  call.write({ create_request: { key: b('a'), range_end: Buffer.from([0]) } });
  const w1 = await reader.next();
  assert.equal(w1.canceled, true, 'from-key watch past the permission');
  assert.equal(w1.cancel_reason, denied);
  call.write({ create_request: { key: b('a'), range_end: b('b') } });
  const w2 = await reader.next();
  assert.equal(w2.created, true);
  assert.notEqual(w2.canceled, true, 'control: a watch within [a, b)');
  call.end();
  // A grant without a permission: etcd 3.4 applies it and crashes (and cannot restart); 3.5
  // refuses it before the log, as concord does.
  const rootToken = (await unary(auth, 'Authenticate', { name: 'root', password: 'rootpw-long' })).token!;
  const rootMd = new grpc.Metadata();
  rootMd.set('token', rootToken);
  assert.equal(await outcome(unary(auth, 'RoleGrantPermission', { name: 'w' }, { metadata: rootMd })), 'etcdserver: permission not given');
  assert.equal(await outcome(unary(kv, 'Range', { key: b('a1') }, as)), 'ok', 'the member is fine after it');
  // NOSPACE raised: the checks stay (etcd 3.4's capped applier skipped auth).
  for (let i = 0; i < 200; i++) {
    const r = await outcome(unary(kv, 'Put', { key: b(`a-big-${i}`), value: Buffer.alloc(32 * 1024, 1) }, as));
    if (r !== 'ok') {
      assert.match(r, /database space exceeded/);
      break;
    }
  }
  let raised = false;
  let refused = '';
  for (let i = 0; i < 100 && !raised; i++) {
    raised = ((await unary(maint, 'Alarm', { action: 0, alarm: 0 }, as)).alarms ?? []).length > 0;
    if (!raised) await new Promise((r) => setTimeout(r, 50));
  }
  refused = await outcome(unary(kv, 'Put', { key: b('a-after'), value: b('1') }, as));
  assert.ok(raised, 'NOSPACE is raised (it goes through the log)');
  assert.match(refused, /database space exceeded/, 'puts are refused under NOSPACE');
  assert.equal(await outcome(unary(kv, 'Range', { key: b('z') }, as)), denied, 'a read outside, under NOSPACE');
  assert.equal(await outcome(unary(kv, 'DeleteRange', { key: b('z') }, as)), denied, 'a delete outside, under NOSPACE');
  assert.equal(await outcome(unary(kv, 'Compact', { revision: 2 }, as)), denied, 'compaction by a non-root user, under NOSPACE');
  assert.equal(await outcome(unary(kv, 'DeleteRange', { key: b('a-big-0') }, as)), 'ok', 'control: a delete inside, under NOSPACE');
  // The password is nowhere in clear: not in the WAL, not in LMDB (only its bcrypt hash is).
  const fs = await import('node:fs');
  const path = await import('node:path');
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const f = path.join(d, e.name);
      if (e.isDirectory()) walk(f);
      else files.push(f);
    }
  };
  walk(c.dataDir);
  assert.ok(files.some((f) => f.includes('wal')) && files.some((f) => f.endsWith('data.mdb')));
  for (const f of files) assert.equal(fs.readFileSync(f).includes(Buffer.from(secret)), false, `${f} holds the password in clear`);
  // Every directory of the data dir is 0700 (CVE-2020-15113).
  for (const d of [c.dataDir, ...['member', 'member/wal', 'member/snap', 'member/kv'].map((x) => path.join(c.dataDir, x))]) {
    assert.equal(fs.statSync(d).mode & 0o777, 0o700, `${d} mode`);
  }
});
