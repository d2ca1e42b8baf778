// v3electionpb.Election (etcd: etcdserver/api/v3election + clientv3/concurrency Election),
// served in-process with the same keys and transactions: a candidate's key is
// `<name>/<lease hex>`, the leader is the key with the lowest create revision under `<name>/`,
// Campaign waits (waitDeletes) for every earlier candidate to go, Proclaim/Resign act only
// while the caller's key still has the create revision it won with.
import * as grpc from '@grpc/grpc-js';
import Long from 'long';
import { etcdserverpb, mvccpb, v3electionpb } from '../gen/proto';
import { EtcdServer } from '../server/etcd_server';
import { InternalClient } from './client';
import { callSignal, ConcurrencyError, leaseHex, sessionTtlSeconds, statusOf, waitDeletes } from './lock';
import { prefixEnd } from '../util/prefix_end';

type Callback = grpc.sendUnaryData<Uint8Array>;
type Call<T> = grpc.ServerUnaryCall<T, Uint8Array>;

const SortOrder = etcdserverpb.RangeRequest.SortOrder;
const SortTarget = etcdserverpb.RangeRequest.SortTarget;
const CompareResult = etcdserverpb.Compare.CompareResult;
const CompareTarget = etcdserverpb.Compare.CompareTarget;

const errNotLeader = (): ConcurrencyError => new ConcurrencyError('election: not leader');
const errNoLeader = (): ConcurrencyError => new ConcurrencyError('election: no leader');
/** etcd v3election: a request without its leader key. */
const errMissingLeaderKey = (): ConcurrencyError => new ConcurrencyError('"leader" field must be provided');

function firstCreated(pfx: Buffer): etcdserverpb.IRangeRequest {
  return { key: pfx, range_end: prefixEnd(pfx), sort_order: SortOrder.ASCEND, sort_target: SortTarget.CREATE, limit: 1 };
}

