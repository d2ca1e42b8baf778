// auth/auth_store.ts: etcd's auth store rules (errors, revisions) and the permission check over
// key ranges (single keys, ranges, prefixes, from-key, unions of several roles).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthStore, PermType } from '../../src/auth/auth_store';
import { ConcordError, ErrorCode } from '../../src/util/errors';

const b = (s: string): Buffer => Buffer.from(s);
const fromKey = Buffer.from([0]);

function codeOf(fn: () => void): ErrorCode | 0 {
  try {
    fn();
    return 0;
  } catch (err) {
    assert.ok(err instanceof ConcordError, String(err));
    return err.code;
  }
}

function enabledStore(): AuthStore {
  const a = new AuthStore();
  a.userAdd('root', 'h', false);
  a.userGrantRole('root', 'root');
  a.enable();
  return a;
}

test('enable needs root with the root role; every change but enable bumps the revision (etcd)', () => {
  const a = new AuthStore();
  assert.equal(a.revision, 1);
  assert.equal(codeOf(() => a.enable()), ErrorCode.AuthRootUserNotExist);
  a.userAdd('root', 'h', false);
  assert.equal(codeOf(() => a.enable()), ErrorCode.AuthRootRoleNotExist);
  a.userGrantRole('root', 'root');
  const r = a.revision;
  a.userGrantRole('root', 'root'); // already granted: nothing changes
  assert.equal(a.revision, r);
  a.enable(); // etcd AuthEnable keeps the revision
  assert.equal(a.revision, r);
  a.enable(); // enabled already: no change
  assert.equal(a.revision, r);
  a.disable(); // etcd AuthDisable commits one
  assert.equal(a.revision, r + 1);
  a.enable();
  assert.equal(codeOf(() => a.userDelete('root')), ErrorCode.AuthInvalidMgmt);
  assert.equal(codeOf(() => a.userRevokeRole('root', 'root')), ErrorCode.AuthInvalidMgmt);
  assert.equal(codeOf(() => a.roleDelete('root')), ErrorCode.AuthInvalidMgmt);
});

test('user and role errors as etcd names them', () => {
  const a = new AuthStore();
  assert.equal(codeOf(() => a.userAdd('', 'h', false)), ErrorCode.AuthUserEmpty);
  a.userAdd('u', 'h', false);
  assert.equal(codeOf(() => a.userAdd('u', 'h', false)), ErrorCode.AuthUserAlreadyExist);
  assert.equal(codeOf(() => a.userGrantRole('nobody', 'r')), ErrorCode.AuthUserNotFound);
  assert.equal(codeOf(() => a.userGrantRole('u', 'r')), ErrorCode.AuthRoleNotFound);
  assert.equal(codeOf(() => a.roleAdd('')), ErrorCode.AuthRoleEmpty);
  a.roleAdd('r');
  assert.equal(codeOf(() => a.roleAdd('r')), ErrorCode.AuthRoleAlreadyExist);
  assert.equal(codeOf(() => a.userRevokeRole('u', 'r')), ErrorCode.AuthRoleNotGranted);
  assert.equal(codeOf(() => a.roleRevokePermission('r', b('k'), b(''))), ErrorCode.AuthPermissionNotGranted);
  a.userGrantRole('u', 'r');
  a.roleDelete('r');
  assert.deepEqual(a.user('u')!.roles, [], 'a deleted role leaves its users');
});

test('permissions: single keys, ranges, prefixes, from-key, unions across roles', () => {
  const a = enabledStore();
  a.userAdd('u', 'h', false);
  a.roleAdd('r1');
  a.roleAdd('r2');
  a.userGrantRole('u', 'r1');
  a.userGrantRole('u', 'r2');
  a.roleGrantPermission('r1', { type: PermType.READ, key: b('a'), rangeEnd: b('c') });
  a.roleGrantPermission('r2', { type: PermType.READWRITE, key: b('c'), rangeEnd: b('e') });
  a.roleGrantPermission('r1', { type: PermType.WRITE, key: b('single'), rangeEnd: b('') });
  a.roleGrantPermission('r2', { type: PermType.READ, key: b('z'), rangeEnd: fromKey });
  const rev = a.revision;
  const read = (k: string, e = ''): ErrorCode | 0 => codeOf(() => a.checkOp('u', rev, b(k), e === '\0' ? fromKey : b(e), PermType.READ));
  const write = (k: string, e = ''): ErrorCode | 0 => codeOf(() => a.checkOp('u', rev, b(k), e === '\0' ? fromKey : b(e), PermType.WRITE));
  assert.equal(read('a'), 0);
  assert.equal(read('b', 'e'), 0, 'union of [a,c) and [c,e)');
  assert.equal(read('a', 'e\0'), ErrorCode.AuthPermissionDenied, 'past e');
  assert.equal(write('a'), ErrorCode.AuthPermissionDenied, 'READ only on [a,c)');
  assert.equal(write('c', 'e'), 0);
  assert.equal(write('single'), 0);
  assert.equal(write('single', 'single\0'), 0, 'a range of exactly that key');
  assert.equal(write('single0'), ErrorCode.AuthPermissionDenied);
  assert.equal(read('single'), ErrorCode.AuthPermissionDenied);
  assert.equal(read('zz', '\0'), 0, 'from-key within a from-key permission');
  assert.equal(read('y', '\0'), ErrorCode.AuthPermissionDenied);
  assert.equal(read('a', 'a'), 0, 'an empty range');
  // Tokens of an older revision, unknown users, no user.
  assert.equal(codeOf(() => a.checkOp('u', rev - 1, b('a'), b(''), PermType.READ)), ErrorCode.AuthOldRevision);
  assert.equal(codeOf(() => a.checkOp('', 0, b('a'), b(''), PermType.READ)), ErrorCode.AuthUserEmpty);
  assert.equal(codeOf(() => a.checkOp('ghost', rev, b('a'), b(''), PermType.READ)), ErrorCode.AuthPermissionDenied);
  assert.equal(codeOf(() => a.checkOp('root', rev, b('anything'), fromKey, PermType.WRITE)), 0, 'root may do anything');
  assert.equal(codeOf(() => a.checkAdmin('u', rev)), ErrorCode.AuthPermissionDenied);
  // Revoking takes effect (and old tokens are refused as old).
  a.roleRevokePermission('r2', b('c'), b('e'));
  assert.equal(codeOf(() => a.checkOp('u', a.revision, b('c'), b(''), PermType.WRITE)), ErrorCode.AuthPermissionDenied);
  // Encoding round trip keeps everything, checks included.
  const copy = AuthStore.decode(a.encode());
  assert.deepEqual(copy.toState(), a.toState());
  assert.equal(codeOf(() => copy.checkOp('u', copy.revision, b('b'), b(''), PermType.READ)), 0);
});

test('disabled: everything is allowed', () => {
  const a = new AuthStore();
  assert.equal(codeOf(() => a.checkOp('', 0, b('k'), b(''), PermType.WRITE)), 0);
  assert.equal(codeOf(() => a.checkAdmin('', 0)), 0);
});
