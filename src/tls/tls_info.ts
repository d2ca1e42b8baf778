// TLS for the client port and the peer port, from etcd's flags (etcd: client/pkg/transport
// listener.go TLSInfo): certificate, key, trusted CA, client certificate authentication,
// cipher suites, TLS versions, and for peers a required client certificate CN.
//
// Certificates are re-read when their files change, without a restart: etcd reads them again at
// every handshake (tls.Config.GetCertificate / GetClientCertificate). Node builds a
// SecureContext from PEM text, which is costly (parsing, key checks), so here each new
// connection costs one stat() per file (see TlsSource.refresh) and a context is only rebuilt
// when a file's size, mtime or inode changed. A rebuild that fails (a file half-written during a
// rotation) keeps the previous context and says so in the log; the next connection tries again.
import fs from 'node:fs';
import type net from 'node:net';
import tls from 'node:tls';

/** The TLS settings of one side (client or peer), as etcd's flags give them. */
export interface TlsInfo {
  certFile: string;
  keyFile: string;
  trustedCaFile: string;
  /** Require and verify a client certificate (--client-cert-auth / --peer-client-cert-auth). */
  clientCertAuth: boolean;
  /** --peer-cert-allowed-cn: the CN a connecting peer's certificate must have ('' = any). */
  allowedCn: string;
  /** Generated self-signed certificate (auto TLS): clients of it do not verify the server. */
  selfSigned: boolean;
  /** OpenSSL cipher list for TLS <= 1.2 ('' = Node's default). */
  ciphers: string;
  minVersion: tls.SecureVersion;
  maxVersion: tls.SecureVersion | undefined;
}

/**
 * etcd/Go cipher suite names (--cipher-suites) -> OpenSSL names. The suites Go implements for
 * TLS 1.0-1.2; TLS 1.3 suites are not configurable in Go, nor here.
 */
const cipherSuites: Record<string, string> = {
  TLS_RSA_WITH_AES_128_CBC_SHA: 'AES128-SHA',
  TLS_RSA_WITH_AES_256_CBC_SHA: 'AES256-SHA',
  TLS_RSA_WITH_AES_128_CBC_SHA256: 'AES128-SHA256',
  TLS_RSA_WITH_AES_128_GCM_SHA256: 'AES128-GCM-SHA256',
  TLS_RSA_WITH_AES_256_GCM_SHA384: 'AES256-GCM-SHA384',
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: 'ECDHE-ECDSA-AES128-SHA',
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: 'ECDHE-ECDSA-AES256-SHA',
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: 'ECDHE-RSA-AES128-SHA',
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: 'ECDHE-RSA-AES256-SHA',
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256: 'ECDHE-ECDSA-AES128-SHA256',
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256: 'ECDHE-RSA-AES128-SHA256',
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 'ECDHE-RSA-AES128-GCM-SHA256',
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 'ECDHE-ECDSA-AES128-GCM-SHA256',
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 'ECDHE-RSA-AES256-GCM-SHA384',
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: 'ECDHE-ECDSA-AES256-GCM-SHA384',
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305: 'ECDHE-RSA-CHACHA20-POLY1305',
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305: 'ECDHE-ECDSA-CHACHA20-POLY1305',
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-RSA-CHACHA20-POLY1305',
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-ECDSA-CHACHA20-POLY1305',
};

/** --cipher-suites (comma-separated Go names) as an OpenSSL cipher list; etcd's error words. */
export function opensslCiphers(list: string): string {
  const names = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const out: string[] = [];
  for (const n of names) {
    const o = cipherSuites[n];
    if (o === undefined) throw new TlsSettingError(`unexpected TLS cipher suite "${n}"`);
    out.push(o);
  }
  return out.join(':');
}

/** --tls-min-version / --tls-max-version (etcd 3.5): '', TLS1.2 or TLS1.3. */
export function tlsVersion(raw: string): tls.SecureVersion | undefined {
  if (raw === '') return undefined;
  if (raw === 'TLS1.2') return 'TLSv1.2';
  if (raw === 'TLS1.3') return 'TLSv1.3';
  throw new TlsSettingError(`unexpected TLS version "${raw}" (must be one of: TLS1.2, TLS1.3)`);
}

/** Reads a file for TLS, with an error that names the flag and the file. */
function readFor(flag: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file or directory' : e.code === 'EACCES' ? 'permission denied' : e.message;
    throw new TlsFileError(`${flag}: open ${file}: ${why}`);
  }
}

/** A TLS flag value that is refused (the configuration turns it into a ConfigError). */
export class TlsSettingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsSettingError';
  }
}

/** A certificate, key or CA file that cannot be used. */
export class TlsFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsFileError';
  }
}

