// The Lease API over the HTTP/JSON gateway, differentially against real etcd 3.4's gateway:
// /v3/lease/{grant,revoke,timetolive,leases,keepalive} and the /v3/kv/lease/{revoke,timetolive,
// leases} aliases. Same JSON requests, same status codes and bodies (revisions included; 64-bit
// integers are JSON strings and fields with default values are left out, as etcd's gateway does).
// Normalized: header cluster_id / member_id / raft_term become "set" (an absent field stays
// absent, so an empty header is a difference); lease IDs the servers chose are replaced by
// <alias>; remaining TTLs may differ by 1 s; leases and keys (Go map order) are sorted.
//
// LEASE_DIFF_AGAINST=etcd runs a second real etcd in place of concord (harness check).

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { firstDifference } from '../helpers/differential';
import { etcdSkipReason, startEtcd, type EtcdHandle } from '../helpers/etcd';

const b64 = (s: string): string => Buffer.from(s, 'latin1').toString('base64');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Answer { status: number; body: string; json: unknown }

async function post(endpoint: string, path: string, body: unknown): Promise<Answer> {
  const res = await fetch(endpoint + path, {
    method: 'POST',
    body: typeof body === 'string' ? body : JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
  });
  const text = await res.text();
  let json: unknown = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, body: text, json };
}

/** One server's endpoint and the lease IDs it chose (alias -> decimal string). */
class Side {
  readonly ids = new Map<string, string>();
  constructor(readonly name: string, readonly endpoint: string) {}

  id(alias: string): string {
    const id = this.ids.get(alias);
    assert.ok(id !== undefined, `no lease ${alias} on ${this.name}`);
    return id;
  }

  normalize(v: unknown): unknown {
    const names = new Map([...this.ids].map(([a, id]) => [id, `<${a}>`]));
    const walk = (x: unknown): unknown => {
      if (typeof x === 'string') return names.get(x) ?? x;
      if (Array.isArray(x)) return x.map(walk);
      if (x !== null && typeof x === 'object') {
        const out: Record<string, unknown> = {};
        for (const [k, y] of Object.entries(x as Record<string, unknown>)) {
          out[k] = (k === 'cluster_id' || k === 'member_id' || k === 'raft_term') ? (y === '0' ? '0' : 'set') : walk(y);
        }
        if (Array.isArray(out.keys)) (out.keys as string[]).sort();
        if (Array.isArray(out.leases)) (out.leases as { ID: string }[]).sort((p, q) => (p.ID < q.ID ? -1 : p.ID > q.ID ? 1 : 0));
        return out;
      }
      return x;
    };
    return walk(v);
  }
}

type Body = unknown | ((s: Side) => unknown);

/** etcd's and concord's TimeToLive answers with TTLs (>= 0) within 1 s of each other made equal. */
function ttlTolerant(e: unknown, c: unknown): unknown {
  const ej = e as { TTL?: string } | null;
  const cj = c as { TTL?: string } | null;
  if (ej && cj && typeof ej === 'object' && typeof cj === 'object' && ej.TTL !== undefined && cj.TTL !== undefined) {
    const a = Number(ej.TTL);
    const z = Number(cj.TTL);
    if (a >= 0 && z >= 0 && Math.abs(a - z) <= 1) return { ...cj, TTL: ej.TTL };
  }
  return c;
}

/** A POST /v3/lease/keepalive whose request body stays open: write lines, read result lines. */
class KeepAliveStream {
  status: number | undefined;
  readonly lines: unknown[] = [];
  ended = false;
  private buf = '';
  private readonly req: http.ClientRequest;
  private wake: (() => void) | undefined;

