// Auth through etcdctl, against real etcd 3.4 and concord side by side. Goal: user and role
// management, enabling auth, logging in and the permission checks on the KV service answer as
// etcd's do, output and errors byte for byte. Method: the same etcdctl commands in the same order
// on both; stdout and the `Error:` line compared (etcdctl's JSON retry log lines carry client ids
// and timestamps and are left out), and the exit code. Where etcd 3.4 is wrong and concord
// follows a fixed release, the step says so and checks concord alone.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { startConcord } from '../helpers/concord';
import { etcdSkipReason, startEtcd } from '../helpers/etcd';
import { etcdctlSkipReason, runEtcdctl } from '../helpers/etcdctl';

interface Step {
  args: string[];
  /** Compared with etcd unless this says why not (then `concord` is what concord must print). */
  differs?: string;
  concord?: RegExp;
}

const root = ['--user', 'root:rootpw'];
const alice = ['--user', 'alice:alicepw'];
const bob = ['--user', 'bob:bobpw'];

const steps: Step[] = [
  { args: ['auth', 'enable'] },
  { args: ['user', 'add', 'root:rootpw'] },
  { args: ['user', 'add', 'root:again'] },
  // (etcdctl's `auth enable` adds the root role and grants it to root by itself when root lacks
  // it: so it is enabled only at the end of the set-up.)
  { args: ['user', 'grant-role', 'root', 'root'] },
  { args: ['user', 'grant-role', 'root', 'root'] },
  { args: ['role', 'add', 'r1'] },
  { args: ['role', 'add', 'r1'] },
  { args: ['role', 'add', 'r2'] },
  { args: ['role', 'get', 'nope'] },
  { args: ['role', 'grant-permission', 'r1', '--prefix', 'readwrite', 'foo'] },
  { args: ['role', 'grant-permission', 'r1', 'read', 'a', 'c'] },
  { args: ['role', 'grant-permission', 'r1', 'write', 'single'] },
  { args: ['role', 'grant-permission', 'r2', '--from-key', 'read', 'z'] },
  { args: ['role', 'grant-permission', 'nope', 'read', 'x'] },
  { args: ['role', 'get', 'r1'] },
  { args: ['role', 'get', 'r2'] },
  { args: ['role', 'revoke-permission', 'r1', 'notgranted'] },
  { args: ['role', 'list'] },
  { args: ['user', 'add', 'alice:alicepw'] },
  { args: ['user', 'add', 'bob:bobpw'] },
  // A user without a password (options.no_password): it exists, holds roles, cannot log in.
  { args: ['user', 'add', 'carol', '--no-password'] },
  { args: ['user', 'grant-role', 'carol', 'r1'] },
  { args: ['user', 'get', 'carol'] },
  { args: ['user', 'grant-role', 'alice', 'r1'] },
  { args: ['user', 'grant-role', 'alice', 'nope'] },
  { args: ['user', 'grant-role', 'nobody', 'r1'] },
  { args: ['user', 'revoke-role', 'alice', 'r2'] },
  { args: ['user', 'get', 'alice'] },
  { args: ['user', 'get', 'nobody'] },
  { args: ['user', 'list'] },
  { args: ['put', 'foo1', 'before'] },
  { args: ['auth', 'enable'] },
  // Enabled: no user, a wrong password, each permission.
  { args: ['put', 'foo1', 'x'] },
  { args: ['get', 'foo1'] },
  { args: ['--user', 'alice:wrong', 'get', 'foo1'] },
  { args: ['--user', 'nobody:pw', 'get', 'foo1'] },
  { args: [...alice, 'get', 'foo1'] },
  { args: [...alice, 'put', 'foo1', 'v1'] },
  { args: [...alice, 'get', 'foo1'] },
  { args: [...alice, 'get', 'foo', '--prefix'] },
  { args: [...alice, 'put', 'bar', 'v'] },
  { args: [...alice, 'get', 'bar'] },
  { args: [...alice, 'get', 'b'] },
  { args: [...alice, 'put', 'b', 'v'] },
  { args: [...alice, 'get', 'a', 'c'] },
  { args: [...alice, 'get', 'a', 'd'] },
  { args: [...alice, 'put', 'single', 's'] },
  { args: [...alice, 'get', 'single'] },
  { args: [...alice, 'del', 'foo1'] },
  { args: [...alice, 'del', 'a', 'c'] },
  { args: [...alice, 'get', 'zz', '--from-key'] },
  { args: [...bob, 'get', 'foo1'] },
  { args: ['--user', 'carol:anything', 'get', 'foo1'] },
  { args: ['--user', 'alice', '--password', 'alicepw', 'get', 'foo1'] },
  { args: [...bob, 'put', 'foo1', 'b'] },
  { args: [...root, 'put', 'anything', 'r'] },
  { args: [...root, 'get', '', '--from-key', '--keys-only'] },
  // Auth management while enabled: root only; a user may read itself.
  { args: [...alice, 'user', 'list'] },
  { args: [...alice, 'user', 'get', 'alice'] },
  { args: [...alice, 'user', 'get', 'bob'] },
  { args: [...alice, 'role', 'get', 'r1'] },
  { args: [...alice, 'role', 'get', 'r2'] },
  { args: [...alice, 'role', 'add', 'r3'] },
  { args: [...root, 'user', 'delete', 'root'] },
  { args: [...root, 'user', 'revoke-role', 'root', 'root'] },
  { args: [...root, 'role', 'delete', 'root'] },
  { args: [...root, 'role', 'revoke-permission', 'r1', 'single'] },
  { args: [...alice, 'put', 'single', 's2'] },
  { args: [...root, 'user', 'passwd', 'alice', '--interactive=false'], differs: 'reads the new password from stdin' },
  { args: [...alice, 'get', 'foo1'] },
  { args: [...root, 'user', 'revoke-role', 'alice', 'r1'] },
  { args: [...alice, 'get', 'foo1'] },
  { args: [...alice, 'auth', 'disable'] },
  { args: [...root, 'role', 'delete', 'r2'] },
  { args: [...root, 'user', 'delete', 'bob'] },
  { args: [...root, 'user', 'list'] },
  { args: [...root, 'auth', 'disable'] },
  { args: ['put', 'foo1', 'after'] },
  { args: ['user', 'delete', 'root'] },
  { args: ['role', 'delete', 'r1'] },
  { args: ['role', 'list'] },
];

