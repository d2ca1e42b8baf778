// The single-voter raft core (src/raft/single_voter.ts, the server's core until it moves to
// RawNode): commit on append. Election on tick/campaign,
// proposals, Ready contents (entries to persist, committed entries, hard state, mustSync),
// storage acknowledgements, applied tracking, restart from a persisted log and hard state, the
// in-memory log's bounds, and determinism under a seeded Prng.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  SingleVoterConfig as RaftConfig, SingleVoterDroppedError as ProposalDroppedError,
  SingleVoterLog as RaftLog, SingleVoterRaft as Raft, SingleVoterReady as Ready,
} from '../../src/raft/single_voter';
import { Entry, EntryType, HardState, StateType } from '../../src/raft/types';
import { AssertionError } from '../../src/util/assert';
import { Prng } from '../../src/util/prng';

const enc = (s: string): Uint8Array => Buffer.from(s);

function config(over: Partial<RaftConfig> = {}): RaftConfig {
  return {
    id: 1,
    voters: [1],
    electionTicks: 10,
    heartbeatTicks: 1,
    prng: new Prng(7),
    hardState: { term: 0, vote: 0, commit: 0 },
    snapshotIndex: 0,
    snapshotTerm: 0,
    entries: [],
    applied: 0,
    applyBatchMax: 100,
    ...over,
  };
}

function ent(index: number, term: number, data = `e${index}`): Entry {
  return { index, term, type: EntryType.Normal, data: enc(data) };
}

type PlainEntry = [index: number, term: number, data: string];
const plain = (es: Entry[]): PlainEntry[] => es.map((e) => [e.index, e.term, Buffer.from(e.data).toString()]);

function plainReady(rd: Ready): unknown {
  return { hardState: rd.hardState, entries: plain(rd.entries), committedEntries: plain(rd.committedEntries), mustSync: rd.mustSync };
}

/** A leader elected by campaign(), its first Ready consumed (persisted and applied). */
function leader(over: Partial<RaftConfig> = {}): Raft {
  const r = new Raft(config(over));
  r.campaign();
  const rd = r.ready();
  const last = rd.entries[rd.entries.length - 1]!;
  r.storageAppended(last.index, last.term);
  r.appliedTo(rd.committedEntries[rd.committedEntries.length - 1]!.index);
  return r;
}

/** The tick at which a fresh core with this seed campaigns: electionTicks + prng.int(electionTicks). */
function electionTick(seed: number, electionTicks: number): number {
  return electionTicks + new Prng(seed).int(electionTicks);
}

describe('Raft configuration', () => {
  test('refuses configurations it does not support', () => {
    assert.throws(() => new Raft(config({ voters: [2] })), AssertionError);
    assert.throws(() => new Raft(config({ voters: [1, 2, 3] })), AssertionError);
    assert.throws(() => new Raft(config({ electionTicks: 1, heartbeatTicks: 1 })), AssertionError);
  });

  test('refuses a restored state that does not fit together', () => {
    const entries = [ent(1, 1), ent(2, 1)];
    assert.throws(() => new Raft(config({ entries, hardState: { term: 1, vote: 1, commit: 3 } })), AssertionError);
    assert.throws(() => new Raft(config({ entries, applied: 3 })), AssertionError);
    assert.throws(() => new Raft(config({ entries: [ent(1, 1), ent(3, 1)] })), AssertionError);
    assert.throws(() => new Raft(config({ entries: [ent(2, 1)] })), AssertionError, 'first entry after the snapshot point');
    assert.throws(() => new Raft(config({ snapshotIndex: 5, snapshotTerm: 1, entries: [ent(6, 1)], applied: 4 })),
      AssertionError, 'applied before the snapshot');
  });
});

