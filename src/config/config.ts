// Server configuration from etcd-style flags, ETCD_* environment variables and a YAML
// --config-file (etcd: embed/config.go, etcdmain/config.go). Precedence as in etcd: a config
// file, when given (flag or ETCD_CONFIG_FILE), is used alone and the other flags and variables
// are ignored; otherwise flags override environment variables.
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import * as limits from './limits';
import { isLogLevel } from '../util/log';
import { JwtOptionsError, authTokenType, parseJwtOptions } from '../auth/jwt_tokens';
import * as schema from '../storage/schema';
import {
  BootstrapError, initialClusterDefault, initialClusterFromName, verifyBootstrapFlags,
  type InitialCluster, type InitialClusterState,
} from '../membership/bootstrap_config';
import { TlsSettingError, opensslCiphers, tlsVersion } from '../tls/tls_info';
import { UrlError, goQuote, isGoIp, parseGoUrl, parsePeerUrls, splitHostPort } from '../membership/urls';

export interface Config {
  name: string;
  dataDir: string;
  listenClientUrls: string[];
  advertiseClientUrls: string[];
  listenClientHttpUrls: string[];
  listenMetricsUrls: string[];
  /** etcd-normalized (url.String()) and sorted, as etcd holds them. */
  listenPeerUrls: string[];
  /** etcd-normalized (url.String()) and sorted: member ids hash these exact strings. */
  initialAdvertisePeerUrls: string[];
  /** --initial-cluster as given, or etcd's default (`<name>=<advertised peer URLs>`). */
  initialCluster: string;
  /**
   * --initial-cluster parsed and checked as etcd checks it before bootstrapping; null when the
   * data dir already holds a member: etcd then ignores every --initial-* flag (and so does
   * concord: the data dir's membership is used, see membership/bootstrap_config.ts planBootstrap).
   */
  initialClusterMembers: InitialCluster | null;
  /** --listen-peer-urls was given (flag, ETCD_ variable or config file), not defaulted. */
  listenPeerUrlsGiven: boolean;
  initialClusterState: InitialClusterState;
  initialClusterToken: string;
  heartbeatIntervalMs: number;
  electionTimeoutMs: number;
  preVote: boolean;
  strictReconfigCheck: boolean;
  /** --experimental-max-learners (etcd 3.5): learners the membership may hold at once. */
  maxLearners: number;
  /** --experimental-auto-promote-learners (concord): promote a learner once it has caught up. */
  autoPromoteLearners: boolean;
  maxRequestBytes: number;
  maxTxnOps: number;
  quotaBackendBytes: number;
  maxConcurrentStreams: number;
  snapshotCount: number;
  /** --experimental-snapshot-catchup-entries: applied entries kept for slow followers. */
  snapshotCatchUpEntries: number;
  logLevel: string;
  watchProgressNotifyIntervalMs: number;
  leaseCheckpointIntervalMs: number;
  leaseCheckpointEnabled: boolean;
  unsafeNoFsync: boolean;
  /** --experimental-initial-corrupt-check (etcd 3.5): compare HashKV with the peers at start. */
  initialCorruptCheck: boolean;
  /** --experimental-corrupt-check-time (etcd 3.5) in ms; 0: no periodic check. */
  corruptCheckIntervalMs: number;
  /** --auth-token: 'simple' or 'jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...' (auth/jwt_tokens.ts). */
  authToken: string;
  /** --auth-token-ttl, seconds. */
  authTokenTtl: number;
  /** --bcrypt-cost. */
  bcryptCost: number;
  /** --auth-password-min-length (concord). */
  authPasswordMinLength: number;
  /** Client TLS (--cert-file, --key-file, --trusted-ca-file, --client-cert-auth, --auto-tls). */
  certFile: string;
  keyFile: string;
  trustedCaFile: string;
  clientCertAuth: boolean;
  autoTls: boolean;
  /** Peer TLS (--peer-*): the same for the peer port and the connections to peers. */
  peerCertFile: string;
  peerKeyFile: string;
  peerTrustedCaFile: string;
  peerClientCertAuth: boolean;
  peerAutoTls: boolean;
  peerCertAllowedCn: string;
  /** --cipher-suites: etcd (Go) names, comma-separated; both sides. */
  cipherSuites: string;
  /** --tls-min-version / --tls-max-version (etcd 3.5): '', TLS1.2 or TLS1.3. */
  tlsMinVersion: string;
  tlsMaxVersion: string;
  /** --self-signed-cert-validity (etcd 3.5): years the --auto-tls certificates are valid. */
  selfSignedCertValidity: number;
}

