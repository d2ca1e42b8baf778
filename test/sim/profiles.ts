// Named scenario overrides that aim the faults at one class of bug (FoundationDB's BUGGIFY
// habit). The planted-bug tests use them; `npm run sim -- --profile NAME` replays with them.
import { Scenario } from './scenario';

export const profiles: Record<string, Partial<Scenario>> = {
  /** Figure 8 of the raft paper: leaders that die before replicating, one entry per message. */
  figure8: {
    voters: 3, nodeIdMax: 3, msgBytesMax: 30, leaderFaultRate: 0.9, crashRate: 0.02,
    restartTicksMax: 3, confChangeRate: 0, partitionRate: 0,
  },
  /** A deposed leader that does not know it: no check-quorum, partitions, many reads. */
  staleReads: {
    voters: 3, nodeIdMax: 3, checkQuorum: false, partitionRate: 0.05, leaderFaultRate: 0.5,
    clients: 6, opRate: 1, readRatio: 0.5, crashRate: 0, confChangeRate: 0,
  },
};
