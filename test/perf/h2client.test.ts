// perf/h2client.ts against node:http2 servers standing in for a gRPC server: requests larger than
// one frame and than the initial windows (they used to go out as one oversized DATA frame and then
// wait for a window that never came), TLS with ALPN h2 and a client certificate, the `token`
// header, and Authenticate-style calls through unaryCall.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';

import { grpcHeaderBlock, H2Connection, unaryCall, type H2TlsOptions } from '../../perf/h2client';
import { makePki, type TestPki } from '../helpers/tls_certs';

interface Seen { path: string; scheme: string; token: string | undefined; bytes: number; peerCertCn: string | null }

/** Answers every call with a gRPC message holding the request's size (4 bytes) and records what it saw. */
function handler(seen: Seen[]): (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void {
  return (stream, headers) => {
    let bytes = 0;
    stream.on('data', (d: Buffer) => (bytes += d.length));
    stream.on('end', () => {
      const socket = stream.session?.socket as (import('node:tls').TLSSocket | undefined);
      const cert = typeof socket?.getPeerCertificate === 'function' ? socket.getPeerCertificate() : null;
      seen.push({
        path: String(headers[':path']), scheme: String(headers[':scheme']),
        token: headers.token === undefined ? undefined : String(headers.token), bytes: bytes - 5,
        peerCertCn: cert && cert.subject ? String(cert.subject.CN) : null,
      });
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      const msg = Buffer.alloc(9);
      msg.writeUInt32BE(4, 1);
      msg.writeUInt32BE(bytes - 5, 5);
      stream.end(msg);
    });
  };
}

function listen(server: http2.Http2Server | http2.Http2SecureServer): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

/** Sends unary requests of the given sizes at once; resolves with the ok flag of each. */
async function sendAll(conn: H2Connection, block: Buffer, sizes: number[], results: Map<number, boolean>): Promise<boolean[]> {
  const done = new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (results.size === sizes.length) {
        clearInterval(check);
        resolve();
      }
    }, 5);
  });
  sizes.forEach((n, tag) => conn.request(block, new Uint8Array(n).fill(tag + 1), tag));
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`requests hung: ${results.size}/${sizes.length} answered`)), 10_000).unref());
  await Promise.race([done, timeout]);
  return sizes.map((_, tag) => results.get(tag)!);
}

let pki: TestPki;
before(() => {
  pki = makePki();
});
after(() => pki.cleanup());

test('h2client: requests of 16 KiB to 4 MiB go out in frames within the windows and are all answered', async () => {
  const seen: Seen[] = [];
  const server = http2.createServer();
  server.on('stream', handler(seen));
  const address = await listen(server);
  const results = new Map<number, boolean>();
  const conn = new H2Connection(address, (tag, ok) => results.set(tag, ok));
  try {
    await conn.connect();
    const block = grpcHeaderBlock(address, '/etcdserverpb.KV/Put');
    // Sizes around the frame limit (16,384) and the initial windows (65,535), small ones queued
    // behind large ones on the same connection, and a message larger than the connection window.
    const sizes = [10, 16_379, 16_380, 16_384, 40_000, 65_530, 65_531, 100_000, 20, 1 << 20, 4 << 20, 7];
    const ok = await sendAll(conn, block, sizes, results);
    assert.deepEqual(ok, sizes.map(() => true));
    assert.deepEqual(seen.map((s) => s.bytes).sort((a, b) => a - b), sizes.slice().sort((a, b) => a - b));
    assert.ok(seen.every((s) => s.scheme === 'http' && s.token === undefined));
  } finally {
    conn.close();
    server.close();
  }
});

test('h2client: a large message on a streaming call waits for the stream window, then the stream ends', async () => {
  const seen: Seen[] = [];
  const server = http2.createServer();
  server.on('stream', handler(seen));
  const address = await listen(server);
  const conn = new H2Connection(address, () => {});
  try {
    await conn.connect();
    const res = await unaryCall(conn, grpcHeaderBlock(address, '/etcdserverpb.Auth/Authenticate'), new Uint8Array(300_000));
    assert.equal(res.readUInt32BE(0), 300_000);
    assert.equal(seen.length, 1);
  } finally {
    conn.close();
    server.close();
  }
});

test('h2client: TLS with ALPN h2, :scheme https, a client certificate and the token header', async () => {
  const serverPair = pki.issue('h2-server', { cn: 'server' });
  const clientPair = pki.issue('h2-client', { cn: 'bench' });
  const seen: Seen[] = [];
  const server = http2.createSecureServer({
    cert: fs.readFileSync(serverPair.cert), key: fs.readFileSync(serverPair.key), ca: fs.readFileSync(pki.ca.cert), requestCert: true,
  });
  server.on('stream', handler(seen));
  const address = await listen(server);
  const tls: H2TlsOptions = { ca: fs.readFileSync(pki.ca.cert), cert: fs.readFileSync(clientPair.cert), key: fs.readFileSync(clientPair.key) };
  const results = new Map<number, boolean>();
  const conn = new H2Connection(address, (tag, ok) => results.set(tag, ok), { tls });
  try {
    await conn.connect();
    assert.equal(conn.scheme, 'https');
    const block = grpcHeaderBlock(address, '/etcdserverpb.KV/Range', { scheme: conn.scheme, token: 'tok.en.123' });
    assert.deepEqual(await sendAll(conn, block, [12, 70_000], results), [true, true]);
    assert.equal(seen.length, 2);
    for (const s of seen) {
      assert.equal(s.path, '/etcdserverpb.KV/Range');
      assert.equal(s.scheme, 'https');
      assert.equal(s.token, 'tok.en.123');
      assert.equal(s.peerCertCn, 'bench');
    }
  } finally {
    conn.close();
    server.close();
  }
});

test('h2client: a server certificate from a CA the client does not trust fails the connection', async () => {
  const rogue = pki.issue('h2-rogue', { cn: 'server', ca: 'other' });
  const server = http2.createSecureServer({ cert: fs.readFileSync(rogue.cert), key: fs.readFileSync(rogue.key) });
  server.on('stream', handler([]));
  server.on('tlsClientError', () => {});
  const address = await listen(server);
  const conn = new H2Connection(address, () => {}, { tls: { ca: fs.readFileSync(pki.ca.cert) } });
  try {
    await assert.rejects(conn.connect(), /certificate/i);
  } finally {
    conn.close();
    server.close();
  }
});
