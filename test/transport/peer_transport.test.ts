// Goal: PeerTransport delivers raft messages between members in order per sender and stream,
// batches one event-loop turn into one write per connection, stays bounded and keeps serving
// the other peers when one is dead or stops reading (dropping and reporting unreachable), comes
// back when a peer restarts, and refuses a member of another cluster (or the wrong member) with
// the reason logged and counted. Method: 3 in-process transports on loopback ports the OS
// picks; raw sockets play broken peers; every transport and socket is closed in `finally`.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { Message, MessageType } from '../../src/raft/types';
import {
  ConnectionKind, FrameError, FrameReader, FrameType, RefuseReason, encodeHelloAck,
  protocolVersion,
} from '../../src/transport/frame';
import {
  Member, allConnected, append, closeAll, clusterStart, connected, heartbeat, memberIdOf,
  memberStart, turn, until,
  handlesLeft,
} from './helpers';

/** Checks that messages of each (sender, stream) arrived in increasing sequence order. */
function inOrder(received: readonly Message[]): Map<string, number> {
  const last = new Map<string, number>();
  for (const m of received) {
    const stream = m.type === MessageType.App ? 'app' : 'message';
    const seq = m.type === MessageType.App ? m.index : m.commit;
    const key = `${m.from}/${stream}`;
    const prev = last.get(key) ?? -1;
    assert.ok(seq > prev, `${key}: ${seq} after ${prev}`);
    last.set(key, seq);
  }
  return last;
}

/** A peer that completes the handshake and then never reads again (a stuck process). */
interface StuckPeer {
  server: net.Server;
  sockets: net.Socket[];
  url: string;
}

