// Alarms and the backend quota against real etcd 3.4: both servers get the same small
// --quota-backend-bytes and are filled with 20 KB puts until a put is refused with NOSPACE; then
// the same requests go to both and what is refused, what passes, `alarm list`, `alarm disarm`,
// `endpoint status` (json and table) and /health must agree once member ids are normalized.
// LMDB's file grows differently from bbolt's, so the put at which NOSPACE is raised differs
// between the two: the test compares behaviour after the alarm, never the key count. Then, on
// concord alone: the alarm survives a kill -9 and restart (it is applied state, persisted with
// the applied index), unknown alarm actions and types are refused (etcd 3.4 crashes on them),
// and on a 3-member cluster an alarm activated through one member is listed by all and refuses
// writes on all until it is disarmed through another, and a member that catches up from a raft
// snapshot gets the alarms with the rest of the state.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';

import { etcdserverpb } from '../../src/gen/proto';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { freePort, startEtcd, type EtcdHandle } from '../helpers/etcd';
import { type CtlRun, etcdctlSkipReason, runEtcdctl } from '../helpers/etcdctl';
import { startCluster } from '../helpers/cluster';
import { connect, connectAll, unary } from '../helpers/grpc_client';

const quotaBytes = 300_000;
const value = Buffer.alloc(20_000, 'a');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const AlarmAction = etcdserverpb.AlarmRequest.AlarmAction;
const AlarmType = etcdserverpb.AlarmType;

/** The outcome of an etcdctl run with what differs by nature removed: member ids, and every
 * stderr line but etcdctl's last (the retry log line names the endpoint and a client uuid). */
function norm(r: CtlRun): { stdout: string; err: string; code: number | null } {
  const ids = (s: string): string => s.replace(/memberID:\d+/g, 'memberID:<id>');
  const lines = r.stderr.trim().split('\n');
  return { stdout: ids(r.stdout), err: ids(lines[lines.length - 1] ?? ''), code: r.code };
}

async function fillUntilNoSpace(endpoint: string): Promise<number> {
  const kv = connect('etcdserverpb.KV', endpoint);
  try {
    for (let i = 0; i < 200; i++) {
      try {
        await unary(kv, 'Put', { key: Buffer.from(`fill/${i}`), value });
      } catch (err) {
        const e = err as grpc.ServiceError;
        assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED, e.details);
        assert.equal(e.details, 'etcdserver: mvcc: database space exceeded');
        return i;
      }
    }
    assert.fail('200 puts of 20 KB never exceeded a 300 KB quota');
  } finally {
    kv.close();
  }
}

/** Status code and body of /health (etcd 3.4: 503 and a body ending in '\n' when false). */
async function health(endpoint: string, query = ''): Promise<string> {
  const res = await fetch(`${endpoint}/health${query}`);
  return `${res.status} ${await res.text()}`;
}

