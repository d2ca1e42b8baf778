// Goal: through the TCP fault proxy other tests put between members, a peer stream that lost
// bytes (blackhole, then unblackhole WITHOUT the Partitioner's reset of gapped connections) is
// detected by the frame CRC, reset and redialled, and delivery resumes; no message is ever
// delivered damaged or out of order. Also a two-way partition healed the Partitioner's way.
// Method: 2 in-process members whose dial tables route every connection through a Partitioner
// link (the test-only dial table, as member processes get it in CONCORD_TEST_PEER_DIAL); member
// 1 streams appends large enough that the proxy's reads cut frames, plus heartbeats.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Message, MessageType } from '../../src/raft/types';
import { DialAddress, dialTableFromRoutes } from '../../src/transport/dial';
import { Partitioner } from '../helpers/fault_proxy';
import {
  Member, append, closeAll, connected, heartbeat, memberIdOf, memberStart, turn, until,
  handlesLeft,
} from './helpers';

const appendBytes = 24 * 1024;

after(async () => {
  const left = await handlesLeft();
  assert.deepEqual(left, [], 'a socket or timer left behind');
});

/** Every delivered message is whole and in order per stream. */
function checkIntact(received: readonly Message[]): void {
  let lastApp = -1;
  let lastBeat = -1;
  for (const m of received) {
    if (m.type === MessageType.App) {
      assert.ok(m.index > lastApp, `append ${m.index} after ${lastApp}`);
      lastApp = m.index;
      const data = m.entries[0]!.data;
      assert.equal(data.length, appendBytes);
      assert.ok(data.every((b) => b === (m.index & 0xff)), `append ${m.index} damaged`);
    } else {
      assert.equal(m.type, MessageType.Heartbeat);
      assert.ok(m.commit > lastBeat, `heartbeat ${m.commit} after ${lastBeat}`);
      lastBeat = m.commit;
      assert.ok(m.context.every((b) => b === (m.commit & 0xff)), `heartbeat ${m.commit} damaged`);
    }
  }
}

async function start(resetGappedOnHeal: boolean): Promise<{ ms: Member[]; p: Partitioner }> {
  // The tables are filled once the proxies exist (the transport reads them at every dial).
  const tables = [new Map<string, DialAddress>(), new Map<string, DialAddress>()];
  const ms: Member[] = [];
  let p: Partitioner | null = null;
  try {
    // A long read timeout: the lost bytes must be found by the CRC, not by a timeout.
    const opts = { readTimeoutMs: 60_000, pingIntervalMs: 200 };
    ms.push(await memberStart(1, { ...opts, dialTable: tables[0] }));
    ms.push(await memberStart(2, { ...opts, dialTable: tables[1] }));
    p = await Partitioner.start(ms.map((m) => ({ port: m.transport.address().port })),
      { resetGappedOnHeal, seed: 3 });
    for (let i = 0; i < 2; i++) {
      for (const [k, v] of dialTableFromRoutes(p.routes(i))) tables[i]!.set(k, v);
    }
    // Peers are added with their REAL urls; the table reroutes the dials.
    ms[0]!.transport.addPeer(2, memberIdOf(2), [ms[1]!.url]);
    ms[1]!.transport.addPeer(1, memberIdOf(1), [ms[0]!.url]);
    await until(() => connected(ms[0]!, ms[1]!) && connected(ms[1]!, ms[0]!), 'connected');
    assert.ok(p.link(0, 1).stats().connectionsAccepted >= 2, 'dials went through the proxy');
    return { ms, p };
  } catch (err) {
    await closeAll(ms);
    if (p !== null) await p.stop();
    throw err;
  }
}

/** Member 1 sends one turn's worth: `appends` appends (in one write) and 4 heartbeats. */
function sendTurn(a: Member, seq: { app: number; beat: number }, appends = 8): void {
  const batch: Message[] = [];
  for (let i = 0; i < appends; i++) batch.push(append(1, 2, seq.app++, appendBytes));
  for (let i = 0; i < 4; i++) batch.push(heartbeat(1, 2, seq.beat++));
  a.transport.send(batch);
}

describe('PeerTransport through the fault proxy', () => {
  test('lost bytes (blackhole, unblackhole, no reset) are detected by the frame CRC; delivery resumes', async () => {
    const { ms, p } = await start(false);
    try {
      const [a, b] = [ms[0]!, ms[1]!];
      const seq = { app: 0, beat: 0 };
      let detected = 0;
      for (let cycle = 0; cycle < 5 && detected === 0; cycle++) {
        for (let i = 0; i < 10; i++) { sendTurn(a, seq); await turn(); }
        await until(() => b.received.length > 0, 'traffic flows');
        // Cut while a 2.4 MB write is on its way through the proxy (which reads 64 KiB at a
        // time), so that the gap starts and ends inside frames: a gap of whole writes would be
        // whole frames, simply lost, which is no misparse either.
        sendTurn(a, seq, 100);
        await turn();
        await turn();
        p.oneWay(0, 1);
        sendTurn(a, seq, 100);
        await turn();
        await turn();
        p.heal(); // resetGappedOnHeal is off: the gapped connections stay up
        const mark = b.received.length;
        await until(() => {
          sendTurn(a, seq);
          return b.received.length > mark + 200 || b.transport.peerStats(1)!.inboundFrameErrors > 0;
        }, 'traffic after heal');
        detected = b.transport.peerStats(1)!.inboundFrameErrors;
      }
      assert.ok(detected >= 1, 'the gap was found by the CRC');
      assert.ok(b.logger.records.some((r) => r.msg === 'bad frame on peer connection; resetting it'
        && /crc/.test(String(r.fields['error']))), 'logged as a CRC error');
      // Redialled through the proxy, and delivery resumes.
      const mark = b.received.length;
      await until(() => {
        sendTurn(a, seq);
        return b.received.length > mark + 100 && connected(a, b);
      }, 'delivery resumes');
      assert.ok(a.transport.peerStats(2)!.connects >= 3, 'reconnected');
      assert.ok(p.link(0, 1).stats().tx.bytesDropped > 0);
      checkIntact(b.received);
      for (const link of p.allLinks()) assert.equal(link.stats().internalErrors, 0);
    } finally {
      await closeAll(ms);
      await p.stop();
    }
  });

  test('a two-way partition healed with the Partitioner\'s reset: both directions resume', async () => {
    const { ms, p } = await start(true);
    try {
      const [a, b] = [ms[0]!, ms[1]!];
      const seq = { app: 0, beat: 0 };
      p.isolate(0);
      for (let i = 0; i < 10; i++) { sendTurn(a, seq); await turn(); }
      p.heal();
      const markB = b.received.length;
      await until(() => {
        sendTurn(a, seq);
        b.transport.send([heartbeat(2, 1, seq.beat)]);
        return b.received.length > markB + 50 && a.received.length > 0;
      }, 'both directions after heal');
      checkIntact(b.received);
      for (const link of p.allLinks()) assert.equal(link.stats().internalErrors, 0);
    } finally {
      await closeAll(ms);
      await p.stop();
    }
  });
});
