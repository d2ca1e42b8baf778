// Throwaway benchmark behind the peer transport's choice of connection (docs in
// src/transport/peer_transport.ts): plain TCP with our own frames vs node:http2 with the same
// frames inside one long-lived stream (etcd's rafthttp streams are long-lived HTTP bodies).
// Method: the receiver runs in a child process on loopback; (1) latency = ping-pong of one small
// frame, one in flight; (2) throughput = the sender writes 64 frames per event-loop turn in one
// write, honouring 'drain', for a fixed time; CPU per message is process CPU / messages on each
// side. Run: node dist/test/transport/tcp_vs_http2.bench.js [seconds] [framesPerWrite].
// Not part of npm test.
import { fork, ChildProcess } from 'node:child_process';
import http2 from 'node:http2';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { Duplex } from 'node:stream';

type Mode = 'tcp' | 'h2';
const headerBytes = 8;
/** Frames per write in the throughput run: argv[3], default 64 (1 = one write per message). */
const batchCount = Number(process.argv[3] ?? 64);

function frame(payloadBytes: number, tag: number): Buffer {
  const b = Buffer.alloc(headerBytes + payloadBytes);
  b.writeUInt32BE(payloadBytes, 0);
  b.writeUInt32BE(tag, 4);
  return b;
}

/** Counts frames in a byte stream; calls onFrame(tag) for each. */
class Counter {
  private pending: Buffer | null = null;
  constructor(private readonly onFrame: (tag: number) => void) {}
  push(chunk: Buffer): void {
    let buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    let off = 0;
    while (buf.length - off >= headerBytes) {
      const len = buf.readUInt32BE(off);
      if (buf.length - off < headerBytes + len) break;
      this.onFrame(buf.readUInt32BE(off + 4));
      off += headerBytes + len;
    }
    this.pending = off === buf.length ? null : buf.subarray(off);
    buf = Buffer.alloc(0);
  }
}

// ---- receiver (child) ----
function serve(mode: Mode): void {
  let frames = 0;
  let cpuStart = process.cpuUsage();
  const attach = (io: Duplex): void => {
    const pong = frame(32, 1);
    const counter = new Counter((tag) => {
      frames++;
      if (tag === 1) io.write(pong);
    });
    io.on('data', (c: Buffer) => counter.push(c));
    io.on('error', () => undefined);
  };
  process.on('message', (m: string) => {
    if (m === 'reset') { frames = 0; cpuStart = process.cpuUsage(); process.send!('ok'); }
    if (m === 'report') {
      const cpu = process.cpuUsage(cpuStart);
      process.send!(JSON.stringify({ frames, cpuUs: cpu.user + cpu.system }));
    }
  });
  const announce = (server: net.Server): void => {
    server.listen(0, '127.0.0.1', () => {
      process.send!(String((server.address() as net.AddressInfo).port));
    });
  };
  if (mode === 'tcp') {
    announce(net.createServer((s) => { s.setNoDelay(true); attach(s); }));
  } else {
    const server = http2.createServer();
    server.on('stream', (stream) => { stream.respond({ ':status': 200 }); attach(stream); });
    server.on('session', (s) => s.on('error', () => undefined));
    announce(server);
  }
}

// ---- sender (parent) ----
function ask(child: ChildProcess, msg: string): Promise<string> {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(String(m)));
    child.send(msg);
  });
}

async function open(mode: Mode, port: number): Promise<{ io: Duplex; close: () => void }> {
  if (mode === 'tcp') {
    const s = net.connect(port, '127.0.0.1');
    s.setNoDelay(true);
    await new Promise((r) => s.once('connect', r));
    return { io: s, close: () => s.destroy() };
  }
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const headers = { ':method': 'POST', ':path': '/raft/stream' };
  const stream = session.request(headers, { endStream: false });
  await new Promise((r) => stream.once('response', r));
  return { io: stream, close: () => { stream.destroy(); session.destroy(); } };
}

async function latency(io: Duplex, payloadBytes: number, n: number): Promise<number[]> {
  const ping = frame(payloadBytes, 1);
  const rtts: number[] = [];
  let resolve: () => void = () => undefined;
  const counter = new Counter(() => resolve());
  io.on('data', (c: Buffer) => counter.push(c));
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise<void>((r) => { resolve = r; io.write(ping); });
    rtts.push((performance.now() - t0) * 1000);
  }
  io.removeAllListeners('data');
  rtts.sort((a, b) => a - b);
  return [rtts[Math.floor(n * 0.5)]!, rtts[Math.floor(n * 0.99)]!];
}

async function throughput(io: Duplex, payloadBytes: number, seconds: number):
Promise<[number, number]> {
  const one = frame(payloadBytes, 0);
  const batch = Buffer.concat(new Array(batchCount).fill(one));
  let sent = 0;
  const cpu0 = process.cpuUsage();
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    const ok = io.write(batch);
    sent += batchCount;
    if (!ok) await new Promise((r) => io.once('drain', r));
    else await new Promise((r) => setImmediate(r));
  }
  const cpu = process.cpuUsage(cpu0);
  return [sent, cpu.user + cpu.system];
}

async function run(mode: Mode, seconds: number): Promise<void> {
  const child = fork(__filename, ['serve', mode, String(batchCount)], { stdio: 'inherit' });
  const port = Number(await new Promise<string>((r) => child.once('message', (m) => r(String(m)))));
  const { io, close } = await open(mode, port);
  await latency(io, 64, 2000); // warm-up
  for (const bytes of [64, 300]) {
    const [p50, p99] = await latency(io, bytes, 10000);
    await ask(child, 'reset');
    const t0 = performance.now();
    const [sent, cpuSender] = await throughput(io, bytes, seconds);
    await new Promise((r) => setTimeout(r, 300));
    const report = JSON.parse(await ask(child, 'report')) as { frames: number; cpuUs: number };
    const elapsed = (performance.now() - t0 - 300) / 1000;
    console.log(JSON.stringify({
      mode, framesPerWrite: batchCount, payloadBytes: bytes,
      rttUsP50: +p50.toFixed(1), rttUsP99: +p99.toFixed(1),
      msgsPerSec: Math.round(report.frames / elapsed), sent,
      senderUsPerMsg: +(cpuSender / sent).toFixed(3),
      receiverUsPerMsg: +(report.cpuUs / report.frames).toFixed(3),
    }));
  }
  close();
  child.kill();
}

async function main(): Promise<void> {
  if (process.argv[2] === 'serve') { serve(process.argv[3] as Mode); return; }
  const seconds = Number(process.argv[2] ?? 3);
  for (let round = 0; round < 3; round++) {
    await run('tcp', seconds);
    await run('h2', seconds);
  }
}

void main();
