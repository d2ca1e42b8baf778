// src/api/grpc/authority.ts: HPACK decoding checked against node's own encoder (nghttp2), and
// connections whose :authority nghttp2 refuses (etcdctl 3.4 sends "http://host:port") reach
// grpc-js anyway, through the transcoder; valid ones go through untouched.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';

import { AuthorityRepair, HpackDecoder, huffmanDecode, repairedAuthority } from '../../src/api/grpc/authority';

const PREFACE_LEN = 24;

/** Header blocks of the requests a node http2 client sends (raw bytes captured by a TCP server). */
async function captureHeaderBlocks(requests: Record<string, string>[]): Promise<Buffer[]> {
  const blocks: Buffer[] = [];
  const server = net.createServer((socket) => {
    let buf = Buffer.alloc(0);
    let started = false;
    socket.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])); // server preface: empty SETTINGS
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (!started) {
        if (buf.length < PREFACE_LEN) return;
        buf = buf.subarray(PREFACE_LEN);
        started = true;
      }
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        if (type === 1) {
          assert.ok(flags & 0x4, 'test expects single-frame header blocks');
          let p = 9;
          let end = 9 + len;
          if (flags & 0x8) end -= buf[p++]!;
          if (flags & 0x20) p += 5;
          blocks.push(Buffer.from(buf.subarray(p, end)));
        }
        buf = buf.subarray(9 + len);
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.on('error', () => undefined);
  for (const h of requests) {
    const req = client.request({ ':method': 'POST', ':path': '/x', ...h }, { endStream: true });
    req.on('error', () => undefined);
  }
  const deadline = Date.now() + 5000;
  while (blocks.length < requests.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  client.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return blocks;
}

describe('HPACK decoding (against nghttp2)', () => {
  test('huffman: every printable and high byte, and bad padding refused', async () => {
    let all = '';
    for (let c = 0x20; c < 0x7f; c++) all += String.fromCharCode(c);
    let high = '';
    for (let c = 0x80; c <= 0xff; c++) high += String.fromCharCode(c);
    const requests: Record<string, string>[] = [
      { 'x-printable': all, 'x-word': 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'x-digits': '0123456789012345678901234567890' },
      { 'x-printable': all, 'x-high': high, 'x-tab': 'a\tb' }, // second request: dynamic-table references
      { 'x-new': 'value-3', 'x-printable': all },
    ];
    const blocks = await captureHeaderBlocks(requests);
    assert.equal(blocks.length, requests.length);
    const dec = new HpackDecoder();
    for (const [i, block] of blocks.entries()) {
      const got = new Map(dec.decode(block).map((h) => [h.name.toString('latin1'), h.value.toString('latin1')]));
      for (const [k, v] of Object.entries(requests[i]!)) assert.equal(got.get(k), v, `request ${i} header ${k}`);
      assert.equal(got.get(':path'), '/x');
      assert.equal(got.get(':method'), 'POST');
    }
    assert.throws(() => huffmanDecode(Buffer.from([0x00])), /padding/); // '0' then 3 zero bits
    assert.equal(huffmanDecode(Buffer.from([0x07])).toString(), '0'); // '0' (00000) + 111
  });

  test('repairedAuthority', () => {
    assert.equal(repairedAuthority('127.0.0.1:2379'), null);
    assert.equal(repairedAuthority('[::1]:2379'), null);
    assert.equal(repairedAuthority('localhost'), null);
    assert.equal(repairedAuthority('http://127.0.0.1:2379'), '127.0.0.1:2379');
    assert.equal(repairedAuthority('https://example.com:1/x/y'), 'example.com:1');
    assert.equal(repairedAuthority('unix:///tmp/sock'), 'localhost');
    assert.equal(repairedAuthority('user@host:1'), 'host:1');
  });
});

describe('AuthorityRepair in front of grpc-js', () => {
  const server = new grpc.Server();
  const netServers: net.Server[] = [];
  let repair: AuthorityRepair;
  let port = 0;

  after(async () => {
    repair?.close();
    for (const s of netServers) s.close();
    server.forceShutdown();
  });

  /** One unary call with a given :authority; resolves with grpc-status or the stream error. */
  function call(authority: string | undefined, path: string): Promise<string> {
    return new Promise((resolve) => {
      const client = http2.connect(`http://127.0.0.1:${port}`);
      client.on('error', (err) => resolve(`session error ${err.message}`));
      const headers: http2.OutgoingHttpHeaders = {
        ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers',
      };
      if (authority !== undefined) headers[':authority'] = authority;
      const req = client.request(headers);
      req.on('error', (err) => {
        client.destroy();
        resolve(`stream error ${err.message}`);
      });
      req.on('trailers', (t) => {
        client.close();
        resolve(`grpc-status ${String(t['grpc-status'])}`);
      });
      req.on('response', (h) => {
        if (h['grpc-status'] !== undefined) {
          client.close();
          resolve(`grpc-status ${String(h['grpc-status'])}`);
        }
      });
      req.resume();
      req.end(Buffer.alloc(5)); // an empty gRPC message
    });
  }

  test('valid and invalid authorities both reach grpc-js', async () => {
    const echo: grpc.ServiceDefinition = {
      Echo: {
        path: '/t.T/Echo', requestStream: false, responseStream: false,
        requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b,
        responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b,
      },
    };
    server.addService(echo, { Echo: (_c: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.alloc(0)) });
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const kinds: string[] = []; // what grpc-js got: the socket itself, or the transcoder
    repair = new AuthorityRepair({
      injectConnection(c) {
        kinds.push(c instanceof net.Socket ? 'socket' : 'transcoded');
        injector.injectConnection(c);
      },
    });
    const ns = net.createServer((s) => repair.injectConnection(s));
    netServers.push(ns);
    await new Promise<void>((resolve) => ns.listen(0, '127.0.0.1', resolve));
    port = (ns.address() as net.AddressInfo).port;

    assert.equal(await call(undefined, '/t.T/Echo'), 'grpc-status 0');
    assert.equal(await call(`http://127.0.0.1:${port}`, '/t.T/Echo'), 'grpc-status 0');
    assert.equal(await call(`http://127.0.0.1:${port}`, '/t.T/Missing'), 'grpc-status 12');
    assert.deepEqual(kinds, ['socket', 'transcoded', 'transcoded']);
    // Many streams on one transcoded connection (dynamic table, flow control).
    const client = http2.connect(`http://127.0.0.1:${port}`);
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => new Promise<string>((resolve) => {
      const req = client.request({
        ':method': 'POST', ':path': '/t.T/Echo', ':authority': `http://127.0.0.1:${port}`,
        'content-type': 'application/grpc', te: 'trailers', 'x-n': String(i),
      });
      req.on('error', (err) => resolve(err.message));
      req.on('trailers', (t) => resolve(String(t['grpc-status'])));
      req.resume();
      req.end(Buffer.alloc(5));
    })));
    client.close();
    assert.deepEqual(results, Array.from({ length: 50 }, () => '0'));
  });
});
