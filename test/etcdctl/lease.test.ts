// Real etcdctl `lease ...` and `put --lease` against a fresh real etcd and a fresh concord: the same
// commands, in the same order, on both; stdout, stderr and exit code must match once normalized.
// Besides what test/etcdctl/etcdctl.test.ts normalizes (endpoint, cluster/member id, raft term,
// timestamps and client ids of etcdctl's retry log line), lease IDs are each server's own choice:
// every ID a `lease grant` printed is replaced (hex as etcdctl prints it, and decimal as in -w json
// / fields) by <L1>, <L2>, ... in grant order on each side. Remaining TTLs may differ by 1 s (the
// two servers are asked a few ms apart, etcd truncates to seconds). Lists in Go map order (lease
// list, attached keys) are compared sorted. LEASE_DIFF_AGAINST=etcd runs a second etcd for concord.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';

import { startConcord, type ConcordHandle } from '../helpers/concord';
import { startEtcd, type EtcdHandle } from '../helpers/etcd';
import { ctlEnv, ETCDCTL_BIN, etcdctlSkipReason as skipReason } from '../helpers/etcdctl';


interface Run {
  stdout: string;
  stderr: string;
  code: number | null;
}

const live = new Set<ChildProcess>();

function spawnCtl(endpoint: string, args: string[]): { proc: ChildProcess; done: Promise<Run>; out: () => string } {
  const proc = spawn(ETCDCTL_BIN, [`--endpoints=${endpoint}`, ...args], { env: ctlEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  proc.stdout!.on('data', (c: Buffer) => out.push(c));
  proc.stderr!.on('data', (c: Buffer) => err.push(c));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
  const done = new Promise<Run>((resolve, reject) => {
    proc.on('error', (e) => {
      clearTimeout(timer);
      live.delete(proc);
      reject(e);
    });
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(proc);
      resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), code: code ?? (signal ? -1 : null) });
    });
  });
  return { proc, done, out: () => Buffer.concat(out).toString('utf8') };
}

/** One server: its endpoint and the lease IDs its `lease grant`s printed, in order. */
class Server {
  readonly ids: bigint[] = [];
  constructor(readonly name: string, readonly endpoint: string) {}

  get hostPort(): string {
    return this.endpoint.replace(/^http:\/\//, '');
  }

  /** Records the ID a `lease grant` printed (simple, -w json or -w fields output). */
  learn(stdout: string): void {
    const m = /^lease ([0-9a-f]{16}) granted/.exec(stdout) ?? /"ID":(\d+),"TTL":/.exec(stdout) ?? /"ID" : (\d+)\n"TTL" : /.exec(stdout);
    if (!m) return;
    const id = m[0].startsWith('lease') ? BigInt(`0x${m[1]}`) : BigInt(m[1]!);
    if (!this.ids.includes(id)) this.ids.push(id);
  }

  /** Records the one lease `lease list` shows that is not known yet (a grant that printed no ID). */
  async learnFromList(): Promise<void> {
    const r = await spawnCtl(this.endpoint, ['lease', 'list']).done;
    const listed = r.stdout.split('\n').slice(1).filter((l) => l !== '').map((l) => BigInt(`0x${l}`));
    const fresh = listed.filter((id) => !this.ids.includes(id));
    assert.equal(fresh.length, 1, `${this.name}: one new lease in ${r.stdout}`);
    this.ids.push(fresh[0]!);
  }

  /** Known lease IDs (hex as etcdctl prints them, decimal) -> <Ln>; then what differs by nature. */
  normalize(text: string): string {
    let t = text;
    this.ids.forEach((id, i) => {
      t = t.split(id.toString(16).padStart(16, '0')).join(`<L${i + 1}>`);
      t = t.replace(new RegExp(`\\b${id.toString(10)}\\b`, 'g'), `<L${i + 1}>`);
    });
    return t
      .split(this.endpoint).join('<endpoint>')
      .split(this.hostPort).join('<host:port>')
      .replace(/"ts":"[^"]*"/g, '"ts":"<ts>"')
      .replace(/client-[0-9a-f-]{36}/g, 'client-<uuid>')
      // header ids: set or not (an empty header is a difference)
      .replace(/"(cluster_id|member_id|raft_term)":([1-9]\d*)/g, '"$1":<n>')
      .replace(/"(ClusterID|MemberID|RaftTerm)" : ([1-9]\d*)/g, '"$1" : <n>');
  }
}

/** Lines in Go map order sorted: `lease list` IDs, attached keys, json key/lease arrays, fields ID lines. */
function sortMapOrder(text: string): string {
  let t = text.replace(/attached keys\(\[([^\]]*)\]\)/g, (_m, ks: string) => `attached keys([${ks.split(' ').sort().join(' ')}])`);
  t = t.replace(/"keys":\[([^\]]*)\]/g, (_m, ks: string) => `"keys":[${ks.split(',').sort().join(',')}]`);
  t = t.replace(/"leases":\[([^\]]*)\]/g, (_m, ls: string) => `"leases":[${ls.split(/,(?=\{)/).sort().join(',')}]`);
  const found = /^found \d+ leases\n/.exec(t);
  if (found) t = found[0] + t.slice(found[0].length).split('\n').filter((l) => l !== '').sort().join('\n') + '\n';
  if (/^"ClusterID" : /.test(t)) {
    const lines = t.split('\n');
    const ids = lines.filter((l) => l.startsWith('"ID" : ')).sort();
    let i = 0;
    t = lines.map((l) => (l.startsWith('"ID" : ') ? ids[i++]! : l)).join('\n');
  }
  return t;
}

