// Lock, Election and Lease served by every member of a 3-member cluster (issue #12): a lock
// held through one member blocks a Lock through another until Unlock, the holder's lease revoke
// or its expiry; an election campaigned on one member makes a candidate on another wait while
// Observe and Leader on the third see the leader's value, Proclaim and Resign reach them all.
// Leases across a leader change (with --experimental-lease-checkpoint-interval 1s): the new
// leader keeps the checkpointed remaining TTL (etcd 3.6), not the whole TTL again; a lease
// without keep-alives still expires (its keys deleted on every member, in one revision, once);
// a lease kept alive through the leader outlives the leader (the client resumes on the new one).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';

import { type ClusterHandle, startCluster } from '../helpers/cluster';
import { connect, num, openStream, str, StreamReader, unary } from '../helpers/grpc_client';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const B = (s: string): Buffer => Buffer.from(s);

type Pending<T> = { promise: Promise<T>; settled: () => boolean };
function track<T>(p: Promise<T>): Pending<T> {
  let done = false;
  p.then(() => { done = true; }, () => { done = true; });
  return { promise: p, settled: () => done };
}

/** Clients on member i, closed after the test. */
function clientsOf(c: ClusterHandle, t: { after(f: () => void): void }) {
  const make = (i: number) => ({
    kv: connect('etcdserverpb.KV', c.members[i]!.clientUrl),
    lease: connect('etcdserverpb.Lease', c.members[i]!.clientUrl),
    lock: connect('v3lockpb.Lock', c.members[i]!.clientUrl),
    election: connect('v3electionpb.Election', c.members[i]!.clientUrl),
    watch: connect('etcdserverpb.Watch', c.members[i]!.clientUrl),
  });
  const all = c.members.map((_, i) => make(i));
  t.after(() => {
    for (const x of all) for (const cl of Object.values(x)) cl.close();
  });
  return all;
}

async function grant(lease: ReturnType<typeof connect<'etcdserverpb.Lease'>>, ttl: number): Promise<Long> {
  const r = await unary(lease, 'LeaseGrant', { TTL: ttl });
  return Long.fromValue(r.ID as never);
}

