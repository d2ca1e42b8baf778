// The storage simulator from the command line: more seeds than CI runs, or one seed replayed.
//   npm run sim:storage -- --seeds 100000 [--start 1] [--unsafe-no-fsync]
//   npm run sim:storage -- --seed 1234 --trace
// Prints every failing seed with its first violation and how to replay it.
import { runStorageSim } from '../test/helpers/storage_sim';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const one = arg('--seed');
  const trace = process.argv.includes('--trace');
  const unsafeNoFsync = process.argv.includes('--unsafe-no-fsync');
  const start = one !== undefined ? Number(one) : Number(arg('--start') ?? 1);
  const count = one !== undefined ? 1 : Number(arg('--seeds') ?? 1000);
  const began = Date.now();
  let failing = 0;
  let crashes = 0;
  let acked = 0;
  let virtualMs = 0;
  for (let seed = start; seed < start + count; seed++) {
    const r = await runStorageSim({ seed, trace, unsafeNoFsync });
    crashes += r.crashes;
    acked += r.acked;
    virtualMs += r.virtualMs;
    if (r.violations.length > 0) {
      failing++;
      console.log(`FAIL seed ${seed}: ${r.violations[0]}\n  replay: npm run sim:storage -- --seed ${seed} --trace`);
    }
    if (count > 1 && (seed - start + 1) % 1000 === 0) {
      console.log(`${seed - start + 1} seeds, ${failing} failing, ${Math.round((Date.now() - began) / 1000)} s`);
    }
  }
  console.log(`${count} seeds from ${start}: ${failing} failing; ${crashes} crashes, ${acked} acknowledged writes checked, ` +
    `${(virtualMs / 1000).toFixed(0)} s simulated, ${((Date.now() - began) / 1000).toFixed(1)} s real`);
  process.exitCode = failing > 0 ? 1 : 0;
}

void main();
