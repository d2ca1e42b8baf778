// Wire compatibility of our .proto files and src/api/grpc/services.ts:
//  1. against real etcd (skipped only when /usr/bin/etcd is absent): KV, Txn,
//     Watch, Lease, Maintenance, Cluster and Health calls decode as expected;
//  2. against a local grpc-js server: UNIMPLEMENTED handlers and raw responses.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';

import { etcdserverpb, mvccpb } from '../../src/gen/proto';
import {
  addService,
  encodeResponse,
  isRawResponse,
  methodNames,
  serviceNames,
  services,
  unimplementedHandlers,
  WatchService,
} from '../../src/api/grpc/services';
import { etcdSkipReason, startEtcd, type EtcdHandle } from '../helpers/etcd';
import { big, bytes, connect, connectAll, long, num, openStream, prefixEnd, str, unary } from '../helpers/grpc_client';

type Clients = ReturnType<typeof connectAll>;

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number';
}

async function expectGrpcError(p: Promise<unknown>, code: grpc.status, details?: string | RegExp): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    assert.ok(isServiceError(err), `expected a grpc ServiceError, got ${String(err)}`);
    assert.equal(err.code, code, `grpc code (details: ${err.details})`);
    if (typeof details === 'string') assert.equal(err.details, details);
    else if (details) assert.match(err.details, details);
    return err;
  }
  assert.fail(`expected grpc error code ${code}, call succeeded`);
}

