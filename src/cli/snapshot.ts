// `concord snapshot save | status | restore` (issue #13 item 5): etcdctl 3.4's snapshot
// commands for concord's backups (etcd's own tools read bbolt files, concord's backups are LMDB:
// see storage/snapshot_file.ts). bin/concord runs this module when its first argument is
// `snapshot`; everything else starts the server (src/main.ts).
//
//   concord snapshot save <file> [--endpoints=127.0.0.1:2379] [--dial-timeout=2s] [--command-timeout=5s]
//       [--user=name[:password]] [--password=...]
//   concord snapshot status <file> [-w simple|table|json|fields]
//   concord snapshot restore <file> [--name=default] [--initial-cluster=default=http://localhost:2380]
//       [--initial-cluster-token=etcd-cluster] [--initial-advertise-peer-urls=http://localhost:2380]
//       [--data-dir=<name>.etcd] [--skip-hash-check]
//
// Output as etcdctl's: the answer on stdout ("Snapshot saved at <file>", the status line or
// table), structured logs on stderr, "Error: <message>" on stderr and exit code 1 on failure.
// save and restore show their progress on stderr (cli/progress.ts).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { makeClient } from '../api/grpc/services';
import { Logger } from '../util/log';
import { humanBytes, Progress } from './progress';
import { restoreSnapshot, snapshotStatus, SnapshotFileError, type SnapshotStatus } from '../storage/snapshot_file';
import { BootstrapError } from '../membership/bootstrap_config';
import { UrlError } from '../membership/urls';
import { fsyncDir } from '../storage/snapshotter';

const usage = `Usage:
  concord snapshot save <filename> [--endpoints=<addr>] [--dial-timeout=2s] [--command-timeout=5s]
      [--user=name[:password]] [--password=...]
  concord snapshot status <filename> [-w simple|table|json|fields]
  concord snapshot restore <filename> [--name=default] [--initial-cluster=default=http://localhost:2380]
      [--initial-cluster-token=etcd-cluster] [--initial-advertise-peer-urls=http://localhost:2380]
      [--data-dir=<name>.etcd] [--skip-hash-check]
`;

/** A command line etcdctl refuses with ExitBadArgs (128). */
class UsageError extends Error {}
/** An output format etcdctl refuses with ExitBadFeature (4). */
class FormatError extends Error {}

// etcdctl 3.4's exit codes (ctlv3/command/error.go): ExitError for status and restore failures,
// ExitInterrupted for a failed save, ExitBadFeature for an output format, ExitBadArgs for the
// arguments.
const exitError = 1;
const exitBadFeature = 4;
const exitInterrupted = 5;
const exitBadArgs = 128;

interface Parsed {
  positional: string[];
  flags: Map<string, string>;
}

const booleanFlags = new Set(['skip-hash-check']);

/** Go pflag style: --name value, --name=value, -w value; booleans take no value (or =true/false). */
function parseFlags(args: string[]): Parsed {
  const positional: string[] = [];
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('-') || a === '-') {
      positional.push(a);
      continue;
    }
    let name = a.replace(/^--?/, '');
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    if (name === 'w') name = 'write-out';
    if (value === undefined) {
      if (booleanFlags.has(name)) value = 'true';
      else {
        value = args[++i];
        if (value === undefined) throw new UsageError(`flag needs an argument: --${name}`);
      }
    }
    flags.set(name, value);
  }
  return { positional, flags };
}

/** A Go duration ("2s", "500ms", "1m30s") in milliseconds. */
export function parseGoDuration(s: string): number {
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const re = /(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let at = 0;
  if (s === '0') return 0;
  while (at < s.length) {
    re.lastIndex = at;
    const m = re.exec(s);
    if (m === null) throw new UsageError(`invalid duration "${s}"`);
    total += Number(m[1]) * unit[m[2]!]!;
    at = re.lastIndex;
  }
  if (at === 0) throw new UsageError(`invalid duration "${s}"`);
  return total;
}

function known(p: Parsed, names: string[]): void {
  for (const k of p.flags.keys()) if (!names.includes(k)) throw new UsageError(`unknown flag: --${k}`);
}

function oneFile(p: Parsed, cmd: string): string {
  if (p.positional.length !== 1) {
    // etcdctl's own two wordings.
    throw new UsageError(cmd === 'save' ? 'snapshot save expects one argument' : `snapshot ${cmd} requires exactly one argument`);
  }
  return p.positional[0]!;
}

/** The progress display for this process: a bar when stdout is a terminal, lines otherwise. */
function progressFor(label: string): Progress {
  return new Progress({ label, total: 0, tty: process.stdout.isTTY === true, write: (s) => process.stderr.write(s) });
}

/** 'http://host:port' -> 'host:port'. */
function grpcAddress(endpoint: string): string {
  return endpoint.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
}

const globalFlags = ['endpoints', 'dial-timeout', 'command-timeout', 'write-out', 'user', 'password'];

/**
 * The simple token for --user name:password (or --user name --password p), as etcdctl gets it
 * (Auth.Authenticate), or null without --user. Maintenance.Snapshot needs root once auth is on.
 */
async function authToken(p: Parsed, address: string, deadline: number): Promise<string | null> {
  const user = p.flags.get('user');
  if (user === undefined) return null;
  const colon = user.indexOf(':');
  const name = colon < 0 ? user : user.slice(0, colon);
  const password = colon < 0 ? p.flags.get('password') : user.slice(colon + 1);
  if (password === undefined) throw new UsageError('--user without a password needs --password (no prompt here)');
  const auth = makeClient('etcdserverpb.Auth', address, grpc.credentials.createInsecure());
  try {
    return await new Promise<string>((resolve, reject) => {
      (auth as unknown as { Authenticate(r: object, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: { token?: string | null }) => void): void })
        .Authenticate({ name, password }, new grpc.Metadata(), { deadline }, (err, r) => {
          if (err) reject(new SnapshotFileError(err.details || err.message));
          else resolve(r?.token ?? '');
        });
    });
  } finally {
    auth.close();
  }
}

