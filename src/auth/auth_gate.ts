// The main thread's side of auth: its copy of the auth store (the storage worker owns the
// applied one and sends it when it changes), the simple tokens this member knows, and the
// caller of a request as its token names it (etcd: AuthInfoFromCtx).
//
// Simple tokens (etcd --auth-token simple): 16 random letters, a dot and a sequence number.
// Authenticate proposes the token through the log (once the password was checked by the member
// that received it), so every member learns it at apply; each member then keeps it alive for
// --auth-token-ttl seconds after its last use (etcd simpleTokenTTLKeeper), per member. Tokens
// of a user whose password changed or who was deleted, and every token when auth is disabled,
// are forgotten (etcd invalidateUser / disable).
//
// JWT tokens (etcd --auth-token jwt,...; auth/jwt_tokens.ts): nothing is stored or assigned at
// apply; a token is good wherever its signature verifies and its exp is not past, and names the
// user and auth revision it was issued for (checked at apply like a simple token's).
import { randomInt } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { concordpb } from '../gen/proto';
import { AuthStore, errInvalidAuthToken } from './auth_store';
import type { Caller } from './request_checks';
import { clientCertCommonName } from '../api/tls';
import type { JwtTokens } from './jwt_tokens';

interface TokenInfo {
  user: string;
  revision: number;
  expiresAt: number;
}

const letters = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** No token given with auth enabled: etcd's empty AuthInfo (checks answer "user name is empty"). */
const noCaller: Caller = Object.freeze({ user: '', revision: 0 });

export class AuthGate {
  store: AuthStore;
  private readonly tokens: Map<string, TokenInfo>;
  private readonly ttlMs: number;
  private readonly now: () => number;
  private tokenSeq: number;
  /** The JWT provider with --auth-token jwt, null with simple tokens. */
  readonly jwt: JwtTokens | null;

  constructor(store: AuthStore, ttlSeconds: number, now: () => number, jwt: JwtTokens | null = null) {
    this.store = store;
    this.jwt = jwt;
    this.tokens = new Map();
    this.ttlMs = ttlSeconds * 1000;
    this.now = now;
    this.tokenSeq = 0;
  }

  get enabled(): boolean {
    return this.store.enabled;
  }

  /** A fresh simple token (etcd genTokenPrefix + "." + a sequence). */
  newToken(): string {
    let s = '';
    for (let i = 0; i < 16; i++) s += letters[randomInt(letters.length)];
    return `${s}.${++this.tokenSeq}`;
  }

  /**
   * Who makes a request: null with auth disabled (nothing to check), the empty caller without a
   * token; throws "invalid auth token" for a token this member does not know or let expire.
   * Using a token keeps it alive.
   */
  callerOf(token: string | undefined, call?: unknown): Caller | null {
    if (!this.store.enabled) return null;
    if (token === undefined || token === '') {
      // etcd AuthInfoFromTLS: with --client-cert-auth, a call without a token is made by the
      // user its verified client certificate names, at the store's current revision.
      const cn = call === undefined ? undefined : clientCertCommonName(call);
      return cn === undefined ? noCaller : { user: cn, revision: this.store.revision };
    }
    if (this.jwt !== null) {
      const claims = this.jwt.verify(token);
      if (claims === null) throw errInvalidAuthToken;
      return { user: claims.user, revision: claims.revision };
    }
    const t = this.tokens.get(token);
    const now = this.now();
    if (t === undefined || t.expiresAt <= now) {
      if (t !== undefined) this.tokens.delete(token);
      throw errInvalidAuthToken;
    }
    t.expiresAt = now + this.ttlMs;
    // etcd (tokenSimple.info): a simple token stands for its user at the store's revision of
    // the moment it is used, not the one it was issued at (a JWT carries its own). The
    // revision still guards a write against an auth change between its proposal and its apply.
    return { user: t.user, revision: this.store.revision };
  }

  /** The caller of a gRPC call (metadata `token`), as callerOf. */
  callerOfCall(call: { metadata: grpc.Metadata }): Caller | null {
    if (!this.store.enabled) return null;
    const v = call.metadata.get('token');
    return this.callerOf(v.length > 0 ? String(v[0]) : undefined, call);
  }

  /** What an Applied message says about auth: a new store, tokens assigned. */
  applied(a: concordpb.AuthApplied): void {
    if (a.state !== null && a.state !== undefined) this.replaceStore(AuthStore.fromState(a.state));
    const now = this.now();
    for (const t of a.tokens ?? []) {
      if (!this.store.enabled || this.jwt !== null) continue;
      this.tokens.set(t.token ?? '', { user: t.user ?? '', revision: Number(t.revision ?? 0), expiresAt: now + this.ttlMs });
    }
  }

  /** A new store: tokens of deleted users and changed passwords go, all of them when disabled. */
  replaceStore(next: AuthStore): void {
    const prev = this.store;
    this.store = next;
    if (!next.enabled) {
      this.tokens.clear();
      return;
    }
    for (const [token, t] of this.tokens) {
      const before = prev.user(t.user);
      const after = next.user(t.user);
      if (after === undefined || before === undefined || before.password !== after.password) this.tokens.delete(token);
    }
  }

  /** Forgets expired tokens (called now and then; a use finds expiry anyway). */
  sweep(): void {
    const now = this.now();
    for (const [token, t] of this.tokens) if (t.expiresAt <= now) this.tokens.delete(token);
  }

  get tokenCount(): number {
    return this.tokens.size;
  }
}
