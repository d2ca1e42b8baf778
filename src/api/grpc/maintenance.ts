// Maintenance.Status and Cluster.MemberList for the single member (etcd: v3rpc/maintenance.go,
// member.go), and the grpc health service etcd registers with an empty service name.
import * as grpc from '@grpc/grpc-js';
import { etcdserverpb, grpc as grpcpb } from '../../gen/proto';
import { EtcdServer } from '../../server/etcd_server';
import { grpcStatus } from './errors';

type Callback = grpc.sendUnaryData<Uint8Array>;

export function maintenanceHandlers(server: EtcdServer): grpc.UntypedServiceImplementation {
  return {
    Status(_call: grpc.ServerUnaryCall<unknown, Uint8Array>, callback: Callback): void {
      const code = server.status(callback);
      if (code !== 0) callback(grpcStatus(code));
    },
  };
}

export function clusterHandlers(server: EtcdServer): grpc.UntypedServiceImplementation {
  return {
    MemberList(_call: grpc.ServerUnaryCall<unknown, Uint8Array>, callback: Callback): void {
      const resp = etcdserverpb.MemberListResponse.encode({
        // etcd's cluster service header carries no revision (v3rpc/member.go: header()).
        header: {
          cluster_id: server.clusterId,
          member_id: server.memberId,
          raft_term: server.raftTerm(),
        },
        members: server.members().map((m) => ({
          ID: m.id, name: m.name, peerURLs: m.peerUrls, clientURLs: m.clientUrls, isLearner: m.isLearner,
        })),
      }).finish();
      callback(null, resp);
    },
  };
}

const ServingStatus = grpcpb.health.v1.HealthCheckResponse.ServingStatus;

export function healthHandlers(server: EtcdServer): grpc.UntypedServiceImplementation {
  return {
    Check(call: grpc.ServerUnaryCall<grpcpb.health.v1.HealthCheckRequest, unknown>,
      callback: grpc.sendUnaryData<unknown>): void {
      const service = call.request.service ?? '';
      if (service !== '') {
        callback({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
        return;
      }
      callback(null, { status: server.isLeader() ? ServingStatus.SERVING : ServingStatus.NOT_SERVING });
    },
  };
}
