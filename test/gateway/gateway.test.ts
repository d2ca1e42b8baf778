// The HTTP/JSON gateway and the operational endpoints, differentially against real etcd 3.4's
// gateway (same JSON requests, same status codes and bodies, revisions included), and /metrics
// scraped for the families operators alert on.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { etcdSkipReason, startEtcd, type EtcdHandle } from '../helpers/etcd';
import { bytes, connect, unary } from '../helpers/grpc_client';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

interface HttpAnswer { status: number; body: string; json: unknown; contentType: string }

async function post(endpoint: string, path: string, body: unknown, method = 'POST'): Promise<HttpAnswer> {
  const res = await fetch(endpoint + path, {
    method,
    body: method === 'GET' ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
  });
  const text = await res.text();
  let json: unknown = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, body: text, json, contentType: res.headers.get('content-type') ?? '' };
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

describe('HTTP/JSON gateway vs real etcd', { skip: etcdSkipReason() }, () => {
  let etcd: EtcdHandle | undefined;
  let concord: ConcordHandle | undefined;

  before(async () => {
    [etcd, concord] = await Promise.all([startEtcd(), startConcord()]);
  });
  after(async () => {
    await Promise.all([etcd?.stop(), concord?.stop()]);
  });

  /** Sends the same request to both and asserts equal status and normalized JSON bodies. */
  async function same(path: string, body: unknown, opts: { method?: string; compareBody?: boolean } = {}): Promise<HttpAnswer> {
    const [e, c] = await Promise.all([post(etcd!.endpoint, path, body, opts.method), post(concord!.endpoint, path, body, opts.method)]);
    assert.equal(c.status, e.status, `${path} status (etcd body ${e.body}, concord body ${c.body})`);
    if (opts.compareBody !== false) {
      if (e.json !== null) assert.deepEqual(normalize(c.json), normalize(e.json), `${path} body`);
      else assert.equal(c.body, e.body, `${path} text body`);
    }
    return c;
  }

  test('KV: put, range (proto and lowerCamelCase names), txn, delete, compaction', async () => {
    for (let i = 0; i < 5; i++) await same('/v3/kv/put', { key: b64(`k${i}`), value: b64(`v${i}`) });
    await same('/v3/kv/put', { key: b64('k1'), value: b64('v1b'), prev_kv: true });
    await same('/v3/kv/put', { key: b64('k2'), value: b64('v2b'), prevKv: true });
    await same('/v3/kv/range', { key: b64('k1') });
    await same('/v3/kv/range', { key: b64('nope') });
    await same('/v3/kv/range', { key: b64('k'), range_end: b64('l'), sort_order: 'DESCEND', sort_target: 'MOD' });
    await same('/v3/kv/range', { key: b64('k'), rangeEnd: b64('l'), sortOrder: 'DESCEND', sortTarget: 'VALUE', limit: 2 });
    await same('/v3/kv/range', { key: b64('k'), rangeEnd: b64('l'), keysOnly: true });
    await same('/v3/kv/range', { key: b64('k'), rangeEnd: b64('l'), countOnly: true });
    await same('/v3/kv/range', { key: b64('\0'), range_end: b64('\0'), limit: '1' });
    await same('/v3/kv/range', { key: b64('k1'), revision: '3' });
    await same('/v3/kv/range', { key: b64('k'), rangeEnd: b64('l'), minModRevision: 4, serializable: true });
    await same('/v3/kv/txn', {
      compare: [{ key: b64('k1'), target: 'VALUE', result: 'EQUAL', value: b64('v1b') }],
      success: [{ requestPut: { key: b64('k1'), value: b64('v1c') } }, { request_range: { key: b64('k1') } }],
      failure: [{ requestDeleteRange: { key: b64('k1') } }],
    });
    await same('/v3/kv/txn', {
      compare: [{ key: b64('k1'), target: 'VERSION', result: 'GREATER', version: '10' }],
      success: [{ requestPut: { key: b64('k1'), value: b64('never') } }],
      failure: [{ request_delete_range: { key: b64('k3'), prev_kv: true } }, { requestTxn: { success: [{ requestRange: { key: b64('k4') } }] } }],
    });
    await same('/v3/kv/deleterange', { key: b64('k4'), prev_kv: true });
    await same('/v3/kv/deleterange', { key: b64('k'), range_end: b64('l') });
    await same('/v3/kv/compaction', { revision: '5' });
    await same('/v3/kv/compaction', { revision: 5, physical: true });
    await same('/v3beta/kv/range', { key: b64('k0') });
  });

  test('errors: etcd codes, HTTP status and JSON error body', async () => {
    await same('/v3/kv/range', { key: '' });
    await same('/v3/kv/put', { key: '', value: b64('x') });
    await same('/v3/kv/range', { key: b64('k1'), revision: '2' }); // compacted at 5
    await same('/v3/kv/range', { key: b64('k1'), revision: '100000' }); // future
    await same('/v3/kv/put', { key: b64('k9'), value: b64('x'), ignore_value: true, ignore_lease: false });
    await same('/v3/kv/txn', { success: [{ requestPut: { key: b64('d'), value: b64('1') } }, { requestPut: { key: b64('d'), value: b64('2') } }] });
    // Malformed JSON: same status and gRPC code; the message is the JSON parser's own words.
    const bad = await same('/v3/kv/range', '{bad', { compareBody: false });
    assert.equal((bad.json as { code: number }).code, 3);
    // Wrong JSON types and absurd nesting: etcd's 400 with code 3 (messages are each JSON
    // decoder's own words), and the server stays up.
    for (const body of [
      { key: b64('a'), limit: 'abc' }, { key: 5 }, { key: b64('a'), keys_only: 'yes' }, { key: b64('a'), sort_order: 'BOGUS' },
      '{"success":[' + '{"request_txn":{"success":['.repeat(20000) + ']}}'.repeat(20000) + ']}',
      '['.repeat(100000) + ']'.repeat(100000),
    ]) {
      const path = typeof body === 'string' ? '/v3/kv/txn' : '/v3/kv/range';
      const r = await same(path, body, { compareBody: false });
      assert.equal(r.status, 400, `${String(body).slice(0, 40)}: ${r.body.slice(0, 200)}`);
      assert.equal((r.json as { code: number }).code, 3);
    }
    await same('/health', null, { method: 'GET' });
    await same('/v3/kv/range', null, { method: 'GET' });
    const nf = await same('/v3/no/such/thing', {}, { compareBody: false });
    assert.equal(nf.status, 404);
  });

  test('maintenance status, member list and health', async () => {
    const [e, c] = await Promise.all([post(etcd!.endpoint, '/v3/maintenance/status', {}), post(concord!.endpoint, '/v3/maintenance/status', {})]);
    assert.equal(c.status, 200);
    const es = e.json as Record<string, unknown>;
    const cs = c.json as Record<string, unknown>;
    assert.deepEqual(Object.keys(cs).sort(), Object.keys(es).sort(), 'same status fields');
    assert.equal(cs.version, es.version);
    assert.equal(cs.leader, (cs.header as Record<string, unknown>).member_id, 'concord leads');
    const ml = await post(concord!.endpoint, '/v3/cluster/member/list', {});
    const members = (ml.json as { members: { ID: string; clientURLs: string[] }[] }).members;
    assert.equal(members.length, 1);
    assert.deepEqual(members[0]!.clientURLs, [concord!.endpoint]);
    for (const p of ['/health', '/health?serializable=true', '/health?exclude=NOSPACE']) {
      const [eh, ch] = await Promise.all([post(etcd!.endpoint, p, null, 'GET'), post(concord!.endpoint, p, null, 'GET')]);
      assert.equal(ch.status, eh.status, p);
      assert.equal(ch.body, eh.body, p);
    }
    const [ev, cv] = await Promise.all([post(etcd!.endpoint, '/version', null, 'GET'), post(concord!.endpoint, '/version', null, 'GET')]);
    const evj = ev.json as Record<string, string>;
    const cvj = cv.json as Record<string, string>;
    assert.equal(cvj.etcdserver, evj.etcdserver);
    assert.equal(cvj.etcdcluster, evj.etcdcluster);
  });

  test('every etcd_ and grpc_ metric family concord exports exists in etcd 3.4 too', async () => {
    const families = (text: string): Set<string> =>
      new Set(text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]!));
    const [e, c] = await Promise.all([post(etcd!.endpoint, '/metrics', null, 'GET'), post(concord!.endpoint, '/metrics', null, 'GET')]);
    const etcdFamilies = families(e.body);
    const ours = [...families(c.body)].filter((f) => f.startsWith('etcd_') || f.startsWith('grpc_'));
    assert.ok(ours.length >= 20, `concord exports etcd families (${ours.length})`);
    assert.deepEqual(ours.filter((f) => !etcdFamilies.has(f)), [], 'families etcd does not have');
  });

  test('services not built yet answer as the gRPC side does (UNIMPLEMENTED)', async () => {
    const r = await post(concord!.endpoint, '/v3/maintenance/downgrade', { action: 'VALIDATE', version: '3.5.0' });
    // Downgrade (etcd 3.5) is not built: the gateway reports what gRPC reports.
    assert.equal(r.status, 501);
    assert.equal((r.json as { code: number }).code, 12);
  });
});

