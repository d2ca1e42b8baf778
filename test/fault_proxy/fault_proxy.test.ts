// Goal: show that test/helpers/fault_proxy.ts forwards bytes faithfully and injects each fault
// exactly in the direction asked, so that cluster fault tests can trust it. Method: real loopback
// sockets in this process — an echo server and a sink server (which records what it receives and
// can write back) behind a FaultProxy, seeded random payloads, and the proxy's own counters;
// every wait is for an event or a counter (10 s deadline), and the only timed assertions are
// lower bounds on injected delays (delay 300 ms → observed ≥ 290 ms). A child process checks
// that stop() leaves no handle keeping a process alive. Ports are chosen by the OS.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { test, type TestContext } from 'node:test';
import { Prng } from '../../src/util/prng';
import {
  FaultProxy, Partitioner, type FaultProxyOptions, type FaultProxyStats,
} from '../helpers/fault_proxy';

const waitMsMax = 10_000;
const pollMs = 5;

// ---- servers and clients ----

interface ServerConn {
  socket: net.Socket;
  chunks: Buffer[];
  bytes: number;
  ended: boolean;
  dataAtMs: number[];
}

interface TestServer {
  port: number;
  conns: ServerConn[];
  bytesReceived(): number;
  close(): Promise<void>;
}

/** 'echo' writes back what it reads (and its FIN); 'sink' only records. */
function startServer(t: TestContext, mode: 'echo' | 'sink'): Promise<TestServer> {
  const conns: ServerConn[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const conn: ServerConn = { socket, chunks: [], bytes: 0, ended: false, dataAtMs: [] };
    conns.push(conn);
    socket.setNoDelay(true);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      conn.chunks.push(chunk);
      conn.bytes += chunk.length;
      conn.dataAtMs.push(performance.now());
      if (mode === 'echo' && !socket.write(chunk)) socket.pause();
    });
    socket.on('drain', () => socket.resume());
    socket.on('end', () => {
      conn.ended = true;
      if (mode === 'echo') socket.end();
    });
  });
  const close = (): Promise<void> => new Promise<void>((resolve) => {
    for (const conn of conns) conn.socket.destroy();
    server.close(() => resolve());
  });
  t.after(close);
  return new Promise<TestServer>((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.address() as net.AddressInfo;
      resolve({
        port: address.port,
        conns,
        bytesReceived: () => conns.reduce((sum, conn) => sum + conn.bytes, 0),
        close,
      });
    });
  });
}

class Client {
  readonly socket: net.Socket;
  readonly chunks: Buffer[] = [];
  bytes = 0;
  ended = false;
  closed = false;
  errorCode: string | null = null;
  readonly dataAtMs: number[] = [];

  constructor(port: number) {
    this.socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.bytes += chunk.length;
      this.dataAtMs.push(performance.now());
    });
    this.socket.on('end', () => {
      this.ended = true;
    });
    this.socket.on('error', (err: NodeJS.ErrnoException) => {
      this.errorCode ??= err.code ?? 'unknown';
    });
    this.socket.on('close', () => {
      this.closed = true;
    });
  }

  static async open(t: TestContext, port: number): Promise<Client> {
    const client = Client.start(t, port);
    await new Promise<void>((resolve, reject) => {
      client.socket.once('connect', resolve);
      client.socket.once('error', reject);
    });
    return client;
  }

  /** Does not wait for 'connect' (for connections the proxy refuses). */
  static start(t: TestContext, port: number): Client {
    const client = new Client(port);
    t.after(() => {
      client.socket.destroy();
    });
    return client;
  }

  received(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

async function waitUntil(cond: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + waitMsMax;
  while (!cond()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise<void>((resolve) => setTimeout(resolve, pollMs));
  }
}

async function startProxy(t: TestContext, options: FaultProxyOptions): Promise<FaultProxy> {
  const proxy = await FaultProxy.start(options);
  t.after(() => proxy.stop());
  return proxy;
}

function randomBytes(prng: Prng, size: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) {
    const word = prng.nextU32();
    for (let b = 0; b < 4 && i + b < size; b++) bytes[i + b] = (word >>> (b * 8)) & 0xff;
  }
  return bytes;
}