export function electionHandlers(server: EtcdServer): grpc.UntypedServiceImplementation {
  const client = new InternalClient(server);

  async function campaign(call: Call<v3electionpb.CampaignRequest>): Promise<Uint8Array> {
    const signal = callSignal(call as never);
    const r = call.request;
    const name = Buffer.from(r.name ?? []);
    let lease = Long.fromValue(r.lease ?? 0);
    if (lease.isZero()) lease = await client.leaseGrant(sessionTtlSeconds);
    const pfx = Buffer.concat([name, Buffer.from('/')]);
    const key = Buffer.concat([pfx, Buffer.from(leaseHex(lease))]);
    const value = Buffer.from(r.value ?? []);
    const resp = await client.txn({
      compare: [{ key, target: CompareTarget.CREATE, result: CompareResult.EQUAL, create_revision: 0 }],
      success: [{ request_put: { key, value, lease } }],
      failure: [{ request_range: { key } }],
    });
    let leaderRev = Number(resp.header!.revision);
    if (!resp.succeeded) {
      const kv = resp.responses[0]!.response_range!.kvs![0]!;
      leaderRev = Number(kv.create_revision);
      if (!Buffer.from(kv.value ?? []).equals(value)) {
        try {
          await proclaim(key, leaderRev, lease, value);
        } catch (err) {
          await resign(key, leaderRev).catch(() => undefined);
          throw err;
        }
      }
    }
    try {
      await waitDeletes(client, pfx, leaderRev - 1, signal);
    } catch (err) {
      await resign(key, leaderRev).catch(() => undefined);
      throw err;
    }
    return v3electionpb.CampaignResponse.encode({
      header: resp.header, leader: { name, key, rev: leaderRev, lease },
    }).finish();
  }

  async function proclaim(key: Buffer, rev: number, lease: Long, value: Buffer): Promise<etcdserverpb.IResponseHeader> {
    const resp = await client.txn({
      compare: [{ key, target: CompareTarget.CREATE, result: CompareResult.EQUAL, create_revision: rev }],
      success: [{ request_put: { key, value, lease } }],
    });
    if (!resp.succeeded) throw errNotLeader();
    return resp.header!;
  }

  async function resign(key: Buffer, rev: number): Promise<etcdserverpb.IResponseHeader> {
    const resp = await client.txn({
      compare: [{ key, target: CompareTarget.CREATE, result: CompareResult.EQUAL, create_revision: rev }],
      success: [{ request_delete_range: { key } }],
    });
    return resp.header!;
  }

  async function leader(name: Buffer): Promise<Uint8Array> {
    const pfx = Buffer.concat([name, Buffer.from('/')]);
    const resp = await client.range(firstCreated(pfx));
    if (resp.kvs.length === 0) throw errNoLeader();
    return v3electionpb.LeaderResponse.encode({ header: resp.header, kv: resp.kvs[0] }).finish();
  }

  /** concurrency Election.observe: the leader now, then each change, until the client goes. */
  async function observe(name: Buffer, send: (r: v3electionpb.ILeaderResponse) => void, signal: AbortSignal): Promise<void> {
    const pfx = Buffer.concat([name, Buffer.from('/')]);
    while (!signal.aborted) {
      const resp = await client.range(firstCreated(pfx));
      let kv: mvccpb.IKeyValue;
      let header: etcdserverpb.IResponseHeader;
      if (resp.kvs.length === 0) {
        // Wait for the first put under the prefix (a delete would make this spin).
        const got = await client.watch(pfx, prefixEnd(pfx), Number(resp.header!.revision), signal, (ev, h) =>
          ev.type === mvccpb.Event.EventType.PUT ? { kv: ev.kv!, header: { ...h, revision: ev.kv!.mod_revision } } : undefined);
        kv = got.kv;
        header = got.header;
      } else {
        kv = resp.kvs[0]!;
        header = resp.header!;
      }
      send({ header, kv });
      // Every put of the leader's key is a new value; its delete ends this leader.
      await client.watch(Buffer.from(kv.key!), null, Number(header.revision) + 1, signal, (ev, h) => {
        if (ev.type === mvccpb.Event.EventType.DELETE) return true;
        send({ header: h, kv: ev.kv! });
        return undefined;
      });
    }
  }

  return {
    Campaign(call: Call<v3electionpb.CampaignRequest>, callback: Callback): void {
      campaign(call).then((bytes) => callback(null, bytes), (err: unknown) => callback(statusOf(err)));
    },
    Proclaim(call: Call<v3electionpb.ProclaimRequest>, callback: Callback): void {
      const l = call.request.leader;
      if (!l) return callback(statusOf(errMissingLeaderKey()));
      // etcd resumes the election in a session on the leader's lease: lease 0 makes a new one.
      const lease = Long.fromValue(l.lease ?? 0);
      (lease.isZero() ? client.leaseGrant(sessionTtlSeconds) : Promise.resolve(lease)).then((id) =>
        proclaim(Buffer.from(l.key ?? []), Number(l.rev ?? 0), id, Buffer.from(call.request.value ?? []))).then(
        (header) => callback(null, v3electionpb.ProclaimResponse.encode({ header }).finish()),
        (err: unknown) => callback(statusOf(err)),
      );
    },
    Resign(call: Call<v3electionpb.ResignRequest>, callback: Callback): void {
      const l = call.request.leader;
      if (!l) return callback(statusOf(errMissingLeaderKey()));
      resign(Buffer.from(l.key ?? []), Number(l.rev ?? 0)).then(
        (header) => callback(null, v3electionpb.ResignResponse.encode({ header }).finish()),
        (err: unknown) => callback(statusOf(err)),
      );
    },
    Leader(call: Call<v3electionpb.LeaderRequest>, callback: Callback): void {
      leader(Buffer.from(call.request.name ?? [])).then((bytes) => callback(null, bytes), (err: unknown) => callback(statusOf(err)));
    },
    Observe(call: grpc.ServerWritableStream<v3electionpb.LeaderRequest, Uint8Array>): void {
      const signal = callSignal(call as never);
      observe(Buffer.from(call.request.name ?? []), (r) => call.write(v3electionpb.LeaderResponse.encode(r).finish()), signal).then(
        () => undefined,
        (err: unknown) => {
          if (!signal.aborted) call.emit('error', statusOf(err));
        },
      );
    },
  };
}
