// `npm run perf -- --auth --tls` (issue #14): what authentication and TLS cost per request, on
// concord and on etcd 3.4, measured the same way.
//
// A security mode is auth on or off and the client transport: plain TCP, TLS (the client checks
// the server's certificate) or mTLS (--client-cert-auth: the server checks the client's too). Each
// mode other than plain runs on a fresh server of each target next to a plain one, interleaved
// like concord and etcd are (modeSchedule), and the cost table gives per round the server CPU a
// request takes beyond plain and the throughput and latency ratios against plain.
//
// Both servers get the same setup: one PKI per run (test/helpers/tls_certs.ts: a CA, a server
// certificate for 127.0.0.1, a client certificate with CN `bench`), the same TLS flags, and for
// auth a root user and a user `bench` whose role may read and write the prefix every unary
// workload's keys are under (BENCH_PREFIX). The load generator authenticates as bench once per
// connection and sends the token on every request, as etcd's clients do.
import fs from 'node:fs';
import http2 from 'node:http2';
import { authpb, etcdserverpb } from '../src/gen/proto';
import { prefixEnd } from '../src/util/prefix_end';
import { makePki, type TestPki } from '../test/helpers/tls_certs';
import type { Cell, Sample, Target } from './run';

export type TlsKind = 'none' | 'tls' | 'mtls';
export interface SecMode { name: string; auth: boolean; tls: TlsKind }

/** Every unary workload's keys are under this prefix (perf/workloads.ts): bench's role covers it. */
export const BENCH_PREFIX = 'bench/';
export const BENCH_USER = 'bench';
export const BENCH_PASSWORD = 'bench-pw';
const ROOT_PASSWORD = 'root-pw';

export const MODE_NAMES = ['plain', 'auth', 'tls', 'mtls', 'auth+tls', 'auth+mtls'] as const;

export function parseMode(name: string): SecMode {
  if (!(MODE_NAMES as readonly string[]).includes(name)) throw new Error(`unknown security mode ${name} (known: ${MODE_NAMES.join(', ')})`);
  const auth = name.startsWith('auth');
  const tls: TlsKind = name.endsWith('mtls') ? 'mtls' : name.endsWith('tls') ? 'tls' : 'none';
  return { name, auth, tls };
}

/**
 * The modes of a run from its flags: --modes a,b,... as given, else plain and one mode per flag
 * (--auth, --tls, --mtls). plain always comes first: every cost is against it.
 */
export function modesFromArgs(flags: { auth: boolean; tls: boolean; mtls: boolean; modes?: string }): SecMode[] {
  const names: string[] = flags.modes !== undefined
    ? flags.modes.split(',').filter((m) => m !== '')
    : [...(flags.auth ? ['auth'] : []), ...(flags.tls ? ['tls'] : []), ...(flags.mtls ? ['mtls'] : [])];
  const all = ['plain', ...names.filter((n) => n !== 'plain')];
  return [...new Set(all)].map(parseMode);
}

/**
 * The order of the servers of one round: each target's modes back to back (a cost is a ratio of
 * neighbours), targets in the given order; odd rounds run the whole list backwards, so no mode and
 * no target always runs on a warmer machine.
 */
export function modeSchedule<T>(targets: T[], modes: SecMode[], round: number): { target: T; mode: SecMode }[] {
  const out: { target: T; mode: SecMode }[] = [];
  for (const target of targets) for (const mode of modes) out.push({ target, mode });
  return round % 2 === 0 ? out : out.reverse();
}

/** What the load generator needs to reach a server in a mode (file paths: it runs in other processes). */
export interface ClientSecurity {
  tls?: { caFile: string; certFile?: string; keyFile?: string };
  auth?: { user: string; password: string };
}

/** The certificates of a run, made once and shared by both servers and all modes. */
export interface RunPki {
  pki: TestPki;
  server: { cert: string; key: string };
  client: { cert: string; key: string };
}

export function makeRunPki(): RunPki {
  const pki = makePki();
  return { pki, server: pki.issue('server', { cn: 'server' }), client: pki.issue('client', { cn: BENCH_USER }) };
}

/** Server flags of a mode (the same for concord and etcd: concord takes etcd's). */
export function serverTlsArgs(mode: SecMode, pki: RunPki | null): string[] {
  if (mode.tls === 'none') return [];
  if (pki === null) throw new Error(`mode ${mode.name} needs certificates`);
  const args = ['--cert-file', pki.server.cert, '--key-file', pki.server.key];
  if (mode.tls === 'mtls') args.push('--trusted-ca-file', pki.pki.ca.cert, '--client-cert-auth');
  return args;
}

