// Flow control and quorum arithmetic (etcd tracker/ and quorum/ tests): the Inflights window bounded
// by count and bytes, Progress state transitions and backtracking, majority indexes and votes,
// message batching up to msgBytesMax, the uncommitted-size limit, and config validation.
// Method: the pure classes directly; batching and limits through a leader's messages.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DropReason } from '../../src/raft/errors';
import { quorumIndex, quorumSize, VoteResult, voteResult } from '../../src/raft/quorum';
import { RawNode } from '../../src/raft/raw_node';
import { Inflights } from '../../src/raft/tracker/inflights';
import { Progress, ProgressState } from '../../src/raft/tracker/progress';
import { MessageType, entryOverheadBytes, newMessage } from '../../src/raft/types';
import { AssertionError } from '../../src/util/assert';
import { config, drain, enc } from './harness';

describe('Inflights', () => {
  test('full by count; acknowledgements free everything up to an index', () => {
    const inf = new Inflights(3, 1000);
    inf.add(1, 10);
    inf.add(2, 10);
    assert.equal(inf.full(), false);
    inf.add(5, 10);
    assert.equal(inf.full(), true);
    assert.throws(() => inf.add(6, 10), AssertionError, 'full() must be checked first');
    inf.freeLE(2);
    assert.equal(inf.count(), 1);
    assert.equal(inf.bytes(), 10);
    inf.freeLE(4);
    assert.equal(inf.count(), 1, 'message ending at 5 is still in flight');
    inf.freeLE(5);
    assert.equal(inf.count(), 0);
  });

  test('full by bytes', () => {
    const inf = new Inflights(100, 25);
    inf.add(1, 10);
    inf.add(2, 10);
    assert.equal(inf.full(), false);
    inf.add(3, 10);
    assert.equal(inf.full(), true, '30 bytes >= 25');
    inf.freeLE(1);
    assert.equal(inf.full(), false);
  });

  test('indexes must increase; the ring grows and wraps', () => {
    const inf = new Inflights(64, 1e9);
    inf.add(10, 1);
    assert.throws(() => inf.add(10, 1), AssertionError);
    for (let round = 0; round < 10; round++) {
      for (let k = 0; k < 40; k++) inf.add(11 + round * 100 + k, 1);
      inf.freeLE(11 + round * 100 + 39);
      assert.equal(inf.count(), 0);
    }
  });
});

describe('Progress', () => {
  const pr = (): Progress => new Progress(6, new Inflights(4, 1e9), false);

  test('probe sends one message per heartbeat: paused after a send until a response', () => {
    const p = pr();
    assert.equal(p.isPaused(), false);
    p.sentEntries(3, 30);
    assert.equal(p.next, 6, 'probing does not advance next');
    assert.equal(p.isPaused(), true);
  });

  test('replicate pipelines: next advances on send, paused only when the window is full', () => {
    const p = pr();
    p.match = 5;
    p.becomeReplicate();
    for (let k = 0; k < 4; k++) p.sentEntries(1, 10);
    assert.equal(p.next, 10);
    assert.equal(p.isPaused(), true);
    assert.equal(p.maybeUpdate(7), true);
    p.inflights.freeLE(7);
    assert.equal(p.isPaused(), false);
  });

  test('snapshot state is paused; probing resumes after the snapshot index', () => {
    const p = pr();
    p.becomeSnapshot(20);
    assert.equal(p.isPaused(), true);
    p.becomeProbe();
    assert.equal(p.state, ProgressState.Probe);
    assert.equal(p.next, 21);
  });

  test('rejections: stale ones are ignored, genuine ones lower next with the hint', () => {
    const p = pr();
    p.match = 3;
    p.next = 10;
    assert.equal(p.maybeDecrTo(5, 4), false, 'probing: only a rejection of next-1 is current');
    assert.equal(p.maybeDecrTo(9, 4), true);
    assert.equal(p.next, 5, 'hint + 1');
    assert.equal(p.maybeDecrTo(4, 1), true);
    assert.equal(p.next, 4, 'never below match + 1');
    const r = pr();
    r.match = 5;
    r.becomeReplicate();
    r.sentEntries(3, 1);
    assert.equal(r.maybeDecrTo(5, 0), false, 'replicate: a rejection at or below match is stale');
    assert.equal(r.maybeDecrTo(7, 0), true);
    assert.equal(r.next, 6);
  });

  test('acknowledgements never move match back', () => {
    const p = pr();
    assert.equal(p.maybeUpdate(8), true);
    assert.equal(p.next, 9);
    assert.equal(p.maybeUpdate(7), false);
    assert.equal(p.match, 8);
  });
});

