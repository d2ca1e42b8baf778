// What etcd's gRPC interceptors check before any handler runs (etcd: v3rpc/interceptor.go),
// for every way a request comes in (grpc-js, the fast path, the HTTP gateway):
//  - a learner serves only Status and serializable Range, and no stream ("rpc not supported for
//    learner");
//  - a request with the metadata `hasleader: true` (clientv3.WithRequireLeader) fails at once
//    with "no leader" when this member knows none; a stream opened with it is ended with "no
//    leader" once the member has had no leader for maxNoLeaderChecks election timeouts in a row
//    (etcd monitorLeader: reconnecting streams costs more than refusing new requests, so
//    existing ones are given time);
//  - with auth enabled, what the method's row of the permission table needs
//    (auth/rpc_permissions.ts): a valid token (gRPC metadata `token`, or the gateway's
//    `Authorization` header), a root user, or permissions on the keys the request names.
import * as grpc from '@grpc/grpc-js';
import { ConcordError, ErrorCode } from '../../util/errors';
import { grpcStatus } from './errors';
import type { AuthGate } from '../../auth/auth_gate';
import { Need, rpcRules } from '../../auth/rpc_permissions';
import { failpointsEnabled, failpointValue } from '../../util/failpoints';

/** etcd maxNoLeaderCnt. */
const maxNoLeaderChecks = 3;

export interface GateServer {
  hasLeader(): boolean;
  isLearner(): boolean;
  readonly auth: AuthGate;
}

interface CallLike {
  request?: unknown;
  metadata?: grpc.Metadata;
  header?(name: string): string | undefined;
}

interface StreamLike extends CallLike {
  emit(event: string, arg: unknown): boolean;
  on(event: string, listener: () => void): unknown;
}

/** The one request header etcd's interceptors read: clientv3 sets it with WithRequireLeader. */
function requiresLeader(call: CallLike): boolean {
  if (typeof call.header === 'function') return call.header('hasleader') === 'true';
  const v = call.metadata?.get('hasleader');
  return v !== undefined && v.length > 0 && v[0] === 'true';
}

/** The auth token a call carries: gRPC metadata `token`, or the gateway's Authorization header. */
export function tokenOf(call: CallLike): string | undefined {
  if (typeof call.header === 'function') return call.header('authorization') ?? call.header('token');
  const v = call.metadata?.get('token');
  return v !== undefined && v.length > 0 ? String(v[0]) : undefined;
}

/** etcd isRPCSupportedForLearner. */
function servedToLearner(path: string, request: unknown): boolean {
  if (path === '/etcdserverpb.Maintenance/Status') return true;
  if (path === '/etcdserverpb.KV/Range') return (request as { serializable?: boolean } | null)?.serializable === true;
  return false;
}

export class RequestGate {
  private readonly server: GateServer;
  /** Open streams that asked for a leader, with how to end them. */
  private readonly leaderStreams = new Set<StreamLike>();
  private noLeaderChecks = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(server: GateServer, electionMs: number) {
    this.server = server;
    this.timer = setInterval(() => this.checkLeader(), electionMs);
    this.timer.unref();
  }

  /** The refusal for a unary call, or null to serve it. */
  refuseUnary(path: string, call: CallLike): Partial<grpc.StatusObject> | null {
    if (this.server.isLearner() && !servedToLearner(path, call.request)) return grpcStatus(ErrorCode.NotSupportedForLearner);
    if (requiresLeader(call) && !this.server.hasLeader()) return grpcStatus(ErrorCode.NoLeader);
    if (this.server.auth.enabled) return this.refuseByAuth(path, call);
    return null;
  }

  /**
   * The permission table's row for `path` on this member's copy of the auth store (a request
   * whose keys are in the stream, as Watch's, is judged by its handler). Null to serve it.
   */
  refuseByAuth(path: string, call: CallLike): Partial<grpc.StatusObject> | null {
    const rule = rpcRules[path];
    if (rule === undefined) return grpcStatus(ErrorCode.AuthPermissionDenied); // a method without a row
    if (failpointsEnabled && failpointValue('authHole') === path) return null; // a planted hole (tests)
    if (rule.need === Need.Public) return null;
    const auth = this.server.auth;
    try {
      const caller = auth.callerOf(tokenOf(call), call);
      if (caller === null) return null;
      const store = auth.store;
      if (rule.need === Need.Admin) store.checkAdmin(caller.user, caller.revision);
      else if (rule.need === Need.Keys && call.request !== undefined) {
        store.checkUser(caller.user, caller.revision);
        for (const k of rule.keys!(call.request)) store.checkOp(caller.user, caller.revision, Buffer.from(k.key), Buffer.from(k.rangeEnd), k.type);
      } else if (rule.need === Need.User || rule.need === Need.Keys) store.checkUser(caller.user, caller.revision);
      // Need.Handler: the token is valid (callerOf threw otherwise); the handler judges the rest.
      return null;
    } catch (err) {
      if (!(err instanceof ConcordError)) throw err;
      return grpcStatus(err.code);
    }
  }

  /** The refusal for a new stream, or null; a stream that requires a leader is watched. */
  admitStream(call: StreamLike, path?: string): Partial<grpc.StatusObject> | null {
    if (this.server.isLearner()) return grpcStatus(ErrorCode.NotSupportedForLearner);
    if (path !== undefined && this.server.auth.enabled) {
      const refused = this.refuseByAuth(path, call);
      if (refused !== null) return refused;
    }
    if (!requiresLeader(call)) return null;
    if (!this.server.hasLeader()) return grpcStatus(ErrorCode.NoLeader);
    this.leaderStreams.add(call);
    const forget = (): void => {
      this.leaderStreams.delete(call);
    };
    call.on('close', forget);
    call.on('cancelled', forget);
    call.on('finish', forget);
    return null;
  }

  private checkLeader(): void {
    if (this.server.hasLeader()) {
      this.noLeaderChecks = 0;
      return;
    }
    if (++this.noLeaderChecks < maxNoLeaderChecks || this.leaderStreams.size === 0) return;
    const streams = [...this.leaderStreams];
    this.leaderStreams.clear();
    for (const s of streams) s.emit('error', grpcStatus(ErrorCode.NoLeader));
  }

  close(): void {
    clearInterval(this.timer);
    this.leaderStreams.clear();
  }
}
