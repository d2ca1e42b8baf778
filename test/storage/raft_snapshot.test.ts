// Raft snapshots on the storage side (workers/storage_core.ts, storage/snapshotter.ts), on real
// LMDB and files in a temp dir, no cluster: member A applies a history (puts, overwrites,
// deletes, leases with keys and a checkpoint, a compaction, a revoke, membership changes and
// attributes) and makes a snapshot; the file is copied as the transport would deliver it; member
// B, with another older state and a WAL holding other (and unapplied) entries, stages and
// installs it. Then B must answer every range (at every revision), compaction error and lease
// exactly as A at that index, announce the replaced state (leases, configuration, membership),
// continue applying index+1.. with the same answers as A, and restart into the installed state
// with its WAL starting after the index. Crash tests stop the install at each of its steps,
// reopen the data dir in a new core and check that the state is all old (before the WAL's
// commit point) or all new (after it). Snapshots of another cluster, corrupt or truncated files
// and stale ones are refused at stage; a create reuses a held file and releases delete it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Long from 'long';

import { concordpb, etcdserverpb } from '../../src/gen/proto';
import type { Entry } from '../../src/raft/types';
import { raftIdOf, Membership } from '../../src/membership/membership';
import { SnapshotErrorCode } from '../../src/storage/snapshotter';
import * as schema from '../../src/storage/schema';
import { InstallStep } from '../../src/workers/storage_core';
import {
  AppliedWriter, decodeApplied, decodeBatch, decodeEntries, encodeBatch, PackWriter, type SnapshotAnswer,
} from '../../src/workers/protocol';
import {
  addMember, clusterIdDec, del, entry, Member, memberA, memberB, put, tempDir,
} from './snapshot_member';

const T = 3; // the term of A's history after the bootstrap entries

/** A's log: everything a snapshot must carry. Returns the entries and the last index. */
function historyA(): Entry[] {
  const es: Entry[] = [];
  let i = 0;
  const add = (req: concordpb.InternalRequest.$Properties, term = T): void => {
    es.push(entry(++i, term, req));
  };
  es.push(addMember(++i, 1, memberA, 'http://a:2380'));
  es.push(addMember(++i, 1, memberB, 'http://b:2380'));
  add({ member_attr_set: { member_id: memberA, name: 'a', client_urls: ['http://a:2379'] } }, 2);
  for (let k = 0; k < 20; k++) add(put(`k${String(k).padStart(2, '0')}`, `v1-${k}`));
  for (let k = 0; k < 10; k++) add(put(`k${String(k).padStart(2, '0')}`, `v2-${k}`));
  for (let k = 15; k < 20; k++) add(del(`k${k}`));
  add({ lease_grant: { ID: 100, TTL: 60 } });
  add({ lease_grant: { ID: 200, TTL: 120 } });
  add(put('lk1', 'x', 100));
  add(put('lk2', 'y', 100));
  add(put('lk3', 'z', 200));
  add({ lease_checkpoint: { checkpoints: [{ ID: 200, remaining_TTL: 50 }] } });
  add({ compaction: { revision: 25, physical: false } });
  for (let k = 20; k < 25; k++) add(put(`k${k}`, `v1-${k}`));
  add({ lease_grant: { ID: 300, TTL: 30 } });
  add(put('lk4', 'w', 300));
  add({ lease_revoke: { ID: 300 } });
  add({ txn: { success: [{ request_put: { key: Buffer.from('t1'), value: Buffer.from('a') } }, { request_put: { key: Buffer.from('t2'), value: Buffer.from('b') } }] } });
  return es;
}

/** Entries after the snapshot, applied by both members. */
function continuation(from: number, term: number): Entry[] {
  const es: Entry[] = [];
  let i = from;
  es.push(entry(++i, term, put('k00', 'v3')));
  es.push(entry(++i, term, put('new1', 'n', 200)));
  es.push(entry(++i, term, { lease_revoke: { ID: 100 } }));
  es.push(entry(++i, term, del('k21')));
  es.push(entry(++i, term, { compaction: { revision: 40, physical: true } }));
  es.push(entry(++i, term, put('new2', 'm')));
  return es;
}

