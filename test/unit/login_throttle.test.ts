// auth/login_throttle.ts: failed logins slow down the next ones per name and per connection.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LoginThrottle, loginDelayMaxMs, loginForgetMs } from '../../src/auth/login_throttle';

test('delays double per failure, per name and per peer, up to the cap; success and time forget them', () => {
  let now = 1_000_000;
  const t = new LoginThrottle(() => now, 3);
  assert.equal(t.waitMs('alice', 'p1'), 0);
  t.failed('alice', 'p1');
  assert.equal(t.waitMs('alice', 'p1'), 100);
  assert.equal(t.waitMs('alice', 'p2'), 100, 'another connection, same name');
  assert.equal(t.waitMs('bob', 'p1'), 100, 'same connection, another name');
  assert.equal(t.waitMs('bob', 'p2'), 0);
  now += 100;
  t.failed('alice', 'p1');
  assert.equal(t.waitMs('alice', 'p9'), 200);
  for (let i = 0; i < 20; i++) t.failed('alice', 'p1');
  assert.equal(t.waitMs('alice', 'p9'), loginDelayMaxMs);
  t.succeeded('alice', 'p1');
  assert.equal(t.waitMs('alice', 'p1'), 0);
  t.failed('carol', 'p3');
  now += loginForgetMs + 1;
  assert.equal(t.waitMs('carol', 'p3'), 0, 'forgotten after a quiet minute');
  // Bounded: the oldest entries go.
  for (const n of ['a', 'b', 'c', 'd', 'e']) t.failed(n, 'same');
  assert.equal(t.waitMs('a', 'x'), 0, 'the oldest name was dropped');
  assert.ok(t.waitMs('e', 'x') > 0);
});
