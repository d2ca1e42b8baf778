// With --client-cert-auth and auth enabled, the Common Name of a client's verified certificate
// is the user of a call without a token (etcd AuthInfoFromTLS). Method: the same etcdctl
// commands over mutual TLS against etcd 3.4 and concord with the same certificates (CN root,
// CN alice holding a prefix, CN mallory who is no user), outputs compared.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startConcord } from '../helpers/concord';
import { etcdSkipReason } from '../helpers/etcd';
import { etcdctlSkipReason } from '../helpers/etcdctl';
import { makePki, type CertPair, type TestPki } from '../helpers/tls_certs';
import { ctl, startTlsEtcd } from '../tls/tls_oracle';

let pki: TestPki;
let server: CertPair;
let rootCert: CertPair;
let aliceCert: CertPair;
let malloryCert: CertPair;

before(() => {
  pki = makePki();
  server = pki.issue('server', { cn: 'server' });
  rootCert = pki.issue('root', { cn: 'root' });
  aliceCert = pki.issue('alice', { cn: 'alice' });
  malloryCert = pki.issue('mallory', { cn: 'mallory' });
});
after(() => pki.cleanup());

test('the client certificate CN is the user: etcd 3.4 and concord agree', { skip: etcdSkipReason() ?? etcdctlSkipReason(), timeout: 120_000 }, async (t) => {
  const flags = ['--cert-file', server.cert, '--key-file', server.key, '--trusted-ca-file', pki.ca.cert, '--client-cert-auth'];
  const c = await startConcord({ scheme: 'https', extraArgs: flags });
  t.after(() => c.stop());
  const e = await startTlsEtcd(flags);
  t.after(() => e.stop());
  const as = (p: CertPair): string[] => ['--cacert', pki.ca.cert, '--cert', p.cert, '--key', p.key];
  const steps: [CertPair, string[]][] = [
    [rootCert, ['user', 'add', 'root:rootpw']],
    [rootCert, ['user', 'grant-role', 'root', 'root']],
    [rootCert, ['role', 'add', 'app']],
    [rootCert, ['role', 'grant-permission', 'app', '--prefix', 'readwrite', 'foo']],
    [rootCert, ['user', 'add', 'alice:alicepw']],
    [rootCert, ['user', 'grant-role', 'alice', 'app']],
    [rootCert, ['auth', 'enable']],
    [aliceCert, ['put', 'foo1', 'a']],
    [aliceCert, ['get', 'foo1']],
    [aliceCert, ['put', 'bar', 'a']],
    [aliceCert, ['get', 'bar']],
    [malloryCert, ['get', 'foo1']],
    [malloryCert, ['put', 'foo2', 'm']],
    [rootCert, ['put', 'bar', 'r']],
    [rootCert, ['get', 'bar']],
    [aliceCert, ['user', 'list']],
    [rootCert, ['user', 'list']],
    // A token wins over the certificate: alice's certificate with root's password is root.
    [aliceCert, ['--user', 'root:rootpw', 'put', 'bar', 'r2']],
    [rootCert, ['auth', 'disable']],
  ];
  const diffs: string[] = [];
  let ok = 0;
  for (const [cert, args] of steps) {
    const [a, b] = await Promise.all([ctl(e.endpoint, as(cert), args), ctl(c.endpoint, as(cert), args)]);
    const seen = (r: { stdout: string; stderr: string; code: number | null }): string =>
      `${r.stdout}${r.stderr.split('\n').filter((l) => l.startsWith('Error:')).join('\n')}[exit ${r.code}]`;
    if (seen(a) !== seen(b)) diffs.push(`${args.join(' ')}\n  etcd:    ${JSON.stringify(seen(a))}\n  concord: ${JSON.stringify(seen(b))}`);
    else if (a.code === 0) ok++;
  }
  assert.deepEqual(diffs, [], diffs.join('\n'));
  assert.ok(ok >= 12, `only ${ok} steps succeeded on both`);
});
