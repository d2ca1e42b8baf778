// Durability under SIGKILL: concurrent clients write (Puts, Txns, DeleteRanges), every
// acknowledged write is recorded with its revision, the server is killed at a random moment
// and restarted on the same data dir, several times; then every acknowledged write must be
// there with its value and mod_revision, history reads at acknowledged revisions must return
// what was acknowledged, nothing that was never sent may appear, and revisions never go back.
// Also: SIGTERM is a prompt clean exit that keeps the data, and a second server on the same
// data dir refuses to start.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';

import { etcdserverpb } from '../../src/gen/proto';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { bytes, connect, num, prefixEnd, str, unary, type ServiceClient } from '../helpers/grpc_client';
import { Prng } from '../../src/util/prng';

type KV = ServiceClient<'etcdserverpb.KV'>;

/** What a key holds: a value written at `rev`, or nothing (deleted at `rev`, or never written). */
type State = { value: string; rev: number } | { value: null; rev: number };

/** A write sent but not (yet) acknowledged: the states its keys may be left in. */
interface InFlight {
  next: Map<string, string | null>;
}

interface HistoryPoint {
  key: string;
  rev: number;
  value: string | null;
}

const CLIENTS = 8;
const CYCLES = 4;

class Model {
  /** Acknowledged state of every key ever written. */
  readonly keys = new Map<string, State>();
  /** Per client: the write it had sent when the server died, if any. */
  readonly inflight = new Map<number, InFlight>();
  readonly history: HistoryPoint[] = [];
  /** Every acknowledged revision, with what acknowledged it (each must be unique). */
  readonly revs = new Map<number, string>();
  maxAckedRev = 0;

  ack(what: string, rev: number, writes: Map<string, string | null>): void {
    assert.ok(!this.revs.has(rev), `revision ${rev} acknowledged twice (${this.revs.get(rev)} and ${what})`);
    assert.ok(rev > 0);
    this.revs.set(rev, what);
    this.maxAckedRev = Math.max(this.maxAckedRev, rev);
    for (const [k, v] of writes) {
      this.keys.set(k, { value: v, rev });
      this.history.push({ key: k, rev, value: v });
    }
  }
}