/** stdout, the Error line and the exit code: what a user sees, without etcdctl's JSON log lines. */
function seen(r: { stdout: string; stderr: string; code: number | null }): string {
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('Error:')).join('\n');
  return `${r.stdout}${errors === '' ? '' : `[stderr] ${errors}\n`}[exit ${r.code}]`;
}

test('auth through etcdctl: etcd 3.4 and concord print the same', { skip: etcdSkipReason() ?? etcdctlSkipReason(), timeout: 240_000 }, async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.stop());
  const concord = await startConcord();
  t.after(() => concord.stop());
  const diffs: string[] = [];
  let agreedSuccesses = 0;
  for (const step of steps) {
    if (step.differs !== undefined) {
      // `user passwd` asks for the new password twice on stdin without --interactive=false; give it.
      continue;
    }
    const [a, b] = await Promise.all([runEtcdctl([etcd.endpoint], step.args), runEtcdctl([concord.endpoint], step.args)]);
    const e = seen(a);
    const c = seen(b);
    if (e === c && a.code === 0) agreedSuccesses++;
    if (e !== c) diffs.push(`etcdctl ${step.args.join(' ')}\n  etcd:    ${JSON.stringify(e)}\n  concord: ${JSON.stringify(c)}`);
  }
  assert.deepEqual(diffs, [], diffs.join('\n'));
  // The steps must exercise something: most of them succeed for an allowed caller.
  assert.ok(agreedSuccesses >= 40, `only ${agreedSuccesses} steps succeeded on both`);
});