export function clientSecurity(mode: SecMode, pki: RunPki | null): ClientSecurity {
  const out: ClientSecurity = {};
  if (mode.tls !== 'none') {
    out.tls = { caFile: pki!.pki.ca.cert };
    if (mode.tls === 'mtls') Object.assign(out.tls, { certFile: pki!.client.cert, keyFile: pki!.client.key });
  }
  if (mode.auth) out.auth = { user: BENCH_USER, password: BENCH_PASSWORD };
  return out;
}

/** node:http2 session options of a ClientSecurity (setup calls from this process). */
export function sessionTarget(address: string, sec: ClientSecurity | undefined): { url: string; options: http2.SecureClientSessionOptions } {
  if (sec?.tls === undefined) return { url: `http://${address}`, options: {} };
  const t = sec.tls;
  return {
    url: `https://${address}`,
    options: {
      ca: fs.readFileSync(t.caFile),
      ...(t.certFile !== undefined ? { cert: fs.readFileSync(t.certFile), key: fs.readFileSync(t.keyFile!) } : {}),
    },
  };
}

function grpcFrame(msg: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
}

/** One unary gRPC call on a node:http2 session: the response message, or an error with grpc-message. */
export function grpcCall(session: http2.ClientHttp2Session, path: string, body: Uint8Array, token?: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = session.request({
      ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...(token !== undefined ? { token } : {}),
    });
    let status = '';
    let message = '';
    const chunks: Buffer[] = [];
    const meta = (h: http2.IncomingHttpHeaders): void => {
      if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
      if (h['grpc-message'] !== undefined) message = decodeURIComponent(String(h['grpc-message']));
    };
    s.on('response', meta);
    s.on('trailers', meta);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => {
      if (status !== '0') {
        reject(new Error(`${path}: grpc-status ${status || '(none)'} ${message}`));
        return;
      }
      const all = Buffer.concat(chunks);
      resolve(all.length >= 5 ? all.subarray(5, 5 + all.readUInt32BE(1)) : Buffer.alloc(0));
    });
    s.end(grpcFrame(body));
  });
}

/**
 * Turns auth on in a fresh server as etcdctl would: root (role root), a role `bench` with
 * readwrite on BENCH_PREFIX, a user bench with it, AuthEnable. Returns a token of bench (for the
 * workload's setup requests).
 */
export async function enableAuth(address: string, sec: ClientSecurity): Promise<string> {
  const { url, options } = sessionTarget(address, sec);
  const session = http2.connect(url, options);
  session.on('error', () => {}); // a failed call rejects; the session's own error adds nothing
  try {
    const A = '/etcdserverpb.Auth/';
    const E = etcdserverpb;
    const prefix = new TextEncoder().encode(BENCH_PREFIX);
    await grpcCall(session, A + 'UserAdd', E.AuthUserAddRequest.encode({ name: 'root', password: ROOT_PASSWORD }).finish());
    await grpcCall(session, A + 'UserGrantRole', E.AuthUserGrantRoleRequest.encode({ user: 'root', role: 'root' }).finish());
    await grpcCall(session, A + 'RoleAdd', E.AuthRoleAddRequest.encode({ name: BENCH_USER }).finish());
    await grpcCall(session, A + 'RoleGrantPermission', E.AuthRoleGrantPermissionRequest.encode({
      name: BENCH_USER, perm: { permType: authpb.Permission.Type.READWRITE, key: prefix, range_end: prefixEnd(prefix) },
    }).finish());
    await grpcCall(session, A + 'UserAdd', E.AuthUserAddRequest.encode({ name: BENCH_USER, password: BENCH_PASSWORD }).finish());
    await grpcCall(session, A + 'UserGrantRole', E.AuthUserGrantRoleRequest.encode({ user: BENCH_USER, role: BENCH_USER }).finish());
    await grpcCall(session, A + 'AuthEnable', E.AuthEnableRequest.encode({}).finish());
    const token = await authenticate(session, BENCH_USER, BENCH_PASSWORD);
    // Auth is really on: bench may not write outside its prefix (else the run would measure nothing).
    const outside = E.PutRequest.encode({ key: new TextEncoder().encode('outside-bench'), value: new Uint8Array(1) }).finish();
    const refused = await grpcCall(session, '/etcdserverpb.KV/Put', outside, token).then(() => false, (err: Error) => /grpc-status 7\b/.test(err.message));
    if (!refused) throw new Error('auth enabled, yet bench could write outside its prefix (or was refused otherwise)');
    return token;
  } finally {
    session.close();
  }
}