const TTL_FORMS = [/remaining\((-?\d+)s\)/, /"ttl":(-?\d+)/, /"TTL" : (-?\d+)/];

/** Remaining TTLs within 1 s of each other (both >= 0) are replaced by <ttl> in both texts. */
function ttlTolerant(e: string, c: string): [string, string] {
  for (const re of TTL_FORMS) {
    const me = re.exec(e);
    const mc = re.exec(c);
    if (me && mc && Number(me[1]) >= 0 && Number(mc[1]) >= 0 && Math.abs(Number(me[1]) - Number(mc[1])) <= 1) {
      const put = (s: string, m: RegExpExecArray): string => s.replace(m[0], m[0].replace(m[1]!, '<ttl>'));
      return [put(e, me), put(c, mc)];
    }
  }
  return [e, c];
}

describe('etcdctl lease: etcd vs concord', { skip: skipReason() }, () => {
  let etcd: EtcdHandle | undefined;
  let concord: ConcordHandle | EtcdHandle | undefined;
  let E: Server;
  let C: Server;

  before(async () => {
    // LEASE_DIFF_AGAINST=etcd: a second real etcd in place of concord (harness check).
    [etcd, concord] = await Promise.all([startEtcd(), process.env.LEASE_DIFF_AGAINST === 'etcd' ? startEtcd() : startConcord()]);
    E = new Server('etcd', etcd.endpoint);
    C = new Server('concord', concord.endpoint);
  });

  after(async () => {
    for (const p of live) p.kill('SIGKILL');
    await Promise.all([etcd?.stop(), concord?.stop()]);
  });

  /** `args` (a function of the side for per-side lease IDs) on etcd, then on concord; compared. */
  async function same(args: string[] | ((s: Server) => string[]), opts: { code?: number; ttl?: boolean } = {}):
  Promise<{ etcd: Run; e: Run; c: Run }> {
    const argsOf = (s: Server): string[] => (typeof args === 'function' ? args(s) : args);
    const er = await spawnCtl(E.endpoint, argsOf(E)).done;
    const cr = await spawnCtl(C.endpoint, argsOf(C)).done;
    if (argsOf(E)[0] === 'lease' && argsOf(E)[1] === 'grant') {
      E.learn(er.stdout);
      C.learn(cr.stdout);
    }
    const norm = (r: Run, s: Server): Run => ({ stdout: sortMapOrder(s.normalize(r.stdout)), stderr: s.normalize(r.stderr), code: r.code });
    let e = norm(er, E);
    let c = norm(cr, C);
    // Remaining TTLs: only `lease timetolive` prints them (grant and keep-alive print the granted TTL).
    if (opts.ttl ?? argsOf(E)[1] === 'timetolive') {
      const [es, cs] = ttlTolerant(e.stdout, c.stdout);
      e = { ...e, stdout: es };
      c = { ...c, stdout: cs };
    }
    const label = `etcdctl ${argsOf(E).join(' ')}`;
    if (process.env.ETCDCTL_TEST_VERBOSE) console.log(JSON.stringify({ label, ...e }));
    assert.deepEqual(c, e, label);
    if (opts.code !== undefined) assert.equal(e.code, opts.code, `exit code of ${label} (stderr: ${e.stderr})`);
    return { etcd: er, e, c };
  }

  const hex = (s: Server, n: number): string => s.ids[n - 1]!.toString(16);

  test('lease grant: TTLs (raised to the minimum 2 s), too large, bad arguments, output formats', async () => {
    // etcd: "lease <16 hex digits> granted with TTL(100s)".
    assert.equal((await same(['lease', 'grant', '100'], { code: 0 })).e.stdout, 'lease <L1> granted with TTL(100s)\n');
    // etcd: TTL 1 and 0 are raised to the 2 s minimum (revoked at once: they would expire mid-test).
    assert.equal((await same(['lease', 'grant', '1'], { code: 0 })).e.stdout, 'lease <L2> granted with TTL(2s)\n');
    assert.equal((await same(['lease', 'grant', '0'], { code: 0 })).e.stdout, 'lease <L3> granted with TTL(2s)\n');
    assert.equal((await same((s) => ['lease', 'revoke', hex(s, 2)], { code: 0 })).e.stdout, 'lease <L2> revoked\n');
    await same((s) => ['lease', 'revoke', hex(s, 3)], { code: 0 });
    // etcd: above 9000000000 s: OUT_OF_RANGE, etcdctl's retry warning and "failed to grant lease", exit 1.
    const big = await same(['lease', 'grant', '9000000001'], { code: 1 });
    assert.match(big.e.stderr, /Error: failed to grant lease \(etcdserver: too large lease TTL\)\n$/);
    // etcd: -w json / fields carry the header and the decimal ID.
    assert.equal((await same(['lease', 'grant', '50', '-w', 'json'], { code: 0 })).e.stdout,
      '{"cluster_id":<n>,"member_id":<n>,"revision":1,"raft_term":<n>,"ID":<L4>,"TTL":50,"Error":""}\n');
    assert.equal((await same(['lease', 'grant', '50', '-w', 'fields'], { code: 0 })).e.stdout,
      '"ClusterID" : <n>\n"MemberID" : <n>\n"Revision" : 1\n"RaftTerm" : <n>\n"ID" : <L5>\n"TTL" : 50\n');
    // etcd: -w table is refused (exit 4) after the lease was granted (its ID is printed nowhere).
    await same(['lease', 'grant', '50', '-w', 'table'], { code: 4 });
    await E.learnFromList();
    await C.learnFromList();
    // Client-side errors (the server is not asked): same on both.
    await same(['lease', 'grant', 'abc'], { code: 128 });
    await same(['lease', 'grant'], { code: 128 });
    await same(['lease', 'grant', '-3'], { code: 1 });
    assert.equal(E.ids.length, 6);
    assert.equal(C.ids.length, 6);
  });

  test('put --lease, get -w json shows the lease; unknown lease', async () => {
    await same((s) => ['put', 'k1', 'v1', '--lease', hex(s, 1)], { code: 0 });
    await same((s) => ['put', 'k2', 'v2', `--lease=${hex(s, 1)}`], { code: 0 });
    await same((s) => ['put', 'k3', 'v3', '--lease', hex(s, 4)], { code: 0 });
    // etcd: the lease as a decimal in kvs[].lease.
    assert.match((await same(['get', 'k', '--prefix', '-w', 'json'], { code: 0 })).e.stdout, /"lease":<L1>.*"lease":<L1>.*"lease":<L4>/);
    // etcd: unknown lease: NOT_FOUND after the retry warning, exit 1.
    const missing = await same(['put', 'k9', 'v', '--lease', 'abcdef'], { code: 1 });
    assert.match(missing.e.stderr, /Error: etcdserver: requested lease not found\n$/);
  });

  test('lease timetolive: remaining, --keys, -w json / fields, unknown lease, bad IDs', async () => {
    // etcd: "granted with TTL(100s), remaining(99s)" (remaining truncated to seconds).
    const rem = /^lease [0-9a-f]{16} granted with TTL\(100s\), remaining\((\d+)s\)\n$/
      .exec((await same((s) => ['lease', 'timetolive', hex(s, 1)], { code: 0 })).etcd.stdout);
    assert.ok(rem && Number(rem[1]) >= 90 && Number(rem[1]) < 100, `remaining ${rem?.[1]}`);
    assert.equal((await same((s) => ['lease', 'timetolive', hex(s, 1), '--keys'], { code: 0 })).e.stdout,
      'lease <L1> granted with TTL(100s), remaining(<ttl>s), attached keys([k1 k2])\n');
    await same((s) => ['lease', 'timetolive', hex(s, 1), '--keys', '-w', 'json'], { code: 0 });
    await same((s) => ['lease', 'timetolive', hex(s, 4), '-w', 'json'], { code: 0 });
    await same((s) => ['lease', 'timetolive', hex(s, 1), '-w', 'fields'], { code: 0 });
    await same((s) => ['lease', 'timetolive', hex(s, 4), '--keys', '-w', 'simple'], { code: 0 });
    await same((s) => ['lease', 'timetolive', hex(s, 1), '-w', 'table'], { code: 4 });
    await same(['lease', 'timetolive', 'xyz'], { code: 128 });
    await same(['lease', 'timetolive'], { code: 128 });
    // etcd: an unknown (or revoked) lease is no error: "already expired"; in json ttl -1,
    // granted-ttl 0 and the full header (revision, cluster/member id, raft term).
    assert.equal((await same((s) => ['lease', 'timetolive', hex(s, 2)], { code: 0 })).e.stdout, 'lease <L2> already expired\n');
    assert.equal((await same(['lease', 'timetolive', 'abcdef'], { code: 0 })).e.stdout, 'lease 0000000000abcdef already expired\n');
    assert.equal((await same(['lease', 'timetolive', 'abcdef', '--keys', '-w', 'json'], { code: 0 })).e.stdout,
      '{"cluster_id":<n>,"member_id":<n>,"revision":4,"raft_term":<n>,"id":11259375,"ttl":-1,"granted-ttl":0,"keys":null}\n');
  });

  test('lease list: simple, -w json, -w fields', async () => {
    // etcd: "found 4 leases" then the IDs in map order (compared sorted).
    assert.equal((await same(['lease', 'list'], { code: 0 })).e.stdout, 'found 4 leases\n<L1>\n<L4>\n<L5>\n<L6>\n');
    await same(['lease', 'list', '-w', 'json'], { code: 0 });
    await same(['lease', 'list', '-w', 'fields'], { code: 0 });
  });

  test('lease keep-alive --once: known lease, unknown lease, -w json', async () => {
    // etcd: "keepalived with TTL(100)" (the granted TTL); unknown: "Error: etcdserver: requested
    // lease not found", exit 2 (the client turns the TTL 0 answer into that error).
    assert.equal((await same((s) => ['lease', 'keep-alive', '--once', hex(s, 1)], { code: 0 })).e.stdout,
      'lease <L1> keepalived with TTL(100)\n');
    await same((s) => ['lease', 'keep-alive', '--once', hex(s, 1), '-w', 'json'], { code: 0 });
    await same(['lease', 'keep-alive', '--once', 'abcdef'], { code: 2 });
    await same(['lease', 'keep-alive', '--once', 'abcdef', '-w', 'json'], { code: 2 });
    await same(['lease', 'keep-alive'], { code: 128 });
  });

  test('lease keep-alive (streaming): keeps the lease alive until killed; ends when the lease is revoked', async () => {
    // Two 3 s leases per side: etcdctl keeps each alive every TTL/3 = 1 s, printing a line per answer.
    await same(['lease', 'grant', '3'], { code: 0 });
    await same(['lease', 'grant', '3'], { code: 0 });
    const sides = [E, C];
    const killed = sides.map((s) => spawnCtl(s.endpoint, ['lease', 'keep-alive', hex(s, 7)]));
    const revoked = sides.map((s) => spawnCtl(s.endpoint, ['lease', 'keep-alive', hex(s, 8)]));
    await new Promise((r) => setTimeout(r, 3500));
    // Both leases outlived their TTL: kept alive on both sides.
    await same((s) => ['lease', 'timetolive', hex(s, 7)], { code: 0 });
    await same((s) => ['lease', 'timetolive', hex(s, 8)], { code: 0 });
    // Killed: what it printed so far is one line per keep-alive answer, each with the granted TTL.
    for (const k of killed) k.proc.kill('SIGKILL');
    const kr = await Promise.all(killed.map((k) => k.done));
    kr.forEach((r, i) => {
      const s = sides[i]!;
      const lines = s.normalize(r.stdout).split('\n').filter((l) => l !== '');
      assert.ok(lines.length >= 3, `${s.name}: ${lines.length} keep-alive lines in 3.5 s`);
      assert.deepEqual(new Set(lines), new Set(['lease <L7> keepalived with TTL(3)']), `${s.name}: ${r.stdout}`);
      assert.equal(s.normalize(r.stderr), '', s.name);
    });
    // etcd: the lease stays until its TTL runs out after the last keep-alive (revoked here, so
    // that later lists do not depend on when it expires).
    await same((s) => ['lease', 'timetolive', hex(s, 7)], { code: 0 });
    await same((s) => ['lease', 'revoke', hex(s, 7)], { code: 0 });
    // Revoked under a streaming keep-alive: the next answer has TTL 0; etcdctl prints
    // "lease <ID> expired or revoked." and exits 0.
    await same((s) => ['lease', 'revoke', hex(s, 8)], { code: 0 });
    const rr = await Promise.all(revoked.map((k) => k.done));
    const view = rr.map((r, i) => {
      const lines = sides[i]!.normalize(r.stdout).split('\n').filter((l) => l !== '');
      return { last: lines.at(-1), others: [...new Set(lines.slice(0, -1))], stderr: r.stderr, code: r.code };
    });
    assert.deepEqual(view[0], { last: 'lease <L8> expired or revoked.', others: ['lease <L8> keepalived with TTL(3)'], stderr: '', code: 0 });
    assert.deepEqual(view[1], view[0], 'concord vs etcd');
  });

  test('lease revoke: keys deleted; again, unknown and bad IDs are errors', async () => {
    assert.equal((await same((s) => ['lease', 'revoke', hex(s, 1)], { code: 0 })).e.stdout, 'lease <L1> revoked\n');
    await same(['get', 'k', '--prefix'], { code: 0 });
    await same(['get', 'k', '--prefix', '--keys-only', '-w', 'json'], { code: 0 });
    // etcd: a revoked lease: NOT_FOUND after etcdctl's retry warning, exit 1; TimeToLive "already expired".
    const again = await same((s) => ['lease', 'revoke', hex(s, 1)], { code: 1 });
    assert.match(again.e.stderr, /Error: failed to revoke lease \(etcdserver: requested lease not found\)\n$/);
    await same((s) => ['lease', 'timetolive', hex(s, 1), '--keys'], { code: 0 });
    await same(['lease', 'revoke', 'abcdef'], { code: 1 });
    await same(['lease', 'revoke', 'zz'], { code: 128 });
    await same(['lease', 'revoke'], { code: 128 });
    await same((s) => ['lease', 'revoke', hex(s, 4), '-w', 'json'], { code: 0 });
    await same(['get', 'k', '--prefix'], { code: 0 });
    assert.equal((await same(['lease', 'list'], { code: 0 })).e.stdout, 'found 2 leases\n<L5>\n<L6>\n');
  });
});