// Timeouts: a hang fails the test instead of blocking the suite (each runs 10-25 s).
test('Lock and Election across members', { timeout: 120_000 }, async (t) => {
  const c = await startCluster({ size: 3, token: 'services-lock' });
  t.after(() => c.stop());
  const leader = await c.leader();
  // A, B, C: a follower, the leader, the other follower.
  const [A, Bm, C] = [(leader + 1) % 3, leader, (leader + 2) % 3];
  const cl = clientsOf(c, t);
  const who = `A=m${A} (follower), B=m${Bm} (leader), C=m${C} (follower)`;

  // Lock on A; Lock on B waits until Unlock (sent through C).
  const la = await grant(cl[A]!.lease, 30);
  const lb = await grant(cl[Bm]!.lease, 30);
  const held = await unary(cl[A]!.lock, 'Lock', { name: B('L'), lease: la });
  assert.equal(str(held.key), `L/${la.toUnsigned().toString(16)}`);
  const waiting = track(unary(cl[Bm]!.lock, 'Lock', { name: B('L'), lease: lb }, { timeoutMs: 20_000 }));
  await sleep(1000);
  assert.equal(waiting.settled(), false, `${who}: the Lock through B returned while A held the lock`);
  await unary(cl[C]!.lock, 'Unlock', { key: held.key });
  const gotB = await waiting.promise;
  assert.equal(str(gotB.key), `L/${lb.toUnsigned().toString(16)}`);

  // B holds it; a Lock on C waits until B's lease is revoked (through A).
  const lc = await grant(cl[C]!.lease, 30);
  const waitingC = track(unary(cl[C]!.lock, 'Lock', { name: B('L'), lease: lc }, { timeoutMs: 20_000 }));
  await sleep(1000);
  assert.equal(waitingC.settled(), false, `${who}: the Lock through C returned while B held the lock`);
  await unary(cl[A]!.lease, 'LeaseRevoke', { ID: lb });
  const gotC = await waitingC.promise;
  assert.equal(str(gotC.key), `L/${lc.toUnsigned().toString(16)}`);

  // C holds it with a short lease that nobody keeps alive: a Lock on A gets it once it expires.
  await unary(cl[C]!.lease, 'LeaseRevoke', { ID: lc });
  const short = await grant(cl[C]!.lease, 2);
  await unary(cl[C]!.lock, 'Lock', { name: B('L2'), lease: short });
  const la2 = await grant(cl[A]!.lease, 30);
  const t0 = Date.now();
  const waitingA = track(unary(cl[A]!.lock, 'Lock', { name: B('L2'), lease: la2 }, { timeoutMs: 20_000 }));
  await sleep(500);
  assert.equal(waitingA.settled(), false, `${who}: the Lock through A returned while C held L2`);
  await waitingA.promise;
  const waited = Date.now() - t0;
  assert.ok(waited < 6000, `${who}: the lock waited ${waited} ms for a TTL-2 lease`);

  // Election: campaign on A; a candidate on B waits; Observe and Leader on C see the leader.
  const ea = await grant(cl[A]!.lease, 30);
  const eb = await grant(cl[Bm]!.lease, 30);
  const won = await unary(cl[A]!.election, 'Campaign', { name: B('E'), lease: ea, value: B('a') });
  const candidate = track(unary(cl[Bm]!.election, 'Campaign', { name: B('E'), lease: eb, value: B('b') }, { timeoutMs: 20_000 }));
  const observeCall = (cl[C]!.election as unknown as { Observe(r: object, md: grpc.Metadata, o: object): grpc.ClientReadableStream<any> })
    .Observe({ name: B('E') }, new grpc.Metadata(), {});
  observeCall.on('error', () => undefined);
  t.after(() => observeCall.cancel());
  const observed = new StreamReader<any>(observeCall);
  assert.equal(str((await observed.next()).kv.value), 'a', `${who}: Observe on C`);
  assert.equal(str((await unary(cl[C]!.election, 'Leader', { name: B('E') })).kv!.value), 'a', `${who}: Leader on C`);
  await sleep(500);
  assert.equal(candidate.settled(), false, `${who}: the Campaign through B returned while A led`);
  // Proclaim through A reaches C.
  await unary(cl[A]!.election, 'Proclaim', { leader: won.leader, value: B('a2') });
  assert.equal(str((await observed.next()).kv.value), 'a2', `${who}: Observe on C after Proclaim`);
  assert.equal(str((await unary(cl[Bm]!.election, 'Leader', { name: B('E') })).kv!.value), 'a2', `${who}: Leader on B`);
  // Resign through C (any member): B's campaign wins; Observe on C sees B's value.
  await unary(cl[C]!.election, 'Resign', { leader: won.leader });
  const bWon = await candidate.promise;
  assert.equal(str(bWon.leader!.key), `E/${eb.toUnsigned().toString(16)}`);
  assert.equal(str((await observed.next()).kv.value), 'b', `${who}: Observe on C after Resign`);
  for (const i of [A, Bm, C]) assert.equal(str((await unary(cl[i]!.election, 'Leader', { name: B('E') })).kv!.value), 'b', `${who}: Leader on m${i}`);
  // The old leader key no longer proclaims.
  await assert.rejects(unary(cl[A]!.election, 'Proclaim', { leader: won.leader, value: B('late') }),
    (e: grpc.ServiceError) => e.details === 'election: not leader');
});

/** LeaseTimeToLive on member i: the remaining TTL (-1 unknown). */
async function ttlOn(c: ClusterHandle, i: number, id: Long): Promise<{ ttl: number; granted: number; keys: string[] }> {
  const l = connect('etcdserverpb.Lease', c.members[i]!.clientUrl);
  try {
    const r = await unary(l, 'LeaseTimeToLive', { ID: id, keys: true }, { timeoutMs: 5000 });
    return { ttl: num(r.TTL as never), granted: num(r.grantedTTL as never), keys: (r.keys ?? []).map((k) => str(k)) };
  } finally {
    l.close();
  }
}

/**
 * Keeps `id` alive as an etcd client does: through the member it is connected to (`home`; a
 * follower forwards each keep-alive to the leader), moving to the next running member when its
 * stream fails.
 */
