// The asynchronous, pipelined durability contract of RawNode (raw_node.ts header): writes are
// handed out with sequence numbers and acknowledged in order; vote and append responses (and the
// node's own vote and append acknowledgement) wait until the writes they depend on are durable,
// even with several writes in flight; the leader sends MsgApp before its own write completes but
// counts itself only after; a lone voter commits after its own write (persist, then apply);
// commitIndexIfLocalDurable(); truncations do not let an older write stabilize newer entries.
// Method: single RawNodes driven by hand, persisting (or not) each Ready's write.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DropReason } from '../../src/raft/errors';
import { RawNode } from '../../src/raft/raw_node';
import { Message, MessageType, StateType, newMessage } from '../../src/raft/types';
import { AssertionError } from '../../src/util/assert';
import { config, drain, enc, ent } from './harness';

function msg(type: MessageType, from: number, to: number, term: number, f: Partial<Message> = {}): Message {
  return { ...newMessage(type, to, from, term), ...f };
}

const ofType = (ms: Message[], t: MessageType): Message[] => ms.filter((m) => m.type === t);

describe('held responses', () => {
  test('a follower acknowledges an append only after persisted(seq)', () => {
    const n = new RawNode(config(2, [1, 2, 3]));
    n.step(msg(MessageType.App, 1, 2, 1, { index: 0, logTerm: 0, entries: [ent(1, 1, 'a')] }));
    const rd = n.ready();
    assert.deepEqual(rd.persist!.entries.map((e) => e.index), [1]);
    assert.deepEqual(ofType(rd.messages, MessageType.AppResp), []);
    assert.equal(n.hasReady(), false, 'nothing to do until storage answers');
    n.persisted(rd.persist!.seq);
    const acks = ofType(n.ready().messages, MessageType.AppResp);
    assert.deepEqual(acks.map((m) => [m.to, m.index]), [[1, 1]]);
  });

  test('a vote is granted only after the vote is durable', () => {
    const n = new RawNode(config(2, [1, 2, 3]));
    n.step(msg(MessageType.Vote, 1, 2, 1, { index: 0, logTerm: 0 }));
    const rd = n.ready();
    assert.deepEqual(rd.persist!.hardState, { term: 1, vote: 1, commit: 0 });
    assert.equal(rd.persist!.mustSync, true);
    assert.deepEqual(ofType(rd.messages, MessageType.VoteResp), []);
    n.persisted(rd.persist!.seq);
    assert.deepEqual(ofType(n.ready().messages, MessageType.VoteResp).map((m) => m.reject), [false]);
  });

  test('several writes in flight: each response waits for the write its state went into', () => {
    const n = new RawNode(config(2, [1, 2, 3]));
    n.step(msg(MessageType.App, 1, 2, 1, { index: 0, logTerm: 0, entries: [ent(1, 1)] }));
    const w1 = n.ready().persist!;
    n.step(msg(MessageType.App, 1, 2, 1, { index: 1, logTerm: 1, entries: [ent(2, 1)] }));
    const w2 = n.ready().persist!;
    assert.equal(w2.seq, w1.seq + 1);
    // A duplicate append adds nothing to write: its ack rides on the newest write in flight.
    n.step(msg(MessageType.App, 1, 2, 1, { index: 0, logTerm: 0, entries: [ent(1, 1)] }));
    assert.equal(n.ready().persist, null);
    n.persisted(w1.seq);
    assert.deepEqual(ofType(n.ready().messages, MessageType.AppResp).map((m) => m.index), [1]);
    n.persisted(w2.seq);
    assert.deepEqual(ofType(n.ready().messages, MessageType.AppResp).map((m) => m.index), [2, 1]);
  });

  test('writes must be acknowledged in order', () => {
    const n = new RawNode(config(2, [1, 2, 3]));
    n.step(msg(MessageType.App, 1, 2, 1, { index: 0, logTerm: 0, entries: [ent(1, 1)] }));
    n.ready();
    n.step(msg(MessageType.App, 1, 2, 1, { index: 1, logTerm: 1, entries: [ent(2, 1)] }));
    const w2 = n.ready().persist!;
    assert.throws(() => n.persisted(w2.seq), AssertionError);
  });

  test('a response of a term the node has left is not sent after all', () => {
    const n = new RawNode(config(2, [1, 2, 3]));
    n.step(msg(MessageType.App, 1, 2, 1, { index: 0, logTerm: 0, entries: [ent(1, 1)] }));
    const w1 = n.ready().persist!;
    n.step(msg(MessageType.App, 3, 2, 2, { index: 0, logTerm: 0, entries: [ent(1, 2)] }));
    const w2 = n.ready().persist!;
    n.persisted(w1.seq);
    n.persisted(w2.seq);
    const acks = ofType(n.ready().messages, MessageType.AppResp);
    assert.deepEqual(acks.map((m) => [m.to, m.term]), [[3, 2]], 'the term-1 ack to 1 is dropped');
  });
});