async function save(p: Parsed, log: Logger): Promise<void> {
  known(p, globalFlags);
  const file = oneFile(p, 'save');
  const endpoints = (p.flags.get('endpoints') ?? '127.0.0.1:2379').split(',').filter((e) => e !== '');
  if (endpoints.length !== 1) {
    throw new SnapshotFileError(`snapshot must be requested to one selected node, not multiple [${endpoints.join(' ')}]`);
  }
  const endpoint = endpoints[0]!;
  const dialMs = parseGoDuration(p.flags.get('dial-timeout') ?? '2s');
  // etcdctl 3.4 bounds the whole save by --command-timeout (its commandCtx).
  const commandMs = parseGoDuration(p.flags.get('command-timeout') ?? '5s');
  const part = file + '.part';
  fs.rmSync(part, { force: true });
  const out = fs.openSync(part, 'w', 0o600);
  log.info('created temporary db file', { path: part });
  const client = makeClient('etcdserverpb.Maintenance', grpcAddress(endpoint), grpc.credentials.createInsecure(),
    { 'grpc.max_receive_message_length': -1 });
  const started = performance.now();
  let ok = false;
  try {
    await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + dialMs, (err) => (err ? reject(new SnapshotFileError('context deadline exceeded')) : resolve())));
    const md = new grpc.Metadata();
    const token = await authToken(p, grpcAddress(endpoint), Date.now() + commandMs);
    if (token !== null) md.set('token', token);
    log.info('fetching snapshot', { endpoint });
    const progress = progressFor('saving');
    const size = await new Promise<number>((resolve, reject) => {
      const call = (client as unknown as { Snapshot(req: object, md: grpc.Metadata, o: grpc.CallOptions): grpc.ClientReadableStream<{ blob: Uint8Array; remaining_bytes: unknown }> })
        .Snapshot({}, md, { deadline: Date.now() + commandMs });
      const digest = createHash('sha256');
      // The last blob is the digest of everything before it: a blob is hashed once the next
      // one arrives (then it was not the last).
      let held: Buffer | null = null;
      let written = 0;
      let first = true;
      call.on('data', (r: { blob: Uint8Array; remaining_bytes: unknown }) => {
        const blob = Buffer.from(r.blob.buffer, r.blob.byteOffset, r.blob.length);
        if (first) {
          first = false;
          progress.setTotal(blob.length + Number(String(r.remaining_bytes ?? 0)) + 32);
        }
        if (held !== null) digest.update(held);
        held = blob;
        let at = 0;
        while (at < blob.length) at += fs.writeSync(out, blob, at, blob.length - at, written + at);
        written += blob.length;
        progress.add(blob.length);
      });
      call.on('error', (err: grpc.ServiceError) => reject(new SnapshotFileError(err.details || err.message)));
      call.on('end', () => {
        progress.finish();
        const trailer = held;
        if (trailer === null || trailer.length !== 32) return reject(new SnapshotFileError('snapshot stream ended without its sha256 trailer'));
        const body = written - 32;
        if (body % 512 !== 0) return reject(new SnapshotFileError(`snapshot body is ${body} bytes, not a multiple of 512`));
        const sum = digest.digest();
        if (!sum.equals(trailer)) return reject(new SnapshotFileError('sha256 checksum of the received snapshot does not match its trailer'));
        resolve(written);
      });
    });
    fs.fsyncSync(out);
    fs.closeSync(out);
    fs.renameSync(part, file);
    fsyncDir(path.dirname(path.resolve(file)));
    ok = true;
    log.info('fetched snapshot', { endpoint, size: humanBytes(size), took: (performance.now() - started) / 1000 });
    log.info('saved', { path: file });
    process.stdout.write(`Snapshot saved at ${file}\n`);
  } finally {
    client.close();
    if (!ok) {
      try { fs.closeSync(out); } catch { /* closed */ }
      fs.rmSync(part, { force: true });
    }
  }
}

