// etcdserverpb.Lease over gRPC (etcd: v3rpc/lease.go, etcdserver/v3_server.go). Grant and
// revoke go through the log (the storage worker answers); keep-alive, leases and the remaining
// TTL are the leader's lessor (main thread), as in etcd; TimeToLive asks the storage worker for
// the attached keys and adds the remaining TTL here.
import * as grpc from '@grpc/grpc-js';
import Long from 'long';
import { etcdserverpb } from '../../gen/proto';
import { EtcdServer, InternalWaiter } from '../../server/etcd_server';
import { ReadKind } from '../../workers/protocol';
import { ErrorCode } from '../../util/errors';
import { grpcStatus } from './errors';
import { monotonicNowMs } from '../../util/clock';

type Callback = grpc.sendUnaryData<Uint8Array>;
type Call<T> = grpc.ServerUnaryCall<T, Uint8Array>;

function header(server: EtcdServer): etcdserverpb.IResponseHeader {
  return { cluster_id: server.clusterId, member_id: server.memberId, revision: server.currentRev, raft_term: server.raftTerm() };
}

export function leaseHandlers(server: EtcdServer): grpc.UntypedServiceImplementation {
  return {
    LeaseGrant(call: Call<etcdserverpb.LeaseGrantRequest>, callback: Callback): void {
      const r = call.request;
      const id = Long.fromValue(r.ID ?? 0);
      const code = server.propose({ lease_grant: { TTL: r.TTL, ID: id.isZero() ? server.lessor.newId() : id } }, callback);
      if (code !== 0) callback(grpcStatus(code));
    },
    LeaseRevoke(call: Call<etcdserverpb.LeaseRevokeRequest>, callback: Callback): void {
      const code = server.propose({ lease_revoke: { ID: call.request.ID } }, callback);
      if (code !== 0) callback(grpcStatus(code));
    },
    LeaseTimeToLive(call: Call<etcdserverpb.LeaseTimeToLiveRequest>, callback: Callback): void {
      const r = call.request;
      const id = Long.fromValue(r.ID ?? 0);
      const waiter = new InternalWaiter((code, response) => {
        const remaining = server.lessor.remainingSeconds(id, monotonicNowMs());
        if (code === ErrorCode.LeaseNotFound || (code === 0 && remaining === null)) {
          // etcd answers an unknown lease with TTL -1, not an error.
          callback(null, etcdserverpb.LeaseTimeToLiveResponse.encode({ header: header(server), ID: id, TTL: -1 }).finish());
          return;
        }
        if (code !== 0) return callback(grpcStatus(code));
        const resp = etcdserverpb.LeaseTimeToLiveResponse.decode(response);
        resp.TTL = Long.fromNumber(remaining!);
        callback(null, etcdserverpb.LeaseTimeToLiveResponse.encode(resp).finish());
      });
      const code = server.read(ReadKind.LeaseTimeToLive, etcdserverpb.LeaseTimeToLiveRequest.encode(r).finish(), false, waiter);
      if (code !== 0) callback(grpcStatus(code));
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
      const keepAlive = (req: etcdserverpb.LeaseKeepAliveRequest): void => {
        if (!(req instanceof etcdserverpb.LeaseKeepAliveRequest)) {
          call.emit('error', (req as { status?: Partial<grpc.StatusObject> }).status ?? { code: grpc.status.INVALID_ARGUMENT });
          return;
        }
        if (!server.isLeader()) {
          call.emit('error', grpcStatus(ErrorCode.NoLeader));
          return;
        }
        // etcd 3.5: the leader renews once it has applied all it committed, so that a lease
        // whose grant was acknowledged by any member is known here.
        if (server.committedIsApplied()) {
          renew(req);
          return;
        }
        server.whenCommittedApplied((code) => {
          if (code !== 0) call.emit('error', grpcStatus(code));
          else renew(req);
        });
      };
      const renew = (req: etcdserverpb.LeaseKeepAliveRequest): void => {
        // etcd: an unknown (or expired) lease is answered with TTL 0, not an error.
        const id = req.ID ?? 0;
        const ttl = server.lessor.renew(id, monotonicNowMs());
        if (ttl === 0 || !server.lessor.needsCheckpointClear(id)) {
          call.write(etcdserverpb.LeaseKeepAliveResponse.encode({ header: header(server), ID: req.ID, TTL: ttl }).finish());
          return;
        }
        // The renewal clears the checkpointed remaining TTL through the log first, so that an
        // acknowledged keep-alive survives a restart (etcd 3.6 Renew).
        const answer = (): void => {
          call.write(etcdserverpb.LeaseKeepAliveResponse.encode({ header: header(server), ID: req.ID, TTL: ttl }).finish());
        };
        const code = server.propose({ lease_checkpoint: { checkpoints: [{ ID: id, remaining_TTL: 0 }] } }, new InternalWaiter(answer));
        if (code !== 0) call.emit('error', grpcStatus(code));
      };
      call.on('end', () => call.end());
    },
  };
}
