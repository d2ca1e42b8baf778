// The watch benchmark's client pieces (perf/): the WatchResponse walker against protobufjs
// encodings, and perf/h2client.ts streaming calls against a node:http2 server that cuts gRPC
// messages across DATA frames and socket writes in every way (messages split mid-prefix,
// messages spanning frames, many messages per frame, empty messages, padded frames).
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';

import { etcdserverpb } from '../../src/gen/proto';
import { Prng } from '../../src/util/prng';
import { grpcHeaderBlock, H2Connection } from '../../perf/h2client';
import { decodeWatchResponse, putBody, WATCH_CREATE, WATCH_VALUE_BYTES, type WatchResponseInfo } from '../../perf/watchgen';

const info = (): WatchResponseInfo => ({ watchId: -1, created: false, canceled: false, compactRevision: -1, events: -1 });

test('decodeWatchResponse: watch id, flags and per-event revision and value stamp', () => {
  const stamp = Buffer.alloc(16);
  stamp.writeDoubleLE(123456789.25, 0);
  const msg = Buffer.from(etcdserverpb.WatchResponse.encode({
    header: { cluster_id: 1, member_id: 2, revision: 99, raft_term: 3 },
    watch_id: 300,
    events: [
      { kv: { key: Buffer.from('a'), create_revision: 5, mod_revision: 2 ** 40 + 3, version: 2, value: stamp, lease: 7 },
        prev_kv: { key: Buffer.from('a'), mod_revision: 4, value: Buffer.from('old') } },
      { type: 1, kv: { key: Buffer.from('b'), mod_revision: 9, value: Buffer.from('short') } },
    ],
  }).finish());
  const seen: [number, number, number, number][] = [];
  const i = info();
  const wrapped = Buffer.concat([Buffer.from([1, 2, 3]), msg, Buffer.from([4])]);
  decodeWatchResponse(wrapped, 3, 3 + msg.length, i, (w, t, r, s) => seen.push([w, t, r, s]));
  assert.deepEqual(i, { watchId: 300, created: false, canceled: false, compactRevision: 0, events: 2 });
  assert.equal(seen.length, 2);
  assert.deepEqual(seen[0], [300, 0, 2 ** 40 + 3, 123456789.25]);
  assert.deepEqual(seen[1]!.slice(0, 3), [300, 1, 9]);
  assert.ok(Number.isNaN(seen[1]![3]));

  const created = Buffer.from(etcdserverpb.WatchResponse.encode({ header: { revision: 1 }, watch_id: 0, created: true }).finish());
  decodeWatchResponse(created, 0, created.length, i, () => assert.fail('no events'));
  assert.deepEqual(i, { watchId: 0, created: true, canceled: false, compactRevision: 0, events: 0 });
  const canceled = Buffer.from(etcdserverpb.WatchResponse.encode({ watch_id: 4, canceled: true, compact_revision: 17, cancel_reason: 'x' }).finish());
  decodeWatchResponse(canceled, 0, canceled.length, i, () => {});
  assert.deepEqual(i, { watchId: 4, created: false, canceled: true, compactRevision: 17, events: 0 });
  assert.throws(() => decodeWatchResponse(msg, 0, msg.length - 1, info(), () => {}));
});

test('putBody: a PutRequest whose value carries the send time and sequence number', () => {
  const b = putBody(1234, 98765.5);
  const req = etcdserverpb.PutRequest.decode(b);
  assert.equal(Buffer.from(req.key).toString(), 'bench/w/034');
  assert.equal(req.value.length, WATCH_VALUE_BYTES);
  assert.equal(Buffer.from(req.value).readDoubleLE(0), 98765.5);
  assert.equal(Buffer.from(req.value).readDoubleLE(8), 1234);
  const create = etcdserverpb.WatchRequest.decode(WATCH_CREATE);
  assert.equal(Buffer.from(create.create_request!.key!).toString(), 'bench/w/');
  assert.equal(Buffer.from(create.create_request!.range_end!).toString(), 'bench/w0');
});

test('h2client streams: messages cut anywhere arrive whole, in order; requests reach the server; end is reported', async (t) => {
  const prng = new Prng(42);
  const messages: Buffer[] = [];
  for (let i = 0; i < 400; i++) {
    const len = i % 50 === 0 ? 70_000 + prng.int(30_000) : i % 7 === 0 ? 0 : prng.int(300);
    const m = Buffer.alloc(len);
    for (let j = 0; j < len; j++) m[j] = (i + j) & 0xff;
    messages.push(m);
  }
  const wire = Buffer.concat(messages.map((m) => {
    const h = Buffer.alloc(5);
    h.writeUInt32BE(m.length, 1);
    return Buffer.concat([h, m]);
  }));
  const requests: Buffer[] = [];
  // Maximal padding: every DATA frame is PADDED.
  const server = http2.createServer({ paddingStrategy: http2.constants.PADDING_STRATEGY_MAX });
  server.on('stream', (stream) => {
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    stream.on('end', () => {
      requests.push(Buffer.concat(parts));
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      // Random write sizes, some below 5 bytes: message prefixes and bodies split every way.
      let at = 0;
      while (at < wire.length) {
        const n = Math.min(wire.length - at, [1, 3, 5, 17, 1000, 20_000][prng.int(6)]!);
        stream.write(wire.subarray(at, at + n));
        at += n;
      }
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const conn = new H2Connection(address, () => {});
  await conn.connect();
  const got: Buffer[] = [];
  const ended = new Promise<[string, number]>((resolve) => {
    const id = conn.openStream(grpcHeaderBlock(address, '/x.Y/Z'), {
      onMessage: (buf, start, end) => got.push(Buffer.from(buf.subarray(start, end))),
      onEnd: (reason, n) => resolve([reason, n]),
    });
    conn.sendMessage(id, Buffer.from('hello'));
    conn.sendMessage(id, Buffer.from('world!'));
    conn.endStream(id);
  });
  const [reason, n] = await ended;
  conn.close();
  assert.match(reason, /trailers/);
  assert.equal(n, messages.length);
  assert.equal(got.length, messages.length);
  for (let i = 0; i < messages.length; i++) assert.ok(got[i]!.equals(messages[i]!), `message ${i}`);
  assert.deepEqual(requests, [Buffer.from('\0\0\0\0\x05hello\0\0\0\0\x06world!', 'latin1')]);
});

test('h2client streams: a trailers-only answer ends the stream with no message', async (t) => {
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' }, { endStream: true });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const conn = new H2Connection(address, () => {});
  await conn.connect();
  const [, n] = await new Promise<[string, number]>((resolve) => {
    const id = conn.openStream(grpcHeaderBlock(address, '/x.Y/Z'), { onMessage: () => assert.fail('no message'), onEnd: (r, m) => resolve([r, m]) });
    conn.sendMessage(id, Buffer.from('x'));
  });
  conn.close();
  assert.equal(n, 0);
});
