// Peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file, --peer-client-cert-auth,
// --peer-cert-allowed-cn, https:// peer URLs): a 3-member cluster whose every peer connection
// is TLS elects a leader, replicates, and lets a 4th member join (members fetch over TLS); a
// member with a certificate from another CA, or with another Common Name, is kept out.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { startCluster, type ClusterHandle } from '../helpers/cluster';
import { etcdctlSkipReason } from '../helpers/etcdctl';
import { makePki, type CertPair, type TestPki } from '../helpers/tls_certs';
import { ctl } from './tls_oracle';

const skip = etcdctlSkipReason();

async function eventually(what: string, f: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The value of `key` as member i serves it without asking the leader (serializable). */
async function localValue(c: ClusterHandle, i: number, key: string): Promise<string | null> {
  const r = await ctl(c.members[i]!.clientUrl, [], ['get', '--consistency=s', key]);
  if (r.code !== 0) return null;
  const lines = r.stdout.split('\n');
  return lines[0] === key ? lines[1]! : null;
}

describe('peer TLS', { skip }, () => {
  let pki: TestPki;
  const peerCerts: CertPair[] = [];
  let rogue: CertPair;
  let intruder: CertPair;
  before(() => {
    pki = makePki();
    for (let i = 0; i < 4; i++) peerCerts.push(pki.issue(`peer${i}`, { cn: 'etcd-peer' }));
    rogue = pki.issue('rogue-peer', { cn: 'etcd-peer', ca: 'other' });
    intruder = pki.issue('intruder-peer', { cn: 'intruder' });
  });
  after(() => pki.cleanup());

  const common = (): string[] => ['--peer-trusted-ca-file', pki.ca.cert, '--peer-client-cert-auth', '--peer-cert-allowed-cn', 'etcd-peer'];
  const certArgs = (p: CertPair): string[] => ['--peer-cert-file', p.cert, '--peer-key-file', p.key];

  test('3 members over https peer URLs elect a leader and replicate; a 4th joins over TLS', async () => {
    let c: ClusterHandle | null = null;
    try {
      c = await startCluster({ size: 3, peerScheme: 'https', extraArgs: common(), memberArgs: (i) => certArgs(peerCerts[i]!) });
      const leader = await c.leader();
      const put = await ctl(c.members[leader]!.clientUrl, [], ['put', 'tls-key', 'replicated']);
      assert.equal(put.code, 0, put.stderr);
      for (let i = 0; i < 3; i++) {
        await eventually(`member ${i} has the put`, async () => (await localValue(c!, i, 'tls-key')) === 'replicated');
      }
      // A write through a follower is forwarded to the leader over TLS.
      const follower = (leader + 1) % 3;
      const fput = await ctl(c.members[follower]!.clientUrl, [], ['put', 'via-follower', 'yes']);
      assert.equal(fput.code, 0, fput.stderr);
      // The peer port speaks TLS with the member's peer certificate.
      const cn = await new Promise<string>((resolve, reject) => {
        const s = tls.connect({
          host: '127.0.0.1', port: c!.members[0]!.peerPort, ca: fs.readFileSync(pki.ca.cert),
          cert: fs.readFileSync(peerCerts[1]!.cert), key: fs.readFileSync(peerCerts[1]!.key),
        }, () => {
          const v = s.getPeerCertificate().subject.CN;
          s.destroy();
          resolve(Array.isArray(v) ? v[0]! : v!);
        });
        s.once('error', reject);
      });
      assert.equal(cn, 'etcd-peer');
      const { index } = await c.join(leader);
      await eventually('the joined member has the data', async () => (await localValue(c!, index, 'via-follower')) === 'yes', 20_000);
    } finally {
      await c?.stop();
    }
  });

  test('through fault proxies (the dial table reroutes TLS): an isolated leader is replaced, healing converges', async () => {
    let c: ClusterHandle | null = null;
    try {
      c = await startCluster({ size: 3, peerScheme: 'https', faults: true, extraArgs: common(), memberArgs: (i) => certArgs(peerCerts[i]!) });
      const first = await c.leader();
      c.partitioner!.isolate(first);
      const others = [0, 1, 2].filter((i) => i !== first);
      let second = -1;
      await eventually('a new leader among the others', async () => {
        for (const i of others) {
          const r = await ctl(c!.members[i]!.clientUrl, ['--command-timeout=2s'], ['put', 'after-isolation', 'yes']);
          if (r.code === 0) {
            second = i;
            return true;
          }
        }
        return false;
      }, 20_000);
      assert.notEqual(second, -1);
      c.partitioner!.heal();
      await eventually('the old leader catches up over TLS', async () => (await localValue(c!, first, 'after-isolation')) === 'yes', 20_000);
    } finally {
      await c?.stop();
    }
  });

  test('--peer-auto-tls: generated peer certificates in <data-dir>/fixtures/peer, the cluster elects and replicates', async () => {
    let c: ClusterHandle | null = null;
    try {
      c = await startCluster({ size: 3, peerScheme: 'https', extraArgs: ['--peer-auto-tls'] });
      const leader = await c.leader();
      const put = await ctl(c.members[leader]!.clientUrl, [], ['put', 'auto', 'peer']);
      assert.equal(put.code, 0, put.stderr);
      for (let i = 0; i < 3; i++) {
        await eventually(`member ${i} has the put`, async () => (await localValue(c!, i, 'auto')) === 'peer');
        const dir = path.join(c.members[i]!.dataDir, 'fixtures', 'peer');
        assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
        assert.ok(fs.existsSync(path.join(dir, 'cert.pem')) && fs.existsSync(path.join(dir, 'key.pem')));
      }
    } finally {
      await c?.stop();
    }
  });

  // A member restarted with a bad certificate (a new one must hear from the others before it
  // is ready, which a refused one never does): the others refuse it, it gets no new writes and
  // cannot reach the leader.
  for (const [what, bad, refusal] of [
    ['--peer-client-cert-auth refuses a member whose certificate comes from another CA', (): CertPair => rogue, /rejected peer connection/],
    ['--peer-cert-allowed-cn refuses a member whose certificate has another Common Name', (): CertPair => intruder,
      /certificate Common Name not allowed.*"common-name":"intruder"/],
  ] as const) {
    test(what, async () => {
      let c: ClusterHandle | null = null;
      let badCert = false;
      try {
        c = await startCluster({ size: 3, peerScheme: 'https', extraArgs: common(), memberArgs: (i) => certArgs(i === 2 && badCert ? bad() : peerCerts[i]!) });
        await c.stopMember(2);
        badCert = true;
        await c.restart(2);
        const leader = await c.leader();
        assert.notEqual(leader, 2);
        const put = await ctl(c.members[leader]!.clientUrl, [], ['put', 'k', 'v']);
        assert.equal(put.code, 0, put.stderr);
        await eventually('the trusted members have the put', async () =>
          (await localValue(c!, 0, 'k')) === 'v' && (await localValue(c!, 1, 'k')) === 'v');
        await eventually('the trusted members refused the bad one', async () => refusal.test(c!.logs(0) + c!.logs(1)));
        const lin = await ctl(c.members[2]!.clientUrl, ['--command-timeout=2s'], ['get', 'k']);
        assert.notEqual(lin.code, 0, 'a linearizable read needs the leader');
        if (bad() === rogue) {
          // Both ways are cut (its server certificate is not trusted either): it gets nothing.
          assert.equal(await localValue(c, 2, 'k'), null);
        }
      } finally {
        await c?.stop();
      }
    });
  }
});
