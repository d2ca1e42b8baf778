// POST /v3/watch on the HTTP/JSON gateway, differentially against real etcd 3.4's gateway: the
// request body carries newline-delimited WatchRequests ({"create_request":{...}}), the answer is
// a chunked stream of {"result":{WatchResponse}} lines. Both servers get the same body and the
// same writes; the lines must be equal once cluster_id, member_id and raft_term are removed.
//
// Lines are filed in segments, one per step (a step's lines are those that arrived before the
// stream was quiet for QUIET_MS), and ordered stably by watch_id inside a segment: etcd sends the
// responses of different watchers in Go map order.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { etcdSkipReason, startEtcd, type EtcdHandle } from '../helpers/etcd';
import { firstDifference } from '../helpers/differential';

const QUIET_MS = 250;
/** After a create with a start_revision: etcd replays history from a 100 ms loop. */
const HISTORY_QUIET_MS = 400;

const b64 = (s: string): string => Buffer.from(s, 'latin1').toString('base64');

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Drops what differs between two clusters by nature: ids and terms. */
function normalize(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(normalize);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (k === 'cluster_id' || k === 'member_id' || k === 'raft_term') continue;
      out[k] = normalize(x);
    }
    return out;
  }
  return v;
}

/** One POST /v3/watch: status, parsed lines (unparsable ones kept as text), end. */
class GatewayWatch {
  status: number | undefined;
  lines: unknown[] = [];
  ended: string | undefined;
  lastArrival = Date.now();
  private buf = '';
  private readonly req: http.ClientRequest;

  constructor(endpoint: string, body: string) {
    this.req = http.request(`${endpoint}/v3/watch`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      this.status = res.statusCode;
      this.lastArrival = Date.now();
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
        this.ended ??= 'end';
        this.lastArrival = Date.now();
      });
      res.on('error', () => undefined);
    });
    this.req.on('error', (e) => {
      this.ended ??= `error ${e.message}`;
    });
    this.req.end(body);
  }

  private push(line: string): void {
    if (line.trim() === '') return;
    try {
      this.lines.push(normalize(JSON.parse(line)));
    } catch {
      this.lines.push({ unparsable: line });
    }
  }

  close(): void {
    this.req.destroy();
  }
}

interface Segment { step: string; lines: unknown[] }

const watchIdOf = (l: unknown): bigint => {
  const id = (l as { result?: { watch_id?: string } }).result?.watch_id;
  return BigInt(id ?? '0');
};

function ordered(lines: unknown[]): unknown[] {
  return lines.map((l, i) => ({ l, i }))
    .sort((a, b) => {
      const x = watchIdOf(a.l);
      const y = watchIdOf(b.l);
      return x < y ? -1 : x > y ? 1 : a.i - b.i;
    })
    .map((e) => e.l);
}

