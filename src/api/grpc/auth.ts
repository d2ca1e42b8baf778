// etcdserverpb.Auth over gRPC (etcd: v3rpc/auth.go, etcdserver/v3_server.go). Every request goes
// through the log and is applied by the storage worker against the replicated auth store
// (auth/auth_store.ts), reads included (linearizable, as in etcd 3.4); who may do what is judged
// there too, with the caller the token names. Passwords are hashed (bcrypt, --bcrypt-cost) and
// checked on the background pool by the member that received them, never on the main thread,
// and never travel through the log in clear.
import * as grpc from '@grpc/grpc-js';
import { concordpb, etcdserverpb } from '../../gen/proto';
import { EtcdServer } from '../../server/etcd_server';
import { ConcordError, ErrorCode } from '../../util/errors';
import { grpcStatus } from './errors';
import { bcryptCompareInBackground, bcryptHashInBackground } from '../../workers/background_pool';
import { errAuthFailed, errAuthNotEnabled, errPermissionNotGiven } from '../../auth/auth_store';
import type { Caller } from '../../auth/request_checks';
import { LoginThrottle } from '../../auth/login_throttle';
import { monotonicNowMs } from '../../util/clock';
import type { JwtTokens } from '../../auth/jwt_tokens';

/** User and role names: not empty (the store says so in etcd's words), no control characters,
 * at most this many bytes (etcd checks nothing; a name is a key of the store and of tokens). */
const nameBytesMax = 256;

function validName(name: string): boolean {
  if (Buffer.byteLength(name) > nameBytesMax) return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return false;
  }
  return true;
}

/** The connection a call came on (grpc-js and the fast path: "ip:port"). */
function peerOf(call: unknown): string {
  const c = call as { getPeer?(): string };
  return typeof c.getPeer === 'function' ? c.getPeer() : '';
}

type Callback = grpc.sendUnaryData<Uint8Array>;
type Call<T> = grpc.ServerUnaryCall<T, Uint8Array>;

/** The caller of `call`, or an answered error (null with auth disabled, as callerOf). */
function callerOr(server: EtcdServer, call: { metadata: grpc.Metadata }, callback: Callback): { caller: Caller | null } | null {
  try {
    return { caller: server.auth.callerOfCall(call) };
  } catch (err) {
    if (!(err instanceof ConcordError)) throw err;
    callback(grpcStatus(err.code));
    return null;
  }
}

/** etcd auth.ErrVerifyOnly: Authenticate on a member given only --auth-token jwt's pub-key. */
const errVerifyOnlyMessage = 'auth: token signing attempted with verify-only key';

/**
 * The callback of a JWT Authenticate's proposal: the applied answer's token field holds the auth
 * revision (storage_core applyAuth); the client gets the same answer with the signed token.
 */
function signedAnswer(jwt: JwtTokens, user: string, callback: Callback): Callback {
  return (err, value) => {
    if (err !== null && err !== undefined) return callback(err);
    if (value === null || value === undefined) return callback(err, value);
    const answer = etcdserverpb.AuthenticateResponse.decode(value);
    const revision = Number(answer.token);
    jwt.sign(user, revision).then(
      (token) => callback(null, etcdserverpb.AuthenticateResponse.encode({ header: answer.header, token }).finish()),
      (e: Error) => callback({ code: grpc.status.UNKNOWN, details: e.message }));
  };
}

export interface AuthOptions {
  /** --bcrypt-cost. */
  bcryptCost: number;
  /** --auth-password-min-length (0: any length, as etcd). */
  passwordMinLength: number;
}