/** Writes `data` in random chunk sizes (1 B … 64 KiB), waiting for 'drain' when asked to. */
async function writeChunked(socket: net.Socket, data: Buffer, prng: Prng): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const size = Math.min(data.length - offset, 1 + prng.int(65536));
    const ok = socket.write(data.subarray(offset, offset + size));
    offset += size;
    if (!ok) await new Promise<void>((resolve) => socket.once('drain', resolve));
  }
}

/** Every byte read is accounted for exactly once; no proxy bug was caught. */
function checkStats(stats: FaultProxyStats): void {
  assert.equal(stats.internalErrors, 0, `internal error: ${String(stats.internalErrorFirst)}`);
  for (const dir of [stats.tx, stats.rx]) {
    const accounted = dir.bytesForwarded + dir.bytesDropped + dir.bytesHeld + dir.bytesDelayed +
      dir.bytesDiscarded;
    assert.equal(dir.bytesRead, accounted, 'bytesRead = forwarded + dropped + queued + discarded');
    assert.ok(dir.bytesOverflowed <= dir.bytesDropped, 'overflowed ⊆ dropped');
  }
}

// ---- tests ----

test('bytes pass unchanged and in order over several connections; FIN is forwarded', async (t) => {
  const echo = await startServer(t, 'echo');
  const proxy = await startProxy(t, { targetPort: echo.port });
  const prng = new Prng(0x5eed);
  const connectionCount = 4;
  const payloadBytes = 3 * 1024 * 1024;
  const payloads = Array.from({ length: connectionCount }, () => randomBytes(prng, payloadBytes));
  const clients = await Promise.all(payloads.map(() => Client.open(t, proxy.port)));
  await Promise.all(clients.map(async (client, i) => {
    await writeChunked(client.socket, payloads[i]!, prng);
    client.socket.end(); // half-close: the echo server sees FIN, echoes the rest, then ends
  }));
  await waitUntil(() => clients.every((client) => client.ended), 'every echo FIN');
  for (let i = 0; i < connectionCount; i++) {
    assert.ok(clients[i]!.received().equals(payloads[i]!), `connection ${i} echoed unchanged`);
  }
  await waitUntil(() => proxy.stats().connectionsOpen === 0, 'connections closed');
  const stats = proxy.stats();
  checkStats(stats);
  assert.equal(stats.connectionsAccepted, connectionCount);
  assert.equal(stats.tx.bytesForwarded, connectionCount * payloadBytes);
  assert.equal(stats.rx.bytesForwarded, connectionCount * payloadBytes);
  assert.equal(stats.tx.bytesDropped + stats.rx.bytesDropped, 0);
  assert.equal(stats.socketErrors + stats.dialErrors, 0);
});

test('a reader that stops reading pauses the target; the proxy does not buffer it', async (t) => {
  const sink = await startServer(t, 'sink');
  const proxy = await startProxy(t, { targetPort: sink.port });
  const client = await Client.open(t, proxy.port);
  client.socket.pause();
  await waitUntil(() => sink.conns.length === 1, 'sink connection');
  const payload = randomBytes(new Prng(7), 32 * 1024 * 1024);
  sink.conns[0]!.socket.write(payload);
  // Wait until the proxy has stopped reading: bytesRead unchanged for 300 ms.
  let last = -1;
  let stableSinceMs = performance.now();
  await waitUntil(() => {
    const read = proxy.stats().rx.bytesRead;
    if (read !== last) {
      last = read;
      stableSinceMs = performance.now();
    }
    return read > 0 && performance.now() - stableSinceMs >= 300;
  }, 'rx reads to stop');
  assert.ok(last < 20 * 1024 * 1024, `proxy read ${last} B of 32 MiB for a paused reader`);
  client.socket.resume();
  await waitUntil(() => client.bytes === payload.length, 'all bytes after resume');
  assert.ok(client.received().equals(payload));
  checkStats(proxy.stats());
});