/** One client: sequential writes until the server goes away or `stop()`. */
async function clientLoop(id: number, cycle: number, kv: KV, model: Model, prng: Prng, stopped: () => boolean,
  errors: string[]): Promise<number> {
  const prefix = `c${cycle}/w${id}/`;
  const livePuts: string[] = []; // our keys that exist (acknowledged puts, not deleted)
  const liveTxns: string[] = []; // prefixes of our acknowledged txns
  let lastPut: { key: string; rev: number } | null = null;
  let ops = 0;
  for (let i = 0; !stopped(); i++) {
    const roll = prng.int(10);
    const writes = new Map<string, string | null>();
    let send: () => Promise<{ rev: number; check?: () => void }>;
    if (roll === 7 && lastPut !== null) {
      // Txn guarded by the mod revision of our last acknowledged put: must succeed.
      const guard = lastPut;
      const tp = `${prefix}t${i}/`;
      writes.set(`${tp}a`, `txn-a ${cycle}:${id}:${i}`);
      writes.set(`${tp}b`, `txn-b ${cycle}:${id}:${i}`);
      send = async () => {
        const r = await unary(kv, 'Txn', {
          compare: [{
            key: bytes(guard.key), target: etcdserverpb.Compare.CompareTarget.MOD,
            result: etcdserverpb.Compare.CompareResult.EQUAL, mod_revision: guard.rev,
          }],
          success: [...writes].map(([k, v]) => ({ request_put: { key: bytes(k), value: bytes(v!) } })),
          failure: [{ request_put: { key: bytes(`${tp}failed`), value: bytes('x') } }],
        });
        return { rev: num(r.header?.revision), check: () => assert.equal(r.succeeded, true, `txn ${tp}`) };
      };
      liveTxns.push(tp);
    } else if (roll === 8 && livePuts.length > 1) {
      const key = livePuts.splice(prng.int(livePuts.length - 1), 1)[0]!; // never the last put (txn guard)
      writes.set(key, null);
      send = async () => {
        const r = await unary(kv, 'DeleteRange', { key: bytes(key) });
        return { rev: num(r.header?.revision), check: () => assert.equal(num(r.deleted), 1, `delete ${key}`) };
      };
    } else if (roll === 9 && liveTxns.length > 0) {
      const tp = liveTxns.splice(prng.int(liveTxns.length), 1)[0]!;
      writes.set(`${tp}a`, null);
      writes.set(`${tp}b`, null);
      send = async () => {
        const r = await unary(kv, 'DeleteRange', { key: bytes(tp), range_end: prefixEnd(tp), prev_kv: true });
        return {
          rev: num(r.header?.revision),
          check: () => assert.deepEqual(r.prev_kvs.map((p) => str(p.key)), [`${tp}a`, `${tp}b`]),
        };
      };
    } else {
      const key = `${prefix}k${i}`;
      const value = `put ${cycle}:${id}:${i}:${prng.int(1e9)}`;
      writes.set(key, value);
      send = async () => {
        const r = await unary(kv, 'Put', { key: bytes(key), value: bytes(value) });
        return { rev: num(r.header?.revision) };
      };
      livePuts.push(key);
    }
    model.inflight.set(id, { next: writes });
    let res: { rev: number; check?: () => void };
    try {
      res = await send();
    } catch (err) {
      if (!stopped()) errors.push(`client ${id}: ${(err as grpc.ServiceError).details ?? String(err)}`);
      return ops; // the server is gone: this write stays in flight
    }
    model.inflight.delete(id);
    res.check?.();
    model.ack(`client ${id} op ${i}`, res.rev, writes);
    for (const [k, v] of writes) if (v !== null && k.includes('/k')) lastPut = { key: k, rev: res.rev };
    ops++;
  }
  return ops;
}

/** Every key (all cycles) and the current revision. */
async function readAll(kv: KV): Promise<{ rev: number; kvs: Map<string, { value: string; mod: number }> }> {
  const r = await unary(kv, 'Range', { key: Buffer.from([0]), range_end: Buffer.from([0]) }, { timeoutMs: 30_000 });
  const kvs = new Map<string, { value: string; mod: number }>();
  for (const k of r.kvs) kvs.set(str(k.key), { value: str(k.value), mod: num(k.mod_revision) });
  return { rev: num(r.header?.revision), kvs };
}

/**
 * Checks the store against the model after a restart; then settles the writes that were in
 * flight to what the store shows, so the next cycle knows every key exactly.
 */
