// Process entry: configuration -> storage worker + raft driver -> gRPC API -> serve.
import * as fs from 'node:fs';
import type Long from 'long';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { type Config, ConfigError, parseArgs, usage } from './config/config';
import { type TlsInfo, TlsFileError, TlsSource, opensslCiphers, reloadPerConnection, serverOptions, tlsVersion } from './tls/tls_info';
import { selfCert } from './tls/self_cert';
import { peerConnector, peerTlsServer } from './transport/peer_tls';
import * as limits from './config/limits';
import { EtcdServer } from './server/etcd_server';
import { DataDirLockedError, lockDataDir } from './storage/data_dir_lock';
import { GrpcApi } from './api/grpc/server';
import { AuthorityRepair } from './api/grpc/authority';
import { Gateway } from './api/http/gateway';
import { ClientListener } from './api/listener';
import { Metrics } from './metrics/metrics';
import { closeBackgroundPool } from './workers/background_pool';
import { Logger, isLogLevel, type LogLevel } from './util/log';
import { setProtoDepthMax } from './util/proto_depth';
import { BootstrapError, fetchFailed, initialMembership, joinExisting, remotePeerUrls } from './membership/bootstrap_config';
import { idFromLong, idToLong } from './membership/ids';
import { Membership } from './membership/membership';
import { fetchMembers } from './transport/members_fetch';
import type { InitialMember } from './server/etcd_server';
import { activeFailpoints, failpointsEnabled } from './util/failpoints';
import { concordVersion, etcdVersion } from './version';
import { DataInconsistencyError } from './server/corrupt';
import { JwtTokens, authTokenType, parseJwtOptions } from './auth/jwt_tokens';

/** A log line as Logger writes it, for what is said before the Logger exists or after it failed. */
function logLine(level: LogLevel, msg: string, fields?: Record<string, unknown>): string {
  return JSON.stringify({ level, ts: new Date().toISOString(), caller: 'concord', msg, ...fields });
}

interface ListenAddress { host: string; port: number; unixPath?: string; secure: boolean }

function listenAddress(url: string, defaultPort: number): ListenAddress {
  const u = new URL(url);
  if (u.protocol === 'unix:') return { host: '', port: 0, unixPath: u.pathname, secure: false };
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  return { host, port: u.port === '' ? defaultPort : Number(u.port), secure: u.protocol === 'https:' };
}

/**
 * The TLS settings of one side from the flags, or null when that side has no certificate.
 * Auto TLS (no certificate files given) generates a self-signed pair for the listen URLs' hosts
 * in <data-dir>/fixtures/<side>, as etcd does; given files win over it (etcd says so too).
 */
function tlsInfoOf(cfg: Config, side: 'client' | 'peer', log: Logger): TlsInfo | null {
  const peer = side === 'peer';
  let certFile = peer ? cfg.peerCertFile : cfg.certFile;
  let keyFile = peer ? cfg.peerKeyFile : cfg.keyFile;
  const auto = peer ? cfg.peerAutoTls : cfg.autoTls;
  let selfSigned = false;
  if (certFile === '' || keyFile === '') {
    if (!auto) return null;
    const urls = peer ? cfg.listenPeerUrls : [...cfg.listenClientUrls, ...cfg.listenClientHttpUrls, ...cfg.listenMetricsUrls];
    const hosts = urls.filter((u) => !u.startsWith('unix')).map((u) => listenAddress(u, 0).host);
    const files = selfCert(path.join(cfg.dataDir, 'fixtures', side), hosts, peer, cfg.selfSignedCertValidity);
    certFile = files.certFile;
    keyFile = files.keyFile;
    selfSigned = true;
    log.info(`automatically generated ${side} TLS certificate`, { 'cert-file': certFile, 'key-file': keyFile, hosts });
  } else if (auto) {
    log.warn(`ignoring ${peer ? 'peer' : 'client'} auto TLS since certs given`);
  }
  return {
    certFile, keyFile,
    trustedCaFile: peer ? cfg.peerTrustedCaFile : cfg.trustedCaFile,
    clientCertAuth: peer ? cfg.peerClientCertAuth : cfg.clientCertAuth,
    allowedCn: peer ? cfg.peerCertAllowedCn : '',
    selfSigned,
    ciphers: opensslCiphers(cfg.cipherSuites),
    minVersion: tlsVersion(cfg.tlsMinVersion) ?? 'TLSv1.2',
    maxVersion: tlsVersion(cfg.tlsMaxVersion),
  };
}

