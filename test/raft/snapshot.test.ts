// Log compaction and snapshots (etcd raft_snap_test.go's situations): the driver compacts behind
// its applied index; a follower behind the leader's first index gets MsgSnap (metadata at the
// applied index, with the configuration); the transfer outcome is reported; a follower installs
// a snapshot through its next write, applies nothing meanwhile, and acknowledges only once it is
// durable. Method: single RawNodes fed messages, and harness clusters.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RawNode } from '../../src/raft/raw_node';
import { ProgressState } from '../../src/raft/tracker/progress';
import { Message, MessageType, Snapshot, StateType, newMessage } from '../../src/raft/types';
import { AssertionError } from '../../src/util/assert';
import { Network, config, drain, enc, ent } from './harness';

function msg(type: MessageType, from: number, to: number, term: number, f: Partial<Message> = {}): Message {
  return { ...newMessage(type, to, from, term), ...f };
}

function snap(index: number, term: number, voters = [1, 2, 3]): Snapshot {
  return { metadata: { index, term, confState: { voters, learners: [] } }, data: enc('state') };
}

/** A 3-node cluster whose leader 1 has compacted its log while node 3 was away. */
function lagging(): Network {
  const net = new Network([1, 2, 3]);
  net.elect(1);
  net.isolate(3);
  for (let i = 0; i < 5; i++) net.node(1).propose(enc(`e${i}`));
  net.settle();
  const l = net.node(1);
  l.compact(l.applied);
  assert.equal(l.raft.log.firstIndex(), l.applied + 1);
  return net;
}

describe('snapshots on the leader', () => {
  test('a follower behind the first index gets MsgSnap at the applied index, with the configuration', () => {
    const net = lagging();
    const l = net.node(1);
    net.heal();
    const before = net.delivered.length;
    net.tickAll(1);
    const snaps = net.delivered.slice(before).filter((m) => m.type === MessageType.Snap);
    assert.equal(snaps.length, 1);
    assert.deepEqual(snaps[0]!.snapshot!.metadata, {
      index: l.applied, term: l.term, confState: { voters: [1, 2, 3], learners: [] },
    });
    assert.equal(net.node(3).raft.log.snapshotIndex, l.applied, 'installed');
    net.node(1).propose(enc('after'));
    net.settle();
    assert.equal(net.node(3).committed, l.committed, 'replication resumed from the log');
  });

  test('while the snapshot is in flight the follower is paused; a failure report probes again', () => {
    const net = lagging();
    const l = net.node(1);
    net.heal();
    net.ignore.add(MessageType.Snap);
    net.tickAll(1);
    const pr = l.raft.trk.progress.get(3)!;
    assert.equal(pr.state, ProgressState.Snapshot);
    assert.ok(pr.isPaused());
    l.reportSnapshot(3, false);
    assert.equal(pr.state, ProgressState.Probe);
    assert.equal(pr.pendingSnapshot, 0);
    assert.equal(pr.next, pr.match + 1, 'probe from match: the snapshot never arrived');
    net.ignore.clear();
    net.tickAll(2);
    assert.equal(net.node(3).raft.log.snapshotIndex, l.applied, 'retried and installed');
  });

  test('a success report resumes probing after the snapshot index', () => {
    const net = lagging();
    const l = net.node(1);
    net.heal();
    net.ignore.add(MessageType.Snap);
    net.tickAll(1);
    const pr = l.raft.trk.progress.get(3)!;
    const pending = pr.pendingSnapshot;
    l.reportSnapshot(3, true);
    assert.equal(pr.state, ProgressState.Probe);
    assert.equal(pr.next, pending + 1);
  });

  test('no snapshot for a follower that has not been heard from recently', () => {
    const net = lagging();
    const l = net.node(1);
    const pr = l.raft.trk.progress.get(3)!;
    pr.recentActive = false;
    pr.becomeProbe();
    pr.next = 1;
    l.raft.sendAppend(3);
    assert.deepEqual(l.raft.msgs.filter((m) => m.type === MessageType.Snap), []);
  });

  test('compaction beyond the applied index is a bug', () => {
    const n = new RawNode(config(1, [1]));
    n.campaign();
    drain(n);
    n.propose(enc('x'));
    n.ready(); // handed to storage, not applied
    assert.throws(() => n.compact(n.raft.log.lastIndex()), AssertionError);
  });
});

