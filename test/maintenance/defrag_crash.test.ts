// Crash tests of the online defragmentation. Goal: a kill -9 at any moment of a
// defragmentation loses no acknowledged write and leaves a data dir that opens, with its history.
// Method: a put load runs while a defragmentation is killed (SIGKILL, by the server itself at each
// named step through the defragCrashAt failpoint, then at seeded random moments from outside);
// the member restarts on the same data dir and must hold every acknowledged put at its revision,
// replay the load's whole history to a watcher, have no copy directory left, and defragment again.
// The checker (assertAckedPresent and the history replay) is shown to fail on a planted bug in
// defrag.test.ts (the catch-up skipped).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { startConcord, type ConcordHandle } from '../helpers/concord';
import { assertAckedPresent, fillWithFreePages, putLoad, statusSizes, type AckedPut } from '../helpers/defrag_load';
import { connect, num, openStream, unary } from '../helpers/grpc_client';
import { Prng } from '../../src/util/prng';

const steps = ['copied', 'caughtUp', 'suspended', 'copyClosed', 'lockRemoved', 'renamed', 'reopened'];

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function exited(c: ConcordHandle): Promise<void> {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null) return Promise.resolve();
  return new Promise((r) => c.proc.once('exit', () => r()));
}

/** The load's history from `fromRev`, replayed by a watch on the restarted member. */
async function replayedRevisions(endpoint: string, prefix: string, fromRev: number, want: number): Promise<Map<number, string>> {
  const w = connect('etcdserverpb.Watch', endpoint);
  const { call, reader } = openStream(w, 'Watch');
  const end = Buffer.from(prefix);
  end[end.length - 1]!++;
  call.write({ create_request: { key: Buffer.from(prefix), range_end: end, start_revision: fromRev } });
  const seen = new Map<number, string>();
  try {
    const until = Date.now() + 15_000;
    while (seen.size < want && Date.now() < until) {
      const msg = await reader.next(15_000);
      for (const ev of msg.events ?? []) seen.set(num(ev.kv!.mod_revision), Buffer.from(ev.kv!.key!).toString());
    }
  } finally {
    call.end();
    w.close();
  }
  return seen;
}

/** Restarts on the data dir and checks what a crash must not break. */
async function checkAfterCrash(dead: ConcordHandle, acked: AckedPut[], loadFromRev: number, label: string): Promise<ConcordHandle> {
  const c = await startConcord({ dataDir: dead.dataDir, fixedPort: dead.port });
  const kv = connect('etcdserverpb.KV', c.endpoint);
  const maint = connect('etcdserverpb.Maintenance', c.endpoint);
  try {
    assert.equal(fs.existsSync(path.join(c.dataDir, 'member/kv-defrag')), false, `${label}: the copy directory is removed at start`);
    await assertAckedPresent(kv, acked, label);
    const seen = await replayedRevisions(c.endpoint, 'load/', loadFromRev, acked.length);
    const lost = acked.filter((a) => seen.get(a.rev) !== a.key);
    assert.equal(lost.length, 0, `${label}: ${lost.length} acknowledged puts missing from the replayed history`);
    // The member defragments again, and still holds everything.
    await unary(maint, 'Defragment', {}, { timeoutMs: 60_000 });
    await assertAckedPresent(kv, acked, `${label}, defragmented again`);
  } catch (err) {
    await c.stop();
    throw err;
  } finally {
    kv.close();
    maint.close();
  }
  return c;
}

async function crashRun(failpoints: string, kill: ((c: ConcordHandle) => Promise<void>) | null, label: string): Promise<void> {
  const c = await startConcord({ keepDataDir: true, env: { CONCORD_FAILPOINTS: failpoints } });
  let restarted: ConcordHandle | null = null;
  try {
    const kv = connect('etcdserverpb.KV', c.endpoint);
    const maint = connect('etcdserverpb.Maintenance', c.endpoint);
    await fillWithFreePages(kv, 'fill/', 600, 8192);
    const loadFromRev = (await statusSizes(maint)).revision + 1;
    const load = putLoad(c.endpoint, 'load/', 4);
    await waitFor(() => load.acked.length >= 30, 10_000, 'the load to start');
    const defrag = unary(maint, 'Defragment', {}, { timeoutMs: 60_000 }).then(() => 'answered', (err: Error) => err.message);
    if (kill !== null) await kill(c);
    await exited(c);
    assert.equal(c.proc.signalCode, 'SIGKILL', `${label}: the server was killed`);
    const outcome = await defrag;
    const acked = await load.stop();
    kv.close();
    maint.close();
    // Killed by its own failpoint, it cannot have answered; killed from outside, it may have.
    if (kill === null) assert.notEqual(outcome, 'answered', `${label}: the defragmentation cannot have finished`);
    restarted = await checkAfterCrash(c, acked, loadFromRev, label);
  } finally {
    await c.stop();
    if (restarted !== null) await restarted.stop();
    fs.rmSync(c.dataDir, { recursive: true, force: true });
  }
}

for (const step of steps) {
  test(`defragment killed at step ${step}: nothing acknowledged lost, the member restarts`, async () => {
    await crashRun(`defragCrashAt=${step},defragCopyDelayMs=150`, null, `killed at ${step}`);
  });
}

test('defragment killed from outside at seeded random moments', async (t) => {
  const seed = Number(process.env.DEFRAG_CRASH_SEED ?? Date.now() % 100000);
  t.diagnostic(`seed ${seed} (replay: DEFRAG_CRASH_SEED=${seed})`);
  const prng = new Prng(seed);
  for (let i = 0; i < 3; i++) {
    const delayMs = prng.int(300);
    await crashRun('defragCopyDelayMs=150', async (c) => {
      await new Promise((r) => setTimeout(r, delayMs));
      c.proc.kill('SIGKILL');
    }, `seed ${seed} run ${i}: kill -9 ${delayMs} ms into the defragmentation`);
  }
});
