// Goal: a snapshot (MsgSnap + a large payload) reaches the peer's sink whole and verified while
// heartbeats to the same peer keep being delivered during the transfer; any damage — a byte
// changed on the wire, a wrong whole-payload digest, a short or long payload, a failing source,
// a payload over the receiver's limit — is rejected: the receiver discards its partial data and
// never calls onSnapshot, the sender reports failure (reportSnapshot(to, false) in raft terms).
// Method: in-process members; a byte-flipping TCP relay on the wire (via the dial table); a raw
// client built from the frame encoders for digest and size lies; temp dirs checked empty.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { Message, MessageType, newMessage } from '../../src/raft/types';
import { DialAddress, addressKey } from '../../src/transport/dial';
import {
  ConnectionKind, FrameError, FrameReader, FrameType, RefuseReason, decodeHelloAck,
  decodeSnapshotStatus, encodeFrame, encodeHello, encodeHelloAck, frameHeaderBytes,
  protocolVersion, writeFrameHeader, writeSnapshotSize,
} from '../../src/transport/frame';
import { encodeMessage, messageBytes } from '../../src/transport/message_codec';
import { SnapshotSink } from '../../src/transport/snapshot';
import { crc32 } from '../../src/util/crc32';
import {
  Member, allConnected, clusterIdDefault, closeAll, clusterStart, heartbeat, memberIdOf,
  memberStart, until,
  handlesLeft,
} from './helpers';

const MiB = 1024 * 1024;
const tmpRoot = mkdtempSync(path.join(os.tmpdir(), 'concord-transport-snap-'));
after(async () => {
  rmSync(tmpRoot, { recursive: true, force: true });
  const left = await handlesLeft();
  assert.deepEqual(left, [], 'a socket, timer or file handle left behind');
});

function snapMsg(from: number, to: number, index: number): Message {
  const m = newMessage(MessageType.Snap, to, from, 3);
  m.snapshot = { metadata: { index, term: 3, confState: { voters: [1, 2], learners: [3] } },
    data: new Uint8Array(0) };
  return m;
}

/** Byte i of a test payload (position-dependent, so a shifted or dropped chunk shows). */
function payloadByte(i: number): number {
  return (i * 7 + (i >>> 20)) & 0xff;
}

function chunkAt(offset: number, bytes: number): Buffer {
  const b = Buffer.allocUnsafe(bytes);
  for (let i = 0; i < bytes; i++) b[i] = payloadByte(offset + i);
  return b;
}

async function* payload(total: number, chunkBytes: number,
  onChunk: (offset: number) => void = () => undefined): AsyncGenerator<Buffer> {
  for (let off = 0; off < total; off += chunkBytes) {
    onChunk(off);
    yield chunkAt(off, Math.min(chunkBytes, total - off));
  }
}

function digestOf(total: number, chunkBytes: number): Buffer {
  const h = createHash('sha256');
  for (let off = 0; off < total; off += chunkBytes) {
    h.update(chunkAt(off, Math.min(chunkBytes, total - off)));
  }
  return h.digest();
}

/** An in-memory sink that hashes what it gets and records progress. */
class MemorySink implements SnapshotSink {
  bytes = 0;
  writes = 0;
  readonly hash = createHash('sha256');
  state: 'open' | 'finished' | 'aborted' = 'open';
  async write(chunk: Buffer): Promise<void> {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.writes++;
  }
  async finish(): Promise<string> {
    this.state = 'finished';
    return `memory:${this.hash.digest('hex')}`;
  }
  async abort(): Promise<void> {
    this.state = 'aborted';
  }
}

