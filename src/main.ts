// Process entry: configuration -> storage worker + raft driver -> gRPC API -> serve.
import * as fs from 'node:fs';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { ConfigError, parseArgs, usage } from './config/config';
import * as limits from './config/limits';
import { EtcdServer } from './server/etcd_server';
import { DataDirLockedError, lockDataDir } from './storage/data_dir_lock';
import { GrpcApi } from './api/grpc/server';
import { AuthorityRepair } from './api/grpc/authority';
import { Logger, isLogLevel, type LogLevel } from './util/log';
import { concordVersion, etcdVersion } from './version';

/** A log line as Logger writes it, for what is said before the Logger exists or after it failed. */
function logLine(level: LogLevel, msg: string, fields?: Record<string, unknown>): string {
  return JSON.stringify({ level, ts: new Date().toISOString(), caller: 'concord', msg, ...fields });
}

interface ListenAddress { host: string; port: number; unixPath?: string }

function listenAddress(url: string): ListenAddress {
  const u = new URL(url);
  if (u.protocol === 'unix:') return { host: '', port: 0, unixPath: u.pathname };
  if (u.protocol === 'https:') throw new ConfigError(`TLS client URLs are not supported yet: ${url}`);
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  return { host, port: u.port === '' ? 2379 : Number(u.port) };
}

/** Client listeners: connections go to grpc-js through AuthorityRepair (api/grpc/authority.ts). */
function listenClients(addresses: ListenAddress[], sink: AuthorityRepair): Promise<net.Server[]> {
  return Promise.all(addresses.map((a) => new Promise<net.Server>((resolve, reject) => {
    const s = net.createServer({ noDelay: true }, (socket) => sink.injectConnection(socket));
    s.once('error', reject);
    const done = (): void => {
      s.off('error', reject);
      resolve(s);
    };
    if (a.unixPath !== undefined) s.listen(a.unixPath, done);
    else s.listen(a.port, a.host, done);
  })));
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs(process.argv.slice(2), process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      // As etcd: a command line that does not parse gets the usage and exit code 2; a value
      // refused once parsed is logged ('failed to verify flags') with exit code 1.
      if (err.exitCode === 2) process.stderr.write(`${err.message}\n${usage()}\n`);
      else process.stderr.write(logLine('warn', 'failed to verify flags', { error: err.message }) + '\n');
      process.exit(err.exitCode);
    }
    throw err;
  }
  if (parsed.help) {
    process.stdout.write(usage() + '\n');
    return;
  }
  if (parsed.version) {
    process.stdout.write(`concord Version: ${concordVersion}\netcd API Version: ${etcdVersion}\n`);
    return;
  }
  const cfg = parsed.config;
  const log = new Logger(isLogLevel(cfg.logLevel) ? cfg.logLevel : 'info');
  for (const n of parsed.notices) log.log(n.level, n.msg, n.fields);
  log.debug('configuration', { ...cfg });
  fs.mkdirSync(cfg.dataDir, { recursive: true, mode: 0o700 });
  const unlockDataDir = lockDataDir(cfg.dataDir);
  process.on('exit', unlockDataDir);
  const quota = cfg.quotaBackendBytes > 0 ? cfg.quotaBackendBytes : limits.quotaBackendBytesDefault;
  log.info('starting concord', {
    'concord-version': concordVersion, 'etcd-version': etcdVersion, name: cfg.name,
    'data-dir': cfg.dataDir, 'listen-client-urls': cfg.listenClientUrls,
    'max-request-bytes': cfg.maxRequestBytes, 'max-txn-ops': cfg.maxTxnOps, 'quota-backend-bytes': quota,
  });
  const addresses = cfg.listenClientUrls.map(listenAddress);
  let api: GrpcApi | null = null;
  let stopping = false;
  const server = await EtcdServer.start({
    name: cfg.name,
    dataDir: cfg.dataDir,
    mapSizeBytes: Math.max(quota * 2, 1 << 30),
    requestBytesMax: cfg.maxRequestBytes,
    heartbeatMs: cfg.heartbeatIntervalMs,
    electionMs: cfg.electionTimeoutMs,
    initialClusterToken: cfg.initialClusterToken,
    peerUrls: cfg.initialAdvertisePeerUrls,
    clientUrls: cfg.advertiseClientUrls,
    quotaBackendBytes: quota,
    onFatal(message) {
      log.log('fatal', 'storage failure, stopping', { error: message });
      process.exit(1);
    },
  });
  api = new GrpcApi(server, {
    requestBytesMax: cfg.maxRequestBytes,
    recvBytesMax: cfg.maxRequestBytes + limits.grpcOverheadBytes,
    txnOpsMax: cfg.maxTxnOps,
    maxConcurrentStreams: Math.min(cfg.maxConcurrentStreams, 0x7fffffff),
  });
  const repair = new AuthorityRepair(api.grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure()));
  const listeners = await listenClients(addresses, repair);
  const ports = listeners.map((l) => {
    const a = l.address();
    return a !== null && typeof a === 'object' ? a.port : 0;
  });
  log.info('ready to serve client requests', {
    'cluster-id': server.clusterId.toString(16), 'member-id': server.memberId.toString(16),
    addresses: cfg.listenClientUrls, ports,
  });

  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info('received signal, shutting down', { signal });
    for (const l of listeners) l.close();
    repair.close();
    await api!.stop();
    await server.stop();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  if (err instanceof DataDirLockedError) {
    process.stderr.write(logLine('fatal', err.message) + '\n');
    process.exit(1);
  }
  process.stderr.write(logLine('fatal', 'start failed', { error: String((err as Error)?.stack ?? err) }) + '\n');
  process.exit(1);
});
