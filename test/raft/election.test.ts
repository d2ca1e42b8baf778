// Elections beyond the paper: pre-vote (thesis §9.6), check-quorum, the lease rule (thesis
// §4.2.3) and its transfer exception, and etcd's fixes that keep elections live (#8243, PR #8334).
// Method: clusters on the harness network with cut links, ticked and settled; or single nodes fed
// messages, checking terms, roles and replies.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RawNode } from '../../src/raft/raw_node';
import { Message, MessageType, StateType, campaignTransferContext, newMessage } from '../../src/raft/types';
import { Network, config, drain, ent } from './harness';

function msg(type: MessageType, from: number, to: number, term: number, f: Partial<Message> = {}): Message {
  return { ...newMessage(type, to, from, term), ...f };
}

describe('pre-vote', () => {
  test('a partitioned node does not raise its term, so it does not depose the leader on return', () => {
    const net = new Network([1, 2, 3]);
    net.elect(1);
    const term = net.node(1).term;
    net.isolate(3);
    net.tickAll(50);
    assert.equal(net.node(3).term, term, 'pre-votes failed: no term increase');
    assert.equal(net.node(3).state, StateType.PreCandidate);
    net.heal();
    net.tickAll(3);
    assert.deepEqual(net.leaders(), [1]);
    assert.equal(net.node(1).term, term);
  });

  test('without pre-vote the same partition raises the term and forces an election', () => {
    const net = new Network([1, 2, 3], () => ({ preVote: false }));
    net.elect(1);
    const term = net.node(1).term;
    net.isolate(3);
    net.tickAll(50);
    assert.ok(net.node(3).term > term);
    net.heal();
    net.tickAll(40);
    assert.ok(net.node(1).term > term, 'the old leader saw the higher term');
  });

  test('a pre-vote does not change the receiver\'s term or vote', () => {
    const n = new RawNode(config(1, [1, 2, 3], { hardState: { term: 2, vote: 3, commit: 0 } }));
    n.step(msg(MessageType.PreVote, 2, 1, 3, { index: 5, logTerm: 2 }));
    const r = drain(n).filter((m) => m.type === MessageType.PreVoteResp);
    assert.deepEqual(r.map((m) => [m.term, m.reject]), [[3, false]], 'granted, at the pre-vote\'s term');
    assert.equal(n.term, 2);
    assert.equal(n.raft.vote, 3);
  });

  test('a pre-vote of a lower term is rejected explicitly (etcd #8243)', () => {
    const n = new RawNode(config(1, [1, 2, 3], { hardState: { term: 5, vote: 0, commit: 0 } }));
    n.step(msg(MessageType.PreVote, 2, 1, 3, { index: 0, logTerm: 0 }));
    const r = drain(n).filter((m) => m.type === MessageType.PreVoteResp);
    assert.deepEqual(r.map((m) => [m.to, m.term, m.reject]), [[2, 5, true]]);
  });

  test('a vote request of a lower term is rejected with our term (the paper; etcd ignores it)', () => {
    const n = new RawNode(config(1, [1, 2, 3], { preVote: false, hardState: { term: 5, vote: 0, commit: 0 } }));
    n.step(msg(MessageType.Vote, 2, 1, 3, { index: 9, logTerm: 3 }));
    const r = drain(n).filter((m) => m.type === MessageType.VoteResp);
    assert.deepEqual(r.map((m) => [m.to, m.term, m.reject]), [[2, 5, true]]);
    const c = new RawNode(config(2, [1, 2, 3], { preVote: false, hardState: { term: 2, vote: 0, commit: 0 } }));
    c.campaign();
    drain(c);
    c.step(r[0]!);
    assert.equal(c.term, 5, 'the candidate learns the higher term and campaigns above it next');
    assert.equal(c.state, StateType.Follower);
  });

  test('a pre-candidate keeps term and vote and forgets its leader (etcd PR #8334)', () => {
    const n = new RawNode(config(1, [1, 2, 3], { hardState: { term: 2, vote: 2, commit: 0 } }));
    n.step(msg(MessageType.Heartbeat, 2, 1, 2));
    drain(n);
    assert.equal(n.lead, 2);
    n.campaign();
    assert.equal(n.state, StateType.PreCandidate);
    assert.equal(n.term, 2);
    assert.equal(n.raft.vote, 2);
    assert.equal(n.lead, 0);
  });

  test('a lone voter wins its pre-vote at once and becomes leader once its vote is durable', () => {
    const n = new RawNode(config(1, [1]));
    n.campaign();
    assert.equal(n.state, StateType.Candidate);
    drain(n);
    assert.equal(n.state, StateType.Leader);
  });
});

