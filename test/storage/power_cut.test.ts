// The storage simulator (test/helpers/storage_sim.ts) in CI: the storage worker's real code on a
// simulated disk and store engine, through seeded schedules of power cuts, kill -9, torn and
// reordered page writes, bit flips, EIO on write and fdatasync, ENOSPC and failed store
// commits, with writes in flight; after every restart, the recovered state is checked against
// what was acknowledged and against a clean run of the same log. Then the mutation: with the
// WAL's fdatasync switched off (etcd's --unsafe-no-fsync), the same checker must report lost
// acknowledged writes. More seeds: `npm run sim:storage -- --seeds N` (or --seed S --trace).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { runStorageSim } from '../helpers/storage_sim';

/** Schedules per CI run (about 30 ms each on the 2-vCPU dev machine). */
const seeds = Number(process.env.STORAGE_SIM_SEEDS ?? 1500);
const firstSeed = Number(process.env.STORAGE_SIM_FIRST_SEED ?? 1);

describe('storage simulator', () => {
  test(`${seeds} seeded fault schedules: no acknowledged write lost, no corruption served`, async () => {
    const started = Date.now();
    let crashes = 0;
    let refusals = 0;
    let acked = 0;
    let virtualMs = 0;
    const faults = new Map<string, number>();
    const failures: string[] = [];
    for (let seed = firstSeed; seed < firstSeed + seeds; seed++) {
      const r = await runStorageSim({ seed });
      crashes += r.crashes;
      refusals += r.refusals;
      acked += r.acked;
      virtualMs += r.virtualMs;
      for (const f of r.faults) faults.set(f, (faults.get(f) ?? 0) + 1);
      if (r.violations.length > 0) {
        failures.push(`seed ${seed}: ${r.violations[0]}\n  replay: npm run sim:storage -- --seed ${seed} --trace\n  last steps:\n    ${r.trace.slice(-25).join('\n    ')}`);
        if (failures.length >= 3) break;
      }
    }
    console.log(`storage simulator: ${seeds} schedules in ${Date.now() - started} ms; ${crashes} crashes and restarts, ` +
      `${refusals} refused starts after bit flips (repaired), ${acked} acknowledged writes checked, ` +
      `${(virtualMs / 1000).toFixed(1)} s of simulated time; faults fired: ${JSON.stringify(Object.fromEntries(faults))}`);
    assert.deepEqual(failures, []);
    // The schedules must exercise what they claim to.
    assert.ok(crashes > seeds, 'crashes happen');
    assert.ok(refusals > 0, 'bit flips are refused');
    for (const f of ['write EIO', 'fdatasync EIO', 'preallocate ENOSPC', 'commit EIO']) assert.ok((faults.get(f) ?? 0) > 0, `${f} fired`);
  });

  test('the checker catches the mutation: without fdatasync, acknowledged writes are lost at a power cut', async () => {
    const caught: number[] = [];
    let first = '';
    for (let seed = 1; seed <= 20; seed++) {
      const r = await runStorageSim({ seed, unsafeNoFsync: true });
      if (r.violations.length > 0) {
        caught.push(seed);
        if (first === '') first = `seed ${seed}: ${r.violations[0]}`;
      }
    }
    console.log(`--unsafe-no-fsync: ${caught.length} of 20 seeds report a violation; first: ${first.slice(0, 300)}`);
    assert.ok(caught.length >= 5, `only ${caught.length} seeds caught the mutation`);
    assert.ok(/acknowledged write lost|WAL lost entries|refused without any damage|state differs/.test(first), first);
  });
});
