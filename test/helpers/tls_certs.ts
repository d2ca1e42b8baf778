// Test helper: a throw-away PKI made with the openssl command at test time.
//
//   const pki = makePki();             // temp dir; pki.cleanup() removes it
//   pki.ca.cert                        // the trusted CA
//   pki.issue('server', { cn: 'server' })          // signed by the CA: cert, key
//   pki.issue('old', { cn: 'server', expired: true })   // validity ended in 2021
//   pki.issue('rogue', { cn: 'client', ca: 'other' })  // signed by another CA
//
// Every leaf has the usages serverAuth and clientAuth (peers use one certificate both ways)
// and the subject alternative names IP:127.0.0.1 and DNS:localhost (Go verifies SANs only).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface CertPair { cert: string; key: string }

export interface IssueOptions {
  cn: string;
  /** Signed by the other CA (one the servers do not trust). */
  ca?: 'main' | 'other';
  /** Valid only from 2020-01-01 to 2021-01-01. */
  expired?: boolean;
}

export interface TestPki {
  dir: string;
  ca: CertPair;
  otherCa: CertPair;
  issue(name: string, opts: IssueOptions): CertPair;
  cleanup(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function newKey(file: string, cwd: string): void {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file], cwd);
}

function makeCa(dir: string, name: string): CertPair {
  const pair = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
  newKey(pair.key, dir);
  openssl(['req', '-x509', '-new', '-key', pair.key, '-subj', `/CN=${name}`, '-days', '3',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-out', pair.cert], dir);
  return pair;
}

export function makePki(): TestPki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-pki-'));
  const ca = makeCa(dir, 'ca');
  const otherCa = makeCa(dir, 'other-ca');
  const ext = path.join(dir, 'leaf.ext');
  fs.writeFileSync(ext, [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth,clientAuth',
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '',
  ].join('\n'));
  // `openssl ca` (not `x509 -req`) for the expired ones: only it takes explicit dates in 3.0.
  const caConf = path.join(dir, 'ca.cnf');
  fs.writeFileSync(path.join(dir, 'index.txt'), '');
  fs.writeFileSync(path.join(dir, 'serial'), '1000\n');
  fs.writeFileSync(caConf, [
    '[ca]', 'default_ca = ca_default', '[ca_default]', `database = ${path.join(dir, 'index.txt')}`,
    `new_certs_dir = ${dir}`, `serial = ${path.join(dir, 'serial')}`, 'default_md = sha256',
    'policy = policy_any', 'unique_subject = no', 'copy_extensions = none', '[policy_any]', 'commonName = supplied', '',
  ].join('\n'));
  return {
    dir, ca, otherCa,
    issue(name, opts) {
      const pair = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
      const csr = path.join(dir, `${name}.csr`);
      const signer = opts.ca === 'other' ? otherCa : ca;
      newKey(pair.key, dir);
      openssl(['req', '-new', '-key', pair.key, '-subj', `/CN=${opts.cn}`, '-out', csr], dir);
      if (opts.expired === true) {
        openssl(['ca', '-batch', '-config', caConf, '-cert', signer.cert, '-keyfile', signer.key, '-notext',
          '-startdate', '20200101000000Z', '-enddate', '20210101000000Z', '-extfile', ext, '-in', csr, '-out', pair.cert], dir);
      } else {
        openssl(['x509', '-req', '-in', csr, '-CA', signer.cert, '-CAkey', signer.key, '-CAcreateserial',
          '-days', '2', '-extfile', ext, '-out', pair.cert], dir);
      }
      return pair;
    },
    cleanup() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
