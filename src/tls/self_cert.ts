// --auto-tls / --peer-auto-tls: a self-signed certificate generated at start (etcd
// client/pkg/transport SelfCert): an ECDSA P-256 key, subject O=etcd, valid one year, usable to
// serve (and, for peers, to authenticate as a client), naming the listen URLs' hosts as subject
// alternative names. Written as cert.pem and key.pem into a directory of mode 0700
// (<data-dir>/fixtures/client or /peer); a pair already there is used again, as etcd does.
//
// Node can make keys and signatures but not X.509 certificates, so the certificate's DER is
// built here (RFC 5280): a small subset of ASN.1 DER is all it takes.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const seq = (...c: Buffer[]): Buffer => der(0x30, ...c);

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const bytes: number[] = [parts[0]! * 40 + parts[1]!];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return der(0x06, Buffer.from(bytes));
}

/** A non-negative INTEGER from big-endian bytes (a leading 0 keeps it positive). */
function unsignedInteger(bytes: Buffer): Buffer {
  let b = bytes;
  while (b.length > 1 && b[0] === 0 && (b[1]! & 0x80) === 0) b = b.subarray(1);
  if ((b[0]! & 0x80) !== 0) b = Buffer.concat([Buffer.from([0]), b]);
  return der(0x02, b);
}

/** UTCTime (dates before 2050, as RFC 5280 asks) or GeneralizedTime. */
function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  if (d.getUTCFullYear() < 2050) return der(0x17, Buffer.from(iso.slice(2) + 'Z', 'ascii'));
  return der(0x18, Buffer.from(iso + 'Z', 'ascii'));
}

function name(organization: string): Buffer {
  return seq(der(0x31, seq(oid('2.5.4.10'), der(0x0c, Buffer.from(organization, 'utf8')))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), der(0x01, Buffer.from([0xff])), der(0x04, value)) : seq(oid(id), der(0x04, value));
}

function ipBytes(ip: string): Buffer {
  if (net.isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  // IPv6: expand '::' and write 8 groups of 16 bits.
  const [head, tail] = ip.includes('::') ? ip.split('::') as [string, string] : [ip, undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export interface SelfCertFiles { certFile: string; keyFile: string }

/**
 * Generates (or finds) the self-signed pair in `dir` for `hosts` (host names or IPs);
 * `clientAuth` adds the client-authentication usage (peers dial each other with it).
 */
export function selfCert(dir: string, hosts: string[], clientAuth: boolean, validityYears = 1): SelfCertFiles {
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  if (fs.existsSync(certFile) && fs.existsSync(keyFile)) return { certFile, keyFile };
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const notBefore = new Date();
  const notAfter = new Date(notBefore.getTime());
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + validityYears);
  const serial = crypto.randomBytes(16);
  serial[0] = serial[0]! & 0x7f;
  const sigAlg = seq(oid('1.2.840.10045.4.3.2')); // ecdsa-with-SHA256
  const altNames: Buffer[] = [];
  for (const h of new Set(hosts)) {
    if (net.isIP(h) !== 0) altNames.push(der(0x87, ipBytes(h)));
    else altNames.push(der(0x82, Buffer.from(h, 'ascii')));
  }
  const usages = [oid('1.3.6.1.5.5.7.3.1'), ...(clientAuth ? [oid('1.3.6.1.5.5.7.3.2')] : [])];
  const extensions = [
    // digitalSignature (bit 0) and keyEncipherment (bit 2): 0b101 in the first byte, 5 unused bits.
    extension('2.5.29.15', true, der(0x03, Buffer.from([0x05, 0xa0]))),
    extension('2.5.29.37', false, seq(...usages)),
    extension('2.5.29.19', true, seq()),
    ...(altNames.length > 0 ? [extension('2.5.29.17', false, seq(...altNames))] : []),
  ];
  const tbs = seq(
    der(0xa0, unsignedInteger(Buffer.from([2]))), // v3
    unsignedInteger(serial),
    sigAlg,
    name('etcd'),
    seq(time(notBefore), time(notAfter)),
    name('etcd'),
    publicKey.export({ type: 'spki', format: 'der' }),
    der(0xa3, seq(...extensions)),
  );
  const signature = crypto.sign('sha256', tbs, privateKey);
  const cert = seq(tbs, sigAlg, der(0x03, Buffer.from([0]), signature));
  const pem = `-----BEGIN CERTIFICATE-----\n${cert.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n?$/, '\n')}-----END CERTIFICATE-----\n`;
  fs.writeFileSync(keyFile, privateKey.export({ type: 'sec1', format: 'pem' }), { mode: 0o600 });
  fs.writeFileSync(certFile, pem, { mode: 0o600 });
  return { certFile, keyFile };
}
