// The auth store: users, roles and their key permissions, and whether auth is enabled
// (etcd: server/auth/store.go). Replicated state: changed only by applying Auth requests from
// the log, on the storage worker, which writes it to the meta table (record `auth`, a
// concordpb.AuthState) in the transaction of the entry that changed it; the main thread keeps
// a copy it learns from Applied messages, to check reads and tokens.
//
// Every change bumps `revision` (etcd's auth revision). A request carries the revision its token
// was issued at; a write whose revision is older than the store's is refused with
// "revision of auth store is old" (etcd ErrAuthOldRevision), so a permission taken away is never
// used by a request that raced with the change.
//
// Passwords are bcrypt hashes made by the member that received the request (never in the log in
// clear: etcd 3.4 wrote them in clear, GHSA-528j-9r78-wffx).
//
// Where etcd 3.4 differs and concord follows the fixed behaviour:
//   - RoleGrantPermission without a permission: etcd 3.4 crashes (and cannot restart); concord
//     refuses it with 3.5's "etcdserver: permission not given" before the log.
import { authpb, concordpb } from '../gen/proto';
import { ConcordError, ErrorCode } from '../util/errors';

export const rootUser = 'root';
export const rootRole = 'root';

export const PermType = authpb.Permission.Type;

export interface Permission {
  type: number; // authpb.Permission.Type
  key: Buffer;
  /** Empty: the single key; [0]: every key from `key` on; else the range [key, rangeEnd). */
  rangeEnd: Buffer;
}

export interface User {
  name: string;
  /** bcrypt hash; '' with noPassword. */
  password: string;
  roles: string[]; // sorted
  noPassword: boolean;
}

export interface Role {
  name: string;
  perms: Permission[]; // sorted by key, then rangeEnd
}

/** [start, end) over bytes; end null = no end. */
interface Interval {
  start: Buffer;
  end: Buffer | null;
}

function authError(code: ErrorCode, message: string): ConcordError {
  return new ConcordError(code, message);
}

const zeroByte = Buffer.from([0]);

/** The interval a permission or a request covers. */
function intervalOf(key: Buffer, rangeEnd: Buffer): Interval {
  if (rangeEnd.length === 0) return { start: key, end: Buffer.concat([key, zeroByte]) };
  if (rangeEnd.length === 1 && rangeEnd[0] === 0) return { start: key, end: null };
  return { start: key, end: rangeEnd };
}

/** Sorted, disjoint, non-adjacent intervals covering the union of `list`. */
function merge(list: Interval[]): Interval[] {
  const sorted = list.slice().sort((a, b) => Buffer.compare(a.start, b.start));
  const out: Interval[] = [];
  for (const iv of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && (last.end === null || Buffer.compare(iv.start, last.end) <= 0)) {
      if (last.end !== null && (iv.end === null || Buffer.compare(iv.end, last.end) > 0)) last.end = iv.end;
      continue;
    }
    out.push({ start: iv.start, end: iv.end });
  }
  return out;
}

/** Whether the merged intervals cover all of `want` (an empty request range is covered). */
function covers(merged: Interval[], want: Interval): boolean {
  if (want.end !== null && Buffer.compare(want.start, want.end) >= 0) return true;
  for (const iv of merged) {
    if (Buffer.compare(iv.start, want.start) > 0) return false;
    if (iv.end === null) return true;
    if (Buffer.compare(iv.end, want.start) <= 0) continue;
    // iv.start <= want.start < iv.end: covered up to iv.end
    return want.end !== null && Buffer.compare(want.end, iv.end) <= 0;
  }
  return false;
}

export class AuthStore {
  enabled: boolean;
  revision: number;
  private readonly users: Map<string, User>;
  private readonly roles: Map<string, Role>;
  /** user name -> merged READ and WRITE intervals, rebuilt after any change. */
  private cache: Map<string, { read: Interval[]; write: Interval[] }>;

  constructor() {
    this.enabled = false;
    this.revision = 1; // etcd commits revision 1 when it creates the store
    this.users = new Map();
    this.roles = new Map();
    this.cache = new Map();
  }

  // ---- changes (apply only) ----

  private changed(): void {
    this.revision++;
    this.cache = new Map();
  }

  enable(): void {
    if (this.enabled) return;
    const root = this.users.get(rootUser);
    if (root === undefined) throw authError(ErrorCode.AuthRootUserNotExist, 'etcdserver: root user does not exist');
    if (!root.roles.includes(rootRole)) throw authError(ErrorCode.AuthRootRoleNotExist, 'etcdserver: root user does not have root role');
    this.enabled = true;
    // etcd AuthEnable keeps the revision (only disable commits a new one): the revision a JWT
    // names after the same steps is etcd's, so a token from either is good on the other.
    this.cache = new Map();
  }

  disable(): void {
    if (!this.enabled) return;
    this.enabled = false;
    this.changed();
  }