/**
 * How a flag's value parses, as the Go type etcd declares it with: int/uint (strconv base 0:
 * "0x10", "0o17", "017", "1_000"), bool (strconv.ParseBool), Go durations, URL lists (client URLs:
 * WHATWG-parsed; peerUrls: etcd types.NewURLs exactly, since member ids hash them), and
 * clusterState (etcd's SelectiveStringValue of new/existing).
 */
type Kind = 'string' | 'int' | 'uint' | 'urls' | 'peerUrls' | 'bool' | 'duration' | 'clusterState';

interface FlagSpec { key: keyof Config | null; kind: Kind; def: string; help: string }

/** etcd 3.4 and 3.5 DefaultSnapshotCount (3.6 lowers it to 10,000). */
const snapshotCountDefault = 100_000;

/** Flags concord takes, by etcd's names; key null = accepted for compatibility, no effect yet. */
const flags: Record<string, FlagSpec> = {
  'name': { key: 'name', kind: 'string', def: 'default', help: 'Human-readable name for this member.' },
  'data-dir': { key: 'dataDir', kind: 'string', def: '', help: 'Path to the data directory (default "${name}.concord").' },
  'listen-client-urls': { key: 'listenClientUrls', kind: 'urls', def: 'http://127.0.0.1:2379', help: 'URLs to listen on for client traffic.' },
  'advertise-client-urls': { key: 'advertiseClientUrls', kind: 'urls', def: 'http://127.0.0.1:2379', help: 'Client URLs advertised to the cluster.' },
  'listen-client-http-urls': { key: 'listenClientHttpUrls', kind: 'urls', def: '', help: 'Extra URLs serving only the HTTP/JSON gateway and /health, /metrics (etcd 3.5); the client URLs serve gRPC and HTTP on one port either way.' },
  'listen-metrics-urls': { key: 'listenMetricsUrls', kind: 'urls', def: '', help: 'Extra URLs serving only /metrics and /health.' },
  'metrics': { key: null, kind: 'string', def: 'basic', help: 'Accepted for etcd compatibility; concord exports one set of metrics.' },
  'listen-peer-urls': { key: 'listenPeerUrls', kind: 'peerUrls', def: 'http://localhost:2380', help: 'List of URLs to listen on for peer traffic.' },
  'initial-advertise-peer-urls': { key: 'initialAdvertisePeerUrls', kind: 'peerUrls', def: 'http://localhost:2380', help: "List of this member's peer URLs to advertise to the rest of the cluster." },
  'initial-cluster': { key: 'initialCluster', kind: 'string', def: initialClusterDefault, help: 'Initial cluster configuration for bootstrapping: name=peer-url,... (a name repeats for several URLs). Not given: <name>=<initial-advertise-peer-urls> (etcd derives it only for a --name other than default).' },
  'initial-cluster-state': { key: 'initialClusterState', kind: 'clusterState', def: 'new', help: "Initial cluster state ('new' or 'existing'). Ignored, as the other --initial-* flags, once the data dir holds a member." },
  'initial-cluster-token': { key: 'initialClusterToken', kind: 'string', def: 'etcd-cluster', help: 'Initial cluster token for the cluster during bootstrap: member and cluster ids derive from it, so distinct clusters never mistake each other.' },
  'heartbeat-interval': { key: 'heartbeatIntervalMs', kind: 'uint', def: '100', help: 'Time (in milliseconds) of a heartbeat interval.' },
  'election-timeout': { key: 'electionTimeoutMs', kind: 'uint', def: '1000', help: 'Time (in milliseconds) for an election to timeout.' },
  'pre-vote': { key: 'preVote', kind: 'bool', def: 'true', help: 'Enable to run an additional Raft election phase (etcd 3.5 default; 3.4 defaults to false).' },
  'strict-reconfig-check': { key: 'strictReconfigCheck', kind: 'bool', def: 'true', help: 'Reject reconfiguration requests that would cause quorum loss.' },
  'experimental-max-learners': { key: 'maxLearners', kind: 'int', def: '1', help: 'Sets the maximum number of learners that can be available in the cluster membership (etcd 3.5).' },
  'experimental-auto-promote-learners': { key: 'autoPromoteLearners', kind: 'bool', def: 'false', help: 'Promote a learner to a voting member by itself once it has caught up with the leader (the check etcd makes before MemberPromote), instead of waiting for "member promote".' },
  'max-request-bytes': { key: 'maxRequestBytes', kind: 'int', def: String(limits.requestBytesDefault), help: 'Maximum client request size in bytes the server will accept.' },
  'auth-token': { key: 'authToken', kind: 'string', def: 'simple', help: "Specify auth token specific options. ('simple' or 'jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...')" },
  'auth-token-ttl': { key: 'authTokenTtl', kind: 'uint', def: '300', help: 'The lifetime in seconds of the auth token.' },
  'auth-password-min-length': { key: 'authPasswordMinLength', kind: 'uint', def: '0', help: 'Refuse passwords shorter than this many characters in user add and passwd (concord; 0: any, as etcd).' },
  'bcrypt-cost': { key: 'bcryptCost', kind: 'uint', def: '10', help: 'Specify bcrypt algorithm cost factor for auth password hashing.' },
  'max-txn-ops': { key: 'maxTxnOps', kind: 'int', def: String(limits.txnOpsDefault), help: 'Maximum number of operations permitted in a transaction.' },
  'quota-backend-bytes': { key: 'quotaBackendBytes', kind: 'int', def: '0', help: 'Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB).' },
  'max-concurrent-streams': { key: 'maxConcurrentStreams', kind: 'int', def: '4294967295', help: 'Maximum concurrent streams that each client can open at a time.' },
  'snapshot-count': { key: 'snapshotCount', kind: 'uint', def: String(snapshotCountDefault), help: 'Number of committed transactions to trigger a snapshot to disk (0: the default).' },
  'experimental-snapshot-catchup-entries': { key: 'snapshotCatchUpEntries', kind: 'uint', def: '5000', help: 'Number of entries for a slow follower to catch up after compacting the raft log entries.' },
  'experimental-watch-progress-notify-interval': { key: 'watchProgressNotifyIntervalMs', kind: 'duration', def: '10m0s', help: 'Duration of periodic watch progress notifications.' },
  'experimental-lease-checkpoint-interval': { key: 'leaseCheckpointIntervalMs', kind: 'duration', def: '5m0s', help: 'Duration between checkpoints of the remaining TTLs of long leases.' },
  'experimental-enable-lease-checkpoint': { key: 'leaseCheckpointEnabled', kind: 'bool', def: 'true', help: 'Persist the remaining TTL of leases so restarts and leader changes keep it (etcd 3.6 default).' },
  'experimental-enable-lease-checkpoint-persist': { key: null, kind: 'bool', def: 'true', help: 'Accepted for etcd compatibility; checkpoints are always persisted.' },
  'experimental-initial-corrupt-check': { key: 'initialCorruptCheck', kind: 'bool', def: 'false', help: 'Enable to check data corruption before serving any client/peer traffic.' },
  'experimental-corrupt-check-time': { key: 'corruptCheckIntervalMs', kind: 'duration', def: '0s', help: 'Duration of time between cluster corruption check passes.' },
  'unsafe-no-fsync': { key: 'unsafeNoFsync', kind: 'bool', def: 'false', help: 'Disables fsync, unsafe, will cause data loss (etcd 3.5).' },
  'cert-file': { key: 'certFile', kind: 'string', def: '', help: 'Path to the client server TLS cert file.' },
  'key-file': { key: 'keyFile', kind: 'string', def: '', help: 'Path to the client server TLS key file.' },
  'client-cert-auth': { key: 'clientCertAuth', kind: 'bool', def: 'false', help: 'Enable client cert authentication.' },
  'trusted-ca-file': { key: 'trustedCaFile', kind: 'string', def: '', help: 'Path to the client server TLS trusted CA cert file.' },
  'auto-tls': { key: 'autoTls', kind: 'bool', def: 'false', help: 'Client TLS using generated certificates (in <data-dir>/fixtures/client).' },
  'peer-cert-file': { key: 'peerCertFile', kind: 'string', def: '', help: 'Path to the peer server TLS cert file.' },
  'peer-key-file': { key: 'peerKeyFile', kind: 'string', def: '', help: 'Path to the peer server TLS key file.' },
  'peer-client-cert-auth': { key: 'peerClientCertAuth', kind: 'bool', def: 'false', help: 'Enable peer client cert authentication.' },
  'peer-trusted-ca-file': { key: 'peerTrustedCaFile', kind: 'string', def: '', help: 'Path to the peer server TLS trusted CA file.' },
  'peer-cert-allowed-cn': { key: 'peerCertAllowedCn', kind: 'string', def: '', help: 'Required CN for client certs connecting to the peer endpoint.' },
  'peer-auto-tls': { key: 'peerAutoTls', kind: 'bool', def: 'false', help: 'Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided.' },
  'cipher-suites': { key: 'cipherSuites', kind: 'string', def: '', help: 'Comma-separated list of supported TLS cipher suites between client/server and peers (empty: the TLS library\'s defaults).' },
  'tls-min-version': { key: 'tlsMinVersion', kind: 'string', def: 'TLS1.2', help: 'Minimum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3.' },
  'tls-max-version': { key: 'tlsMaxVersion', kind: 'string', def: '', help: 'Maximum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3 (empty: the highest the TLS library supports).' },
  'self-signed-cert-validity': { key: 'selfSignedCertValidity', kind: 'uint', def: '1', help: 'The validity period of the client and peer certificates generated by --auto-tls / --peer-auto-tls, unit is year.' },
  'log-level': { key: 'logLevel', kind: 'string', def: 'info', help: 'Log level: debug, info, warn, error, panic, or fatal.' },
  'logger': { key: null, kind: 'string', def: 'zap', help: 'Accepted for etcd compatibility; concord always logs JSON lines.' },
  'log-outputs': { key: null, kind: 'string', def: 'default', help: 'Accepted for etcd compatibility; concord logs to stderr.' },
  'enable-v2': { key: null, kind: 'bool', def: 'false', help: 'Accepted for etcd compatibility; the v2 API is not served.' },
};