export function authHandlers(server: EtcdServer, options: AuthOptions): grpc.UntypedServiceImplementation {
  const { bcryptCost, passwordMinLength } = options;
  const throttle = new LoginThrottle(monotonicNowMs);
  /** A password the options refuse (a hash sent by a 3.5 client cannot be judged). */
  const tooShort = (password: string, hashed: string, noPassword: boolean): boolean =>
    !noPassword && hashed === '' && [...password].length < passwordMinLength;
  /** Proposes `req` for the caller of `call`; the storage worker answers. */
  const propose = (call: { metadata: grpc.Metadata }, req: concordpb.InternalRequest.$Properties, callback: Callback): void => {
    const who = callerOr(server, call, callback);
    if (who === null) return;
    const code = server.propose(req, callback, who.caller);
    if (code !== 0) callback(grpcStatus(code));
  };
  /** Hashes the password on the background pool (unless the client sent a hash, 3.5), then proposes. */
  const proposeHashed = (call: { metadata: grpc.Metadata }, password: string, hashed: string, noPassword: boolean,
    make: (hash: string) => concordpb.InternalRequest.$Properties, callback: Callback): void => {
    const who = callerOr(server, call, callback);
    if (who === null) return;
    const go = (hash: string): void => {
      const code = server.propose(make(hash), callback, who.caller);
      if (code !== 0) callback(grpcStatus(code));
    };
    if (noPassword || hashed !== '') return go(noPassword ? '' : hashed);
    bcryptHashInBackground(password, bcryptCost).then(go, (err: Error) => callback({ code: grpc.status.INTERNAL, details: `etcdserver: hashing the password failed: ${err.message}` }));
  };
  return {
    AuthEnable(call: Call<etcdserverpb.AuthEnableRequest>, callback: Callback): void {
      propose(call, { auth_enable: {} }, callback);
    },
    AuthDisable(call: Call<etcdserverpb.AuthDisableRequest>, callback: Callback): void {
      propose(call, { auth_disable: {} }, callback);
    },
    AuthStatus(call: Call<etcdserverpb.AuthStatusRequest>, callback: Callback): void {
      propose(call, { auth_status: {} }, callback);
    },
    Authenticate(call: Call<etcdserverpb.AuthenticateRequest>, callback: Callback): void {
      // etcd CheckPassword, on the member that received the request, then the token through the
      // log. After failures for this name or on this connection, judged only after a delay.
      const name = call.request.name ?? '';
      const peer = peerOf(call);
      const judge = (): void => {
        if (!server.auth.enabled) return callback(grpcStatus(errAuthNotEnabled.code));
        // etcd fails the same way at apply (ErrVerifyOnly, not one of its gRPC errors: Unknown).
        if (server.auth.jwt?.verifyOnly === true) return callback({ code: grpc.status.UNKNOWN, details: errVerifyOnlyMessage });
        if (server.auth.store.user(name)?.noPassword === true) {
          // etcd ErrNoPasswordUser: not one of its gRPC errors, so it reaches clients as UNKNOWN.
          throttle.failed(name, peer);
          return callback({ code: grpc.status.UNKNOWN, details: 'auth: authentication failed, password was given for no password user' });
        }
        const hash = server.auth.store.passwordHash(name);
        if (hash === null) {
          throttle.failed(name, peer);
          return callback(grpcStatus(errAuthFailed.code));
        }
        bcryptCompareInBackground(call.request.password ?? '', hash).then((ok) => {
          if (!ok) {
            throttle.failed(name, peer);
            return callback(grpcStatus(errAuthFailed.code));
          }
          throttle.succeeded(name, peer);
          const jwt = server.auth.jwt;
          if (jwt === null) {
            const code = server.propose({ authenticate: { name, simple_token: server.auth.newToken() } }, callback);
            if (code !== 0) callback(grpcStatus(code));
            return;
          }
          // JWT: through the log all the same (etcd 3.4 assigns at apply, which orders the
          // token's auth revision with the store's changes); the answer names that revision and
          // this member signs the token.
          const code = server.propose({ authenticate: { name, jwt: true } }, signedAnswer(jwt, name, callback));
          if (code !== 0) callback(grpcStatus(code));
        }, (err: Error) => callback({ code: grpc.status.INTERNAL, details: `etcdserver: checking the password failed: ${err.message}` }));
      };
      const wait = throttle.waitMs(name, peer);
      if (wait > 0) setTimeout(judge, wait);
      else judge();
    },
    UserAdd(call: Call<etcdserverpb.AuthUserAddRequest>, callback: Callback): void {
      const r = call.request;
      const name = r.name ?? '';
      if (name === '') return callback(grpcStatus(ErrorCode.AuthUserEmpty));
      if (!validName(name)) return callback(grpcStatus(ErrorCode.AuthNameInvalid));
      const noPassword = r.options?.no_password === true;
      if (tooShort(r.password ?? '', r.hashedPassword ?? '', noPassword)) return callback(grpcStatus(ErrorCode.AuthPasswordTooShort));
      proposeHashed(call, r.password ?? '', r.hashedPassword ?? '', noPassword,
        (hash) => ({ auth_user_add: { name, hashedPassword: hash, options: noPassword ? { no_password: true } : null } }), callback);
    },
    UserGet(call: Call<etcdserverpb.AuthUserGetRequest>, callback: Callback): void {
      propose(call, { auth_user_get: { name: call.request.name ?? '' } }, callback);
    },
    UserList(call: Call<etcdserverpb.AuthUserListRequest>, callback: Callback): void {
      propose(call, { auth_user_list: {} }, callback);
    },
    UserDelete(call: Call<etcdserverpb.AuthUserDeleteRequest>, callback: Callback): void {
      propose(call, { auth_user_delete: { name: call.request.name ?? '' } }, callback);
    },
    UserChangePassword(call: Call<etcdserverpb.AuthUserChangePasswordRequest>, callback: Callback): void {
      const r = call.request;
      const name = r.name ?? '';
      if (tooShort(r.password ?? '', r.hashedPassword ?? '', false)) return callback(grpcStatus(ErrorCode.AuthPasswordTooShort));
      proposeHashed(call, r.password ?? '', r.hashedPassword ?? '', false,
        (hash) => ({ auth_user_change_password: { name, hashedPassword: hash } }), callback);
    },
    UserGrantRole(call: Call<etcdserverpb.AuthUserGrantRoleRequest>, callback: Callback): void {
      propose(call, { auth_user_grant_role: { user: call.request.user ?? '', role: call.request.role ?? '' } }, callback);
    },
    UserRevokeRole(call: Call<etcdserverpb.AuthUserRevokeRoleRequest>, callback: Callback): void {
      propose(call, { auth_user_revoke_role: { name: call.request.name ?? '', role: call.request.role ?? '' } }, callback);
    },
    RoleAdd(call: Call<etcdserverpb.AuthRoleAddRequest>, callback: Callback): void {
      if (!validName(call.request.name ?? '')) return callback(grpcStatus(ErrorCode.AuthNameInvalid));
      propose(call, { auth_role_add: { name: call.request.name ?? '' } }, callback);
    },
    RoleGet(call: Call<etcdserverpb.AuthRoleGetRequest>, callback: Callback): void {
      propose(call, { auth_role_get: { role: call.request.role ?? '' } }, callback);
    },
    RoleList(call: Call<etcdserverpb.AuthRoleListRequest>, callback: Callback): void {
      propose(call, { auth_role_list: {} }, callback);
    },
    RoleDelete(call: Call<etcdserverpb.AuthRoleDeleteRequest>, callback: Callback): void {
      propose(call, { auth_role_delete: { role: call.request.role ?? '' } }, callback);
    },
    RoleGrantPermission(call: Call<etcdserverpb.AuthRoleGrantPermissionRequest>, callback: Callback): void {
      const r = call.request;
      // etcd 3.4 crashes on a grant without a permission (and cannot restart); 3.5 refuses it.
      if (r.perm === null || r.perm === undefined) return callback(grpcStatus(errPermissionNotGiven.code));
      propose(call, { auth_role_grant_permission: { name: r.name ?? '', perm: r.perm } }, callback);
    },
    RoleRevokePermission(call: Call<etcdserverpb.AuthRoleRevokePermissionRequest>, callback: Callback): void {
      const r = call.request;
      propose(call, { auth_role_revoke_permission: { role: r.role ?? '', key: r.key ?? new Uint8Array(0), range_end: r.range_end ?? new Uint8Array(0) } }, callback);
    },
  };
}