  constructor(endpoint: string, path = '/v3/lease/keepalive') {
    this.req = http.request(`${endpoint}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      this.status = res.statusCode;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        this.buf += chunk;
        let nl: number;
        while ((nl = this.buf.indexOf('\n')) >= 0) {
          const line = this.buf.slice(0, nl).trim();
          this.buf = this.buf.slice(nl + 1);
          if (line !== '') this.lines.push(JSON.parse(line));
        }
        this.wake?.();
      });
      res.on('end', () => {
        if (this.buf.trim() !== '') this.lines.push(JSON.parse(this.buf));
        this.ended = true;
        this.wake?.();
      });
      res.on('error', () => undefined);
    });
    this.req.on('error', () => {
      this.ended = true;
      this.wake?.();
    });
    this.req.flushHeaders();
  }

  write(v: unknown): void {
    this.req.write(`${JSON.stringify(v)}\n`);
  }

  end(): void {
    this.req.end();
  }

  /** Waits until `n` lines arrived (or the response ended, or `ms` passed); takes them. */
  async take(n: number, ms = 3000): Promise<unknown[]> {
    const deadline = Date.now() + ms;
    while (this.lines.length < n && !this.ended && Date.now() < deadline) {
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 50);
      });
    }
    return this.lines.splice(0, n);
  }

  /** Waits for the end of the response (up to `ms`). */
  async finish(ms = 3000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.ended && Date.now() < deadline) await sleep(20);
    return this.ended;
  }

  close(): void {
    this.req.destroy();
  }
}

describe('HTTP gateway Lease API vs real etcd', { skip: etcdSkipReason() }, () => {
  let etcd: EtcdHandle | undefined;
  let concord: ConcordHandle | EtcdHandle | undefined;
  let sides: [Side, Side];
  const streams = new Set<KeepAliveStream>();

  before(async () => {
    [etcd, concord] = await Promise.all([startEtcd(), process.env.LEASE_DIFF_AGAINST === 'etcd' ? startEtcd() : startConcord()]);
    sides = [new Side('etcd', etcd.endpoint), new Side('concord', concord.endpoint)];
  });
  after(async () => {
    for (const s of streams) s.close();
    await Promise.all([etcd?.stop(), concord?.stop()]);
  });

  /** The same request to both; equal status and normalized JSON; returns etcd's normalized body. */
  async function same(path: string, body: Body, opts: { save?: string; compareBody?: boolean; status?: number } = {}): Promise<Record<string, unknown>> {
    const [e, c] = await Promise.all(sides.map((s) => post(s.endpoint, path, typeof body === 'function' ? (body as (s: Side) => unknown)(s) : body)));
    const label = `${path} ${typeof body === 'function' ? '(per side)' : JSON.stringify(body)}`;
    assert.equal(c!.status, e!.status, `${label}: status (etcd body ${e!.body}, concord body ${c!.body})`);
    if (opts.status !== undefined) assert.equal(e!.status, opts.status, `${label}: etcd status (${e!.body})`);
    if (opts.save !== undefined) {
      [e!, c!].forEach((a, i) => {
        const id = (a.json as { ID?: string }).ID;
        assert.ok(id !== undefined && BigInt(id) > 0n, `${label}: ${sides[i]!.name} chose ${a.body}`);
        sides[i]!.ids.set(opts.save!, id);
      });
    }
    const [en, cn] = [sides[0].normalize(e!.json), sides[1].normalize(c!.json)];
    if (opts.compareBody !== false) {
      if (e!.json === null) assert.equal(c!.body, e!.body, `${label}: text body`);
      else {
        const cmp = path.endsWith('/timetolive') ? ttlTolerant(en, cn) : cn;
        assert.deepStrictEqual(cmp, en, `${label}: concord differs from etcd at ${firstDifference(en, cn)}\netcd:    ${e!.body}\nconcord: ${c!.body}`);
      }
    } else {
      assert.equal((cn as { code?: number }).code, (en as { code?: number }).code, `${label}: error code (etcd ${e!.body}, concord ${c!.body})`);
    }
    return en as Record<string, unknown>;
  }

  test('grant: client-chosen and server-chosen IDs, TTL minimum, too large, duplicate, IDs as strings', async () => {
    // etcd: 200 {"header":{...,"revision":"1"},"ID":"100","TTL":"10"} (no "error" field: empty).
    assert.deepEqual(await same('/v3/lease/grant', { ID: 100, TTL: 10 }, { status: 200 }), {
      header: { cluster_id: 'set', member_id: 'set', revision: '1', raft_term: 'set' }, ID: '100', TTL: '10',
    });
    // etcd: int64 fields as JSON strings or numbers; TTL 1 raised to 2; TTL absent (0) -> 2.
    assert.equal((await same('/v3/lease/grant', { ID: '101', TTL: '1' })).TTL, '2');
    assert.equal((await same('/v3/lease/grant', { ID: 102 })).TTL, '2');
    // (revoked at once: they would expire mid-test)
    await same('/v3/lease/revoke', { ID: 101 }, { status: 200 });
    await same('/v3/lease/revoke', { ID: '102' }, { status: 200 });
    assert.equal((await same('/v3/lease/grant', { ID: '9223372036854775807', TTL: 60 })).ID, '9223372036854775807');
    // etcd: ID absent -> the server chooses one (compared by shape).
    assert.equal((await same('/v3/lease/grant', { TTL: 60 }, { save: 'auto' })).ID, '<auto>');
    // etcd: too large -> 400 code 11.
    assert.equal((await same('/v3/lease/grant', { ID: 103, TTL: 9000000001 }, { status: 400 })).code, 11);
    // etcd: malformed JSON and non-decimal ID strings: 400 code 3 (the decoder's own words).
    await same('/v3/lease/grant', '{bad', { status: 400, compareBody: false });
    await same('/v3/lease/grant', { ID: '7fffffffffffffff', TTL: 5 }, { status: 400, compareBody: false });
    await same('/v3/lease/grant', { ID: 'abc', TTL: 5 }, { status: 400, compareBody: false });
    // etcd: grant exists only under /v3/lease: /v3/kv/lease/grant is 404.
    await same('/v3/kv/lease/grant', { ID: 300, TTL: 20 }, { status: 404 });
    // etcd: duplicate (FAILED_PRECONDITION) -> 412 {"error","message","code":9}.
    assert.deepEqual(await same('/v3/lease/grant', { ID: 100, TTL: 10 }, { status: 412 }), {
      error: 'etcdserver: lease already exists', message: 'etcdserver: lease already exists', code: 9,
    });
  });

  test('timetolive (and /v3/kv/lease/timetolive): remaining TTL, keys, unknown lease', async () => {
    for (const [k, id] of [['g/b', 100], ['g/a', 100], ['g/c', '9223372036854775807']] as const) {
      await same('/v3/kv/put', { key: b64(k), value: b64('v'), lease: String(id) }, { status: 200 });
    }
    // etcd: unknown lease on a put: 404 code 5.
    assert.equal((await same('/v3/kv/put', { key: b64('g/x'), value: b64('v'), lease: 555 }, { status: 404 })).code, 5);
    // etcd: TTL (remaining) and grantedTTL as strings; keys (base64) only when asked.
    const t = await same('/v3/lease/timetolive', { ID: 100, keys: true }, { status: 200 });
    assert.deepEqual([t.ID, t.grantedTTL, t.keys, (t.header as { revision: string }).revision], ['100', '10', [b64('g/a'), b64('g/b')], '4']);
    assert.equal((await same('/v3/kv/lease/timetolive', { ID: 100 })).keys, undefined);
    await same('/v3/lease/timetolive', (s: Side) => ({ ID: s.id('auto'), keys: true }));
    await same('/v3/lease/timetolive', { ID: '9223372036854775807' });
    await same('/v3/lease/timetolive', { ID: 'x' }, { status: 400, compareBody: false });
    // etcd: unknown lease: 200 with the full header, the ID and TTL "-1" (grantedTTL and keys
    // left out: defaults).
    assert.deepEqual(await same('/v3/lease/timetolive', { ID: 999, keys: true }, { status: 200 }), {
      header: { cluster_id: 'set', member_id: 'set', revision: '4', raft_term: 'set' }, ID: '999', TTL: '-1',
    });
    // etcd: no ID at all: lease 0 is unknown: no "ID" field (0), TTL "-1".
    assert.deepEqual(await same('/v3/kv/lease/timetolive', {}), {
      header: { cluster_id: 'set', member_id: 'set', revision: '4', raft_term: 'set' }, TTL: '-1',
    });
  });

  test('leases (and /v3/kv/lease/leases): every lease, any order; empty body', async () => {
    const l = await same('/v3/lease/leases', {}, { status: 200 });
    assert.deepEqual(l.leases, [{ ID: '100' }, { ID: '9223372036854775807' }, { ID: '<auto>' }]);
    await same('/v3/kv/lease/leases', {});
    await same('/v3/lease/leases', '');
  });

  test('keepalive: one or several requests per body, unknown lease, bad body, no kv alias', async () => {
    await same('/v3/lease/grant', { ID: 200, TTL: 20 });
    // etcd: one {"result":{...}} per request; the granted TTL; an unknown lease has no TTL (0).
    assert.deepEqual(await same('/v3/lease/keepalive', { ID: 200 }, { status: 200 }), {
      result: { header: { cluster_id: 'set', member_id: 'set', revision: '4', raft_term: 'set' }, ID: '200', TTL: '20' },
    });
    assert.deepEqual(await same('/v3/lease/keepalive', { ID: 201 }), {
      result: { header: { cluster_id: 'set', member_id: 'set', revision: '4', raft_term: 'set' }, ID: '201' },
    });
    // Several requests in one body (newline-separated or not): one result line each, in order.
    for (const body of ['{"ID":200}\n{"ID":201}\n{"ID":"100"}', '{"ID":200}{"ID":200}']) {
      const [e, c] = await Promise.all(sides.map((s) => post(s.endpoint, '/v3/lease/keepalive', body)));
      assert.equal(c!.status, e!.status, body);
      const lines = (a: Answer, s: Side): unknown[] => a.body.split('\n').filter((x) => x.trim() !== '').map((x) => s.normalize(JSON.parse(x)));
      assert.deepStrictEqual(lines(c!, sides[1]), lines(e!, sides[0]), body);
      assert.equal(lines(e!, sides[0]).length, body.split('}').length - 1, `etcd: ${e!.body}`);
    }
    // etcd: a malformed body: 500 code 2.
    await same('/v3/lease/keepalive', '{bad', { status: 500, compareBody: false });
    // etcd: no /v3/kv/lease/keepalive alias (404).
    await same('/v3/kv/lease/keepalive', { ID: 200 }, { status: 404 });
    // etcd: an empty body: 200 and an empty answer (no request, so no result).
    await same('/v3/lease/keepalive', '', { status: 200 });
  });

  test('keepalive streaming: requests written over time on one open request body', async () => {
    await same('/v3/lease/grant', { ID: 210, TTL: 5 });
    await sleep(2100);
    // etcd: 2.9 s left -> TTL "2".
    assert.ok(Number((await same('/v3/lease/timetolive', { ID: 210 })).TTL) <= 3);
    const ks = sides.map((s) => new KeepAliveStream(s.endpoint));
    ks.forEach((k) => streams.add(k));
    // etcd: each request is applied as it arrives (the lease is renewed while the body is still
    // open), but its gateway holds the answers until the request body ends (Go's HTTP/1 server),
    // then sends them, one {"result":...} line each, in order — and loses the last one(s) now and
    // then (measured: 1 to 3 of 3 lines when the body is written over time; never when it is sent
    // whole). So etcd's lines must be a non-empty prefix of the answers, concord's all of them.
    ks.forEach((k) => k.write({ ID: 210 }));
    await sleep(300);
    assert.ok(Number((await same('/v3/lease/timetolive', { ID: 210 })).TTL) >= 4, 'renewed while the body is open');
    ks.forEach((k) => k.write({ ID: 211 }));
    await sleep(200);
    ks.forEach((k) => k.write({ ID: '210' }));
    await sleep(200);
    ks.forEach((k) => k.end());
    const ended = await Promise.all(ks.map((k) => k.finish()));
    assert.deepEqual(ended, [true, true], 'responses ended (etcd, concord)');
    const [e, c] = ks.map((k, i) => ({ status: k.status, lines: k.lines.map((l) => sides[i]!.normalize(l)) }));
    const hdr = { cluster_id: 'set', member_id: 'set', revision: '4', raft_term: 'set' };
    const answers = [{ result: { header: hdr, ID: '210', TTL: '5' } }, { result: { header: hdr, ID: '211' } }, { result: { header: hdr, ID: '210', TTL: '5' } }];
    assert.equal(e!.status, 200);
    assert.ok(e!.lines.length >= 1, 'etcd answered');
    assert.deepEqual(e!.lines, answers.slice(0, e!.lines.length), `etcd ${JSON.stringify(e)}`);
    if (process.env.LEASE_DIFF_AGAINST === 'etcd') assert.deepEqual(c!.lines, answers.slice(0, c!.lines.length), 'second etcd');
    else assert.deepEqual(c, { status: 200, lines: answers }, `concord ${JSON.stringify(c)}`);
  });

  test('revoke (and /v3/kv/lease/revoke): keys deleted in one revision, unknown lease, no ID', async () => {
    // etcd: revoking a lease with keys: 200 with the header at the new revision (one for both keys).
    assert.deepEqual(await same('/v3/lease/revoke', { ID: 100 }, { status: 200 }), {
      header: { cluster_id: 'set', member_id: 'set', revision: '5', raft_term: 'set' },
    });
    await same('/v3/kv/range', { key: b64('g/'), range_end: b64('g0') });
    // etcd: a lease without keys: revision unchanged.
    assert.equal(((await same('/v3/kv/lease/revoke', (s: Side) => ({ ID: s.id('auto') }))).header as { revision: string }).revision, '5');
    // etcd: unknown / revoked / absent ID: 404 {"error","message","code":5}.
    assert.deepEqual(await same('/v3/lease/revoke', { ID: 100 }, { status: 404 }), {
      error: 'etcdserver: requested lease not found', message: 'etcdserver: requested lease not found', code: 5,
    });
    await same('/v3/kv/lease/revoke', { ID: 999 }, { status: 404 });
    await same('/v3/lease/revoke', {}, { status: 404 });
    await same('/v3/lease/leases', {});
    // etcd: the revoked lease is unknown to timetolive.
    assert.equal((await same('/v3/lease/timetolive', { ID: 100 })).TTL, '-1');
  });
});
