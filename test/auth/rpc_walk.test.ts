// The authorization walk: every method of every service concord serves, called with auth
// enabled by callers who must not get through: no token, a forged token, an expired token, and
// a user who holds no role. Goal: nothing succeeds that the permission table
// (auth/rpc_permissions.ts) does not allow, and every method of the protos has a row (a new RPC
// without one fails here). Method: one request per method naming keys the user may not touch;
// each outcome must be an auth refusal (etcd's messages), except where the table says Public or
// User (then the user-without-roles call succeeds, by design) and LeaseTimeToLive (answered, with
// the keys the caller may not read left out).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';

import { methodNames, serviceNames, services, type ServiceName } from '../../src/api/grpc/services';
import { Need, rpcRules } from '../../src/auth/rpc_permissions';
import { startConcord } from '../helpers/concord';
import http from 'node:http';
import { gatewayRoutes } from '../../src/api/http/gateway';
import { lookupService, messageToJson } from '../../src/api/http/jsonpb';
import { connect, num, unary } from '../helpers/grpc_client';

const authRefusal = /etcdserver: (user name is empty|invalid auth token|permission denied|revision of auth store is old)/;

/** One request per method, naming the key `k` (under which the caller holds nothing). */
function requestFor(path: string, lease: Long): unknown {
  const k = Buffer.from('k');
  const table: Record<string, unknown> = {
    '/etcdserverpb.KV/Range': { key: k },
    '/etcdserverpb.KV/Put': { key: k, value: k },
    '/etcdserverpb.KV/DeleteRange': { key: k },
    '/etcdserverpb.KV/Txn': { compare: [{ key: k, target: 0, result: 0, version: 0 }], success: [{ request_put: { key: k, value: k } }] },
    '/etcdserverpb.KV/Compact': { revision: 1 },
    '/etcdserverpb.Watch/Watch': { create_request: { key: k } },
    '/etcdserverpb.Lease/LeaseGrant': { TTL: 60 },
    '/etcdserverpb.Lease/LeaseRevoke': { ID: lease },
    '/etcdserverpb.Lease/LeaseKeepAlive': { ID: lease },
    '/etcdserverpb.Lease/LeaseTimeToLive': { ID: lease, keys: true },
    '/etcdserverpb.Cluster/MemberAdd': { peerURLs: ['http://127.0.0.1:1'] },
    '/etcdserverpb.Cluster/MemberRemove': { ID: 1 },
    '/etcdserverpb.Cluster/MemberUpdate': { ID: 1, peerURLs: ['http://127.0.0.1:1'] },
    '/etcdserverpb.Cluster/MemberPromote': { ID: 1 },
    '/etcdserverpb.Maintenance/Alarm': { action: 1, alarm: 1, memberID: 1 },
    '/etcdserverpb.Maintenance/MoveLeader': { targetID: 1 },
    '/etcdserverpb.Maintenance/HashKV': { revision: 0 },
    '/etcdserverpb.Auth/UserAdd': { name: 'x', password: 'p' },
    '/etcdserverpb.Auth/UserGet': { name: 'root' },
    '/etcdserverpb.Auth/UserDelete': { name: 'root' },
    '/etcdserverpb.Auth/UserChangePassword': { name: 'root', password: 'p' },
    '/etcdserverpb.Auth/UserGrantRole': { user: 'nobody', role: 'root' },
    '/etcdserverpb.Auth/UserRevokeRole': { name: 'root', role: 'root' },
    '/etcdserverpb.Auth/RoleAdd': { name: 'r' },
    '/etcdserverpb.Auth/RoleGet': { role: 'root' },
    '/etcdserverpb.Auth/RoleDelete': { role: 'root' },
    '/etcdserverpb.Auth/RoleGrantPermission': { name: 'r', perm: { key: k } },
    '/etcdserverpb.Auth/RoleRevokePermission': { role: 'r', key: k },
    '/etcdserverpb.Auth/Authenticate': { name: 'nobody', password: 'wrong' },
    '/v3lockpb.Lock/Lock': { name: k, lease },
    '/v3lockpb.Lock/Unlock': { key: Buffer.from('k/1') },
    '/v3electionpb.Election/Campaign': { name: k, lease, value: k },
    '/v3electionpb.Election/Proclaim': { leader: { name: k, key: Buffer.from('k/1'), rev: 1, lease }, value: k },
    '/v3electionpb.Election/Leader': { name: k },
    '/v3electionpb.Election/Observe': { name: k },
    '/v3electionpb.Election/Resign': { leader: { name: k, key: Buffer.from('k/1'), rev: 1, lease } },
  };
  return table[path] ?? {};
}

