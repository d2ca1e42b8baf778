// Membership (thesis ch. 4, etcd 3.4 semantics): single-server changes that take effect when
// applied, one at a time, none before an entry of the leader's term is committed (the 2015 fix);
// learners receive the log but neither vote nor count; a removed leader steps down; nodes outside
// the configuration do not campaign; the ConfChange payload layout. Method: bootstrapped harness
// clusters, plus pure checks of confchange.ts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { applyChange, bootstrapLog, decodeConfChange, encodeConfChange } from '../../src/raft/confchange';
import { DropReason } from '../../src/raft/errors';
import { ConfChangeType, EntryType, MessageType, StateType } from '../../src/raft/types';
import { Network, bootstrapped, cc, enc, joiner } from './harness';

function cluster(ids: number[]): Network {
  const net = new Network(ids, () => bootstrapped(ids));
  net.settle();
  net.elect(ids[0]!);
  net.node(ids[0]!).propose(enc('first'));
  net.settle();
  return net;
}

describe('learners', () => {
  test('a learner receives and applies the log but its acknowledgements do not count', () => {
    const net = cluster([1, 2, 3]);
    net.add(4, joiner(4));
    assert.equal(net.node(1).proposeConfChange(cc(ConfChangeType.AddLearnerNode, 4)), null);
    net.settle();
    assert.deepEqual(net.node(1).raft.trk.learners, [4]);
    assert.deepEqual(net.appliedData(4), ['first']);
    assert.deepEqual(net.node(4).raft.trk.confState(), { voters: [1, 2, 3], learners: [4] });
    // Only the learner acknowledges: no quorum.
    net.isolate(2);
    net.isolate(3);
    net.node(1).propose(enc('x'));
    net.settle();
    assert.ok(net.node(1).committed < net.node(1).raft.log.lastIndex());
  });

  test('a learner never campaigns', () => {
    const net = cluster([1, 2, 3]);
    net.add(4, joiner(4));
    net.node(1).proposeConfChange(cc(ConfChangeType.AddLearnerNode, 4));
    net.settle();
    net.isolate(4);
    for (let t = 0; t < 100; t++) net.node(4).tick();
    net.settle();
    assert.equal(net.node(4).state, StateType.Follower);
  });

  test('a promoted learner votes and counts', () => {
    const net = cluster([1, 2, 3]);
    net.add(4, joiner(4));
    net.node(1).proposeConfChange(cc(ConfChangeType.AddLearnerNode, 4));
    net.settle();
    assert.equal(net.node(1).proposeConfChange(cc(ConfChangeType.AddNode, 4)), null);
    net.settle();
    assert.deepEqual(net.node(1).raft.trk.voters, [1, 2, 3, 4]);
    assert.deepEqual(net.node(4).raft.trk.voters, [1, 2, 3, 4]);
    net.isolate(3);
    net.node(1).propose(enc('y'));
    net.settle();
    assert.equal(net.node(1).committed, net.node(1).raft.log.lastIndex(), '1, 2 and 4 are a quorum of 4');
  });
});

