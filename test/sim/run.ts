// The simulator's command line: npm run sim -- --seeds N [--start S] | --seed S [--trace]
//   --seeds N     run seeds S..S+N-1 (S from --start, default 0) and print a summary
//   --seed S      run one seed; on failure print the trace of its last steps
//   --trace       with --seed: print every step as it happens
//   --bug NAME    plant a test bug (see RaftConfig.testBugs), e.g. --bug voteWithoutLogCheck
//   --profile P   aim the faults with a named profile (profiles.ts), e.g. --profile figure8
// Every failure prints its seed, the git commit and how to replay it. Exit status 1 on failure.
import { TestBugs } from '../../src/raft/raft';
import { profiles } from './profiles';
import { gitCommit, reportFailure } from './report';
import { describeScenario } from './scenario';
import { runSeed } from './simulator';

interface Args {
  seeds: number;
  start: number;
  seed: number | null;
  trace: boolean;
  bugs: TestBugs;
  profile: string;
  quiet: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    seeds: 100, start: 0, seed: null, trace: false, bugs: {}, profile: '', quiet: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--seeds') a.seeds = Number(v());
    else if (k === '--start') a.start = Number(v());
    else if (k === '--seed') a.seed = Number(v());
    else if (k === '--trace') a.trace = true;
    else if (k === '--quiet') a.quiet = true;
    else if (k === '--bug') (a.bugs as Record<string, boolean>)[v()] = true;
    else if (k === '--profile') a.profile = v();
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

function main(): void {
  const a = parseArgs(process.argv.slice(2));
  if (a.profile !== '' && profiles[a.profile] === undefined) {
    throw new Error(`unknown profile ${a.profile}`);
  }
  const overrides = a.profile === '' ? {} : profiles[a.profile];
  const bugArgs = Object.keys(a.bugs).map((b) => ` --bug ${b}`).join('') +
    (a.profile === '' ? '' : ` --profile ${a.profile}`);
  if (a.seed !== null) {
    const r = runSeed(a.seed, { bugs: a.bugs, overrides, traceLive: a.trace });
    console.log(`seed ${a.seed}: ${describeScenario(r.scenario)}`);
    if (!r.ok) {
      console.log(reportFailure(r, bugArgs));
      process.exitCode = 1;
    }
    console.log(`seed ${a.seed}: ${r.ok ? 'ok' : 'FAILED'} ${JSON.stringify(r.stats)}`);
    return;
  }
  const t0 = Date.now();
  let ticks = 0;
  let failed = 0;
  const totals: Record<string, number> = {};
  for (let s = a.start; s < a.start + a.seeds; s++) {
    const r = runSeed(s, { bugs: a.bugs, overrides });
    ticks += r.stats.ticks;
    for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
    if (!r.ok) {
      failed++;
      console.log(reportFailure(r, bugArgs));
    }
    const done = s - a.start + 1;
    if (!a.quiet && done % 1000 === 0) {
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      console.log(`  ${done} seeds, ${failed} failed, ${ticks} ticks, ${secs} s`);
    }
  }
  const secs = (Date.now() - t0) / 1000;
  console.log(`seeds ${a.start}..${a.start + a.seeds - 1}: ${a.seeds - failed} passed, ` +
    `${failed} failed; simulated ${ticks} ticks (${(ticks / 36000).toFixed(1)} h at 100 ms a ` +
    `tick) in ${secs.toFixed(1)} s ` +
    `(commit ${gitCommit()})`);
  console.log(`totals: ${JSON.stringify(totals)}`);
  if (failed > 0) process.exitCode = 1;
}

main();
