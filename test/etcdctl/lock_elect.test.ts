// `etcdctl lock` and `etcdctl elect` (real etcdctl 3.4) against a fresh real etcd and a fresh
// concord, the same steps on both at the same time. etcdctl implements both commands on the
// client side (clientv3/concurrency: a session lease kept alive, a txn put under the name, a
// watch on the key before it), so this exercises Lease, KV and Watch the way every Go client's
// mutex and election do; the Lock/Election gRPC services are tested in test/lock.
//
// Outputs are compared after normalization: session lease ids (printed in hex inside keys) become
// <leaseN> in order of first appearance, pids P1, P2, ... in order of appearance.
//
// What etcdctl 3.4 does (found by running it):
//  - `lock <name> [--ttl N] -- <cmd...>`: runs cmd holding the lock, with ETCD_LOCK_KEY
//    (<name>/<lease hex>) and ETCD_LOCK_REV (the revision the lock was taken at) in its
//    environment; closes the session (revokes the lease) afterwards; exit code 0, or 1 with
//    "Error: exit status N" when the command fails. Without `--`, flags of cmd are etcdctl's.
//  - `lock <name>` with no command prints the key and a blank line ("<name>/<hex>\n\n") once it
//    holds the lock, and holds it until SIGINT (then deletes the key, exit 0). SIGKILL leaves the
//    key until the session lease (--ttl, default 10 s) expires.
//  - `elect <name> <proposal>` prints "<name>/<hex>\n<proposal>\n" once elected, resigns on
//    SIGINT (exit 0). It has no --ttl: the session lease is 60 s, so a killed leader's hand-over
//    is driven here by revoking its lease (`etcdctl lease revoke`), which is what expiry does.
//  - `elect -l <name>` prints "<key>\n<value>\n" for the current leader and each change.
//  - Argument errors exit 128: "Error: lock takes a lock name argument and an optional command to
//    execute", "Error: elect takes one election name argument and an optional proposal argument",
//    "Error: no proposal argument but -l not set", "Error: proposal given but -l is set".

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { ctlEnv, ETCDCTL_BIN, etcdctlSkipReason as skipReason } from '../helpers/etcdctl';
import { IdNames, sleep, startPair, type Subject } from '../helpers/lock_elect';


const live = new Set<ChildProcess>();
// If the test process dies without running after(): no etcdctl of ours outlives it.
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/** A running etcdctl: output so far, and how it ended. */
class Ctl {
  out = '';
  err = '';
  readonly proc: ChildProcess;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(endpoint: string, args: string[]) {
    this.proc = spawn(ETCDCTL_BIN, [`--endpoints=${endpoint}`, ...args], { env: ctlEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(this.proc);
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.err += d));
    this.exit = new Promise((resolve) => {
      this.proc.on('error', (e) => {
        this.err += String(e);
        resolve({ code: null, signal: null });
      });
      this.proc.on('close', (code, signal) => {
        live.delete(this.proc);
        resolve({ code, signal });
      });
    });
  }

  get done(): boolean {
    return !live.has(this.proc);
  }

  /** Waits until stdout has `n` lines (or the process ends); false on timeout. */
  async lines(n: number, ms = 10_000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (this.out.split('\n').length - 1 < n) {
      if (this.done || Date.now() > deadline) return false;
      await sleep(20);
    }
    return true;
  }

  /** Sends `sig` and waits for the exit (SIGKILL after 5 s). */
  async stop(sig: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.proc.kill(sig);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    const r = await this.exit;
    clearTimeout(t);
    return r;
  }
}

/** Runs etcdctl to completion (killed after 20 s). */
async function run(endpoint: string, args: string[]): Promise<{ out: string; err: string; code: number | null }> {
  const c = new Ctl(endpoint, args);
  const t = setTimeout(() => c.proc.kill('SIGKILL'), 20_000);
  const { code } = await c.exit;
  clearTimeout(t);
  return { out: c.out, err: c.err, code };
}

