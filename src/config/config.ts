// Server configuration from etcd-style flags, ETCD_* environment variables and a YAML
// --config-file (etcd: embed/config.go, etcdmain/config.go). Precedence as in etcd: a config
// file, when given (flag or ETCD_CONFIG_FILE), is used alone and the other flags and variables
// are ignored; otherwise flags override environment variables.
import * as fs from 'node:fs';
import YAML from 'yaml';
import * as limits from './limits';
import { isLogLevel } from '../util/log';

export interface Config {
  name: string;
  dataDir: string;
  listenClientUrls: string[];
  advertiseClientUrls: string[];
  listenClientHttpUrls: string[];
  listenMetricsUrls: string[];
  listenPeerUrls: string[];
  initialAdvertisePeerUrls: string[];
  initialCluster: string;
  initialClusterState: string;
  initialClusterToken: string;
  heartbeatIntervalMs: number;
  electionTimeoutMs: number;
  maxRequestBytes: number;
  maxTxnOps: number;
  quotaBackendBytes: number;
  maxConcurrentStreams: number;
  snapshotCount: number;
  logLevel: string;
  watchProgressNotifyIntervalMs: number;
  leaseCheckpointIntervalMs: number;
  leaseCheckpointEnabled: boolean;
  unsafeNoFsync: boolean;
}

type Kind = 'string' | 'int' | 'urls' | 'bool' | 'duration';

interface FlagSpec { key: keyof Config | null; kind: Kind; def: string; help: string }