describe('Raft election', () => {
  test('a fresh node is a follower without leader; proposals are dropped', () => {
    const r = new Raft(config());
    assert.equal(r.state, StateType.Follower);
    assert.deepEqual([r.term, r.vote, r.lead], [0, 0, 0]);
    assert.equal(r.isLeader(), false);
    assert.throws(() => r.propose(enc('x')), ProposalDroppedError);
    assert.equal(r.hasReady(), false);
    assert.deepEqual(plainReady(r.ready()), { hardState: null, entries: [], committedEntries: [], mustSync: false });
  });

  test('ticks: campaigns at the randomized election timeout and wins alone', () => {
    for (const seed of [1, 2, 3, 99, 12345]) {
      const want = electionTick(seed, 10);
      assert.ok(want >= 10 && want < 20, `timeout in [e, 2e): ${want}`);
      const r = new Raft(config({ prng: new Prng(seed) }));
      for (let i = 1; i < want; i++) {
        r.tick();
        assert.equal(r.state, StateType.Follower, `seed ${seed}: still a follower after ${i} ticks`);
      }
      r.tick();
      assert.equal(r.state, StateType.Leader, `seed ${seed}: leader after ${want} ticks`);
      assert.deepEqual([r.term, r.vote, r.lead], [1, 1, 1]);
      // a leader ignores ticks and campaigns
      for (let i = 0; i < 50; i++) r.tick();
      r.campaign();
      assert.equal(r.term, 1);
      assert.equal(r.log.lastIndex(), 1);
    }
  });

  test('campaign(): leader at once, with an empty entry of the new term, committed on append', () => {
    const r = new Raft(config({ hardState: { term: 4, vote: 0, commit: 0 } }));
    r.campaign();
    assert.equal(r.isLeader(), true);
    assert.deepEqual([r.term, r.vote, r.lead], [5, 1, 1]);
    assert.deepEqual(plain([...r.log.slice(0, 1)]), [[1, 5, '']]);
    assert.equal(r.log.committed, 1, 'the leader counts its own append at once');
    assert.equal(r.log.stableIndex, 0, 'nothing acknowledged by storage yet');
    assert.equal(r.hasReady(), true);
    const rd = r.ready();
    assert.deepEqual(plainReady(rd), {
      hardState: { term: 5, vote: 1, commit: 1 },
      entries: [[1, 5, '']],
      committedEntries: [[1, 5, '']],
      mustSync: true,
    });
    assert.equal(rd.entries[0]!.type, EntryType.Normal);
    assert.equal(r.hasReady(), false);
    assert.deepEqual(plainReady(r.ready()), { hardState: null, entries: [], committedEntries: [], mustSync: false });
  });

  test('the prng is drawn once at start and once per campaign (etcd resetRandomizedElectionTimeout)', () => {
    const shared = new Prng(5);
    const r = new Raft(config({ prng: shared }));
    r.campaign();
    const q = new Prng(5);
    q.nextU32();
    q.nextU32();
    assert.equal(shared.nextU32(), q.nextU32());
  });
});