/** tablewriter as etcdctl uses it: centred upper-case header, right-aligned cells. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const sep = '+' + widths.map((w) => '-'.repeat(w + 2)).join('+') + '+\n';
  const center = (s: string, w: number): string => {
    const gap = w - s.length;
    const left = Math.floor(gap / 2);
    return ' '.repeat(left) + s + ' '.repeat(gap - left);
  };
  const line = (cells: string[]): string => '| ' + cells.join(' | ') + ' |\n';
  let out = sep + line(header.map((h, i) => center(h, widths[i]!))) + sep;
  for (const r of rows) out += line(r.map((c, i) => c.padStart(widths[i]!)));
  return out + sep;
}

export function formatStatus(s: SnapshotStatus, format: string): string {
  const hash = s.hash.toString(16);
  switch (format) {
    case 'simple':
      return `${hash}, ${s.revision}, ${s.totalKey}, ${humanBytes(s.totalSize)}\n`;
    case 'table':
      return formatTable(['HASH', 'REVISION', 'TOTAL KEYS', 'TOTAL SIZE'],
        [[hash, String(s.revision), String(s.totalKey), humanBytes(s.totalSize)]]);
    case 'json':
      return JSON.stringify({ hash: s.hash, revision: s.revision, totalKey: s.totalKey, totalSize: s.totalSize }) + '\n';
    case 'fields':
      return `"Hash" : ${s.hash}\n"Revision" : ${s.revision}\n"Keys" : ${s.totalKey}\n"Size" : ${s.totalSize}\n`;
    case 'protobuf':
      throw new FormatError('protobuf not supported as output format');
    default:
      throw new FormatError('unsupported output format');
  }
}

async function status(p: Parsed): Promise<void> {
  known(p, globalFlags);
  const file = oneFile(p, 'status');
  const format = p.flags.get('write-out') ?? 'simple';
  // An unknown format is refused before the file is read, protobuf after (etcdctl has a
  // protobuf printer, which refuses this answer when it prints).
  if (format !== 'protobuf') formatStatus({ hash: 0, revision: 0, totalKey: 0, totalSize: 0 }, format);
  if (!fs.existsSync(file)) throw new SnapshotFileError(`stat ${file}: no such file or directory`);
  process.stdout.write(formatStatus(await snapshotStatus(file), format));
}

async function restore(p: Parsed, log: Logger): Promise<void> {
  known(p, [...globalFlags, 'name', 'initial-cluster', 'initial-cluster-token', 'initial-advertise-peer-urls', 'data-dir', 'skip-hash-check']);
  const file = oneFile(p, 'restore');
  const name = p.flags.get('name') ?? 'default';
  const skip = p.flags.get('skip-hash-check') ?? 'false';
  if (skip !== 'true' && skip !== 'false') throw new UsageError(`invalid argument "${skip}" for "--skip-hash-check"`);
  const dataDir = p.flags.get('data-dir') || `${name}.etcd`;
  if (fs.existsSync(dataDir)) throw new SnapshotFileError(`data-dir ${JSON.stringify(dataDir)} exists`);
  const progress = progressFor('restoring');
  await restoreSnapshot({
    file, name, dataDir,
    initialCluster: p.flags.get('initial-cluster') ?? 'default=http://localhost:2380',
    initialClusterToken: p.flags.get('initial-cluster-token') ?? 'etcd-cluster',
    initialAdvertisePeerUrls: (p.flags.get('initial-advertise-peer-urls') ?? 'http://localhost:2380').split(','),
    skipHashCheck: skip === 'true',
    log: (msg, fields) => log.info(msg, fields),
    progress: { start: (total) => progress.setTotal(total), add: (n) => progress.add(n), finish: () => progress.finish() },
  });
}

export async function snapshotMain(args: string[]): Promise<number> {
  const log = new Logger('info');
  const [cmd, ...rest] = args;
  try {
    const p = parseFlags(rest);
    switch (cmd) {
      case 'save': await save(p, log); return 0;
      case 'status': await status(p); return 0;
      case 'restore': await restore(p, log); return 0;
      default:
        process.stderr.write(usage);
        return cmd === undefined || cmd === 'help' || cmd === '--help' ? 0 : 2;
    }
  } catch (err) {
    process.stderr.write(`Error: ${(err as Error)?.message ?? String(err)}\n`);
    if (err instanceof UsageError) return exitBadArgs;
    if (err instanceof FormatError) return exitBadFeature;
    if (!(err instanceof SnapshotFileError || err instanceof BootstrapError || err instanceof UrlError)) {
      // Not a refusal this tool names: a bug or an I/O failure; the stack helps.
      process.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
    }
    return cmd === 'save' ? exitInterrupted : exitError;
  }
}

if (require.main === module) {
  // `node dist/src/cli/snapshot.js save ...` (bin/concord passes the arguments after `snapshot`).
  void snapshotMain(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