/** HTTP listeners (--listen-client-http-urls, --listen-metrics-urls): one server each, https:// behind TLS. */
async function listenHttp(handler: http.RequestListener, addresses: ListenAddress[], servers: http.Server[], tlsSource: TlsSource | null): Promise<void> {
  for (const a of addresses) {
    let s: http.Server;
    if (a.secure && tlsSource !== null) {
      const alpn = ['http/1.1'];
      const secure = https.createServer({ ...serverOptions(tlsSource, alpn), keepAlive: true }, handler);
      reloadPerConnection(secure, tlsSource, alpn);
      s = secure;
    } else {
      s = http.createServer({ keepAlive: true }, handler);
    }
    servers.push(s);
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      if (a.unixPath !== undefined) s.listen(a.unixPath, resolve);
      else s.listen(a.port, a.host, resolve);
    });
  }
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
      else process.stderr.write(logLine('warn', err.logMsg, { error: err.message }) + '\n');
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
  setProtoDepthMax(limits.protoDepthMax);
  const log = new Logger(isLogLevel(cfg.logLevel) ? cfg.logLevel : 'info');
  for (const n of parsed.notices) log.log(n.level, n.msg, n.fields);
  log.debug('configuration', { ...cfg });
  if (failpointsEnabled) log.warn('test failpoints enabled (CONCORD_FAILPOINTS)', { failpoints: activeFailpoints() });
  fs.mkdirSync(cfg.dataDir, { recursive: true, mode: 0o700 });
  const unlockDataDir = lockDataDir(cfg.dataDir);
  process.on('exit', unlockDataDir);
  const quota = cfg.quotaBackendBytes > 0 ? cfg.quotaBackendBytes : limits.quotaBackendBytesDefault;
  log.info('starting concord', {
    'concord-version': concordVersion, 'etcd-version': etcdVersion, name: cfg.name,
    'data-dir': cfg.dataDir, 'listen-client-urls': cfg.listenClientUrls,
    'max-request-bytes': cfg.maxRequestBytes, 'max-txn-ops': cfg.maxTxnOps, 'quota-backend-bytes': quota,
  });
  const addresses = cfg.listenClientUrls.map((u) => listenAddress(u, 2379));
  // Certificates are read (and auto TLS ones generated) before anything starts: a bad file
  // stops the start here, with the file named.
  let clientTls: TlsSource | null = null;
  let peerTls: TlsSource | null = null;
  try {
    const clientInfo = tlsInfoOf(cfg, 'client', log);
    if (clientInfo !== null) clientTls = new TlsSource(clientInfo, 'client', (error) => log.warn('cannot reload client TLS certificate; keeping the previous one', { error }));
    const peerInfo = tlsInfoOf(cfg, 'peer', log);
    if (peerInfo !== null) peerTls = new TlsSource(peerInfo, 'peer', (error) => log.warn('cannot reload peer TLS certificate; keeping the previous one', { error }));
  } catch (err) {
    if (!(err instanceof TlsFileError)) throw err;
    log.log('fatal', 'failed to load TLS certificate', { error: err.message });
    process.exit(1);
  }
  for (const u of [...cfg.listenClientUrls, ...cfg.listenClientHttpUrls]) {
    if (clientTls !== null && !u.startsWith('https:')) {
      log.warn('scheme is HTTP while key and cert files are present; ignoring key and cert files', { 'client-url': u });
    }
  }
  const connectPeer = peerConnector(peerTls);
  // --auth-token jwt: the options were checked at parse; loaded again here (same files).
  let jwtTokens: JwtTokens | null = null;
  if (authTokenType(cfg.authToken) === 'jwt') {
    const jwtOptions = parseJwtOptions(cfg.authToken);
    if (jwtOptions.unknown.length > 0) log.warn('unknown JWT options', { keys: jwtOptions.unknown });
    jwtTokens = new JwtTokens(jwtOptions);
    log.info('auth tokens: jwt', { 'sign-method': jwtOptions.signMethod, 'ttl-ms': jwtOptions.ttlMs, 'verify-only': jwtTokens.verifyOnly });
  }
  // A member starting for the first time takes etcd's ids for its flags and the initial members;
  // one with data keeps what it has (etcd ignores the --initial-* flags then, and says so).
  let bootstrap: { memberId: Long; clusterId: Long; members: InitialMember[]; join?: boolean } | null = null;
  if (cfg.initialClusterMembers === null) {
    log.info('server has been already initialized', { 'data-dir': cfg.dataDir, 'dir-type': 'member' });
  } else if (cfg.initialClusterState === 'existing') {
    // Joining: the running cluster says who its members are and which id it gave this one
    // (added with `member add`); the log it replicates from index 1 (or a snapshot) does the rest.
    const answer = await fetchMembers(remotePeerUrls(cfg.initialClusterMembers, cfg.name), 5000, connectPeer);
    try {
      if (answer === null) throw fetchFailed();
      const running = Membership.decode(answer.membership);
      const joined = joinExisting(cfg.initialClusterMembers, cfg.initialClusterToken, cfg.name, {
        clusterId: answer.clusterId,
        members: running.list().map((m) => ({ ...m, id: idFromLong(m.id) })),
        removedIds: running.removedIds().map(idFromLong),
      });
      bootstrap = {
        memberId: idToLong(joined.localId),
        clusterId: idToLong(joined.clusterId),
        members: joined.members.map((x) => ({ id: idToLong(x.id), name: x.name, peerUrls: x.peerUrls })),
        join: true,
      };
    } catch (err) {
      if (!(err instanceof BootstrapError)) throw err;
      log.log('fatal', 'discovery failed', { error: err.message });
      process.exit(1);
    }
  } else {
    const m = initialMembership(cfg.initialClusterMembers, cfg.initialClusterToken, cfg.name);
    bootstrap = {
      memberId: idToLong(m.localId),
      clusterId: idToLong(m.clusterId),
      members: m.members.map((x) => ({ id: idToLong(x.id), name: x.name, peerUrls: x.peerUrls })),
    };
  }
  // Peers are listened for when there are any (several initial members, or a data dir whose
  // membership has them), or when --listen-peer-urls was given: a lone member with the default
  // flags does not take port 2380 (it could not be joined before a restart with the flag).
  const peerListen = listenAddress(cfg.listenPeerUrls[0]!, 2380);
  let api: GrpcApi | null = null;
  let listener: ClientListener | null = null;
  let repair: AuthorityRepair | null = null;
  const extraHttp: http.Server[] = [];
  let stopping = false;
  const shutdownRef: { current: ((why: string) => Promise<void>) | null } = { current: null };
  let removedAt = 0;
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
    watchProgressNotifyIntervalMs: cfg.watchProgressNotifyIntervalMs > 0
      ? cfg.watchProgressNotifyIntervalMs : limits.watchProgressNotifyIntervalMsDefault,
    leaseCheckpointIntervalMs: cfg.leaseCheckpointEnabled ? cfg.leaseCheckpointIntervalMs : 0,
    unsafeNoFsync: cfg.unsafeNoFsync,
    snapshotCatchUpEntries: cfg.snapshotCatchUpEntries,
    bootstrap,
    peerListen: { host: peerListen.host, port: peerListen.port },
    peerConnect: connectPeer,
    ...(peerListen.secure && peerTls !== null ? { peerServerCreate: peerTlsServer(peerTls, log) } : {}),
    peerListenAlways: cfg.listenPeerUrlsGiven,
    preVote: cfg.preVote,
    strictReconfigCheck: cfg.strictReconfigCheck,
    maxLearners: cfg.maxLearners,
    autoPromoteLearners: cfg.autoPromoteLearners,
    initialCorruptCheck: cfg.initialCorruptCheck,
    corruptCheckIntervalMs: cfg.corruptCheckIntervalMs,
    authTokenTtlSeconds: cfg.authTokenTtl,
    jwtTokens: jwtTokens,
    bcryptCost: cfg.bcryptCost,
    passwordMinLength: cfg.authPasswordMinLength,
    onLog(level, msg, fields) {
      log.log(level, msg, fields);
    },
    onRemoved() {
      if (removedAt !== 0) return;
      removedAt = Date.now();
      log.warn('the member has been permanently removed from the cluster; stopping');
      // etcd stopWithDelay(1 s): the answer to the MemberRemove that removed this member (when it
      // came here) and the removal's commit to the others get out first.
      setTimeout(() => void shutdownRef.current?.('removed'), 1000).unref();
    },
    onPeerEvent(msg, fields) {
      log.warn(msg, fields);
    },
    onFatal(message) {
      log.log('fatal', 'storage failure, stopping', { error: message });
      process.exit(1);
    },
    onAnswerError(err) {
      log.error('request failed: exception while answering it', { error: String((err as Error)?.stack ?? err) });
    },
    onStorageAlarm(alarm) {
      if (alarm.raised) log.log('error', 'storage cannot write: NOSPACE alarm raised, writes refused', { source: alarm.source, error: alarm.message });
      else log.info('storage writes again: NOSPACE alarm cleared', { source: alarm.source, detail: alarm.message });
    },
  });
  api = new GrpcApi(server, {
    requestBytesMax: cfg.maxRequestBytes,
    recvBytesMax: cfg.maxRequestBytes + limits.grpcOverheadBytes,
    txnOpsMax: cfg.maxTxnOps,
    maxConcurrentStreams: Math.min(cfg.maxConcurrentStreams, 0x7fffffff),
    logger: log,
  });
  const metrics = new Metrics(server, api.callStats, () => server.transportStats());
  const gateway = new Gateway({ server, handlers: api.handlers, recvBytesMax: cfg.maxRequestBytes + limits.grpcOverheadBytes, metrics, logger: log });
  const httpServer = http.createServer({ keepAlive: true }, gateway.handle);
  repair = new AuthorityRepair(api.connectionSink());
  listener = new ClientListener(repair, httpServer, (remote, error) => {
    // etcd logs refused handshakes the same way (its http server's error log).
    log.warn('rejected connection', { 'remote-addr': remote, error });
  });
  const ports: number[] = [];
  for (const a of addresses) {
    ports.push(await listener.listen(a.host, a.port, a.unixPath, a.secure && clientTls !== null ? clientTls : undefined));
  }
  await listenHttp(gateway.handle, cfg.listenClientHttpUrls.map((u) => listenAddress(u, 2379)), extraHttp, clientTls);
  // Metrics URLs serve /metrics and /health only, as etcd's do.
  await listenHttp((req, res) => {
    const p = (req.url ?? '/').split('?')[0];
    if (p === '/metrics' || p === '/health') gateway.handle(req, res);
    else {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('404 page not found\n');
    }
  }, cfg.listenMetricsUrls.map((u) => listenAddress(u, 2381)), extraHttp, clientTls);
  log.info('ready to serve client requests', {
    'cluster-id': server.clusterId.toString(16), 'member-id': server.memberId.toString(16),
    addresses: cfg.listenClientUrls, ports,
  });

  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info('received signal, shutting down', { signal });
    for (const s of extraHttp) s.close();
    await listener?.close();
    repair?.close();
    await api!.stop();
    await server.stop();
    await closeBackgroundPool();
    log.info('stopped');
    process.exit(0);
  };
  shutdownRef.current = shutdown;
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  if (err instanceof DataInconsistencyError) {
    // As etcd 3.4 does (etcdmain: a start error ends in "discovery failed"), exit code 1.
    process.stderr.write(logLine('fatal', 'discovery failed', { error: err.message }) + '\n');
    process.exit(1);
  }
  if (err instanceof DataDirLockedError) {
    process.stderr.write(logLine('fatal', err.message) + '\n');
    process.exit(1);
  }
  process.stderr.write(logLine('fatal', 'start failed', { error: String((err as Error)?.stack ?? err) }) + '\n');
  process.exit(1);
});