describe('Raft proposals and Ready', () => {
  test('propose: next index, current term, committed at once, handed out once', () => {
    const r = leader();
    assert.equal(r.propose(enc('a')), 2);
    assert.equal(r.propose(enc('b')), 3);
    assert.equal(r.log.committed, 3);
    assert.equal(r.log.lastIndex(), 3);
    assert.equal(r.log.lastTerm(), 1);
    const rd = r.ready();
    assert.deepEqual(plainReady(rd), {
      hardState: { term: 1, vote: 1, commit: 3 },
      entries: [[2, 1, 'a'], [3, 1, 'b']],
      committedEntries: [[2, 1, 'a'], [3, 1, 'b']], // same Ready: the driver applies after the fsync
      mustSync: true,
    });
    assert.equal(r.log.persistingIndex, 3);
    assert.equal(r.log.applying, 3);
    assert.equal(r.log.stableIndex, 1, 'stable only once storage says so');
    assert.equal(r.hasReady(), false);
  });

  test('storageAppended moves stableIndex forward only, and only for the right term', () => {
    const r = leader();
    r.propose(enc('a'));
    r.propose(enc('b'));
    r.propose(enc('c'));
    r.ready();
    r.storageAppended(3, 2); // wrong term: ignored
    assert.equal(r.log.stableIndex, 1);
    r.storageAppended(9, 1); // beyond the log: ignored
    assert.equal(r.log.stableIndex, 1);
    r.storageAppended(3, 1);
    assert.equal(r.log.stableIndex, 3);
    r.storageAppended(2, 1); // older acknowledgement: no going back
    assert.equal(r.log.stableIndex, 3);
    r.storageAppended(4, 1);
    assert.equal(r.log.stableIndex, 4);
    assert.equal(r.hasReady(), false, 'acknowledgements create no work');
  });

  test('appliedTo: monotonic, never beyond what was handed out', () => {
    const r = leader();
    r.propose(enc('a'));
    r.propose(enc('b'));
    assert.throws(() => r.appliedTo(2), AssertionError, 'not handed out yet');
    r.ready();
    r.appliedTo(2);
    assert.equal(r.log.applied, 2);
    r.appliedTo(1);
    assert.equal(r.log.applied, 2, 'no going back');
    r.appliedTo(3);
    assert.equal(r.log.applied, 3);
    assert.throws(() => r.appliedTo(4), AssertionError);
  });

  test('committed entries are handed out at most applyBatchMax per Ready, in order', () => {
    const r = leader({ applyBatchMax: 4 });
    for (let i = 0; i < 10; i++) r.propose(enc(`p${i}`));
    const first = r.ready();
    assert.deepEqual(first.entries.map((e) => e.index), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert.deepEqual(first.committedEntries.map((e) => e.index), [2, 3, 4, 5]);
    assert.equal(r.hasReady(), true);
    const second = r.ready();
    assert.deepEqual(second.entries, []);
    assert.equal(second.hardState, null, 'hard state unchanged since the last Ready');
    assert.equal(second.mustSync, false);
    assert.deepEqual(second.committedEntries.map((e) => e.index), [6, 7, 8, 9]);
    assert.deepEqual(r.ready().committedEntries.map((e) => e.index), [10, 11]);
    assert.equal(r.hasReady(), false);
  });

  test('hard state appears in a Ready only when it changed', () => {
    const r = leader();
    assert.equal(r.ready().hardState, null);
    r.propose(enc('x'));
    assert.deepEqual(r.ready().hardState, { term: 1, vote: 1, commit: 2 });
    assert.equal(r.ready().hardState, null);
    assert.deepEqual(r.hardState(), { term: 1, vote: 1, commit: 2 });
  });
});

describe('Raft restart from a persisted log', () => {
  test('replays committed but unapplied entries, then a new term commits the rest', () => {
    // persisted: entries 1..7 (terms 1,1,2,2,2,2,2), hard state commit 5, applied 3
    const entries = [ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2), ent(5, 2), ent(6, 2), ent(7, 2)];
    const r = new Raft(config({ hardState: { term: 2, vote: 1, commit: 5 }, entries, applied: 3 }));
    assert.equal(r.state, StateType.Follower);
    assert.deepEqual([r.term, r.vote], [2, 1]);
    assert.deepEqual([r.log.committed, r.log.applied, r.log.applying, r.log.stableIndex], [5, 3, 3, 7]);
    assert.equal(r.hasReady(), true);
    const replay = r.ready();
    assert.deepEqual(plainReady(replay), {
      hardState: null, entries: [], committedEntries: [[4, 2, 'e4'], [5, 2, 'e5']], mustSync: false,
    });
    r.appliedTo(5);
    // entries 6 and 7 are not committed by a follower; the next leader's entry commits them
    r.campaign();
    assert.deepEqual([r.term, r.vote, r.lead], [3, 1, 1]);
    const rd = r.ready();
    assert.deepEqual(plainReady(rd), {
      hardState: { term: 3, vote: 1, commit: 8 },
      entries: [[8, 3, '']],
      committedEntries: [[6, 2, 'e6'], [7, 2, 'e7'], [8, 3, '']],
      mustSync: true,
    });
  });

  test('a persisted commit below the applied index: committed starts at applied', () => {
    const entries = [ent(1, 1), ent(2, 1), ent(3, 1)];
    const r = new Raft(config({ hardState: { term: 1, vote: 1, commit: 1 }, entries, applied: 2 }));
    assert.equal(r.log.committed, 2);
    assert.deepEqual(r.ready().committedEntries, []);
  });

  test('a log that starts after a snapshot point', () => {
    const entries = [ent(101, 4), ent(102, 4), ent(103, 5)];
    const r = new Raft(config({
      snapshotIndex: 100, snapshotTerm: 4, entries, applied: 101, hardState: { term: 5, vote: 1, commit: 102 },
    }));
    assert.equal(r.log.firstIndex(), 101);
    assert.equal(r.log.term(100), 4);
    assert.throws(() => r.log.term(99), AssertionError);
    assert.deepEqual(plain(r.ready().committedEntries), [[102, 4, 'e102']]);
    r.appliedTo(102);
    r.campaign();
    assert.equal(r.propose(enc('new')), 105);
    assert.deepEqual(plain(r.ready().committedEntries), [[103, 5, 'e103'], [104, 6, ''], [105, 6, 'new']]);
  });

  test('an empty log after a snapshot point', () => {
    const r = new Raft(config({ snapshotIndex: 50, snapshotTerm: 3, applied: 50, hardState: { term: 3, vote: 1, commit: 50 } }));
    assert.deepEqual([r.log.firstIndex(), r.log.lastIndex(), r.log.lastTerm()], [51, 50, 3]);
    r.campaign();
    assert.deepEqual(plain(r.ready().entries), [[51, 4, '']]);
  });

  test('driver round trip: persist every Ready, restart from what was persisted, same state', () => {
    // simulated storage: the WAL keeps entries (later index replaces) and the last hard state
    const wal: Entry[] = [];
    let hs: HardState = { term: 0, vote: 0, commit: 0 };
    let applied = 0;
    const drive = (r: Raft): void => {
      while (r.hasReady()) {
        const rd = r.ready();
        for (const e of rd.entries) {
          while (wal.length > 0 && wal[wal.length - 1]!.index >= e.index) wal.pop();
          wal.push(e);
        }
        if (rd.hardState !== null) hs = rd.hardState;
        const last = rd.entries[rd.entries.length - 1];
        if (last !== undefined) r.storageAppended(last.index, last.term);
        for (const e of rd.committedEntries) {
          assert.equal(e.index, applied + 1, 'applied in order, no gaps');
          assert.ok(e.index <= r.log.stableIndex, 'applied only once durable');
          applied = e.index;
        }
        if (applied > 0) r.appliedTo(applied);
      }
    };
    let r = new Raft(config());
    r.campaign();
    for (let i = 0; i < 5; i++) r.propose(enc(`a${i}`));
    drive(r);
    assert.deepEqual(hs, { term: 1, vote: 1, commit: 6 });
    for (let restart = 0; restart < 3; restart++) {
      const before = plain(wal);
      r = new Raft(config({ hardState: hs, entries: wal.slice(), applied }));
      assert.deepEqual(plain(r.log.slice(0, r.log.lastIndex())), before);
      assert.equal(r.log.committed, hs.commit);
      r.campaign();
      assert.equal(r.term, restart + 2);
      r.propose(enc(`b${restart}`));
      drive(r);
      assert.equal(applied, r.log.lastIndex());
      assert.deepEqual(hs, { term: restart + 2, vote: 1, commit: r.log.lastIndex() });
    }
    assert.deepEqual(plain(wal).map(([i, t]) => [i, t]), [
      [1, 1], [2, 1], [3, 1], [4, 1], [5, 1], [6, 1], [7, 2], [8, 2], [9, 3], [10, 3], [11, 4], [12, 4],
    ]);
  });
});