/** B's own older state: other keys, another lease, and log entries it never applied. */
async function oldStateB(b: Member): Promise<{ applied: number; extra: Entry[] }> {
  const es: Entry[] = [addMember(1, 1, memberA, 'http://a:2380'), addMember(2, 1, memberB, 'http://b:2380')];
  let i = 2;
  for (let k = 0; k < 8; k++) es.push(entry(++i, 2, put(`x${k}`, `old-${k}`)));
  es.push(entry(++i, 2, { lease_grant: { ID: 900, TTL: 90 } }));
  es.push(entry(++i, 2, put('x-leased', 'o', 900)));
  await b.commit(es);
  // Appended, never committed: a conflicting tail of an old leader (the snapshot drops it).
  const extra = [entry(i + 1, 2, put('never', '1')), entry(i + 2, 2, put('never', '2'))];
  b.batch({ hardState: { term: 2, vote: 0, commit: i }, append: extra });
  await b.until(() => b.persisted.length > 0 && b.persisted[b.persisted.length - 1]!.index === i + 2, 'extra entries durable');
  return { applied: i, extra };
}

/** Everything a client can read, decoded, member-specific header fields removed. */
async function readState(m: Member, compactAt: number): Promise<unknown> {
  const latest = await m.range();
  const rev = latest.resp!.header!.revision as unknown as Long;
  const current = Long.fromValue(rev).toNumber();
  const ranges: unknown[] = [];
  for (let r = Math.max(1, compactAt - 2); r <= current; r++) {
    const x = await m.range(r);
    ranges.push(x.code === 0 ? { rev: r, count: x.resp!.count, kvs: x.resp!.kvs.map((kv) => etcdserverpb.RangeResponse.encode({ kvs: [kv] }).finish()), headerRev: x.resp!.header!.revision } : { rev: r, code: x.code });
  }
  const leases: unknown[] = [];
  for (const id of [100, 200, 300, 900]) {
    const t = await m.timeToLive(id);
    leases.push(t.code === 0 ? { id, ttl: t.resp!.grantedTTL, keys: t.resp!.keys.map((k) => Buffer.from(k).toString()) } : { id, code: t.code });
  }
  return { current, ranges, leases };
}

/** The answers of proposals `es`, as a client would see them (header member_id removed). */
function answers(m: Member, es: Entry[]): unknown[] {
  return es.map((e) => {
    const req = concordpb.InternalRequest.decode(e.data);
    const r = m.results.get(Long.fromValue(req.id as Long).toNumber());
    if (r === undefined) return null;
    if (r.code !== 0 || r.response.length === 0) return { code: r.code };
    const type = req.put ? etcdserverpb.PutResponse : req.delete_range ? etcdserverpb.DeleteRangeResponse
      : req.lease_revoke ? etcdserverpb.LeaseRevokeResponse : etcdserverpb.CompactionResponse;
    const decoded = type.toObject(type.decode(r.response) as never, { longs: String }) as { header?: { member_id?: string } };
    if (decoded.header) delete decoded.header.member_id;
    return decoded;
  });
}

/** Hash and HashKV(0) with their revisions (what identifies the state, not the member). */
async function hashes(m: Member): Promise<unknown> {
  const h = await m.hashDone(m.hashRequest('hash'));
  const kv = await m.hashDone(m.hashRequest('hashkv', 0));
  return [h.hash, h.currentRev, kv.hash, kv.currentRev, kv.compactRev, kv.rev];
}

function snapFiles(m: Member): string[] {
  return fs.readdirSync(path.join(m.dataDir, schema.snapDir)).sort();
}

