// The raft paper's rules, §5.1-5.4 (the list of etcd-io/raft raft_paper_test.go, written from the
// paper's statements): each test builds nodes in a stated situation, steps the messages of the
// scenario through RawNode with a synchronous disk, and checks roles, terms, votes, logs and the
// messages sent. Pre-vote and check-quorum are off here: the paper's algorithm without extensions.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RawNode } from '../../src/raft/raw_node';
import { RaftConfig } from '../../src/raft/raft';
import { Entry, Message, MessageType, StateType, newMessage } from '../../src/raft/types';
import { Prng } from '../../src/util/prng';
import { Network, bootstrapped, config, drain, enc, ent, joiner } from './harness';

const plain = (over: Partial<RaftConfig> = {}): Partial<RaftConfig> => ({ preVote: false, checkQuorum: false, ...over });

function node(id: number, voters: number[], over: Partial<RaftConfig> = {}): RawNode {
  return new RawNode(config(id, voters, plain(over)));
}

function msg(type: MessageType, from: number, to: number, term: number, f: Partial<Message> = {}): Message {
  return { ...newMessage(type, to, from, term), ...f };
}

/** A node's log entries (index, term). */
function logOf(n: RawNode): [number, number][] {
  const log = n.raft.log;
  const out: [number, number][] = [];
  for (let i = log.firstIndex(); i <= log.lastIndex(); i++) out.push([i, log.term(i)]);
  return out;
}

/** Makes `n` leader of its configuration: campaign, then grant every vote. */
function becomeLeader(n: RawNode): Message[] {
  n.campaign();
  const out = drain(n);
  for (const v of n.raft.trk.voters) {
    if (v !== n.id) n.step(msg(MessageType.VoteResp, v, n.id, n.term));
  }
  assert.equal(n.state, StateType.Leader);
  return out.concat(drain(n));
}

const only = (ms: Message[], type: MessageType): Message[] => ms.filter((m) => m.type === type);

describe('§5.1 terms', () => {
  for (const [name, setup] of [
    ['follower', (n: RawNode) => n.raft.becomeFollower(1, 2)],
    ['candidate', (n: RawNode) => { n.campaign(); drain(n); }],
    ['leader', (n: RawNode) => { becomeLeader(n); }],
  ] as const) {
    test(`a ${name} that sees a higher term adopts it and becomes follower`, () => {
      const n = node(1, [1, 2, 3]);
      setup(n);
      n.step(msg(MessageType.App, 2, 1, 5, { index: 0, logTerm: 0 }));
      assert.equal(n.term, 5);
      assert.equal(n.state, StateType.Follower);
      assert.equal(n.lead, 2, 'an append names its sender leader');
    });
  }

  test('a request of a stale term is rejected: nothing changes, the sender learns our term', () => {
    const n = node(1, [1, 2, 3], { hardState: { term: 3, vote: 0, commit: 0 } });
    n.step(msg(MessageType.App, 2, 1, 2, { index: 0, logTerm: 0, entries: [ent(1, 2)] }));
    assert.equal(n.term, 3);
    assert.equal(n.raft.log.lastIndex(), 0);
    assert.deepEqual(drain(n).map((m) => [m.type, m.to, m.term]), [[MessageType.AppResp, 2, 3]]);
    n.step(msg(MessageType.AppResp, 2, 1, 2, { index: 5 }));
    assert.deepEqual(drain(n), [], 'a stale response is ignored');
  });

  test('nodes start as followers', () => {
    const n = node(1, [1, 2, 3]);
    assert.equal(n.state, StateType.Follower);
  });
});

