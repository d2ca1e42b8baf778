// Real etcdctl (v3 API) against a fresh real etcd and a fresh concord: the same commands, in the
// same order, on both; stdout, stderr and exit code must match once what differs by nature is
// normalized (cluster/member ids, raft term, endpoint URL and port, member name/peer URLs,
// timestamps and durations, client ids in etcdctl's retry log line). For `endpoint status` and
// `member list`, structure and columns are compared and each value checked for what it must be
// (IS LEADER true, indexes numeric, DB SIZE present, ...), since raft indexes and db sizes are
// each server's own.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';

import { etcdserverpb } from '../../src/gen/proto';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { freePort, startEtcd, type EtcdHandle } from '../helpers/etcd';
import { ctlEnv, ETCDCTL_BIN, etcdctlSkipReason as skipReason } from '../helpers/etcdctl';
import { bytes, connect, num, prefixEnd, str, unary } from '../helpers/grpc_client';


interface Run {
  stdout: Buffer;
  stderr: string;
  code: number | null;
}

function etcdctl(endpoint: string, args: string[], input?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const proc = spawn(ETCDCTL_BIN, [`--endpoints=${endpoint}`, ...args], { env: ctlEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    proc.stdout.on('data', (c: Buffer) => out.push(c));
    proc.stderr.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on('close', (code) => {
      clearTimeout(timer);
      resolve({ stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), code });
    });
    proc.stdin.on('error', () => undefined); // etcdctl may exit without reading stdin
    proc.stdin.end(input ?? '');
  });
}

interface Server {
  endpoint: string;
  /** 'host:port' of the endpoint. */
  hostPort: string;
  peerUrl: string;
}

/** Normalizes what differs between two servers by nature (see the top of the file). */
function normalize(text: string, s: Server): string {
  return text
    .split(s.endpoint).join('<endpoint>')
    .split(s.peerUrl).join('<peer-url>')
    .split(s.hostPort).join('<host:port>')
    .replace(/"ts":"[^"]*"/g, '"ts":"<ts>"')
    .replace(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ /gm, '<ts> ')
    .replace(/client-[0-9a-f-]{36}/g, 'client-<uuid>')
    .replace(/"(cluster_id|member_id|raft_term|ID|leader)":\d+/g, '"$1":<n>')
    .replace(/"(ClusterID|MemberID|RaftTerm)" : \d+/g, '"$1" : <n>')
    .replace(/took = [\d.]+[µnm]?s/g, 'took = <d>')
    .replace(/"took":"[^"]*"/g, '"took":"<d>"');
}

interface Pair {
  etcd: Run;
  concord: Run;
  /** Normalized text (stdout, stderr, exit code) of each. */
  e: { stdout: string; stderr: string; code: number | null };
  c: { stdout: string; stderr: string; code: number | null };
}