describe('check-quorum', () => {
  test('a leader without an active quorum for an election timeout steps down', () => {
    const net = new Network([1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    for (let t = 0; t < 2 * 10; t++) {
      net.node(1).tick();
      net.settle();
    }
    assert.equal(net.node(1).state, StateType.Follower);
  });

  test('a leader that hears from a quorum keeps leading', () => {
    const net = new Network([1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.tickAll(5 * 10);
    assert.deepEqual(net.leaders(), [1]);
  });

  test('lease rule: within an election timeout of hearing from a leader, a vote request is ignored', () => {
    const n = new RawNode(config(1, [1, 2, 3]));
    n.step(msg(MessageType.App, 2, 1, 3, { index: 0, logTerm: 0 }));
    drain(n);
    n.step(msg(MessageType.Vote, 3, 1, 4, { index: 10, logTerm: 3 }));
    assert.equal(n.term, 3, 'term unchanged');
    assert.deepEqual(drain(n).filter((m) => m.type === MessageType.VoteResp), [], 'no answer at all');
    for (let t = 0; t < 10; t++) n.tick();
    n.step(msg(MessageType.Vote, 3, 1, 4, { index: 10, logTerm: 3 }));
    assert.equal(n.term, 4, 'after an election timeout the request counts');
  });

  test('lease rule: a transfer campaign (TimeoutNow) overrides it', () => {
    const n = new RawNode(config(1, [1, 2, 3]));
    n.step(msg(MessageType.App, 2, 1, 3, { index: 0, logTerm: 0 }));
    drain(n);
    n.step(msg(MessageType.Vote, 3, 1, 4, { index: 10, logTerm: 3, context: campaignTransferContext }));
    assert.equal(n.term, 4);
    const r = drain(n).filter((m) => m.type === MessageType.VoteResp);
    assert.deepEqual(r.map((m) => [m.to, m.reject]), [[3, false]]);
  });

  test('a leader of an old term hears our term in reply to its append (it cannot learn it from votes)', () => {
    const n = new RawNode(config(1, [1, 2, 3], { hardState: { term: 5, vote: 0, commit: 0 } }));
    n.step(msg(MessageType.App, 2, 1, 3, { index: 0, logTerm: 0 }));
    const r = drain(n).filter((m) => m.type === MessageType.AppResp);
    assert.deepEqual(r.map((m) => [m.to, m.term]), [[2, 5]]);
  });

  test('a removed or non-member node never campaigns', () => {
    const n = new RawNode(config(4, [1, 2, 3]));
    for (let t = 0; t < 100; t++) n.tick();
    assert.equal(n.state, StateType.Follower);
    assert.equal(n.term, 0);
  });

  test('an up-to-date candidate wins over a lagging one after a partition heals', () => {
    const net = new Network([1, 2, 3], (id) => ({
      entries: id === 3 ? [ent(1, 1)] : [ent(1, 1), ent(2, 2)],
      hardState: { term: 2, vote: 0, commit: 0 },
    }));
    net.elect(3);
    assert.deepEqual(net.leaders(), [], 'node 3 lacks entry 2: nobody votes for it');
    net.elect(2);
    assert.deepEqual(net.leaders(), [2]);
  });
});