describe('RaftLog', () => {
  test('slices, terms and bounds', () => {
    const log = new RaftLog(0, 0, [ent(1, 1), ent(2, 1), ent(3, 2)], 0);
    assert.deepEqual(plain(log.slice(0, 3)), [[1, 1, 'e1'], [2, 1, 'e2'], [3, 2, 'e3']]);
    assert.deepEqual(plain(log.slice(1, 2)), [[2, 1, 'e2']]);
    assert.deepEqual(log.slice(2, 2), []);
    assert.throws(() => log.slice(0, 4), AssertionError);
    assert.equal(log.term(0), 0);
    assert.equal(log.term(3), 2);
    assert.throws(() => log.term(4), AssertionError);
    assert.throws(() => log.append(ent(5, 2)), AssertionError, 'gap');
    assert.throws(() => log.append(ent(3, 2)), AssertionError, 'index taken');
    assert.throws(() => log.commitTo(4), AssertionError, 'commit beyond the log');
    assert.equal(log.commitTo(2), true);
    assert.equal(log.commitTo(2), false);
    assert.equal(log.commitTo(1), false);
    assert.equal(log.committed, 2);
  });

  test('compactTo drops applied entries and keeps the term of the new snapshot point', () => {
    const log = new RaftLog(0, 0, [ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2)], 0);
    log.commitTo(4);
    assert.equal(log.nextCommitted(10).length, 4);
    log.appliedTo(3);
    assert.throws(() => log.compactTo(4), AssertionError, 'compact beyond applied');
    log.compactTo(3);
    assert.deepEqual([log.firstIndex(), log.lastIndex(), log.term(3)], [4, 4, 2]);
    assert.throws(() => log.term(2), AssertionError);
    assert.deepEqual(plain(log.slice(3, 4)), [[4, 2, 'e4']]);
    log.compactTo(2); // already compacted: no-op
    assert.equal(log.firstIndex(), 4);
    log.append(ent(5, 3));
    assert.deepEqual(plain(log.unstableToPersist()), [[5, 3, 'e5']]);
  });
});

