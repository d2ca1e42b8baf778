// etcdserverpb.KV over gRPC (etcd: v3rpc/key.go): validate, hand to the server, answer with
// the bytes the storage worker encoded. No response is encoded on the main thread.
import * as grpc from '@grpc/grpc-js';
import { etcdserverpb } from '../../gen/proto';
import { EtcdServer } from '../../server/etcd_server';
import { ReadKind } from '../../workers/protocol';
import { ErrorCode } from '../../util/errors';
import { FailpointError, failpointsEnabled, failpointValue } from '../../util/failpoints';
import { grpcStatus } from './errors';
import { checkDeleteRequest, checkIntervals, checkPutRequest, checkRangeRequest, checkTxnRequest } from './validate';
import { ConcordError } from '../../util/errors';
import { checkRange } from '../../auth/request_checks';
import type { Caller } from '../../auth/request_checks';

type Callback = grpc.sendUnaryData<Uint8Array>;
type Call<T> = grpc.ServerUnaryCall<T, Uint8Array>;

/** Failpoint kvPutThrow=<key> (util/failpoints.ts): a Put of that key throws, as a bug would. */
function putFailpoint(r: etcdserverpb.PutRequest): void {
  const key = failpointValue('kvPutThrow');
  if (key === undefined || !r.key) return;
  if (Buffer.from(r.key.buffer, r.key.byteOffset, r.key.length).toString('utf8') === key) {
    throw new FailpointError('kvPutThrow');
  }
}

/**
 * The caller of a call (null: auth disabled), or undefined once an error was answered (an
 * unknown or expired token). One test of a boolean when auth is disabled.
 */
function callerOf(server: EtcdServer, call: { metadata: grpc.Metadata }, callback: Callback): Caller | null | undefined {
  if (!server.auth.enabled) return null;
  try {
    return server.auth.callerOfCall(call);
  } catch (err) {
    if (!(err instanceof ConcordError)) throw err;
    callback(grpcStatus(err.code));
    return undefined;
  }
}

export function kvHandlers(server: EtcdServer, txnOpsMax: number): grpc.UntypedServiceImplementation {
  return {
    Range(call: Call<etcdserverpb.RangeRequest>, callback: Callback): void {
      const r = call.request;
      const bad = checkRangeRequest(r);
      if (bad !== 0) return callback(grpcStatus(bad));
      const caller = callerOf(server, call, callback);
      if (caller === undefined) return;
      if (caller !== null) {
        // Reads are judged on this member's copy of the auth store, when they arrive.
        try {
          checkRange(server.auth.store, caller, r);
        } catch (err) {
          if (!(err instanceof ConcordError)) throw err;
          return callback(grpcStatus(err.code));
        }
      }
      const bytes = etcdserverpb.RangeRequest.encode(r).finish();
      const code = server.read(ReadKind.Range, bytes, r.serializable === true, callback);
      if (code !== 0) callback(grpcStatus(code));
    },
    Put(call: Call<etcdserverpb.PutRequest>, callback: Callback): void {
      if (failpointsEnabled) putFailpoint(call.request);
      const bad = checkPutRequest(call.request);
      if (bad !== 0) return callback(grpcStatus(bad));
      const caller = callerOf(server, call, callback);
      if (caller === undefined) return;
      const code = server.propose({ put: call.request }, callback, caller);
      if (code !== 0) callback(grpcStatus(code));
    },
    DeleteRange(call: Call<etcdserverpb.DeleteRangeRequest>, callback: Callback): void {
      const bad = checkDeleteRequest(call.request);
      if (bad !== 0) return callback(grpcStatus(bad));
      const caller = callerOf(server, call, callback);
      if (caller === undefined) return;
      const code = server.propose({ delete_range: call.request }, callback, caller);
      if (code !== 0) callback(grpcStatus(code));
    },
    Txn(call: Call<etcdserverpb.TxnRequest>, callback: Callback): void {
      const r = call.request;
      const bad = checkTxnRequest(r, txnOpsMax);
      if (bad !== 0) return callback(grpcStatus(bad));
      if (checkIntervals(r.success ?? []) === null || checkIntervals(r.failure ?? []) === null) {
        return callback(grpcStatus(ErrorCode.DuplicateKey));
      }
      const caller = callerOf(server, call, callback);
      if (caller === undefined) return;
      const code = server.propose({ txn: r }, callback, caller);
      if (code !== 0) callback(grpcStatus(code));
    },
    Compact(call: Call<etcdserverpb.CompactionRequest>, callback: Callback): void {
      const caller = callerOf(server, call, callback);
      if (caller === undefined) return;
      const code = server.propose({ compaction: call.request }, callback, caller);
      if (code !== 0) callback(grpcStatus(code));
    },
  };
}