test('delay adds latency in the chosen direction only', async (t) => {
  const sink = await startServer(t, 'sink');
  const proxy = await startProxy(t, { targetPort: sink.port });
  const client = await Client.open(t, proxy.port);
  await waitUntil(() => sink.conns.length === 1, 'sink connection');
  const server = sink.conns[0]!;

  proxy.delay('tx', 300);
  const txSentAtMs = performance.now();
  client.socket.write('a');
  server.socket.write('b');
  await waitUntil(() => server.bytes === 1 && client.bytes === 1, 'a and b');
  const txLatencyMs = server.dataAtMs[0]! - txSentAtMs;
  assert.ok(txLatencyMs >= 290, `tx latency ${txLatencyMs} ms under delay 300`);
  assert.ok(client.dataAtMs[0]! < server.dataAtMs[0]!, 'rx (b) was not delayed: it overtook tx');

  proxy.undelay('tx');
  proxy.delay('rx', 300);
  const rxSentAtMs = performance.now();
  server.socket.write('c');
  client.socket.write('d');
  await waitUntil(() => server.bytes === 2 && client.bytes === 2, 'c and d');
  const rxLatencyMs = client.dataAtMs[1]! - rxSentAtMs;
  assert.ok(rxLatencyMs >= 290, `rx latency ${rxLatencyMs} ms under delay 300`);
  assert.ok(server.dataAtMs[1]! < client.dataAtMs[1]!, 'tx (d) was not delayed: it overtook rx');
  assert.equal(client.received().toString(), 'bc');
  assert.equal(Buffer.concat(server.chunks).toString(), 'ad');
  assert.deepEqual(proxy.faults().rx, { delayMs: 300, jitterMs: 0, blackholed: false,
    paused: false });
  checkStats(proxy.stats());
});

test('jittered delay keeps byte order; delayed bytes are bounded by pausing', async (t) => {
  const echo = await startServer(t, 'echo');
  const delayedBytesMax = 64 * 1024;
  const proxy = await startProxy(t, { targetPort: echo.port, seed: 42, delayedBytesMax });
  proxy.delay('both', 10, 10);
  const prng = new Prng(99);
  const payload = randomBytes(prng, 4 * 1024 * 1024);
  const client = await Client.open(t, proxy.port);
  let delayedMax = 0;
  const sampler = setInterval(() => {
    const stats = proxy.stats();
    delayedMax = Math.max(delayedMax, stats.tx.bytesDelayed, stats.rx.bytesDelayed);
  }, 1);
  t.after(() => clearInterval(sampler));
  await writeChunked(client.socket, payload, prng);
  client.socket.end();
  await waitUntil(() => client.ended, 'echo FIN');
  clearInterval(sampler);
  assert.ok(client.received().equals(payload), 'echoed unchanged through jitter');
  // One read (≤ 64 KiB) can land after the source is paused.
  assert.ok(delayedMax <= delayedBytesMax + 65536, `delayed bytes peaked at ${delayedMax}`);
  assert.ok(delayedMax > 0, 'the sampler saw delayed bytes');
  checkStats(proxy.stats());
});

test('blackhole drops one direction only while the other keeps flowing', async (t) => {
  const sink = await startServer(t, 'sink');
  const proxy = await startProxy(t, { targetPort: sink.port });
  const client = await Client.open(t, proxy.port);
  await waitUntil(() => sink.conns.length === 1, 'sink connection');
  const server = sink.conns[0]!;

  proxy.blackhole('tx');
  client.socket.write(Buffer.alloc(1000, 'A'));
  await waitUntil(() => proxy.stats().tx.bytesDropped === 1000, 'tx drop');
  server.socket.write('B');
  await waitUntil(() => client.bytes === 1, 'rx still flowing');
  assert.equal(server.bytes, 0, 'nothing crossed the tx blackhole');
  proxy.unblackhole('tx');
  client.socket.write('C');
  await waitUntil(() => server.bytes === 1, 'tx after unblackhole');
  assert.equal(Buffer.concat(server.chunks).toString(), 'C', 'the blackholed bytes are gone');

  proxy.blackhole('rx');
  server.socket.write(Buffer.alloc(500, 'D'));
  await waitUntil(() => proxy.stats().rx.bytesDropped === 500, 'rx drop');
  client.socket.write('E');
  await waitUntil(() => server.bytes === 2, 'tx still flowing');
  proxy.unblackhole('rx');
  server.socket.write('F');
  await waitUntil(() => client.bytes === 2, 'rx after unblackhole');
  assert.equal(client.received().toString(), 'BF');

  proxy.blackhole('both'); // two-way partition: the connection stays open, nothing crosses
  client.socket.write('G');
  server.socket.write('H');
  await waitUntil(() => proxy.stats().tx.bytesDropped === 1001, 'tx drop (two-way)');
  await waitUntil(() => proxy.stats().rx.bytesDropped === 501, 'rx drop (two-way)');
  const stats = proxy.stats();
  assert.equal(stats.connectionsOpen, 1);
  assert.equal(client.closed, false);
  assert.equal(stats.tx.bytesForwarded, 2); // C, E
  assert.equal(stats.rx.bytesForwarded, 2); // B, F
  checkStats(stats);
});

