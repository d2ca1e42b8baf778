// Expected operating conditions, each with a stable code. The code, not the message, is what the
// API layer maps to a gRPC status and etcd's wire string (api/grpc/errors.ts). Never match on
// `message`.

export const enum ErrorCode {
  EmptyKey = 1,
  KeyNotFound,
  ValueProvided,
  LeaseProvided,
  TooManyOps,
  DuplicateKey,
  Compacted,
  FutureRev,
  NoSpace,
  RequestTooLarge,
  TooManyRequests,
  LeaseNotFound,
  NoLeader,
  NotCapable,
  Stopped,
  Timeout,
  Corrupt,
  MessageTooLarge,
  InvalidSortOption,
  LeaseExist,
  LeaseTtlTooLarge,
  /** raft refused a proposal (etcd raft.ErrProposalDropped); src/raft/errors.ts says why. */
  ProposalDropped,
  // Cluster membership and leadership (etcd rpctypes).
  MemberNotFound,
  PeerUrlExist,
  MemberBadUrls,
  NotEnoughStartedMembers,
  MemberNotLearner,
  LearnerNotReady,
  TooManyLearners,
  NotLeader,
  BadLeaderTransferee,
  LeaderTransferTimeout,
  LeaderChanged,
  /** A proposal waited the whole request timeout for a leader (etcd: the context's error). */
  DeadlineExceeded,
  /** etcd ErrTimeoutDueToLeaderFail: timed out, and a leader was elected meanwhile. */
  TimeoutDueToLeaderFail,
  /** etcd ErrTimeoutWaitAppliedIndex: the leader's apply did not reach its commit in time. */
  TimeoutWaitAppliedIndex,
  /** etcd ErrUnhealthy: a membership change would risk the quorum (members not connected). */
  Unhealthy,
  /** etcd ErrGPRCNotSupportedForLearner. */
  NotSupportedForLearner,
  /** A request or answer between members that does not decode (a bug or mixed versions). */
  PeerMalformed,
  /** Maintenance.Snapshot could not copy the state (an I/O error; logged with the cause). */
  BackupFailed,
  /** An AlarmRequest whose action is not GET, ACTIVATE or DEACTIVATE (etcd 3.4 crashes on it;
   * 3.5/3.6 answer nothing usable): refused before raft. */
  AlarmUnknownAction,
  /** An AlarmRequest whose alarm type is not NONE, NOSPACE or CORRUPT. */
  AlarmUnknownType,
  // Auth (etcd rpctypes; auth/auth_store.ts).
  AuthRootUserNotExist,
  AuthRootRoleNotExist,
  AuthUserAlreadyExist,
  AuthUserEmpty,
  AuthUserNotFound,
  AuthRoleAlreadyExist,
  AuthRoleNotFound,
  AuthRoleEmpty,
  AuthFailed,
  AuthPermissionNotGiven,
  AuthPermissionDenied,
  AuthRoleNotGranted,
  AuthPermissionNotGranted,
  AuthNotEnabled,
  AuthInvalidToken,
  AuthInvalidMgmt,
  AuthOldRevision,
  /** A user or role name with control characters or longer than 256 bytes (concord). */
  AuthNameInvalid,
  /** A password shorter than --auth-password-min-length (concord; CVE-2020-15115). */
  AuthPasswordTooShort,
}

export class ConcordError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'ConcordError';
    this.code = code;
  }
}

// Singletons for errors returned on hot paths: no allocation, no stack capture per request.
function make(code: ErrorCode, message: string): ConcordError {
  const err = new ConcordError(code, message);
  err.stack = undefined;
  return err;
}

export const errCompacted = make(ErrorCode.Compacted, 'mvcc: required revision has been compacted');
export const errFutureRev = make(ErrorCode.FutureRev, 'mvcc: required revision is a future revision');
export const errKeyNotFound = make(ErrorCode.KeyNotFound, 'key not found');
export const errLeaseNotFound = make(ErrorCode.LeaseNotFound, 'lease not found');
export const errLeaseExist = make(ErrorCode.LeaseExist, 'lease already exists');
export const errLeaseTtlTooLarge = make(ErrorCode.LeaseTtlTooLarge, 'too large lease TTL');
export const errNoSpace = make(ErrorCode.NoSpace, 'database space exceeded');
export const errStopped = make(ErrorCode.Stopped, 'server stopped');
export const errTooManyRequests = make(ErrorCode.TooManyRequests, 'too many requests');
export const errRequestTooLarge = make(ErrorCode.RequestTooLarge, 'request is too large');

export function errorByCode(code: ErrorCode): ConcordError {
  switch (code) {
    case ErrorCode.Compacted: return errCompacted;
    case ErrorCode.FutureRev: return errFutureRev;
    case ErrorCode.KeyNotFound: return errKeyNotFound;
    case ErrorCode.LeaseNotFound: return errLeaseNotFound;
    case ErrorCode.NoSpace: return errNoSpace;
    case ErrorCode.Stopped: return errStopped;
    case ErrorCode.TooManyRequests: return errTooManyRequests;
    case ErrorCode.RequestTooLarge: return errRequestTooLarge;
    default: return make(code, 'error ' + code);
  }
}
