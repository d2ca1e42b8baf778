// A local cluster in one command (issue #12 item 6), as etcd's Procfile does with goreman:
//
//   npm run cluster                                  # 3 members: infra1..infra3 on etcd's Procfile ports
//   npm run cluster -- --size 5 --base-port 40000    # 5 members on ports 40000..40009
//   npm run cluster -- --fresh                       # throw the old data away first
//   npm run cluster -- -- --heartbeat-interval 50    # flags after `--` go to every member
//
// Members are `dist/src/main.js` processes started with etcd's cluster flags (--initial-cluster,
// --initial-advertise-peer-urls, ...: what the README's "by hand" commands type), data dirs
// <data-dir>/<name> (default ./cluster.concord/infraN). Their JSON log lines come out on stdout
// prefixed with the member's name, as `infra1 | 10:42:07.412 info  msg key=value ...` (or as
// they are with --raw-logs), colored when stdout is a TTY (NO_COLOR / FORCE_COLOR override).
// The tool's own lines are prefixed `cluster`: ports and pids, the etcdctl line once every
// member serves, and who leads (it asks every member's Status through the HTTP gateway each
// second; concord members do not log elections).
//
// Ports: without --base-port, etcd's Procfile: member k listens for clients on 2379 (k = 1) or
// k·10000+2379, for peers on k·10000+2380, which fits 6 members (a 7th would need 72380);
// --base-port B puts member k on B+2(k-1) (client) and B+2(k-1)+1 (peer), 2N ports from B.
// Token etcd-cluster-1, as the Procfile, so the member ids are those etcd's docs show for it.
//
// Lifecycle: every member runs in its own process group, so a Ctrl-C in the terminal reaches
// the tool only; on SIGINT, SIGTERM or SIGHUP the tool sends SIGTERM to every member, waits,
// SIGKILLs a member still running after 5 s (a second signal, a second or more later, SIGKILLs
// at once), and exits 0 if every member stopped by itself (1 otherwise). The npm script `exec`s
// node: without a shell in between, the SIGTERM npm forwards reaches the tool, and a Ctrl-C
// leaves npm with the tool's exit code (sh would die of the SIGINT, and npm with it: 130). A member that exits on its own is reported with
// the command that starts it again; the others keep running; the tool exits 1 once none is left.
// --exit-with-parent (scripts, tests) also stops the cluster when the tool's parent dies.
// A restart without --fresh starts the same members on the same data dirs (they ignore the
// --initial-* flags then, as etcd does); <data-dir>/cluster.json records the layout, so that a
// restart with another --size or --base-port is refused instead of making a second cluster.
//
// Why a tool and not a `concord cluster` subcommand: concord's command line is etcd's (a
// positional argument is refused with etcd's error, exit 1), and etcd keeps its local cluster
// out of the server binary too (Procfile + goreman); this is a development tool like those.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

export const CLUSTER_TOKEN = 'etcd-cluster-1';
export const SIZE_MAX = 7;
const MEMBER_MAIN = path.resolve(__dirname, '../src/main.js');
const MANIFEST = 'cluster.json';
const STOP_GRACE_MS = 5000;
const STATUS_POLL_MS = 1000;

export const usage = `Usage: npm run cluster -- [flags] [-- member flags]
       node dist/tools/cluster.js [flags] [-- member flags]

Starts a local cluster of concord members on 127.0.0.1 (etcd's Procfile, without goreman).

  --size N             members, 1..${SIZE_MAX} (default 3; a restart takes the recorded size)
  --base-port P        member k takes ports P+2(k-1) (client) and P+2(k-1)+1 (peer); default:
                       etcd's Procfile ports, clients 2379, 22379, 32379, ... peers 12380,
                       22380, 32380, ... (up to 6 members)
  --data-dir DIR       where the members' data dirs go, DIR/<name> (default ./cluster.concord)
  --fresh              remove the members' old data dirs first (a new cluster); without it a
                       cluster already in DIR restarts from its data
  --raw-logs           print the members' JSON log lines as they are (still prefixed)
  --exit-with-parent   stop the cluster when the process that started the tool is gone
                       (for scripts and tests: a killed test leaves no members behind)
  -h, --help           this text

Flags after \`--\` are given to every member (e.g. -- --heartbeat-interval 50 --log-level debug).
Ctrl-C (SIGINT) or SIGTERM stops every member (SIGTERM, SIGKILL after 5 s).`;