test('resetGappedOnHeal: lifting the blackhole resets connections that lost bytes', async (t) => {
  const echo = await startServer(t, 'echo');
  const proxy = await startProxy(t, { targetPort: echo.port, resetGappedOnHeal: true });
  const gapped = await Client.open(t, proxy.port);
  const clean = await Client.open(t, proxy.port);
  await waitUntil(() => proxy.stats().connectionsOpen === 2, 'two connections');
  proxy.blackhole('both');
  gapped.socket.write('lost');
  await waitUntil(() => proxy.stats().tx.bytesDropped === 4, 'drop');
  proxy.unblackhole('tx');
  assert.equal(proxy.stats().connectionsOpen, 2, 'rx still blackholed: nothing reset yet');
  proxy.unblackhole('rx');
  await waitUntil(() => gapped.closed, 'gapped connection reset');
  assert.equal(gapped.errorCode, 'ECONNRESET');
  clean.socket.write('ok');
  await waitUntil(() => clean.bytes === 2, 'clean connection still echoes');
  assert.equal(proxy.stats().connectionsDropped, 1);
  checkStats(proxy.stats());
});

test('pause holds bytes (and FIN) and resume delivers them all in order', async (t) => {
  const sink = await startServer(t, 'sink');
  const proxy = await startProxy(t, { targetPort: sink.port });
  const client = await Client.open(t, proxy.port);
  await waitUntil(() => sink.conns.length === 1, 'sink connection');
  const server = sink.conns[0]!;
  const prng = new Prng(3);
  const payload = randomBytes(prng, 1024 * 1024);

  proxy.pause('tx');
  await writeChunked(client.socket, payload, prng);
  client.socket.end();
  await waitUntil(() => proxy.stats().tx.bytesHeld === payload.length, 'all bytes held');
  assert.equal(server.bytes, 0);
  assert.equal(server.ended, false, 'FIN held behind the bytes');
  proxy.resume('tx');
  await waitUntil(() => server.ended, 'FIN after resume');
  assert.ok(Buffer.concat(server.chunks).equals(payload), 'held bytes delivered in order');

  proxy.pause('rx'); // the other direction, on the same (half-closed) connection
  server.socket.write('held back');
  await waitUntil(() => proxy.stats().rx.bytesHeld === 9, 'rx held');
  assert.equal(client.bytes, 0);
  proxy.resume('rx');
  await waitUntil(() => client.bytes === 9, 'rx after resume');
  assert.equal(client.received().toString(), 'held back');

  proxy.pause('rx'); // a FIN alone in a paused direction is held too
  server.socket.end();
  await waitUntil(() => proxy.stats().rx.endsRead === 1, 'rx FIN read');
  assert.equal(client.ended, false);
  assert.equal(proxy.stats().rx.endsForwarded, 0);
  proxy.resume('rx');
  await waitUntil(() => client.ended, 'rx FIN after resume');
  const stats = proxy.stats();
  assert.equal(stats.tx.endsForwarded, 1);
  assert.equal(stats.rx.endsForwarded, 1);
  assert.equal(stats.tx.bytesHeld + stats.rx.bytesHeld, 0);
  checkStats(stats);
});