/** The PEM material of a TlsInfo, read now; throws TlsFileError naming what is wrong. */
function loadMaterial(info: TlsInfo, side: 'client' | 'peer'): tls.SecureContextOptions {
  const p = side === 'peer' ? 'peer-' : '';
  const cert = readFor(`--${p}cert-file`, info.certFile);
  const key = readFor(`--${p}key-file`, info.keyFile);
  const ca = info.trustedCaFile !== '' ? readFor(`--${p}trusted-ca-file`, info.trustedCaFile) : undefined;
  const opts: tls.SecureContextOptions = { cert, key, minVersion: info.minVersion };
  if (info.maxVersion !== undefined) opts.maxVersion = info.maxVersion;
  if (ca !== undefined) opts.ca = ca;
  if (info.ciphers !== '') opts.ciphers = info.ciphers;
  try {
    // Checks that the PEM parses and that the key matches the certificate.
    tls.createSecureContext(opts);
  } catch (err) {
    throw new TlsFileError(`--${p}cert-file ${info.certFile} / --${p}key-file ${info.keyFile}: ${(err as Error).message}`);
  }
  return opts;
}

interface FileStamp { size: number; mtimeMs: number; ino: number }

function stamp(file: string): FileStamp | null {
  try {
    const s = fs.statSync(file);
    return { size: s.size, mtimeMs: s.mtimeMs, ino: s.ino };
  } catch {
    return null;
  }
}

function sameStamp(a: FileStamp | null, b: FileStamp | null): boolean {
  return a !== null && b !== null && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino;
}

/**
 * The certificate material of one side, re-read when its files change. `current()` is called
 * once per new connection (server side: before the handshake; client side: before dialling).
 */
export class TlsSource {
  private opts: tls.SecureContextOptions;
  private stamps: (FileStamp | null)[];
  /** Contexts built (1 at start, +1 per rotation seen): for tests and logs. */
  reloads = 0;

  constructor(readonly info: TlsInfo, readonly side: 'client' | 'peer',
    private readonly onReloadError: (message: string) => void = () => {}) {
    this.stamps = this.files().map(stamp);
    this.opts = loadMaterial(info, side);
  }

  private files(): string[] {
    return [this.info.certFile, this.info.keyFile, this.info.trustedCaFile].filter((f) => f !== '');
  }

  /** True when a file changed since the material was read (cheap: one stat per file). */
  private changed(): boolean {
    const files = this.files();
    for (let i = 0; i < files.length; i++) if (!sameStamp(this.stamps[i]!, stamp(files[i]!))) return true;
    return false;
  }

  /** Re-reads the files if they changed; true when new material is in use. */
  refresh(): boolean {
    if (!this.changed()) return false;
    const stamps = this.files().map(stamp);
    try {
      this.opts = loadMaterial(this.info, this.side);
    } catch (err) {
      this.onReloadError((err as Error).message);
      return false;
    }
    this.stamps = stamps;
    this.reloads++;
    return true;
  }

  /** The options to build a server or a connection with (certificate, key, CA, versions, ciphers). */
  options(): tls.SecureContextOptions {
    this.refresh();
    return this.opts;
  }
}

/**
 * Options of a TLS server for this side. ALPN prefers HTTP/1.1 when the client offers it (curl,
 * browsers: the gateway speaks HTTP/1.1) and gives h2 to clients that offer only h2 (gRPC).
 */
export function serverOptions(source: TlsSource, alpn: string[] | undefined): tls.TlsOptions {
  const o: tls.TlsOptions = { ...source.options() };
  o.requestCert = source.info.clientCertAuth;
  o.rejectUnauthorized = source.info.clientCertAuth;
  if (alpn !== undefined) o.ALPNProtocols = alpn;
  return o;
}

/**
 * Makes `server` use the newest material of `source` for every new connection: before the
 * TLS server's own 'connection' listener wraps the socket, the files are checked (one stat
 * each) and, when they changed, the server's context is replaced (tls.Server.setSecureContext).
 */
export function reloadPerConnection(server: tls.Server, source: TlsSource, alpn: string[] | undefined): void {
  server.prependListener('connection', (raw: net.Socket) => {
    rawAddresses.set(raw, `${raw.remoteAddress}:${raw.remotePort}`);
    if (source.refresh()) server.setSecureContext(serverOptions(source, alpn));
  });
}

/** Remote address of each accepted TCP socket, noted before its handshake (for the logs). */
const rawAddresses = new WeakMap<net.Socket, string>();

/**
 * host:port of the client of a server-side TLS socket, also after it closed (a failed
 * handshake is reported once the socket is gone; node keeps the TCP socket as _parent).
 */
export function tlsRemoteAddress(socket: tls.TLSSocket): string {
  const raw = (socket as unknown as { _parent?: net.Socket })._parent;
  const known = raw !== undefined ? rawAddresses.get(raw) : undefined;
  return known ?? `${socket.remoteAddress}:${socket.remotePort}`;
}

/** The subject Common Name of a TLS socket's verified peer certificate, or undefined. */
export function verifiedPeerCommonName(socket: tls.TLSSocket): string | undefined {
  if (!socket.authorized) return undefined;
  const cert = socket.getPeerCertificate();
  if (cert === null || cert.subject === undefined) return undefined;
  const cn = (cert.subject as unknown as Record<string, string | string[] | undefined>)['CN'];
  return Array.isArray(cn) ? cn[0] : cn;
}