describe('HTTP gateway /v3/watch vs real etcd', { skip: etcdSkipReason() }, () => {
  let etcd: EtcdHandle | undefined;
  let concord: ConcordHandle | undefined;
  const open = new Set<GatewayWatch>();

  before(async () => {
    [etcd, concord] = await Promise.all([startEtcd(), startConcord()]);
  });
  after(async () => {
    for (const w of open) w.close();
    await Promise.all([etcd?.stop(), concord?.stop()]);
  });

  async function postBoth(path: string, body: unknown): Promise<void> {
    const [e, c] = await Promise.all([etcd!, concord!].map(async (s) => {
      const res = await fetch(s.endpoint + path, { method: 'POST', body: JSON.stringify(body) });
      return { status: res.status, json: normalize(await res.json()) };
    }));
    assert.deepEqual(c, e, `${path} ${JSON.stringify(body)}`);
  }
  const put = (k: string, v: string): Promise<void> => postBoth('/v3/kv/put', { key: b64(k), value: b64(v) });
  const del = (k: string, end?: string): Promise<void> =>
    postBoth('/v3/kv/deleterange', { key: b64(k), ...(end === undefined ? {} : { range_end: b64(end) }) });

  /**
   * Opens POST /v3/watch with `body` on both, then runs `steps` (each followed by a quiet
   * period), closes both, and compares status, segments and how the streams ended. Returns
   * etcd's segments.
   */
  async function scenario(body: string, steps: [string, () => Promise<void>][], firstQuiet = QUIET_MS): Promise<{ status: number | undefined; segments: Segment[] }> {
    const pair = [new GatewayWatch(etcd!.endpoint, body), new GatewayWatch(concord!.endpoint, body)] as const;
    for (const w of pair) open.add(w);
    const segments: [Segment[], Segment[]] = [[], []];
    const taken = [0, 0];
    const quiet = async (ms: number): Promise<void> => {
      const start = Date.now();
      for (;;) {
        const idle = Date.now() - Math.max(start, ...pair.map((w) => w.lastArrival));
        if (idle >= ms) return;
        await sleep(ms - idle);
      }
    };
    // On a loaded machine one side may be late past the quiet period: wait (up to 2 s) until
    // both have sent as many lines for this step before filing it.
    const catchUp = async (): Promise<void> => {
      const until = Date.now() + 2000;
      const count = (i: number): number => pair[i]!.lines.length - taken[i]!;
      while (count(0) !== count(1) && Date.now() < until) await sleep(20);
    };
    const file = (label: string): void => {
      pair.forEach((w, i) => {
        segments[i]!.push({ step: label, lines: ordered(w.lines.slice(taken[i])) });
        taken[i] = w.lines.length;
      });
    };
    try {
      await quiet(firstQuiet);
      await catchUp();
      file('request body');
      for (const [label, run] of steps) {
        await run();
        await quiet(QUIET_MS);
        await catchUp();
        file(label);
      }
    } finally {
      for (const w of pair) {
        w.close();
        open.delete(w);
      }
    }
    const [e, c] = pair;
    const want = { status: e.status, segments: segments[0], ended: e.ended };
    const got = { status: c.status, segments: segments[1], ended: c.ended };
    const show = (x: typeof want): string => `status ${x.status}${x.ended ? ` (${x.ended})` : ''}\n` +
      x.segments.filter((s) => s.lines.length > 0).map((s) => `  after ${s.step}:\n${s.lines.map((l) => `    ${JSON.stringify(l)}`).join('\n')}`).join('\n');
    assert.ok(firstDifference(want, got) === null,
      `/v3/watch ${body.slice(0, 200)}: concord differs from etcd at ${firstDifference(want, got)}\n--- etcd:\n${show(want)}\n--- concord:\n${show(got)}`);
    return want;
  }

  test('create, then puts and deletes (lines of {"result":...})', async () => {
    // etcd: 200, chunked; first line {"result":{"header":{..,"revision":"<current>"},"created":true}}
    // (watch_id 0 and every default value left out, int64 as strings, bytes base64), then one
    // line per write.
    const r = await scenario(JSON.stringify({ create_request: { key: b64('g/a') } }), [
      ['put g/a', () => put('g/a', '1')],
      ['put g/b', () => put('g/b', 'x')],
      ['put g/a again', () => put('g/a', '2')],
      ['delete g/a', () => del('g/a')],
      ['put g/a after delete', () => put('g/a', '3')],
    ]);
    assert.equal(r.status, 200);
    const [created] = r.segments[0]!.lines as { result: Record<string, unknown> }[];
    assert.deepEqual(Object.keys(created!.result), ['header', 'created']);
    const delLine = r.segments[4]!.lines[0] as { result: { events: unknown[] } };
    assert.deepEqual(delLine.result.events[0], { type: 'DELETE', kv: { key: b64('g/a'), mod_revision: (delLine.result as unknown as { header: { revision: string } }).header.revision } });
  });

  test('history replay: several creates in one body (snake and lowerCamel names), txn, prefix, progress request', async () => {
    await put('h/1', 'a');
    await put('h/2', 'b');
    await postBoth('/v3/kv/txn', { success: [{ request_put: { key: b64('h/1'), value: b64('c') } }, { request_delete_range: { key: b64('h/2') } }, { request_put: { key: b64('h/3'), value: b64('d') } }] });
    await del('h/', 'h0');
    const body = [
      { create_request: { key: b64('h/'), range_end: b64('h0'), start_revision: '2' } },
      { createRequest: { key: b64('h/1'), startRevision: 3, prevKv: true, watchId: '10' } },
      { create_request: { key: b64('h/'), range_end: b64('h0'), start_revision: '2', filters: ['NOPUT'] } },
      { progress_request: {} },
    ].map((x) => JSON.stringify(x)).join('\n');
    const r = await scenario(body, [
      ['put h/1', () => put('h/1', 'e')],
    ], HISTORY_QUIET_MS);
    const lines = r.segments[0]!.lines as { result: { watch_id?: string; events?: unknown[] } }[];
    assert.ok(lines.some((l) => (l.result.events?.length ?? 0) >= 5), 'the replay is in the answer');
  });

  test('prev_kv, filters, invalid range, compacted start revision', async () => {
    await put('p', '0');
    const body = [
      { create_request: { key: b64('p'), prev_kv: true } },
      { create_request: { key: b64('p'), filters: ['NODELETE'] } },
      { create_request: { key: b64('q'), range_end: b64('p') } },
    ].map((x) => JSON.stringify(x)).join('\n');
    await scenario(body, [
      ['put p', () => put('p', '1')],
      ['put p again', () => put('p', '2')],
      ['delete p', () => del('p')],
      ['put p after delete', () => put('p', '3')],
    ]);
    // etcd: a start revision below the compaction: created, then canceled with
    // compact_revision (the header of that line has revision "0" left out).
    const [rev] = await Promise.all([etcd!].map(async (s) =>
      Number(((await (await fetch(`${s.endpoint}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: b64('p') }) })).json()) as { header: { revision: string } }).header.revision)));
    await postBoth('/v3/kv/compaction', { revision: String(rev!), physical: true });
    const r = await scenario(JSON.stringify({ create_request: { key: b64('p'), start_revision: '2' } }), [], HISTORY_QUIET_MS);
    const lines = r.segments[0]!.lines as { result: Record<string, unknown> }[];
    assert.equal(lines[1]!.result.compact_revision, String(rev));
    assert.equal(lines[1]!.result.canceled, true);
  });

  test('request bodies etcd\'s gateway decodes as a JSON stream: values without newlines, a bad value after good ones', async () => {
    // etcd's gateway reads the body with a streaming JSON decoder: values need no newline
    // between them, and a malformed value after valid ones ends the request stream without
    // undoing what was sent (200 with the created lines).
    const one = JSON.stringify({ create_request: { key: b64('s/a') } });
    const two = JSON.stringify({ create_request: { key: b64('s/b') } });
    const r1 = await scenario(one + two, [['put s/b', () => put('s/b', '1')]]);
    assert.equal(r1.status, 200);
    const r2 = await scenario(`${one}\n{bad`, [['put s/a', () => put('s/a', '1')]]);
    assert.equal(r2.status, 200);
  });

  test('malformed first request: same HTTP status and gRPC code as etcd', async () => {
    // etcd: HTTP 500 with {"error","message","code":2} (Unknown) when the first value does not
    // decode (the messages are each JSON decoder's own words: not compared).
    for (const body of ['{bad', '{"create_request":{"key":5}}', '[]']) {
      const answers = await Promise.all([etcd!, concord!].map(async (s) => {
        const res = await fetch(`${s.endpoint}/v3/watch`, { method: 'POST', body });
        const json = (await res.json()) as { code: number };
        return { status: res.status, code: json.code };
      }));
      assert.deepEqual(answers[1], answers[0], `body ${body}`);
      assert.deepEqual(answers[0], { status: 500, code: 2 });
    }
  });
});