test('pause beyond heldBytesMax drops the tail and counts it', async (t) => {
  const sink = await startServer(t, 'sink');
  const heldBytesMax = 64 * 1024;
  const proxy = await startProxy(t, { targetPort: sink.port, heldBytesMax });
  const client = await Client.open(t, proxy.port);
  await waitUntil(() => sink.conns.length === 1, 'sink connection');
  const payload = randomBytes(new Prng(5), 256 * 1024);
  // 60 KiB fits, the next 16 KiB does not, and then 1 KiB that would fit is dropped too: once
  // a paused stream has lost bytes, everything after them is dropped until resume (tail drop,
  // so what is delivered is a prefix). Each write is read before the next one is sent.
  const steps = [60 * 1024, 16 * 1024, 1024];
  let offset = 0;
  proxy.pause('tx');
  for (const size of steps) {
    client.socket.write(payload.subarray(offset, offset + size));
    offset += size;
    await waitUntil(() => proxy.stats().tx.bytesRead === offset, 'step read');
  }
  let stats = proxy.stats();
  assert.equal(stats.tx.bytesHeld, steps[0]);
  assert.equal(stats.tx.bytesOverflowed, steps[1]! + steps[2]!);
  for (; offset < payload.length; offset += 16 * 1024) {
    client.socket.write(payload.subarray(offset, offset + 16 * 1024));
  }
  await waitUntil(() => proxy.stats().tx.bytesRead === payload.length, 'all bytes read');
  stats = proxy.stats();
  assert.ok(stats.tx.bytesHeld <= heldBytesMax, `held ${stats.tx.bytesHeld}`);
  assert.equal(stats.tx.bytesOverflowed, payload.length - stats.tx.bytesHeld);
  const held = stats.tx.bytesHeld;
  proxy.resume('tx');
  await waitUntil(() => sink.conns[0]!.bytes === held, 'held bytes delivered');
  assert.ok(Buffer.concat(sink.conns[0]!.chunks).equals(payload.subarray(0, held)),
    'what was held is a prefix of the stream');
  stats = proxy.stats();
  assert.equal(stats.tx.bytesForwarded, held);
  checkStats(stats);
});

test('reset closes live connections with RST; new connections work', async (t) => {
  const echo = await startServer(t, 'echo');
  const proxy = await startProxy(t, { targetPort: echo.port });
  const clients = await Promise.all([0, 1, 2].map(() => Client.open(t, proxy.port)));
  for (const client of clients) client.socket.write('x');
  await waitUntil(() => clients.every((client) => client.bytes === 1), 'echo on each');
  proxy.pause('rx');
  clients[0]!.socket.write('held then discarded');
  await waitUntil(() => proxy.stats().rx.bytesHeld > 0, 'held bytes');
  assert.equal(proxy.reset(), 3);
  await waitUntil(() => clients.every((client) => client.closed), 'clients closed');
  for (const client of clients) assert.equal(client.errorCode, 'ECONNRESET');
  await waitUntil(() => echo.conns.every((conn) => conn.socket.destroyed), 'target side closed');
  let stats = proxy.stats();
  assert.equal(stats.connectionsOpen, 0);
  assert.equal(stats.connectionsDropped, 3);
  assert.ok(stats.rx.bytesDiscarded > 0, 'held bytes were discarded');
  proxy.resume('rx');
  const fresh = await Client.open(t, proxy.port);
  fresh.socket.write('again');
  await waitUntil(() => fresh.bytes === 5, 'new connection echoes');
  stats = proxy.stats();
  assert.equal(stats.connectionsOpen, 1);
  checkStats(stats);
});

test('refuse closes new connections; live ones keep working; a dead target resets', async (t) => {
  const echo = await startServer(t, 'echo');
  const proxy = await startProxy(t, { targetPort: echo.port });
  const live = await Client.open(t, proxy.port);
  proxy.refuse(true);
  const refused = Client.start(t, proxy.port);
  await waitUntil(() => refused.closed, 'refused connection closed');
  assert.equal(refused.bytes, 0);
  assert.ok(refused.errorCode !== null, 'refused connection saw an error');
  live.socket.write('live');
  await waitUntil(() => live.bytes === 4, 'live connection still echoes');
  proxy.refuse(false);
  const later = await Client.open(t, proxy.port);
  later.socket.write('later');
  await waitUntil(() => later.bytes === 5, 'accepted again');
  let stats = proxy.stats();
  assert.equal(stats.connectionsRefused, 1);
  assert.equal(stats.connectionsAccepted, 3);
  checkStats(stats);

  // A target that is not listening: the dial fails and the connecting side is reset.
  const closedPort = echo.port;
  await echo.close();
  const orphan = Client.start(t, proxy.port);
  await waitUntil(() => orphan.closed, 'connection to a dead target closed');
  stats = proxy.stats();
  assert.equal(stats.dialErrors, 1);
  assert.equal(proxy.targetAddress(), `127.0.0.1:${closedPort}`);
  checkStats(stats);
});