describe('Raft determinism', () => {
  /** A seeded random driver; returns the transcript of every Ready. */
  function run(seed: number): string[] {
    const p = new Prng(seed);
    const r = new Raft(config({ prng: new Prng(seed), electionTicks: 5, applyBatchMax: 3 }));
    const out: string[] = [];
    let persisted = 0;
    for (let step = 0; step < 400; step++) {
      const a = p.int(10);
      if (a < 4) r.tick();
      else if (a < 7) {
        if (r.isLeader()) r.propose(enc(`s${step}`));
        else assert.throws(() => r.propose(enc('x')), ProposalDroppedError);
      } else if (r.hasReady()) {
        const rd = r.ready();
        out.push(`${step} ${JSON.stringify(plainReady(rd))}`);
        const last = rd.entries[rd.entries.length - 1];
        if (last !== undefined) {
          // storage acknowledges later, sometimes
          persisted = last.index;
        }
        if (p.int(2) === 0 && persisted > r.log.stableIndex) r.storageAppended(persisted, r.log.term(persisted));
        // the durability contract: apply only what storage holds
        const durable = Math.min(r.log.stableIndex, r.log.applying);
        if (durable > r.log.applied) r.appliedTo(durable);
      }
      const l = r.log;
      assert.ok(l.applied <= l.committed && l.committed <= l.lastIndex(), 'applied <= committed <= last');
      assert.ok(l.stableIndex <= l.persistingIndex && l.persistingIndex <= l.lastIndex(), 'stable <= persisting <= last');
      assert.ok(l.applying <= l.committed, 'applying <= committed');
      if (r.isLeader()) assert.equal(l.committed, l.lastIndex(), 'a lone leader commits what it appends');
    }
    return out;
  }

  test('same seed, same transcript; another seed, another election time', () => {
    const a = run(11);
    const b = run(11);
    assert.ok(a.length > 20, `enough Readies (${a.length})`);
    assert.deepEqual(a, b);
    const c = run(12);
    assert.notDeepEqual(c, a);
  });
});