describe('/metrics and probes', () => {
  let concord: ConcordHandle | undefined;
  before(async () => {
    concord = await startConcord();
  });
  after(async () => {
    await concord?.stop();
  });

  function sample(text: string, name: string, labels = ''): number {
    const line = text.split('\n').find((l) => l.startsWith(name + (labels ? `{${labels}}` : ' ')) || (labels === '' && l.startsWith(name + '{')));
    assert.ok(line, `metric ${name}{${labels}} present`);
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }

  test('etcd families reflect the server', async () => {
    const kv = connect('etcdserverpb.KV', concord!.endpoint);
    try {
      for (let i = 0; i < 10; i++) await unary(kv, 'Put', { key: bytes(`m${i}`), value: bytes('x') });
      await unary(kv, 'Range', { key: bytes('m1') });
      await assert.rejects(unary(kv, 'Range', { key: bytes('') }));
    } finally {
      kv.close();
    }
    const m = await post(concord!.endpoint, '/metrics', null, 'GET');
    assert.equal(m.status, 200);
    assert.match(m.contentType, /text\/plain; version=0\.0\.4/);
    const t = m.body;
    assert.equal(sample(t, 'etcd_server_has_leader'), 1);
    assert.equal(sample(t, 'etcd_server_is_leader'), 1);
    assert.ok(sample(t, 'etcd_server_proposals_committed_total') >= 11);
    assert.ok(sample(t, 'etcd_server_proposals_applied_total') >= 11);
    assert.equal(sample(t, 'etcd_server_proposals_pending'), 0);
    assert.equal(sample(t, 'etcd_server_slow_apply_total'), 0);
    assert.equal(sample(t, 'etcd_server_heartbeat_send_failures_total'), 0);
    assert.ok(sample(t, 'etcd_disk_wal_fsync_duration_seconds_count') >= 1);
    assert.ok(sample(t, 'etcd_disk_wal_fsync_duration_seconds_bucket', 'le="+Inf"') >= 1);
    assert.ok(sample(t, 'etcd_mvcc_db_total_size_in_bytes') > 0);
    assert.equal(sample(t, 'etcd_mvcc_put_total'), 10);
    assert.ok(sample(t, 'etcd_debugging_mvcc_keys_total') >= 10);
    assert.equal(sample(t, 'grpc_server_handled_total', 'grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"'), 10);
    assert.equal(sample(t, 'grpc_server_handled_total', 'grpc_code="InvalidArgument",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"'), 1);
    assert.equal(sample(t, 'grpc_server_started_total', 'grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"'), 2);
    assert.ok(sample(t, 'process_cpu_seconds_total') > 0);
    // concord's own families
    const batches = sample(t, 'concord_worker_batches_total');
    assert.ok(batches >= 2, 'batches counted');
    assert.ok(sample(t, 'concord_worker_batch_entries_total', 'kind="append"') >= 10);
    assert.ok(sample(t, 'concord_worker_batch_entries_total', 'kind="apply"') >= 10);
    assert.ok(sample(t, 'concord_worker_batch_reads_total') >= 1);
    assert.ok(sample(t, 'concord_thread_busy_seconds_total', 'thread="main"') > 0);
  });

  test('/livez and /readyz', async () => {
    for (const p of ['/livez', '/readyz']) {
      const r = await post(concord!.endpoint, p, null, 'GET');
      assert.equal(r.status, 200);
      assert.equal(r.body, 'ok');
      const v = await post(concord!.endpoint, p + '?verbose', null, 'GET');
      assert.match(v.body, /\[\+\]serializable_read ok/);
    }
  });

  test('--listen-metrics-urls serves /metrics and /health only', async () => {
    const { freePort } = await import('../helpers/etcd');
    const port = await freePort();
    const c = await startConcord({ extraArgs: ['--listen-metrics-urls', `http://127.0.0.1:${port}`] });
    try {
      const m = await post(`http://127.0.0.1:${port}`, '/metrics', null, 'GET');
      assert.equal(m.status, 200);
      assert.match(m.body, /etcd_server_has_leader 1/);
      const h = await post(`http://127.0.0.1:${port}`, '/health', null, 'GET');
      assert.equal(h.body, '{"health":"true"}');
      const kv = await post(`http://127.0.0.1:${port}`, '/v3/kv/range', { key: b64('a') });
      assert.equal(kv.status, 404);
    } finally {
      await c.stop();
    }
  });
});