describe('wire compatibility with real etcd', { skip: etcdSkipReason() }, () => {
  let etcd: EtcdHandle | undefined;
  let c: Clients;
  let memberId = 0n;
  let r1 = 0; // revision of the first put

  before(async () => {
    etcd = await startEtcd();
    c = connectAll(etcd.endpoint);
  });

  after(async () => {
    c?.close();
    await etcd?.stop();
  });

  test('Put: header, revisions and prev_kv', async () => {
    const p1 = await unary(c.kv, 'Put', { key: bytes('a/1'), value: bytes('v1') });
    assert.ok(p1.header, 'header present');
    assert.ok(big(p1.header.cluster_id) > 0n, 'cluster_id set');
    memberId = big(p1.header.member_id);
    assert.ok(memberId > 0n, 'member_id set');
    r1 = num(p1.header.revision);
    assert.ok(r1 >= 2, `first put revision ${r1}`);
    assert.ok(big(p1.header.raft_term) >= 1n);
    assert.equal(p1.prev_kv, null, 'no prev_kv unless asked');

    for (const [i, k] of ['a/2', 'a/3', 'b/1'].entries()) {
      const p = await unary(c.kv, 'Put', { key: bytes(k), value: bytes(`v${k}`) });
      assert.equal(num(p.header?.revision), r1 + 1 + i);
    }

    const again = await unary(c.kv, 'Put', { key: bytes('a/1'), value: bytes('v1b'), prev_kv: true });
    assert.equal(num(again.header?.revision), r1 + 4);
    const prev = again.prev_kv;
    assert.ok(prev);
    assert.equal(str(prev.key), 'a/1');
    assert.equal(str(prev.value), 'v1');
    assert.equal(num(prev.version), 1);
    assert.equal(num(prev.create_revision), r1);
    assert.equal(num(prev.mod_revision), r1);
  });

  test('Range: single key, prefix with limit, sort, keys_only, count_only', async () => {
    const one = await unary(c.kv, 'Range', { key: bytes('a/1') });
    assert.equal(num(one.header?.revision), r1 + 4);
    assert.equal(one.kvs.length, 1);
    const kv = one.kvs[0] as mvccpb.KeyValue.$Properties;
    assert.equal(str(kv.key), 'a/1');
    assert.equal(str(kv.value), 'v1b');
    assert.equal(num(kv.create_revision), r1);
    assert.equal(num(kv.mod_revision), r1 + 4);
    assert.equal(num(kv.version), 2);
    assert.equal(num(kv.lease), 0);
    assert.equal(one.more, false);
    assert.equal(num(one.count), 1);

    const limited = await unary(c.kv, 'Range', { key: bytes('a/'), range_end: prefixEnd('a/'), limit: 2 });
    assert.deepEqual(limited.kvs.map((k) => str(k.key)), ['a/1', 'a/2']);
    assert.equal(limited.more, true);
    assert.equal(num(limited.count), 3);

    const desc = await unary(c.kv, 'Range', {
      key: bytes('a/'),
      range_end: prefixEnd('a/'),
      sort_order: etcdserverpb.RangeRequest.SortOrder.DESCEND,
      sort_target: etcdserverpb.RangeRequest.SortTarget.KEY,
    });
    assert.deepEqual(desc.kvs.map((k) => str(k.key)), ['a/3', 'a/2', 'a/1']);

    const keysOnly = await unary(c.kv, 'Range', { key: bytes('a/'), range_end: prefixEnd('a/'), keys_only: true });
    assert.equal(keysOnly.kvs.length, 3);
    assert.ok(keysOnly.kvs.every((k) => (k.value?.length ?? 0) === 0), 'keys_only drops values');

    const countOnly = await unary(c.kv, 'Range', { key: bytes('a/'), range_end: prefixEnd('a/'), count_only: true });
    assert.equal(countOnly.kvs.length, 0);
    assert.equal(num(countOnly.count), 3);

    const all = await unary(c.kv, 'Range', { key: Buffer.from([0]), range_end: Buffer.from([0]) });
    assert.deepEqual(all.kvs.map((k) => str(k.key)), ['a/1', 'a/2', 'a/3', 'b/1']);

    const past = await unary(c.kv, 'Range', { key: bytes('a/1'), revision: r1 });
    assert.equal(str(past.kvs[0]?.value), 'v1', 'point-in-time read');
  });

  test('Txn: compare, success and failure branches, oneof responses', async () => {
    const ok = await unary(c.kv, 'Txn', {
      compare: [
        {
          key: bytes('a/2'),
          target: etcdserverpb.Compare.CompareTarget.MOD,
          result: etcdserverpb.Compare.CompareResult.EQUAL,
          mod_revision: r1 + 1,
        },
      ],
      success: [
        { request_put: { key: bytes('a/2'), value: bytes('v2b') } },
        { request_range: { key: bytes('a/'), range_end: prefixEnd('a/') } },
      ],
      failure: [{ request_range: { key: bytes('b/1') } }],
    });
    assert.equal(ok.succeeded, true);
    assert.equal(num(ok.header?.revision), r1 + 5);
    assert.equal(ok.responses.length, 2);
    const [put, range] = ok.responses as etcdserverpb.ResponseOp[];
    assert.equal(put?.response, 'response_put');
    assert.ok(put?.response_put);
    assert.equal(range?.response, 'response_range');
    const kvs = range?.response_range?.kvs ?? [];
    assert.deepEqual(kvs.map((k) => `${str(k.key)}=${str(k.value)}`), ['a/1=v1b', 'a/2=v2b', 'a/3=va/3']);
    assert.equal(num(kvs[1]?.mod_revision), r1 + 5);

    const fail = await unary(c.kv, 'Txn', {
      compare: [
        {
          key: bytes('a/3'),
          target: etcdserverpb.Compare.CompareTarget.VALUE,
          result: etcdserverpb.Compare.CompareResult.EQUAL,
          value: bytes('nope'),
        },
      ],
      success: [{ request_put: { key: bytes('x'), value: bytes('never') } }],
      failure: [{ request_range: { key: bytes('b/1') } }],
    });
    assert.equal(fail.succeeded, false);
    assert.equal(num(fail.header?.revision), r1 + 5, 'read-only branch does not bump the revision');
    assert.equal(fail.responses[0]?.response, 'response_range');
    assert.equal(str(fail.responses[0]?.response_range?.kvs?.[0]?.value), 'vb/1');

    // version = 0 inside the oneof must still be sent (key absent => version 0).
    const absent = await unary(c.kv, 'Txn', {
      compare: [
        {
          key: bytes('missing'),
          target: etcdserverpb.Compare.CompareTarget.VERSION,
          result: etcdserverpb.Compare.CompareResult.EQUAL,
          version: 0,
        },
      ],
    });
    assert.equal(absent.succeeded, true);
  });

  test('Watch: create, put/delete events with prev_kv, history replay, cancel', async () => {
    const { call, reader } = openStream(c.watch, 'Watch');
    try {
      call.write({ create_request: { key: bytes('a/'), range_end: prefixEnd('a/'), prev_kv: true } });
      const created = await reader.next();
      assert.equal(created.created, true);
      assert.equal(num(created.watch_id), 0, 'first auto-assigned watch id is 0');
      assert.equal(num(created.header?.revision), r1 + 5);

      const put = await unary(c.kv, 'Put', { key: bytes('a/9'), value: bytes('nine') });
      const putRev = num(put.header?.revision);
      const ev1 = await reader.next();
      assert.equal(num(ev1.watch_id), 0);
      assert.equal(ev1.events.length, 1);
      const e1 = ev1.events[0] as mvccpb.Event;
      assert.equal(e1.type, mvccpb.Event.EventType.PUT);
      assert.equal(str(e1.kv?.key), 'a/9');
      assert.equal(str(e1.kv?.value), 'nine');
      assert.equal(num(e1.kv?.version), 1);
      assert.equal(num(e1.kv?.create_revision), putRev);
      assert.equal(e1.prev_kv, null, 'no prev_kv for a new key');

      const del = await unary(c.kv, 'DeleteRange', { key: bytes('a/9') });
      assert.equal(num(del.deleted), 1);
      const ev2 = await reader.next();
      const e2 = ev2.events[0] as mvccpb.Event;
      assert.equal(e2.type, mvccpb.Event.EventType.DELETE);
      assert.equal(num(e2.kv?.mod_revision), putRev + 1);
      assert.equal(str(e2.prev_kv?.value), 'nine');

      // client-chosen watch id and replay from an old revision
      call.write({ create_request: { key: bytes('a/1'), start_revision: r1, watch_id: 7 } });
      const created7 = await reader.next();
      assert.equal(created7.created, true);
      assert.equal(num(created7.watch_id), 7);
      const replay: mvccpb.Event.$Properties[] = [];
      while (replay.length < 2) {
        const msg = await reader.next();
        assert.equal(num(msg.watch_id), 7);
        replay.push(...msg.events);
      }
      assert.deepEqual(
        replay.map((e) => [str(e.kv?.value), num(e.kv?.mod_revision)]),
        [
          ['v1', r1],
          ['v1b', r1 + 4],
        ],
      );

      call.write({ progress_request: {} });
      const progress = await reader.next();
      assert.equal(num(progress.watch_id), -1, 'progress reply uses watch_id -1');
      assert.equal(num(progress.header?.revision), putRev + 1);

      call.write({ cancel_request: { watch_id: 0 } });
      const canceled = await reader.next();
      assert.equal(canceled.canceled, true);
      assert.equal(num(canceled.watch_id), 0);
    } finally {
      call.cancel();
    }
  });

  test('Lease: 64-bit IDs survive the round trip', async () => {
    const grant = await unary(c.lease, 'LeaseGrant', { TTL: 60 });
    const id = big(grant.ID);
    assert.ok(id > 0n);
    assert.equal(num(grant.TTL), 60);
    // etcd puts member-ID bits at the top: IDs are usually above 2^53.
    const put = await unary(c.kv, 'Put', { key: bytes('leased'), value: bytes('x'), lease: grant.ID });
    assert.ok(put.header);
    const got = await unary(c.kv, 'Range', { key: bytes('leased') });
    assert.equal(big(got.kvs[0]?.lease), id);

    const ttl = await unary(c.lease, 'LeaseTimeToLive', { ID: long(id), keys: true });
    assert.equal(big(ttl.ID), id);
    assert.equal(num(ttl.grantedTTL), 60);
    assert.ok(num(ttl.TTL) > 0 && num(ttl.TTL) <= 60);
    assert.deepEqual(ttl.keys.map((k) => str(k)), ['leased']);

    const leases = await unary(c.lease, 'LeaseLeases', {});
    assert.ok(leases.leases.some((l) => big(l.ID) === id));

    await unary(c.lease, 'LeaseRevoke', { ID: grant.ID });
    const gone = await unary(c.kv, 'Range', { key: bytes('leased') });
    assert.equal(gone.kvs.length, 0);
    const missing = await unary(c.lease, 'LeaseTimeToLive', { ID: grant.ID });
    assert.equal(num(missing.TTL), -1, 'revoked lease reports TTL -1');
  });

  test('DeleteRange: prefix with prev_kvs', async () => {
    const del = await unary(c.kv, 'DeleteRange', { key: bytes('a/'), range_end: prefixEnd('a/'), prev_kv: true });
    assert.equal(num(del.deleted), 3);
    assert.deepEqual(del.prev_kvs.map((k) => str(k.key)), ['a/1', 'a/2', 'a/3']);
    const left = await unary(c.kv, 'Range', { key: bytes('a/'), range_end: prefixEnd('a/'), count_only: true });
    assert.equal(num(left.count), 0);
  });

  test('Maintenance.Status', async () => {
    const st = await unary(c.maintenance, 'Status', {});
    assert.match(st.version, /^3\.\d+\.\d+/);
    assert.ok(num(st.dbSize) > 0);
    assert.equal(big(st.leader), memberId, 'single member is the leader');
    assert.equal(big(st.header?.member_id), memberId);
    assert.ok(num(st.raftIndex) > 0);
    assert.ok(num(st.raftTerm) >= 1);
    assert.ok(num(st.raftAppliedIndex) > 0);
    assert.ok(num(st.dbSizeInUse) > 0);
    assert.equal(st.isLearner, false);
    assert.deepEqual(st.errors, []);
  });

  test('Cluster.MemberList', async () => {
    const e = etcd as EtcdHandle;
    const list = await unary(c.cluster, 'MemberList', {});
    assert.equal(list.members.length, 1);
    const m = list.members[0] as etcdserverpb.Member.$Properties;
    assert.equal(m.name, 'default');
    assert.equal(big(m.ID), memberId);
    assert.deepEqual(m.peerURLs, [`http://127.0.0.1:${e.peerPort}`]);
    assert.deepEqual(m.clientURLs, [e.endpoint]);
    assert.ok(!m.isLearner);
  });

  test('Health.Check and error statuses', async () => {
    const h = await unary(c.health, 'Check', { service: '' });
    assert.equal(h.status, 1 /* SERVING */);

    // 3.5+ RPCs are unknown to etcd 3.4; our unimplementedHandlers() use the same wording.
    const st = await unary(c.maintenance, 'Status', {});
    if (st.version.startsWith('3.4.')) {
      await expectGrpcError(
        unary(c.auth, 'AuthStatus', {}),
        grpc.status.UNIMPLEMENTED,
        'unknown method AuthStatus for service etcdserverpb.Auth',
      );
    }

    await expectGrpcError(unary(c.kv, 'Put', { key: bytes(''), value: bytes('x') }), grpc.status.INVALID_ARGUMENT, 'etcdserver: key is not provided');

    const put = await unary(c.kv, 'Put', { key: bytes('c'), value: bytes('1') });
    const rev = num(put.header?.revision);
    await unary(c.kv, 'Compact', { revision: rev, physical: true });
    await expectGrpcError(
      unary(c.kv, 'Range', { key: bytes('c'), revision: rev - 1 }),
      grpc.status.OUT_OF_RANGE,
      'etcdserver: mvcc: required revision has been compacted',
    );
    await expectGrpcError(
      unary(c.kv, 'Range', { key: bytes('c'), revision: rev + 100 }),
      grpc.status.OUT_OF_RANGE,
      'etcdserver: mvcc: required revision is a future revision',
    );
  });
});

