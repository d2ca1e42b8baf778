// The one table from concord's error codes to gRPC status codes and etcd's wire strings
// (etcd 3.4: etcdserver/api/v3rpc/rpctypes/error.go and util.go togRPCError). Clients map these
// strings back to typed errors, so they must match etcd's byte for byte.
import * as grpc from '@grpc/grpc-js';
import { ErrorCode } from '../../util/errors';

const S = grpc.status;

interface WireError { code: grpc.status; message: string }

const table = new Map<ErrorCode, WireError>([
  [ErrorCode.EmptyKey, { code: S.INVALID_ARGUMENT, message: 'etcdserver: key is not provided' }],
  [ErrorCode.KeyNotFound, { code: S.INVALID_ARGUMENT, message: 'etcdserver: key not found' }],
  [ErrorCode.ValueProvided, { code: S.INVALID_ARGUMENT, message: 'etcdserver: value is provided' }],
  [ErrorCode.LeaseProvided, { code: S.INVALID_ARGUMENT, message: 'etcdserver: lease is provided' }],
  // etcd 3.5 wording; etcd 3.4 has no such check and crashes on the requests it refuses
  // (validate.ts checkRangeRequest).
  [ErrorCode.InvalidSortOption, { code: S.INVALID_ARGUMENT, message: 'etcdserver: invalid sort option' }],
  [ErrorCode.TooManyOps, { code: S.INVALID_ARGUMENT, message: 'etcdserver: too many operations in txn request' }],
  [ErrorCode.DuplicateKey, { code: S.INVALID_ARGUMENT, message: 'etcdserver: duplicate key given in txn request' }],
  [ErrorCode.Compacted, { code: S.OUT_OF_RANGE, message: 'etcdserver: mvcc: required revision has been compacted' }],
  [ErrorCode.FutureRev, { code: S.OUT_OF_RANGE, message: 'etcdserver: mvcc: required revision is a future revision' }],
  [ErrorCode.NoSpace, { code: S.RESOURCE_EXHAUSTED, message: 'etcdserver: mvcc: database space exceeded' }],
  [ErrorCode.RequestTooLarge, { code: S.INVALID_ARGUMENT, message: 'etcdserver: request is too large' }],
  [ErrorCode.TooManyRequests, { code: S.RESOURCE_EXHAUSTED, message: 'etcdserver: too many requests' }],
  [ErrorCode.LeaseNotFound, { code: S.NOT_FOUND, message: 'etcdserver: requested lease not found' }],
  [ErrorCode.LeaseExist, { code: S.FAILED_PRECONDITION, message: 'etcdserver: lease already exists' }],
  [ErrorCode.LeaseTtlTooLarge, { code: S.OUT_OF_RANGE, message: 'etcdserver: too large lease TTL' }],
  [ErrorCode.NoLeader, { code: S.UNAVAILABLE, message: 'etcdserver: no leader' }],
  [ErrorCode.NotCapable, { code: S.UNAVAILABLE, message: 'etcdserver: not capable' }],
  [ErrorCode.Stopped, { code: S.UNAVAILABLE, message: 'etcdserver: server stopped' }],
  [ErrorCode.Timeout, { code: S.UNAVAILABLE, message: 'etcdserver: request timed out' }],
  // etcd passes raft's ErrProposalDropped through untranslated (codes.Unknown).
  [ErrorCode.ProposalDropped, { code: S.UNKNOWN, message: 'raft proposal dropped' }],
  [ErrorCode.MemberNotFound, { code: S.NOT_FOUND, message: 'etcdserver: member not found' }],
  [ErrorCode.PeerUrlExist, { code: S.FAILED_PRECONDITION, message: 'etcdserver: Peer URLs already exists' }],
  [ErrorCode.MemberBadUrls, { code: S.INVALID_ARGUMENT, message: 'etcdserver: given member URLs are invalid' }],
  [ErrorCode.NotEnoughStartedMembers, { code: S.FAILED_PRECONDITION, message: 'etcdserver: re-configuration failed due to not enough started members' }],
  [ErrorCode.MemberNotLearner, { code: S.FAILED_PRECONDITION, message: 'etcdserver: can only promote a learner member' }],
  [ErrorCode.LearnerNotReady, { code: S.FAILED_PRECONDITION, message: 'etcdserver: can only promote a learner member which is in sync with leader' }],
  [ErrorCode.TooManyLearners, { code: S.FAILED_PRECONDITION, message: 'etcdserver: too many learner members in cluster' }],
  [ErrorCode.NotLeader, { code: S.FAILED_PRECONDITION, message: 'etcdserver: not leader' }],
  [ErrorCode.BadLeaderTransferee, { code: S.FAILED_PRECONDITION, message: 'etcdserver: bad leader transferee' }],
  // Not in etcd's map: codes.Unknown with the text (togRPCError's default).
  [ErrorCode.LeaderTransferTimeout, { code: S.UNKNOWN, message: 'etcdserver: request timed out, leader transfer took too long' }],
  [ErrorCode.LeaderChanged, { code: S.UNAVAILABLE, message: 'etcdserver: leader changed' }],
  // A proposal that never reached raft (no leader for the whole request timeout): etcd returns
  // the context's error untranslated (codes.Unknown).
  [ErrorCode.DeadlineExceeded, { code: S.UNKNOWN, message: 'context deadline exceeded' }],
  [ErrorCode.TimeoutDueToLeaderFail, { code: S.UNAVAILABLE, message: 'etcdserver: request timed out, possibly due to previous leader failure' }],
  [ErrorCode.TimeoutWaitAppliedIndex, { code: S.UNAVAILABLE, message: 'etcdserver: request timed out, waiting for the applied index took too long' }],
  [ErrorCode.Unhealthy, { code: S.UNAVAILABLE, message: 'etcdserver: unhealthy cluster' }],
  [ErrorCode.NotSupportedForLearner, { code: S.UNAVAILABLE, message: 'etcdserver: rpc not supported for learner' }],
  [ErrorCode.PeerMalformed, { code: S.INTERNAL, message: 'etcdserver: malformed request between members' }],
  // etcd passes the backend's snapshot error through untranslated (codes.Unknown).
  [ErrorCode.BackupFailed, { code: S.UNKNOWN, message: 'etcdserver: snapshot failed' }],
  [ErrorCode.Corrupt, { code: S.DATA_LOSS, message: 'etcdserver: corrupt cluster' }],
  // concord's own (etcd has no such check): an unknown alarm action or type never reaches raft.
  [ErrorCode.AlarmUnknownAction, { code: S.INVALID_ARGUMENT, message: 'etcdserver: unknown alarm action' }],
  [ErrorCode.AlarmUnknownType, { code: S.INVALID_ARGUMENT, message: 'etcdserver: unknown alarm type' }],
  [ErrorCode.AuthRootUserNotExist, { code: S.FAILED_PRECONDITION, message: 'etcdserver: root user does not exist' }],
  [ErrorCode.AuthRootRoleNotExist, { code: S.FAILED_PRECONDITION, message: 'etcdserver: root user does not have root role' }],
  [ErrorCode.AuthUserAlreadyExist, { code: S.FAILED_PRECONDITION, message: 'etcdserver: user name already exists' }],
  [ErrorCode.AuthUserEmpty, { code: S.INVALID_ARGUMENT, message: 'etcdserver: user name is empty' }],
  [ErrorCode.AuthUserNotFound, { code: S.FAILED_PRECONDITION, message: 'etcdserver: user name not found' }],
  [ErrorCode.AuthRoleAlreadyExist, { code: S.FAILED_PRECONDITION, message: 'etcdserver: role name already exists' }],
  [ErrorCode.AuthRoleNotFound, { code: S.FAILED_PRECONDITION, message: 'etcdserver: role name not found' }],
  [ErrorCode.AuthRoleEmpty, { code: S.INVALID_ARGUMENT, message: 'etcdserver: role name is empty' }],
  [ErrorCode.AuthFailed, { code: S.INVALID_ARGUMENT, message: 'etcdserver: authentication failed, invalid user ID or password' }],
  // etcd 3.5 (3.4 crashes on a grant without a permission).
  [ErrorCode.AuthPermissionNotGiven, { code: S.INVALID_ARGUMENT, message: 'etcdserver: permission not given' }],
  [ErrorCode.AuthPermissionDenied, { code: S.PERMISSION_DENIED, message: 'etcdserver: permission denied' }],
  [ErrorCode.AuthRoleNotGranted, { code: S.FAILED_PRECONDITION, message: 'etcdserver: role is not granted to the user' }],
  [ErrorCode.AuthPermissionNotGranted, { code: S.FAILED_PRECONDITION, message: 'etcdserver: permission is not granted to the role' }],
  [ErrorCode.AuthNotEnabled, { code: S.FAILED_PRECONDITION, message: 'etcdserver: authentication is not enabled' }],
  [ErrorCode.AuthInvalidToken, { code: S.UNAUTHENTICATED, message: 'etcdserver: invalid auth token' }],
  [ErrorCode.AuthInvalidMgmt, { code: S.INVALID_ARGUMENT, message: 'etcdserver: invalid auth management' }],
  [ErrorCode.AuthOldRevision, { code: S.INVALID_ARGUMENT, message: 'etcdserver: revision of auth store is old' }],
  // concord's own (etcd has no such checks).
  [ErrorCode.AuthNameInvalid, { code: S.INVALID_ARGUMENT, message: 'etcdserver: user or role name is invalid (control characters, or longer than 256 bytes)' }],
  [ErrorCode.AuthPasswordTooShort, { code: S.INVALID_ARGUMENT, message: 'etcdserver: password is too short (see --auth-password-min-length)' }],
]);