  userAdd(name: string, hashedPassword: string, noPassword: boolean): void {
    if (name === '') throw authError(ErrorCode.AuthUserEmpty, 'etcdserver: user name is empty');
    if (this.users.has(name)) throw authError(ErrorCode.AuthUserAlreadyExist, 'etcdserver: user name already exists');
    this.users.set(name, { name, password: noPassword ? '' : hashedPassword, roles: [], noPassword });
    this.changed();
  }

  userDelete(name: string): void {
    if (this.enabled && name === rootUser) throw authError(ErrorCode.AuthInvalidMgmt, 'etcdserver: invalid auth management');
    if (!this.users.delete(name)) throw authError(ErrorCode.AuthUserNotFound, 'etcdserver: user name not found');
    this.changed();
  }

  userChangePassword(name: string, hashedPassword: string): void {
    const u = this.users.get(name);
    if (u === undefined) throw authError(ErrorCode.AuthUserNotFound, 'etcdserver: user name not found');
    u.password = hashedPassword;
    u.noPassword = false;
    this.changed();
  }

  userGrantRole(name: string, role: string): void {
    const u = this.users.get(name);
    if (u === undefined) throw authError(ErrorCode.AuthUserNotFound, 'etcdserver: user name not found');
    if (role !== rootRole && !this.roles.has(role)) throw authError(ErrorCode.AuthRoleNotFound, 'etcdserver: role name not found');
    if (u.roles.includes(role)) return; // etcd: a warning, no error, no new revision
    u.roles.push(role);
    u.roles.sort();
    this.changed();
  }

  userRevokeRole(name: string, role: string): void {
    if (this.enabled && name === rootUser && role === rootRole) throw authError(ErrorCode.AuthInvalidMgmt, 'etcdserver: invalid auth management');
    const u = this.users.get(name);
    if (u === undefined) throw authError(ErrorCode.AuthUserNotFound, 'etcdserver: user name not found');
    const at = u.roles.indexOf(role);
    if (at < 0) throw authError(ErrorCode.AuthRoleNotGranted, 'etcdserver: role is not granted to the user');
    u.roles.splice(at, 1);
    this.changed();
  }

  roleAdd(name: string): void {
    if (name === '') throw authError(ErrorCode.AuthRoleEmpty, 'etcdserver: role name is empty');
    if (this.roles.has(name)) throw authError(ErrorCode.AuthRoleAlreadyExist, 'etcdserver: role name already exists');
    this.roles.set(name, { name, perms: [] });
    this.changed();
  }

  roleDelete(name: string): void {
    if (this.enabled && name === rootRole) throw authError(ErrorCode.AuthInvalidMgmt, 'etcdserver: invalid auth management');
    if (!this.roles.delete(name)) throw authError(ErrorCode.AuthRoleNotFound, 'etcdserver: role name not found');
    for (const u of this.users.values()) {
      const at = u.roles.indexOf(name);
      if (at >= 0) u.roles.splice(at, 1);
    }
    this.changed();
  }

  roleGrantPermission(name: string, perm: Permission): void {
    const r = this.roles.get(name);
    if (r === undefined) throw authError(ErrorCode.AuthRoleNotFound, 'etcdserver: role name not found');
    const same = r.perms.find((p) => p.key.equals(perm.key) && p.rangeEnd.equals(perm.rangeEnd));
    if (same !== undefined) same.type = perm.type; // etcd: the same range gets the new type
    else r.perms.push({ type: perm.type, key: Buffer.from(perm.key), rangeEnd: Buffer.from(perm.rangeEnd) });
    r.perms.sort((a, b) => Buffer.compare(a.key, b.key) || Buffer.compare(a.rangeEnd, b.rangeEnd));
    this.changed();
  }

  roleRevokePermission(name: string, key: Buffer, rangeEnd: Buffer): void {
    const r = this.roles.get(name);
    if (r === undefined) throw authError(ErrorCode.AuthRoleNotFound, 'etcdserver: role name not found');
    const at = r.perms.findIndex((p) => p.key.equals(key) && p.rangeEnd.equals(rangeEnd));
    if (at < 0) throw authError(ErrorCode.AuthPermissionNotGranted, 'etcdserver: permission is not granted to the role');
    r.perms.splice(at, 1);
    this.changed();
  }

  // ---- reads ----

  user(name: string): User | undefined {
    return this.users.get(name);
  }

  role(name: string): Role | undefined {
    return this.roles.get(name);
  }

  userNames(): string[] {
    return [...this.users.keys()].sort();
  }

  roleNames(): string[] {
    return [...this.roles.keys()].sort();
  }

  /** A user that may log in: exists and has a password (etcd: ErrAuthFailed otherwise). */
  passwordHash(name: string): string | null {
    const u = this.users.get(name);
    if (u === undefined || u.noPassword) return null;
    return u.password;
  }