describe('services.ts definitions', () => {
  test('table covers every service with the right paths and streaming flags', () => {
    assert.deepEqual([...serviceNames].sort(), [
      'etcdserverpb.Auth',
      'etcdserverpb.Cluster',
      'etcdserverpb.KV',
      'etcdserverpb.Lease',
      'etcdserverpb.Maintenance',
      'etcdserverpb.Watch',
      'grpc.health.v1.Health',
      'v3electionpb.Election',
      'v3lockpb.Lock',
    ]);
    for (const name of serviceNames) {
      for (const [method, def] of Object.entries(services[name])) {
        assert.equal(def.path, `/${name}/${method}`);
      }
    }
    const flags = (s: keyof typeof services, m: string): [boolean, boolean] => {
      const d = services[s][m];
      assert.ok(d, `${s}/${m} defined`);
      return [d.requestStream, d.responseStream];
    };
    assert.deepEqual(flags('etcdserverpb.KV', 'Range'), [false, false]);
    assert.deepEqual(flags('etcdserverpb.Watch', 'Watch'), [true, true]);
    assert.deepEqual(flags('etcdserverpb.Lease', 'LeaseKeepAlive'), [true, true]);
    assert.deepEqual(flags('etcdserverpb.Maintenance', 'Snapshot'), [false, true]);
    assert.deepEqual(flags('v3electionpb.Election', 'Observe'), [false, true]);
    assert.deepEqual(flags('grpc.health.v1.Health', 'Watch'), [false, true]);
    assert.equal(methodNames('etcdserverpb.Auth').length, 17);
    assert.equal(methodNames('etcdserverpb.Maintenance').length, 8);
    assert.equal(isRawResponse('etcdserverpb.KV', 'Range'), true);
    assert.equal(isRawResponse('etcdserverpb.KV', 'Compact'), false);
  });

  test('local server: raw responses pass through, missing methods are UNIMPLEMENTED', async (t) => {
    const server = new grpc.Server();
    const rangeBody = {
      header: { revision: 42, member_id: long(2n ** 64n - 1n, true) },
      kvs: [{ key: bytes('k'), value: bytes('v'), create_revision: 3, mod_revision: 4, version: 2 }],
      count: 1,
    };
    const preEncoded = encodeResponse('etcdserverpb.KV', 'Range', rangeBody);
    addService(server, 'etcdserverpb.KV', {
      Range: (call, callback) => {
        // raw mode: hand over bytes; otherwise a plain object is encoded
        if (str(call.request.key) === 'raw') callback(null, new Uint8Array(preEncoded));
        else callback(null, rangeBody);
      },
    });
    server.addService(WatchService, unimplementedHandlers(WatchService));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    t.after(() => server.forceShutdown());

    const kv = connect('etcdserverpb.KV', `127.0.0.1:${port}`);
    const watch = connect('etcdserverpb.Watch', `127.0.0.1:${port}`);
    t.after(() => {
      kv.close();
      watch.close();
    });

    for (const key of ['raw', 'encoded']) {
      const res = await unary(kv, 'Range', { key: bytes(key) });
      assert.equal(num(res.header?.revision), 42);
      assert.equal(big(res.header?.member_id), 2n ** 64n - 1n, 'uint64 keeps full precision');
      assert.equal(str(res.kvs[0]?.value), 'v');
      assert.equal(num(res.kvs[0]?.version), 2);
      assert.equal(num(res.count), 1);
    }

    await expectGrpcError(
      unary(kv, 'Put', { key: bytes('k') }),
      grpc.status.UNIMPLEMENTED,
      'unknown method Put for service etcdserverpb.KV',
    );

    const { call, reader } = openStream(watch, 'Watch');
    call.write({ create_request: { key: bytes('k') } });
    await assert.rejects(reader.next(), (err: unknown) => {
      assert.ok(isServiceError(err));
      assert.equal(err.code, grpc.status.UNIMPLEMENTED);
      assert.equal(err.details, 'unknown method Watch for service etcdserverpb.Watch');
      return true;
    });
    call.end();
  });
});