describe('raft snapshots: create on one member, stage and install on another', () => {
  const root = tempDir('snap');
  let a: Member;
  let hist: Entry[];
  let S: number;
  let snap: SnapshotAnswer;
  let stateAtS: unknown;
  /** A's Hash and HashKV(0) at S (mvcc/hash.ts): B must have the same after the install. */
  let hashesAtS: unknown;
  /** A copy of A's snapshot, as the transport would deliver it (copied per use). */
  let source: string;
  let recvSeq = 0;
  const received = (): string => {
    const to = path.join(root, 'recv', `concord-snap-${++recvSeq}.part`);
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(source, to);
    return to;
  };

  before(async () => {
    a = new Member(path.join(root, 'a'), { memberId: memberA });
    hist = historyA();
    await a.commit(hist);
    S = hist[hist.length - 1]!.index;
    stateAtS = await readState(a, 25);
    hashesAtS = await hashes(a);
    snap = await a.create(S);
    assert.equal(snap.error, null);
    source = path.join(root, 'source.mdb');
    fs.copyFileSync(snap.file, source);
  });

  after(async () => {
    await a.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  test('create: the copy says its index, term, configuration and membership', async () => {
    assert.equal(snap.index, S);
    assert.equal(snap.term, T);
    assert.equal(snap.size, fs.statSync(snap.file).size);
    assert.deepEqual(snap.confState, { voters: [raftIdOf(memberA), raftIdOf(memberB)].sort((x, y) => x - y), learners: [] });
    const ms = Membership.decode(snap.membership).list();
    assert.deepEqual(ms.map((m) => m.id.toString()), [memberA.toString(), memberB.toString()]);
    assert.equal(ms[0]!.name, 'a');
    assert.equal(path.dirname(snap.file), path.join(a.dataDir, schema.snapDir));
    // A later request the held file satisfies gets the same file; releases delete it at the end.
    const again = await a.create(S - 5);
    assert.equal(again.file, snap.file);
    a.release(snap.file);
    assert.ok(fs.existsSync(snap.file), 'still held once');
    a.release(snap.file);
    assert.deepEqual(snapFiles(a), []);
    // Nothing held: a new request makes a new file (after more applies, a newer one).
    const more = [entry(S + 1, T, put('after', '1'))];
    await a.commit(more);
    const next = await a.create(S);
    assert.equal(next.error, null);
    assert.equal(next.index, S + 1);
    a.release(next.file);
    assert.deepEqual(snapFiles(a), []);
  });

  test('install: B answers as A at the index, continues identically, restarts into it', async () => {
    const b = new Member(path.join(root, 'b'), { memberId: memberB });
    const { applied: oldApplied } = await oldStateB(b);
    assert.equal(b.appliedIndex, oldApplied);
    const st = await b.stage(received());
    assert.equal(st.error, null);
    assert.equal(st.index, S);
    assert.equal(st.term, T);
    assert.deepEqual(snapFiles(b), [path.basename(st.file)]);
    const appliedBefore = b.applied.length;
    const seq = b.install(S, T);
    // Asked during the install: held, then answered from the installed state. Its data file is
    // LMDB's compacted copy of A's (other pages, same records): Hash must not see the difference.
    const hashDuring = b.hashRequest('hash');
    await b.until(() => b.persisted.some((p) => p.seq === seq), 'install persisted');
    assert.equal((await b.hashDone(hashDuring)).hash, (hashesAtS as number[])[0], 'Hash asked during the install');
    assert.deepEqual(await hashes(b), hashesAtS, 'Hash and HashKV equal A\'s at the index');
    const p = b.persisted.find((x) => x.seq === seq)!;
    assert.deepEqual([p.index, p.term], [S, T]);
    // The first Applied after the install announces the new state.
    const replaced = b.applied.slice(appliedBefore).find((h) => (h.replaced ?? null) !== null)!;
    assert.ok(replaced, 'an Applied with replaced');
    assert.equal(replaced.appliedIndex, S);
    assert.equal(replaced.replaced!.index, S);
    assert.equal(replaced.replaced!.term, T);
    assert.deepEqual(replaced.replaced!.confState, snap.confState);
    assert.deepEqual(replaced.replaced!.leases.map((l) => [l.id, l.ttl, l.remaining]).sort(), [['100', 60, 0], ['200', 120, 50]]);
    assert.deepEqual(Buffer.from(replaced.membership!), Buffer.from(snap.membership));
    assert.deepEqual(await readState(b, 25), stateAtS);
    assert.deepEqual(snapFiles(b), [], 'the staged file became the kv data file');

    // index+1.. applied on both: the same answers and the same state.
    const aCont = continuation(S + 1, T); // A applied S+1 already (the create test)
    const bCont = [entry(S + 1, T, put('after', '1')), ...aCont];
    await b.commit(bCont);
    await a.commit(aCont);
    await b.answered(aCont);
    await a.answered(aCont);
    const finalA = await readState(a, 40);
    assert.deepEqual(await readState(b, 40), finalA);
    assert.deepEqual(answers(b, aCont), answers(a, aCont));

    // A restart of B recovers the installed state: the WAL starts after the snapshot.
    await b.close();
    const b2 = new Member(path.join(root, 'b'), { memberId: memberB });
    assert.equal(b2.ready.snapshotIndex, S);
    assert.equal(b2.ready.snapshotTerm, T);
    assert.equal(b2.ready.appliedIndex, bCont[bCont.length - 1]!.index);
    assert.ok(b2.ready.hardState.commit >= S);
    assert.equal(b2.ready.memberId, memberB.toString(), 'our member id, not the sender\'s');
    assert.equal(b2.ready.clusterId, clusterIdDec);
    assert.deepEqual(await readState(b2, 40), finalA);
    await b2.close();
  });

  test('stage refuses another cluster, corrupt and truncated files, and stale snapshots', async () => {
    const b = new Member(path.join(root, 'refuse'), { memberId: memberB });
    await oldStateB(b);
    // Another cluster.
    const c = new Member(path.join(root, 'other'), { memberId: memberA, clusterId: '42' });
    await c.commit([addMember(1, 1, memberA, 'http://a:2380'), entry(2, 1, put('c', '1'))]);
    const cs = await c.create(2);
    assert.equal(cs.error, null);
    const foreign = path.join(root, 'recv', 'foreign.part');
    fs.copyFileSync(cs.file, foreign);
    const r1 = await b.stage(foreign);
    assert.equal(r1.error?.code, SnapshotErrorCode.ClusterMismatch);
    assert.equal(fs.existsSync(foreign), false, 'the worker took the file');
    await c.close();
    // Not LMDB.
    const junk = path.join(root, 'recv', 'junk.part');
    fs.writeFileSync(junk, Buffer.alloc(64 * 1024, 7));
    assert.equal((await b.stage(junk)).error?.code, SnapshotErrorCode.Invalid);
    const empty = path.join(root, 'recv', 'empty.part');
    fs.writeFileSync(empty, Buffer.alloc(0));
    assert.equal((await b.stage(empty)).error?.code, SnapshotErrorCode.Invalid);
    // Truncated (an interrupted transfer the digest did not catch).
    const cut = received();
    fs.truncateSync(cut, Math.floor(fs.statSync(cut).size / 2));
    assert.equal((await b.stage(cut)).error?.code, SnapshotErrorCode.Invalid);
    assert.deepEqual(snapFiles(b), [], 'refused files are removed');
    // Stale: at or below what B applied.
    const own = await b.create(0);
    const ownCopy = path.join(root, 'recv', 'own.part');
    fs.copyFileSync(own.file, ownCopy);
    b.release(own.file);
    assert.equal((await b.stage(ownCopy)).error?.code, SnapshotErrorCode.Stale);
    // Still fine afterwards: the real one stages and installs.
    const ok = await b.stage(received());
    assert.equal(ok.error, null);
    const seq = b.install(S, T);
    await b.until(() => b.persisted.some((p) => p.seq === seq), 'install persisted');
    assert.deepEqual(await readState(b, 25), stateAtS);
    await b.close();
  });

  test('a staged file released, or replaced by a newer stage, is deleted', async () => {
    const b = new Member(path.join(root, 'release'), { memberId: memberB });
    await oldStateB(b);
    const s1 = await b.stage(received());
    assert.deepEqual(snapFiles(b), [path.basename(s1.file)]);
    b.release(s1.file);
    assert.deepEqual(snapFiles(b), []);
    const s2 = await b.stage(received());
    const s3 = await b.stage(received());
    assert.equal(s2.file, s3.file);
    assert.deepEqual(snapFiles(b), [path.basename(s3.file)]);
    await b.close();
    // A restart forgets a staged snapshot that no install refers to.
    const b2 = new Member(path.join(root, 'release'), { memberId: memberB });
    assert.deepEqual(snapFiles(b2), []);
    await b2.close();
  });

  for (const step of [
    InstallStep.Drained, InstallStep.BackendClosed, InstallStep.WalSegmentWritten, InstallStep.WalRenamed,
    InstallStep.WalRestarted, InstallStep.KvLockRemoved, InstallStep.KvReplaced, InstallStep.Reopened,
  ]) {
    const committed = step >= InstallStep.WalRenamed;
    test(`crash at install step ${step}: the reopened state is all ${committed ? 'new' : 'old'}`, async () => {
      const dir = path.join(root, `crash-${step}`);
      const b = new Member(dir, { memberId: memberB, crashAt: step });
      const { applied: oldApplied, extra } = await oldStateB(b);
      const oldState = await readState(b, 1);
      const st = await b.stage(received());
      assert.equal(st.error, null);
      b.install(S, T);
      await b.until(() => b.crashed === step, `crash at ${step}`);
      // Messages sent meanwhile are held, never answered by a crashed core.
      await b.core.crashForTest();

      const r = new Member(dir, { memberId: memberB });
      assert.equal(r.ready.memberId, memberB.toString());
      if (!committed) {
        // The old state: LMDB as its last batched commit left it (up to the crash) plus the
        // old WAL, which holds every entry after it, the unapplied tail included.
        assert.ok(r.ready.appliedIndex <= oldApplied);
        assert.equal(r.ready.snapshotIndex, 0);
        assert.equal(r.ready.hardState.commit, oldApplied);
        const walEntries = decodeEntries(r.ready.entries);
        assert.equal(walEntries[walEntries.length - 1]!.index, extra[extra.length - 1]!.index);
        await r.replayCommitted();
        assert.equal(r.appliedIndex, oldApplied);
        assert.deepEqual(await readState(r, 1), oldState);
        assert.deepEqual(snapFiles(r), []);
        // The leader sends it again: it installs.
        assert.equal((await r.stage(received())).error, null);
        const seq = r.install(S, T);
        await r.until(() => r.persisted.some((p) => p.seq === seq), 'install persisted');
      } else {
        assert.equal(r.ready.appliedIndex, S);
        assert.equal(r.ready.snapshotIndex, S);
        assert.equal(r.ready.snapshotTerm, T);
        assert.equal(r.ready.hardState.commit, S);
        assert.deepEqual(snapFiles(r), [], 'the staged file is consumed');
        assert.equal(fs.readdirSync(path.join(dir, schema.walDir)).filter((f) => f.endsWith('.wal')).length, 1);
      }
      assert.deepEqual(await readState(r, 25), stateAtS);
      // And it goes on from there as A did.
      const cont = continuation(S, T);
      await r.commit(cont);
      assert.equal(r.appliedIndex, S + cont.length);
      const x = await r.range(0, 'new2');
      assert.equal(Buffer.from(x.resp!.kvs[0]!.value!).toString(), 'm');
      await r.close();
    });
  }
});

describe('snapshot fields of the worker messages', () => {
  test('Batch: the snapshot rides in the flags byte; a batch without one is unchanged', () => {
    const w = new PackWriter(64);
    const plain = encodeBatch(w, { seq: 5, hardState: null, mustSync: true, raftTerm: 2, append: [], apply: [], reads: [] });
    assert.equal(plain.length, 1 + 4 + 1 + 8 + 4 + 4 + 4);
    const withSnap = encodeBatch(w, {
      seq: 6, snapshot: { index: 2 ** 40, term: 7 }, hardState: { term: 7, vote: 0, commit: 2 ** 40 },
      mustSync: true, raftTerm: 7, append: [], apply: [], reads: [],
    });
    assert.equal(withSnap.length, plain.length + 24 + 16);
    const d = decodeBatch(withSnap);
    assert.deepEqual(d.snapshot, { index: 2 ** 40, term: 7 });
    assert.deepEqual(d.hardState, { term: 7, vote: 0, commit: 2 ** 40 });
    assert.equal('snapshot' in decodeBatch(plain), false);
    assert.throws(() => encodeBatch(w, { seq: 0, snapshot: { index: 1, term: 1 }, hardState: null, mustSync: true, raftTerm: 1, append: [], apply: [], reads: [] }));
  });

  test('Applied: the replaced section comes only after an install', () => {
    const w = new AppliedWriter();
    const header = { appliedIndex: 9, currentRev: 4, compactRev: 0, dbSize: 1, dbSizeInUse: 1, membership: null, alarms: null, auth: null };
    const plain = w.finish(header);
    const none = { result: () => undefined, read: () => undefined, leaseChange: () => undefined };
    assert.equal(decodeApplied(plain, none).replaced, undefined);
    w.result(3, 0, new Uint8Array([1]));
    const replaced = {
      index: 9, term: 2, confState: { voters: [1, 2 ** 50], learners: [3] },
      leases: [{ id: '-9223372036854775808', ttl: 60, remaining: 0 }, { id: '200', ttl: 120, remaining: 50 }],
    };
    const m = w.finish({ ...header, membership: new Uint8Array([5, 6]), alarms: new Uint8Array(4), replaced });
    let results = 0;
    const h = decodeApplied(m, { ...none, result: () => { results++; } });
    assert.deepEqual(h.replaced, replaced);
    assert.deepEqual([...h.membership!], [5, 6]);
    assert.deepEqual([...h.alarms!], [0, 0, 0, 0]);
    assert.equal(results, 1);
  });
});