/**
 * A configuration etcd would refuse, and how: a command line that does not parse exits 2 after
 * the usage (Go's flag package: 'flag provided but not defined: -x'); a value refused once
 * parsed - a positional argument, an ETCD_* variable, the config file, a check between flags -
 * exits 1, logged as `logMsg`: 'failed to verify flags', or for the --initial-cluster checks etcd
 * makes when it bootstraps, 'discovery failed' (etcd logs those as it starts the server).
 */
export class ConfigError extends Error {
  readonly exitCode: 1 | 2;
  readonly logMsg: string;
  constructor(message: string, exitCode: 1 | 2 = 2, logMsg = 'failed to verify flags') {
    super(message);
    this.name = 'ConfigError';
    this.exitCode = exitCode;
    this.logMsg = logMsg;
  }
}

/** A refused value (exit code 1). */
function verifyError(message: string): ConfigError {
  return new ConfigError(message, 1);
}

/** A value a flag's type refuses; `reason` is what Go's flag package puts after the colon. */
class FlagValueError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'FlagValueError';
  }
}

/** The command-line error for a refused value, in Go flag package words. */
function flagValueError(name: string, spec: FlagSpec, raw: string, err: FlagValueError): ConfigError {
  if (spec.kind === 'bool') return new ConfigError(`invalid boolean value ${goQuote(raw)} for -${name}: ${err.reason}`);
  return new ConfigError(`invalid value ${goQuote(raw)} for flag -${name}: ${err.reason}`);
}