/** Flags concord takes, by etcd's names; key null = accepted for compatibility, no effect yet. */
const flags: Record<string, FlagSpec> = {
  'name': { key: 'name', kind: 'string', def: 'default', help: 'Human-readable name for this member.' },
  'data-dir': { key: 'dataDir', kind: 'string', def: '', help: 'Path to the data directory (default "${name}.concord").' },
  'listen-client-urls': { key: 'listenClientUrls', kind: 'urls', def: 'http://127.0.0.1:2379', help: 'URLs to listen on for client traffic.' },
  'advertise-client-urls': { key: 'advertiseClientUrls', kind: 'urls', def: 'http://127.0.0.1:2379', help: 'Client URLs advertised to the cluster.' },
  'listen-client-http-urls': { key: 'listenClientHttpUrls', kind: 'urls', def: '', help: 'Extra URLs serving only the HTTP/JSON gateway and /health, /metrics (etcd 3.5); the client URLs serve gRPC and HTTP on one port either way.' },
  'listen-metrics-urls': { key: 'listenMetricsUrls', kind: 'urls', def: '', help: 'Extra URLs serving only /metrics and /health.' },
  'metrics': { key: null, kind: 'string', def: 'basic', help: 'Accepted for etcd compatibility; concord exports one set of metrics.' },
  'listen-peer-urls': { key: 'listenPeerUrls', kind: 'urls', def: 'http://localhost:2380', help: 'URLs to listen on for peer traffic.' },
  'initial-advertise-peer-urls': { key: 'initialAdvertisePeerUrls', kind: 'urls', def: 'http://localhost:2380', help: "This member's peer URLs to advertise to the cluster." },
  'initial-cluster': { key: 'initialCluster', kind: 'string', def: '', help: 'Initial cluster configuration for bootstrapping.' },
  'initial-cluster-state': { key: 'initialClusterState', kind: 'string', def: 'new', help: 'Initial cluster state ("new" or "existing").' },
  'initial-cluster-token': { key: 'initialClusterToken', kind: 'string', def: 'etcd-cluster', help: 'Initial cluster token.' },
  'heartbeat-interval': { key: 'heartbeatIntervalMs', kind: 'int', def: '100', help: 'Time (in milliseconds) of a heartbeat interval.' },
  'election-timeout': { key: 'electionTimeoutMs', kind: 'int', def: '1000', help: 'Time (in milliseconds) for an election to timeout.' },
  'max-request-bytes': { key: 'maxRequestBytes', kind: 'int', def: String(limits.requestBytesDefault), help: 'Maximum client request size in bytes the server will accept.' },
  'max-txn-ops': { key: 'maxTxnOps', kind: 'int', def: String(limits.txnOpsDefault), help: 'Maximum number of operations permitted in a transaction.' },
  'quota-backend-bytes': { key: 'quotaBackendBytes', kind: 'int', def: '0', help: 'Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB).' },
  'max-concurrent-streams': { key: 'maxConcurrentStreams', kind: 'int', def: '4294967295', help: 'Maximum concurrent streams that each client can open at a time.' },
  'snapshot-count': { key: 'snapshotCount', kind: 'int', def: '100000', help: 'Number of committed transactions to trigger a snapshot to disk.' },
  'experimental-watch-progress-notify-interval': { key: 'watchProgressNotifyIntervalMs', kind: 'duration', def: '10m0s', help: 'Duration of periodic watch progress notifications.' },
  'experimental-lease-checkpoint-interval': { key: 'leaseCheckpointIntervalMs', kind: 'duration', def: '5m0s', help: 'Duration between checkpoints of the remaining TTLs of long leases.' },
  'experimental-enable-lease-checkpoint': { key: 'leaseCheckpointEnabled', kind: 'bool', def: 'true', help: 'Persist the remaining TTL of leases so restarts and leader changes keep it (etcd 3.6 default).' },
  'experimental-enable-lease-checkpoint-persist': { key: null, kind: 'bool', def: 'true', help: 'Accepted for etcd compatibility; checkpoints are always persisted.' },
  'unsafe-no-fsync': { key: 'unsafeNoFsync', kind: 'bool', def: 'false', help: 'Disables fsync, unsafe, will cause data loss (etcd 3.5).' },
  'log-level': { key: 'logLevel', kind: 'string', def: 'info', help: 'Log level: debug, info, warn, error, panic, or fatal.' },
  'logger': { key: null, kind: 'string', def: 'zap', help: 'Accepted for etcd compatibility; concord always logs JSON lines.' },
  'log-outputs': { key: null, kind: 'string', def: 'default', help: 'Accepted for etcd compatibility; concord logs to stderr.' },
  'enable-v2': { key: null, kind: 'bool', def: 'false', help: 'Accepted for etcd compatibility; the v2 API is not served.' },
};

/**
 * A configuration etcd would refuse, and how: a command line that does not parse exits 2 after
 * the usage (Go's flag package: 'flag provided but not defined: -x'); a value refused once
 * parsed - a positional argument, an ETCD_* variable, the config file, a check between flags -
 * exits 1 ('failed to verify flags').
 */
export class ConfigError extends Error {
  readonly exitCode: 1 | 2;
  constructor(message: string, exitCode: 1 | 2 = 2) {
    super(message);
    this.name = 'ConfigError';
    this.exitCode = exitCode;
  }
}

/** A refused value (exit code 1). */
function verifyError(message: string): ConfigError {
  return new ConfigError(message, 1);
}

function parseValue(name: string, spec: FlagSpec, raw: string): unknown {
  switch (spec.kind) {
    case 'string': return raw;
    case 'bool': {
      if (raw === 'true' || raw === '1' || raw === '') return true;
      if (raw === 'false' || raw === '0') return false;
      throw new ConfigError(`invalid boolean value "${raw}" for flag -${name}`);
    }
    case 'int': {
      if (!/^-?\d+$/.test(raw)) throw new ConfigError(`invalid value "${raw}" for flag -${name}: parse error`);
      return Number(raw);
    }
    case 'duration': {
      const ms = parseGoDuration(raw);
      if (ms === null) throw new ConfigError(`invalid value "${raw}" for flag -${name}: parse error`);
      return ms;
    }
    case 'urls': {
      const urls = raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
      for (const u of urls) {
        let parsed: URL;
        try {
          parsed = new URL(u);
        } catch {
          throw new ConfigError(`invalid value "${raw}" for flag -${name}: URL "${u}" is not valid`);
        }
        if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:' && parsed.protocol !== 'unix:') {
          throw new ConfigError(`invalid value "${raw}" for flag -${name}: URL scheme must be http, https, unix, or unixs: ${u}`);
        }
      }
      return urls;
    }
  }
}