describe('snapshots on the follower', () => {
  test('installed through the next write; acknowledged and applied only once durable', () => {
    const n = new RawNode(config(2, [1, 2, 3], { entries: [ent(1, 1)], hardState: { term: 1, vote: 0, commit: 1 } }));
    n.step(msg(MessageType.Snap, 1, 2, 2, { snapshot: snap(10, 2) }));
    assert.equal(n.raft.log.lastIndex(), 10);
    assert.equal(n.committed, 10);
    const rd = n.ready();
    assert.equal(rd.persist!.snapshot!.metadata.index, 10);
    assert.deepEqual(rd.messages.filter((m) => m.type === MessageType.AppResp), [], 'held until durable');
    assert.deepEqual(rd.committedEntries, []);
    assert.equal(n.applied, 0);
    n.persisted(rd.persist!.seq);
    assert.equal(n.applied, 10, 'the write installed the state');
    const acks = n.ready().messages.filter((m) => m.type === MessageType.AppResp);
    assert.deepEqual(acks.map((m) => [m.to, m.index, m.reject]), [[1, 10, false]]);
  });

  test('a snapshot at or below the commit index is ignored (answered with the commit index)', () => {
    const n = new RawNode(config(2, [1, 2, 3], { entries: [ent(1, 1), ent(2, 1)], hardState: { term: 1, vote: 0, commit: 2 } }));
    n.step(msg(MessageType.Snap, 1, 2, 1, { snapshot: snap(2, 1) }));
    const rd = n.ready();
    assert.equal(rd.persist?.snapshot ?? null, null);
    assert.equal(n.raft.log.lastIndex(), 2);
  });

  test('a snapshot whose last entry we hold only moves the commit index', () => {
    const n = new RawNode(config(2, [1, 2, 3], { entries: [ent(1, 1), ent(2, 1), ent(3, 1)], hardState: { term: 1, vote: 0, commit: 1 } }));
    n.step(msg(MessageType.Snap, 1, 2, 1, { snapshot: snap(2, 1) }));
    assert.equal(n.committed, 2);
    assert.equal(n.raft.log.lastIndex(), 3, 'the log is kept');
    assert.equal(n.raft.log.pendingSnapshot, null);
  });

  test('a snapshot that does not contain us is refused (defense in depth)', () => {
    const n = new RawNode(config(2, [1, 2, 3]));
    n.step(msg(MessageType.Snap, 1, 2, 1, { snapshot: snap(5, 1, [1, 3]) }));
    assert.equal(n.raft.log.lastIndex(), 0);
  });

  test('a node with a pending snapshot does not campaign', () => {
    const n = new RawNode(config(2, [1, 2, 3]));
    n.step(msg(MessageType.Snap, 1, 2, 1, { snapshot: snap(5, 1) }));
    for (let t = 0; t < 50; t++) n.tick();
    assert.equal(n.state, StateType.Follower);
  });

  test('restart from a snapshot point: the log starts after it', () => {
    const n = new RawNode(config(1, [1, 2, 3], {
      snapshotIndex: 10, snapshotTerm: 3, entries: [ent(11, 3), ent(12, 4)], applied: 10,
      hardState: { term: 4, vote: 0, commit: 11 },
    }));
    assert.equal(n.raft.log.firstIndex(), 11);
    assert.equal(n.raft.log.term(10), 3);
    assert.deepEqual(n.ready().committedEntries.map((e) => e.index), [11]);
  });
});
