// The in-memory raft log (src/raft/log.ts): conflict search for appends and rejection hints,
// commit bounds, the write bookkeeping (what a completed write makes durable, with truncations in
// between), handing out committed entries within limits, compaction and snapshot restore.
// Method: RaftLog directly, with small hand-built logs.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RaftLog } from '../../src/raft/log';
import { AssertionError } from '../../src/util/assert';
import { ent, enc } from './harness';

const terms = (ts: number[]) => ts.map((t, i) => ent(i + 1, t));

describe('RaftLog', () => {
  test('findConflict: first index whose term differs, or first new index, or 0', () => {
    const log = new RaftLog(0, 0, terms([1, 2, 3]), 0, 0);
    assert.equal(log.findConflict([]), 0);
    assert.equal(log.findConflict([ent(1, 1), ent(2, 2)]), 0);
    assert.equal(log.findConflict([ent(2, 2), ent(3, 3), ent(4, 4)]), 4);
    assert.equal(log.findConflict([ent(2, 2), ent(3, 4)]), 3);
  });

  test('findConflictByTerm: largest index <= given whose term is <= given', () => {
    const log = new RaftLog(0, 0, terms([1, 1, 3, 3, 5, 5]), 0, 0);
    assert.deepEqual(log.findConflictByTerm(6, 4), [4, 3]);
    assert.deepEqual(log.findConflictByTerm(6, 5), [6, 5]);
    assert.deepEqual(log.findConflictByTerm(4, 2), [2, 1]);
    assert.deepEqual(log.findConflictByTerm(3, 0), [0, 0]);
    const compacted = new RaftLog(3, 3, [ent(4, 3), ent(5, 5)], 3, 3);
    assert.deepEqual(compacted.findConflictByTerm(5, 1), [2, 0], 'unknown terms below the log start');
  });

  test('maybeAppend: matches the previous entry, truncates a conflict, commits up to the last new', () => {
    const log = new RaftLog(0, 0, terms([1, 1, 2]), 0, 0);
    assert.equal(log.maybeAppend(3, 3, 3, [ent(4, 3)]), -1, 'previous entry mismatch');
    assert.equal(log.maybeAppend(2, 1, 10, [ent(3, 3), ent(4, 3)]), 4);
    assert.deepEqual([3, 4].map((i) => log.term(i)), [3, 3]);
    assert.equal(log.committed, 4, 'min(leader commit, last new index)');
    assert.throws(() => log.maybeAppend(1, 1, 4, [ent(2, 9)]), AssertionError, 'a committed entry never changes');
  });

  test('a completed write makes durable only what is still in the log as written', () => {
    const log = new RaftLog(0, 0, [], 0, 0);
    log.append([ent(1, 1), ent(2, 1), ent(3, 1)]);
    log.takeUnstable(1);
    log.append([ent(3, 2)]); // truncation of 3 while write 1 is in flight
    log.takeUnstable(2);
    log.persisted(1);
    assert.equal(log.stableIndex, 2);
    log.persisted(2);
    assert.equal(log.stableIndex, 3);
    assert.throws(() => log.persisted(3), AssertionError);
  });

  test('committed entries are handed out only when durable here, within count and byte limits', () => {
    const log = new RaftLog(0, 0, terms([1, 1]), 0, 0);
    log.append([{ ...ent(3, 1), data: enc('0123456789') }, ent(4, 1)]);
    log.commitTo(4);
    assert.deepEqual(log.nextCommitted(1, 1e9).map((e) => e.index), [1]);
    assert.deepEqual(log.nextCommitted(10, 1e9).map((e) => e.index), [2], 'entries 3 and 4 are not durable');
    log.takeUnstable(1);
    log.persisted(1);
    assert.deepEqual(log.nextCommitted(10, 30).map((e) => e.index), [3], 'bytes: 34 > 30, but at least one');
    assert.deepEqual(log.nextCommitted(10, 30).map((e) => e.index), [4]);
  });

  test('compaction keeps the term of the compaction point; restore replaces the log', () => {
    const log = new RaftLog(0, 0, terms([1, 2, 2, 3]), 4, 3);
    log.compact(2);
    assert.equal(log.firstIndex(), 3);
    assert.equal(log.term(2), 2);
    assert.equal(log.hasTerm(1), false);
    assert.throws(() => log.compact(4), AssertionError, 'beyond applied');
    log.restore({ metadata: { index: 10, term: 4, confState: { voters: [1], learners: [] } }, data: enc('') });
    assert.equal(log.lastIndex(), 10);
    assert.equal(log.committed, 10);
    assert.equal(log.hasNextCommitted(), false, 'nothing to apply while the snapshot is pending');
    assert.equal(log.persisted(log.takeUnstable(1).snapshot === null ? 0 : 1), 10);
    assert.equal(log.applied, 10);
  });
});