/** Preallocated status objects: an error answer allocates nothing. */
const statusByCode = new Map<ErrorCode, Partial<grpc.StatusObject>>();
for (const [code, wire] of table) {
  statusByCode.set(code, { code: wire.code, details: wire.message });
}

export function grpcStatus(code: ErrorCode): Partial<grpc.StatusObject> {
  const st = statusByCode.get(code);
  if (st !== undefined) return st;
  return { code: S.UNKNOWN, details: 'etcdserver: unknown error ' + code };
}

/** grpc-go's wording for a message over the receive limit (etcd: MaxRecvMsgSize). */
export function messageTooLarge(size: number, max: number): Partial<grpc.StatusObject> {
  return {
    code: S.RESOURCE_EXHAUSTED,
    details: 'grpc: received message larger than max (' + size + ' vs. ' + max + ')',
  };
}

/** grpc-go's wording for a request that does not parse. */
export function malformed(reason: string): Partial<grpc.StatusObject> {
  return { code: S.INTERNAL, details: 'grpc: error unmarshalling request: ' + reason };
}

/**
 * A request whose handler threw: a bug, not an expected condition (those have codes above). The
 * request fails with INTERNAL, as grpc-go's recovery interceptor answers a panicking handler, and
 * the exception's message in etcd's form for an error without a code of its own (v3rpc/util.go
 * togRPCError passes `err.Error()` through; etcd's errors read "etcdserver: ..."). The stack goes
 * to the log, never to the client (api/grpc/server.ts guardHandlers).
 */
export function internalError(err: unknown): Partial<grpc.StatusObject> {
  return { code: S.INTERNAL, details: 'etcdserver: ' + (err instanceof Error ? err.message : String(err)) };
}
