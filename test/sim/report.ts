// Failure reports of simulated runs: the seed, the git commit, how to replay, the last steps.
import { execSync } from 'node:child_process';
import { describeScenario } from './scenario';
import { SimResult } from './simulator';

export function gitCommit(): string {
  try {
    const out = execSync('git rev-parse --short HEAD', { stdio: ['ignore', 'pipe', 'ignore'] });
    return out.toString().trim();
  } catch {
    return 'unknown';
  }
}

export function reportFailure(r: SimResult, bugArgs = ''): string {
  const lines = [
    `FAIL seed ${r.seed} (commit ${gitCommit()}): ${r.failure}`,
    `  scenario: ${describeScenario(r.scenario)}`,
    `  replay:   npm run sim -- --seed ${r.seed}${bugArgs} --trace`,
    `  last ${r.trace.length} steps:`,
    ...r.trace.map((l) => `    ${l}`),
  ];
  return lines.join('\n');
}
