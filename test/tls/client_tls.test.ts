// Client TLS (--cert-file, --key-file, --trusted-ca-file, --client-cert-auth, --auto-tls,
// https:// client and metrics URLs) with the real etcdctl, each outcome compared with real etcd
// 3.4 given the same certificates and flags. Certificates are made with openssl at test time.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { spawnSync } from 'node:child_process';
import { type ConcordHandle, startConcord } from '../helpers/concord';
import { freePort } from '../helpers/etcd';
import { etcdctlSkipReason } from '../helpers/etcdctl';
import { makePki, type CertPair, type TestPki } from '../helpers/tls_certs';
import { type TlsEtcd, ctl, startTlsEtcd } from './tls_oracle';
import { CONCORD_MAIN } from '../helpers/concord';

const skip = etcdctlSkipReason();

/** The server's certificate subject CN as a new TLS connection sees it. */
function serverCn(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(ca) }, () => {
      const cn = s.getPeerCertificate().subject.CN;
      s.destroy();
      resolve(Array.isArray(cn) ? cn[0]! : cn!);
    });
    s.once('error', reject);
  });
}

function httpsGet(url: string, ca: string, client?: CertPair): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, {
      ca: fs.readFileSync(ca),
      ...(client !== undefined ? { cert: fs.readFileSync(client.cert), key: fs.readFileSync(client.key) } : {}),
    }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
  });
}

