// The deterministic simulator in CI: thousands of seeded cluster runs with every fault on (lossy,
// duplicating, reordering network; partitions; crashes with lost and torn writes; membership
// changes; transfers; snapshots), each checked at every step (see checker.ts). Seeds 0..N-1, so a
// failure here replays with `npm run sim -- --seed S --trace`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gitCommit, reportFailure } from './report';
import { runSeed } from './simulator';

const seeds = Number(process.env.CONCORD_SIM_SEEDS ?? 4000);

test(`simulator: ${seeds} seeds with faults, every invariant checked at every step`, () => {
  const t0 = Date.now();
  let ticks = 0;
  let leaders = 0;
  let crashes = 0;
  const failures: string[] = [];
  for (let s = 0; s < seeds; s++) {
    const r = runSeed(s);
    ticks += r.stats.ticks;
    leaders += r.stats.leaders;
    crashes += r.stats.crashes;
    if (!r.ok) failures.push(reportFailure(r));
  }
  const secs = (Date.now() - t0) / 1000;
  console.log(`simulator: ${seeds} seeds, ${failures.length} failed; simulated ${ticks} ticks ` +
    `(${(ticks / 36000).toFixed(1)} h of cluster time at 100 ms a tick), ${leaders} elections, ` +
    `${crashes} crashes, in ${secs.toFixed(1)} s (commit ${gitCommit()})`);
  for (const f of failures.slice(0, 3)) console.log(f);
  assert.equal(failures.length, 0, `${failures.length} seeds failed`);
});
