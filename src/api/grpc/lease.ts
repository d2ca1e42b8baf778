// etcdserverpb.Lease over gRPC (etcd: v3rpc/lease.go). Grant and revoke go through the log (the
// storage worker answers); keep-alive and the remaining TTL are the leader's lessor, which the
// server asks on any member (EtcdServer.leaseRenew, leaseTimeToLive); the lease list is local.
import * as grpc from '@grpc/grpc-js';
import { PermType } from '../../auth/auth_store';
import type { Caller } from '../../auth/request_checks';
import Long from 'long';
import { etcdserverpb } from '../../gen/proto';
import { EtcdServer } from '../../server/etcd_server';
import { ErrorCode } from '../../util/errors';
import { grpcStatus } from './errors';

type Callback = grpc.sendUnaryData<Uint8Array>;
type Call<T> = grpc.ServerUnaryCall<T, Uint8Array>;

function header(server: EtcdServer): etcdserverpb.IResponseHeader {
  return { cluster_id: server.clusterId, member_id: server.memberId, revision: server.currentRev, raft_term: server.raftTerm() };
}

/** One keep-alive of a stream, answered (done) or not yet. */
interface KeepAliveSlot {
  done: boolean;
  response: Uint8Array | null;
  error: Partial<grpc.StatusObject> | null;
}

export function leaseHandlers(server: EtcdServer): grpc.UntypedServiceImplementation {
  /** The caller (null: auth disabled); the request gate refused invalid tokens already. */
  const callerOf = (call: { metadata: grpc.Metadata }): Caller | null => {
    try {
      return server.auth.callerOfCall(call);
    } catch {
      return { user: '', revision: 0 }; // expired since the gate: judged as no user
    }
  };
  return {
    LeaseGrant(call: Call<etcdserverpb.LeaseGrantRequest>, callback: Callback): void {
      const r = call.request;
      const id = Long.fromValue(r.ID ?? 0);
      const code = server.propose({ lease_grant: { TTL: r.TTL, ID: id.isZero() ? server.lessor.newId() : id } }, callback, callerOf(call));
      if (code !== 0) callback(grpcStatus(code));
    },
    LeaseRevoke(call: Call<etcdserverpb.LeaseRevokeRequest>, callback: Callback): void {
      // WRITE on every attached key, judged at apply (auth/request_checks.ts).
      const code = server.propose({ lease_revoke: { ID: call.request.ID } }, callback, callerOf(call));
      if (code !== 0) callback(grpcStatus(code));
    },
    LeaseTimeToLive(call: Call<etcdserverpb.LeaseTimeToLiveRequest>, callback: Callback): void {
      const r = call.request;
      server.leaseTimeToLive(etcdserverpb.LeaseTimeToLiveRequest.encode(r).finish(), (code, response) => {
        // etcd answers an unknown lease with TTL -1, not an error.
        if (code === ErrorCode.LeaseNotFound) {
          callback(null, etcdserverpb.LeaseTimeToLiveResponse.encode({ header: header(server), ID: Long.fromValue(r.ID ?? 0), TTL: -1 }).finish());
          return;
        }
        if (code !== 0) return callback(grpcStatus(code));
        // The leader answered (maybe another member): the header is this member's (etcd hdr.fill).
        const resp = etcdserverpb.LeaseTimeToLiveResponse.decode(response);
        resp.header = etcdserverpb.ResponseHeader.fromObject(header(server));
        // Only the keys the caller may read (GHSA-3p4g-rcw5-8298: etcd listed them all).
        const caller = callerOf(call);
        if (caller !== null && resp.keys.length > 0) {
          const store = server.auth.store;
          resp.keys = resp.keys.filter((k) => {
            try {
              store.checkOp(caller.user, caller.revision, Buffer.from(k), Buffer.alloc(0), PermType.READ);
              return true;
            } catch {
              return false;
            }
          });
        }
        callback(null, etcdserverpb.LeaseTimeToLiveResponse.encode(resp).finish());
      });
    },
    LeaseLeases(_call: Call<etcdserverpb.LeaseLeasesRequest>, callback: Callback): void {
      callback(null, etcdserverpb.LeaseLeasesResponse.encode({
        header: header(server), leases: server.lessor.ids().map((ID) => ({ ID })),
      }).finish());
    },
    LeaseKeepAlive(call: grpc.ServerDuplexStream<etcdserverpb.LeaseKeepAliveRequest, Uint8Array>): void {
      call.on('data', (req: etcdserverpb.LeaseKeepAliveRequest) => {
        try {
          keepAlive(req);
        } catch (err) {
          // Client input must never stop the server: this stream ends, the others go on.
          call.emit('error', { code: grpc.status.INTERNAL, details: `etcdserver: ${(err as Error).message}` });
        }
      });
      // Answers leave in request order, as etcd's one-at-a-time loop sends them, though renewals
      // finish out of order (a checkpointed lease is renewed through the log, an unknown one at
      // once; a follower forwards each to the leader). The first error ends the stream.
      const pending: KeepAliveSlot[] = [];
      const flush = (): void => {
        while (pending.length > 0 && pending[0]!.done) {
          const slot = pending.shift()!;
          if (slot.error !== null) {
            pending.length = 0;
            call.emit('error', slot.error);
            return;
          }
          call.write(slot.response!);
        }
      };
      const keepAlive = (req: etcdserverpb.LeaseKeepAliveRequest): void => {
        if (!(req instanceof etcdserverpb.LeaseKeepAliveRequest)) {
          call.emit('error', (req as { status?: Partial<grpc.StatusObject> }).status ?? { code: grpc.status.INVALID_ARGUMENT });
          return;
        }
        // The leader renews; any other member asks the leader (etcd LeaseRenew). An unknown
        // lease is answered TTL 0, not an error.
        const slot: KeepAliveSlot = { done: false, response: null, error: null };
        pending.push(slot);
        server.leaseRenew(Long.fromValue(req.ID ?? 0), (code, ttl) => {
          slot.done = true;
          if (code !== 0) slot.error = grpcStatus(code);
          else slot.response = etcdserverpb.LeaseKeepAliveResponse.encode({ header: header(server), ID: req.ID, TTL: ttl }).finish();
          flush();
        });
      };
      call.on('end', () => call.end());
    },
  };
}
