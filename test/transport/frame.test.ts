// Goal: the frame layer never hands out a frame that was not sent: any split of the byte stream
// gives the same frames; any lost range of bytes (a blackholed proxy) that is not exactly whole
// frames, and any changed byte, is reported as an error once the bytes of the frame it hit have
// arrived (one header later when it hit a header: the header has its own CRC). Also the
// small parts around it: control payloads, the dial table and URLs, backoff, the message queue.
// Method: deterministic streams of frames fed to FrameReader in every way.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { Message, MessageType, newMessage } from '../../src/raft/types';
import { Prng } from '../../src/util/prng';
import { backoffDelayMs } from '../../src/transport/backoff';
import {
  dialAddress, dialTableEnv, formatDialTable, parseDialTable, parseHostPort, peerUrlAddress,
} from '../../src/transport/dial';
import {
  ConnectionKind, FrameError, FrameType, RefuseReason, decodeHello, decodeHelloAck, decodePing,
  decodeSnapshotStatus, encodeFrame, encodeHello, encodeHelloAck, encodePing,
  encodeSnapshotStatus, FrameReader, frameHeaderBytes,
} from '../../src/transport/frame';
import { MessageQueue } from '../../src/transport/message_queue';

interface Frame {
  type: FrameType;
  payload: Buffer;
}

function frames(seed: number, n: number, bytesMax: number): Frame[] {
  const p = new Prng(seed);
  const out: Frame[] = [];
  for (let i = 0; i < n; i++) {
    const size = p.int(4) === 0 ? 0 : p.int(bytesMax);
    const payload = Buffer.alloc(size);
    for (let j = 0; j < size; j++) payload[j] = p.nextU32() & 0xff;
    out.push({ type: (1 + p.int(9)) as FrameType, payload });
  }
  return out;
}

function streamOf(fs: Frame[]): Buffer {
  return Buffer.concat(fs.map((f) => encodeFrame(f.type, f.payload)));
}

/** Feeds `stream` cut at `cuts`; returns the frames and the first error. */
function read(stream: Buffer, cuts: number[], payloadBytesMax = 1 << 20):
{ got: Frame[]; err: FrameError } {
  const got: Frame[] = [];
  const reader = new FrameReader(payloadBytesMax, {
    onFrame(type: FrameType, payload: Buffer): boolean {
      got.push({ type, payload: Buffer.from(payload) });
      return true;
    },
  });
  let prev = 0;
  for (const cut of [...cuts, stream.length]) {
    const err = reader.push(stream.subarray(prev, cut));
    if (err !== FrameError.None) return { got, err };
    prev = cut;
  }
  return { got, err: FrameError.None };
}

