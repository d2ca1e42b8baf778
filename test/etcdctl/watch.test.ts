// `etcdctl watch` (v3 API) against a fresh real etcd and a fresh concord: the same watch commands
// run against both at the same time, both servers get the same writes in the same order, and
// each command's output (stdout, stderr, exit code) must be equal once what differs by nature is
// normalized (cluster/member ids and raft term in -w json / -w fields).
//
// etcdctl prints nothing when its watch is established, so before the first write the test waits
// until each server's etcd_debugging_mvcc_watcher_total gauge (/metrics) counts the watchers of
// the commands just started (it is 0 between tests: every etcdctl process is killed at the end of
// its test, whatever happens); interactive sessions are also probed with `progress` (answered
// only once the session's watchers exist).

import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { startEtcd, type EtcdHandle } from '../helpers/etcd';
import { ctlEnv, ETCDCTL_BIN, etcdctlSkipReason as skipReason } from '../helpers/etcdctl';
import { bytes, connect, num, unary, type ServiceClient } from '../helpers/grpc_client';

/** How long just-spawned `etcdctl watch` commands get to establish their watches. */
const WATCH_READY_TIMEOUT_MS = 10_000;
/** Time for watchers replaying history to be synced (etcd's sync loop runs every 100 ms). */
const HISTORY_SETTLE_MS = 400;
/** Output is complete once nothing new arrived for this long. */
const QUIET_MS = 400;

/** A running etcdctl process and what it printed so far. */
class Ctl {
  readonly proc: ChildProcessWithoutNullStreams;
  stdout = '';
  stderr = '';
  code: number | null | undefined;
  lastOutput = Date.now();
  private readonly closed: Promise<void>;