async function verify(kv: KV, model: Model, prng: Prng, minRev: number): Promise<{ rev: number; settled: number }> {
  const { rev, kvs } = await readAll(kv);
  assert.ok(rev >= model.maxAckedRev, `current revision ${rev} < highest acknowledged ${model.maxAckedRev}`);
  assert.ok(rev >= minRev, `revision went back: ${rev} < ${minRev} seen before the restart`);

  const uncertain = new Map<string, string | null>();
  for (const f of model.inflight.values()) for (const [k, v] of f.next) uncertain.set(k, v);

  for (const [key, st] of model.keys) {
    const got = kvs.get(key);
    if (uncertain.has(key)) continue;
    if (st.value === null) {
      assert.equal(got, undefined, `${key} deleted at ${st.rev} is back: ${JSON.stringify(got)}`);
    } else {
      assert.ok(got, `acknowledged ${key}@${st.rev} is missing`);
      assert.equal(got.value, st.value, `value of ${key}`);
      assert.equal(got.mod, st.rev, `mod_revision of ${key}`);
    }
  }
  // Writes in flight at the kill: all of one write or none of it (a txn or a range delete is
  // atomic), with a revision newer than everything acknowledged before it.
  let settled = 0;
  for (const f of model.inflight.values()) {
    const applied = [...f.next].map(([k, v]) => {
      const got = kvs.get(k);
      const before = model.keys.get(k);
      const isNew = v === null ? got === undefined : got?.value === v;
      const isOld = before === undefined || before.value === null ? got === undefined : got?.value === before.value && got.mod === before.rev;
      assert.ok(isNew || isOld, `in-flight ${k}: ${JSON.stringify(got)} is neither ${JSON.stringify(before)} nor ${JSON.stringify(v)}`);
      return isNew && !isOld;
    });
    if (applied.some((a) => a)) {
      assert.ok(applied.every((a) => a), `partially applied write: ${JSON.stringify([...f.next.keys()])}`);
      settled++;
    }
    for (const [k] of f.next) {
      const got = kvs.get(k);
      if (got) assert.ok(got.mod > 0);
      model.keys.set(k, got ? { value: got.value, rev: got.mod } : { value: null, rev: 0 });
    }
  }
  model.inflight.clear();
  // Nothing that was never sent.
  for (const key of kvs.keys()) assert.ok(model.keys.has(key), `unexpected key ${key}`);

  // History: a sample of acknowledged writes read back at their revision (and just before, for
  // deletes), plus every write of the last few hundred revisions.
  const recent = model.history.filter((h) => h.rev > model.maxAckedRev - 300);
  const sample = [...recent];
  for (let i = 0; i < 300 && model.history.length > 0; i++) sample.push(model.history[prng.int(model.history.length)]!);
  await Promise.all(sample.map(async (h) => {
    const at = await unary(kv, 'Range', { key: bytes(h.key), revision: h.rev });
    if (h.value === null) {
      assert.equal(at.kvs.length, 0, `${h.key} at ${h.rev} (deleted then)`);
      const before = await unary(kv, 'Range', { key: bytes(h.key), revision: h.rev - 1 });
      assert.equal(before.kvs.length, 1, `${h.key} at ${h.rev - 1} (just before its delete)`);
    } else {
      assert.equal(at.kvs.length, 1, `${h.key} at ${h.rev}`);
      assert.equal(str(at.kvs[0]!.value), h.value, `${h.key} at ${h.rev}`);
      assert.equal(num(at.kvs[0]!.mod_revision), h.rev, `${h.key} at ${h.rev}`);
    }
  }));
  return { rev, settled };
}