describe('§5.2 leader election', () => {
  test('a leader sends heartbeats every heartbeat interval, commit capped at each match', () => {
    const n = node(1, [1, 2, 3], { heartbeatTicks: 2 });
    becomeLeader(n);
    n.tick();
    assert.deepEqual(only(drain(n), MessageType.Heartbeat), []);
    n.tick();
    const hb = only(drain(n), MessageType.Heartbeat);
    assert.deepEqual(hb.map((m) => [m.to, m.term, m.commit]), [[2, 1, 0], [3, 1, 0]]);
  });

  for (const state of ['follower', 'candidate'] as const) {
    test(`a ${state} starts an election after its election timeout: new term, own vote, RequestVote to all`, () => {
      const n = node(1, [1, 2, 3]);
      if (state === 'candidate') {
        n.campaign();
        drain(n);
      }
      const term = n.term;
      for (let i = 0; i < 2 * 10; i++) n.tick();
      const out = drain(n);
      assert.equal(n.state, StateType.Candidate);
      assert.equal(n.term, term + 1);
      assert.equal(n.raft.vote, 1);
      assert.deepEqual(only(out, MessageType.Vote).map((m) => [m.to, m.term]), [[2, term + 1], [3, term + 1]]);
    });
  }

  test('a candidate wins with a majority of votes, loses with a majority against, else waits', () => {
    const cases: [number, Record<number, boolean>, StateType][] = [
      [1, {}, StateType.Leader],
      [3, { 2: true, 3: true }, StateType.Leader],
      [3, { 2: true }, StateType.Leader],
      [5, { 2: true, 3: true, 4: true, 5: true }, StateType.Leader],
      [5, { 2: true, 3: true }, StateType.Leader],
      [3, { 2: false, 3: false }, StateType.Follower],
      [5, { 2: false, 3: false, 4: false, 5: false }, StateType.Follower],
      [5, { 2: true, 3: false, 4: false, 5: false }, StateType.Follower],
      [5, { 2: true, 3: true, 4: false, 5: false }, StateType.Leader],
      [3, {}, StateType.Candidate],
      [5, { 2: true }, StateType.Candidate],
      [5, { 2: false, 3: false }, StateType.Candidate],
    ];
    for (const [size, votes, want] of cases) {
      const ids = Array.from({ length: size }, (_, i) => i + 1);
      const n = node(1, ids);
      n.campaign();
      drain(n);
      for (const [id, granted] of Object.entries(votes)) {
        n.step(msg(MessageType.VoteResp, Number(id), 1, n.term, { reject: !granted }));
      }
      drain(n);
      assert.equal(n.state, want, `size ${size} votes ${JSON.stringify(votes)}`);
    }
  });

  test('a follower votes for at most one candidate per term, first come first served', () => {
    const cases: [number, number, boolean][] = [[0, 2, true], [0, 3, true], [2, 2, true], [3, 3, true], [2, 3, false], [3, 2, false]];
    for (const [vote, candidate, granted] of cases) {
      const n = node(1, [1, 2, 3], { hardState: { term: 1, vote, commit: 0 } });
      n.step(msg(MessageType.Vote, candidate, 1, 1, { index: 0, logTerm: 0 }));
      const resp = only(drain(n), MessageType.VoteResp);
      assert.deepEqual(resp.map((m) => [m.to, m.reject]), [[candidate, !granted]], `vote ${vote} cand ${candidate}`);
    }
  });

  test('a candidate that hears from a leader of its term or later becomes follower', () => {
    for (const term of [1, 2]) {
      const n = node(1, [1, 2, 3]);
      n.campaign();
      drain(n);
      n.step(msg(MessageType.App, 2, 1, term, { index: 0, logTerm: 0 }));
      assert.equal(n.state, StateType.Follower);
      assert.equal(n.term, term);
      assert.equal(n.lead, 2);
    }
  });

  test('election timeouts are randomized over [election, 2 x election) ticks', () => {
    const seen = new Set<number>();
    for (let seed = 1; seed <= 300; seed++) {
      const n = node(1, [1, 2, 3], { prng: new Prng(seed) });
      let ticks = 0;
      while (n.state === StateType.Follower) {
        n.tick();
        ticks++;
      }
      assert.ok(ticks >= 10 && ticks < 20, `timeout ${ticks}`);
      seen.add(ticks);
    }
    assert.equal(seen.size, 10, 'every value of the range occurs');
  });

  test('randomized timeouts mostly avoid split votes: usually a single server times out first', () => {
    let conflicts = 0;
    const rounds = 500;
    for (let r = 0; r < rounds; r++) {
      const ns = [1, 2, 3, 4, 5].map((id) => node(id, [1, 2, 3, 4, 5], { prng: new Prng(r * 5 + id) }));
      let first: number[] = [];
      for (let t = 0; t < 20 && first.length === 0; t++) {
        for (const n of ns) n.tick();
        first = ns.filter((n) => n.state === StateType.Candidate).map((n) => n.id);
      }
      if (first.length > 1) conflicts++;
    }
    assert.ok(conflicts / rounds < 0.3, `conflict rate ${conflicts / rounds}`);
  });
});