type Outcome = { ok: true; value: unknown } | { ok: false; details: string };

/** Calls any method once with `token` (or none): unary, server-stream (first message) or bidi (one request). */
function call(endpoint: string, service: ServiceName, method: string, request: unknown, token: string | null): Promise<Outcome> {
  const client = connect(service, endpoint) as unknown as grpc.Client & Record<string, Function>;
  const md = new grpc.Metadata();
  if (token !== null) md.set('token', token);
  const def = services[service][method]!;
  const deadline = Date.now() + 5000;
  return new Promise<Outcome>((resolve) => {
    const done = (o: Outcome): void => {
      resolve(o);
      setImmediate(() => client.close());
    };
    if (!def.requestStream && !def.responseStream) {
      client[method]!.call(client, request, md, { deadline }, (err: grpc.ServiceError | null, res: unknown) => {
        done(err ? { ok: false, details: err.details } : { ok: true, value: res });
      });
      return;
    }
    const s = def.requestStream ? client[method]!.call(client, md, { deadline }) : client[method]!.call(client, request, md, { deadline });
    s.on('data', (msg: { canceled?: boolean; cancel_reason?: string }) => {
      // A watch create refused is a response canceled with the reason.
      if (msg.canceled === true) done({ ok: false, details: msg.cancel_reason ?? '' });
      else done({ ok: true, value: msg });
      s.cancel();
    });
    s.on('error', (err: grpc.ServiceError) => done({ ok: false, details: err.details }));
    s.on('end', () => done({ ok: false, details: 'stream ended without an answer' }));
    if (def.requestStream) s.write(request);
  });
}

/** How the server issues tokens, and a token forged for it. */
interface TokenKind {
  /** Server flags (tokens that expire soon). */
  flags: string[];
  /** How long after issue a token is surely expired. */
  expiredAfterMs: number;
  /** A token the server must refuse, naming `user` at auth revision `revision`. */
  forged(user: string, revision: number): string;
}

const simpleTokens: TokenKind = { flags: ['--auth-token-ttl', '2'], expiredAfterMs: 2600, forged: () => 'forgedforgedforg.1' };

