// Leadership transfer (thesis §3.10, etcd MoveLeader): TimeoutNow goes to a caught-up voter, a
// lagging one is caught up first, proposals are refused meanwhile, the transfer is abandoned after
// an election timeout or when the target leaves the voters, and the target's campaign skips
// pre-vote and overrides the lease rule. Method: harness clusters, inspecting the messages.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DropReason } from '../../src/raft/errors';
import { ConfChangeType, MessageType, StateType } from '../../src/raft/types';
import { Network, bootstrapped, cc, enc } from './harness';

function cluster(): Network {
  const net = new Network([1, 2, 3], () => bootstrapped([1, 2, 3]));
  net.settle();
  net.elect(1);
  assert.deepEqual(net.leaders(), [1]);
  return net;
}

describe('leader transfer', () => {
  test('to a caught-up voter: TimeoutNow at once, the target wins without pre-vote', () => {
    const net = cluster();
    const before = net.delivered.length;
    assert.equal(net.node(1).transferLeader(2), null);
    net.settle();
    const sent = net.delivered.slice(before);
    assert.ok(sent.some((m) => m.type === MessageType.TimeoutNow && m.to === 2));
    assert.ok(!sent.some((m) => m.type === MessageType.PreVote), 'no pre-vote round');
    assert.deepEqual(net.leaders(), [2]);
  });

  test('to a lagging voter: it is caught up first, then gets TimeoutNow', () => {
    const net = cluster();
    net.isolate(3);
    net.node(1).propose(enc('x'));
    net.settle();
    net.heal();
    net.node(1).transferLeader(3);
    net.settle();
    assert.deepEqual(net.leaders(), [3]);
    assert.equal(net.node(3).raft.log.lastIndex() >= net.node(1).raft.log.lastIndex() - 1, true);
  });

  test('proposals are refused while the transfer is in progress', () => {
    const net = cluster();
    net.isolate(3);
    net.node(1).transferLeader(3);
    net.settle();
    assert.equal(net.node(1).propose(enc('x'))?.reason, DropReason.LeaderTransferring);
  });

  test('a transfer that does not finish within an election timeout is abandoned', () => {
    const net = cluster();
    net.isolate(3);
    net.node(1).transferLeader(3);
    net.settle();
    for (let t = 0; t < 10; t++) {
      net.node(1).tick();
      net.node(2).tick();
      net.settle();
    }
    assert.equal(net.node(1).state, StateType.Leader);
    assert.equal(net.node(1).propose(enc('x')), null, 'proposals accepted again');
  });

  test('a transfer to a target that is demoted or removed is aborted (etcd #11326)', () => {
    for (const type of [ConfChangeType.RemoveNode, ConfChangeType.AddLearnerNode]) {
      const net = cluster();
      const l = net.node(1);
      net.cut.add('1->3'); // 3 cannot catch up: the transfer stays in progress
      assert.equal(l.proposeConfChange(cc(type, 3)), null);
      assert.equal(l.transferLeader(3), null);
      assert.equal(l.raft.leadTransferee, 3);
      net.settle(); // 1 and 2 commit the change; 1 applies it
      assert.deepEqual(l.raft.trk.voters, [1, 2]);
      assert.equal(l.raft.leadTransferee, 0, `aborted when change ${type} applied`);
      assert.equal(l.state, StateType.Leader);
    }
  });

  test('a learner cannot become the transfer target', () => {
    const net = cluster();
    net.node(1).propose(enc('x'));
    net.settle();
    assert.equal(net.node(1).proposeConfChange(cc(ConfChangeType.AddLearnerNode, 3)), null);
    net.settle();
    assert.deepEqual(net.node(1).raft.trk.learners, [3]);
    net.node(1).transferLeader(3);
    net.settle();
    assert.equal(net.node(1).raft.leadTransferee, 0);
    assert.deepEqual(net.leaders(), [1]);
  });

  test('a follower forwards a transfer request to the leader', () => {
    const net = cluster();
    assert.equal(net.node(2).transferLeader(2), null);
    net.settle();
    assert.deepEqual(net.leaders(), [2]);
  });
});