  isAdmin(name: string): boolean {
    const u = this.users.get(name);
    return u !== undefined && u.roles.includes(rootRole);
  }

  /**
   * Throws unless `user` (with a token of auth revision `revision`) may do `type` (READ or
   * WRITE) on [key, rangeEnd) (etcd isOpPermitted). With auth disabled everything is allowed.
   */
  checkOp(user: string, revision: number, key: Buffer, rangeEnd: Buffer, type: number): void {
    if (!this.enabled) return;
    this.checkUser(user, revision);
    if (this.isAdmin(user)) return;
    const c = this.permsOf(user);
    const merged = type === PermType.READ ? c.read : c.write;
    if (!covers(merged, intervalOf(key, rangeEnd))) throw errPermissionDenied;
  }

  /** Throws unless `user` exists, has a root role (etcd IsAdminPermitted). */
  checkAdmin(user: string, revision: number): void {
    if (!this.enabled) return;
    this.checkUser(user, revision);
    if (!this.isAdmin(user)) throw errPermissionDenied;
  }

  /** Throws unless the token names a user of this store at a current revision. */
  checkUser(user: string, revision: number): void {
    if (!this.enabled) return;
    if (user === '' || revision === 0) throw errUserEmpty;
    if (revision < this.revision) throw errAuthOldRevision;
    if (!this.users.has(user)) throw errPermissionDenied;
  }

  private permsOf(user: string): { read: Interval[]; write: Interval[] } {
    let c = this.cache.get(user);
    if (c !== undefined) return c;
    const read: Interval[] = [];
    const write: Interval[] = [];
    for (const roleName of this.users.get(user)?.roles ?? []) {
      for (const p of this.roles.get(roleName)?.perms ?? []) {
        const iv = intervalOf(p.key, p.rangeEnd);
        if (p.type === PermType.READ || p.type === PermType.READWRITE) read.push(iv);
        if (p.type === PermType.WRITE || p.type === PermType.READWRITE) write.push(iv);
      }
    }
    c = { read: merge(read), write: merge(write) };
    this.cache.set(user, c);
    return c;
  }

  // ---- encoding (meta record `auth`, Applied's auth section, WorkerReady) ----

  toState(): concordpb.IAuthState {
    return {
      enabled: this.enabled,
      revision: this.revision,
      users: this.userNames().map((n) => {
        const u = this.users.get(n)!;
        return { name: Buffer.from(u.name), password: Buffer.from(u.password), roles: u.roles.slice(), options: u.noPassword ? { no_password: true } : null };
      }),
      roles: this.roleNames().map((n) => {
        const r = this.roles.get(n)!;
        return { name: Buffer.from(r.name), keyPermission: r.perms.map((p) => ({ permType: p.type, key: p.key, range_end: p.rangeEnd })) };
      }),
    };
  }

  encode(): Uint8Array {
    return concordpb.AuthState.encode(this.toState()).finish();
  }

  static fromState(s: concordpb.IAuthState): AuthStore {
    const a = new AuthStore();
    a.enabled = s.enabled === true;
    a.revision = Number(s.revision ?? 1);
    for (const u of s.users ?? []) {
      const name = Buffer.from(u.name ?? []).toString();
      a.users.set(name, { name, password: Buffer.from(u.password ?? []).toString(), roles: (u.roles ?? []).slice().sort(), noPassword: u.options?.no_password === true });
    }
    for (const r of s.roles ?? []) {
      const name = Buffer.from(r.name ?? []).toString();
      a.roles.set(name, {
        name,
        perms: (r.keyPermission ?? []).map((p) => ({ type: p.permType ?? PermType.READ, key: Buffer.from(p.key ?? []), rangeEnd: Buffer.from(p.range_end ?? []) })),
      });
    }
    return a;
  }

  static decode(b: Uint8Array): AuthStore {
    return AuthStore.fromState(concordpb.AuthState.decode(b));
  }
}

export const errPermissionDenied = new ConcordError(ErrorCode.AuthPermissionDenied, 'etcdserver: permission denied');
export const errUserEmpty = new ConcordError(ErrorCode.AuthUserEmpty, 'etcdserver: user name is empty');
export const errAuthOldRevision = new ConcordError(ErrorCode.AuthOldRevision, 'etcdserver: revision of auth store is old');
export const errInvalidAuthToken = new ConcordError(ErrorCode.AuthInvalidToken, 'etcdserver: invalid auth token');
export const errAuthFailed = new ConcordError(ErrorCode.AuthFailed, 'etcdserver: authentication failed, invalid user ID or password');
export const errAuthNotEnabled = new ConcordError(ErrorCode.AuthNotEnabled, 'etcdserver: authentication is not enabled');
export const errPermissionNotGiven = new ConcordError(ErrorCode.AuthPermissionNotGiven, 'etcdserver: permission not given');
