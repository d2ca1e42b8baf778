// What each RPC needs when auth is enabled: one row per method of every service concord serves.
// The request gate (api/grpc/request_gate.ts) applies User and Admin rows, and the key rows whose
// keys the request names, before the handler runs, on this member's copy of the auth store;
// writes are judged again at apply (storage_core checkPermission) against the store as of their
// place in the log. A method missing here is refused (test/auth/rpc_walk.test.ts walks them all).
//
// Beyond etcd 3.4, as the fixed releases do (CVE-2026-33413 and 3.6): MemberList, Alarm, every
// Lease RPC and Compact are checked; Status and the health service stay public, as in etcd.
import { etcdserverpb, v3electionpb, v3lockpb } from '../gen/proto';
import { PermType } from './auth_store';

export const enum Need {
  /** Anyone, even without a token (Authenticate, health, Status). */
  Public,
  /** An authenticated user (a valid token). */
  User,
  /** A user with the root role. */
  Admin,
  /** Permissions on the keys the request names (`keys` below). */
  Keys,
  /** Judged where the request is handled (KV writes, LeaseRevoke and Auth requests at apply,
   * Watch at each create): here only a token sent must be valid. */
  Handler,
}

export interface KeyNeed {
  key: Uint8Array;
  rangeEnd: Uint8Array;
  type: number; // PermType
}

export interface RpcRule {
  need: Need;
  /** Need.Keys: the key ranges the decoded request touches. */
  keys?(request: unknown): KeyNeed[];
}

const empty = new Uint8Array(0);

/** The range of every key under `prefix` (etcd's GetPrefixRangeEnd). */
function prefixEnd(prefix: Uint8Array): Uint8Array {
  const end = Uint8Array.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return new Uint8Array([0]);
}

/** Read and write on every key under `name/`... as the lock and election keys are made. */
function underName(name: Uint8Array | null | undefined, type: number): KeyNeed[] {
  const n = name ?? empty;
  return [{ key: n, rangeEnd: prefixEnd(n), type }];
}

export const rpcRules: Record<string, RpcRule> = {
  '/etcdserverpb.KV/Range': { need: Need.Keys, keys: (r) => [{ key: (r as etcdserverpb.IRangeRequest).key ?? empty, rangeEnd: (r as etcdserverpb.IRangeRequest).range_end ?? empty, type: PermType.READ }] },
  '/etcdserverpb.KV/Put': { need: Need.Handler },
  '/etcdserverpb.KV/DeleteRange': { need: Need.Handler },
  '/etcdserverpb.KV/Txn': { need: Need.Handler },
  '/etcdserverpb.KV/Compact': { need: Need.Admin },
  '/etcdserverpb.Watch/Watch': { need: Need.Handler },
  '/etcdserverpb.Lease/LeaseGrant': { need: Need.User },
  '/etcdserverpb.Lease/LeaseRevoke': { need: Need.Handler },
  '/etcdserverpb.Lease/LeaseKeepAlive': { need: Need.User },
  // Any user; the keys it may not read are left out of the answer (lease.ts).
  '/etcdserverpb.Lease/LeaseTimeToLive': { need: Need.User },
  '/etcdserverpb.Lease/LeaseLeases': { need: Need.User },
  '/etcdserverpb.Cluster/MemberAdd': { need: Need.Admin },
  '/etcdserverpb.Cluster/MemberRemove': { need: Need.Admin },
  '/etcdserverpb.Cluster/MemberUpdate': { need: Need.Admin },
  '/etcdserverpb.Cluster/MemberList': { need: Need.User },
  '/etcdserverpb.Cluster/MemberPromote': { need: Need.Admin },
  // GET: any user; ACTIVATE and DEACTIVATE: root, judged at apply.
  '/etcdserverpb.Maintenance/Alarm': { need: Need.User },
  '/etcdserverpb.Maintenance/Status': { need: Need.Public },
  '/etcdserverpb.Maintenance/Defragment': { need: Need.Admin },
  '/etcdserverpb.Maintenance/Hash': { need: Need.Admin },
  '/etcdserverpb.Maintenance/HashKV': { need: Need.Admin },
  '/etcdserverpb.Maintenance/Snapshot': { need: Need.Admin },
  '/etcdserverpb.Maintenance/MoveLeader': { need: Need.Admin },
  '/etcdserverpb.Maintenance/Downgrade': { need: Need.Admin },
  '/etcdserverpb.Auth/AuthEnable': { need: Need.Handler },
  '/etcdserverpb.Auth/AuthDisable': { need: Need.Handler },
  '/etcdserverpb.Auth/AuthStatus': { need: Need.Public },
  '/etcdserverpb.Auth/Authenticate': { need: Need.Public },
  '/etcdserverpb.Auth/UserAdd': { need: Need.Handler },
  '/etcdserverpb.Auth/UserGet': { need: Need.Handler },
  '/etcdserverpb.Auth/UserList': { need: Need.Handler },
  '/etcdserverpb.Auth/UserDelete': { need: Need.Handler },
  '/etcdserverpb.Auth/UserChangePassword': { need: Need.Handler },
  '/etcdserverpb.Auth/UserGrantRole': { need: Need.Handler },
  '/etcdserverpb.Auth/UserRevokeRole': { need: Need.Handler },
  '/etcdserverpb.Auth/RoleAdd': { need: Need.Handler },
  '/etcdserverpb.Auth/RoleGet': { need: Need.Handler },
  '/etcdserverpb.Auth/RoleList': { need: Need.Handler },
  '/etcdserverpb.Auth/RoleDelete': { need: Need.Handler },
  '/etcdserverpb.Auth/RoleGrantPermission': { need: Need.Handler },
  '/etcdserverpb.Auth/RoleRevokePermission': { need: Need.Handler },
  // Lock and Election act on keys under the name: read and write there (etcd's v3lock and
  // v3election run their KV requests with the caller's token).
  '/v3lockpb.Lock/Lock': { need: Need.Keys, keys: (r) => [...underName((r as v3lockpb.ILockRequest).name, PermType.READ), ...underName((r as v3lockpb.ILockRequest).name, PermType.WRITE)] },
  '/v3lockpb.Lock/Unlock': { need: Need.Keys, keys: (r) => [{ key: (r as v3lockpb.IUnlockRequest).key ?? empty, rangeEnd: empty, type: PermType.WRITE }] },
  '/v3electionpb.Election/Campaign': { need: Need.Keys, keys: (r) => [...underName((r as v3electionpb.ICampaignRequest).name, PermType.READ), ...underName((r as v3electionpb.ICampaignRequest).name, PermType.WRITE)] },
  '/v3electionpb.Election/Proclaim': { need: Need.Keys, keys: (r) => [{ key: (r as v3electionpb.IProclaimRequest).leader?.key ?? empty, rangeEnd: empty, type: PermType.WRITE }] },
  '/v3electionpb.Election/Leader': { need: Need.Keys, keys: (r) => underName((r as v3electionpb.ILeaderRequest).name, PermType.READ) },
  '/v3electionpb.Election/Observe': { need: Need.Keys, keys: (r) => underName((r as v3electionpb.ILeaderRequest).name, PermType.READ) },
  '/v3electionpb.Election/Resign': { need: Need.Keys, keys: (r) => [{ key: (r as v3electionpb.IResignRequest).leader?.key ?? empty, rangeEnd: empty, type: PermType.WRITE }] },
  '/grpc.health.v1.Health/Check': { need: Need.Public },
  '/grpc.health.v1.Health/Watch': { need: Need.Public },
};