describe('quorum', () => {
  test('quorum size and the quorum index', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(quorumSize), [1, 2, 2, 3, 3, 4, 4]);
    assert.equal(quorumIndex([5]), 5);
    assert.equal(quorumIndex([5, 3, 9]), 5);
    assert.equal(quorumIndex([1, 2, 3, 4]), 2);
    assert.equal(quorumIndex([7, 7, 0, 0, 7]), 7);
  });

  test('vote results', () => {
    assert.equal(voteResult(3, 2, 0), VoteResult.Won);
    assert.equal(voteResult(3, 1, 1), VoteResult.Pending);
    assert.equal(voteResult(3, 1, 2), VoteResult.Lost);
    assert.equal(voteResult(4, 2, 1), VoteResult.Pending);
    assert.equal(voteResult(4, 2, 2), VoteResult.Lost);
  });
});

describe('limits', () => {
  function leader(over = {}): RawNode {
    const n = new RawNode(config(1, [1, 2], over));
    n.campaign();
    drain(n);
    n.step({ ...newMessage(MessageType.PreVoteResp, 1, 2, n.term + 1) });
    drain(n);
    n.step({ ...newMessage(MessageType.VoteResp, 1, 2, n.term) });
    drain(n);
    assert.ok(n.isLeader());
    n.step({ ...newMessage(MessageType.AppResp, 1, 2, n.term), index: 1 });
    drain(n);
    return n;
  }

  test('entries are batched up to msgBytesMax per MsgApp (at least one entry each)', () => {
    const n = leader({ msgBytesMax: 2 * (entryOverheadBytes + 10) });
    for (let i = 0; i < 5; i++) n.propose(enc('0123456789'));
    const pr = n.raft.trk.progress.get(2)!;
    pr.becomeProbe();
    pr.next = 2;
    n.raft.sendAppend(2);
    const app = drain(n).filter((m) => m.type === MessageType.App);
    assert.equal(app[app.length - 1]!.entries.length, 2);
  });

  test('a proposal beyond uncommittedBytesMax is dropped with a typed error', () => {
    const n = leader({ uncommittedBytesMax: 25 });
    assert.equal(n.propose(enc('0123456789')), null);
    assert.equal(n.propose(enc('0123456789')), null);
    assert.equal(n.propose(enc('0123456789'))?.reason, DropReason.UncommittedBytesMax);
  });

  test('configuration is validated', () => {
    assert.throws(() => new RawNode(config(0, [1])), AssertionError);
    assert.throws(() => new RawNode(config(1, [1], { electionTicks: 1, heartbeatTicks: 1 })), AssertionError);
    assert.throws(() => new RawNode(config(1, [1], { heartbeatTicks: 0 })), AssertionError);
    assert.throws(() => new RawNode(config(1, [1], { msgBytesMax: 100, inflightBytesMax: 50 })), AssertionError);
    assert.throws(() => new RawNode(config(1, [1], { inflightMsgsMax: 0 })), AssertionError);
    assert.throws(() => new RawNode(config(1, [1], { hardState: { term: 1, vote: 0, commit: 5 } })), AssertionError);
  });
});