const durationUnitsMs: Record<string, number> = {
  ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000,
};

/** A Go time.Duration string ("500ms", "1m30s", "0") in milliseconds, or null. */
export function parseGoDuration(raw: string): number | null {
  if (raw === '0') return 0;
  if (!/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(raw)) return null;
  let ms = 0;
  for (const m of raw.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(m[1]) * durationUnitsMs[m[2]!]!;
  return ms;
}

/** Something to log once the logger exists (etcd logs the same while parsing). */
export interface Notice { level: 'info' | 'warn'; msg: string; fields: Record<string, unknown> }

export interface ParsedArgs { config: Config; help: boolean; version: boolean; notices: Notice[] }

/** ETCD_<FLAG>, e.g. ETCD_DATA_DIR (etcd: pkg/flags FlagToEnv). */
function envName(flag: string): string {
  return 'ETCD_' + flag.toUpperCase().replace(/-/g, '_');
}

export function parseArgs(argv: string[], env: NodeJS.ProcessEnv): ParsedArgs {
  const values = new Map<string, unknown>();
  for (const [name, spec] of Object.entries(flags)) values.set(name, parseValue(name, spec, spec.def));
  const notices: Notice[] = [];
  const given = new Set<string>();
  let help = false;
  let version = false;
  let configFile: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      if (i + 1 < argv.length) throw verifyError(`'${argv[i + 1]}' is not a valid flag`);
      break;
    }
    // Go's flag package stops at the first non-flag argument; etcd then refuses it.
    if (!arg.startsWith('-') || arg === '-') throw verifyError(`'${arg}' is not a valid flag`);
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (name === 'h' || name === 'help') { help = true; continue; }
    if (name === 'version') { version = true; continue; }
    let raw: string | undefined = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (name === 'config-file') {
      configFile = raw ?? argv[++i] ?? '';
      continue;
    }
    const spec = flags[name];
    if (spec === undefined) throw new ConfigError(`flag provided but not defined: -${name}`);
    if (raw === undefined) {
      if (spec.kind === 'bool') raw = '';
      else {
        raw = argv[++i];
        if (raw === undefined) throw new ConfigError(`flag needs an argument: -${name}`);
      }
    }
    values.set(name, parseValue(name, spec, raw));
    given.add(name);
  }
  configFile = configFile ?? (env['ETCD_CONFIG_FILE'] || null);
  if (configFile !== null) {
    // As etcd: the file alone; the other flags and the ETCD_* variables are ignored.
    for (const [name, spec] of Object.entries(flags)) values.set(name, parseValue(name, spec, spec.def));
    loadConfigFile(configFile, values);
    notices.push({
      level: 'info',
      msg: 'loaded server configuration, other configuration command line flags and environment variables will be ignored if provided',
      fields: { path: configFile },
    });
  } else {
    applyEnv(env, values, given, notices);
  }
  const config = {} as Record<string, unknown>;
  for (const [name, spec] of Object.entries(flags)) if (spec.key !== null) config[spec.key] = values.get(name);
  const c = config as unknown as Config;
  if (c.dataDir === '') c.dataDir = `${c.name}.concord`;
  if (c.initialCluster === '') c.initialCluster = `${c.name}=${c.initialAdvertisePeerUrls.join(',')}`;
  validate(c);
  return { config: c, help, version, notices };
}