export class UsageError extends Error {}

export interface ClusterArgs {
  size: number;
  /** null: etcd's Procfile ports. */
  basePort: number | null;
  /** --size / --base-port given on the command line (else a restart takes the recorded ones). */
  sizeGiven: boolean;
  basePortGiven: boolean;
  dataDir: string;
  fresh: boolean;
  rawLogs: boolean;
  exitWithParent: boolean;
  help: boolean;
  memberArgs: string[];
}

/** Flags the tool sets for every member: not to be given after `--`. */
const OWN_MEMBER_FLAGS = [
  'name', 'data-dir', 'listen-client-urls', 'advertise-client-urls', 'listen-peer-urls',
  'initial-advertise-peer-urls', 'initial-cluster', 'initial-cluster-state', 'initial-cluster-token',
  'config-file',
];

function intArg(flag: string, v: string | undefined, min: number, max: number): number {
  if (v === undefined) throw new UsageError(`flag needs an argument: ${flag}`);
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    throw new UsageError(`invalid value "${v}" for flag ${flag}: want an integer in ${min}..${max}`);
  }
  return Number(v);
}

export function parseClusterArgs(argv: string[]): ClusterArgs {
  const a: ClusterArgs = {
    size: 3, basePort: null, sizeGiven: false, basePortGiven: false, dataDir: 'cluster.concord',
    fresh: false, rawLogs: false, exitWithParent: false, help: false, memberArgs: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      a.memberArgs = argv.slice(i + 1);
      break;
    }
    const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (m === null) throw new UsageError(`unexpected argument: ${arg}`);
    const name = m[1]!;
    const inline = m[2];
    const value = (): string | undefined => (inline !== undefined ? inline : argv[++i]);
    switch (name) {
      case 'size': a.size = intArg('--size', value(), 1, SIZE_MAX); a.sizeGiven = true; break;
      case 'base-port': a.basePort = intArg('--base-port', value(), 1, 65535); a.basePortGiven = true; break;
      case 'data-dir': {
        const v = value();
        if (v === undefined || v === '') throw new UsageError('flag needs an argument: --data-dir');
        a.dataDir = v;
        break;
      }
      case 'fresh': a.fresh = true; break;
      case 'raw-logs': a.rawLogs = true; break;
      case 'exit-with-parent': a.exitWithParent = true; break;
      case 'h': case 'help': a.help = true; break;
      default: throw new UsageError(`flag provided but not defined: ${arg}`);
    }
    if (inline !== undefined && ['fresh', 'raw-logs', 'exit-with-parent', 'h', 'help'].includes(name)) {
      throw new UsageError(`flag ${arg} takes no value`);
    }
  }
  for (const f of a.memberArgs) {
    const m = /^--?([a-z-]+)/.exec(f);
    if (m !== null && OWN_MEMBER_FLAGS.includes(m[1]!)) {
      throw new UsageError(`--${m[1]} is set by the tool for each member; it cannot be given after --`);
    }
  }
  return a;
}

export interface MemberSpec {
  name: string;
  clientPort: number;
  peerPort: number;
  clientUrl: string;
  peerUrl: string;
}

/** The members' names and ports (see the header: etcd's Procfile, or 2N ports from --base-port). */
export function memberLayout(size: number, basePort: number | null): MemberSpec[] {
  if (basePort === null && size > 6) {
    throw new UsageError(`--size ${size} does not fit etcd's Procfile ports (member 7 would listen on 72379): give --base-port too, e.g. --base-port 40000`);
  }
  if (basePort !== null && basePort + 2 * size - 1 > 65535) {
    throw new UsageError(`--base-port ${basePort} leaves no room for ${2 * size} ports (the last would be ${basePort + 2 * size - 1})`);
  }
  const out: MemberSpec[] = [];
  for (let k = 1; k <= size; k++) {
    const clientPort = basePort === null ? (k === 1 ? 2379 : k * 10000 + 2379) : basePort + 2 * (k - 1);
    const peerPort = basePort === null ? k * 10000 + 2380 : basePort + 2 * (k - 1) + 1;
    out.push({
      name: `infra${k}`, clientPort, peerPort,
      clientUrl: `http://127.0.0.1:${clientPort}`, peerUrl: `http://127.0.0.1:${peerPort}`,
    });
  }
  return out;
}