describe('client TLS', { skip }, () => {
  let pki: TestPki;
  let server: CertPair;
  let client: CertPair;
  let rogue: CertPair;
  let expired: CertPair;
  before(() => {
    pki = makePki();
    server = pki.issue('server', { cn: 'server' });
    client = pki.issue('client', { cn: 'root' });
    rogue = pki.issue('rogue', { cn: 'root', ca: 'other' });
    expired = pki.issue('expired', { cn: 'server', expired: true });
  });
  after(() => pki.cleanup());

  test('etcdctl over TLS with --client-cert-auth: a good client works; none or a wrong-CA one is refused; same as etcd', async () => {
    const flags = ['--cert-file', server.cert, '--key-file', server.key, '--trusted-ca-file', pki.ca.cert, '--client-cert-auth'];
    let c: ConcordHandle | null = null;
    let e: TlsEtcd | null = null;
    try {
      c = await startConcord({ scheme: 'https', extraArgs: flags });
      e = await startTlsEtcd(flags);
      const good = ['--cacert', pki.ca.cert, '--cert', client.cert, '--key', client.key];
      for (const [name, endpoint] of [['concord', c.endpoint], ['etcd', e.endpoint]] as const) {
        const put = await ctl(endpoint, good, ['put', 'k', 'v']);
        assert.equal(put.code, 0, `${name} put: ${put.stderr}`);
        assert.equal(put.stdout.trim(), 'OK');
        const get = await ctl(endpoint, good, ['get', 'k']);
        assert.equal(get.stdout, 'k\nv\n', name);
        const health = await ctl(endpoint, good, ['endpoint', 'health']);
        assert.equal(health.code, 0, `${name} health: ${health.stderr}`);
        assert.match(health.stdout + health.stderr, /is healthy: successfully committed proposal/);
        const none = await ctl(endpoint, ['--cacert', pki.ca.cert], ['get', 'k']);
        assert.notEqual(none.code, 0, `${name}: a client without a certificate must be refused`);
        assert.doesNotMatch(none.stdout, /^k$/m);
        const wrongCa = await ctl(endpoint, ['--cacert', pki.ca.cert, '--cert', rogue.cert, '--key', rogue.key], ['get', 'k']);
        assert.notEqual(wrongCa.code, 0, `${name}: a client certificate from another CA must be refused`);
        // The server is verified too: a client that trusts only the other CA refuses it.
        const distrust = await ctl(endpoint, ['--cacert', pki.otherCa.cert, '--cert', client.cert, '--key', client.key], ['get', 'k']);
        assert.notEqual(distrust.code, 0, `${name}: a server certificate from an untrusted CA must fail`);
      }
      // The gateway and /health are on the same TLS port (ALPN picks HTTP/1.1 for them).
      const health = await httpsGet(`${c.endpoint}/health`, pki.ca.cert, client);
      assert.equal(health.status, 200);
      assert.match(health.body, /"health":"true"/);
      await assert.rejects(httpsGet(`${c.endpoint}/health`, pki.ca.cert), 'no client certificate: handshake refused');
      assert.match(c.logs(), /rejected connection/);
    } finally {
      await c?.stop();
      await e?.stop();
    }
  });

  test('an expired server certificate makes etcdctl fail, as with etcd', async () => {
    const flags = ['--cert-file', expired.cert, '--key-file', expired.key];
    let c: ConcordHandle | null = null;
    let e: TlsEtcd | null = null;
    try {
      c = await startConcord({ scheme: 'https', extraArgs: flags });
      e = await startTlsEtcd(flags);
      for (const [name, endpoint] of [['concord', c.endpoint], ['etcd', e.endpoint]] as const) {
        const r = await ctl(endpoint, ['--cacert', pki.ca.cert], ['put', 'k', 'v']);
        assert.notEqual(r.code, 0, `${name}: an expired certificate must not be accepted`);
        const insecure = await ctl(endpoint, ['--insecure-transport=false', '--insecure-skip-tls-verify'], ['put', 'k', 'v']);
        assert.equal(insecure.code, 0, `${name}: skipping verification works: ${insecure.stderr}`);
      }
    } finally {
      await c?.stop();
      await e?.stop();
    }
  });

  test('certificate rotation: new files are served to new connections, no restart', async () => {
    const dir = fs.mkdtempSync(path.join(pki.dir, 'rot-'));
    const certFile = path.join(dir, 'server.crt');
    const keyFile = path.join(dir, 'server.key');
    const a = pki.issue('rot-a', { cn: 'server-a' });
    const b = pki.issue('rot-b', { cn: 'server-b' });
    fs.copyFileSync(a.cert, certFile);
    fs.copyFileSync(a.key, keyFile);
    const c = await startConcord({ scheme: 'https', extraArgs: ['--cert-file', certFile, '--key-file', keyFile] });
    try {
      assert.equal(await serverCn(c.port, pki.ca.cert), 'server-a');
      const before = await ctl(c.endpoint, ['--cacert', pki.ca.cert], ['put', 'k', '1']);
      assert.equal(before.code, 0, before.stderr);
      // A rotation as tools do it: write new files, rename over the old ones.
      fs.copyFileSync(b.key, keyFile + '.new');
      fs.copyFileSync(b.cert, certFile + '.new');
      fs.renameSync(keyFile + '.new', keyFile);
      fs.renameSync(certFile + '.new', certFile);
      assert.equal(await serverCn(c.port, pki.ca.cert), 'server-b');
      const afterRot = await ctl(c.endpoint, ['--cacert', pki.ca.cert], ['get', 'k']);
      assert.equal(afterRot.stdout, 'k\n1\n', afterRot.stderr);
      // A half-written rotation (a key that does not match the certificate) keeps the last good pair.
      fs.copyFileSync(a.cert, certFile);
      assert.equal(await serverCn(c.port, pki.ca.cert), 'server-b');
      assert.match(c.logs(), /cannot reload client TLS certificate; keeping the previous one/);
      fs.copyFileSync(a.key, keyFile);
      assert.equal(await serverCn(c.port, pki.ca.cert), 'server-a');
    } finally {
      await c.stop();
    }
  });

  test('--auto-tls: a generated certificate in <data-dir>/fixtures/client (mode 0700), usable with --insecure-skip-tls-verify', async () => {
    const c = await startConcord({ scheme: 'https', extraArgs: ['--auto-tls'] });
    let e: TlsEtcd | null = null;
    try {
      // etcd with the same flag, the same etcdctl outcomes.
      e = await startTlsEtcd(['--auto-tls']);
      const skipVerify = ['--insecure-transport=false', '--insecure-skip-tls-verify'];
      assert.equal((await ctl(e.endpoint, skipVerify, ['put', 'auto', 'tls'])).code, 0);
      assert.notEqual((await ctl(e.endpoint, ['--insecure-transport=false'], ['get', 'auto'])).code, 0);
      const fixtures = path.join(c.dataDir, 'fixtures', 'client');
      assert.equal(fs.statSync(fixtures).mode & 0o777, 0o700);
      assert.equal(fs.statSync(path.join(c.dataDir, 'fixtures')).mode & 0o777, 0o700);
      // openssl reads the certificate: self-signed, O=etcd, 127.0.0.1 as an IP SAN.
      const text = spawnSync('openssl', ['x509', '-in', path.join(fixtures, 'cert.pem'), '-noout', '-text'], { encoding: 'utf8' });
      assert.equal(text.status, 0, text.stderr);
      assert.match(text.stdout, /Subject: O ?= ?etcd/);
      assert.match(text.stdout, /IP Address:127\.0\.0\.1/);
      const verify = spawnSync('openssl', ['verify', '-CAfile', path.join(fixtures, 'cert.pem'), path.join(fixtures, 'cert.pem')], { encoding: 'utf8' });
      assert.equal(verify.status, 0, `the self-signature verifies: ${verify.stderr}`);
      const put = await ctl(c.endpoint, ['--insecure-transport=false', '--insecure-skip-tls-verify'], ['put', 'auto', 'tls']);
      assert.equal(put.code, 0, put.stderr);
      const get = await ctl(c.endpoint, ['--insecure-transport=false', '--insecure-skip-tls-verify'], ['get', 'auto']);
      assert.equal(get.stdout, 'auto\ntls\n');
      const verified = await ctl(c.endpoint, ['--insecure-transport=false'], ['get', 'auto']);
      assert.notEqual(verified.code, 0, 'a self-signed certificate is not trusted without --insecure-skip-tls-verify');
    } finally {
      await c.stop();
      await e?.stop();
    }
  });

  test('https --listen-metrics-urls and --listen-client-http-urls serve over TLS', async () => {
    const metricsPort = await freePort();
    const httpPort = await freePort();
    const c = await startConcord({
      scheme: 'https',
      extraArgs: ['--cert-file', server.cert, '--key-file', server.key, '--listen-metrics-urls', `https://127.0.0.1:${metricsPort}`,
        '--listen-client-http-urls', `https://127.0.0.1:${httpPort}`],
    });
    try {
      const g = await httpsGet(`https://127.0.0.1:${httpPort}/version`, pki.ca.cert);
      assert.equal(g.status, 200);
      assert.match(g.body, /"etcdserver":"3.4.23"/);
      const m = await httpsGet(`https://127.0.0.1:${metricsPort}/metrics`, pki.ca.cert);
      assert.equal(m.status, 200);
      assert.match(m.body, /etcd_server_has_leader 1/);
      const h = await httpsGet(`https://127.0.0.1:${metricsPort}/health`, pki.ca.cert);
      assert.equal(h.status, 200);
    } finally {
      await c.stop();
    }
  });

  test('start errors: https without a certificate, a missing file, a bad cipher suite or TLS version (etcd words)', async () => {
    const port = await freePort();
    const run = (args: string[]): { code: number | null; out: string } => {
      const dataDir = fs.mkdtempSync(path.join(pki.dir, 'bad-'));
      const r = spawnSync(process.execPath, [CONCORD_MAIN, '--data-dir', dataDir, '--listen-client-urls', `https://127.0.0.1:${port}`,
        '--advertise-client-urls', `https://127.0.0.1:${port}`, ...args], { encoding: 'utf8', timeout: 15_000 });
      return { code: r.status, out: r.stdout + r.stderr };
    };
    const noCert = run([]);
    assert.equal(noCert.code, 1);
    assert.match(noCert.out, new RegExp(`TLS key/cert \\(--cert-file, --key-file\\) must be provided for client url https://127.0.0.1:${port} with HTTPS scheme`));
    const missing = run(['--cert-file', '/nonexistent/server.crt', '--key-file', server.key]);
    assert.equal(missing.code, 1);
    assert.match(missing.out, /open \/nonexistent\/server\.crt: no such file or directory/);
    const mismatch = run(['--cert-file', server.cert, '--key-file', client.key]);
    assert.equal(mismatch.code, 1);
    assert.match(mismatch.out, /failed to load TLS certificate/);
    const cipher = run(['--cert-file', server.cert, '--key-file', server.key, '--cipher-suites', 'TLS_FOO']);
    assert.equal(cipher.code, 1);
    assert.match(cipher.out, /unexpected TLS cipher suite \\"TLS_FOO\\"/);
    const version = run(['--cert-file', server.cert, '--key-file', server.key, '--tls-min-version', 'TLS1.1']);
    assert.equal(version.code, 1);
    assert.match(version.out, /unexpected TLS version \\"TLS1.1\\" \(must be one of: TLS1.2, TLS1.3\)/);
    const order = run(['--cert-file', server.cert, '--key-file', server.key, '--tls-min-version', 'TLS1.3', '--tls-max-version', 'TLS1.2']);
    assert.equal(order.code, 1);
    assert.match(order.out, /min version \(TLS1.3\) is greater than max version \(TLS1.2\)/);
  });

  test('--cipher-suites and --tls-max-version limit what the handshake may choose', async () => {
    const c = await startConcord({
      scheme: 'https',
      extraArgs: ['--cert-file', server.cert, '--key-file', server.key, '--tls-max-version', 'TLS1.2',
        '--cipher-suites', 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'],
    });
    try {
      const s = await new Promise<tls.TLSSocket>((resolve, reject) => {
        const sock = tls.connect({ host: '127.0.0.1', port: c.port, ca: fs.readFileSync(pki.ca.cert) }, () => resolve(sock));
        sock.once('error', reject);
      });
      assert.equal(s.getProtocol(), 'TLSv1.2');
      assert.equal(s.getCipher().name, 'ECDHE-ECDSA-AES128-GCM-SHA256');
      s.destroy();
      // A client that offers only another suite is refused.
      await assert.rejects(new Promise((resolve, reject) => {
        const sock = tls.connect({ host: '127.0.0.1', port: c.port, ca: fs.readFileSync(pki.ca.cert), ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384', maxVersion: 'TLSv1.2' }, () => resolve(sock));
        sock.once('error', reject);
      }));
      const r = await ctl(c.endpoint, ['--cacert', pki.ca.cert], ['put', 'k', 'v']);
      assert.equal(r.code, 0, r.stderr);
    } finally {
      await c.stop();
    }
  });
});