function keepAliveThrough(c: ClusterHandle, home: number, id: Long, everyMs: number): { stop(): void; answers: number; reconnects: number } {
  const state = { stop: () => undefined as void, answers: 0, reconnects: 0 };
  let stopped = false;
  let current: { call: grpc.ClientDuplexStream<any, any>; close(): void } | null = null;
  const run = async (): Promise<void> => {
    let member = home;
    while (!stopped) {
      if (c.procs[member] === null) {
        member = (member + 1) % c.members.length;
        await sleep(100);
        continue;
      }
      const l = connect('etcdserverpb.Lease', c.members[member]!.clientUrl);
      const s = openStream(l, 'LeaseKeepAlive');
      current = { call: s.call as never, close: () => l.close() };
      s.call.on('error', () => undefined);
      try {
        while (!stopped) {
          s.call.write({ ID: id });
          // A follower's answer waits for a leader: up to an election after a leader kill.
          const r = await s.reader.next(5000);
          if (num(r.TTL as never) <= 0) throw new Error('lease gone');
          state.answers++;
          await sleep(everyMs);
        }
      } catch {
        state.reconnects++;
        member = (member + 1) % c.members.length;
      } finally {
        s.call.cancel();
        l.close();
      }
    }
  };
  const done = run();
  state.stop = () => {
    stopped = true;
    current?.call.cancel();
    current?.close();
    void done;
  };
  return state;
}

