// A seeded fault schedule for a cluster started with `faults: true` (test/helpers/cluster.ts),
// and the convergence check that follows it.
//
//   const log: string[] = [];
//   await runFaultSchedule(c, seed, log);   // every kind once, in a seeded order, then healed
//   const head = await waitConverged(c);    // every member: same applied index, same keys
//
// Kinds (each happens once per schedule, so every seed covers them all; the seed draws the
// order, the victims and the durations): isolate the leader (two-way partition), a one-way cut
// between two members, a 150 ms ± 50 ms delay on one pair of links, kill -9 of a follower and of
// the leader (each restarted after 1-2.5 s). Extra random faults with `extra`.
import assert from 'node:assert/strict';
import { Prng } from '../../src/util/prng';
import type { ClusterHandle } from './cluster';
import { connect, unary } from './grpc_client';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export type FaultKind = 'isolate-leader' | 'one-way' | 'delay' | 'kill-follower' | 'kill-leader';
export const faultKinds: readonly FaultKind[] = ['isolate-leader', 'one-way', 'delay', 'kill-follower', 'kill-leader'];

async function leaderOrNull(c: ClusterHandle): Promise<number | null> {
  try {
    return await c.leader(5000);
  } catch {
    return null;
  }
}

/** One fault: applied, held for a seeded time, lifted. */
export async function runFault(c: ClusterHandle, kind: FaultKind, p: Prng, log: string[]): Promise<void> {
  const part = c.partitioner!;
  const n = c.members.length;
  const leader = await leaderOrNull(c);
  const t0 = Date.now();
  const note = (s: string): void => {
    log.push(`${s} (+${Date.now() - t0} ms)`);
  };
  if (kind === 'isolate-leader') {
    const victim = leader ?? p.int(n);
    note(`isolate m${victim}${leader === null ? ' (no leader known)' : ' (leader)'}`);
    part.isolate(victim);
    await sleep(2500 + p.int(2000));
    part.heal();
  } else if (kind === 'one-way') {
    const a = leader ?? p.int(n);
    const b = (a + 1 + p.int(n - 1)) % n;
    note(`one-way cut m${a} -> m${b}`);
    part.oneWay(a, b);
    await sleep(1500 + p.int(1500));
    part.heal();
  } else if (kind === 'delay') {
    const a = p.int(n);
    const b = (a + 1 + p.int(n - 1)) % n;
    note(`delay m${a} <-> m${b} by 150 ± 50 ms`);
    part.link(a, b).delay('both', 150, 50);
    part.link(b, a).delay('both', 150, 50);
    await sleep(2000);
    part.link(a, b).undelay('both');
    part.link(b, a).undelay('both');
  } else {
    const victim = kind === 'kill-leader' ? (leader ?? p.int(n)) : ((leader ?? 0) + 1 + p.int(n - 1)) % n;
    note(`kill -9 m${victim}${kind === 'kill-leader' ? ' (leader)' : ' (follower)'}`);
    await c.kill(victim);
    await sleep(1000 + p.int(1500));
    await c.restart(victim);
    note(`restarted m${victim}`);
  }
}

/** Every kind once, in a seeded order (1-2 s apart), plus `extra` random ones; healed at the end. */
export async function runFaultSchedule(c: ClusterHandle, seed: number, log: string[], extra = 0): Promise<void> {
  const p = new Prng(seed * 2654435761 >>> 0 || 1);
  const kinds: FaultKind[] = [...faultKinds];
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = p.int(i + 1);
    [kinds[i], kinds[j]] = [kinds[j]!, kinds[i]!];
  }
  for (let i = 0; i < extra; i++) kinds.push(faultKinds[p.int(faultKinds.length)]!);
  try {
    for (const kind of kinds) {
      await sleep(1000 + p.int(1000));
      await runFault(c, kind, p, log);
    }
  } finally {
    c.partitioner!.heal();
    for (let i = 0; i < c.procs.length; i++) if (c.procs[i] === null) await c.restart(i);
  }
}

/**
 * Waits until every running member has applied the same index and holds the same keys (a
 * serializable Range of everything on each), then checks their HashKV at that revision agree
 * (the whole history, not just the latest values); returns that revision.
 */
export async function waitConverged(c: ClusterHandle, timeoutMs = 20_000): Promise<number> {
  const live = c.members.map((_, i) => i).filter((i) => c.procs[i] !== null);
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const states: string[] = [];
    const applied: number[] = [];
    let rev = 0;
    for (const i of live) {
      const m = connect('etcdserverpb.Maintenance', c.members[i]!.clientUrl);
      const kv = connect('etcdserverpb.KV', c.members[i]!.clientUrl);
      try {
        const st = await unary(m, 'Status', {}, { timeoutMs: 2000 });
        applied.push(Number(st.raftAppliedIndex));
        const r = await unary(kv, 'Range', { key: Buffer.from([0]), range_end: Buffer.from([0]), serializable: true }, { timeoutMs: 2000 });
        rev = Number(r.header!.revision);
        states.push(`rev ${rev} ` + r.kvs.map((x) => `${Buffer.from(x.key ?? []).toString()}=${Buffer.from(x.value ?? []).toString()}@${String(x.create_revision)}/${String(x.mod_revision)}/${String(x.version)}`).join(' '));
      } catch (err) {
        states.push(`unreachable (${(err as Error).message})`);
      } finally {
        m.close();
        kv.close();
      }
    }
    last = states.map((s, k) => `member m${live[k]} (applied ${applied[k] ?? '?'}): ${s}`).join('\n');
    if (new Set(applied).size === 1 && applied.length === live.length && new Set(states).size === 1) {
      // The same keys everywhere; the whole history must agree too (HashKV, etcd's value).
      const hashes: string[] = [];
      for (const i of live) {
        const m = connect('etcdserverpb.Maintenance', c.members[i]!.clientUrl);
        try {
          const h = await unary(m, 'HashKV', { revision: rev }, { timeoutMs: 5000 });
          hashes.push(`m${i}: hash ${h.hash} compact ${String(h.compact_revision)}`);
        } finally {
          m.close();
        }
      }
      assert.equal(new Set(hashes.map((h) => h.slice(h.indexOf(':')))).size, 1, `HashKV at ${rev} differs:\n${hashes.join('\n')}`);
      return rev;
    }
    if (Date.now() > deadline) assert.fail(`members did not converge:\n${last}`);
    await sleep(200);
  }
}
