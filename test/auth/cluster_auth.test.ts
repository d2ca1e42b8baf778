// Auth on a 3-member cluster: the auth store is replicated state (changed through the log, the
// same on every member, kept across kill -9), and a simple token issued by one member works on
// every member (its `authenticate` entry is applied everywhere).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';

import { startCluster } from '../helpers/cluster';
import { connect, detailsOf, unary } from '../helpers/grpc_client';

const b = (s: string): Buffer => Buffer.from(s);

function withToken(token: string): { metadata: grpc.Metadata } {
  const md = new grpc.Metadata();
  md.set('token', token);
  return { metadata: md };
}

const outcome = detailsOf;

test('auth on 3 members: one store everywhere, tokens from any member, kept across kill -9', { timeout: 120_000 }, async (t) => {
  const cl = await startCluster({ size: 3, extraArgs: ['--bcrypt-cost', '4'] });
  t.after(() => cl.stop());
  await cl.leader();
  const eps = cl.endpoints();
  const auth0 = connect('etcdserverpb.Auth', eps[0]!);
  t.after(() => auth0.close());
  await unary(auth0, 'UserAdd', { name: 'root', password: 'rootpw' });
  await unary(auth0, 'UserGrantRole', { user: 'root', role: 'root' });
  await unary(auth0, 'RoleAdd', { name: 'app' });
  await unary(auth0, 'RoleGrantPermission', { name: 'app', perm: { permType: 2, key: b('app/'), range_end: b('app0') } });
  await unary(auth0, 'UserAdd', { name: 'alice', password: 'alicepw' });
  await unary(auth0, 'UserGrantRole', { user: 'alice', role: 'app' });
  await unary(auth0, 'AuthEnable', {});

  // A token from member 1 works on every member; permissions hold on every member.
  const auth1 = connect('etcdserverpb.Auth', eps[1]!);
  t.after(() => auth1.close());
  const alice = (await unary(auth1, 'Authenticate', { name: 'alice', password: 'alicepw' })).token!;
  for (const [i, ep] of eps.entries()) {
    const kv = connect('etcdserverpb.KV', ep);
    try {
      let put = '';
      // The authenticate entry may not be applied on a follower yet: retry briefly.
      for (let tries = 0; tries < 50; tries++) {
        put = await outcome(unary(kv, 'Put', { key: b(`app/${i}`), value: b('v') }, withToken(alice)));
        if (put !== 'etcdserver: invalid auth token') break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(put, 'ok', `member ${i}: put with a token from member 1`);
      assert.equal(await outcome(unary(kv, 'Put', { key: b('other'), value: b('v') }, withToken(alice))), 'etcdserver: permission denied', `member ${i}`);
      assert.equal(await outcome(unary(kv, 'Range', { key: b('app/0') })), 'etcdserver: user name is empty', `member ${i}: no token`);
    } finally {
      kv.close();
    }
  }
  // The same store on every member: Hash covers it (and the key space); with nothing in flight
  // the three agree.
  const rootToken = (await unary(auth0, 'Authenticate', { name: 'root', password: 'rootpw' })).token!;
  let agreed = false;
  let last = '';
  for (let tries = 0; tries < 100 && !agreed; tries++) {
    const hs = await Promise.all(eps.map(async (ep) => {
      const m = connect('etcdserverpb.Maintenance', ep);
      try {
        const r = await unary(m, 'Hash', {}, withToken(rootToken));
        return `${r.hash}@${String(r.header!.revision)}`;
      } catch (err) {
        return (err as grpc.ServiceError).details;
      } finally {
        m.close();
      }
    }));
    last = hs.join(' ');
    agreed = hs.every((h) => h === hs[0]) && /@/.test(hs[0]!);
    if (!agreed) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(agreed, `Hash on the three members: ${last}`);

  // kill -9 member 2: it comes back with the auth store (its tokens are per member: log in again).
  await cl.kill(2);
  await cl.restart(2);
  const auth2 = connect('etcdserverpb.Auth', eps[2]!);
  const kv2 = connect('etcdserverpb.KV', eps[2]!);
  t.after(() => { auth2.close(); kv2.close(); });
  assert.equal(await outcome(unary(kv2, 'Put', { key: b('app/x'), value: b('v') })), 'etcdserver: user name is empty', 'auth still enabled after kill -9');
  const again = (await unary(auth2, 'Authenticate', { name: 'alice', password: 'alicepw' })).token!;
  let put = '';
  for (let tries = 0; tries < 50; tries++) {
    put = await outcome(unary(kv2, 'Put', { key: b('app/x'), value: b('v') }, withToken(again)));
    if (put !== 'etcdserver: invalid auth token') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(put, 'ok');
  assert.equal(await outcome(unary(kv2, 'Put', { key: b('other'), value: b('v') }, withToken(again))), 'etcdserver: permission denied');
});