/**
 * Go strconv.ParseInt / ParseUint with base 0, as the flag package parses int and uint flags
 * ("0x1f", "0o17", "017" octal, "0b101", "1_000"); concord also refuses what a JS number cannot
 * hold exactly (above 2^53 - 1) as out of range.
 */
export function parseGoInteger(raw: string, signed: boolean): number {
  let s = raw;
  let negative = false;
  if (signed && (s.startsWith('-') || s.startsWith('+'))) {
    negative = s[0] === '-';
    s = s.slice(1);
  }
  if (s === '') throw new FlagValueError('parse error');
  let base = 10n;
  if (s[0] === '0') {
    const p = s.length >= 3 ? s[1]!.toLowerCase() : '';
    if (p === 'b') base = 2n;
    else if (p === 'o') base = 8n;
    else if (p === 'x') base = 16n;
    else base = 8n;
    s = base === 8n && p !== 'o' ? s.slice(1) : s.slice(2);
  }
  let value = 0n;
  for (const ch of s) {
    if (ch === '_') continue;
    const d = parseInt(ch, 36);
    if (Number.isNaN(d) || BigInt(d) >= base) throw new FlagValueError('parse error');
    value = value * base + BigInt(d);
  }
  if (!goUnderscoreOk(raw)) throw new FlagValueError('parse error');
  if (negative) value = -value;
  const [min, max] = signed ? [-(1n << 63n), (1n << 63n) - 1n] : [0n, (1n << 64n) - 1n];
  if (value < min || value > max) throw new FlagValueError('value out of range');
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new FlagValueError('value out of range');
  }
  return Number(value);
}