describe('configuration changes', () => {
  test('one change at a time: a second is refused until the first is applied', () => {
    const net = cluster([1, 2, 3]);
    net.isolate(2);
    net.isolate(3);
    assert.equal(net.node(1).proposeConfChange(cc(ConfChangeType.AddLearnerNode, 4)), null);
    assert.equal(net.node(1).proposeConfChange(cc(ConfChangeType.AddLearnerNode, 5))?.reason,
      DropReason.ConfChangePending);
    net.heal();
    net.settle();
    net.tickAll(1);
    assert.equal(net.node(1).proposeConfChange(cc(ConfChangeType.AddLearnerNode, 5)), null);
  });

  test('no change before the leader commits an entry of its term (the 2015 single-server bug fix)', () => {
    const ids = [1, 2, 3];
    const net = new Network(ids, () => bootstrapped(ids));
    net.settle();
    net.ignore.add(MessageType.AppResp);
    net.elect(1);
    assert.equal(net.node(1).state, StateType.Leader);
    assert.equal(net.node(1).proposeConfChange(cc(ConfChangeType.RemoveNode, 3))?.reason,
      DropReason.ConfChangeTooEarly);
    net.ignore.clear();
    net.tickAll(1);
    assert.equal(net.node(1).proposeConfChange(cc(ConfChangeType.RemoveNode, 3)), null);
  });

  test('a change that would leave no voter is refused', () => {
    const net = new Network([1], () => bootstrapped([1]));
    net.settle();
    net.elect(1);
    assert.equal(net.node(1).proposeConfChange(cc(ConfChangeType.RemoveNode, 1))?.reason,
      DropReason.ConfChangeInvalid);
  });

  test('a change takes effect when applied, not when appended', () => {
    const net = cluster([1, 2, 3]);
    net.isolate(2);
    net.isolate(3);
    net.node(1).proposeConfChange(cc(ConfChangeType.RemoveNode, 3));
    net.settle();
    assert.deepEqual(net.node(1).raft.trk.voters, [1, 2, 3], 'appended, not committed, not in force');
    net.heal();
    net.tickAll(1);
    assert.deepEqual(net.node(1).raft.trk.voters, [1, 2]);
  });

  test('a removed leader steps down when the change applies; the others elect a new one', () => {
    const net = cluster([1, 2, 3]);
    assert.equal(net.node(1).proposeConfChange(cc(ConfChangeType.RemoveNode, 1)), null);
    net.settle();
    assert.equal(net.node(1).state, StateType.Follower);
    net.tickAll(30);
    const leaders = net.leaders();
    assert.equal(leaders.length, 1);
    assert.ok(leaders[0] !== 1);
    for (let t = 0; t < 60; t++) net.node(1).tick();
    assert.equal(net.node(1).state, StateType.Follower, 'a removed node never campaigns');
  });

  test('a conf change entry already in force (a snapshot or restart covers it) is skipped', () => {
    const net = cluster([1, 2, 3]);
    const n = net.node(2);
    const before = n.raft.trk.confState();
    // Entry 1 (bootstrap: add voter 1) is older than the configuration now in force.
    assert.deepEqual(n.applyConfChange(1, cc(ConfChangeType.RemoveNode, 1)), before);
  });
});

describe('the ConfChange payload', () => {
  test('round-trips, with ids up to 2^53 - 1 and a context', () => {
    const c = { id: Number.MAX_SAFE_INTEGER, type: ConfChangeType.AddLearnerNode, nodeId: 2 ** 40 + 3,
      context: enc('member 0x8e9e05c52164694d http://10.0.0.1:2380') };
    const d = decodeConfChange(encodeConfChange(c));
    assert.deepEqual({ ...d, context: Buffer.from(d.context) }, { ...c, context: Buffer.from(c.context) });
  });

  test('is etcd raftpb.ConfChange\'s protobuf encoding', () => {
    const bytes = encodeConfChange({ id: 1, type: ConfChangeType.RemoveNode, nodeId: 300, context: enc('x') });
    assert.deepEqual([...bytes], [0x08, 1, 0x10, 1, 0x18, 0xac, 0x02, 0x22, 1, 0x78]);
  });

  test('simple changes: add, promote, demote, remove, update; never zero voters', () => {
    const cs = { voters: [1, 2], learners: [3] };
    assert.deepEqual(applyChange(cs, cc(ConfChangeType.AddNode, 4)), { voters: [1, 2, 4], learners: [3] });
    assert.deepEqual(applyChange(cs, cc(ConfChangeType.AddNode, 3)), { voters: [1, 2, 3], learners: [] });
    assert.deepEqual(applyChange(cs, cc(ConfChangeType.AddLearnerNode, 2)), { voters: [1], learners: [2, 3] });
    assert.deepEqual(applyChange(cs, cc(ConfChangeType.RemoveNode, 3)), { voters: [1, 2], learners: [] });
    assert.deepEqual(applyChange(cs, cc(ConfChangeType.UpdateNode, 1)), cs);
    assert.equal(applyChange({ voters: [1], learners: [] }, cc(ConfChangeType.RemoveNode, 1)), null);
  });

  test('bootstrapLog holds the initial voters as committed conf changes of term 1', () => {
    const b = bootstrapLog([3, 1, 2]);
    assert.deepEqual(b.hardState, { term: 1, vote: 0, commit: 3 });
    assert.deepEqual(b.entries.map((e) => [e.index, e.term, e.type, decodeConfChange(e.data).nodeId]),
      [[1, 1, EntryType.ConfChange, 1], [2, 1, EntryType.ConfChange, 2], [3, 1, EntryType.ConfChange, 3]]);
  });
});