describe('FrameReader', () => {
  const fs = frames(1, 40, 300);
  const stream = streamOf(fs);
  const boundaries = new Set<number>();
  let at = 0;
  for (const f of fs) {
    boundaries.add(at);
    at += frameHeaderBytes + f.payload.length;
  }
  boundaries.add(at);
  const tailFrames = frames(4, 3, 300).map((f) => ({ ...f, payload: Buffer.alloc(300, 1) }));
  const tail = streamOf(tailFrames);
  const sent = [...fs, ...tailFrames];

  test('any way of cutting the stream gives the same frames', () => {
    for (let step = 1; step <= 64; step++) {
      const cuts: number[] = [];
      for (let c = step; c < stream.length; c += step) cuts.push(c);
      const { got, err } = read(stream, cuts);
      assert.equal(err, FrameError.None);
      assert.deepEqual(got, fs);
    }
    const p = new Prng(3);
    for (let round = 0; round < 200; round++) {
      const cuts = new Set<number>();
      for (let i = 0; i < 10; i++) cuts.add(p.int(stream.length));
      const { got } = read(stream, [...cuts].sort((a, b) => a - b));
      assert.deepEqual(got, fs);
    }
  });

  test('a lost range of bytes is detected unless it is whole frames; never a frame not sent', () => {
    const p = new Prng(5);
    let detected = 0;
    for (let round = 0; round < 3000; round++) {
      const from = p.int(stream.length - 200);
      const len = 1 + p.int(round % 2 === 0 ? 20 : 400);
      // A tail of intact frames follows, as later pings would: at least one frame's worth of
      // bytes after the gap, so the frame the gap cut is complete and checked.
      const gapped = Buffer.concat([stream.subarray(0, from), stream.subarray(from + len), tail]);
      const { got, err } = read(gapped, [from, from + 7]);
      // Every frame handed out is one that was sent, in order (a subsequence of fs).
      let j = 0;
      const same = (f: Frame, g: Frame): boolean =>
        f.type === g.type && f.payload.equals(g.payload);
      for (const g of got) {
        while (j < sent.length && !same(sent[j]!, g)) j++;
        assert.ok(j < sent.length, 'a frame that was never sent');
        j++;
      }
      const wholeFrames = boundaries.has(from) && boundaries.has(from + len);
      if (!wholeFrames) {
        assert.notEqual(err, FrameError.None, `gap [${from}, ${from + len}) not detected`);
        detected++;
      }
    }
    assert.ok(detected > 2900);
  });

  test('every changed byte is detected', () => {
    const small = streamOf(frames(9, 6, 40));
    for (let i = 0; i < small.length; i++) {
      for (const flip of [0x01, 0x80, 0xff]) {
        const changed = Buffer.from(small);
        changed[i] = changed[i]! ^ flip;
        assert.notEqual(read(changed, []).err, FrameError.None, `byte ${i} ^ ${flip}`);
      }
    }
  });

  test('a length over the bound is refused at the header, before any payload arrives', () => {
    const big = encodeFrame(FrameType.Messages, Buffer.alloc(5000));
    const { err, got } = read(big.subarray(0, frameHeaderBytes), [], 4096);
    assert.equal(err, FrameError.TooLarge);
    assert.equal(got.length, 0);
  });

  test('a handler returning false stops the chunk', () => {
    const two = streamOf([{ type: FrameType.Ping, payload: Buffer.alloc(8) },
      { type: FrameType.Ping, payload: Buffer.alloc(8) }]);
    let n = 0;
    const reader = new FrameReader(100, { onFrame: () => { n++; return false; } });
    assert.equal(reader.push(two), FrameError.None);
    assert.equal(n, 1);
  });
});

describe('control payloads', () => {
  const payloadOf = (frame: Buffer): Buffer => frame.subarray(frameHeaderBytes);

  test('Hello carries 64-bit ids exactly', () => {
    const h = { version: 1, kind: ConnectionKind.App, clusterId: (1n << 64n) - 1n,
      fromMemberId: 0x8000_0000_0000_0001n, toMemberId: 1n };
    assert.deepEqual(decodeHello(payloadOf(encodeHello(h))), h);
    assert.equal(decodeHello(Buffer.alloc(27)), null);
    const bad = Buffer.from(payloadOf(encodeHello(h)));
    bad[2] = 9;
    assert.equal(decodeHello(bad), null);
  });

  test('HelloAck, Ping and SnapshotStatus round-trip and refuse malformed payloads', () => {
    const ack = { reason: RefuseReason.ClusterIdMismatch, version: 1, text: 'cluster ID mismatch' };
    assert.deepEqual(decodeHelloAck(payloadOf(encodeHelloAck(ack))), ack);
    assert.equal(decodeHelloAck(Buffer.from([99, 0, 0, 1, 0, 0])), null);
    const long = decodeHelloAck(payloadOf(encodeHelloAck({ ...ack, text: 'x'.repeat(1000) })));
    assert.equal(long!.text.length, 256);
    assert.equal(decodePing(payloadOf(encodePing(FrameType.Ping, 0xfffffffe))), 0xfffffffe);
    assert.equal(decodePing(Buffer.alloc(7)), -1);
    const st = { ok: false, text: 'payload SHA-256 mismatch' };
    assert.deepEqual(decodeSnapshotStatus(payloadOf(encodeSnapshotStatus(st))), st);
    assert.equal(decodeSnapshotStatus(Buffer.from([2, 0, 0, 0])), null);
  });
});

