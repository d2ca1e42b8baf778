// lease/lessor.ts is pure (time comes in as arguments): expiry order, renewals, revoke retries,
// checkpoint scheduling and restore, driven by a made-up clock.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Long from 'long';
import { Lessor } from '../../src/lease/lessor';
import { LeaseChangeKind } from '../../src/lease/lease_store';
import { Prng } from '../../src/util/prng';

const id = (n: number): Long => Long.fromNumber(n);
const ids = (ls: Long[]): number[] => ls.map((l) => l.toNumber()).sort((a, b) => a - b);

test('leases expire in time order, renewals push expiry back, revokes are retried', () => {
  const l = new Lessor({ checkpointIntervalMs: 0, revokeRetryMs: 3000 });
  l.applied(LeaseChangeKind.Granted, id(1), 5, 0, 0);
  l.applied(LeaseChangeKind.Granted, id(2), 10, 0, 0);
  l.applied(LeaseChangeKind.Granted, id(3), 2, 0, 1000);
  assert.deepEqual(ids(l.expired(2999, 10)), []);
  assert.deepEqual(ids(l.expired(3000, 10)), [3]);
  assert.equal(l.renew(id(1), 4000), 5); // now expires at 9000
  assert.equal(l.remainingSeconds(id(1), 4500), 4);
  assert.deepEqual(ids(l.expired(5999, 10)), []); // 3 was proposed at 3000: not again before 6000
  assert.deepEqual(ids(l.expired(6000, 10)), [3]); // its revoke did not apply: retried
  assert.deepEqual(ids(l.expired(9000, 10)), [1, 3]); // 3 again 3 s after its retry
  // An expired lease is not renewed (etcd: keep-alive answers TTL 0).
  assert.equal(l.renew(id(1), 9001), 0);
  l.applied(LeaseChangeKind.Revoked, id(1), 5, 0, 9100);
  l.applied(LeaseChangeKind.Revoked, id(3), 2, 0, 9100);
  assert.equal(l.has(id(1)), false);
  assert.deepEqual(ids(l.expired(10_000, 10)), [2]);
  assert.equal(l.renew(id(42), 0), 0);
  assert.equal(l.remainingSeconds(id(42), 0), null);
});

test('expired() returns at most max per call (rate limit); the rest stay due', () => {
  const l = new Lessor({ checkpointIntervalMs: 0, revokeRetryMs: 3000 });
  for (let i = 1; i <= 1200; i++) l.applied(LeaseChangeKind.Granted, id(i), 1, 0, 0);
  const first = l.expired(1000, 500);
  const second = l.expired(1000, 500);
  const third = l.expired(1000, 500);
  assert.equal(first.length, 500);
  assert.equal(second.length, 500);
  assert.equal(third.length, 200);
  assert.equal(new Set([...first, ...second, ...third].map(String)).size, 1200);
});

test('checkpoints: only leases outliving one interval, remaining rounded up, rescheduled on apply', () => {
  const l = new Lessor({ checkpointIntervalMs: 1000, revokeRetryMs: 3000 });
  l.applied(LeaseChangeKind.Granted, id(1), 30, 0, 0);
  l.applied(LeaseChangeKind.Granted, id(2), 1, 0, 0); // shorter than the interval: never
  assert.deepEqual(l.dueCheckpoints(999, 10), []);
  const due = l.dueCheckpoints(1000, 10);
  assert.deepEqual(due.map((c) => [c.id.toNumber(), c.remaining]), [[1, 29]]);
  assert.deepEqual(l.dueCheckpoints(5000, 10), []); // next one only after the checkpoint applies
  l.applied(LeaseChangeKind.Checkpointed, id(1), 30, 29, 1100);
  assert.equal(l.needsCheckpointClear(id(1)), true);
  assert.deepEqual(l.dueCheckpoints(2100, 10).map((c) => c.remaining), [28]);
  // Renewal: the clearing checkpoint (remaining 0) makes a restart use the whole TTL again.
  l.renew(id(1), 2200);
  l.applied(LeaseChangeKind.Checkpointed, id(1), 30, 0, 2250);
  assert.equal(l.needsCheckpointClear(id(1)), false);
});