  constructor(endpoint: string, args: string[]) {
    this.proc = spawn(ETCDCTL_BIN, [`--endpoints=${endpoint}`, ...args], { env: ctlEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdout.setEncoding('utf8');
    this.proc.stderr.setEncoding('utf8');
    this.proc.stdout.on('data', (c: string) => {
      this.stdout += c;
      this.lastOutput = Date.now();
    });
    this.proc.stderr.on('data', (c: string) => {
      this.stderr += c;
      this.lastOutput = Date.now();
    });
    this.proc.stdin.on('error', () => undefined);
    this.closed = new Promise((resolve) => this.proc.on('close', (code) => {
      this.code = code;
      resolve();
    }));
  }

  write(line: string): void {
    this.proc.stdin.write(line);
  }

  /** Kills the process (if still running) and waits for it to close. */
  async stop(): Promise<void> {
    if (this.code === undefined) this.proc.kill('SIGKILL');
    await this.closed;
  }

  /** Waits for the process to exit by itself (up to `ms`). */
  async exited(ms: number): Promise<boolean> {
    return Promise.race([this.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  }
}

/** Cluster/member ids and raft term differ between two servers by nature. */
function normalize(text: string): string {
  return text
    .replace(/"(cluster_id|member_id|raft_term)":\d+/g, '"$1":<n>')
    .replace(/"(ClusterID|MemberID|RaftTerm)" : \d+/g, '"$1" : <n>');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

type Write = { put: string; value: string } | { del: string; end?: string } | { compact: number };

describe('etcdctl watch: etcd vs concord', { skip: skipReason() }, () => {
  let etcd: EtcdHandle | undefined;
  let concord: ConcordHandle | undefined;
  let kvs: [ServiceClient<'etcdserverpb.KV'>, ServiceClient<'etcdserverpb.KV'>];
  const running = new Set<Ctl>();

  before(async () => {
    [etcd, concord] = await Promise.all([startEtcd(), startConcord()]);
    kvs = [connect('etcdserverpb.KV', etcd.endpoint), connect('etcdserverpb.KV', concord.endpoint)];
  });
  after(async () => {
    await Promise.all([...running].map((c) => c.stop()));
    for (const c of kvs ?? []) c.close();
    await Promise.all([etcd?.stop(), concord?.stop()]);
  });

  /** The same write on both servers; both must land at the same revision. */
  async function write(w: Write): Promise<number> {
    const revs = await Promise.all(kvs.map(async (kv) => {
      if ('put' in w) return (await unary(kv, 'Put', { key: bytes(w.put), value: bytes(w.value) })).header;
      if ('del' in w) return (await unary(kv, 'DeleteRange', { key: bytes(w.del), range_end: w.end === undefined ? undefined : bytes(w.end) })).header;
      return (await unary(kv, 'Compact', { revision: w.compact, physical: true })).header;
    }));
    const [e, c] = revs.map((h) => num(h?.revision));
    assert.equal(c, e, `revision after ${JSON.stringify(w)}`);
    return e as number;
  }

  async function currentRevision(): Promise<number> {
    const [e, c] = await Promise.all(kvs.map(async (kv) => num((await unary(kv, 'Range', { key: bytes('\0') })).header?.revision)));
    assert.equal(c, e, 'current revision');
    return e as number;
  }

  /** The etcd_debugging_mvcc_watcher_total gauge of a server. */
  async function watcherGauge(endpoint: string): Promise<number> {
    const text = await (await fetch(`${endpoint}/metrics`)).text();
    const m = /^etcd_debugging_mvcc_watcher_total (\d+)/m.exec(text);
    assert.ok(m, `etcd_debugging_mvcc_watcher_total in ${endpoint}/metrics`);
    return Number(m[1]);
  }

  /** Waits until both servers count exactly `n` watchers. */
  async function watchersAre(n: number): Promise<void> {
    const deadline = Date.now() + WATCH_READY_TIMEOUT_MS;
    for (const s of [etcd!, concord!]) {
      let got = await watcherGauge(s.endpoint);
      while (got !== n && Date.now() < deadline) {
        await sleep(20);
        got = await watcherGauge(s.endpoint);
      }
      assert.equal(got, n, `watchers on ${s === etcd ? 'etcd' : 'concord'}`);
    }
  }

  /** Starts `args` on both servers; the pair is stopped by finish() or, failing that, after(). */
  function startBoth(args: string[]): [Ctl, Ctl] {
    const pair: [Ctl, Ctl] = [new Ctl(etcd!.endpoint, args), new Ctl(concord!.endpoint, args)];
    for (const c of pair) running.add(c);
    return pair;
  }

  /**
   * Waits until no process of `pairs` printed anything for QUIET_MS, kills them, compares the
   * normalized outputs (`stdoutOf` picks what of stdout is compared; default all of it).
   */
  async function finish(pairs: [string[], [Ctl, Ctl]][], stdoutOf = (c: Ctl): string => c.stdout): Promise<{ etcd: string; concord: string }[]> {
    const all = pairs.flatMap(([, p]) => p);
    try {
      for (;;) {
        const idle = Date.now() - Math.max(...all.map((c) => c.lastOutput));
        if (idle >= QUIET_MS) break;
        await sleep(QUIET_MS - idle);
      }
    } finally {
      await Promise.all(all.map((c) => c.stop()));
      for (const c of all) running.delete(c);
    }
    return pairs.map(([args, [e, c]]) => {
      const want = { stdout: normalize(stdoutOf(e)), stderr: normalize(e.stderr), code: e.code };
      const got = { stdout: normalize(stdoutOf(c)), stderr: normalize(c.stderr), code: c.code };
      assert.deepEqual(got, want, `etcdctl ${args.join(' ')}: concord output differs from etcd's`);
      return { etcd: want.stdout, concord: got.stdout };
    });
  }

  /** Runs each of `commands` (one watcher each) against both, waits for the watchers, applies `writes`, compares outputs. */
  async function watchCase(commands: string[][], writes: Write[]): Promise<string[]> {
    await watchersAre(0);
    const pairs = commands.map((args) => [args, startBoth(args)] as [string[], [Ctl, Ctl]]);
    await watchersAre(commands.length);
    // A --rev watcher replays history from etcd's 100 ms sync loop: let it catch up first (a
    // write during the replay would join the replayed response on etcd: timing, not behaviour).
    await sleep(HISTORY_SETTLE_MS);
    for (const w of writes) await write(w);
    return (await finish(pairs)).map((x) => x.etcd);
  }

  test('plain key, range, --prefix, --prev-kv (events printed as TYPE / key / value lines)', async () => {
    await write({ put: 'foo', value: 'v0' });
    const out = await watchCase([
      ['watch', 'foo'],
      ['watch', 'foo', '--prev-kv'],
      ['watch', 'f', '--prefix'],
      ['watch', 'fa', 'fz'],
      ['watch', '', '--prefix', '--prev-kv'],
    ], [
      { put: 'foo', value: 'v1' },
      { put: 'fa', value: 'x' },
      { put: 'foo', value: 'v2' },
      { put: 'bar', value: 'b' },
      { put: 'foo', value: '' },
      { del: 'foo' },
      { put: 'foo', value: 'again' },
      { del: 'f', end: 'g' },
    ]);
    // etcd: PUT / key / value per event; DELETE / key / (empty value); --prev-kv prints the
    // previous pair between the type and the new pair.
    assert.equal(out[0], 'PUT\nfoo\nv1\nPUT\nfoo\nv2\nPUT\nfoo\n\nDELETE\nfoo\n\nPUT\nfoo\nagain\nDELETE\nfoo\n\n');
    assert.ok(out[1]!.startsWith('PUT\nfoo\nv0\nfoo\nv1\n'), out[1]);
  });

  test('--rev: history from a past revision, a future revision, a compacted revision', async () => {
    const start = await currentRevision();
    await write({ put: 'h/1', value: 'a' });
    await write({ put: 'h/2', value: 'b' });
    await write({ put: 'h/1', value: 'c' });
    await write({ del: 'h/2' });
    const now = await currentRevision();
    const out = await watchCase([
      ['watch', 'h/', '--prefix', '--rev', String(start + 1)],
      ['watch', 'h/1', '--rev', String(start + 2), '--prev-kv'],
      ['watch', 'h/', '--prefix', '--rev', String(now + 2)],
      ['watch', 'h/', '--prefix', '--rev', String(now), '-w', 'json'],
    ], [
      { put: 'h/3', value: 'd' },
      { put: 'h/4', value: 'e' },
    ]);
    assert.equal(out[0], 'PUT\nh/1\na\nPUT\nh/2\nb\nPUT\nh/1\nc\nDELETE\nh/2\n\nPUT\nh/3\nd\nPUT\nh/4\ne\n');
    assert.equal(out[2], 'PUT\nh/4\ne\n', 'future revision: only what is at or after it');

    // A compacted start revision: etcdctl reports the cancel and exits.
    await write({ compact: now });
    const [e, c] = startBoth(['watch', 'h/', '--prefix', '--rev', String(start + 1)]);
    await Promise.all([e.exited(5000), c.exited(5000)]);
    await finish([[['watch', '--rev', 'compacted'], [e, c]]]);
    assert.match(e.stderr, /compacted/, `etcd's answer: ${e.stderr}`);
    assert.notEqual(e.code, 0);
  });

  test('-w json and -w fields', async () => {
    await write({ put: 'j', value: 'j0' });
    const out = await watchCase([
      ['watch', 'j', '-w', 'json'],
      ['watch', 'j', '--prev-kv', '-w', 'json'],
      ['watch', 'j', '-w', 'fields'],
      ['watch', 'j', '--prev-kv', '-w', 'fields'],
    ], [
      { put: 'j', value: 'j1' },
      { del: 'j' },
      { put: 'j', value: 'j2' },
    ]);
    // etcd -w json: one WatchResponse per line, {"Header":{...},"Events":[...],
    // "CompactRevision":0,"Canceled":false,"Created":false}; keys/values base64; PUT events
    // have no "type" (0 omitted).
    const lines = out[0]!.trim().split('\n').map((l) => JSON.parse(l.replace(/<n>/g, '0')) as Record<string, unknown>);
    assert.equal(lines.length, 3);
    assert.deepEqual(Object.keys(lines[0]!), ['Header', 'Events', 'CompactRevision', 'Canceled', 'Created']);
  });

  test('interactive -i: watch commands from stdin, progress, an invalid command', async () => {
    await write({ put: 'k', value: '0' });
    const rev = await currentRevision();
    const args = ['watch', '-i'];
    await watchersAre(0);
    const [e, c] = startBoth(args);
    // Each watcher prints from its own goroutine: the watchers get disjoint keys and the writes
    // are spaced, so the order of their lines does not depend on scheduling.
    for (const x of [e, c]) {
      x.write('watch i/a\n');
      x.write('watch --prefix j/ --prev-kv\n');
      x.write(`watch --rev ${rev} k\n`);
      x.write('watch l1 l3\n');
    }
    await watchersAre(4);
    // Probe: `progress` is answered ("progress notify: <rev>", once per watcher) only
    // once the session's watchers exist; it is repeated until answered, so how many notify lines
    // the probe phase has is timing: they are left out of the comparison of that phase.
    const marks = new Map<Ctl, number>();
    await Promise.all([e, c].map(async (x) => {
      const deadline = Date.now() + 10_000;
      while (!x.stdout.includes('progress notify:') && Date.now() < deadline) {
        x.write('progress\n');
        await sleep(300);
      }
      await sleep(QUIET_MS);
      marks.set(x, x.stdout.length);
    }));
    const writes: Write[] = [
      { put: 'i/a', value: '1' }, { put: 'j/x', value: '2' }, { put: 'k', value: '3' }, { put: 'l2', value: '4' },
      { put: 'j/x', value: '5' }, { del: 'i/a' }, { put: 'l3', value: 'not watched' }, { del: 'j/', end: 'j0' },
    ];
    for (const w of writes) {
      await write(w);
      await sleep(100);
    }
    for (const x of [e, c]) {
      x.write('progress\n');
      x.write('bogus command\n');
      x.write('watch\n');
    }
    const probePhase = (x: Ctl): string => x.stdout.slice(0, marks.get(x)).replace(/^progress notify: \d+\n/gm, '');
    const [res] = await finish([[args, [e, c]]], (x) => `${probePhase(x)}--- probe done ---\n${x.stdout.slice(marks.get(x))}`);
    // etcd: the --rev watcher prints the existing k at once; after the writes, one
    // "progress notify: <current revision>" per watcher; an unknown command prints
    // "Invalid command bogus (only support watch)" on stderr and the session goes on.
    assert.equal(res!.etcd, 'PUT\nk\n0\n--- probe done ---\nPUT\ni/a\n1\nPUT\nj/x\n2\nPUT\nk\n3\nPUT\nl2\n4\n' +
      `PUT\nj/x\n2\nj/x\n5\nDELETE\ni/a\n\nDELETE\nj/x\n5\nj/x\n\n${`progress notify: ${rev + 8}\n`.repeat(4)}`);
    assert.match(e.stderr, /Invalid command bogus/);
  });

  test('exec command per event: ETCD_WATCH_* environment', async () => {
    const rev = await currentRevision();
    const out = await watchCase([
      ['watch', 'ex', '--', 'sh', '-c', 'echo "$ETCD_WATCH_REVISION $ETCD_WATCH_KEY $ETCD_WATCH_EVENT_TYPE [$ETCD_WATCH_VALUE]"'],
    ], [
      { put: 'ex', value: 'one' },
      { del: 'ex' },
    ]);
    // etcd: the event is printed as usual, then the command's output; values are quoted.
    assert.equal(out[0], `PUT\nex\none\n${rev + 1} "ex" "PUT" ["one"]\nDELETE\nex\n\n${rev + 2} "ex" "DELETE" [""]\n`);
  });
});