test('stop closes the listener and every socket, whatever state they are in', async (t) => {
  await waitUntil(() => tcpHandleCount() === 0, 'no TCP handle left by earlier tests');
  const echo = await startServer(t, 'echo');
  const proxy = await startProxy(t, { targetPort: echo.port }); // stopped by t.after on failure
  const clients = await Promise.all([0, 1, 2, 3].map(() => Client.open(t, proxy.port)));
  proxy.delay('tx', 60_000); // a timer armed with bytes behind it
  clients[0]!.socket.write('delayed');
  await waitUntil(() => proxy.stats().tx.bytesDelayed === 7, 'delayed bytes');
  proxy.undelay('tx');
  proxy.pause('rx');
  clients[1]!.socket.write('held');
  clients[2]!.socket.end(); // half-closed
  await waitUntil(() => proxy.stats().rx.bytesHeld === 4, 'held bytes');
  checkStats(proxy.stats());
  await proxy.stop();
  await proxy.stop(); // idempotent
  assert.equal(proxy.stats().connectionsOpen, 0);
  await waitUntil(() => clients.every((client) => client.closed), 'clients closed');
  const refusedAfterStop = Client.start(t, proxy.port);
  await waitUntil(() => refusedAfterStop.closed, 'listener closed');
  assert.equal(refusedAfterStop.errorCode, 'ECONNREFUSED');
  await echo.close();
  await waitUntil(() => tcpHandleCount() === 0, 'no TCP handle left');
});

test('a process that used a proxy exits by itself after stop()', async () => {
  const helper = path.join(__dirname, '..', 'helpers', 'fault_proxy.js');
  const script = `
    const net = require('node:net');
    const { FaultProxy } = require(${JSON.stringify(helper)});
    (async () => {
      const echo = net.createServer({ allowHalfOpen: true }, (s) => {
        s.on('error', () => {});
        s.pipe(s);
      });
      await new Promise((r) => echo.listen(0, '127.0.0.1', r));
      const proxy = await FaultProxy.start({ targetPort: echo.address().port });
      const sockets = [];
      for (let i = 0; i < 3; i++) {
        const s = net.connect({ port: proxy.port, host: '127.0.0.1' });
        s.on('error', () => {});
        await new Promise((r) => s.once('connect', r));
        sockets.push(s);
      }
      proxy.delay('both', 30000, 100);
      sockets[0].write('delayed');
      proxy.pause('rx');
      sockets[1].write('held');
      await new Promise((r) => setTimeout(r, 50));
      await proxy.stop();
      echo.close();
      for (const s of sockets) s.destroy();
      process.stdout.write('stopped\\n');
    })();
  `;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exitCode = await new Promise<number | null>((resolve) => {
    const killTimer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', (code) => {
      clearTimeout(killTimer);
      resolve(code);
    });
  });
  assert.equal(stdout, 'stopped\n', stderr);
  assert.equal(exitCode, 0, 'exited by itself (killed after 20 s would give null)');
});