describe('etcdctl: etcd vs concord', { skip: skipReason() }, () => {
  let etcd: EtcdHandle | undefined;
  let concord: ConcordHandle | undefined;
  let E: Server;
  let C: Server;

  before(async () => {
    etcd = await startEtcd();
    const peerUrl = `http://127.0.0.1:${await freePort()}`;
    concord = await startConcord({ extraArgs: ['--initial-advertise-peer-urls', peerUrl] });
    E = { endpoint: etcd.endpoint, hostPort: etcd.address, peerUrl: `http://127.0.0.1:${etcd.peerPort}` };
    C = { endpoint: concord.endpoint, hostPort: concord.address, peerUrl };
  });

  after(async () => {
    await Promise.all([etcd?.stop(), concord?.stop()]);
  });

  /** Runs `args` on etcd, then on concord. */
  async function both(args: string[], input?: string): Promise<Pair> {
    const e = await etcdctl(E.endpoint, args, input);
    const c = await etcdctl(C.endpoint, args, input);
    const norm = (r: Run, s: Server) => ({ stdout: normalize(r.stdout.toString('utf8'), s), stderr: normalize(r.stderr, s), code: r.code });
    return { etcd: e, concord: c, e: norm(e, E), c: norm(c, C) };
  }

  /** Same normalized stdout, stderr and exit code; `code` is what both must exit with. */
  async function same(args: string[], opts: { input?: string; code?: number } = {}): Promise<Pair> {
    const p = await both(args, opts.input);
    if (process.env.ETCDCTL_TEST_VERBOSE) console.log(JSON.stringify({ args, input: opts.input, ...p.e }));
    assert.deepEqual(p.c, p.e, `etcdctl ${args.join(' ')}`);
    if (opts.code !== undefined) assert.equal(p.e.code, opts.code, `exit code of etcdctl ${args.join(' ')} (stderr: ${p.e.stderr})`);
    return p;
  }

  /** Current revision (from `get -w json` on etcd; the test checks both agree). */
  async function revision(): Promise<number> {
    const p = await same(['get', 'nothing-here', '-w', 'json'], { code: 0 });
    return Number(JSON.parse(p.etcd.stdout.toString('utf8')).header.revision);
  }

  test('put: plain, --prev-kv, --ignore-value, --ignore-lease, value from stdin, -w json/fields', async () => {
    await same(['put', 'foo', 'bar'], { code: 0 });
    const prev = await same(['put', 'foo', 'bar2', '--prev-kv'], { code: 0 });
    assert.equal(prev.e.stdout, 'OK\nfoo\nbar\n');
    await same(['put', 'foo', '--ignore-value'], { code: 0 });
    await same(['put', 'foo', 'bar3', '--ignore-lease'], { code: 0 });
    await same(['put', 'foo', '--ignore-value', '--prev-kv'], { code: 0 });
    await same(['put', 'nokey', '--ignore-value']); // no key to keep the value of: error from the server
    await same(['put', 'stdin-key'], { input: 'value from stdin', code: 0 });
    await same(['get', 'stdin-key'], { code: 0 });
    await same(['put', 'foo', 'bar4', '--prev-kv', '-w', 'json'], { code: 0 });
    await same(['put', 'foo', 'bar5', '-w', 'fields'], { code: 0 });
    await same(['put', 'spaces', 'a value with spaces'], { code: 0 });
    await same(['put', 'dash', '--', '-leading-dash'], { code: 0 });
    await same(['get', 'dash'], { code: 0 });
  });

  test('put errors: no arguments, empty key, lease that does not exist', async () => {
    await same(['put']);
    await same(['put', '', 'v']);
    await same(['put', 'k', 'v', '--lease', '1234abcd']);
    await same(['put', 'k', 'v', '--lease', 'zz']);
  });

  test('get: every flag', async () => {
    for (const [k, v] of [['a/1', 'v1'], ['a/2', 'v2'], ['a/3', 'v3'], ['b/1', 'w1'], ['b/2', 'w2'], ['c', 'x'], ['d', 'y']]) {
      await same(['put', k as string, v as string], { code: 0 });
    }
    await same(['put', 'a/2', 'zz'], { code: 0 }); // a/2: version 2, newest mod revision, largest value
    await same(['put', 'a/1', '00'], { code: 0 }); // a/1: smallest value
    const rev = await revision();
    const gets: string[][] = [
      ['get', 'foo'],
      ['get', 'missing'],
      ['get', 'a', '--prefix'],
      ['get', 'a/2', '--from-key'],
      ['get', 'a', 'c'],
      ['get', 'a/1', 'a/3'],
      ['get', '', '--prefix', '--keys-only'],
      ['get', '', '--from-key', '--keys-only'],
      ['get', 'a', '--prefix', '--limit', '2'],
      ['get', 'a', '--prefix', '--limit', '0'],
      ['get', 'a', '--prefix', '--limit', '-1'],
      ['get', 'a', '--prefix', '--order', 'DESCEND'],
      ['get', 'a', '--prefix', '--order', 'ASCEND'],
      ['get', 'a', '--prefix', '--order', 'DESCEND', '--limit', '1'],
      ['get', 'a', '--prefix', '--order', 'BOGUS'],
      ...['CREATE', 'KEY', 'MODIFY', 'VALUE', 'VERSION'].flatMap((t) => [
        ['get', '', '--prefix', '--sort-by', t],
        ['get', '', '--prefix', '--sort-by', t, '--order', 'DESCEND'],
        ['get', 'a', '--prefix', '--sort-by', t, '--order', 'ASCEND', '--limit', '2'],
      ]),
      ['get', 'a', '--prefix', '--sort-by', 'BOGUS'],
      ['get', 'a', '--prefix', '--keys-only'],
      // etcdctl 3.4 has no --count-only / --min|max-mod|create-rev (3.5 does): both print the
      // same usage error here; the RangeRequest fields they set are compared over gRPC below.
      ['get', 'a', '--prefix', '--count-only'],
      ['get', 'a', '--prefix', '--count-only', '-w', 'json'],
      ['get', 'a', '--prefix', '--print-value-only'],
      ['get', 'a', '--prefix', '--keys-only', '--print-value-only'],
      ['get', 'a', '--prefix', '--rev', String(rev - 3)],
      ['get', 'a/2', '--rev', '1'],
      ['get', 'a', '--prefix', '--rev', String(rev + 100)],
      ['get', 'a', '--prefix', '--rev', '-1'],
      ['get', 'a', '--prefix', '--consistency', 's'],
      ['get', 'a', '--prefix', '--consistency', 'l'],
      ['get', 'a', '--prefix', '--consistency', 'x'],
      ['get', '', '--prefix', '--min-mod-rev', String(rev - 1)],
      ['get', '', '--prefix', '--max-mod-rev', String(rev - 2)],
      ['get', '', '--prefix', '--min-create-rev', String(rev - 4)],
      ['get', '', '--prefix', '--max-create-rev', String(rev - 4)],
      ['get', '', '--prefix', '--min-mod-rev', String(rev - 5), '--max-mod-rev', String(rev - 1), '--keys-only'],
      ['get', 'a', '--prefix', '--from-key'],
      ['get', 'a', '--prefix', '-w', 'json'],
      ['get', 'a', '--prefix', '--limit', '1', '-w', 'json'],
      ['get', 'missing', '-w', 'json'],
      ['get', 'a', '--prefix', '-w', 'fields'],
      ['get', 'a', '--prefix', '--keys-only', '-w', 'fields'],
      ['get', 'a', '--prefix', '-w', 'simple'],
      ['get', 'a', '--prefix', '-w', 'table'],
      ['get', 'a', '--prefix', '-w', 'bogus'],
      ['get'],
      ['get', ''],
      ['get', 'a', 'b', 'c'],
    ];
    for (const args of gets) await same(args);
    // Sanity: the comparisons above compared real answers, not two identical failures.
    const prefix = await same(['get', 'a', '--prefix'], { code: 0 });
    assert.equal(prefix.e.stdout, 'a/1\n00\na/2\nzz\na/3\nv3\n');
    const byValue = await same(['get', 'a', '--prefix', '--sort-by', 'VALUE', '--order', 'DESCEND', '--print-value-only'], { code: 0 });
    assert.equal(byValue.e.stdout, 'zz\nv3\n00\n');
  });

  test('what etcdctl 3.5 sends for --count-only and --min/max-mod/create-rev (over gRPC)', async () => {
    const rev = await revision();
    const ke = connect('etcdserverpb.KV', E.endpoint);
    const kc = connect('etcdserverpb.KV', C.endpoint);
    try {
      const all = { key: Buffer.from([0]), range_end: Buffer.from([0]) };
      const reqs = [
        { ...all, count_only: true },
        { key: bytes('a'), range_end: prefixEnd('a'), count_only: true },
        { ...all, min_mod_revision: rev - 1 },
        { ...all, max_mod_revision: rev - 2 },
        { ...all, min_create_revision: rev - 4 },
        { ...all, max_create_revision: rev - 4 },
        { ...all, min_mod_revision: rev - 5, max_mod_revision: rev - 1, keys_only: true },
        { ...all, min_create_revision: rev - 4, limit: 1 },
        { ...all, max_mod_revision: rev - 2, count_only: true },
      ];
      for (const req of reqs) {
        const [e, c] = await Promise.all([unary(ke, 'Range', req), unary(kc, 'Range', req)]);
        const view = (r: etcdserverpb.RangeResponse) => ({
          revision: num(r.header?.revision), count: num(r.count), more: r.more,
          kvs: r.kvs.map((kv) => [str(kv.key), str(kv.value), num(kv.create_revision), num(kv.mod_revision), num(kv.version)]),
        });
        assert.deepEqual(view(c), view(e), JSON.stringify(req));
      }
    } finally {
      ke.close();
      kc.close();
    }
  });

  test('get -w protobuf: same bytes once the header ids are zeroed', async () => {
    for (const args of [['get', 'a', '--prefix', '-w', 'protobuf'], ['get', 'a', '--prefix', '--keys-only', '--limit', '2', '-w', 'protobuf']]) {
      const p = await both(args);
      assert.equal(p.concord.code, p.etcd.code);
      assert.equal(p.etcd.code, 0);
      assert.equal(p.concord.stderr, p.etcd.stderr);
      const canon = (b: Buffer): Buffer => {
        const r = etcdserverpb.RangeResponse.decode(b);
        assert.ok(r.header);
        r.header.cluster_id = 0;
        r.header.member_id = 0;
        r.header.raft_term = 0;
        return Buffer.from(etcdserverpb.RangeResponse.encode(r).finish());
      };
      const e = canon(p.etcd.stdout);
      assert.ok(e.length > 20);
      assert.deepEqual(canon(p.concord.stdout), e, args.join(' '));
    }
  });

  test('del: plain, --prev-kv, --prefix, --from-key, range, errors', async () => {
    for (const k of ['d/1', 'd/2', 'd/3', 'e/1', 'e/2', 'f', 'g', 'h']) await same(['put', k, `val-${k}`], { code: 0 });
    await same(['del', 'missing'], { code: 0 });
    const one = await same(['del', 'd/1', '--prev-kv'], { code: 0 });
    assert.equal(one.e.stdout, '1\nd/1\nval-d/1\n');
    await same(['del', 'd', '--prefix'], { code: 0 });
    await same(['del', 'e/1', 'f', '--prev-kv'], { code: 0 });
    await same(['del', 'e/2', '-w', 'json', '--prev-kv'], { code: 0 });
    await same(['put', 'z/1', '1'], { code: 0 });
    await same(['put', 'z/2', '2'], { code: 0 });
    await same(['del', 'z', '--from-key', '--prev-kv', '-w', 'fields'], { code: 0 });
    await same(['del', 'g', '--from-key'], { code: 0 });
    await same(['get', '', '--prefix', '--keys-only'], { code: 0 });
    await same(['del']);
    await same(['del', '']);
    await same(['del', 'a', '--prefix', '--from-key']);
  });

  test('txn -i: compares, success and failure branches, -w json/fields, errors', async () => {
    await same(['put', 't1', 'one'], { code: 0 });
    const ok = await same(['txn', '-i'], {
      input: 'value("t1") = "one"\nmod("t1") > "0"\n\nput t2 two\nget t1\ndel nothing\n\nput t3 three\n\n',
      code: 0,
    });
    assert.match(ok.e.stdout, /SUCCESS/);
    const fail = await same(['txn', '-i', '-w', 'json'], {
      input: 'value("t1") = "nope"\n\nput t2 never\n\nget t --prefix\nput t4 four\n\n',
      code: 0,
    });
    assert.match(fail.e.stdout, /"succeeded"|ResponseRange/);
    await same(['txn', '-i'], { input: 'version("t1") = "1"\ncreate("t1") < "100000"\nvalue("t2") != "x"\n\nget t --prefix --limit 1\n\n\n', code: 0 });
    await same(['txn', '-i', '-w', 'fields'], { input: 'version("t9") = "0"\n\nput t9 nine\n\nput t9 other\n\n' });
    await same(['txn'], { input: 'mod("t1") < "1"\n\n\nget t1 --keys-only\ndel t4 --prev-kv\n\n' });
    await same(['txn', '-i', '-w', 'json'], { input: 'value("t1") > "a"\n\ndel t --prefix\n\n\n' });
    await same(['get', '', '--prefix', '--keys-only'], { code: 0 });
    // Errors: malformed compare, duplicate keys, an empty txn.
    await same(['txn', '-i'], { input: 'garbage\n' });
    await same(['txn', '-i'], { input: '\nput a 1\nput a 2\n\n\n' });
    await same(['txn', '-i'], { input: '\n\n\n' });
    await same(['txn', '-i'], { input: 'value("t1") = "one"\n\nput  t2\n\n\n' });
  });

  test('compaction, --physical, reads at compacted and future revisions', async () => {
    const rev = await revision();
    await same(['compaction', String(rev - 20)], { code: 0 });
    await same(['get', 'a/1', '--rev', String(rev - 25)], { code: 1 });
    await same(['get', 'a/1', '--rev', String(rev - 20)]);
    await same(['get', 'a/1', '--rev', String(rev - 19)]);
    await same(['compaction', String(rev - 20)], { code: 1 });
    await same(['compaction', String(rev - 30)], { code: 1 });
    await same(['compaction', String(rev - 10), '--physical'], { code: 0 });
    await same(['get', '', '--prefix', '--rev', String(rev - 11), '--keys-only']);
    await same(['compaction', String(rev + 100)], { code: 1 });
    await same(['compaction', 'abc']);
    await same(['compaction']);
    await same(['get', 'a', '--prefix'], { code: 0 });
  });

  test('endpoint status: simple, -w table, -w json', async () => {
    const simple = await both(['endpoint', 'status']);
    const line = (out: string): string => {
      assert.ok(out.endsWith('\n') && out.indexOf('\n') === out.length - 1, `one line: ${out}`);
      return out.slice(0, -1);
    };
    checkStatusLine(line(simple.e.stdout), 'etcd');
    checkStatusLine(line(simple.c.stdout), 'concord');
    assert.equal(statusShape(line(simple.c.stdout)), statusShape(line(simple.e.stdout)));
    assert.equal(simple.c.stderr, simple.e.stderr);
    assert.equal(simple.concord.code, 0);
    assert.equal(simple.etcd.code, 0);

    const table = await both(['endpoint', 'status', '-w', 'table']);
    assert.equal(table.concord.code, 0, table.c.stderr);
    const et = parseTable(table.e.stdout);
    const ct = parseTable(table.c.stdout);
    assert.deepEqual(ct.header, et.header);
    assert.deepEqual(ct.header, ['ENDPOINT', 'ID', 'VERSION', 'DB SIZE', 'IS LEADER', 'IS LEARNER', 'RAFT TERM', 'RAFT INDEX', 'RAFT APPLIED INDEX', 'ERRORS']);
    assert.equal(ct.rows.length, 1);
    assert.equal(statusShape(ct.rows[0]!.join(', ')), statusShape(et.rows[0]!.join(', ')));
    checkStatusLine(ct.rows[0]!.join(', '), 'concord table');

    const json = await both(['endpoint', 'status', '-w', 'json']);
    assert.equal(json.concord.code, 0, json.c.stderr);
    type St = { Endpoint: string; Status: Record<string, unknown> & { header: Record<string, unknown> } };
    const [ej] = JSON.parse(json.etcd.stdout.toString('utf8')) as St[];
    const [cj] = JSON.parse(json.concord.stdout.toString('utf8')) as St[];
    assert.ok(ej && cj);
    assert.equal(cj.Endpoint, C.endpoint);
    assert.deepEqual(Object.keys(cj.Status).sort(), Object.keys(ej.Status).sort());
    assert.deepEqual(Object.keys(cj.Status.header).sort(), Object.keys(ej.Status.header).sort());
    assert.equal(cj.Status.header.revision, ej.Status.header.revision, 'same revision after the same commands');
    for (const [name, st] of [['etcd', ej], ['concord', cj]] as const) {
      const s = st.Status;
      assert.equal(s.version, '3.4.23', name);
      assert.equal(s.leader, s.header.member_id, `${name}: leader is this member`);
      assert.ok(Number(s.raftIndex) >= 1, `${name} raftIndex`);
      assert.equal(s.raftAppliedIndex, s.raftIndex, `${name} applied index`);
      assert.ok(Number(s.raftTerm) >= 1 && s.raftTerm === s.header.raft_term, `${name} raftTerm`);
      assert.ok(Number(s.dbSize) > 0 && Number(s.dbSizeInUse) > 0 && Number(s.dbSizeInUse) <= Number(s.dbSize), `${name} db sizes`);
    }
  });

  test('endpoint health: simple and -w json', async () => {
    const simple = await same(['endpoint', 'health'], { code: 0 });
    assert.match(simple.e.stderr, /^<endpoint> is healthy: successfully committed proposal: took = <d>\n$/);
    await same(['endpoint', 'health', '-w', 'json'], { code: 0 });
    // Tables: column widths follow the endpoint and duration lengths, so compare cells.
    const table = await both(['endpoint', 'health', '-w', 'table']);
    assert.equal(table.concord.code, 0);
    assert.equal(table.c.stderr, table.e.stderr);
    const cells = (out: string) => {
      const t = parseTable(out);
      return [t.header, ...t.rows.map((r) => r.map((c) => c.replace(/^\d+(\.\d+)?[µnm]?s$/, '<d>')))];
    };
    assert.deepEqual(cells(table.c.stdout), cells(table.e.stdout));
    assert.deepEqual(cells(table.e.stdout), [['ENDPOINT', 'HEALTH', 'TOOK', 'ERROR'], ['<endpoint>', 'true', '<d>', '']]);
  });

  test('member list: simple, -w table, -w json', async () => {
    const simple = await both(['member', 'list']);
    assert.equal(simple.concord.code, 0);
    const hexId = (line: string) => line.replace(/^[0-9a-f]{1,16}, /, '<id>, ');
    assert.equal(hexId(simple.c.stdout), hexId(simple.e.stdout));
    assert.equal(hexId(simple.e.stdout), '<id>, started, default, <peer-url>, <endpoint>, false\n');
    assert.equal(simple.c.stderr, simple.e.stderr);

    const table = await both(['member', 'list', '-w', 'table']);
    const et = parseTable(table.e.stdout);
    const ct = parseTable(table.c.stdout);
    assert.deepEqual(ct.header, et.header);
    assert.equal(ct.rows.length, 1);
    assert.match(ct.rows[0]![0]!, /^[0-9a-f]{1,16}$/);
    assert.deepEqual(ct.rows[0]!.slice(1), et.rows[0]!.slice(1));

    const json = await same(['member', 'list', '-w', 'json'], { code: 0 });
    // Raw text: 64-bit ids do not survive JSON.parse.
    for (const raw of [json.etcd.stdout.toString('utf8'), json.concord.stdout.toString('utf8')]) {
      const header = raw.match(/"member_id":(\d+)/)?.[1];
      const member = raw.match(/"ID":(\d+)/)?.[1];
      assert.ok(header !== undefined && BigInt(header) > 0n, raw);
      assert.equal(member, header, 'the member is the one answering');
    }
  });
});