/**
 * ETCD_<FLAG> variables for the flags not given on the command line (etcd: pkg/flags
 * SetFlagsFromEnv). A variable shadowed by its flag is fatal in etcd; concord lets the flag win,
 * as its README says, and warns with etcd's words.
 */
function applyEnv(env: NodeJS.ProcessEnv, values: Map<string, unknown>, given: Set<string>, notices: Notice[]): void {
  const known = new Set<string>(['ETCD_CONFIG_FILE']);
  for (const [name, spec] of Object.entries(flags)) {
    const key = envName(name);
    known.add(key);
    const v = env[key];
    if (v === undefined || v === '') continue;
    if (given.has(name)) {
      notices.push({
        level: 'warn',
        msg: 'conflicting environment variable is shadowed by corresponding command-line flag (either unset environment variable or disable flag)',
        fields: { 'environment-variable': key },
      });
      continue;
    }
    try {
      values.set(name, parseValue(name, spec, v));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      throw verifyError(`invalid value ${JSON.stringify(v)} for ${key}: ${err.message.replace(/^.*: /, '')}`);
    }
    notices.push({ level: 'info', msg: 'recognized and used environment variable', fields: { 'variable-name': key, 'variable-value': v } });
  }
  for (const key of Object.keys(env).sort()) {
    if (key.startsWith('ETCD_') && !known.has(key)) {
      notices.push({ level: 'warn', msg: 'unrecognized environment variable', fields: { 'environment-variable': `${key}=${env[key]}` } });
    }
  }
}

function loadConfigFile(file: string, values: Map<string, unknown>): void {
  let doc: unknown;
  try {
    doc = YAML.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw verifyError(`cannot load config file ${file}: ${(err as Error).message}`);
  }
  if (doc === null || typeof doc !== 'object') return;
  for (const [name, v] of Object.entries(doc as Record<string, unknown>)) {
    const spec = flags[name];
    if (spec === undefined) continue; // etcd ignores unknown keys in config files
    try {
      values.set(name, parseValue(name, spec, Array.isArray(v) ? v.join(',') : String(v)));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      throw verifyError(`config file ${file}: ${err.message.replace('for flag -', 'for ')}`);
    }
  }
}

function validate(c: Config): void {
  if (c.maxRequestBytes <= 0) throw verifyError('--max-request-bytes must be positive');
  if (c.maxTxnOps <= 0) throw verifyError('--max-txn-ops must be positive');
  if (c.heartbeatIntervalMs <= 0) throw verifyError('--heartbeat-interval must be positive');
  if (c.electionTimeoutMs < 5 * c.heartbeatIntervalMs) {
    throw verifyError(`--election-timeout[${c.electionTimeoutMs}ms] should be at least as 5 times as --heartbeat-interval[${c.heartbeatIntervalMs}ms]`);
  }
  if (c.quotaBackendBytes < 0) throw verifyError('--quota-backend-bytes must not be negative');
  if (c.initialClusterState !== 'new' && c.initialClusterState !== 'existing') {
    throw verifyError(`invalid value "${c.initialClusterState}" for flag -initial-cluster-state`);
  }
  // etcd 3.4 panics on an unknown level (exit 2); refusing it is the sane version of that.
  if (!isLogLevel(c.logLevel)) {
    throw verifyError(`unknown log level "${c.logLevel}" for --log-level (debug, info, warn, error, panic, fatal)`);
  }
}

export function usage(): string {
  const lines = ['Usage: concord [flags]', '', 'Flags (etcd names):'];
  for (const [name, spec] of Object.entries(flags)) {
    lines.push(`  --${name}${spec.kind === 'bool' ? '' : ' <' + spec.kind + '>'}`);
    lines.push(`      ${spec.help}${spec.def === '' ? '' : ` (default ${JSON.stringify(spec.def)})`}`);
  }
  lines.push('  --config-file <path>', '      Path to a YAML configuration file with etcd flag names as keys.');
  return lines.join('\n');
}