function snapDir(name: string): string {
  const dir = path.join(tmpRoot, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  return dir;
}

/** A relay to `targetPort` that changes the byte at `flipAt` of every client→target stream. */
async function flipRelayStart(targetPort: number, flipAt: number):
Promise<{ server: net.Server; port: number; flipped: () => number; stop: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let flipped = 0;
  let enabled = true;
  const server = net.createServer((client) => {
    const target = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, target]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => { client.destroy(); target.destroy(); });
    }
    let seen = 0;
    client.on('data', (chunk: Buffer) => {
      if (enabled && seen <= flipAt && flipAt < seen + chunk.length) {
        chunk[flipAt - seen] ^= 0x10;
        flipped++;
      }
      seen += chunk.length;
      target.write(chunk);
    });
    target.on('data', (chunk: Buffer) => client.write(chunk));
    client.on('close', () => target.destroy());
    target.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    server, port: (server.address() as net.AddressInfo).port, flipped: () => flipped,
    stop: async () => {
      enabled = false;
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('snapshot transfer', () => {
  test('50 MiB reaches the sink verified while heartbeats keep being delivered', async () => {
    const sinks: MemorySink[] = [];
    const ms = await clusterStart(2, {
      snapshotSinkOpen: () => { const s = new MemorySink(); sinks.push(s); return s; },
    });
    let beat: NodeJS.Timeout | null = null;
    try {
      await until(() => allConnected(ms), 'connected');
      const [a, b] = [ms[0]!, ms[1]!];
      const total = 50 * MiB;
      const snapshots: [Message, string][] = [];
      b.transport.onSnapshot = (m, handle) => snapshots.push([m, handle]);
      // B notes how far the snapshot was when each heartbeat arrived.
      const progressAtBeat: number[] = [];
      b.transport.onMessage = (m) => {
        b.received.push(m);
        progressAtBeat.push(sinks.length === 0 ? 0 : sinks[0]!.bytes);
      };
      let seq = 0;
      beat = setInterval(() => a.transport.send([heartbeat(1, 2, seq++)]), 2);
      const msg = snapMsg(1, 2, 500);
      a.transport.sendSnapshot(msg, payload(total, MiB), total, digestOf(total, MiB));
      await until(() => a.snapshotStatuses.length === 1, 'snapshot status', 60_000);
      clearInterval(beat);
      beat = null;
      assert.deepEqual(a.snapshotStatuses, [[2, true]]);
      await until(() => b.received.length === seq, 'every heartbeat');
      // Heartbeats arrived all through the transfer, not only before and after it.
      const during = progressAtBeat.filter((p) => p > 0 && p < total);
      assert.ok(during.length >= 10, `${during.length} heartbeats during the transfer`);
      const fifths = new Set(during.map((p) => Math.floor((5 * p) / total)));
      assert.ok(fifths.size >= 3, `heartbeats in ${fifths.size} fifths of the transfer`);
      for (let i = 0; i < b.received.length; i++) assert.equal(b.received[i]!.commit, i);
      assert.equal(snapshots.length, 1);
      assert.deepEqual(snapshots[0]![0], msg);
      assert.equal(snapshots[0]![1], `memory:${digestOf(total, MiB).toString('hex')}`);
      assert.equal(sinks[0]!.bytes, total);
      const sa = a.transport.peerStats(2)!;
      const sb = b.transport.peerStats(1)!;
      assert.equal(sa.snapshotsSent, 1);
      assert.ok(sa.sentBytes >= total && sb.receivedBytes >= total, 'snapshot bytes counted');
      assert.equal(sb.snapshotsReceived, 1);
      assert.equal(sa.droppedMessages, 0);
      assert.equal(sa.snapshotSending, false);
    } finally {
      if (beat !== null) clearInterval(beat);
      await closeAll(ms);
    }
  });

  test('the default sink writes a file; onSnapshot gets its path; odd chunk sizes are fine', async () => {
    const dir = snapDir('file');
    const ms = await clusterStart(2, { snapshotDir: dir });
    try {
      const [a, b] = [ms[0]!, ms[1]!];
      const got: string[] = [];
      b.transport.onSnapshot = (_m, file) => got.push(file);
      const total = 3 * MiB + 12345;
      a.transport.sendSnapshot(snapMsg(1, 2, 7), payload(total, 3 * MiB - 1), total);
      await until(() => a.snapshotStatuses.length === 1, 'status');
      assert.deepEqual(a.snapshotStatuses, [[2, true]]);
      assert.equal(got.length, 1);
      assert.equal(path.dirname(got[0]!), dir);
      assert.ok(readFileSync(got[0]!).equals(Buffer.concat([chunkAt(0, total)])));
      // An empty payload is a valid snapshot too.
      a.transport.sendSnapshot(snapMsg(1, 2, 8), payload(0, MiB), 0);
      await until(() => a.snapshotStatuses.length === 2, 'status 2');
      assert.deepEqual(a.snapshotStatuses[1], [2, true]);
      assert.equal(readFileSync(got[1]!).length, 0);
    } finally {
      await closeAll(ms);
    }
  });

  test('a byte changed on the wire: rejected by the frame CRC, partial file removed, then a clean retry works', async () => {
    const dir = snapDir('flip');
    const table = new Map<string, DialAddress>();
    const a = await memberStart(1, { dialTable: table });
    const b = await memberStart(2, { snapshotDir: dir });
    const relay = await flipRelayStart(b.transport.address().port, 5 * MiB + 3);
    try {
      table.set(addressKey(b.transport.address()), { host: '127.0.0.1', port: relay.port });
      a.transport.addPeer(2, memberIdOf(2), [b.url]);
      b.transport.addPeer(1, memberIdOf(1), [a.url]);
      let delivered = 0;
      b.transport.onSnapshot = () => delivered++;
      const total = 12 * MiB;
      a.transport.sendSnapshot(snapMsg(1, 2, 9), payload(total, MiB), total);
      await until(() => a.snapshotStatuses.length === 1, 'status');
      assert.deepEqual(a.snapshotStatuses, [[2, false]]);
      assert.equal(relay.flipped(), 1);
      await until(() => b.transport.peerStats(1)!.snapshotsReceiveFailed === 1, 'receiver failed');
      assert.equal(b.transport.peerStats(1)!.inboundFrameErrors, 1);
      await until(() => readdirSync(dir).length === 0, 'partial file removed');
      assert.equal(delivered, 0);
      // The relay flips only once per connection at that offset: go direct for the retry.
      table.clear();
      a.transport.sendSnapshot(snapMsg(1, 2, 10), payload(total, MiB), total);
      await until(() => a.snapshotStatuses.length === 2, 'status 2');
      assert.deepEqual(a.snapshotStatuses[1], [2, true]);
      assert.equal(delivered, 1);
    } finally {
      await closeAll([a, b]);
      await relay.stop();
    }
  });

  describe('a sender that lies (raw client): the receiver refuses and discards', () => {
    async function rawTransfer(b: Member, size: number, chunks: Buffer[], digest: Buffer):
    Promise<{ ok: boolean; text: string }> {
      const socket = net.connect(b.transport.address().port, '127.0.0.1');
      socket.on('error', () => undefined);
      try {
        await new Promise((resolve) => socket.once('connect', resolve));
        const frames: [FrameType, Buffer][] = [];
        let wake: () => void = () => undefined;
        const reader = new FrameReader(1 << 20, {
          onFrame(type: FrameType, p: Buffer): boolean {
            frames.push([type, Buffer.from(p)]);
            wake();
            return true;
          },
        });
        socket.on('data', (c: Buffer) => assert.equal(reader.push(c), FrameError.None));
        const next = async (): Promise<[FrameType, Buffer]> => {
          while (frames.length === 0) await new Promise<void>((r) => { wake = r; });
          return frames.shift()!;
        };
        socket.write(encodeHello({ version: protocolVersion, kind: ConnectionKind.Snapshot,
          clusterId: clusterIdDefault, fromMemberId: memberIdOf(1), toMemberId: memberIdOf(2) }));
        const [ackType, ack] = await next();
        assert.equal(ackType, FrameType.HelloAck);
        assert.equal(decodeHelloAck(ack)!.reason, 0);
        const m = snapMsg(1, 2, 11);
        const mb = messageBytes(m);
        const begin = Buffer.alloc(8 + mb);
        writeSnapshotSize(begin, 0, size);
        encodeMessage(m, begin, 8, mb);
        socket.write(encodeFrame(FrameType.SnapshotBegin, begin));
        for (const c of chunks) {
          const h = Buffer.alloc(frameHeaderBytes);
          writeFrameHeader(h, 0, FrameType.SnapshotChunk, c.length, crc32(c));
          socket.write(Buffer.concat([h, c]));
        }
        socket.write(encodeFrame(FrameType.SnapshotEnd, digest));
        const [type, status] = await next();
        assert.equal(type, FrameType.SnapshotStatus);
        return decodeSnapshotStatus(status)!;
      } finally {
        socket.destroy();
      }
    }

    test('wrong digest, short payload, long payload', async () => {
      const dir = snapDir('raw');
      const b = await memberStart(2, { snapshotDir: dir });
      try {
        b.transport.addPeer(1, memberIdOf(1), ['http://127.0.0.1:9']);
        let delivered = 0;
        b.transport.onSnapshot = () => delivered++;
        const data = chunkAt(0, 1000);
        const good = createHash('sha256').update(data).digest();
        const bad = Buffer.from(good);
        bad[0] ^= 1;
        assert.deepEqual(await rawTransfer(b, 1000, [data], bad),
          { ok: false, text: 'payload SHA-256 mismatch' });
        assert.deepEqual(await rawTransfer(b, 1000, [data.subarray(0, 900)], good),
          { ok: false, text: 'payload of 900 bytes, announced 1000' });
        assert.deepEqual(await rawTransfer(b, 900, [data], good),
          { ok: false, text: 'more than the announced 900 bytes' });
        await until(() => readdirSync(dir).length === 0, 'partial files removed');
        assert.equal(delivered, 0);
        assert.equal(b.transport.peerStats(1)!.snapshotsReceiveFailed, 3);
        // And the honest version of the same is accepted.
        assert.deepEqual(await rawTransfer(b, 1000, [data], good), { ok: true, text: '' });
        assert.equal(delivered, 1);
      } finally {
        await b.transport.close();
      }
    });
  });

  test('sender-side failures: failing source, wrong size, wrong given digest, busy, over the limit, dead peer', async () => {
    const sinks: MemorySink[] = [];
    const ms = await clusterStart(2, {
      snapshotBytesMax: 8 * MiB,
      snapshotSinkOpen: () => { const s = new MemorySink(); sinks.push(s); return s; },
    });
    try {
      const [a, b] = [ms[0]!, ms[1]!];
      let delivered = 0;
      b.transport.onSnapshot = () => delivered++;
      const status = async (n: number): Promise<[number, boolean]> => {
        await until(() => a.snapshotStatuses.length >= n, `status ${n}`);
        return a.snapshotStatuses[n - 1]!;
      };
      // The source fails half-way (a disk read error, say).
      async function* failing(): AsyncGenerator<Buffer> {
        yield chunkAt(0, MiB);
        throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
      }
      a.transport.sendSnapshot(snapMsg(1, 2, 1), failing(), 2 * MiB);
      assert.deepEqual(await status(1), [2, false]);
      // Fewer bytes than announced.
      a.transport.sendSnapshot(snapMsg(1, 2, 2), payload(MiB, MiB), 2 * MiB);
      assert.deepEqual(await status(2), [2, false]);
      // The caller's digest does not match what was read.
      a.transport.sendSnapshot(snapMsg(1, 2, 3), payload(MiB, MiB), MiB, Buffer.alloc(32));
      assert.deepEqual(await status(3), [2, false]);
      // Over the receiver's limit: refused at SnapshotBegin, with the reason.
      a.transport.sendSnapshot(snapMsg(1, 2, 4), payload(9 * MiB, MiB), 9 * MiB);
      assert.deepEqual(await status(4), [2, false]);
      assert.ok(a.logger.records.some((r) => r.msg === 'failed to send database snapshot' &&
        /over the limit/.test(String(r.fields['reason']))));
      // Busy: a second transfer to the same peer while one runs fails at once; the first is fine.
      let releaseFirst: (() => void) | null = null;
      async function* slow(): AsyncGenerator<Buffer> {
        yield chunkAt(0, MiB);
        await new Promise<void>((r) => { releaseFirst = r; });
        yield chunkAt(MiB, MiB);
      }
      a.transport.sendSnapshot(snapMsg(1, 2, 5), slow(), 2 * MiB);
      a.transport.sendSnapshot(snapMsg(1, 2, 6), payload(MiB, MiB), MiB);
      assert.deepEqual(await status(5), [2, false]);
      await until(() => releaseFirst !== null, 'first transfer half-way');
      releaseFirst!();
      assert.deepEqual(await status(6), [2, true]);
      assert.equal(delivered, 1);
      await until(() => sinks.filter((s) => s.state === 'open').length === 0, 'sinks settled');
      assert.equal(sinks.filter((s) => s.state === 'finished').length, 1);
      // A dead peer: the dial fails, the status says so.
      await b.transport.close();
      a.transport.sendSnapshot(snapMsg(1, 2, 7), payload(MiB, MiB), MiB);
      assert.deepEqual(await status(7), [2, false]);
      // An unknown peer.
      a.transport.sendSnapshot(snapMsg(1, 5, 8), payload(MiB, MiB), MiB);
      assert.deepEqual(await status(8), [5, false]);
    } finally {
      await closeAll(ms);
    }
  });

  test('flow control: a stalled sink stops the sender pulling from its source', async () => {
    let release: () => void = () => undefined;
    let releaseSet = false;
    let stalled = true;
    class StallingSink extends MemorySink {
      override async write(chunk: Buffer): Promise<void> {
        if (stalled) {
          await new Promise<void>((r) => {
            release = r;
            releaseSet = true;
          });
        }
        await super.write(chunk);
      }
    }
    const sinks: StallingSink[] = [];
    const ms = await clusterStart(2, {
      snapshotSinkOpen: () => { const s2 = new StallingSink(); sinks.push(s2); return s2; },
    });
    try {
      const a = ms[0]!;
      const total = 96 * MiB;
      let pulled = 0;
      const source = payload(total, MiB, (off) => { pulled = off + MiB; });
      a.transport.sendSnapshot(snapMsg(1, 2, 1), source, total);
      await until(() => releaseSet, 'the sink\'s first write is stalled');
      // Wait until the sender stops pulling: 40 polls in a row without progress.
      let last = -1;
      let still = 0;
      await until(() => {
        still = pulled === last ? still + 1 : 0;
        last = pulled;
        return still >= 40;
      }, 'sender stops pulling', 30_000);
      // In flight: the receiver's pending bound (8 MiB), socket buffers (4 MiB in node, a few
      // in the kernel on each side) and a frame being assembled; never the whole 96 MiB.
      assert.ok(pulled <= 40 * MiB, `pulled ${pulled / MiB} MiB with the sink stalled`);
      stalled = false;
      release();
      await until(() => a.snapshotStatuses.length === 1, 'status');
      assert.deepEqual(a.snapshotStatuses, [[2, true]]);
      assert.equal(sinks[0]!.bytes, total);
    } finally {
      stalled = false;
      release();
      await closeAll(ms);
    }
  });

  test('a receiver that stops reading: the sender gives up after snapshotTimeoutMs', async () => {
    // Accepts the Hello, then never reads again (a hung process, a dead disk).
    const sockets: net.Socket[] = [];
    const stuck = net.createServer((socket) => {
      sockets.push(socket);
      socket.on('error', () => undefined);
      socket.once('data', () => {
        socket.write(encodeHelloAck({
          reason: RefuseReason.None, version: protocolVersion, text: '',
        }));
        socket.pause();
      });
    });
    await new Promise<void>((resolve) => stuck.listen(0, '127.0.0.1', resolve));
    const a = await memberStart(1, { snapshotTimeoutMs: 300 });
    try {
      const port = (stuck.address() as net.AddressInfo).port;
      a.transport.addPeer(2, memberIdOf(2), [`http://127.0.0.1:${port}`]);
      const total = 256 * MiB;
      let pulled = 0;
      const source = payload(total, MiB, (off) => { pulled = off; });
      a.transport.sendSnapshot(snapMsg(1, 2, 1), source, total);
      await until(() => a.snapshotStatuses.length === 1, 'status');
      assert.deepEqual(a.snapshotStatuses, [[2, false]]);
      assert.ok(pulled < 64 * MiB, `pulled ${pulled / MiB} MiB`);
      assert.ok(a.logger.records.some((r) => r.msg === 'failed to send database snapshot' &&
        r.fields['reason'] === 'stalled'));
    } finally {
      await a.transport.close();
      for (const s2 of sockets) s2.destroy();
      await new Promise<void>((resolve) => stuck.close(() => resolve()));
    }
  });

  test('close() during a transfer aborts both sides and leaves no partial file', async () => {
    const dir = snapDir('close');
    const ms = await clusterStart(2, { snapshotDir: dir });
    try {
      const [a, b] = [ms[0]!, ms[1]!];
      let release: () => void = () => undefined;
      async function* stalled(): AsyncGenerator<Buffer> {
        yield chunkAt(0, 2 * MiB);
        await new Promise<void>((r) => { release = r; });
      }
      a.transport.sendSnapshot(snapMsg(1, 2, 1), stalled(), 4 * MiB);
      await until(() => readdirSync(dir).length === 1, 'receiving into a file');
      await b.transport.close();
      assert.deepEqual(readdirSync(dir), []);
      await until(() => a.snapshotStatuses.length === 1, 'sender told');
      assert.deepEqual(a.snapshotStatuses, [[2, false]]);
      release();
    } finally {
      await closeAll(ms);
    }
  });
});