/** Go strconv underscoreOK: '_' only between digits (or after a base prefix). */
function goUnderscoreOk(raw: string): boolean {
  let s = raw;
  if (s.startsWith('-') || s.startsWith('+')) s = s.slice(1);
  let saw = '^';
  let i = 0;
  let hex = false;
  if (s.length >= 2 && s[0] === '0' && 'box'.includes(s[1]!.toLowerCase())) {
    i = 2;
    saw = '0';
    hex = s[1]!.toLowerCase() === 'x';
  }
  for (; i < s.length; i++) {
    const c = s[i]!;
    if ((c >= '0' && c <= '9') || (hex && /[a-fA-F]/.test(c))) {
      saw = '0';
      continue;
    }
    if (c === '_') {
      if (saw !== '0') return false;
      saw = '_';
      continue;
    }
    if (saw === '_') return false;
    saw = '!';
  }
  return saw !== '_';
}

/** Go strconv.ParseBool. */
function parseGoBool(raw: string): boolean {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(raw)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(raw)) return false;
  throw new FlagValueError('parse error');
}

/**
 * A flag's value from its text. `current` is the value so far: etcd's peer URL flags
 * (flags.UniqueURLs with the exception "") keep it when given an empty string.
 */
function parseValue(spec: FlagSpec, raw: string, current: unknown): unknown {
  switch (spec.kind) {
    case 'string': return raw;
    case 'bool': return parseGoBool(raw);
    case 'int': return parseGoInteger(raw, true);
    case 'uint': return parseGoInteger(raw, false);
    case 'duration': {
      const ms = parseGoDuration(raw);
      if (ms === null) throw new FlagValueError('parse error');
      return ms;
    }
    case 'clusterState': {
      if (raw !== 'new' && raw !== 'existing') throw new FlagValueError('invalid value');
      return raw;
    }
    case 'peerUrls': {
      if (raw === '' && current !== undefined) return current;
      try {
        return parsePeerUrls(raw.split(','));
      } catch (err) {
        if (!(err instanceof UrlError)) throw err;
        throw new FlagValueError(err.message);
      }
    }
    case 'urls': {
      const urls = raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
      for (const u of urls) {
        let parsed: URL;
        try {
          parsed = new URL(u);
        } catch {
          throw new FlagValueError(`URL "${u}" is not valid`);
        }
        if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:' && parsed.protocol !== 'unix:') {
          throw new FlagValueError(`URL scheme must be http, https, unix, or unixs: ${u}`);
        }
      }
      return urls;
    }
  }
}

/** The default value of a flag. */
function defaultValue(spec: FlagSpec): unknown {
  return parseValue(spec, spec.def, undefined);
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
  for (const [name, spec] of Object.entries(flags)) values.set(name, defaultValue(spec));
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
      if (spec.kind === 'bool') raw = 'true';
      else {
        raw = argv[++i];
        if (raw === undefined) throw new ConfigError(`flag needs an argument: -${name}`);
      }
    }
    try {
      values.set(name, parseValue(spec, raw, values.get(name)));
    } catch (err) {
      if (!(err instanceof FlagValueError)) throw err;
      throw flagValueError(name, spec, raw, err);
    }
    given.add(name);
  }
  configFile = configFile ?? (env['ETCD_CONFIG_FILE'] || null);
  /** The flags set by the command line, an ETCD_* variable or the config file. */
  let set: Set<string>;
  if (configFile !== null) {
    // As etcd: the file alone; the other flags and the ETCD_* variables are ignored.
    for (const [name, spec] of Object.entries(flags)) values.set(name, defaultValue(spec));
    set = loadConfigFile(configFile, values);
    notices.push({
      level: 'info',
      msg: 'loaded server configuration, other configuration command line flags and environment variables will be ignored if provided',
      fields: { path: configFile },
    });
  } else {
    set = applyEnv(env, values, given, notices);
  }
  const config = {} as Record<string, unknown>;
  for (const [name, spec] of Object.entries(flags)) if (spec.key !== null) config[spec.key] = values.get(name);
  config['initialClusterMembers'] = null;
  config['listenPeerUrlsGiven'] = set.has('listen-peer-urls');
  const c = config as unknown as Config;
  applyDerivedDefaults(c, set, notices);
  validate(c);
  verifyBootstrap(c);
  return { config: c, help, version, notices };
}

