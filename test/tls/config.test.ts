// The TLS flags as the configuration reads them: command line, ETCD_* variables, etcd's config
// file sections (client-transport-security, peer-transport-security), and the checks etcd makes.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, parseArgs } from '../../src/config/config';
import { opensslCiphers } from '../../src/tls/tls_info';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-tls-config-'));
let n = 0;
const dataDir = (): string => path.join(root, `d${n++}`);

function refused(argv: string[], message: RegExp): void {
  assert.throws(() => parseArgs(['--data-dir', dataDir(), ...argv], {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.exitCode, 1);
    assert.match(err.message, message);
    return true;
  });
}

describe('TLS configuration', () => {
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  test('flags and their etcd defaults', () => {
    const d = parseArgs(['--data-dir', dataDir()], {}).config;
    assert.equal(d.certFile, '');
    assert.equal(d.clientCertAuth, false);
    assert.equal(d.autoTls, false);
    assert.equal(d.peerClientCertAuth, false);
    assert.equal(d.tlsMinVersion, 'TLS1.2');
    assert.equal(d.tlsMaxVersion, '');
    assert.equal(d.selfSignedCertValidity, 1);
    const c = parseArgs(['--data-dir', dataDir(), '--cert-file', '/c', '--key-file', '/k', '--client-cert-auth',
      '--listen-client-urls', 'https://127.0.0.1:3000', '--peer-cert-allowed-cn', 'etcd-peer', '--peer-auto-tls'], {}).config;
    assert.equal(c.certFile, '/c');
    assert.equal(c.clientCertAuth, true);
    assert.equal(c.peerCertAllowedCn, 'etcd-peer');
    assert.equal(c.peerAutoTls, true);
    const e = parseArgs(['--data-dir', dataDir()], { ETCD_TRUSTED_CA_FILE: '/ca', ETCD_PEER_CLIENT_CERT_AUTH: 'true' }).config;
    assert.equal(e.trustedCaFile, '/ca');
    assert.equal(e.peerClientCertAuth, true);
  });

  test("etcd's config file sections map to the flags", () => {
    const file = path.join(root, 'etcd.yaml');
    fs.writeFileSync(file, [
      `data-dir: ${dataDir()}`,
      'listen-client-urls: https://127.0.0.1:3001',
      'client-transport-security:',
      '  cert-file: /s.crt', '  key-file: /s.key', '  trusted-ca-file: /ca.crt', '  client-cert-auth: true',
      'peer-transport-security:',
      '  cert-file: /p.crt', '  key-file: /p.key', '  client-cert-auth: true', '  allowed-cn: etcd-peer', '  auto-tls: false',
      'cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]',
      'tls-max-version: TLS1.3',
      '',
    ].join('\n'));
    const c = parseArgs(['--config-file', file], {}).config;
    assert.equal(c.certFile, '/s.crt');
    assert.equal(c.trustedCaFile, '/ca.crt');
    assert.equal(c.clientCertAuth, true);
    assert.equal(c.peerCertFile, '/p.crt');
    assert.equal(c.peerClientCertAuth, true);
    assert.equal(c.peerCertAllowedCn, 'etcd-peer');
    assert.equal(c.cipherSuites, 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256');
    assert.equal(opensslCiphers(c.cipherSuites), 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256');
    assert.equal(c.tlsMaxVersion, 'TLS1.3');
  });

  test("refused as etcd refuses, in etcd's words", () => {
    refused(['--listen-client-urls', 'https://127.0.0.1:3002'],
      /^TLS key\/cert \(--cert-file, --key-file\) must be provided for client url https:\/\/127.0.0.1:3002 with HTTPS scheme$/);
    refused(['--listen-metrics-urls', 'https://127.0.0.1:3003'], /^cannot listen on TLS for 127.0.0.1:3003: KeyFile and CertFile are not presented$/);
    refused(['--listen-peer-urls', 'https://127.0.0.1:3004', '--initial-advertise-peer-urls', 'https://127.0.0.1:3004'],
      /^cannot listen on TLS for 127.0.0.1:3004: KeyFile and CertFile are not presented$/);
    refused(['--cipher-suites', 'TLS_RSA_WITH_RC4_128_SHA'], /^unexpected TLS cipher suite "TLS_RSA_WITH_RC4_128_SHA"$/);
    refused(['--tls-min-version', 'TLS1.0'], /^unexpected TLS version "TLS1.0" \(must be one of: TLS1.2, TLS1.3\)$/);
    refused(['--tls-min-version', 'TLS1.3', '--tls-max-version', 'TLS1.2'], /^min version \(TLS1.3\) is greater than max version \(TLS1.2\)$/);
    refused(['--tls-min-version', 'TLS1.3', '--cipher-suites', 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'],
      /^cipher suites cannot be configured when only TLS1.3 is enabled$/);
    // Auto TLS needs no files.
    parseArgs(['--data-dir', dataDir(), '--listen-client-urls', 'https://127.0.0.1:3005', '--auto-tls'], {});
  });
});
