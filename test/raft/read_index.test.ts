// ReadIndex in safe mode (thesis §6.4, etcd read_only.go): a leader answers only after it has
// committed an entry of its term and a heartbeat quorum confirmed it is still leader; one round
// confirms every read queued before it; followers forward; a lone voter answers at once.
// Method: harness clusters with cut links and dropped message types; read states are collected
// from every Ready.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RawNode } from '../../src/raft/raw_node';
import { MessageType, newMessage } from '../../src/raft/types';
import { DropReason } from '../../src/raft/errors';
import { Network, config, dec, drain, enc } from './harness';

describe('ReadIndex', () => {
  test('the leader answers at its commit index after a heartbeat quorum', () => {
    const net = new Network([1, 2, 3]);
    net.elect(1);
    assert.equal(net.node(1).readIndex(enc('a')), null);
    net.settle();
    assert.deepEqual(net.readStates.get(1), [{ index: net.node(1).committed, context: 'a' }]);
  });

  test('no answer without a quorum of heartbeat responses', () => {
    const net = new Network([1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.node(1).readIndex(enc('a'));
    net.settle();
    assert.deepEqual(net.readStates.get(1), []);
    net.heal();
    net.tickAll(1); // the next heartbeat carries the pending round
    assert.deepEqual(net.readStates.get(1)!.map((r) => r.context), ['a']);
  });

  test('one heartbeat round confirms every read queued before it', () => {
    const net = new Network([1, 2, 3]);
    net.elect(1);
    net.ignore.add(MessageType.HeartbeatResp);
    for (const c of ['a', 'b', 'c']) net.node(1).readIndex(enc(c));
    net.settle();
    assert.deepEqual(net.readStates.get(1), []);
    net.ignore.clear();
    const before = net.delivered.filter((m) => m.type === MessageType.Heartbeat).length;
    net.tickAll(1);
    const rounds = net.delivered.filter((m) => m.type === MessageType.Heartbeat).length - before;
    assert.equal(rounds, 2, 'one heartbeat per follower');
    assert.deepEqual(net.readStates.get(1)!.map((r) => r.context), ['a', 'b', 'c']);
  });

  test('a new leader answers only once an entry of its term is committed', () => {
    const net = new Network([1, 2, 3]);
    net.ignore.add(MessageType.AppResp);
    net.elect(1);
    net.node(1).readIndex(enc('early'));
    net.settle();
    assert.deepEqual(net.readStates.get(1), [], 'the no-op is not committed yet');
    net.ignore.clear();
    net.tickAll(1);
    assert.deepEqual(net.readStates.get(1)!.map((r) => r.context), ['early']);
  });

  test('a follower forwards the read and gets the leader\'s index back', () => {
    const net = new Network([1, 2, 3]);
    net.elect(1);
    net.node(1).propose(enc('x'));
    net.settle();
    assert.equal(net.node(3).readIndex(enc('f')), null);
    net.settle();
    assert.deepEqual(net.readStates.get(3), [{ index: net.node(1).committed, context: 'f' }]);
  });

  test('without a leader a read is refused with NoLeader', () => {
    const n = new RawNode(config(1, [1, 2, 3]));
    const err = n.readIndex(enc('x'));
    assert.equal(err?.reason, DropReason.NoLeader);
  });

  test('a lone voter answers at once, from its own Ready', () => {
    const n = new RawNode(config(1, [1]));
    n.campaign();
    drain(n);
    n.readIndex(enc('solo'));
    const rd = n.ready();
    assert.deepEqual(rd.readStates.map((r) => [r.index, dec(r.context)]), [[1, 'solo']]);
  });

  test('pending reads are dropped when leadership is lost (the driver retries)', () => {
    const net = new Network([1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.node(1).readIndex(enc('lost'));
    net.settle();
    net.node(1).step({ ...newMessage(MessageType.App, 1, 2, net.node(1).term + 1), index: 0, logTerm: 0 });
    net.heal();
    net.tickAll(2);
    assert.deepEqual(net.readStates.get(1), []);
  });

  test('a read after commitIndexIfLocalDurable() is served at or above the promised index', () => {
    const n = new RawNode(config(1, [1]));
    n.campaign();
    drain(n);
    n.propose(enc('w'));
    const rd = n.ready();
    const promised = n.commitIndexIfLocalDurable();
    assert.equal(promised, rd.persist!.entries[0]!.index, 'a lone voter: all of it');
    assert.ok(n.committed < promised, 'not committed yet: the write is not durable');
    // The driver may acknowledge 'w' right after the fsync; a read must then see it.
    n.readIndex(enc('r'));
    assert.deepEqual(n.ready().readStates.map((r) => r.index), [promised]);
  });
});