/** Defaults that depend on other flags, as etcd derives them. `set`: the flags given a value. */
function applyDerivedDefaults(c: Config, set: Set<string>, notices: Notice[]): void {
  if (c.dataDir === '') c.dataDir = `${c.name}.concord`;
  // etcd UpdateDefaultClusterFromName: 'etcd --name abc' bootstraps abc=<advertised peer URLs>
  // (when --initial-cluster keeps its default text). Concord also does so for the name
  // 'default' when --initial-cluster is not set at all: etcd refuses 'etcd
  // --initial-advertise-peer-urls http://10.0.0.1:2380' alone ("--initial-cluster has
  // default=http://localhost:2380 but missing from --initial-advertise-peer-urls=..."), a
  // classic first-run mistake; concord starts the one-member cluster that command means.
  if ((c.name !== 'default' && c.initialCluster === initialClusterDefault) || !set.has('initial-cluster')) {
    c.initialCluster = initialClusterFromName(c.name, c.initialAdvertisePeerUrls);
  }
  if (c.snapshotCount === 0) {
    // etcd: etcdserver/server.go NewServer.
    notices.push({
      level: 'info',
      msg: 'updating snapshot-count to default',
      fields: { 'given-snapshot-count': 0, 'updated-snapshot-count': snapshotCountDefault },
    });
    c.snapshotCount = snapshotCountDefault;
  }
}

/**
 * ETCD_<FLAG> variables for the flags not given on the command line (etcd: pkg/flags
 * SetFlagsFromEnv). A variable shadowed by its flag is fatal in etcd; concord lets the flag win,
 * as its README says, and warns with etcd's words.
 */
function applyEnv(env: NodeJS.ProcessEnv, values: Map<string, unknown>, given: Set<string>, notices: Notice[]): Set<string> {
  const set = new Set(given);
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
      values.set(name, parseValue(spec, v, values.get(name)));
    } catch (err) {
      if (!(err instanceof FlagValueError)) throw err;
      throw verifyError(`invalid value ${goQuote(v)} for ${key}: ${err.reason}`);
    }
    set.add(name);
    notices.push({ level: 'info', msg: 'recognized and used environment variable', fields: { 'variable-name': key, 'variable-value': v } });
  }
  for (const key of Object.keys(env).sort()) {
    if (key.startsWith('ETCD_') && !known.has(key)) {
      notices.push({ level: 'warn', msg: 'unrecognized environment variable', fields: { 'environment-variable': `${key}=${env[key]}` } });
    }
  }
  return set;
}

/**
 * etcd's config file holds the TLS settings in two sections (client-transport-security,
 * peer-transport-security: etcd embed securityConfig) whose keys are not the flag names; each
 * is turned into the flag it stands for. The other keys are flag names.
 */
const securitySections: Record<string, Record<string, string>> = {
  'client-transport-security': {
    'cert-file': 'cert-file', 'key-file': 'key-file', 'trusted-ca-file': 'trusted-ca-file',
    'client-cert-auth': 'client-cert-auth', 'auto-tls': 'auto-tls',
  },
  'peer-transport-security': {
    'cert-file': 'peer-cert-file', 'key-file': 'peer-key-file', 'trusted-ca-file': 'peer-trusted-ca-file',
    'client-cert-auth': 'peer-client-cert-auth', 'auto-tls': 'peer-auto-tls', 'allowed-cn': 'peer-cert-allowed-cn',
  },
};

function configEntries(doc: Record<string, unknown>): [string, unknown][] {
  const out: [string, unknown][] = [];
  for (const [name, v] of Object.entries(doc)) {
    const section = securitySections[name];
    if (section === undefined) {
      out.push([name, v]);
      continue;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) continue;
    for (const [k, sub] of Object.entries(v as Record<string, unknown>)) {
      const flag = section[k];
      if (flag !== undefined) out.push([flag, sub]);
    }
  }
  return out;
}