/** The flags that start member `m` of `members` (what the README's "by hand" lines type). */
export function memberFlags(m: MemberSpec, members: MemberSpec[], dataDir: string): string[] {
  return [
    '--name', m.name,
    '--data-dir', dataDir,
    '--listen-client-urls', m.clientUrl,
    '--advertise-client-urls', m.clientUrl,
    '--listen-peer-urls', m.peerUrl,
    '--initial-advertise-peer-urls', m.peerUrl,
    '--initial-cluster-token', CLUSTER_TOKEN,
    '--initial-cluster', members.map((x) => `${x.name}=${x.peerUrl}`).join(','),
    '--initial-cluster-state', 'new',
  ];
}

// ---- Log lines ----

const ansi = {
  reset: '\x1b[0m', bold: '\x1b[1m', dim: '\x1b[2m', red: '\x1b[31m', yellow: '\x1b[33m',
};
/** Member name colors, goreman-like (red is kept for errors). */
const nameColors = ['\x1b[36m', '\x1b[33m', '\x1b[32m', '\x1b[35m', '\x1b[34m', '\x1b[96m', '\x1b[92m'];

function levelColor(level: string): string {
  switch (level) {
    case 'debug': return ansi.dim;
    case 'warn': return ansi.yellow;
    case 'error': case 'panic': case 'fatal': case 'dpanic': return ansi.bold + ansi.red;
    default: return '';
  }
}

function simpleValue(v: unknown): string {
  if (typeof v === 'string') return v !== '' && /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (Array.isArray(v) && v.length > 0 && v.every((x) => (typeof x === 'string' && /^[^\s",=]+$/.test(x)) || typeof x === 'number')) {
    return v.join(',');
  }
  return JSON.stringify(v);
}

function clock(ts: unknown): string {
  if (typeof ts !== 'string') return '';
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return ts;
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/**
 * One member log line made readable: `10:42:07.412 info  msg key=value ...` from concord's JSON
 * (level, ts, caller, msg, fields); a field holding several lines (a stack) comes after, one
 * line each, indented. Anything that is not a JSON object is returned as it is.
 */
export function formatLogLine(line: string, color: boolean): string[] {
  let o: Record<string, unknown>;
  try {
    const v: unknown = JSON.parse(line);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return [line];
    o = v as Record<string, unknown>;
  } catch {
    return [line];
  }
  const { level, ts, caller, msg, ...fields } = o;
  const lv = typeof level === 'string' ? level : '?';
  const parts: string[] = [];
  const t = clock(ts);
  if (t !== '') parts.push(color ? ansi.dim + t + ansi.reset : t);
  const lc = color ? levelColor(lv) : '';
  parts.push(lc !== '' ? lc + lv.padEnd(5) + ansi.reset : lv.padEnd(5));
  parts.push(lc !== '' && lv !== 'debug' ? lc + String(msg ?? '') + ansi.reset : String(msg ?? ''));
  if (caller !== undefined && caller !== 'concord') fields.caller = caller;
  const tail: string[] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (typeof v === 'string' && v.includes('\n')) {
      tail.push(`  ${k}:`, ...v.split('\n').map((l) => `    ${l}`));
      continue;
    }
    parts.push(color ? `${ansi.dim}${k}=${ansi.reset}${simpleValue(v)}` : `${k}=${simpleValue(v)}`);
  }
  return [parts.join(' '), ...tail];
}

// ---- Running the cluster ----

interface Member {
  spec: MemberSpec;
  dataDir: string;
  args: string[];
  proc: ChildProcess | null;
  pid: number;
  ready: boolean;
  /** Its process and pipes are closed. */
  gone: boolean;
  killTimer: NodeJS.Timeout | null;
  forced: boolean;
  memberId: string;
}

interface Manifest { size: number; basePort: number | null; token: string; members: MemberSpec[] }

function readManifest(root: string): Manifest | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(root, MANIFEST), 'utf8')) as Manifest;
  } catch {
    return null;
  }
}