/** Walks every RPC with the callers that must not get through; returns what went wrong. */
async function walk(t: { after(fn: () => unknown): void; diagnostic(s: string): void }, env: Record<string, string>, kind: TokenKind = simpleTokens): Promise<string[]> {
  const c = await startConcord({ extraArgs: [...kind.flags, '--bcrypt-cost', '4'], env });
  t.after(() => c.stop());
  const kv = connect('etcdserverpb.KV', c.endpoint);
  const auth = connect('etcdserverpb.Auth', c.endpoint);
  const lease = connect('etcdserverpb.Lease', c.endpoint);
  t.after(() => { kv.close(); auth.close(); lease.close(); });
  // Set-up with auth disabled: root, a user with no role, a key on a lease.
  await unary(auth, 'UserAdd', { name: 'root', password: 'rootpw' });
  await unary(auth, 'UserGrantRole', { user: 'root', role: 'root' });
  await unary(auth, 'UserAdd', { name: 'nobody', password: 'nobodypw' });
  const g = await unary(lease, 'LeaseGrant', { TTL: 600 });
  const leaseId = Long.fromValue(g.ID!);
  await unary(kv, 'Put', { key: Buffer.from('k'), value: Buffer.from('v'), lease: leaseId });
  await unary(auth, 'AuthEnable', {});
  const expired = (await unary(auth, 'Authenticate', { name: 'nobody', password: 'nobodypw' })).token!;
  await new Promise((r) => setTimeout(r, kind.expiredAfterMs));
  const nobody = (await unary(auth, 'Authenticate', { name: 'nobody', password: 'nobodypw' })).token!;
  const status = await unary(auth, 'AuthStatus', {});
  const forged = kind.forged('root', num(status.authRevision));
  const callers: [string, string | null][] = [['no token', null], ['a forged token', forged], ['an expired token', expired], ['a user without roles', nobody]];

  // Every method of the protos has a row; every row is a served method.
  const protoRpcs = countProtoRpcs();
  const served = serviceNames.flatMap((s) => methodNames(s).map((m) => `/${s}/${m as string}`));
  assert.equal(served.length, protoRpcs, `methods served (${served.length}) and rpcs in proto/ (${protoRpcs})`);
  assert.deepEqual(served.filter((p) => rpcRules[p] === undefined), [], 'methods without a row in the permission table');
  assert.deepEqual(Object.keys(rpcRules).filter((p) => !served.includes(p)), [], 'rows for methods that do not exist');

  const wrong: string[] = [];
  let calls = 0;
  for (const service of serviceNames) {
    for (const method of methodNames(service) as string[]) {
      const p = `/${service}/${method}`;
      const rule = rpcRules[p]!;
      for (const [who, token] of callers) {
        const o = await call(c.endpoint, service, method, requestFor(p, leaseId), token);
        calls++;
        if (rule.need === Need.Public) continue; // anyone may (Authenticate with a wrong password fails anyway)
        const userMayPass = who === 'a user without roles' &&
          (rule.need === Need.User || p === '/etcdserverpb.Lease/LeaseTimeToLive');
        if (userMayPass) {
          if (p === '/etcdserverpb.Lease/LeaseTimeToLive' && o.ok) {
            const keys = (o.value as { keys?: Uint8Array[] }).keys ?? [];
            if (keys.length > 0) wrong.push(`${p} by ${who}: showed keys it may not read`);
          }
          continue;
        }
        if (o.ok) wrong.push(`${p} by ${who}: succeeded`);
        else if (!authRefusal.test(o.details)) wrong.push(`${p} by ${who}: refused for another reason: ${o.details}`);
      }
    }
  }
  // The same through the HTTP gateway: every route, the token in the Authorization header.
  const routes = gatewayRoutes();
  for (const [route, { service, method }] of routes) {
    const p = `/${service}/${method}`;
    const rule = rpcRules[p]!;
    const m = lookupService(service).methods[method]!;
    const type = m.resolvedRequestType!;
    const body = JSON.stringify(messageToJson(type, type.fromObject(requestFor(p, leaseId) as Record<string, unknown>) as unknown as Record<string, unknown>));
    for (const [who, token] of callers) {
      const o = await gatewayCall(c.endpoint, `/v3${route}`, body, token);
      calls++;
      if (rule.need === Need.Public) continue;
      if (who === 'a user without roles' && (rule.need === Need.User || p === '/etcdserverpb.Lease/LeaseTimeToLive')) continue;
      if (o.ok) wrong.push(`gateway /v3${route} by ${who}: succeeded`);
      else if (!authRefusal.test(o.details)) wrong.push(`gateway /v3${route} by ${who}: refused for another reason: ${o.details}`);
    }
  }
  t.diagnostic(`${served.length} RPCs (every rpc of proto/) and ${routes.length} gateway routes, ${calls} calls`);
  // The key is still there and unchanged: nothing got through.
  const root = (await unary(auth, 'Authenticate', { name: 'root', password: 'rootpw' })).token!;
  const md = new grpc.Metadata();
  md.set('token', root);
  const r = await unary(kv, 'Range', { key: Buffer.from('k') }, { metadata: md });
  assert.equal(Buffer.from(r.kvs![0]!.value!).toString(), 'v');
  if (num(r.kvs![0]!.version) !== 1) wrong.push('the key was changed');
  return wrong;
}