describe('dial table and peer URLs', () => {
  test('peer URLs give host:port; what cannot be dialled is null', () => {
    assert.deepEqual(peerUrlAddress('http://127.0.0.1:2380'), { host: '127.0.0.1', port: 2380 });
    assert.deepEqual(peerUrlAddress('http://[::1]:2380/'), { host: '::1', port: 2380 });
    assert.deepEqual(peerUrlAddress('http://localhost'), { host: 'localhost', port: 80 });
    assert.deepEqual(peerUrlAddress('https://127.0.0.1:2380'), { host: '127.0.0.1', port: 2380, tls: true });
    assert.equal(peerUrlAddress('unix://x'), null);
    assert.equal(peerUrlAddress('http://127.0.0.1:2380/raft'), null);
    assert.equal(peerUrlAddress('127.0.0.1:2380'), null);
    assert.equal(peerUrlAddress('not a url'), null);
  });

  test('host:port parsing', () => {
    assert.deepEqual(parseHostPort('[fe80::1]:7'), { host: 'fe80::1', port: 7 });
    for (const bad of ['h', 'h:', ':1', 'h:0', 'h:65536', 'h:1x', 'fe80::1:7', '[::1:7', 'a b:1']) {
      assert.equal(parseHostPort(bad), null, bad);
    }
  });

  test('the table maps a real address to the address to dial; others pass through', () => {
    const routes = new Map([
      ['127.0.0.1:40002', '127.0.0.1:51001'], ['[::1]:40003', '[::1]:51002'],
    ]);
    const text = formatDialTable(routes);
    assert.equal(text, '127.0.0.1:40002=127.0.0.1:51001,[::1]:40003=[::1]:51002');
    const table = parseDialTable(` ${text} ,`);
    assert.deepEqual(dialAddress(table, { host: '127.0.0.1', port: 40002 }),
      { host: '127.0.0.1', port: 51001 });
    assert.deepEqual(dialAddress(table, { host: '::1', port: 40003 }),
      { host: '::1', port: 51002 });
    assert.deepEqual(dialAddress(table, { host: '127.0.0.1', port: 9 }),
      { host: '127.0.0.1', port: 9 });
    assert.throws(() => parseDialTable('127.0.0.1:1'), /bad pair/);
    assert.throws(() => parseDialTable('127.0.0.1:1=nope'), /bad pair/);
  });

  test(`${dialTableEnv} is read once when the module loads`, () => {
    const module = JSON.stringify(require.resolve('../../src/transport/dial'));
    const script = `const d = require(${module});` +
      `process.stdout.write(JSON.stringify([...d.envDialTable]))`;
    const out = execFileSync(process.execPath, ['-e', script], {
      env: { ...process.env, [dialTableEnv]: '127.0.0.1:1=127.0.0.1:2' },
    }).toString();
    assert.deepEqual(JSON.parse(out), [['127.0.0.1:1', { host: '127.0.0.1', port: 2 }]]);
  });
});

describe('backoff and message queue', () => {
  test('backoff doubles from min to max, with jitter inside [step/2, step]', () => {
    const p = new Prng(11);
    for (let failures = 1; failures <= 40; failures++) {
      const step = Math.min(1000, 100 * 2 ** (failures - 1));
      for (let i = 0; i < 50; i++) {
        const d = backoffDelayMs(failures, 100, 1000, p);
        assert.ok(d >= step / 2 && d <= step, `failures ${failures}: ${d}`);
      }
    }
    const a = new Prng(1);
    const b = new Prng(1);
    for (let i = 1; i < 20; i++) {
      assert.equal(backoffDelayMs(i, 10, 500, a), backoffDelayMs(i, 10, 500, b));
    }
  });

  test('the queue is bounded in count and bytes and keeps order across wrap-around', () => {
    const q = new MessageQueue(5, 100);
    const m = (i: number): Message => newMessage(MessageType.Heartbeat, 2, 1, i);
    let next = 0;
    let expect = 0;
    for (let round = 0; round < 50; round++) {
      while (q.fits(10)) q.push(m(next++), 10);
      assert.equal(q.length, 5);
      assert.equal(q.byteLength, 50);
      for (let i = 0; i < 3; i++) assert.equal(q.shift().term, expect++);
    }
    assert.ok(!new MessageQueue(5, 100).fits(101));
    q.clear();
    assert.equal(q.length, 0);
    assert.equal(q.byteLength, 0);
    assert.throws(() => q.shift());
  });
});