/** One server's side: its endpoint and its id naming. */
interface Side {
  label: string;
  endpoint: string;
  ids: IdNames;
  pids: Map<string, string>;
}

/** Names the lease ids in `<name>/<hex>` keys (first appearance order) and pids, then applies. */
function norm(s: Side, text: string): string {
  for (const m of text.matchAll(/[A-Za-z]\/([0-9a-f]{1,16})\b/g)) s.ids.name(BigInt(`0x${m[1]}`));
  for (const m of text.matchAll(/\b(?:start|end) (\d+)/g)) if (!s.pids.has(m[1]!)) s.pids.set(m[1]!, `P${s.pids.size + 1}`);
  return s.ids.apply(text)
    .replace(/\blease ([0-9a-f]+) revoked/g, (_x, h: string) => `lease ${s.ids.name(BigInt(`0x${h}`))} revoked`)
    .replace(/\b(start|end) (\d+)/g, (_x, w: string, p: string) => `${w} ${s.pids.get(p)}`);
}

describe('etcdctl lock / elect: etcd vs concord', { skip: skipReason() }, () => {
  let etcd: { endpoint: string; stop(): Promise<void> } | undefined;
  let subject: Subject | undefined;
  let E: Side;
  let C: Side;
  let tmp: string;

  before(async () => {
    [etcd, subject] = await startPair();
    E = { label: 'etcd', endpoint: etcd.endpoint, ids: new IdNames(), pids: new Map() };
    C = { label: subject.kind === 'etcd' ? 'second etcd' : subject.kind, endpoint: subject.endpoint, ids: new IdNames(), pids: new Map() };
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-lockelect-'));
  });
  beforeEach(() => {
    // id and pid names start over in each test
    for (const s of [E, C]) {
      s.ids = new IdNames();
      s.pids = new Map();
    }
  });
  after(async () => {
    for (const p of live) p.kill('SIGKILL');
    await Promise.all([etcd?.stop(), subject?.stop()]);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** Runs `fn` on both sides at once; returns [etcd's, subject's] results. */
  function both<T>(fn: (s: Side) => Promise<T>): Promise<[T, T]> {
    return Promise.all([fn(E), fn(C)]);
  }

  /** Asserts the two normalized values are equal; returns etcd's. */
  function same<T>(what: string, pair: [T, T]): T {
    assert.deepEqual(pair[1], pair[0], `${what}: ${C.label} differs from etcd`);
    return pair[0];
  }

  test('lock -- <cmd>: two (then three) contending etcdctl processes never overlap', async () => {
    const script = (file: string): string[] =>
      ['sh', '-c', `echo "start $$ $ETCD_LOCK_KEY $ETCD_LOCK_REV" >> ${file}; sleep 0.4; echo "end $$" >> ${file}`];
    const results = await both(async (s) => {
      const file = path.join(tmp, `mutex-${s === E ? 'etcd' : 'subject'}`);
      fs.writeFileSync(file, '');
      const runs = [];
      for (let i = 0; i < 3; i++) {
        runs.push(run(s.endpoint, ['lock', 'L', '--', ...script(file)])); // the -- keeps sh's -c from etcdctl
        await sleep(100); // queued in this order
      }
      const ends = await Promise.all(runs);
      const text = fs.readFileSync(file, 'utf8');
      return { ends: ends.map((r) => ({ code: r.code, out: r.out, err: r.err })), file: norm(s, text), raw: text };
    });
    const e = same('lock -- cmd: exit codes, output and the shared file', [
      { ends: results[0].ends, file: results[0].file },
      { ends: results[1].ends, file: results[1].file },
    ]);
    for (const [i, r] of results.entries()) {
      // no interleaving: start P, end P, start Q, end Q, ...
      const lines = r.raw.trim().split('\n');
      assert.equal(lines.length, 6, `${[E, C][i]!.label}: ${r.raw}`);
      for (let j = 0; j < 6; j += 2) {
        const [, pid] = /^start (\d+) L\/[0-9a-f]+ \d+$/.exec(lines[j]!) ?? [];
        assert.ok(pid, `${[E, C][i]!.label}: line ${j}: ${lines[j]}`);
        assert.equal(lines[j + 1], `end ${pid}`, `${[E, C][i]!.label}: no other holder between start and end:\n${r.raw}`);
      }
    }
    assert.deepEqual(e.ends, [0, 1, 2].map(() => ({ code: 0, out: '', err: '' })));
  });

  test('lock <name>: prints the key and holds; a second one waits; SIGINT hands over; SIGKILL hands over at lease expiry', async () => {
    const r = await both(async (s) => {
      const steps: Record<string, unknown> = {};
      const h1 = new Ctl(s.endpoint, ['lock', 'H']);
      await h1.lines(2);
      steps.holder = norm(s, h1.out); // "H/<lease1>\n\n"
      const h2 = new Ctl(s.endpoint, ['lock', 'H']);
      await sleep(600);
      steps['second while the first holds'] = norm(s, h2.out); // nothing yet
      steps['first on SIGINT'] = await h1.stop('SIGINT'); // exit 0 (deletes its key)
      await h2.lines(2);
      steps.second = norm(s, h2.out); // "H/<lease2>\n\n"
      const keys = await run(s.endpoint, ['get', '--prefix', 'H', '--keys-only']);
      steps['keys under H'] = norm(s, keys.out);
      steps['second on SIGINT'] = await h2.stop('SIGINT');
      // --ttl 2, killed: the key stays until its session lease expires, then the waiter gets it.
      const k1 = new Ctl(s.endpoint, ['lock', '--ttl', '2', 'X']);
      await k1.lines(2);
      steps['ttl 2 holder'] = norm(s, k1.out);
      const k2 = new Ctl(s.endpoint, ['lock', 'X']);
      await sleep(300);
      steps['killed holder'] = await k1.stop('SIGKILL');
      const killedAt = Date.now();
      steps['waiter right after the kill'] = norm(s, k2.out); // still nothing
      const got = await k2.lines(2, 10_000);
      const waited = Date.now() - killedAt;
      steps['waiter after the expiry'] = norm(s, k2.out);
      steps['waiter exit'] = await k2.stop('SIGINT');
      return { steps, got, waited, err: [h1.err, h2.err, k1.err, k2.err] };
    });
    const e = same('lock without a command', [r[0].steps, r[1].steps]);
    assert.equal(e.holder, 'H/<lease1>\n\n');
    assert.equal(e['second while the first holds'], '');
    assert.deepEqual(e['first on SIGINT'], { code: 0, signal: null });
    assert.equal(e.second, 'H/<lease2>\n\n');
    assert.equal(e['waiter right after the kill'], '');
    for (const [i, x] of r.entries()) {
      const label = [E, C][i]!.label;
      assert.ok(x.got, `${label}: the waiter never got the lock of the killed holder`);
      // The key is held until the lease expires (TTL 2 s, kept alive every ~0.7 s until the kill).
      assert.ok(x.waited >= 500 && x.waited < 8000, `${label}: hand-over ${x.waited} ms after the kill`);
      assert.deepEqual(x.err, ['', '', '', ''], `${label}: stderr`);
    }
  });

  test('elect <name> <proposal> and elect -l: outputs, SIGINT resigns, a killed leader hands over when its lease goes', async () => {
    const r = await both(async (s) => {
      const steps: Record<string, unknown> = {};
      const listen1 = new Ctl(s.endpoint, ['elect', '-l', 'E']);
      await sleep(300);
      steps['listener, no leader'] = listen1.out; // nothing
      const a = new Ctl(s.endpoint, ['elect', 'E', 'alpha']);
      await a.lines(2);
      steps.alpha = norm(s, a.out); // "E/<lease1>\nalpha\n"
      const b = new Ctl(s.endpoint, ['elect', 'E', 'beta']);
      await sleep(500);
      steps['beta while alpha leads'] = norm(s, b.out); // nothing
      const listen2 = new Ctl(s.endpoint, ['elect', '-l', 'E']);
      await listen2.lines(2);
      await listen1.lines(2);
      steps.listeners = [norm(s, listen1.out), norm(s, listen2.out)]; // the current leader
      steps['alpha on SIGINT'] = await a.stop('SIGINT'); // resigns, exit 0
      await b.lines(2);
      steps.beta = norm(s, b.out);
      await listen1.lines(4);
      await listen2.lines(4);
      steps['listeners after the resign'] = [norm(s, listen1.out), norm(s, listen2.out)];
      steps['beta on SIGKILL'] = await b.stop('SIGKILL');
      const g = new Ctl(s.endpoint, ['elect', 'E', 'gamma']);
      await sleep(500);
      steps['gamma while dead beta leads'] = norm(s, g.out); // nothing: beta's key lives with its lease
      const betaLease = /E\/([0-9a-f]+)/.exec(b.out)?.[1] ?? 'none';
      const rv = await run(s.endpoint, ['lease', 'revoke', betaLease]);
      steps['revoke beta\'s lease'] = { out: norm(s, rv.out), code: rv.code };
      await g.lines(2);
      steps.gamma = norm(s, g.out);
      await listen1.lines(6);
      await listen2.lines(6);
      steps['listeners after the revoke'] = [norm(s, listen1.out), norm(s, listen2.out)];
      steps['gamma on SIGINT'] = await g.stop('SIGINT');
      await sleep(300);
      steps['listeners at the end'] = [norm(s, listen1.out), norm(s, listen2.out)]; // no leader: nothing new
      steps['listeners on SIGINT'] = [await listen1.stop('SIGINT'), await listen2.stop('SIGINT')];
      steps.stderr = [listen1.err, listen2.err, a.err, b.err, g.err];
      return steps;
    });
    const e = same('elect', r);
    assert.equal(e.alpha, 'E/<lease1>\nalpha\n');
    assert.equal(e['beta while alpha leads'], '');
    assert.equal(e.beta, 'E/<lease2>\nbeta\n');
    assert.equal(e['gamma while dead beta leads'], '');
    assert.equal(e.gamma, 'E/<lease3>\ngamma\n');
    assert.deepEqual(e['listeners after the revoke'], Array(2).fill('E/<lease1>\nalpha\nE/<lease2>\nbeta\nE/<lease3>\ngamma\n'));
    assert.deepEqual(e['alpha on SIGINT'], { code: 0, signal: null });
  });

  test('argument errors and a failing command', async () => {
    for (const args of [
      ['lock'], // 128 "Error: lock takes a lock name argument and an optional command to execute"
      ['elect'], // 128 "Error: elect takes one election name argument and an optional proposal argument"
      ['elect', 'E'], // 128 "Error: no proposal argument but -l not set"
      ['elect', '-l', 'E', 'x'], // 128 "Error: proposal given but -l is set"
      ['lock', 'Z', '--', 'sh', '-c', 'exit 3'], // 1 "Error: exit status 3" (after taking and releasing the lock)
      ['lock', 'Z', 'no-such-command-here'], // 1 "Error: exec: \"no-such-command-here\": executable file not found in $PATH"
      ['lock', 'Z', '--', 'sh', '-c', 'echo "$ETCD_LOCK_KEY"'], // the command's own output: Z/<lease>
    ]) {
      const r = await both(async (s) => {
        const x = await run(s.endpoint, args);
        return { out: norm(s, x.out), err: x.err, code: x.code };
      });
      same(`etcdctl ${args.join(' ')}`, r);
    }
  });
});
