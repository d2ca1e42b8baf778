// The life of a simple token, against etcd 3.4 and concord side by side: it works on every call
// until it expires (--auth-token-ttl, renewed on use), until its user's password changes or the
// user is deleted (invalid auth token); "revision of auth store is old" comes only when an auth
// change races a write (a simple token stands for the store's revision of the moment it is
// used, as etcd's). And the `etcd3` npm client, over TLS with auth, against concord.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';

import { startConcord } from '../helpers/concord';
import { etcdSkipReason, startEtcd } from '../helpers/etcd';
import { connect, unary } from '../helpers/grpc_client';
import { makePki } from '../helpers/tls_certs';

type Outcome = string;

async function outcome(p: Promise<unknown>): Promise<Outcome> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return `${(err as grpc.ServiceError).code} ${(err as grpc.ServiceError).details}`;
  }
}

/** The same story on one server; returns what each step answered. */
async function story(endpoint: string): Promise<Record<string, Outcome>> {
  const kv = connect('etcdserverpb.KV', endpoint);
  const auth = connect('etcdserverpb.Auth', endpoint);
  const out: Record<string, Outcome> = {};
  const md = (token: string): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set('token', token);
    return m;
  };
  try {
    await unary(auth, 'UserAdd', { name: 'root', password: 'rootpw' });
    await unary(auth, 'UserGrantRole', { user: 'root', role: 'root' });
    await unary(auth, 'RoleAdd', { name: 'app' });
    await unary(auth, 'RoleGrantPermission', { name: 'app', perm: { permType: 2, key: Buffer.from('k'), range_end: Buffer.from('l') } });
    await unary(auth, 'UserAdd', { name: 'alice', password: 'alicepw' });
    await unary(auth, 'UserGrantRole', { user: 'alice', role: 'app' });
    await unary(auth, 'AuthEnable', {});
    const root = (await unary(auth, 'Authenticate', { name: 'root', password: 'rootpw' })).token!;
    let alice = (await unary(auth, 'Authenticate', { name: 'alice', password: 'alicepw' })).token!;
    out.put = await outcome(unary(kv, 'Put', { key: Buffer.from('k1'), value: Buffer.from('v') }, { metadata: md(alice) }));
    // An auth change after the token was issued: the token is old for writes and reads.
    await unary(auth, 'RoleAdd', { name: 'other' }, { metadata: md(root) });
    out.putOld = await outcome(unary(kv, 'Put', { key: Buffer.from('k1'), value: Buffer.from('v') }, { metadata: md(alice) }));
    out.getOld = await outcome(unary(kv, 'Range', { key: Buffer.from('k1') }, { metadata: md(alice) }));
    alice = (await unary(auth, 'Authenticate', { name: 'alice', password: 'alicepw' })).token!;
    out.putNew = await outcome(unary(kv, 'Put', { key: Buffer.from('k1'), value: Buffer.from('v2') }, { metadata: md(alice) }));
    // Kept alive by use past the TTL (1 s here), then let expire.
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 500));
      out[`get${i}`] = await outcome(unary(kv, 'Range', { key: Buffer.from('k1') }, { metadata: md(alice) }));
    }
    await new Promise((r) => setTimeout(r, 2500));
    out.expired = await outcome(unary(kv, 'Range', { key: Buffer.from('k1') }, { metadata: md(alice) }));
    // A password change ends the user's tokens; so does deleting the user.
    alice = (await unary(auth, 'Authenticate', { name: 'alice', password: 'alicepw' })).token!;
    const root2 = (await unary(auth, 'Authenticate', { name: 'root', password: 'rootpw' })).token!;
    await unary(auth, 'UserChangePassword', { name: 'alice', password: 'newpw' }, { metadata: md(root2) });
    out.afterPasswd = await outcome(unary(kv, 'Range', { key: Buffer.from('k1') }, { metadata: md(alice) }));
    out.oldPassword = await outcome(unary(auth, 'Authenticate', { name: 'alice', password: 'alicepw' }));
    alice = (await unary(auth, 'Authenticate', { name: 'alice', password: 'newpw' })).token!;
    const root3 = (await unary(auth, 'Authenticate', { name: 'root', password: 'rootpw' })).token!;
    await unary(auth, 'UserDelete', { name: 'alice' }, { metadata: md(root3) });
    out.afterDelete = await outcome(unary(kv, 'Range', { key: Buffer.from('k1') }, { metadata: md(alice) }));
  } finally {
    kv.close();
    auth.close();
  }
  return out;
}

test('simple tokens: expiry renewed by use, password change, user delete, old revision: as etcd 3.4', { skip: etcdSkipReason(), timeout: 120_000 }, async (t) => {
  const flags = ['--auth-token-ttl', '1', '--bcrypt-cost', '4'];
  const etcd = await startEtcd({ extraArgs: flags });
  t.after(() => etcd.stop());
  const c = await startConcord({ extraArgs: flags });
  t.after(() => c.stop());
  const [e, k] = await Promise.all([story(etcd.endpoint), story(c.endpoint)]);
  assert.deepEqual(k, e);
  // And the story says what it should (not only "the same"):
  assert.equal(e.put, 'ok');
  assert.equal(e.putOld, 'ok', 'a simple token stands for the store revision of the moment it is used (etcd tokenSimple.info)');
  assert.equal(e.get3, 'ok');
  assert.match(e.expired!, /invalid auth token/);
  assert.match(e.afterPasswd!, /invalid auth token/);
  assert.match(e.afterDelete!, /invalid auth token/);
});

test('the etcd3 npm client over TLS with auth against concord', { timeout: 120_000 }, async (t) => {
  const pki = makePki();
  t.after(() => pki.cleanup());
  const server = pki.issue('server', { cn: 'server' });
  const client = pki.issue('client', { cn: 'someone' });
  const c = await startConcord({ scheme: 'https', extraArgs: ['--cert-file', server.cert, '--key-file', server.key, '--trusted-ca-file', pki.ca.cert, '--client-cert-auth', '--bcrypt-cost', '4'] });
  t.after(() => c.stop());
  const fs = await import('node:fs');
  const credentials = {
    rootCertificate: fs.readFileSync(pki.ca.cert),
    certChain: fs.readFileSync(client.cert),
    privateKey: fs.readFileSync(client.key),
  };
  const host = c.endpoint.replace(/^https?:\/\//, '');
  const admin = new Etcd3({ hosts: `https://${host}`, credentials });
  t.after(() => admin.close());
  const root = await admin.user('root').create('rootpw');
  await root.addRole('root');
  const role = await admin.role('app').create();
  await role.grant({ permission: 'Readwrite', range: admin.range({ prefix: 'app/' }) });
  const alice = await admin.user('alice').create('alicepw');
  await alice.addRole('app');
  await admin.auth.authEnable();
  const asAlice = new Etcd3({ hosts: `https://${host}`, credentials, auth: { username: 'alice', password: 'alicepw' } });
  t.after(() => asAlice.close());
  await asAlice.put('app/x').value('1');
  assert.equal(await asAlice.get('app/x').string(), '1');
  await assert.rejects(async () => { await asAlice.put('other').value('1'); }, /permission denied/);
  const watcher = await asAlice.watch().key('app/x').create();
  const seen = new Promise<string>((resolve) => watcher.on('put', (kv) => resolve(kv.value.toString())));
  await asAlice.put('app/x').value('2');
  assert.equal(await seen, '2');
  await watcher.cancel();
  const asRoot = new Etcd3({ hosts: `https://${host}`, credentials, auth: { username: 'root', password: 'rootpw' } });
  t.after(() => asRoot.close());
  await asRoot.auth.authDisable();
});
