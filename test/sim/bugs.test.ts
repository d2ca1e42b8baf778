// The checker can fail: each test plants one deliberate bug in every raft core of the simulated
// cluster (RaftConfig.testBugs) and asserts the simulator reports the violation it must, within a
// bounded number of seeds. A simulator that finds nothing on a known bug proves nothing.
// Some bugs need the faults aimed at them (FoundationDB's BUGGIFY habit): the profile is stated.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TestBugs } from '../../src/raft/raft';
import { profiles } from './profiles';
import { reportFailure } from './report';
import { runSeed } from './simulator';

interface PlantedBug {
  bug: keyof TestBugs;
  /** What the checker must say (the start of the failure text). */
  expect: RegExp;
  seedsMax: number;
  /** A name in profiles.ts, or '' for the drawn scenarios as they are. */
  profile: string;
  why: string;
}

const planted: PlantedBug[] = [
  {
    bug: 'voteWithoutLogCheck',
    expect: /violation of (leader completeness|state machine safety|log matching)|conflict with/,
    seedsMax: 200,
    profile: '',
    why: 'a voter grants a candidate whose log lacks committed entries (§5.4.1)',
  },
  {
    bug: 'commitPriorTermByCount',
    expect: /violation of (leader completeness|state machine safety)|conflict with a committed/,
    seedsMax: 1500,
    profile: 'figure8',
    why: 'a leader commits an entry of an earlier term by counting replicas (§5.4.2, Figure 8)',
  },
  {
    bug: 'ackBeforeDurable',
    expect: /violation of durability contract/,
    seedsMax: 50,
    profile: '',
    why: 'votes and append acknowledgements leave before the disk holds what they vouch for',
  },
  {
    bug: 'leaderSelfAckBeforeDurable',
    expect: /violation of durability/,
    seedsMax: 50,
    profile: '',
    why: 'the leader counts its own append before it is durable (etcd #14370)',
  },
  {
    bug: 'readIndexWithoutQuorum',
    expect: /violation of linearizable read/,
    seedsMax: 500,
    profile: 'staleReads',
    why: 'a leader answers ReadIndex without a heartbeat quorum (§6.4)',
  },
];

for (const p of planted) {
  test(`planted bug ${p.bug} (${p.why}) is caught within ${p.seedsMax} seeds`, () => {
    for (let seed = 0; seed < p.seedsMax; seed++) {
      const overrides = p.profile === '' ? {} : profiles[p.profile];
      const r = runSeed(seed, { bugs: { [p.bug]: true }, overrides });
      if (r.ok) continue;
      const head = r.failure!.split('\n')[0]!;
      const args = ` --bug ${p.bug}${p.profile === '' ? '' : ` --profile ${p.profile}`}`;
      console.log(`${p.bug}: caught at seed ${seed} ` +
        `(replay: npm run sim -- --seed ${seed}${args}): ${head}`);
      assert.match(head, p.expect, reportFailure(r, args));
      return;
    }
    assert.fail(`${p.bug}: no violation in ${p.seedsMax} seeds`);
  });
}
