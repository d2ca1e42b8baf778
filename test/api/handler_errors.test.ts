// An exception while handling one client request fails that request, never the server (issue
// #10, finding 6): the client gets INTERNAL (the gateway: HTTP 500 with grpc-gateway's JSON error
// body), the exception is logged once with its stack, and the server goes on serving.
//
// Method: a real concord process with the failpoint kvPutThrow=boom (util/failpoints.ts: the Put
// handler throws for the key "boom"), over each way a unary call is served: the gRPC fast path,
// grpc-js (CONCORD_GRPC_FAST_PATH=0) and the HTTP/JSON gateway.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { bytes, connect, num, str, unary } from '../helpers/grpc_client';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const b64 = (s: string): string => Buffer.from(s).toString('base64');
/** The log message of a request failed by an exception (api/grpc/server.ts). */
const LOGGED = '"msg":"request failed: exception in its handler"';
const THROWN = 'failpoint kvPutThrow triggered';

/** A concord with the failpoint set; stopped whatever happens. */
async function withFailpoint(env: Record<string, string>, fn: (c: ConcordHandle) => Promise<void>): Promise<void> {
  const c = await startConcord({ env: { CONCORD_FAILPOINTS: 'kvPutThrow=boom', ...env } });
  try {
    await fn(c);
  } finally {
    await c.stop();
  }
}

function alive(c: ConcordHandle): void {
  assert.equal(c.proc.exitCode, null, `concord exited:\n${c.logs()}`);
  assert.equal(c.proc.signalCode, null, `concord killed:\n${c.logs()}`);
}

function loggedCount(c: ConcordHandle): number {
  return c.logs().split('\n').filter((l) => l.includes(LOGGED)).length;
}

/** Waits until `count` failures are logged (stderr arrives on its own pipe), then checks the lines. */
async function expectLogged(c: ConcordHandle, count: number): Promise<void> {
  const deadline = Date.now() + 2000;
  while (loggedCount(c) < count && Date.now() < deadline) await sleep(20);
  await sleep(100); // and no more than that
  const lines = c.logs().split('\n').filter((l) => l.includes(LOGGED));
  assert.equal(lines.length, count, `failures logged:\n${c.logs()}`);
  for (const l of lines) {
    const entry = JSON.parse(l) as { level: string; method: string; error: string; stack: string };
    assert.equal(entry.level, 'error');
    assert.equal(entry.method, '/etcdserverpb.KV/Put');
    assert.equal(entry.error, THROWN);
    assert.match(entry.stack, /putFailpoint .*kv\.js/, 'the stack names the throwing frame');
  }
}

async function overGrpc(c: ConcordHandle): Promise<void> {
  const kv = connect('etcdserverpb.KV', c.endpoint);
  try {
    const err = await unary(kv, 'Put', { key: bytes('boom'), value: bytes('x') }).then(
      () => assert.fail('the Put of "boom" succeeded'), (e: grpc.ServiceError) => e);
    assert.equal(err.code, grpc.status.INTERNAL, `status ${err.code} ${err.details}`);
    assert.equal(err.details, `etcdserver: ${THROWN}`);
    alive(c);
    const put = await unary(kv, 'Put', { key: bytes('other'), value: bytes('y') });
    assert.ok(num(put.header?.revision) >= 2);
    const got = await unary(kv, 'Range', { key: bytes('other') });
    assert.deepEqual(got.kvs.map((x) => `${str(x.key)}=${str(x.value)}`), ['other=y']);
    const none = await unary(kv, 'Range', { key: bytes('boom') });
    assert.equal(none.kvs.length, 0, 'the failed Put wrote nothing');
  } finally {
    kv.close();
  }
  alive(c);
  await expectLogged(c, 1);
  // Counted as an INTERNAL outcome of Put, as go-grpc-prometheus counts a failed call.
  const metrics = await (await fetch(c.endpoint + '/metrics')).text();
  assert.ok(metrics.includes('grpc_server_handled_total{grpc_code="Internal",grpc_method="Put",' +
    'grpc_service="etcdserverpb.KV",grpc_type="unary"} 1\n'), 'the failed Put counted as Internal');
}

async function post(c: ConcordHandle, path: string, body: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(c.endpoint + path, {
    method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' },
  });
  return { status: res.status, json: JSON.parse(await res.text()) };
}

describe('an exception in a request handler fails the request, not the server', () => {
  test('gRPC, fast path: INTERNAL, logged once, the server goes on', async () => {
    await withFailpoint({}, overGrpc);
  });

  test('gRPC, grpc-js (CONCORD_GRPC_FAST_PATH=0): INTERNAL, logged once, the server goes on', async () => {
    await withFailpoint({ CONCORD_GRPC_FAST_PATH: '0' }, overGrpc);
  });

  test('HTTP/JSON gateway: 500 with grpc-gateway\'s error body, logged once, the server goes on', async () => {
    await withFailpoint({}, async (c) => {
      const failed = await post(c, '/v3/kv/put', { key: b64('boom'), value: b64('x') });
      const message = `etcdserver: ${THROWN}`;
      assert.deepEqual(failed, { status: 500, json: { error: message, message, code: grpc.status.INTERNAL } });
      alive(c);
      const put = await post(c, '/v3/kv/put', { key: b64('other'), value: b64('y') });
      assert.equal(put.status, 200, JSON.stringify(put.json));
      const got = await post(c, '/v3/kv/range', { key: b64('other') });
      assert.equal(got.status, 200);
      assert.deepEqual((got.json as { kvs: { value: string }[] }).kvs.map((x) => x.value), [b64('y')]);
      alive(c);
      await expectLogged(c, 1);
    });
  });
});