test('restore: a checkpointed lease runs its remaining TTL, others their whole TTL', () => {
  const l = new Lessor({ checkpointIntervalMs: 0, revokeRetryMs: 3000 });
  l.restore(id(1), 60, 12, 0);
  l.restore(id(2), 60, 0, 0);
  assert.equal(l.remainingSeconds(id(1), 0), 12);
  assert.equal(l.remainingSeconds(id(2), 0), 60);
  // A checkpoint replayed from the WAL at start-up restarts the lease from it.
  l.applied(LeaseChangeKind.Checkpointed, id(2), 60, 20, 0, true);
  assert.equal(l.remainingSeconds(id(2), 0), 20);
  l.applied(LeaseChangeKind.Checkpointed, id(1), 60, 0, 0, true);
  assert.equal(l.remainingSeconds(id(1), 0), 60);
  assert.deepEqual(ids(l.expired(12_000, 10)), []);
  assert.deepEqual(ids(l.expired(20_000, 10)), [2]);
});

test('promote: a new leader runs every lease from now, for its checkpointed or whole TTL', () => {
  const l = new Lessor({ checkpointIntervalMs: 0, revokeRetryMs: 3000 });
  // Granted long ago on this (then follower) member: without promote they would expire at once.
  l.applied(LeaseChangeKind.Granted, id(1), 10, 0, 0);
  l.applied(LeaseChangeKind.Granted, id(2), 60, 0, 0);
  l.applied(LeaseChangeKind.Checkpointed, id(2), 60, 7, 50_000);
  assert.deepEqual(ids(l.expired(100_000, 10)), [1, 2]); // the stale clock: both look expired
  l.promote(100_000, 1000);
  assert.deepEqual(ids(l.expired(100_000, 10)), []); // proposed revokes are forgotten too
  assert.equal(l.remainingSeconds(id(1), 100_000), 10);
  assert.equal(l.remainingSeconds(id(2), 100_000), 7);
  assert.deepEqual(ids(l.expired(107_000, 10)), [2]);
  assert.deepEqual(ids(l.expired(110_000, 10)), [1, 2]);
});

test('promote spreads expiries piled into one second to 3/4 of the revoke rate', () => {
  const l = new Lessor({ checkpointIntervalMs: 0, revokeRetryMs: 60_000 });
  for (let i = 1; i <= 1000; i++) l.applied(LeaseChangeKind.Granted, id(i), 5, 0, 0);
  l.promote(0, 100); // 75 per second
  const perStep: number[] = []; // expiries per 100 ms
  let revoked = 0;
  for (let t = 5000; t <= 25_000; t += 100) {
    const n = l.expired(t, 10_000).length;
    perStep.push(n);
    revoked += n;
  }
  for (let i = 0; i + 10 <= perStep.length; i++) {
    const inOneSecond = perStep.slice(i, i + 10).reduce((a, b) => a + b, 0);
    assert.ok(inOneSecond <= 76, `${inOneSecond} expiries within one second from ${5000 + 100 * i} ms`);
  }
  assert.equal(revoked, 1000);
});

test('seeded random grants, renewals and revokes: expired() matches a brute-force model', () => {
  const prng = new Prng(20261129);
  const l = new Lessor({ checkpointIntervalMs: 0, revokeRetryMs: 3000 });
  const model = new Map<number, number>(); // id -> expiry ms
  let now = 0;
  let nextId = 1;
  for (let step = 0; step < 3000; step++) {
    now += prng.nextU32() % 300;
    const op = prng.nextU32() % 10;
    if (op < 4) {
      const id = nextId++;
      const ttl = 1 + (prng.nextU32() % 20);
      l.applied(LeaseChangeKind.Granted, Long.fromNumber(id), ttl, 0, now);
      model.set(id, now + ttl * 1000);
    } else if (op < 8 && model.size > 0) {
      const ids = [...model.keys()];
      const id = ids[prng.nextU32() % ids.length]!;
      const ttl = l.renew(Long.fromNumber(id), now);
      if (model.get(id)! > now) {
        assert.ok(ttl > 0);
        model.set(id, now + ttl * 1000);
      } else {
        assert.equal(ttl, 0, 'an expired lease is not renewed');
      }
    }
    const due = ids(l.expired(now, 1_000_000));
    const want = [...model].filter(([, at]) => at <= now).map(([id]) => id).sort((a, b) => a - b);
    assert.deepEqual(due, want, `step ${step} at ${now} ms`);
    for (const id of due) {
      l.applied(LeaseChangeKind.Revoked, Long.fromNumber(id), 0, 0, now);
      model.delete(id);
    }
  }
  assert.equal(l.size, model.size);
});