async function stuckPeerStart(): Promise<StuckPeer> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    const reader = new FrameReader(1 << 20, {
      onFrame(type: FrameType): boolean {
        if (type !== FrameType.Hello) return false;
        socket.write(encodeHelloAck({
          reason: RefuseReason.None, version: protocolVersion, text: '',
        }));
        socket.pause(); // never read again: the sender's socket fills up
        return false;
      },
    });
    socket.on('data', (chunk: Buffer) => {
      if (reader.push(chunk) !== FrameError.None) socket.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, sockets, url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}` };
}

async function stuckPeerStop(p: StuckPeer): Promise<void> {
  for (const s of p.sockets) s.destroy();
  await new Promise<void>((resolve) => p.server.close(() => resolve()));
}

after(async () => {
  // Every test closed what it opened: no socket, listener, timer or immediate is left behind.
  const left = await handlesLeft();
  assert.deepEqual(left, []);
});

describe('PeerTransport', () => {
  test('3 members exchange thousands of messages, in order per sender and stream', async () => {
    const ms = await clusterStart(3);
    try {
      await until(() => allConnected(ms), 'all connected');
      const perPeer = 3000;
      for (let seq = 0; seq < perPeer; seq += 100) {
        for (const a of ms) {
          const batch: Message[] = [];
          for (const b of ms) {
            if (a === b) continue;
            for (let i = seq; i < seq + 100; i++) {
              batch.push(i % 3 === 0 ? append(a.raftId, b.raftId, i, 200 + (i % 500)) :
                heartbeat(a.raftId, b.raftId, i));
            }
          }
          a.transport.send(batch);
        }
        await turn();
      }
      await until(() => ms.every((m) => m.received.length === 2 * perPeer), 'all delivered');
      for (const m of ms) {
        const last = inOrder(m.received);
        assert.equal(last.size, 4);
        for (const p of ms) {
          if (p === m) continue;
          const s = m.transport.peerStats(p.raftId)!;
          assert.equal(s.droppedMessages, 0);
          assert.equal(s.sentMessages, perPeer);
          assert.equal(s.receivedMessages, perPeer);
        }
        assert.deepEqual(m.unreachable, []);
      }
      // Entries arrive whole.
      const app = ms[0]!.received.find((m) => m.type === MessageType.App && m.index === 300)!;
      assert.equal(app.entries[0]!.data.length, 200 + 300);
      assert.ok(app.entries[0]!.data.every((b) => b === (300 & 0xff)));
    } finally {
      await closeAll(ms);
    }
  });

  test('one event-loop turn of sends to a peer is one write per connection', async () => {
    const ms = await clusterStart(2, { pingIntervalMs: 60_000, readTimeoutMs: 120_000 });
    try {
      await until(() => allConnected(ms), 'connected');
      const [a, b] = [ms[0]!, ms[1]!];
      await until(() => b.transport.peerStats(1)!.receivedMessages === 0 && true, 'idle');
      const before = a.transport.peerStats(2)!;
      for (let i = 0; i < 300; i++) a.transport.send([heartbeat(1, 2, i)]);
      for (let i = 0; i < 20; i++) a.transport.send([append(1, 2, i, 1000)]);
      await until(() => b.received.length === 320, 'delivered');
      const after = a.transport.peerStats(2)!;
      assert.equal(after.message.writes - before.message.writes, 1);
      assert.equal(after.app.writes - before.app.writes, 1);
      assert.equal(after.sentMessages - before.sentMessages, 320);
      // The next turn is another write.
      a.transport.send([heartbeat(1, 2, 1000)]);
      await until(() => b.received.length === 321, 'delivered again');
      assert.equal(a.transport.peerStats(2)!.message.writes - after.message.writes, 1);
    } finally {
      await closeAll(ms);
    }
  });

  test('heartbeats do not wait behind large appends to the same peer', async () => {
    const ms = await clusterStart(2);
    try {
      await until(() => allConnected(ms), 'connected');
      const [a, b] = [ms[0]!, ms[1]!];
      // B notes, for each heartbeat, how many appends had arrived before it.
      const appendsBefore: number[] = [];
      let appends = 0;
      b.transport.onMessage = (m) => {
        if (m.type === MessageType.App) appends++;
        else appendsBefore.push(appends);
      };
      // Each turn: 2 MiB of appends queued first, then a heartbeat, all in one send() call.
      const perTurn = 32;
      const turns = 30;
      for (let t = 0; t < turns; t++) {
        const batch: Message[] = [];
        for (let i = 0; i < perTurn; i++) batch.push(append(1, 2, t * perTurn + i, 64 * 1024));
        batch.push(heartbeat(1, 2, t));
        a.transport.send(batch);
        await until(() => appends === (t + 1) * perTurn && appendsBefore.length === t + 1,
          'turn delivered');
      }
      // On its own connection heartbeat t overtakes the appends sent before it; on one shared
      // connection it would arrive after all (t+1)·32 of them.
      const overtook = appendsBefore.filter((n, t) => n < (t + 1) * perTurn).length;
      assert.ok(overtook >= turns * 0.8, `${overtook} of ${turns} heartbeats overtook the appends`);
      assert.equal(a.transport.peerStats(2)!.droppedMessages, 0);
    } finally {
      await closeAll(ms);
    }
  });

  test('a dead peer: messages dropped and counted, unreachable reported, others unaffected', async () => {
    const ms = await clusterStart(3);
    try {
      await until(() => allConnected(ms), 'connected');
      const [a, b, c] = [ms[0]!, ms[1]!, ms[2]!];
      await c.transport.close();
      await until(() => a.transport.peerStats(3)!.message.state === 'backoff', 'peer 3 seen down');
      const sent = 2000;
      for (let i = 0; i < sent; i += 50) {
        const batch: Message[] = [];
        for (let j = i; j < i + 50; j++) {
          batch.push(heartbeat(1, 2, j), heartbeat(1, 3, j), append(1, 3, j, 4096));
        }
        a.transport.send(batch);
        await turn();
        const s3 = a.transport.peerStats(3)!;
        assert.ok(s3.message.queuedMessages <= 4096 && s3.app.queuedBytes <= 16 * 1024 * 1024);
      }
      await until(() => b.received.length === sent, 'peer 2 got everything');
      inOrder(b.received);
      const s3 = a.transport.peerStats(3)!;
      assert.ok(s3.droppedMessages >= 2 * sent - 200, `dropped ${s3.droppedMessages}`);
      assert.ok(a.unreachable.includes(3));
      assert.ok(!a.unreachable.includes(2));
      assert.equal(a.transport.peerStats(2)!.droppedMessages, 0);
      // Reported once per turn at most, not once per message.
      assert.ok(a.unreachable.length < sent / 10, `${a.unreachable.length} reports`);
    } finally {
      await closeAll(ms);
    }
  });

  test('a peer that stops reading: bounded queue and socket, drops reported, others unaffected', async () => {
    const stuck = await stuckPeerStart();
    const ms = await clusterStart(2, { queueBytesMax: 4 * 1024 * 1024 });
    try {
      const [a, b] = [ms[0]!, ms[1]!];
      a.transport.addPeer(9, memberIdOf(9), [stuck.url]);
      await until(() => allConnected(ms) && a.transport.peerStats(9)!.app.state === 'active',
        'connected');
      let sentToB = 0;
      for (let round = 0; round < 200; round++) {
        const batch: Message[] = [];
        for (let i = 0; i < 20; i++) batch.push(append(1, 9, round * 20 + i, 64 * 1024));
        batch.push(heartbeat(1, 2, sentToB++));
        a.transport.send(batch);
        await turn();
        const s = a.transport.peerStats(9)!;
        assert.ok(s.app.queuedBytes <= 4 * 1024 * 1024, `queued ${s.app.queuedBytes}`);
      }
      await until(() => b.received.length === sentToB, 'peer 2 got everything');
      const s = a.transport.peerStats(9)!;
      // 200 × 20 × 64 KiB = 250 MiB offered; the kernel, the socket (4 MiB) and the queue
      // (4 MiB) hold a small part; the rest was dropped and reported.
      assert.ok(s.app.droppedQueueFull > 2000, `dropped ${s.app.droppedQueueFull}`);
      assert.ok(a.unreachable.includes(9));
      assert.equal(a.transport.peerStats(2)!.droppedMessages, 0);
    } finally {
      await closeAll(ms);
      await stuckPeerStop(stuck);
    }
  });

  test('a peer restarts on the same address: reconnect, and delivery resumes', async () => {
    const ms: (Member | null)[] = await clusterStart(2);
    try {
      await until(() => allConnected(ms as Member[]), 'connected');
      const a = ms[0]!;
      const port = ms[1]!.transport.address().port;
      a.transport.send([heartbeat(1, 2, 0)]);
      await until(() => ms[1]!.received.length === 1, 'first message');
      await ms[1]!.transport.close();
      ms[1] = null;
      await until(() => a.transport.peerStats(2)!.message.state === 'backoff', 'seen down');
      for (let i = 1; i <= 20; i++) {
        a.transport.send([heartbeat(1, 2, i)]);
        await turn();
      }
      assert.ok(a.transport.peerStats(2)!.droppedMessages > 0);
      const b2 = await memberStart(2, {}, port);
      ms[1] = b2;
      b2.transport.addPeer(1, memberIdOf(1), [a.url]);
      let seq = 100;
      await until(() => {
        a.transport.send([heartbeat(1, 2, seq++)]);
        return b2.received.length >= 5;
      }, 'delivery resumed');
      inOrder(b2.received);
      assert.ok(a.transport.peerStats(2)!.message.connects >= 2);
      await until(() => connected(b2, a), 'restarted member reaches 1 too');
      b2.transport.send([heartbeat(2, 1, 1)]);
      await until(() => a.received.length === 1, 'message from the restarted member');
    } finally {
      await closeAll(ms);
    }
  });

  test('a member of another cluster is refused; the reason is logged and counted on both sides', async () => {
    const ms = await clusterStart(1);
    const other = await memberStart(2, { clusterId: 0xbadn });
    try {
      const a = ms[0]!;
      a.transport.addPeer(2, memberIdOf(2), [other.url]);
      other.transport.addPeer(1, memberIdOf(1), [a.url]);
      const refused: [number, RefuseReason][] = [];
      other.transport.onRefused = (id, reason) => refused.push([id, reason]);
      await until(() => (a.transport.stats().inboundRefused['cluster-id-mismatch'] ?? 0) >= 2 &&
        refused.length >= 2, 'refusals');
      assert.deepEqual(refused[0], [1, RefuseReason.ClusterIdMismatch]);
      const logA = a.logger.records.find((r) => r.msg === 'refused peer connection')!;
      assert.equal(logA.level, 'warn');
      assert.equal(logA.fields['reason'], 'cluster-id-mismatch');
      assert.match(String(logA.fields['detail']),
        /cluster ID mismatch: local 5ca1ab1e00000001, remote bad/);
      const logO = other.logger.records.find((r) => r.msg === 'peer refused connection')!;
      assert.equal(logO.fields['reason'], 'cluster-id-mismatch');
      assert.ok(other.transport.peerStats(1)!.message.refusals >= 1);
      other.transport.send([heartbeat(2, 1, 1)]);
      await turn();
      assert.equal(a.received.length, 0);
      assert.equal(a.transport.peerStats(2)!.message.state === 'active', false);
    } finally {
      await closeAll([...ms, other]);
    }
  });

  test('wrong receiver, unknown sender and a removed member are refused with their reasons', async () => {
    const ms = await clusterStart(3);
    try {
      await until(() => allConnected(ms), 'connected');
      const [a, b, c] = [ms[0]!, ms[1]!, ms[2]!];
      // 1 thinks member 2 lives at 3's address: 3 refuses (it is not member 2).
      a.transport.updatePeer(2, [c.url]);
      a.transport.removePeer(2);
      a.transport.addPeer(2, memberIdOf(2), [c.url]);
      const refusedBy = (m: Member, reason: string): number =>
        m.transport.stats().inboundRefused[reason] ?? 0;
      await until(() => refusedBy(c, 'wrong-member') >= 1, 'wrong member');
      // 3 forgets member 2, which is still connected to 3: 2's connections go, and its redials
      // are refused as from a removed member; 2 is told so.
      const refused: RefuseReason[] = [];
      b.transport.onRefused = (_id, reason) => refused.push(reason);
      assert.equal(c.transport.removePeer(2), true);
      assert.equal(c.transport.removePeer(2), false);
      await until(() => refused.includes(RefuseReason.MemberRemoved), 'removed member refused');
      const c2 = c.transport.stats();
      assert.ok((c2.inboundRefused['member-removed'] ?? 0) >= 1);
      assert.equal(c2.peers.length, 1);
      // An unknown sender (3 does not know 2, nor removed it: a fresh transport) is refused too.
      const d = await memberStart(4);
      try {
        d.transport.addPeer(1, memberIdOf(1), [a.url]);
        await until(() => refusedBy(a, 'unknown-member') >= 1, 'unknown');
      } finally {
        await d.transport.close();
      }
    } finally {
      await closeAll(ms);
    }
  });

  test('a peer with several URLs is dialled at the first one that works', async () => {
    const ms = await clusterStart(1);
    const b = await memberStart(2);
    try {
      const a = ms[0]!;
      // Port 9 (discard) is closed on the test box: the dial fails and the next URL is used.
      a.transport.addPeer(2, memberIdOf(2), ['http://127.0.0.1:9', b.url]);
      b.transport.addPeer(1, memberIdOf(1), [a.url]);
      await until(() => connected(a, b), 'connected through the second URL');
      a.transport.send([heartbeat(1, 2, 1)]);
      await until(() => b.received.length === 1, 'delivered');
      const s = a.transport.peerStats(2)!;
      assert.ok(s.message.dialFailures >= 1);
      assert.deepEqual(s.urls, ['http://127.0.0.1:9', b.url]);
    } finally {
      await closeAll([...ms, b]);
    }
  });

  test('a message over the size limit is dropped and reported, and the stream carries on', async () => {
    const ms = await clusterStart(2, { messageBytesMax: 64 * 1024 });
    try {
      await until(() => allConnected(ms), 'connected');
      const [a, b] = [ms[0]!, ms[1]!];
      a.transport.send([append(1, 2, 1, 100 * 1024), append(1, 2, 2, 1000)]);
      await until(() => b.received.length === 1, 'the small one');
      assert.equal(b.received[0]!.index, 2);
      assert.equal(a.transport.peerStats(2)!.droppedTooLarge, 1);
      await until(() => a.unreachable.includes(2), 'reported');
    } finally {
      await closeAll(ms);
    }
  });

  test('pings measure RTT; activeSince is set while connected and cleared when not', async () => {
    const ms = await clusterStart(2);
    try {
      await until(() => allConnected(ms), 'connected');
      const a = ms[0]!;
      await until(() => a.transport.peerStats(2)!.rttMs > 0, 'an RTT sample');
      const since = a.transport.activeSince(2);
      assert.ok(since > 0 && since <= performance.timeOrigin + performance.now());
      await ms[1]!.transport.close();
      await until(() => a.transport.activeSince(2) === 0, 'inactive');
      assert.equal(a.transport.peerStats(2)!.active, false);
    } finally {
      await closeAll(ms);
    }
  });

  test('garbage on the peer port is reset and counted, never delivered', async () => {
    const ms = await clusterStart(1);
    try {
      const a = ms[0]!;
      const socket = net.connect(a.transport.address().port, '127.0.0.1');
      socket.on('error', () => undefined);
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write(Buffer.from('GET /raft/stream/message HTTP/1.1\r\nHost: x\r\n\r\n'));
      await new Promise((resolve) => socket.once('close', resolve));
      assert.equal(a.transport.stats().inboundFrameErrors, 1);
      assert.equal(a.received.length, 0);
      assert.equal(ConnectionKind.Message, 1);
    } finally {
      await closeAll(ms);
    }
  });

  test('close() leaves no socket and no timer; send after close is a no-op', async () => {
    const ms = await clusterStart(3);
    await until(() => allConnected(ms), 'connected');
    ms[0]!.transport.send([heartbeat(1, 2, 1)]);
    await closeAll(ms);
    for (const m of ms) assert.equal(m.transport.stats().socketsOpen, 0);
    ms[0]!.transport.send([heartbeat(1, 2, 2)]);
    await ms[0]!.transport.close();
    const handles = process.getActiveResourcesInfo();
    assert.equal(handles.filter((r) => r.startsWith('TCP')).length, 0, handles.join(','));
  });
});