describe('§5.3 log replication', () => {
  test('the leader appends a proposal and sends it to every follower after its previous entry', () => {
    const n = node(1, [1, 2, 3]);
    becomeLeader(n);
    for (const v of [2, 3]) n.step(msg(MessageType.AppResp, v, 1, 1, { index: 1 }));
    drain(n);
    assert.equal(n.propose(enc('some data')), null);
    const apps = only(drain(n), MessageType.App);
    assert.deepEqual(apps.map((m) => [m.to, m.index, m.logTerm, m.entries.map((e) => [e.index, e.term]), m.commit]),
      [[2, 1, 1, [[2, 1]], 1], [3, 1, 1, [[2, 1]], 1]]);
    assert.deepEqual(logOf(n), [[1, 1], [2, 1]]);
  });

  test('the leader commits an entry once a majority holds it and tells the followers', () => {
    const n = node(1, [1, 2, 3]);
    becomeLeader(n);
    for (const v of [2, 3]) n.step(msg(MessageType.AppResp, v, 1, 1, { index: 1 }));
    drain(n);
    n.propose(enc('some data'));
    drain(n);
    n.step(msg(MessageType.AppResp, 2, 1, 1, { index: 2 }));
    assert.equal(n.committed, 2);
    const out = drain(n);
    assert.deepEqual(only(out, MessageType.App).map((m) => [m.to, m.commit]), [[2, 2], [3, 2]]);
  });

  test('an entry is committed exactly when a majority acknowledged it', () => {
    const cases: [number, number[], boolean][] = [
      [1, [], true], [3, [], false], [3, [2], true], [3, [2, 3], true],
      [5, [], false], [5, [2], false], [5, [2, 3], true], [5, [2, 3, 4, 5], true],
    ];
    for (const [size, acks, committed] of cases) {
      const ids = Array.from({ length: size }, (_, i) => i + 1);
      const n = node(1, ids);
      becomeLeader(n);
      n.propose(enc('x'));
      drain(n);
      const last = n.raft.log.lastIndex();
      for (const a of acks) n.step(msg(MessageType.AppResp, a, 1, n.term, { index: last }));
      drain(n);
      assert.equal(n.committed >= last, committed, `size ${size} acks ${acks}`);
    }
  });

  test('committing the leader\'s entry commits every entry before it, of earlier terms too', () => {
    const prior = [ent(1, 1), ent(2, 2)];
    const n = node(1, [1, 2, 3], { entries: prior, hardState: { term: 2, vote: 0, commit: 0 } });
    becomeLeader(n);
    n.propose(enc('x'));
    drain(n);
    const last = n.raft.log.lastIndex();
    n.step(msg(MessageType.AppResp, 2, 1, n.term, { index: last }));
    const committed = drain(n).length >= 0 ? n.committed : 0;
    assert.equal(committed, last);
  });

  test('a follower learns the commit index from the leader and hands out those entries', () => {
    const n = node(1, [1, 2, 3]);
    n.step(msg(MessageType.App, 2, 1, 1, { index: 0, logTerm: 0, entries: [ent(1, 1, 'a'), ent(2, 1, 'b')], commit: 1 }));
    let rd = n.ready();
    assert.deepEqual(rd.committedEntries, [], 'not durable yet: nothing to apply');
    n.persisted(rd.persist!.seq);
    rd = n.ready();
    assert.deepEqual(rd.committedEntries.map((e) => e.index), [1]);
    n.step(msg(MessageType.Heartbeat, 2, 1, 1, { commit: 2 }));
    drain(n);
    assert.equal(n.committed, 2);
  });

  test('a follower rejects an append whose previous entry it does not hold, with a hint', () => {
    const entries = [ent(1, 1), ent(2, 2)];
    const cases: [number, number, boolean, number][] = [
      [0, 0, false, 0], [2, 2, false, 0], [2, 1, true, 1], [3, 3, true, 2],
    ];
    for (const [index, logTerm, reject, hint] of cases) {
      const n = node(1, [1, 2, 3], { entries, hardState: { term: 2, vote: 0, commit: 0 } });
      n.step(msg(MessageType.App, 2, 1, 2, { index, logTerm }));
      const r = only(drain(n), MessageType.AppResp)[0]!;
      assert.equal(r.reject, reject, `prev (${index}, ${logTerm})`);
      if (reject) assert.equal(r.rejectHint, hint);
    }
  });

  test('a follower deletes a conflicting tail and appends the leader\'s entries', () => {
    const base = [ent(1, 1), ent(2, 2)];
    const cases: [number, number, Entry[], [number, number][]][] = [
      [2, 2, [ent(3, 3)], [[1, 1], [2, 2], [3, 3]]],
      [1, 1, [ent(2, 3), ent(3, 4)], [[1, 1], [2, 3], [3, 4]]],
      [0, 0, [ent(1, 1)], [[1, 1], [2, 2]]],
      [0, 0, [ent(1, 3)], [[1, 3]]],
    ];
    for (const [index, logTerm, entries, want] of cases) {
      const n = node(1, [1, 2, 3], { entries: base, hardState: { term: 1, vote: 0, commit: 0 } });
      n.step(msg(MessageType.App, 2, 1, 4, { index, logTerm, entries }));
      drain(n);
      assert.deepEqual(logOf(n), want);
    }
  });

  test('a new leader brings every follower log to its own (Figure 7, cases a-f)', () => {
    const terms = (ts: number[]): Entry[] => ts.map((t, i) => ent(i + 1, t));
    const leaderLog = terms([1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
    const followers = [
      terms([1, 1, 1, 4, 4, 5, 5, 6, 6]),
      terms([1, 1, 1, 4]),
      terms([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
      terms([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
      terms([1, 1, 1, 4, 4, 4, 4]),
      terms([1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for (const f of followers) {
      const net = new Network([1, 2, 3], (id) => plain({
        entries: id === 1 ? leaderLog : id === 2 ? f : [],
        hardState: { term: 8, vote: 0, commit: 0 },
      }));
      net.elect(1);
      assert.deepEqual(net.leaders(), [1]);
      net.node(1).propose(enc('after'));
      net.settle();
      assert.deepEqual(logOf(net.node(2)), logOf(net.node(1)));
    }
  });
});

describe('§5.4 safety', () => {
  test('RequestVote carries the candidate\'s last entry (index, term)', () => {
    const n = node(1, [1, 2, 3], { entries: [ent(1, 1), ent(2, 2)], hardState: { term: 2, vote: 0, commit: 0 } });
    n.campaign();
    const votes = only(drain(n), MessageType.Vote);
    assert.deepEqual(votes.map((m) => [m.to, m.index, m.logTerm, m.term]), [[2, 2, 2, 3], [3, 2, 2, 3]]);
  });

  test('a voter denies a candidate whose log is less up to date (§5.4.1)', () => {
    const cases: [Entry[], number, number, boolean][] = [
      [[ent(1, 1)], 1, 1, true], [[ent(1, 1)], 2, 1, true], [[ent(1, 1), ent(2, 1)], 1, 1, false],
      [[ent(1, 1)], 1, 2, true], [[ent(1, 2)], 1, 1, false], [[ent(1, 2)], 2, 1, false],
      [[ent(1, 1), ent(2, 2)], 1, 3, true],
    ];
    for (const [entries, index, logTerm, granted] of cases) {
      const n = node(1, [1, 2], { entries, hardState: { term: 2, vote: 0, commit: 0 } });
      n.step(msg(MessageType.Vote, 2, 1, 3, { index, logTerm }));
      const r = only(drain(n), MessageType.VoteResp)[0]!;
      assert.equal(r.reject, !granted, `candidate (${index}, ${logTerm})`);
    }
  });

  test('a leader commits by counting replicas only entries of its own term (§5.4.2)', () => {
    const prior = [ent(1, 1), ent(2, 2)];
    for (const [ackIndex, committed] of [[1, 0], [2, 0], [3, 3]] as const) {
      const n = node(1, [1, 2, 3], { entries: prior, hardState: { term: 2, vote: 0, commit: 0 } });
      becomeLeader(n);
      n.step(msg(MessageType.AppResp, 2, 1, n.term, { index: ackIndex }));
      drain(n);
      assert.equal(n.committed, committed, `ack ${ackIndex}`);
    }
  });
});

describe('§6 cluster membership (single-server changes, applied when committed)', () => {
  test('a node added as voter counts in the quorum only once the change is applied', () => {
    // Bootstrapped: the log holds the whole configuration, so a new member replays it.
    const net = new Network([1, 2, 3], () => bootstrapped([1, 2, 3], plain()));
    net.settle();
    net.elect(1);
    const l = net.node(1);
    net.add(4, joiner(4, plain()));
    assert.equal(l.proposeConfChange({ id: 1, type: 0, nodeId: 4, context: new Uint8Array(0) }), null);
    net.settle();
    assert.deepEqual(l.raft.trk.voters, [1, 2, 3, 4]);
    // With 4 voters a quorum is 3: 1 and 2 alone no longer commit.
    net.isolate(3);
    net.isolate(4);
    l.propose(enc('x'));
    net.settle();
    assert.ok(l.committed < l.raft.log.lastIndex());
    net.heal();
    net.tickAll(1);
    assert.equal(l.committed, l.raft.log.lastIndex());
  });
});
