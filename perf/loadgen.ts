// Load generator process: closed-loop gRPC clients over node:http2, latencies into an HDR
// histogram. perf/run.ts starts several of these (one per core by default) so the client side
// is not one event loop's worth of CPU, and collects their JSON results.
//
// Why node:http2 and not grpc-js: a grpc-js unary call costs the client ~60-90 µs of CPU
// (shared/reference/node-stack.md §3); a bare HTTP/2 stream with a pre-framed body costs a
// fraction of that, and each process reports its own CPU per request so the report shows what
// the client took from the shared cores.
//
// Usage (internal): node dist/perf/loadgen.js '<json LoadgenConfig>'  → one JSON line on stdout.
import http2 from 'node:http2';
import * as hdr from 'hdr-histogram-js';
import { workloadByName } from './workloads';

export interface LoadgenConfig {
  address: string; // host:port
  workload: string;
  clients: number; // concurrent closed-loop clients in this process
  conns: number; // HTTP/2 connections in this process (clients spread over them)
  warmupMs: number;
  durationMs: number;
  seed: number;
}

export interface LoadgenResult {
  ok: number;
  errors: number;
  errorSamples: string[];
  histogram: string; // encodeIntoCompressedBase64, microseconds
  cpuUserUs: number;
  cpuSystemUs: number;
  elapsedMs: number;
}

export function buildHistogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
}

function grpcFrame(msg: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(5 + msg.length);
  b[0] = 0;
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
}

async function run(cfg: LoadgenConfig): Promise<LoadgenResult> {
  const w = workloadByName(cfg.workload);
  const gen = w.makeGenerator(cfg.seed);
  const genMixed = w.mixed?.makeGenerator(cfg.seed);
  const mixedEvery = w.mixed ? Math.round(1 / w.mixed.fraction) : 0;
  const histogram = buildHistogram();
  const sessions: http2.ClientHttp2Session[] = [];
  for (let i = 0; i < cfg.conns; i++) {
    const s = http2.connect(`http://${cfg.address}`);
    s.on('error', () => { /* counted per stream */ });
    sessions.push(s);
  }
  await Promise.all(sessions.map((s) => new Promise<void>((resolve, reject) => {
    s.once('connect', () => resolve());
    s.once('error', reject);
  })));

  const headersFor = (path: string): http2.OutgoingHttpHeaders => ({
    ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers',
  });
  const mainHeaders = headersFor(w.path);
  const mixedHeaders = w.mixed ? headersFor(w.mixed.path) : mainHeaders;

  let seq = 0;
  let ok = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  let measuring = false;
  let stopping = false;
  let cpuStart = process.cpuUsage();
  let tStart = 0;
  let tEnd = 0;
  let inFlight = 0;
  let allDone: () => void = () => {};
  const finished = new Promise<void>((resolve) => (allDone = resolve));

  const issue = (session: http2.ClientHttp2Session): void => {
    const n = seq++;
    const isMixed = mixedEvery > 0 && n % mixedEvery === 0;
    const body = isMixed ? genMixed!(n) : gen(n);
    const t0 = performance.now();
    let status = -1;
    let message = '';
    inFlight++;
    const stream = session.request(isMixed ? mixedHeaders : mainHeaders, { endStream: false });
    stream.on('response', (h) => {
      if (h['grpc-status'] !== undefined) {
        status = Number(h['grpc-status']);
        message = String(h['grpc-message'] ?? '');
      }
    });
    stream.on('trailers', (h) => {
      status = Number(h['grpc-status']);
      message = String(h['grpc-message'] ?? '');
    });
    stream.on('error', (err) => { message = err.message; });
    stream.on('data', () => {});
    stream.on('close', () => {
      inFlight--;
      if (measuring) {
        if (status === 0) {
          ok++;
          histogram.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)));
        } else {
          errors++;
          if (errorSamples.length < 5) errorSamples.push(`grpc-status ${status}: ${decodeURIComponent(message)}`);
        }
      }
      if (!stopping) issue(session);
      else if (inFlight === 0) allDone();
    });
    stream.end(grpcFrame(body));
  };

  for (let c = 0; c < cfg.clients; c++) issue(sessions[c % sessions.length]!);
  await new Promise((r) => setTimeout(r, cfg.warmupMs));
  measuring = true;
  cpuStart = process.cpuUsage();
  tStart = performance.now();
  await new Promise((r) => setTimeout(r, cfg.durationMs));
  measuring = false;
  tEnd = performance.now();
  const cpu = process.cpuUsage(cpuStart);
  stopping = true;
  if (inFlight > 0) await Promise.race([finished, new Promise((r) => setTimeout(r, 10_000))]);
  for (const s of sessions) s.close();
  return {
    ok,
    errors,
    errorSamples,
    histogram: hdr.encodeIntoCompressedBase64(histogram),
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
    elapsedMs: tEnd - tStart,
  };
}

if (require.main === module) {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as LoadgenConfig;
  run(cfg).then(
    (res) => {
      process.stdout.write(JSON.stringify(res) + '\n');
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`loadgen: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