test('every RPC of every service refuses callers without the permission it needs', { timeout: 180_000 }, async (t) => {
  const wrong = await walk(t, {});
  assert.deepEqual(wrong, [], wrong.join('\n'));
});

test('every RPC refuses callers without the permission it needs, with JWT tokens', { timeout: 180_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-walk-jwt-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const key = path.join(dir, 'rsa.key');
  const pub = path.join(dir, 'rsa.pub');
  execFileSync('openssl', ['genrsa', '-out', key, '2048'], { stdio: 'ignore' });
  execFileSync('openssl', ['rsa', '-in', key, '-pubout', '-out', pub], { stdio: 'ignore' });
  const json = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
  const wrong = await walk(t, {}, {
    flags: ['--auth-token', `jwt,pub-key=${pub},priv-key=${key},sign-method=RS256,ttl=2s`],
    // exp is the issue second + 2, good through that second: gone 3 s after issue at the latest.
    expiredAfterMs: 3200,
    // Unsigned (alg none), naming root at the current auth revision.
    forged: (user, revision) => `${json({ alg: 'none', typ: 'JWT' })}.${json({ username: user, revision, exp: Math.floor(Date.now() / 1000) + 600 })}.`,
  });
  assert.deepEqual(wrong, [], wrong.join('\n'));
});

test('the walk catches a method left open (planted hole in the request gate)', { timeout: 180_000 }, async (t) => {
  const wrong = await walk(t, { CONCORD_FAILPOINTS: 'authHole=/etcdserverpb.Maintenance/Defragment' });
  t.diagnostic(wrong.join(' | '));
  assert.ok(wrong.some((w) => w.startsWith('/etcdserverpb.Maintenance/Defragment by ')), 'the open method is reported');
});

/**
 * POSTs `body` to a gateway route (with `token` as Authorization); reads the answer, or the first
 * line of a stream. An error body, an error line or a canceled watch is a refusal.
 */
function gatewayCall(endpoint: string, path: string, body: string, token: string | null): Promise<Outcome> {
  return new Promise((resolve) => {
    const u = new URL(endpoint);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (token !== null) headers.authorization = token;
    const req = http.request({ host: u.hostname, port: u.port, path, method: 'POST', headers, timeout: 5000 }, (res) => {
      let text = '';
      let done = false;
      const judge = (): void => {
        if (done) return;
        done = true;
        req.destroy();
        const first = text.split('\n').find((l) => l.trim() !== '') ?? '';
        let j: Record<string, unknown> = {};
        try { j = JSON.parse(first) as Record<string, unknown>; } catch { /* not JSON: judged below */ }
        const err = j.error as string | { message?: string } | undefined;
        if (err !== undefined) return resolve({ ok: false, details: typeof err === 'string' ? err : err.message ?? '' });
        const result = j.result as { canceled?: boolean; cancel_reason?: string } | undefined;
        if (result?.canceled === true) return resolve({ ok: false, details: result.cancel_reason ?? '' });
        if (res.statusCode !== 200) return resolve({ ok: false, details: `HTTP ${res.statusCode} ${first}` });
        resolve({ ok: true, value: j });
      };
      res.on('data', (c: Buffer) => {
        text += c.toString('utf8');
        if (text.includes('\n')) judge();
      });
      res.on('end', judge);
      res.on('error', judge);
    });
    req.on('timeout', () => { req.destroy(); resolve({ ok: false, details: 'timed out' }); });
    req.on('error', (e) => resolve({ ok: false, details: `request failed: ${e.message}` }));
    req.end(body);
  });
}

/** `rpc` declarations in the service protos concord serves. */
function countProtoRpcs(): number {
  const root = path.resolve(__dirname, '../../../proto');
  let n = 0;
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const f = path.join(dir, e.name);
      if (e.isDirectory()) walk(f);
      else if (e.name.endsWith('.proto')) n += (fs.readFileSync(f, 'utf8').match(/^\s*rpc\s/gm) ?? []).length;
    }
  };
  walk(root);
  return n;
}