/** The pid holding `dir` (concord.lock, see src/storage/data_dir_lock.ts) if it is alive. */
function lockHolder(dir: string): number | null {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(path.join(dir, 'concord.lock'), 'utf8').trim());
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : null;
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** Maintenance.Status through the member's HTTP gateway (no gRPC client in the tool). */
function memberStatus(port: number): Promise<{ memberId: string; leader: string; term: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v3/maintenance/status', timeout: 800 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => {
        try {
          const o = JSON.parse(body) as { header?: { member_id?: string; raft_term?: string }; leader?: string };
          if (res.statusCode !== 200 || o.header === undefined) throw new Error(`status ${res.statusCode}: ${body}`);
          resolve({ memberId: String(o.header.member_id ?? '0'), leader: String(o.leader ?? '0'), term: Number(o.header.raft_term ?? 0) });
        } catch (err) {
          reject(err);
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end('{}');
  });
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function displayPath(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
}

async function run(a: ClusterArgs): Promise<number> {
  const color = process.env.FORCE_COLOR !== undefined && process.env.FORCE_COLOR !== '0'
    ? true : process.stdout.isTTY === true && (process.env.NO_COLOR ?? '') === '';
  const root = path.resolve(a.dataDir);
  const manifest = readManifest(root);
  const hasData = (name: string): boolean => fs.existsSync(path.join(root, name, 'member'));
  // The cluster a restart restarts: it takes the recorded layout; another one given is refused.
  const recorded = manifest !== null && !a.fresh && manifest.members.some((m) => hasData(m.name)) ? manifest : null;
  let size = a.size;
  let basePort = a.basePort;
  if (recorded !== null) {
    if (!a.sizeGiven) size = recorded.size;
    if (!a.basePortGiven) basePort = recorded.basePort;
  }
  const specs = memberLayout(size, basePort);
  const nameWidth = Math.max('cluster'.length, ...specs.map((s) => s.name.length));
  const prefix = (name: string, i: number | null): string => {
    const p = name.padEnd(nameWidth);
    if (!color) return `${p} | `;
    return (i === null ? ansi.bold : nameColors[i % nameColors.length]!) + p + ansi.reset + ' | ';
  };
  const say = (text: string): void => { process.stdout.write(prefix('cluster', null) + text + '\n'); };
  const fail = (text: string): number => { say(color ? ansi.red + text + ansi.reset : text); return 1; };

  if (recorded !== null) {
    const same = recorded.members.length === specs.length && recorded.members.every((m, i) =>
      m.name === specs[i]!.name && m.clientPort === specs[i]!.clientPort && m.peerPort === specs[i]!.peerPort);
    if (!same) {
      const was = recorded.members.map((m) => `${m.name} ${m.clientPort}/${m.peerPort}`).join(', ');
      return fail(`${displayPath(root)} holds a ${recorded.members.length}-member cluster (${was}): restart it with the same --size and --base-port (or none), or add --fresh to replace it`);
    }
  }
  // Never remove or share the data of members that run.
  const names = new Set([...specs.map((s) => s.name), ...(manifest?.members.map((m) => m.name) ?? [])]);
  for (const n of names) {
    const pid = lockHolder(path.join(root, n));
    if (pid !== null) return fail(`${displayPath(path.join(root, n))} is in use by process ${pid}: is this cluster running already?`);
  }
  const busy: string[] = [];
  for (const s of specs) {
    if (!await portFree(s.clientPort)) busy.push(`${s.clientPort} (${s.name} client)`);
    if (!await portFree(s.peerPort)) busy.push(`${s.peerPort} (${s.name} peer)`);
  }
  if (busy.length > 0) {
    return fail(`port${busy.length > 1 ? 's' : ''} in use on 127.0.0.1: ${busy.join(', ')}; another etcd, concord or cluster runs? --base-port picks other ports`);
  }
  if (a.fresh) {
    for (const n of names) fs.rmSync(path.join(root, n), { recursive: true, force: true });
    fs.rmSync(path.join(root, MANIFEST), { force: true });
  }
  const restarting = specs.some((s) => hasData(s.name));
  fs.mkdirSync(root, { recursive: true });
  fs.writeFileSync(path.join(root, MANIFEST), JSON.stringify({ size, basePort, token: CLUSTER_TOKEN, members: specs } satisfies Manifest, null, 2) + '\n');

  const members: Member[] = specs.map((spec) => {
    const dataDir = path.join(root, spec.name);
    return {
      spec, dataDir, args: [...memberFlags(spec, specs, dataDir), ...a.memberArgs],
      proc: null, pid: 0, ready: false, gone: false, killTimer: null, forced: false, memberId: '',
    };
  });
  let stopping = false;
  let announced = false;
  let poll: NodeJS.Timeout | null = null;
  /** What the last poll printed (leader id and term), and the last leader's name. */
  let leaderSeen: string | null = null;
  let lastLeader: string | null = null;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => { resolveDone = r; });

  // A crash of the tool itself must not leave members behind (they are in their own groups).
  process.on('exit', () => {
    for (const m of members) {
      if (!m.gone && m.proc !== null) {
        try { m.proc.kill('SIGKILL'); } catch { /* gone */ }
      }
    }
  });

  const live = (): Member[] => members.filter((m) => !m.gone);
  const emit = (m: Member, i: number, line: string): void => {
    if (line === '') return;
    let o: { msg?: unknown } | null = null;
    if (!m.ready && line.includes('ready to serve client requests')) {
      try { o = JSON.parse(line) as { msg?: unknown }; } catch { /* not JSON */ }
    }
    const out = a.rawLogs ? [line] : formatLogLine(line, color);
    let text = '';
    for (const l of out) text += prefix(m.spec.name, i) + l + '\n';
    process.stdout.write(text);
    if (o?.msg === 'ready to serve client requests') {
      m.ready = true;
      maybeAnnounce();
    }
  };
  const maybeAnnounce = (): void => {
    if (announced || stopping) return;
    const l = live();
    if (l.length === 0 || !l.every((m) => m.ready)) return;
    announced = true;
    const endpoints = l.map((m) => `127.0.0.1:${m.spec.clientPort}`).join(',');
    say(`${l.length} of ${members.length} members serve clients; try:`);
    say(`  etcdctl --endpoints=${endpoints} endpoint status --cluster -w table`);
    say(`Ctrl-C stops every member; run again without --fresh to restart this cluster from its data`);
    poll = setInterval(() => void pollLeader(), STATUS_POLL_MS);
    void pollLeader();
  };
  let polling = false;
  const pollLeader = async (): Promise<void> => {
    if (polling || stopping) return;
    polling = true;
    try {
      const answers = await Promise.all(live().filter((m) => m.ready).map(async (m) => {
        try {
          const st = await memberStatus(m.spec.clientPort);
          m.memberId = st.memberId;
          return st;
        } catch {
          return null;
        }
      }));
      if (stopping) return;
      const got = answers.filter((x): x is NonNullable<typeof x> => x !== null);
      if (got.length === 0) return;
      const term = Math.max(...got.map((x) => x.term));
      const view = got.find((x) => x.term === term && x.leader !== '0');
      const leader = view === undefined ? undefined : members.find((m) => m.memberId === view.leader);
      const key = view === undefined ? `none@${term}` : `${view.leader}@${term}`;
      if (key === leaderSeen) return;
      leaderSeen = key;
      if (view === undefined) {
        say(`no leader (term ${term})`);
        return;
      }
      const name = leader?.spec.name ?? `member ${BigInt(view.leader).toString(16)}`;
      const pid = leader !== undefined ? `pid ${leader.pid}, ` : '';
      if (lastLeader === null || lastLeader === name) say(`leader: ${name} (${pid}term ${term})`);
      else say(`leader changed: ${lastLeader} → ${name} (${pid}term ${term})`);
      lastLeader = name;
    } finally {
      polling = false;
    }
  };

  const onGone = (m: Member, code: number | null, signal: NodeJS.Signals | null): void => {
    m.gone = true;
    if (m.killTimer !== null) clearTimeout(m.killTimer);
    const how = signal !== null ? `signal ${signal}` : `exit code ${code}`;
    if (stopping) {
      if (m.forced) say(`${m.spec.name} killed`);
      else if (code !== 0) { m.forced = true; say(`${m.spec.name} stopped with ${how}`); }
      else say(`${m.spec.name} stopped`);
    } else {
      const left = live().length;
      say(`${color ? ansi.red : ''}${m.spec.name} (pid ${m.pid}) exited unexpectedly (${how}); ${left} of ${members.length} members still running${color ? ansi.reset : ''}`);
      if (m.ready) {
        say(`  to start it again by hand: node ${shellQuote(displayPath(MEMBER_MAIN))} ${m.args.map((x) => shellQuote(x === m.dataDir ? displayPath(x) : x)).join(' ')}`);
      }
      if (left === 0) {
        if (poll !== null) clearInterval(poll);
        say(members.some((x) => x.ready) ? 'no member is left running' : 'every member exited before serving clients (their logs are above)');
        resolveDone(1);
        return;
      }
      maybeAnnounce();
    }
    if (stopping && live().length === 0) {
      const forced = members.some((x) => x.forced);
      say(forced ? 'stopped (not every member stopped cleanly)' : 'every member stopped');
      resolveDone(forced ? 1 : 0);
    }
  };

  say(`${restarting ? 'restarting the' : 'starting a new'} ${members.length}-member cluster in ${displayPath(root)} (token ${CLUSTER_TOKEN})${restarting ? '; --fresh starts a new one' : ''}`);
  members.forEach((m, i) => {
    const proc = spawn(process.execPath, [MEMBER_MAIN, ...m.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group: the terminal's Ctrl-C is for the tool to handle
    });
    m.proc = proc;
    m.pid = proc.pid ?? 0;
    for (const stream of [proc.stdout!, proc.stderr!]) {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          emit(m, i, buf.slice(0, nl));
          buf = buf.slice(nl + 1);
        }
      });
      stream.on('end', () => { if (buf !== '') emit(m, i, buf); buf = ''; });
    }
    proc.on('error', (err) => say(`${m.spec.name}: ${err.message}`));
    proc.on('close', (code, signal) => onGone(m, code, signal));
    say(`  ${m.spec.name.padEnd(nameWidth)} pid ${String(m.pid).padEnd(7)} client ${m.spec.clientUrl.padEnd(22)} peer ${m.spec.peerUrl.padEnd(22)} data ${displayPath(m.dataDir)}`);
  });

  let stoppedAt = 0;
  const stop = (signal: string): void => {
    if (stopping) {
      // The same Ctrl-C can come twice (from the terminal to the process group, and forwarded
      // by npm): only a signal a second later means "kill now".
      if (Date.now() - stoppedAt < 1000) return;
      say(`${signal} again: killing every member (SIGKILL)`);
      for (const m of live()) {
        m.forced = true;
        m.proc?.kill('SIGKILL');
      }
      return;
    }
    stopping = true;
    stoppedAt = Date.now();
    if (poll !== null) clearInterval(poll);
    const l = live();
    if (l.length === 0) {
      resolveDone(0);
      return;
    }
    say(`${signal}: stopping ${l.map((m) => m.spec.name).join(', ')} (SIGTERM; SIGKILL after ${STOP_GRACE_MS / 1000} s)`);
    for (const m of l) {
      m.proc?.kill('SIGTERM');
      m.killTimer = setTimeout(() => {
        if (m.gone) return;
        m.forced = true;
        say(`${m.spec.name} still running after ${STOP_GRACE_MS / 1000} s: SIGKILL`);
        m.proc?.kill('SIGKILL');
      }, STOP_GRACE_MS);
    }
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => stop(sig));
  if (a.exitWithParent) {
    // Re-parented (to init or a subreaper): whoever started the tool is gone.
    const parent = process.ppid;
    const watch = setInterval(() => {
      if (process.ppid !== parent) {
        clearInterval(watch);
        stop(`parent process ${parent} gone`);
      }
    }, 500);
    watch.unref();
  }
  // stdout gone (a closed pipe): nobody can read the logs any more, stop the cluster.
  process.stdout.on('error', () => stop('stdout closed'));
  return done;
}

async function main(): Promise<void> {
  let a: ClusterArgs;
  try {
    a = parseClusterArgs(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n${usage}\n`);
      process.exit(2);
    }
    throw err;
  }
  if (a.help) {
    process.stdout.write(usage + '\n');
    return;
  }
  if (!fs.existsSync(MEMBER_MAIN)) {
    process.stderr.write(`${MEMBER_MAIN} is missing: build first (npm run build)\n`);
    process.exit(1);
  }
  let code: number;
  try {
    code = await run(a);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  process.exitCode = code;
  process.exit(code);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`cluster: ${String((err as Error)?.stack ?? err)}\n`);
    process.exit(1);
  });
}