describe('alarms and quota: etcd 3.4 vs concord', { skip: etcdctlSkipReason() }, () => {
  let etcd: EtcdHandle | undefined;
  let concord: ConcordHandle | undefined;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-alarm-'));
  const quotaArg = `--quota-backend-bytes=${quotaBytes}`;
  let peerUrl = '';

  before(async () => {
    etcd = await startEtcd({ extraArgs: [quotaArg] });
    peerUrl = `http://127.0.0.1:${await freePort()}`;
    concord = await startConcord({ dataDir, extraArgs: [quotaArg, '--initial-advertise-peer-urls', peerUrl] });
  });

  after(async () => {
    await Promise.all([etcd?.stop(), concord?.stop()]);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  /** The same etcdctl command on both; their normalized outcomes must be equal. */
  async function same(args: string[], code?: number): Promise<ReturnType<typeof norm>> {
    const e = norm(await runEtcdctl([etcd!.endpoint], args));
    const c = norm(await runEtcdctl([concord!.endpoint], args));
    assert.deepEqual(c, e, `etcdctl ${args.join(' ')}`);
    if (code !== undefined) assert.equal(e.code, code, `exit code of etcdctl ${args.join(' ')}: ${e.err}`);
    return e;
  }

  test('past the quota: NOSPACE raised, writes that grow the db refused, the rest served', async () => {
    const [e, c] = [await fillUntilNoSpace(etcd!.endpoint), await fillUntilNoSpace(concord!.endpoint)];
    assert.ok(e > 3 && c > 3, `refused after ${e} (etcd) and ${c} (concord) puts`);
    const list = await same(['alarm', 'list'], 0);
    assert.equal(list.stdout, 'memberID:<id> alarm:NOSPACE \n');
    const refused = 'Error: etcdserver: mvcc: database space exceeded';
    assert.equal((await same(['put', 'small', 'v'], 1)).err, refused, 'a small put too');
    assert.equal((await same(['lease', 'grant', '10'], 1)).err, 'Error: failed to grant lease (etcdserver: mvcc: database space exceeded)');
    await same(['get', 'fill/1', '--print-value-only=false', '--keys-only'], 0);
    assert.equal((await same(['del', 'fill/1'], 0)).stdout, '1\n');
    // A txn with only deletes passes (etcd quota: cost 0); one with a put anywhere is refused.
    const kvE = connect('etcdserverpb.KV', etcd!.endpoint);
    const kvC = connect('etcdserverpb.KV', concord!.endpoint);
    try {
      const del = { success: [{ request_delete_range: { key: Buffer.from('fill/2') } }] };
      const withPut = { success: [{ request_delete_range: { key: Buffer.from('fill/3') } }], failure: [{ request_put: { key: Buffer.from('x'), value: Buffer.from('y') } }] };
      for (const kv of [kvE, kvC]) {
        const r = await unary(kv, 'Txn', del);
        assert.equal(r.succeeded, true);
        await assert.rejects(unary(kv, 'Txn', withPut), (err: grpc.ServiceError) =>
          err.code === grpc.status.RESOURCE_EXHAUSTED && err.details === 'etcdserver: mvcc: database space exceeded');
        await unary(kv, 'Compact', { revision: 3 });
      }
    } finally {
      kvE.close();
      kvC.close();
    }
    for (const h of [etcd!, concord!]) {
      // Ids, indexes and sizes are each server's own: the errors field is what must agree.
      const st = norm(await runEtcdctl([h.endpoint], ['endpoint', 'status', '-w', 'json']));
      const errors = (JSON.parse(st.stdout) as { Status: { errors: string[] } }[])[0]!.Status.errors;
      assert.deepEqual(errors, ['memberID:<id> alarm:NOSPACE '], st.stdout);
      const table = await runEtcdctl([h.endpoint], ['endpoint', 'status', '-w', 'table']);
      assert.match(table.stdout, /\| +memberID:\d+ \|\n.*\| +alarm:NOSPACE +\|/, table.stdout);
      assert.equal(await health(h.endpoint), '503 {"health":"false"}\n');
      assert.equal(await health(h.endpoint, '?exclude=NOSPACE'), '200 {"health":"true"}');
    }
  });

  test('unknown alarm action or type: refused before the log (etcd 3.4 would crash)', async () => {
    const m = connect('etcdserverpb.Maintenance', concord!.endpoint);
    try {
      await assert.rejects(unary(m, 'Alarm', { action: 7 as etcdserverpb.AlarmRequest.AlarmAction }), (err: grpc.ServiceError) =>
        err.code === grpc.status.INVALID_ARGUMENT && err.details === 'etcdserver: unknown alarm action');
      await assert.rejects(unary(m, 'Alarm', { action: AlarmAction.ACTIVATE, alarm: 9 as etcdserverpb.AlarmType }), (err: grpc.ServiceError) =>
        err.code === grpc.status.INVALID_ARGUMENT && err.details === 'etcdserver: unknown alarm type');
      // ACTIVATE of NONE changes nothing (etcd 3.5's fix of the 3.4 crash).
      const r = await unary(m, 'Alarm', { action: AlarmAction.ACTIVATE, alarm: AlarmType.NONE });
      assert.equal(r.alarms.length, 0);
      assert.equal((await unary(m, 'Alarm', {})).alarms.length, 1);
    } finally {
      m.close();
    }
  });

  test('concord: the alarm survives kill -9 and restart', async () => {
    await concord!.kill();
    concord = await startConcord({ dataDir, extraArgs: [quotaArg, '--initial-advertise-peer-urls', peerUrl] });
    const list = norm(await runEtcdctl([concord.endpoint], ['alarm', 'list']));
    assert.equal(list.stdout, 'memberID:<id> alarm:NOSPACE \n');
    assert.equal(norm(await runEtcdctl([concord.endpoint], ['put', 'small', 'v'])).err, 'Error: etcdserver: mvcc: database space exceeded');
  });

  test('alarm disarm: prints what it deactivated; a write still past the quota raises it again', async () => {
    const d = await same(['alarm', 'disarm'], 0);
    assert.equal(d.stdout, 'memberID:<id> alarm:NOSPACE \n');
    assert.equal((await same(['alarm', 'list'], 0)).stdout, '');
    assert.equal((await same(['alarm', 'disarm'], 0)).stdout, '', 'nothing left to disarm');
    for (const h of [etcd!, concord!]) assert.equal(await health(h.endpoint), '200 {"health":"true"}');
    // Both dbs are still past the quota (neither shrinks without defragmentation).
    await same(['put', 'small', 'v'], 1);
    assert.equal((await same(['alarm', 'list'], 0)).stdout, 'memberID:<id> alarm:NOSPACE \n');
  });
});

describe('alarms on a 3-member concord cluster', { skip: etcdctlSkipReason() }, () => {
  test('activated through one member: listed by all, refuses writes on all, disarmed through another', async (t) => {
    const c = await startCluster({ size: 3, token: 'alarm-cluster' });
    t.after(() => c.stop());
    const cl = c.members.map((m) => connectAll(m.clientUrl));
    t.after(() => { for (const x of cl) x.close(); });
    const st = await unary(cl[0]!.maintenance, 'Status', {});
    const memberID = st.header!.member_id!;
    const r = await unary(cl[0]!.maintenance, 'Alarm', { action: AlarmAction.ACTIVATE, memberID, alarm: AlarmType.NOSPACE });
    assert.equal(r.alarms.length, 1, 'the answer names the alarm it activated');
    assert.equal(r.alarms[0]!.memberID!.toString(), memberID.toString());
    const listed = async (i: number, want: number): Promise<void> => {
      for (let n = 0; n < 100; n++) {
        if ((await unary(cl[i]!.maintenance, 'Alarm', {})).alarms.length === want) return;
        await sleep(50);
      }
      assert.fail(`member ${i} never listed ${want} alarm(s)`);
    };
    for (let i = 0; i < 3; i++) {
      await listed(i, 1);
      await assert.rejects(unary(cl[i]!.kv, 'Put', { key: Buffer.from('k'), value: Buffer.from('v') }),
        (err: grpc.ServiceError) => err.code === grpc.status.RESOURCE_EXHAUSTED, `put on member ${i}`);
      const s = await unary(cl[i]!.maintenance, 'Status', {});
      assert.deepEqual(s.errors, [`memberID:${memberID.toString()} alarm:NOSPACE `]);
    }
    const d = await runEtcdctl([c.members[2]!.clientUrl], ['alarm', 'disarm']);
    assert.equal(d.stdout, `memberID:${memberID.toString()} alarm:NOSPACE \n`, d.stderr);
    for (let i = 0; i < 3; i++) {
      await listed(i, 0);
      await unary(cl[i]!.kv, 'Put', { key: Buffer.from(`k${i}`), value: Buffer.from('v') });
    }
  });

  test('a member that catches up from a raft snapshot gets the alarms with the state', async (t) => {
    const c = await startCluster({ size: 3, token: 'alarm-snapshot', extraArgs: ['--experimental-snapshot-catchup-entries', '20'] });
    t.after(() => c.stop());
    const leader = await c.leader();
    const down = (leader + 1) % 3;
    const cl = connectAll(c.members[leader]!.clientUrl);
    t.after(() => cl.close());
    await c.kill(down);
    for (let i = 0; i < 60; i++) await unary(cl.kv, 'Put', { key: Buffer.from(`s${i % 5}`), value: Buffer.from(`v${i}`) });
    const memberID = (await unary(cl.maintenance, 'Status', {})).header!.member_id!;
    await unary(cl.maintenance, 'Alarm', { action: AlarmAction.ACTIVATE, memberID, alarm: AlarmType.NOSPACE });
    await c.restart(down);
    const m = connectAll(c.members[down]!.clientUrl);
    t.after(() => m.close());
    for (let n = 0; ; n++) {
      const a = await unary(m.maintenance, 'Alarm', {}).catch(() => null);
      if (a !== null && a.alarms.length === 1) break;
      if (n === 200) assert.fail('the restarted member never listed the alarm');
      await sleep(50);
    }
    assert.match(c.logs(down), /received and saved database snapshot/, 'it caught up from a snapshot');
    await assert.rejects(unary(m.kv, 'Put', { key: Buffer.from('k'), value: Buffer.from('v') }),
      (err: grpc.ServiceError) => err.code === grpc.status.RESOURCE_EXHAUSTED);
  });
});

test('CORRUPT alarm: every write, compaction and lease grant/revoke refused as etcd\'s corrupt applier does; reads go on', { skip: etcdctlSkipReason() }, async (t) => {
  const [e, c] = await Promise.all([startEtcd(), startConcord()]);
  t.after(() => Promise.all([e.stop(), c.stop()]));
  const outcomes = async (endpoint: string): Promise<Record<string, string>> => {
    const kv = connect('etcdserverpb.KV', endpoint);
    const m = connect('etcdserverpb.Maintenance', endpoint);
    const l = connect('etcdserverpb.Lease', endpoint);
    try {
      await unary(kv, 'Put', { key: Buffer.from('a'), value: Buffer.from('1') });
      const memberID = (await unary(m, 'Status', {})).header!.member_id;
      await unary(m, 'Alarm', { action: AlarmAction.ACTIVATE, memberID, alarm: AlarmType.CORRUPT });
      const out: Record<string, string> = {};
      const run = async (name: string, p: Promise<unknown>): Promise<void> => {
        out[name] = await p.then(() => 'ok', (err: grpc.ServiceError) => `${err.code} ${err.details}`);
      };
      await run('put', unary(kv, 'Put', { key: Buffer.from('b'), value: Buffer.from('1') }));
      await run('range', unary(kv, 'Range', { key: Buffer.from('a') }));
      await run('range serializable', unary(kv, 'Range', { key: Buffer.from('a'), serializable: true }));
      await run('delete', unary(kv, 'DeleteRange', { key: Buffer.from('a') }));
      await run('read-only txn', unary(kv, 'Txn', { success: [{ request_range: { key: Buffer.from('a') } }] }));
      await run('txn with a put', unary(kv, 'Txn', { success: [{ request_put: { key: Buffer.from('a'), value: Buffer.from('2') } }] }));
      await run('txn with a nested delete', unary(kv, 'Txn', { failure: [{ request_txn: { success: [{ request_delete_range: { key: Buffer.from('z') } }] } }] }));
      await run('compact', unary(kv, 'Compact', { revision: 1 }));
      await run('lease grant', unary(l, 'LeaseGrant', { ID: 5, TTL: 10 }));
      await run('lease revoke', unary(l, 'LeaseRevoke', { ID: 5 }));
      await run('deactivate', unary(m, 'Alarm', { action: AlarmAction.DEACTIVATE, memberID, alarm: AlarmType.CORRUPT }));
      await run('put after deactivate', unary(kv, 'Put', { key: Buffer.from('c'), value: Buffer.from('1') }));
      return out;
    } finally {
      kv.close();
      m.close();
      l.close();
    }
  };
  const [etcd, concord] = await Promise.all([outcomes(e.endpoint), outcomes(c.endpoint)]);
  assert.deepEqual(concord, etcd);
  assert.equal(etcd['put'], `${grpc.status.DATA_LOSS} etcdserver: corrupt cluster`);
  assert.equal(etcd['range'], 'ok');
});