describe('crash safety', () => {
  const handles: ConcordHandle[] = [];
  const dirs: string[] = [];

  after(async () => {
    for (const h of handles) await h.kill();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  async function start(dataDir?: string): Promise<ConcordHandle> {
    const h = await startConcord({ dataDir, keepDataDir: true });
    handles.push(h);
    if (!dirs.includes(h.dataDir)) dirs.push(h.dataDir);
    return h;
  }

  test(`SIGKILL under a write load of ${CLIENTS} clients, ${CYCLES} times on one data dir`, async (t) => {
    const seed = Number(process.env.CRASH_SEED ?? Date.now() % 1_000_000);
    t.diagnostic(`seed ${seed} (CRASH_SEED=${seed} to repeat)`);
    const prng = new Prng(seed);
    const model = new Model();
    let server = await start();
    let seenRev = 1;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const clients = Array.from({ length: CLIENTS }, () => connect('etcdserverpb.KV', server.endpoint));
      let dead = false;
      const errors: string[] = [];
      const loops = clients.map((kv, id) => clientLoop(id, cycle, kv, model, new Prng(seed * 100 + cycle * 10 + id + 1), () => dead, errors));
      const killAfter = 200 + prng.int(1000);
      await new Promise((r) => setTimeout(r, killAfter));
      const killed = server.kill(); // SIGKILL is sent now, before any client runs again
      dead = true;
      await killed;
      const ops = await Promise.all(loops);
      const before = model.maxAckedRev;
      const inflight = model.inflight.size;
      for (const c of clients) c.close();
      assert.deepEqual(errors, [], 'no errors while the server was up');
      const total = ops.reduce((a, b) => a + b, 0);
      assert.ok(total > 0, 'the load made progress');

      server = await start(server.dataDir);
      const kv = connect('etcdserverpb.KV', server.endpoint);
      try {
        const { rev, settled } = await verify(kv, model, prng, seenRev);
        t.diagnostic(`cycle ${cycle}: killed after ${killAfter} ms, ${total} acknowledged writes (max revision ${before}), ` +
          `${inflight} in flight of which ${settled} applied; revision after restart ${rev}`);
        seenRev = rev;
        // The restarted server takes writes, with revisions after everything before.
        const p = await unary(kv, 'Put', { key: bytes(`c${cycle}/after-restart`), value: bytes('x') });
        assert.equal(num(p.header?.revision), rev + 1);
        model.ack('after restart', rev + 1, new Map([[`c${cycle}/after-restart`, 'x']]));
        seenRev = rev + 1;
      } finally {
        kv.close();
      }
    }
    await server.stop();
  });

  test('SIGTERM: clean exit with code 0 in < 5 s, under load and with idle clients; data kept', async (t) => {
    const server = await start();
    const model = new Model();
    const prng = new Prng(7);
    const idle = connect('etcdserverpb.KV', server.endpoint); // an open connection that does nothing
    await unary(idle, 'Range', { key: bytes('x') });
    const clients = Array.from({ length: 4 }, () => connect('etcdserverpb.KV', server.endpoint));
    let stopping = false;
    const errors: string[] = [];
    const loops = clients.map((kv, id) => clientLoop(id, 0, kv, model, new Prng(id + 1), () => stopping, errors));
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    const exited = new Promise<number | null>((resolve) => server.proc.once('exit', (code) => resolve(code)));
    stopping = true;
    server.proc.kill('SIGTERM');
    const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 10_000).unref());
    const code = await Promise.race([exited, timeout]);
    const ms = Date.now() - t0;
    await Promise.all(loops);
    for (const c of [idle, ...clients]) c.close();
    t.diagnostic(`SIGTERM to exit: ${ms} ms`);
    assert.equal(code, 0, 'exit code');
    assert.ok(ms < 5000, `exit took ${ms} ms`);
    assert.ok(server.logs().includes('"msg":"stopped"'), 'logged its clean stop');

    const again = await start(server.dataDir);
    const kv = connect('etcdserverpb.KV', again.endpoint);
    try {
      await verify(kv, model, prng, model.maxAckedRev);
    } finally {
      kv.close();
    }
    // A clean shutdown right after start, with nothing written, is prompt too.
    const t1 = Date.now();
    await again.stop();
    assert.equal(again.proc.exitCode, 0);
    assert.ok(Date.now() - t1 < 5000);
  });

  test('a second server on the same data dir refuses to start', async () => {
    const first = await start();
    let err: Error | undefined;
    try {
      const second = await startConcord({ dataDir: first.dataDir, readyTimeoutMs: 10_000 });
      handles.push(second);
    } catch (e) {
      err = e as Error;
    }
    assert.ok(err, 'the second server started');
    assert.match(err.message, /exited early \(code 1/);
    assert.ok(err.message.includes(`data directory ${first.dataDir} is in use by process ${first.proc.pid}`), err.message);
    // The first one is unaffected.
    const kv = connect('etcdserverpb.KV', first.endpoint);
    try {
      const p = await unary(kv, 'Put', { key: bytes('still'), value: bytes('here') });
      assert.ok(num(p.header?.revision) > 1);
    } finally {
      kv.close();
    }
    await first.stop();
    // Once it is gone (clean stop), the data dir can be used again.
    const third = await start(first.dataDir);
    await third.stop();
  });
});