/** Applies the config file; returns the flags it sets. */
function loadConfigFile(file: string, values: Map<string, unknown>): Set<string> {
  const set = new Set<string>();
  let doc: unknown;
  try {
    doc = YAML.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw verifyError(`cannot load config file ${file}: ${(err as Error).message}`);
  }
  if (doc === null || typeof doc !== 'object') return set;
  for (const [name, v] of configEntries(doc as Record<string, unknown>)) {
    const spec = flags[name];
    if (spec === undefined) continue; // etcd ignores unknown keys in config files
    const raw = Array.isArray(v) ? v.join(',') : String(v);
    try {
      values.set(name, parseValue(spec, raw, values.get(name)));
    } catch (err) {
      if (!(err instanceof FlagValueError)) throw err;
      // etcd's words for the keys it checks after loading the file (etcdmain/config.go
      // configFromFile, embed/config.go Validate); the others in concord's.
      if (spec.kind === 'clusterState') throw verifyError(`unexpected clusterState ${goQuote(raw)}`);
      if (spec.kind === 'peerUrls') throw verifyError(`unexpected error setting up ${name}: ${err.reason}`);
      throw verifyError(`config file ${file}: invalid value ${goQuote(raw)} for ${name}: ${err.reason}`);
    }
    set.add(name);
  }
  return set;
}

/** etcd checkBindURLs: a listen URL names an IP address (or localhost), or a unix socket. */
function checkBindUrls(urls: readonly string[]): void {
  for (const u of urls) {
    const parsed = parseGoUrl(u);
    if (parsed.scheme === 'unix' || parsed.scheme === 'unixs') continue;
    const host = splitHostPort(parsed.host)?.host ?? '';
    if (host === 'localhost') continue;
    if (!isGoIp(host)) throw verifyError(`expected IP in URL for binding (${u})`);
  }
}

/** etcd checkHostURLs for --initial-advertise-peer-urls: every URL has a host. */
function checkAdvertisePeerUrls(urls: readonly string[]): void {
  for (const u of urls) {
    const host = splitHostPort(parseGoUrl(u).host)?.host ?? '';
    if (host === '') {
      throw verifyError(`--initial-advertise-peer-urls ${goQuote(urls.join(','))} must be "host:port" (unexpected empty host (${u}))`);
    }
  }
}

/**
 * --auth-token: 'simple', or 'jwt,...' whose options and key files load (etcd fails to create
 * its token provider at start and exits 1, in these words).
 */
function checkAuthToken(spec: string): void {
  const type = authTokenType(spec);
  if (type === 'simple') return;
  if (type !== 'jwt') throw verifyError(`failed to create token provider: auth: invalid auth options (unknown token type: ${type})`);
  try {
    parseJwtOptions(spec);
  } catch (err) {
    if (err instanceof JwtOptionsError) throw verifyError(`failed to create token provider: ${err.message}`);
    throw err;
  }
}

/** etcd's maxElectionMs (embed/config.go). */
const electionTimeoutMsMax = 50_000;

function validate(c: Config): void {
  if (c.maxRequestBytes <= 0) throw verifyError('--max-request-bytes must be positive');
  if (c.maxTxnOps <= 0) throw verifyError('--max-txn-ops must be positive');
  // bcrypt's cost range (golang.org/x/crypto/bcrypt MinCost 4, MaxCost 31).
  if (c.bcryptCost < 4 || c.bcryptCost > 31) throw verifyError(`invalid bcrypt-cost: ${c.bcryptCost} (must be between 4 and 31)`);
  checkAuthToken(c.authToken);
  // etcd embed.Config.Validate, in its order.
  checkBindUrls(c.listenPeerUrls);
  checkAdvertisePeerUrls(c.initialAdvertisePeerUrls);
  if (c.heartbeatIntervalMs <= 0) throw verifyError(`--heartbeat-interval must be >0 (set to ${c.heartbeatIntervalMs}ms)`);
  if (c.electionTimeoutMs <= 0) throw verifyError(`--election-timeout must be >0 (set to ${c.electionTimeoutMs}ms)`);
  if (c.electionTimeoutMs < 5 * c.heartbeatIntervalMs) {
    throw verifyError(`--election-timeout[${c.electionTimeoutMs}ms] should be at least as 5 times as --heartbeat-interval[${c.heartbeatIntervalMs}ms]`);
  }
  if (c.electionTimeoutMs > electionTimeoutMsMax) {
    throw verifyError(`--election-timeout[${c.electionTimeoutMs}ms] is too long, and should be set less than ${electionTimeoutMsMax}ms`);
  }
  // etcd 3.5 takes any int here (a negative one admits no learner); concord refuses it.
  if (c.maxLearners < 0) throw verifyError(`--experimental-max-learners must be >=0 (set to ${c.maxLearners})`);
  if (c.quotaBackendBytes < 0) throw verifyError('--quota-backend-bytes must not be negative');
  validateTls(c);
  // etcd 3.4 panics on an unknown level (exit 2); refusing it is the sane version of that.
  if (!isLogLevel(c.logLevel)) {
    throw verifyError(`unknown log level "${c.logLevel}" for --log-level (debug, info, warn, error, panic, fatal)`);
  }
}

