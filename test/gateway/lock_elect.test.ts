// The lock and election endpoints of the HTTP/JSON gateway, differentially against real etcd
// 3.4's gateway: /v3/lock/lock, /v3/lock/unlock, /v3/election/campaign, /proclaim, /leader,
// /resign and /v3/election/observe (a chunked stream of {"result":{LeaderResponse}} lines).
// The same requests go to both servers at the same time; status codes and JSON bodies must be
// equal once cluster_id, member_id and raft_term are removed (leases are granted with
// client-chosen ids, so keys and revisions match exactly).
//
// What etcd 3.4's gateway does (found by running it):
//  - success: 200, the response message as JSON (proto field names, int64 as strings, bytes as
//    base64, default values left out);
//  - the services' errors are gRPC code 2: HTTP 500 with {"error":msg,"message":msg,"code":2}
//    ("etcdserver: requested lease not found", "etcdserver: key is not provided",
//    "election: no leader", "election: not leader", "\"leader\" field must be provided");
//  - a body that is not JSON: 400 with code 3 (the message is the JSON decoder's own words);
//  - a blocked Lock/Campaign keeps the HTTP request open until it is granted.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { firstDifference } from '../helpers/differential';
import { etcdSkipReason } from '../helpers/etcd';
import { dropIds, sleep, startPair, type Subject } from '../helpers/lock_elect';

const b64 = (s: string): string => Buffer.from(s, 'latin1').toString('base64');
const QUIET_MS = 250;
const BLOCK_MS = 300;

interface Answer { status: number; json: unknown; text?: string }

/** A POST that may stay pending (a blocked lock): `done` tells, `answer` resolves when it ends. */
class Post {
  done = false;
  readonly answer: Promise<Answer>;
  private readonly ctl = new AbortController();

  constructor(endpoint: string, path: string, body: unknown) {
    this.answer = (async () => {
      try {
        const res = await fetch(endpoint + path, {
          method: 'POST',
          body: typeof body === 'string' ? body : JSON.stringify(body),
          headers: { 'content-type': 'application/json' },
          signal: this.ctl.signal,
        });
        const text = await res.text();
        let json: unknown = null;
        try { json = dropIds(JSON.parse(text)); } catch { /* not JSON */ }
        return json === null ? { status: res.status, json, text } : { status: res.status, json };
      } catch (e) {
        return { status: -1, json: null, text: String(e) };
      } finally {
        this.done = true;
      }
    })();
  }

  abort(): void {
    this.ctl.abort();
  }
}

/** POST /v3/election/observe: status and parsed lines as they arrive. */
class Observe {
  status: number | undefined;
  lines: unknown[] = [];
  lastArrival = Date.now();
  private taken = 0;
  private buf = '';
  private readonly req: http.ClientRequest;

  constructor(endpoint: string, body: unknown) {
    this.req = http.request(`${endpoint}/v3/election/observe`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      this.status = res.statusCode;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        this.lastArrival = Date.now();
        this.buf += chunk;
        let nl: number;
        while ((nl = this.buf.indexOf('\n')) >= 0) {
          this.push(this.buf.slice(0, nl));
          this.buf = this.buf.slice(nl + 1);
        }
      });
      res.on('end', () => {
        if (this.buf.trim() !== '') this.push(this.buf);
        this.buf = '';
      });
      res.on('error', () => undefined);
    });
    this.req.on('error', () => undefined);
    this.req.end(JSON.stringify(body));
  }

  private push(line: string): void {
    if (line.trim() === '') return;
    try {
      this.lines.push(dropIds(JSON.parse(line)));
    } catch {
      this.lines.push({ unparsable: line });
    }
  }

  /** Lines since the last take, once nothing has arrived for QUIET_MS (counted from the call at least). */
  async take(): Promise<unknown[]> {
    const start = Date.now();
    for (;;) {
      const idle = Date.now() - Math.max(start, this.lastArrival);
      if (idle >= QUIET_MS) break;
      await sleep(QUIET_MS - idle);
    }
    const out = this.lines.slice(this.taken);
    this.taken = this.lines.length;
    return out;
  }

  close(): void {
    this.req.destroy();
  }
}