/** `<endpoint>, <id>, <version>, <db size>, <leader>, <learner>, <term>, <index>, <applied>, <errors>` */
function checkStatusLine(line: string, who: string): void {
  const f = line.split(', ');
  assert.equal(f.length, 10, `${who}: ${line}`);
  assert.equal(f[0], '<endpoint>', who);
  assert.match(f[1]!, /^[0-9a-f]{1,16}$/, `${who} id`);
  assert.equal(f[2], '3.4.23', `${who} version`);
  assert.match(f[3]!, /^\d+(\.\d+)? (B|kB|MB|GB)$/, `${who} db size`);
  assert.equal(f[4], 'true', `${who} is leader`);
  assert.equal(f[5], 'false', `${who} is learner`);
  assert.match(f[6]!, /^[1-9]\d*$/, `${who} raft term`);
  assert.match(f[7]!, /^[1-9]\d*$/, `${who} raft index`);
  assert.equal(f[8], f[7], `${who} applied index`);
  assert.equal(f[9], '', `${who} errors`);
}

/** A status line with the values that are each server's own replaced by their kind. */
function statusShape(line: string): string {
  const f = line.split(', ');
  return [f[0], '<id>', f[2], '<size>', f[4], f[5], '<term>', '<index>', '<applied>', f[9]].join(', ');
}

function parseTable(out: string): { header: string[]; rows: string[][] } {
  const lines = out.split('\n').filter((l) => l.startsWith('|'));
  const cells = lines.map((l) => l.slice(1, -1).split('|').map((c) => c.trim()));
  assert.ok(cells.length >= 1, `a table: ${out}`);
  return { header: cells[0]!, rows: cells.slice(1) };
}