describe('candidates and leaders', () => {
  test('a candidate becomes leader only once its own vote is durable', () => {
    const n = new RawNode(config(1, [1, 2, 3], { preVote: false }));
    n.campaign();
    const rd = n.ready();
    assert.equal(rd.persist!.hardState!.vote, 1);
    n.step(msg(MessageType.VoteResp, 2, 1, 1));
    n.step(msg(MessageType.VoteResp, 3, 1, 1));
    assert.equal(n.state, StateType.Candidate, 'two grants, but our vote is not on disk yet');
    n.persisted(rd.persist!.seq);
    assert.equal(n.state, StateType.Leader);
  });

  test('the leader sends MsgApp before its own write completes, and counts itself after', () => {
    const n = new RawNode(config(1, [1, 2, 3], { preVote: false }));
    n.campaign();
    n.persisted(n.ready().persist!.seq);
    n.step(msg(MessageType.VoteResp, 2, 1, 1));
    const rd = n.ready(); // the new leader's empty entry
    assert.equal(n.state, StateType.Leader);
    const noop = rd.persist!.entries[0]!;
    assert.ok(ofType(rd.messages, MessageType.App).some((m) => m.entries.some((e) => e.index === noop.index)),
      'replicated in parallel with the local write');
    n.step(msg(MessageType.AppResp, 2, 1, 1, { index: noop.index }));
    assert.equal(n.committed, 0, 'one durable copy (2) of three');
    n.persisted(rd.persist!.seq);
    assert.equal(n.committed, noop.index, 'ours is durable now: 1 and 2');
  });

  test('a lone voter commits after its own write: two hand-offs per proposal', () => {
    const n = new RawNode(config(1, [1]));
    n.campaign();
    drain(n);
    n.propose(enc('x'));
    const rd1 = n.ready();
    assert.equal(rd1.persist!.entries.length, 1);
    assert.deepEqual(rd1.committedEntries, []);
    assert.equal(n.commitIndexIfLocalDurable(), rd1.persist!.entries[0]!.index);
    n.persisted(rd1.persist!.seq);
    const rd2 = n.ready();
    assert.deepEqual(rd2.committedEntries.map((e) => e.index), [rd1.persist!.entries[0]!.index]);
  });

  test('commitIndexIfLocalDurable: current-term entries the followers\' durable acks make a quorum with ours', () => {
    const n = new RawNode(config(1, [1, 2, 3], { preVote: false }));
    n.campaign();
    n.persisted(n.ready().persist!.seq);
    n.step(msg(MessageType.VoteResp, 2, 1, 1));
    n.persisted(n.ready().persist!.seq);
    n.step(msg(MessageType.AppResp, 2, 1, 1, { index: 1 }));
    drain(n);
    n.propose(enc('a'));
    n.propose(enc('b'));
    n.ready();
    assert.equal(n.commitIndexIfLocalDurable(), 1, 'nobody else holds 2 and 3');
    n.step(msg(MessageType.AppResp, 2, 1, 1, { index: 2 }));
    assert.equal(n.commitIndexIfLocalDurable(), 2, '2 holds index 2: with our write, a quorum');
    assert.equal(n.committed, 1);
  });

  test('status() reports the leader\'s view of every member', () => {
    const n = new RawNode(config(1, [1, 2, 3], { preVote: false }));
    n.campaign();
    n.persisted(n.ready().persist!.seq);
    n.step(msg(MessageType.VoteResp, 2, 1, 1));
    drain(n);
    n.step(msg(MessageType.AppResp, 2, 1, 1, { index: 1 }));
    const st = n.status();
    assert.equal(st.state, StateType.Leader);
    assert.deepEqual(st.configuration, { voters: [1, 2, 3], learners: [] });
    assert.deepEqual([...st.progress.keys()], [1, 2, 3]);
    assert.equal(st.progress.get(2)!.match, 1);
  });

  test('a follower forwards proposals; without a leader they are refused with NoLeader', () => {
    const n = new RawNode(config(2, [1, 2, 3]));
    assert.equal(n.propose(enc('x'))?.reason, DropReason.NoLeader);
    n.step(msg(MessageType.Heartbeat, 1, 2, 1));
    assert.equal(n.propose(enc('x')), null);
    const fwd = ofType(n.ready().messages, MessageType.Prop);
    assert.deepEqual(fwd.map((m) => [m.to, m.from, m.entries.length]), [[1, 2, 1]]);
  });
});

describe('the log under truncation', () => {
  test('an older write completing does not make a newer, rewritten tail stable', () => {
    const n = new RawNode(config(2, [1, 2, 3]));
    n.step(msg(MessageType.App, 1, 2, 1, { index: 0, logTerm: 0, entries: [ent(1, 1), ent(2, 1)] }));
    const w1 = n.ready().persist!;
    // A new leader overwrites index 2 (uncommitted) while w1 is in flight.
    n.step(msg(MessageType.App, 3, 2, 2, { index: 1, logTerm: 1, entries: [ent(2, 2)], commit: 2 }));
    const w2 = n.ready().persist!;
    n.persisted(w1.seq);
    assert.equal(n.raft.log.stableIndex, 1, 'w1 made only index 1 durable as the log is now');
    assert.deepEqual(n.ready().committedEntries.map((e) => e.index), [1]);
    n.persisted(w2.seq);
    assert.equal(n.raft.log.stableIndex, 2);
    assert.deepEqual(n.ready().committedEntries.map((e) => [e.index, e.term]), [[2, 2]]);
  });

  test('a restart resumes from durable state: applied entries are not handed out again', () => {
    const n = new RawNode(config(1, [1, 2, 3], {
      entries: [ent(1, 1), ent(2, 1), ent(3, 2)], hardState: { term: 2, vote: 1, commit: 2 }, applied: 1,
    }));
    assert.deepEqual(n.ready().committedEntries.map((e) => e.index), [2]);
    // The state machine may be ahead of the durable commit index: commit is at least applied.
    const m = new RawNode(config(1, [1, 2, 3], {
      entries: [ent(1, 1), ent(2, 1), ent(3, 2)], hardState: { term: 2, vote: 1, commit: 1 }, applied: 3,
    }));
    assert.equal(m.committed, 3);
  });
});