/** TLS flags etcd refuses before starting (embed.Config.Validate, configure*Listeners). */
function validateTls(c: Config): void {
  let min: string | undefined;
  let max: string | undefined;
  try {
    opensslCiphers(c.cipherSuites);
    min = tlsVersion(c.tlsMinVersion);
    max = tlsVersion(c.tlsMaxVersion);
  } catch (err) {
    if (err instanceof TlsSettingError) throw verifyError(err.message);
    throw err;
  }
  if (min !== undefined && max !== undefined && min > max) {
    throw verifyError(`min version (${c.tlsMinVersion}) is greater than max version (${c.tlsMaxVersion})`);
  }
  if (c.cipherSuites !== '' && min === 'TLSv1.3') {
    throw verifyError('cipher suites cannot be configured when only TLS1.3 is enabled');
  }
  const clientTls = (c.certFile !== '' && c.keyFile !== '') || c.autoTls;
  const noTlsListen = (u: string): ConfigError =>
    verifyError(`cannot listen on TLS for ${new URL(u).host}: KeyFile and CertFile are not presented`);
  for (const u of [...c.listenClientUrls, ...c.listenClientHttpUrls]) {
    if (new URL(u).protocol === 'https:' && !clientTls) {
      throw verifyError(`TLS key/cert (--cert-file, --key-file) must be provided for client url ${u} with HTTPS scheme`);
    }
  }
  // etcd's words for the metrics and peer listeners differ from the client one's.
  for (const u of c.listenMetricsUrls) if (new URL(u).protocol === 'https:' && !clientTls) throw noTlsListen(u);
  const peerTls = (c.peerCertFile !== '' && c.peerKeyFile !== '') || c.peerAutoTls;
  for (const u of c.listenPeerUrls) if (u.startsWith('https://') && !peerTls) throw noTlsListen(u);
}

/**
 * True when the data dir already holds a member: its WAL has a segment (etcd
 * wal.Exist(<data-dir>/member/wal): a *.wal file; storage/wal.ts names segments so, and leaves
 * only *.tmp files behind a crash before the first one).
 */
export function dataDirInitialized(dataDir: string): boolean {
  try {
    return fs.readdirSync(path.join(dataDir, schema.walDir)).some((f) => f.endsWith('.wal'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * The --initial-* checks etcd makes before bootstrapping a member (verifyBootstrapFlags), made
 * here so that a bad flag is refused before anything starts. A member whose data dir is
 * initialized skips them, as etcd does: its membership comes from the data dir. What needs the
 * other members (already bootstrapped? the running cluster for a join) is the server's, through
 * membership/bootstrap_config.ts planBootstrap.
 */
function verifyBootstrap(c: Config): void {
  if (dataDirInitialized(c.dataDir)) {
    c.initialClusterMembers = null;
    return;
  }
  try {
    c.initialClusterMembers = verifyBootstrapFlags({
      name: c.name,
      dataDir: c.dataDir,
      initialCluster: c.initialCluster,
      initialClusterState: c.initialClusterState,
      initialClusterToken: c.initialClusterToken,
      initialAdvertisePeerUrls: c.initialAdvertisePeerUrls,
    });
  } catch (err) {
    if (!(err instanceof BootstrapError)) throw err;
    throw new ConfigError(err.message, 1, 'discovery failed');
  }
}

/** How the usage names each kind of value. */
const kindShown: Record<Kind, string> = {
  string: 'string', int: 'int', uint: 'uint', urls: 'urls', peerUrls: 'urls', bool: 'bool', duration: 'duration',
  clusterState: 'new|existing',
};

export function usage(): string {
  const lines = ['Usage: concord [flags]', '', 'Flags (etcd names):'];
  for (const [name, spec] of Object.entries(flags)) {
    lines.push(`  --${name}${spec.kind === 'bool' ? '' : ' <' + kindShown[spec.kind] + '>'}`);
    lines.push(`      ${spec.help}${spec.def === '' ? '' : ` (default ${JSON.stringify(spec.def)})`}`);
  }
  lines.push('  --config-file <path>', '      Path to a YAML configuration file with etcd flag names as keys.');
  return lines.join('\n');
}