test('Leases across a leader change: checkpointed TTL, expiry once on every member, keep-alive', { timeout: 120_000 }, async (t) => {
  const c = await startCluster({ size: 3, token: 'services-lease', extraArgs: ['--experimental-lease-checkpoint-interval', '1s'] });
  t.after(() => c.stop());
  const cl = clientsOf(c, t);
  const leader0 = await c.leader();
  const f = (leader0 + 1) % 3;

  // A TTL-60 lease and a TTL-5 lease without keep-alives (granted through a follower), a TTL-3
  // lease kept alive through that follower; keys on each through different members.
  const long60 = await grant(cl[f]!.lease, 60);
  const short = await grant(cl[f]!.lease, 5);
  const kept = await grant(cl[leader0]!.lease, 3);
  const grantedAt = Date.now();
  await unary(cl[leader0]!.kv, 'Put', { key: B('exp/a'), value: B('1'), lease: short });
  const lastPut = await unary(cl[(leader0 + 2) % 3]!.kv, 'Put', { key: B('exp/b'), value: B('2'), lease: short });
  await unary(cl[f]!.kv, 'Put', { key: B('kept'), value: B('k'), lease: kept });
  const ka = keepAliveThrough(c, f, kept, 700);
  t.after(() => ka.stop());
  // Watchers on every member for the expiring keys.
  const watches = [0, 1, 2].map((i) => {
    const s = openStream(cl[i]!.watch, 'Watch');
    s.call.on('error', () => undefined);
    s.call.write({ create_request: { key: B('exp/'), range_end: B('exp0'), start_revision: num(lastPut.header!.revision as never) + 1 } });
    t.after(() => s.call.cancel());
    return s;
  });
  for (const w of watches) assert.equal((await w.reader.next()).created, true);

  await sleep(3000);
  // Every member answers LeaseTimeToLive alike (etcd forwards it to the leader).
  const before = await Promise.all([0, 1, 2].map((i) => ttlOn(c, i, long60)));
  assert.ok(before.every((x) => x.granted === 60 && Math.abs(x.ttl - before[leader0]!.ttl) <= 1 && x.ttl <= 57),
    `LeaseTimeToLive by member (leader m${leader0}): ${before.map((x) => `${x.ttl}/${x.granted}`).join(' ')}`);
  await c.kill(leader0);
  const leader1 = await c.leader();
  // The remaining TTLs the new leader runs the leases with (whole seconds, rounded down).
  const [newTtl, shortTtl] = await Promise.all([ttlOn(c, leader1, long60), ttlOn(c, leader1, short)]);
  const shortReadAt = Date.now();
  // Until the keys are gone on every live member (serializable: each member's own state).
  for (const deadline = Date.now() + 15_000; ;) {
    const gone = await Promise.all([0, 1, 2].filter((i) => c.procs[i] !== null).map(async (i) => (await unary(cl[i]!.kv, 'Range', { key: B('exp/'), range_end: B('exp0'), serializable: true })).kvs.length === 0));
    if (gone.every((x) => x)) break;
    assert.ok(Date.now() < deadline, 'the TTL-5 lease\'s keys were not deleted within 15 s of the new leader\'s answer');
    await sleep(100);
  }
  const goneAt = Date.now();
  const expiredAfter = goneAt - grantedAt;
  t.diagnostic(`leader m${leader0} killed 3 s after the grants; new leader m${leader1}: TTL-60 lease at ${newTtl.ttl} s, TTL-5 lease at ${shortTtl.ttl} s; ` +
    `TTL-5 lease's keys gone ${expiredAfter} ms after its grant, ${goneAt - shortReadAt} ms after the new leader said ${shortTtl.ttl} s`);
  assert.equal(newTtl.granted, 60);
  assert.ok(newTtl.ttl <= 58 && newTtl.ttl >= 50, `TTL-60 lease 3 s + a leader change later: remaining ${newTtl.ttl} on the new leader m${leader1} (reset to 60 = checkpoints lost)`);
  // The TTL-5 lease had checkpoints at 1, 2 and maybe 3 s: the new leader runs it for at most 3 s
  // (4 = the whole TTL again; -1 = already expired, as it may under load).
  assert.ok(shortTtl.ttl <= 3, `TTL-5 lease 3 s + a leader change later: remaining ${shortTtl.ttl} on the new leader m${leader1}`);
  // Measured from the new leader's answer rather than from the grant, so that a slow election
  // on a loaded machine does not count: gone within the remaining TTL (+1 for the rounding down)
  // plus 2.5 s for the expiry check (every 500 ms), the revoke's commit and the apply everywhere.
  const expiryMsMax = (Math.max(shortTtl.ttl, 0) + 1) * 1000 + 2500;
  assert.ok(goneAt - shortReadAt <= expiryMsMax, `the TTL-5 lease's keys were gone ${goneAt - shortReadAt} ms after the new leader gave it ${shortTtl.ttl} s (max ${expiryMsMax} ms)`);

  // Once: one delete revision, the same on every live member, both keys in it.
  await c.restart(leader0);
  const deletes: string[] = [];
  for (const i of [0, 1, 2]) {
    if (i === leader0) continue;
    const evs = (await watches[i]!.reader.next(5000)).events ?? [];
    deletes.push(`m${i}: ` + evs.map((e: any) => `${e.type}:${str(e.kv.key)}@${num(e.kv.mod_revision)}`).join(' '));
    const more = await watches[i]!.reader.drain(500);
    assert.equal(more.length, 0, `m${i}: more watch responses after the expiry: ${JSON.stringify(more)}`);
  }
  // The restarted old leader's history shows the same one revision.
  const wk = connect('etcdserverpb.Watch', c.members[leader0]!.clientUrl);
  t.after(() => wk.close());
  const w0 = openStream(wk, 'Watch');
  w0.call.on('error', () => undefined);
  t.after(() => w0.call.cancel());
  w0.call.write({ create_request: { key: B('exp/'), range_end: B('exp0'), start_revision: num(lastPut.header!.revision as never) + 1 } });
  await w0.reader.next();
  const evs0 = (await w0.reader.next(10_000)).events ?? [];
  deletes.push(`m${leader0}: ` + evs0.map((e: any) => `${e.type}:${str(e.kv.key)}@${num(e.kv.mod_revision)}`).join(' '));
  assert.equal((await w0.reader.drain(500)).length, 0, `m${leader0} (restarted): more than one expiry revision`);
  const bodies = new Set(deletes.map((d) => d.replace(/^m\d: /, '')));
  assert.equal(bodies.size, 1, `the expiry differs between members:\n${deletes.join('\n')}`);
  assert.match([...bodies][0]!, /^1:exp\/a@(\d+) 1:exp\/b@\1$/, `the expiry is one revision deleting both keys:\n${deletes.join('\n')}`);
  for (const i of [0, 1, 2]) assert.equal((await ttlOn(c, i, short)).ttl, -1, 'the expired lease is gone');

  // The kept lease (TTL 3) lived through the leader change: 3 s before + the change + now.
  const keptTtl = await ttlOn(c, await c.leader(), kept);
  const keptKey = await unary(cl[f]!.kv, 'Range', { key: B('kept') });
  t.diagnostic(`kept-alive lease: ${ka.answers} answers, ${ka.reconnects} reconnects; TTL now ${keptTtl.ttl}`);
  assert.equal(ka.reconnects, 0, 'the follower kept answering keep-alives through the leader change');
  assert.ok(keptTtl.ttl > 0, `the lease kept alive through the leader expired across the leader change (TTL ${keptTtl.ttl})`);
  assert.equal(keptKey.kvs.length, 1, 'its key is still there');
  ka.stop();
  // Without keep-alives it expires on every member.
  await sleep(5000);
  for (const i of [0, 1, 2]) {
    const r = await unary(cl[i]!.kv, 'Range', { key: B('kept'), serializable: true });
    assert.equal(r.kvs.length, 0, `m${i}: the key of the lease no longer kept alive is still there`);
  }
});
