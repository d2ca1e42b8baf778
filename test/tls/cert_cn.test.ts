// clientCertCommonName(call) (src/api/tls.ts): the Common Name of the verified client
// certificate, seen from gRPC handlers on every way a call is served: the unary fast path,
// grpc-js itself (a server-streaming method), and a connection the authority repair transcodes.
// Also: the per-connection certificate check (TlsSource.refresh) stays cheap.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { ClientListener } from '../../src/api/listener';
import { AuthorityRepair } from '../../src/api/grpc/authority';
import { UnaryFastPath, type UnaryRoute } from '../../src/api/grpc/unary_fast_path';
import { clientCertCommonName } from '../../src/api/tls';
import { TlsSource, type TlsInfo } from '../../src/tls/tls_info';
import { makePki, type CertPair, type TestPki } from '../helpers/tls_certs';

const identity = (b: Buffer): Buffer => b;
const unaryDef: grpc.MethodDefinition<Buffer, Buffer> = {
  path: '/test.Cn/Unary', requestStream: false, responseStream: false,
  requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity,
};
const streamDef: grpc.MethodDefinition<Buffer, Buffer> = { ...unaryDef, path: '/test.Cn/Stream', responseStream: true };

const answer = (call: unknown): Buffer => Buffer.from(clientCertCommonName(call) ?? '(none)');

interface Served { port: number; close(): Promise<void> }

/** A TLS client port with the service behind the fast path, or grpc-js's injector alone. */
async function serve(info: TlsInfo, fastPath: boolean): Promise<Served> {
  const server = new grpc.Server();
  const unaryHandler = (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>): void => cb(null, answer(call));
  server.addService({ Unary: unaryDef, Stream: streamDef } as grpc.ServiceDefinition, {
    Unary: unaryHandler,
    Stream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      call.write(answer(call));
      call.end();
    },
  });
  const routes = new Map<string, UnaryRoute>([[unaryDef.path, { def: unaryDef as grpc.MethodDefinition<unknown, unknown>, handler: unaryHandler as UnaryRoute['handler'] }]]);
  const fast = fastPath ? UnaryFastPath.create(server, routes, { maxConcurrentStreams: 100, recvBytesMax: 1 << 20 }) : null;
  if (fastPath) assert.notEqual(fast, null, 'this grpc-js offers the fast path hook');
  const sink = fast ?? server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const listener = new ClientListener(new AuthorityRepair(sink), http.createServer());
  const port = await listener.listen('127.0.0.1', 0, undefined, new TlsSource(info, 'client'));
  return {
    port,
    async close() {
      await listener.close(100);
      fast?.close();
      server.forceShutdown();
    },
  };
}

function call(port: number, pki: TestPki, client: CertPair | null, method: 'unary' | 'stream', authority?: string): Promise<string> {
  const creds = grpc.credentials.createSsl(fs.readFileSync(pki.ca.cert),
    client === null ? null : fs.readFileSync(client.key), client === null ? null : fs.readFileSync(client.cert));
  const c = new grpc.Client(`127.0.0.1:${port}`, creds, authority !== undefined ? { 'grpc.default_authority': authority } : {});
  return new Promise<string>((resolve, reject) => {
    if (method === 'unary') {
      c.makeUnaryRequest(unaryDef.path, identity, identity, Buffer.alloc(0), (err, v) => (err ? reject(err) : resolve(v!.toString())));
    } else {
      const s = c.makeServerStreamRequest(streamDef.path, identity, identity, Buffer.alloc(0));
      let got = '';
      s.on('data', (b: Buffer) => (got += b.toString()));
      s.on('error', reject);
      s.on('end', () => resolve(got));
    }
  }).finally(() => c.close());
}

describe('client certificate Common Name for the auth layer', () => {
  let pki: TestPki;
  let server: CertPair;
  let client: CertPair;
  let info: TlsInfo;
  before(() => {
    pki = makePki();
    server = pki.issue('server', { cn: 'server' });
    client = pki.issue('client', { cn: 'alice' });
    info = {
      certFile: server.cert, keyFile: server.key, trustedCaFile: pki.ca.cert, clientCertAuth: true, allowedCn: '',
      selfSigned: false, ciphers: '', minVersion: 'TLSv1.2', maxVersion: undefined,
    };
  });
  after(() => pki.cleanup());

  for (const fastPath of [true, false]) {
    test(`verified certificate: its CN, on every call path (fast path ${fastPath ? 'on' : 'off'})`, async () => {
      const s = await serve(info, fastPath);
      try {
        assert.equal(await call(s.port, pki, client, 'unary'), 'alice');
        assert.equal(await call(s.port, pki, client, 'stream'), 'alice');
        // etcdctl 3.4's maintenance calls send `:authority: https://host:port`: transcoded connection.
        assert.equal(await call(s.port, pki, client, 'unary', `https://127.0.0.1:${s.port}`), 'alice');
        assert.equal(await call(s.port, pki, client, 'stream', `https://127.0.0.1:${s.port}`), 'alice');
      } finally {
        await s.close();
      }
    });
  }

  test('no --client-cert-auth: no certificate is asked for, no CN', async () => {
    const s = await serve({ ...info, clientCertAuth: false, trustedCaFile: '' }, true);
    try {
      assert.equal(await call(s.port, pki, client, 'unary'), '(none)');
      assert.equal(await call(s.port, pki, null, 'stream'), '(none)');
    } finally {
      await s.close();
    }
  });

  test('the per-connection certificate check is cheap when nothing changed', (t) => {
    const source = new TlsSource(info, 'client');
    const n = 20_000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) source.refresh();
    const perCallUs = ((performance.now() - t0) * 1000) / n;
    t.diagnostic(`TlsSource.refresh() with unchanged files: ${perCallUs.toFixed(2)} µs per connection`);
    assert.equal(source.reloads, 0, 'nothing was rebuilt');
    // Three stat() calls; a rebuilt SecureContext costs about a millisecond.
    assert.ok(perCallUs < 100, `${perCallUs} µs`);
    const t1 = performance.now();
    fs.utimesSync(server.cert, new Date(), new Date(Date.now() + 1000));
    assert.equal(source.refresh(), true, 'a changed file is seen');
    t.diagnostic(`one rebuild after a change: ${(performance.now() - t1).toFixed(2)} ms`);
  });
});
