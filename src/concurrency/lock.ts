// v3lockpb.Lock (etcd: etcdserver/api/v3lock + clientv3/concurrency Mutex), served in-process.
//
// Lock(name, lease): the waiter's key is `<name>/<lease id in hex>`, put with the lease if it
// does not exist yet; the lock is held by the key with the lowest create revision under
// `<name>/`, so waiters are served in the order they arrived. A waiter waits for the deletion
// of every key created before its own (the one just before it, again and again: waitDeletes).
// Before answering it checks that its own key still exists: a waiter whose lease expired while
// it waited never gets the lock (etcd 3.5's fix of etcd issue #11456; 3.4 grants it).
// Without a lease a session lease is granted (TTL 60 s, concurrency's default) and not kept
// alive, as etcd's server does (the session is orphaned).
import * as grpc from '@grpc/grpc-js';
import Long from 'long';
import { etcdserverpb, v3lockpb } from '../gen/proto';
import { EtcdServer } from '../server/etcd_server';
import { ConcordError, ErrorCode } from '../util/errors';
import { grpcStatus } from '../api/grpc/errors';
import { InternalClient } from './client';
import { prefixEnd } from '../util/prefix_end';

type Callback = grpc.sendUnaryData<Uint8Array>;
type Call<T> = grpc.ServerUnaryCall<T, Uint8Array> & { on?(event: string, f: () => void): unknown; cancelled?: boolean };

/** concurrency.defaultSessionTTL. */
export const sessionTtlSeconds = 60;

const SortOrder = etcdserverpb.RangeRequest.SortOrder;
const SortTarget = etcdserverpb.RangeRequest.SortTarget;
const CompareResult = etcdserverpb.Compare.CompareResult;
const CompareTarget = etcdserverpb.Compare.CompareTarget;

/** A plain Go error from etcd's concurrency package: grpc-go sends it as UNKNOWN. */
export class ConcurrencyError extends Error {}

/**
 * Maps an error to the status etcd's server answers with: its lock and election servers call
 * etcd through a client and return that client's error as a plain error, so every failure is
 * UNKNOWN with etcd's message ("etcdserver: requested lease not found", "election: no leader").
 */
export function statusOf(err: unknown): Partial<grpc.StatusObject> {
  if (err instanceof ConcordError) return { code: grpc.status.UNKNOWN, details: grpcStatus(err.code).details ?? err.message };
  return { code: grpc.status.UNKNOWN, details: (err as Error).message };
}

/** Aborts when the client goes away (etcd: the request context is cancelled). */
export function callSignal(call: { on?(event: string, f: () => void): unknown }): AbortSignal {
  const ac = new AbortController();
  call.on?.('cancelled', () => ac.abort());
  return ac.signal;
}

/** The lease id as concurrency formats it in keys: lower-case hex, no padding. */
export function leaseHex(id: Long): string {
  return Long.fromValue(id).toUnsigned().toString(16);
}

/**
 * concurrency.waitDeletes: waits until no key under `prefix` created at or before
 * `maxCreateRev` is left; returns the header of the read that found none.
 */
export async function waitDeletes(client: InternalClient, prefix: Buffer, maxCreateRev: number,
  signal: AbortSignal): Promise<etcdserverpb.IResponseHeader> {
  for (;;) {
    const resp = await client.range({
      key: prefix, range_end: prefixEnd(prefix), sort_order: SortOrder.DESCEND, sort_target: SortTarget.CREATE,
      limit: 1, max_create_revision: maxCreateRev,
    });
    if (resp.kvs.length === 0) return resp.header!;
    await client.waitDelete(resp.kvs[0]!.key!, Number(resp.header!.revision), signal);
  }
}

export function lockHandlers(server: EtcdServer): grpc.UntypedServiceImplementation {
  const client = new InternalClient(server);

  async function lock(call: Call<v3lockpb.LockRequest>): Promise<Uint8Array> {
    const signal = callSignal(call);
    const name = Buffer.from(call.request.name ?? []);
    let lease = Long.fromValue(call.request.lease ?? 0);
    if (lease.isZero()) lease = await client.leaseGrant(sessionTtlSeconds);
    const pfx = Buffer.concat([name, Buffer.from('/')]);
    const myKey = Buffer.concat([pfx, Buffer.from(leaseHex(lease))]);
    const resp = await client.txn({
      compare: [{ key: myKey, target: CompareTarget.CREATE, result: CompareResult.EQUAL, create_revision: 0 }],
      success: [
        { request_put: { key: myKey, value: Buffer.alloc(0), lease } },
        { request_range: { key: pfx, range_end: prefixEnd(pfx), sort_order: SortOrder.ASCEND, sort_target: SortTarget.CREATE, limit: 1 } },
      ],
      failure: [
        { request_range: { key: myKey } },
        { request_range: { key: pfx, range_end: prefixEnd(pfx), sort_order: SortOrder.ASCEND, sort_target: SortTarget.CREATE, limit: 1 } },
      ],
    });
    let myRev = Number(resp.header!.revision);
    if (!resp.succeeded) myRev = Number(resp.responses[0]!.response_range!.kvs![0]!.create_revision);
    const owner = resp.responses[1]!.response_range!.kvs ?? [];
    let header: etcdserverpb.IResponseHeader = resp.header!;
    if (owner.length > 0 && Number(owner[0]!.create_revision) !== myRev) {
      try {
        header = await waitDeletes(client, pfx, myRev - 1, signal);
        // etcd 3.5: the waiter's own key must still be there (its lease may have expired).
        const mine = await client.range({ key: myKey });
        if (mine.kvs.length === 0) throw new ConcurrencyError('mutex: session is expired');
      } catch (err) {
        // etcd: a wait that fails gives the key up (Mutex.Unlock).
        await client.deleteRange({ key: myKey }).catch(() => undefined);
        throw err;
      }
    }
    return v3lockpb.LockResponse.encode({ header, key: myKey }).finish();
  }

  return {
    Lock(call: Call<v3lockpb.LockRequest>, callback: Callback): void {
      lock(call).then((bytes) => callback(null, bytes), (err: unknown) => callback(statusOf(err)));
    },
    Unlock(call: Call<v3lockpb.UnlockRequest>, callback: Callback): void {
      const key = call.request.key ?? Buffer.alloc(0);
      if (key.length === 0) return callback(statusOf(new ConcordError(ErrorCode.EmptyKey, 'key is not provided')));
      client.deleteRange({ key }).then(
        (resp) => callback(null, v3lockpb.UnlockResponse.encode({ header: resp.header }).finish()),
        (err: unknown) => callback(statusOf(err)),
      );
    },
  };
}