test('Partitioner: isolate, partition, oneWay and heal on a 3-member mesh', async (t) => {
  const servers = await Promise.all([0, 1, 2].map(() => startServer(t, 'echo')));
  const partitioner = await Partitioner.start(servers.map((server) => ({ port: server.port })));
  t.after(() => partitioner.stop());
  assert.equal(partitioner.size, 3);
  assert.equal(partitioner.routes(0).get(`127.0.0.1:${servers[1]!.port}`),
    partitioner.peerAddress(0, 1));
  assert.equal(partitioner.peerUrl(2, 0), `http://${partitioner.peerAddress(2, 0)}`);
  assert.equal(partitioner.link(1, 2).targetAddress(), `127.0.0.1:${servers[2]!.port}`);

  const mesh = new Mesh(t, partitioner, servers);
  await mesh.connect();
  await mesh.expect('healthy', []);

  partitioner.isolate(0);
  assert.ok(partitioner.blocked(0, 2) && partitioner.blocked(2, 0) && !partitioner.blocked(1, 2));
  await mesh.expect('isolate(0)', [[0, 1], [1, 0], [0, 2], [2, 0]]);
  partitioner.heal();
  await mesh.connect(); // gapped connections were reset on heal: dial again, as members would
  await mesh.expect('healed after isolate', []);

  partitioner.partition([0, 1], [2]);
  await mesh.expect('partition([0,1],[2])', [[0, 2], [2, 0], [1, 2], [2, 1]]);
  partitioner.heal();
  await mesh.connect();
  await mesh.expect('healed after partition', []);

  partitioner.oneWay(0, 1);
  await mesh.expect('oneWay(0,1)', [[0, 1]]);
  partitioner.isolate(2); // cuts compose
  await mesh.expect('oneWay(0,1) + isolate(2)', [[0, 1], [0, 2], [2, 0], [1, 2], [2, 1]]);
  partitioner.heal();
  await mesh.connect();
  await mesh.expect('healed after oneWay', []);

  const added = await partitioner.addMember({ port: (await startServer(t, 'echo')).port });
  assert.equal(added, 3);
  assert.equal(partitioner.allLinks().length, 12);
  for (const proxy of partitioner.allLinks()) checkStats(proxy.stats());
});

/**
 * Member i talks to member j on a connection through link(i, j); j's echo server answers, so a
 * probe tells whether bytes i→j (tx) and j→i (the echo, rx) cross. Each outcome is a definite
 * event: the server got the token, or the link counted it dropped.
 */
class Mesh {
  private readonly t: TestContext;
  private readonly partitioner: Partitioner;
  private readonly servers: TestServer[];
  private clients: Client[][] = [];
  private tokenNext = 0;

  constructor(t: TestContext, partitioner: Partitioner, servers: TestServer[]) {
    this.t = t;
    this.partitioner = partitioner;
    this.servers = servers;
  }

  /** A fresh connection for every ordered pair. */
  async connect(): Promise<void> {
    for (const row of this.clients) for (const client of row) client.socket.destroy();
    const size = this.servers.length;
    this.clients = [];
    for (let from = 0; from < size; from++) {
      const row: Client[] = [];
      for (let to = 0; to < size; to++) {
        const port = from === to ? this.servers[to]!.port : this.partitioner.link(from, to).port;
        row.push(await Client.open(this.t, port));
      }
      this.clients.push(row);
    }
  }

  /** Every byte a→b crosses except for the pairs in `cut`. */
  async expect(what: string, cut: Array<[number, number]>): Promise<void> {
    const isCut = (a: number, b: number): boolean => cut.some(([x, y]) => x === a && y === b);
    const size = this.servers.length;
    for (let from = 0; from < size; from++) {
      for (let to = 0; to < size; to++) {
        if (from === to) continue;
        const result = await this.probe(from, to);
        const expected = { forward: !isCut(from, to), back: !isCut(from, to) && !isCut(to, from) };
        assert.deepEqual(result, expected, `${what}: probe ${from}→${to}`);
      }
    }
  }

  private async probe(from: number, to: number): Promise<{ forward: boolean; back: boolean }> {
    const link = this.partitioner.link(from, to);
    const client = this.clients[from]![to]!;
    const token = Buffer.from(`t${String(this.tokenNext++).padStart(7, '0')}`);
    const server = this.servers[to]!;
    const serverBefore = server.bytesReceived();
    const clientBefore = client.bytes;
    const before = link.stats();
    client.socket.write(token);
    await waitUntil(() => server.bytesReceived() > serverBefore ||
      link.stats().tx.bytesDropped > before.tx.bytesDropped, `probe ${from}→${to} forward`);
    const forward = server.bytesReceived() > serverBefore;
    if (!forward) return { forward, back: false };
    await waitUntil(() => client.bytes >= clientBefore + token.length ||
      link.stats().rx.bytesDropped > before.rx.bytesDropped, `probe ${from}→${to} back`);
    const back = client.bytes >= clientBefore + token.length;
    if (back) assert.ok(client.received().subarray(clientBefore).equals(token), 'echo intact');
    checkStats(link.stats());
    return { forward, back };
  }
}

function tcpHandleCount(): number {
  return process.getActiveResourcesInfo()
    .filter((name) => name === 'TCPSocketWrap' || name === 'TCPServerWrap').length;
}