export async function authenticate(session: http2.ClientHttp2Session, name: string, password: string): Promise<string> {
  const res = await grpcCall(session, '/etcdserverpb.Auth/Authenticate', etcdserverpb.AuthenticateRequest.encode({ name, password }).finish());
  const token = etcdserverpb.AuthenticateResponse.decode(res).token;
  if (!token) throw new Error('Authenticate: no token in the response');
  return token;
}

// ---- the cost table ----

/** Per round: a mode's sample and the plain sample of the same target (both with successes). */
export function pairsByRound(cell: Cell, target: Target, mode: string): { plain: Sample; mode: Sample }[] {
  const out: { plain: Sample; mode: Sample }[] = [];
  for (const r of new Set(cell.samples.map((s) => s.round))) {
    const p = cell.samples.find((s) => s.round === r && s.target === target && (s.mode ?? 'plain') === 'plain');
    const m = cell.samples.find((s) => s.round === r && s.target === target && s.mode === mode);
    if (p && m && p.ok > 0 && m.ok > 0) out.push({ plain: p, mode: m });
  }
  return out;
}

export interface ModeCost {
  /** Server CPU per request beyond plain, µs, one per round. */
  extraCpuUs: number[];
  /** mode / plain, one per round. */
  throughput: number[];
  p50: number[];
  p99: number[];
}

export function modeCost(cell: Cell, target: Target, mode: string): ModeCost {
  const pairs = pairsByRound(cell, target, mode);
  const ratio = (f: (s: Sample) => number): number[] => pairs.filter((p) => f(p.plain) > 0).map((p) => f(p.mode) / f(p.plain));
  return {
    extraCpuUs: pairs.map((p) => p.mode.serverCpuUsPerOp - p.plain.serverCpuUsPerOp),
    throughput: ratio((s) => s.throughput),
    p50: ratio((s) => s.latencyUs.p50),
    p99: ratio((s) => s.latencyUs.p99),
  };
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Median, and the spread over rounds when there are several: "1.23 (1.10-1.31)". */
export function fmtSpread(xs: number[], digits: number, sign = false): string {
  if (xs.length === 0) return '-';
  const f = (x: number): string => (sign && x >= 0 ? '+' : '') + x.toFixed(digits);
  if (xs.length === 1) return f(xs[0]!);
  return `${f(median(xs))} (${f(Math.min(...xs))}..${f(Math.max(...xs))})`;
}

/** Rows of the cost table (header first): every non-plain mode of every unary cell, per target. */
export function securityCostRows(cells: Cell[], modes: SecMode[], targets: Target[]): string[][] {
  const ms = (us: number): string => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
  const rows: string[][] = [[
    'workload', 'clients', 'target', 'mode', 'ops/s', 'p50 ms', 'p99 ms', 'cli cpu µs/op', 'srv cpu µs/op', 'extra srv µs/op',
    'ops/s x plain', 'p50 x plain', 'p99 x plain',
  ]];
  for (const cell of cells) {
    for (const target of targets) {
      for (const mode of modes) {
        const ss = cell.samples.filter((s) => s.target === target && (s.mode ?? 'plain') === mode.name && s.ok > 0);
        if (ss.length === 0) continue;
        const m = (f: (s: Sample) => number): number => median(ss.map(f));
        const base = [cell.workload, String(cell.clients), target, mode.name, m((s) => s.throughput).toFixed(0),
          ms(m((s) => s.latencyUs.p50)), ms(m((s) => s.latencyUs.p99)), m((s) => s.clientCpuUsPerOp).toFixed(0),
          m((s) => s.serverCpuUsPerOp).toFixed(1)];
        if (mode.name === 'plain') {
          rows.push([...base, '', '', '', '']);
          continue;
        }
        const c = modeCost(cell, target, mode.name);
        rows.push([...base, fmtSpread(c.extraCpuUs, 1, true), fmtSpread(c.throughput, 2), fmtSpread(c.p50, 2), fmtSpread(c.p99, 2)]);
      }
    }
  }
  return rows;
}
