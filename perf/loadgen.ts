// Load generator process: closed-loop gRPC clients over node:http2, latencies into an HDR
// histogram. perf/run.ts starts several of these (one per core by default) so the client side
// is not one event loop's worth of CPU, and collects their JSON results.
//
// Why not grpc-js or node:http2: a grpc-js unary call costs the client ~60-90 µs of CPU
// (shared/reference/node-stack.md §3) and a node:http2 stream ~100 µs here, as much as the
// servers under test. perf/h2client.ts frames requests itself on a raw socket; each process
// reports its own CPU per request so the report shows what the client took from the cores.
//
// With `security` it connects over TLS and/or authenticates once per connection (Authenticate,
// then the token in every request's header block), as etcd's clients do.
//
// Usage (internal): node dist/perf/loadgen.js '<json LoadgenConfig>'. Once its connections are up
// (and authenticated) it prints `ready` and waits for a line on stdin before sending anything, so
// the parent starts the server CPU reading after the logins (bcrypt) and the process startup;
// at the end it prints one JSON line (LoadgenResult).
import fs from 'node:fs';
import * as hdr from 'hdr-histogram-js';
import { etcdserverpb } from '../src/gen/proto';
import { grpcHeaderBlock, H2Connection, unaryCall, type H2Options } from './h2client';
import type { ClientSecurity } from './security';
import { workloadByName } from './workloads';

export const READY_LINE = 'ready';

export interface LoadgenConfig {
  address: string; // host:port
  workload: string;
  clients: number; // concurrent closed-loop clients in this process
  conns: number; // HTTP/2 connections in this process (clients spread over them)
  warmupMs: number;
  durationMs: number;
  seed: number;
  /** TLS and/or auth (absent: plain TCP, no token). */
  security?: ClientSecurity;
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

async function run(cfg: LoadgenConfig): Promise<LoadgenResult> {
  const w = workloadByName(cfg.workload);
  const gen = w.makeGenerator(cfg.seed);
  const genMixed = w.mixed?.makeGenerator(cfg.seed);
  const mixedEvery = w.mixed ? Math.round(1 / w.mixed.fraction) : 0;
  const histogram = buildHistogram();

  let seq = 0;
  let ok = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  let measuring = false;
  let stopping = false;
  let inFlight = 0;
  let allDone: () => void = () => {};
  const finished = new Promise<void>((resolve) => (allDone = resolve));
  // Per client: its connection and the start time of its request in flight.
  const connOf: H2Connection[] = [];
  /** Per client: the header blocks of its connection (the token is per connection). */
  const blocksOf: { main: Buffer; mixed: Buffer }[] = [];
  const startedAt = new Float64Array(cfg.clients);

  const issue = (client: number): void => {
    const n = seq++;
    const isMixed = mixedEvery > 0 && n % mixedEvery === 0;
    const body = isMixed ? genMixed!(n) : gen(n);
    inFlight++;
    startedAt[client] = performance.now();
    const blocks = blocksOf[client]!;
    connOf[client]!.request(isMixed ? blocks.mixed : blocks.main, body, client);
  };
  const onDone = (client: number, success: boolean): void => {
    inFlight--;
    if (measuring) {
      if (success) {
        ok++;
        histogram.recordValue(Math.max(1, Math.round((performance.now() - startedAt[client]!) * 1000)));
      } else {
        errors++;
        const conn = connOf[client]!;
        if (errorSamples.length < 5) errorSamples.push(conn.error ? conn.error.message : 'response without a message (gRPC error status)');
      }
    }
    if (!stopping && !connOf[client]!.error) issue(client);
    else if (inFlight === 0) allDone();
  };

  const sec = cfg.security;
  const h2opts: H2Options = {};
  if (sec?.tls !== undefined) {
    h2opts.tls = {
      ca: fs.readFileSync(sec.tls.caFile),
      ...(sec.tls.certFile !== undefined ? { cert: fs.readFileSync(sec.tls.certFile), key: fs.readFileSync(sec.tls.keyFile!) } : {}),
    };
  }
  const conns: H2Connection[] = [];
  for (let i = 0; i < cfg.conns; i++) conns.push(new H2Connection(cfg.address, onDone, h2opts));
  await Promise.all(conns.map((c) => c.connect()));
  const connBlocks = await Promise.all(conns.map(async (conn) => {
    const scheme = conn.scheme;
    let token: string | undefined;
    if (sec?.auth !== undefined) {
      const req = etcdserverpb.AuthenticateRequest.encode({ name: sec.auth.user, password: sec.auth.password }).finish();
      const res = await unaryCall(conn, grpcHeaderBlock(cfg.address, '/etcdserverpb.Auth/Authenticate', { scheme }), req)
        .catch((err: Error) => { throw new Error(`Authenticate as ${sec.auth!.user}: ${err.message}`); });
      token = etcdserverpb.AuthenticateResponse.decode(res).token;
    }
    const main = grpcHeaderBlock(cfg.address, w.path, { scheme, token });
    return { main, mixed: w.mixed ? grpcHeaderBlock(cfg.address, w.mixed.path, { scheme, token }) : main };
  }));
  for (let c = 0; c < cfg.clients; c++) {
    connOf.push(conns[c % conns.length]!);
    blocksOf.push(connBlocks[c % conns.length]!);
  }

  process.stdout.write(READY_LINE + '\n');
  await waitForGo();
  for (let c = 0; c < cfg.clients; c++) issue(c);
  await new Promise((r) => setTimeout(r, cfg.warmupMs));
  measuring = true;
  const cpuStart = process.cpuUsage();
  const tStart = performance.now();
  await new Promise((r) => setTimeout(r, cfg.durationMs));
  measuring = false;
  const tEnd = performance.now();
  const cpu = process.cpuUsage(cpuStart);
  stopping = true;
  if (inFlight > 0) await Promise.race([finished, new Promise((r) => setTimeout(r, 10_000))]);
  for (const c of conns) c.close();
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

/** Resolves at the first line on stdin (the parent's "go"); stdin ending first means the parent is gone: exit. */
function waitForGo(): Promise<void> {
  return new Promise((resolve) => {
    const gone = (): void => process.exit(2);
    const onData = (d: Buffer): void => {
      if (!d.includes(0x0a)) return;
      process.stdin.off('data', onData);
      process.stdin.off('end', gone);
      process.stdin.pause();
      resolve();
    };
    process.stdin.on('data', onData);
    process.stdin.on('end', gone);
  });
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
