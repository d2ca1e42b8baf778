// A scenario: every knob of one simulated run, drawn from the seed (TigerBeetle VOPR: one PRNG
// draws replica counts, network and disk fault rates, crash rates, workload). Time is in units of
// 10 ms; a raft tick is 10 units (100 ms, etcd's heartbeat interval).
import { TestBugs } from '../../src/raft/raft';
import { SimRandom } from './random';

export const unitsPerTick = 10;

export interface Scenario {
  seed: number;
  /** Initial voters (ids 1..n); later members get fresh ids up to nodeIdMax. */
  voters: number;
  nodeIdMax: number;
  electionTicks: number;
  heartbeatTicks: number;
  preVote: boolean;
  checkQuorum: boolean;
  msgBytesMax: number;
  inflightMsgsMax: number;
  inflightBytesMax: number;
  uncommittedBytesMax: number;
  committedEntriesMax: number;
  // network (delays in units)
  delayMin: number;
  delayMax: number;
  /** Chance of a much longer delay (reordering across ticks). */
  delayLongRate: number;
  dropRate: number;
  dupRate: number;
  /** Per tick: chance to start a partition (symmetric or one-way clog). */
  partitionRate: number;
  partitionTicksMax: number;
  /** Chance that a message dropped by a partition is reported unreachable to the leader. */
  unreachableRate: number;
  // disks and nodes
  diskLatencyMax: number;
  /** Storage thread -> main thread hop before persisted() (units). */
  notifyDelayMax: number;
  /** Apply entries the core says will commit once durable, at fsync time (raw_node item 3). */
  earlyApply: boolean;
  /** Per tick per node. */
  crashRate: number;
  /**
   * Chance that a new leader crashes or is cut off within a few time units of its election
   * (FoundationDB BUGGIFY-style aim at the interesting moment: entries written by a leader that
   * never replicated them, the ground of Figure 8 of the raft paper).
   */
  leaderFaultRate: number;
  tornWriteRate: number;
  restartTicksMax: number;
  /** Compact when this many applied entries are in the log; keep `snapshotKeep` of them. */
  snapshotThreshold: number;
  snapshotKeep: number;
  snapshotFailRate: number;
  // workload and operations (per tick)
  clients: number;
  opRate: number;
  readRatio: number;
  keys: number;
  opTimeoutTicks: number;
  confChangeRate: number;
  transferRate: number;
  // phases
  faultTicks: number;
  /** Bound on ticks for a leader and a committed proposal once faults stop. */
  livenessTicks: number;
  bugs: TestBugs;
}

export interface ScenarioOptions {
  bugs?: TestBugs;
  /** Overrides applied after drawing (tests use them to aim at one bug). */
  overrides?: Partial<Scenario>;
}

export function drawScenario(seed: number, rnd: SimRandom, opts: ScenarioOptions = {}): Scenario {
  const voters = rnd.pick([1, 2, 3, 3, 3, 3, 4, 5, 5, 5]);
  const electionTicks = rnd.pick([5, 10, 10, 10, 15]);
  const tiny = rnd.chance(0.3);
  const msgBytesMax = tiny ? rnd.range(20, 120) : 1024 * 1024;
  const checkQuorum = rnd.chance(0.85);
  const s: Scenario = {
    seed,
    voters,
    nodeIdMax: voters + rnd.range(0, 3),
    electionTicks,
    heartbeatTicks: rnd.chance(0.8) ? 1 : 2,
    preVote: rnd.chance(0.85),
    checkQuorum,
    msgBytesMax,
    inflightMsgsMax: rnd.chance(0.5) ? 512 : rnd.range(1, 8),
    inflightBytesMax: rnd.chance(0.5) ? 128 * 1024 * 1024 : msgBytesMax * rnd.range(1, 4),
    uncommittedBytesMax: rnd.chance(0.2) ? rnd.range(30, 200) : 1 << 30,
    committedEntriesMax: rnd.chance(0.3) ? rnd.range(1, 4) : 4096,
    delayMin: 1,
    delayMax: rnd.pick([2, 5, 10, 20, 40]),
    delayLongRate: rnd.rate(0.05),
    dropRate: rnd.rate(0.2),
    dupRate: rnd.rate(0.1),
    partitionRate: rnd.rate(0.06),
    partitionTicksMax: rnd.pick([10, 30, 100]),
    unreachableRate: rnd.rate(0.5),
    diskLatencyMax: rnd.pick([1, 3, 10, 30, 60]),
    notifyDelayMax: rnd.pick([0, 0, 2, 10]),
    earlyApply: rnd.chance(0.5),
    crashRate: rnd.rate(0.01),
    leaderFaultRate: rnd.rate(0.5, 0.5),
    tornWriteRate: rnd.rate(0.5),
    restartTicksMax: rnd.pick([5, 20, 60]),
    snapshotThreshold: rnd.pick([5, 10, 20, 50, 1000]),
    snapshotKeep: rnd.pick([0, 1, 3, 10]),
    snapshotFailRate: rnd.rate(0.5),
    clients: rnd.range(1, 8),
    opRate: rnd.pick([0.1, 0.3, 0.6, 1]),
    readRatio: rnd.pick([0.1, 0.3, 0.5]),
    keys: rnd.range(1, 6),
    opTimeoutTicks: rnd.pick([20, 50, 100]),
    confChangeRate: rnd.rate(0.03, 0.3),
    transferRate: rnd.rate(0.02, 0.4),
    faultTicks: rnd.range(300, 1500),
    livenessTicks: 0,
    bugs: opts.bugs ?? {},
    ...opts.overrides,
  };
  // Limits drawn relative to others are made consistent again after overrides.
  s.inflightBytesMax = Math.max(s.inflightBytesMax, s.msgBytesMax);
  // Once faults stop: elections take up to 2 election timeouts each (a few may split), then the
  // no-op and the probe commit, after catch-up by snapshot if needed.
  if (opts.overrides?.livenessTicks === undefined) s.livenessTicks = 30 * s.electionTicks + 100;
  return s;
}

export function describeScenario(s: Scenario): string {
  const bugs = Object.keys(s.bugs).filter((k) => s.bugs[k as keyof TestBugs] === true);
  const f = (x: number, d: number): string => x.toFixed(d);
  return [
    `voters=${s.voters} ids<=${s.nodeIdMax} election=${s.electionTicks} hb=${s.heartbeatTicks}`,
    `preVote=${s.preVote} checkQuorum=${s.checkQuorum} msgBytes=${s.msgBytesMax}`,
    `inflight=${s.inflightMsgsMax}/${s.inflightBytesMax}B delay=${s.delayMin}-${s.delayMax}`,
    `drop=${f(s.dropRate, 3)} dup=${f(s.dupRate, 3)} part=${f(s.partitionRate, 3)}`,
    `disk<=${s.diskLatencyMax} notify<=${s.notifyDelayMax} early=${s.earlyApply}`,
    `crash=${f(s.crashRate, 4)} leaderFault=${f(s.leaderFaultRate, 2)}`,
    `torn=${f(s.tornWriteRate, 2)}`,
    `snap=${s.snapshotThreshold}/${s.snapshotKeep} snapFail=${f(s.snapshotFailRate, 2)}`,
    `clients=${s.clients} ops=${s.opRate} conf=${f(s.confChangeRate, 3)}`,
    `transfer=${f(s.transferRate, 3)} faultTicks=${s.faultTicks}`,
    ...(bugs.length > 0 ? [`bugs=${bugs.join(',')}`] : []),
  ].join(' ');
}