describe('HTTP gateway /v3/lock and /v3/election vs real etcd', { skip: etcdSkipReason() }, () => {
  let etcd: { endpoint: string; stop(): Promise<void> } | undefined;
  let subject: Subject | undefined;
  const cleanup: (() => void)[] = [];

  before(async () => {
    [etcd, subject] = await startPair();
  });
  after(async () => {
    for (const f of cleanup) f();
    await Promise.all([etcd?.stop(), subject?.stop()]);
  });

  /**
   * A side: its endpoint, the log of what it answered, and the revision the scenario started at
   * (logged revisions are counted from it, so one failing scenario does not shift the next).
   */
  interface Side { endpoint: string; log: { step: string; value: unknown }[]; base: bigint; leases: string[] }

  async function scenario(name: string, script: (s: Side) => Promise<void>): Promise<Side> {
    const e: Side = { endpoint: etcd!.endpoint, log: [], base: 0n, leases: [] };
    const c: Side = { endpoint: subject!.endpoint, log: [], base: 0n, leases: [] };
    const run = async (s: Side): Promise<void> => {
      const r = await new Post(s.endpoint, '/v3/kv/range', { key: b64('\0') }).answer;
      s.base = BigInt((r.json as { header: { revision: string } }).header.revision);
      try {
        await script(s);
      } finally {
        for (const id of s.leases) await new Post(s.endpoint, '/v3/lease/revoke', { ID: id }).answer;
      }
    };
    const [re, rc] = await Promise.allSettled([run(e), run(c)]);
    const show = (s: Side): string => s.log.map((l) => `  ${l.step}: ${JSON.stringify(l.value)}`).join('\n');
    if (re.status === 'rejected') throw new Error(`${name}: failed on etcd itself: ${String(re.reason)}\n${show(e)}`);
    // every differing step (the first one and up to 7 more), not only the first
    const diffs: string[] = [];
    for (let i = 0; i < Math.max(e.log.length, c.log.length) && diffs.length < 8; i++) {
      const d = firstDifference(e.log[i], c.log[i]);
      if (d !== null) diffs.push(`step ${i} "${e.log[i]?.step ?? c.log[i]?.step}": ${d}`);
    }
    const where = diffs.length === 0 ? 'nowhere' : diffs.join('\n  and at ');
    if (rc.status === 'rejected') assert.fail(`${name}: failed on ${subject!.kind}: ${String(rc.reason)} (first difference ${where})\n--- etcd:\n${show(e)}\n--- ${subject!.kind}:\n${show(c)}`);
    assert.ok(where === 'nowhere', `${name}: ${subject!.kind} differs from etcd at ${where}\n--- etcd:\n${show(e)}\n--- ${subject!.kind}:\n${show(c)}`);
    return e;
  }

  const at = (s: Side, step: string): unknown => {
    const hit = s.log.find((l) => l.step === step);
    assert.ok(hit, `no step ${step}`);
    return hit.value;
  };

  /** Revision fields counted from the scenario's base. */
  function relative(s: Side, v: unknown, key = ''): unknown {
    if (Array.isArray(v)) return v.map((x) => relative(s, x));
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, relative(s, x, k)]));
    if (['revision', 'create_revision', 'mod_revision', 'rev'].includes(key) && typeof v === 'string' && /^\d+$/.test(v)) return `${BigInt(v) - s.base}`;
    return v;
  }

  function log(s: Side, step: string, value: unknown): void {
    s.log.push({ step, value: relative(s, value) });
  }

  /** POST, awaited and logged. */
  async function post(s: Side, step: string, path: string, body: unknown): Promise<Answer> {
    if (path === '/v3/lease/grant') s.leases.push(String((body as { ID: unknown }).ID));
    const a = await new Post(s.endpoint, path, body).answer;
    log(s, step, a);
    return a;
  }

  /** Starts a POST that is expected to block. */
  function start(s: Side, path: string, body: unknown): Post {
    const p = new Post(s.endpoint, path, body);
    cleanup.push(() => p.abort());
    return p;
  }

  async function settle(s: Side, step: string, p: Post, ms = 8000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const a = await Promise.race([p.answer, new Promise<string>((r) => (timer = setTimeout(() => r('still blocked'), ms)))]);
    clearTimeout(timer);
    log(s, step, a);
  }

  test('lock and unlock: key, blocking, errors', async () => {
    const e = await scenario('lock', async (s) => {
      await post(s, 'grant 100', '/v3/lease/grant', { ID: '256', TTL: '300' });
      await post(s, 'grant 200', '/v3/lease/grant', { ID: 512, TTL: 300 });
      await post(s, 'lock by 100', '/v3/lock/lock', { name: b64('gl'), lease: '256' }); // {"header":..,"key":b64("gl/100")}
      const w = start(s, '/v3/lock/lock', { name: b64('gl'), lease: 512 }); // blocks: the HTTP request stays open
      await sleep(BLOCK_MS);
      log(s, 'second lock pending', !w.done);
      await post(s, 'unlock gl/100', '/v3/lock/unlock', { key: b64('gl/100') });
      await settle(s, 'second lock granted', w); // key gl/200, header at the unlock's revision
      await post(s, 'unlock a missing key', '/v3/lock/unlock', { key: b64('gl/100') }); // 200, current revision
      await post(s, 'unlock without key', '/v3/lock/unlock', {}); // 500 code 2 "etcdserver: key is not provided"
      await post(s, 'lock, lease not found', '/v3/lock/lock', { name: b64('gl'), lease: '4095' }); // 500 code 2 "etcdserver: requested lease not found"
      const bad = await new Post(s.endpoint, '/v3/lock/lock', '{bad').answer; // 400 code 3 (decoder's own message)
      log(s, 'malformed body', { status: bad.status, code: (bad.json as { code?: number } | null)?.code });
      await post(s, 'unlock gl/200', '/v3/lock/unlock', { key: b64('gl/200') });
      await post(s, 'revoke 100', '/v3/lease/revoke', { ID: '256' });
      await post(s, 'revoke 200', '/v3/lease/revoke', { ID: '512' });
    });
    const lockBy100 = at(e, 'lock by 100') as { status: number; json: { key: string; header: { revision: string } } };
    assert.equal(lockBy100.status, 200);
    assert.equal(lockBy100.json.key, b64('gl/100'));
    assert.equal(at(e, 'second lock pending'), true);
    const granted = at(e, 'second lock granted') as { status: number; json: { key: string; header: { revision: string } } };
    assert.deepEqual(granted, { status: 200, json: { header: (at(e, 'unlock gl/100') as { json: { header: unknown } }).json.header, key: b64('gl/200') } });
    assert.deepEqual(at(e, 'unlock without key'), { status: 500, json: { error: 'etcdserver: key is not provided', message: 'etcdserver: key is not provided', code: 2 } });
    assert.deepEqual(at(e, 'lock, lease not found'), { status: 500, json: { error: 'etcdserver: requested lease not found', message: 'etcdserver: requested lease not found', code: 2 } });
    assert.deepEqual(at(e, 'malformed body'), { status: 400, code: 3 });
  });

  test('election: campaign, leader, proclaim, resign, errors, and /observe lines', async () => {
    const e = await scenario('election', async (s) => {
      const obs = new Observe(s.endpoint, { name: b64('ge') });
      cleanup.push(() => obs.close());
      const seg = async (label: string): Promise<void> => {
        log(s, `observe after ${label}`, await obs.take());
      };
      try {
        await post(s, 'grant 300', '/v3/lease/grant', { ID: '768', TTL: '300' });
        await post(s, 'grant 400', '/v3/lease/grant', { ID: '1024', TTL: '300' });
        await post(s, 'leader, none', '/v3/election/leader', { name: b64('ge') }); // 500 code 2 "election: no leader"
        await seg('open'); // nothing (status 200 once the first line comes)
        const c = await post(s, 'campaign 300', '/v3/election/campaign', { name: b64('ge'), lease: '768', value: b64('one') }); // leader {name,key,rev,lease}
        const leader = (c.json as { leader: Record<string, string> }).leader;
        await seg('campaign 300'); // {"result":{"header":..,"kv":..}}
        await post(s, 'leader', '/v3/election/leader', { name: b64('ge') });
        await post(s, 'proclaim', '/v3/election/proclaim', { leader, value: b64('two') });
        await seg('proclaim');
        await post(s, 'proclaim, wrong rev', '/v3/election/proclaim', { leader: { ...leader, rev: '999' }, value: b64('x') }); // 500 code 2 "election: not leader"
        await post(s, 'proclaim, no leader field', '/v3/election/proclaim', { value: b64('x') }); // 500 code 2 "\"leader\" field must be provided"
        const w = start(s, '/v3/election/campaign', { name: b64('ge'), lease: 1024, value: b64('three') }); // blocks
        await sleep(BLOCK_MS);
        log(s, 'second campaign pending', !w.done);
        await seg('second campaign'); // nothing
        await post(s, 'resign, wrong rev', '/v3/election/resign', { leader: { ...leader, rev: '999' } }); // 200, nothing deleted
        await post(s, 'resign', '/v3/election/resign', { leader });
        await settle(s, 'second campaign elected', w); // header: its own put's revision
        await seg('resign'); // the new leader
        await post(s, 'resign, no leader field', '/v3/election/resign', {}); // 500 code 2
        await post(s, 'leader after the hand-over', '/v3/election/leader', { name: b64('ge') });
        await post(s, 'revoke 400', '/v3/lease/revoke', { ID: '1024' });
        await seg('revoke 400'); // nothing: no leader
        await post(s, 'leader, none again', '/v3/election/leader', { name: b64('ge') });
        await post(s, 'revoke 300', '/v3/lease/revoke', { ID: '768' });
        log(s, 'observe status', obs.status);
      } finally {
        obs.close();
      }
    });
    const err = (m: string) => ({ status: 500, json: { error: m, message: m, code: 2 } });
    assert.deepEqual(at(e, 'leader, none'), err('election: no leader'));
    assert.deepEqual(at(e, 'proclaim, wrong rev'), err('election: not leader'));
    assert.deepEqual(at(e, 'proclaim, no leader field'), err('"leader" field must be provided'));
    assert.equal(at(e, 'second campaign pending'), true);
    const camp = at(e, 'campaign 300') as { json: { header: { revision: string }; leader: unknown } };
    assert.deepEqual(camp.json.leader, { name: b64('ge'), key: b64('ge/300'), rev: camp.json.header.revision, lease: '768' });
    const observed = (step: string) => (at(e, `observe after ${step}`) as { result: { kv: { key: string; value: string } } }[])
      .map((l) => [Buffer.from(l.result.kv.key, 'base64').toString(), Buffer.from(l.result.kv.value, 'base64').toString()]);
    assert.deepEqual(observed('open'), []);
    assert.deepEqual(observed('campaign 300'), [['ge/300', 'one']]);
    assert.deepEqual(observed('proclaim'), [['ge/300', 'two']]);
    assert.deepEqual(observed('second campaign'), []);
    assert.deepEqual(observed('resign'), [['ge/400', 'three']]);
    assert.deepEqual(observed('revoke 400'), []);
    assert.equal(at(e, 'observe status'), 200);
  });
});
