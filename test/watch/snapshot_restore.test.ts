// The watch worker across a raft snapshot install (etcd watchableStore.Restore): the real watch
// worker thread (WatchHub) follows member B's event ring and reads B's LMDB environment while B
// (a StorageCore on real files, test/storage/snapshot_member.ts) installs member A's snapshot.
// B's old state is a prefix of A's history, as for a follower that fell behind. Watchers created
// on B before the install must see, after it, exactly A's events after their revision and then
// the writes applied after the snapshot: nothing missing, nothing twice, nothing invented; a
// watcher whose next revision the snapshot has compacted is cancelled with compact_revision, as
// etcd does; a watcher of a future revision starts there. A second install (the kv environment's
// generation 2) is followed too, with the watch worker reopening the environment each time.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import Long from 'long';

import { etcdserverpb } from '../../src/gen/proto';
import type { Entry } from '../../src/raft/types';
import * as schema from '../../src/storage/schema';
import { WatchHub } from '../../src/watch/hub';
import { newWatchStatsBuffer } from '../../src/watch/protocol';
import { newRingBuffer } from '../../src/watch/ring';
import {
  addMember, clusterIdDec, del, entry, Member, memberA, memberB, put, tempDir,
} from '../storage/snapshot_member';

const T = 2;

interface Ev { rev: number; type: 'PUT' | 'DELETE'; key: string; value: string }

/**
 * A log of plain writes (each one revision: rev = 1 + its position among writes), with a
 * compaction at `compactAfterWrites` writes (at the revision then current). Returns the entries
 * and the event each write makes.
 */
function log(writes: number, compactAt: number[], from = 0): { entries: Entry[]; events: Ev[] } {
  const entries: Entry[] = [addMember(1, 1, memberA, 'http://a:2380'), addMember(2, 1, memberB, 'http://b:2380')];
  const events: Ev[] = [];
  let index = 2;
  const live = new Map<string, string>();
  for (let w = 0; w < writes; w++) {
    const rev = w + 2;
    const key = `k${(w * 7) % 13}`;
    if (w % 5 === 4 && live.has(key)) {
      entries.push(entry(++index, T, del(key)));
      live.delete(key);
      events.push({ rev, type: 'DELETE', key, value: '' });
    } else {
      const value = `v${from + w}`;
      entries.push(entry(++index, T, put(key, value)));
      live.set(key, value);
      events.push({ rev, type: 'PUT', key, value });
    }
    if (compactAt.includes(rev)) entries.push(entry(++index, T, { compaction: { revision: rev } }));
  }
  return { entries, events };
}

/** A watch stream of the hub: every response, decoded. */
class Stream {
  readonly id: number;
  readonly responses: etcdserverpb.WatchResponse[] = [];
  failed: string | null = null;

  constructor(readonly hub: WatchHub) {
    this.id = hub.openStream({
      writeFramed: (frames, count) => {
        let at = 0;
        for (let i = 0; i < count; i++) {
          const len = Buffer.from(frames.buffer, frames.byteOffset + at + 1, 4).readUInt32BE(0);
          this.responses.push(etcdserverpb.WatchResponse.decode(frames.subarray(at + 5, at + 5 + len)));
          at += 5 + len;
        }
        hub.ack(this.id, frames.length);
      },
      fail: (message) => {
        this.failed = message;
      },
    });
  }

  watch(watchId: number, startRev: number): void {
    this.hub.create(this.id, { key: Buffer.from([0]), range_end: Buffer.from([0]), start_revision: startRev, watch_id: watchId });
  }

  events(watchId: number): Ev[] {
    const out: Ev[] = [];
    for (const r of this.responses) {
      if (Long.fromValue(r.watch_id as Long).toNumber() !== watchId) continue;
      for (const e of r.events) {
        out.push({
          rev: Long.fromValue(e.kv!.mod_revision as Long).toNumber(),
          type: (e.type as unknown as number) === 1 ? 'DELETE' : 'PUT',
          key: Buffer.from(e.kv!.key!).toString(), value: Buffer.from(e.kv!.value ?? []).toString(),
        });
      }
    }
    return out;
  }

  cancelled(watchId: number): etcdserverpb.WatchResponse | undefined {
    return this.responses.find((r) => Long.fromValue(r.watch_id as Long).toNumber() === watchId && r.canceled);
  }
}

async function startHub(b: Member): Promise<WatchHub> {
  return WatchHub.start({
    kvPath: path.join(b.dataDir, schema.kvDir), mapSizeBytes: 1 << 30, eventRing: b.ring,
    compactRev: b.compactRev, clusterId: clusterIdDec, memberId: memberB.toString(),
    fragmentBytesMax: 2 * 1024 * 1024, streamBytesMax: 4 * 1024 * 1024, progressNotifyIntervalMs: 600_000,
    stats: newWatchStatsBuffer(), storeRev: () => b.currentRev, currentRaftTerm: () => T,
    onFatal: (message) => {
      throw new Error(`watch worker failed: ${message}`);
    },
  });
}

/** Makes A's snapshot of `entries` and delivers a copy of it as the transport would. */
async function snapshotOf(root: string, name: string, entries: Entry[]): Promise<{ file: string; index: number }> {
  const a = new Member(path.join(root, name), { memberId: memberA });
  await a.commit(entries);
  const s = await a.create(entries[entries.length - 1]!.index);
  assert.equal(s.error, null);
  const file = path.join(root, `${name}.part`);
  fs.copyFileSync(s.file, file);
  a.release(s.file);
  await a.close();
  return { file, index: s.index };
}

async function install(b: Member, file: string, index: number): Promise<void> {
  const st = await b.stage(file);
  assert.equal(st.error, null);
  const seq = b.install(index, T);
  await b.until(() => b.persisted.some((p) => p.seq === seq), 'install persisted');
}

describe('watch worker across a snapshot install', () => {
  const root = tempDir('watch-snap');
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  test('watchers continue with exactly the missing events, then the new writes', async () => {
    // A: 60 writes, compacted at revision 10 (inside B's prefix); B applied the first 30.
    const full = log(60, [10]);
    const bWrites = 30;
    const prefix = full.entries.filter((e) => e.index <= 2 + bWrites + 1); // + the compaction entry
    const snap = await snapshotOf(root, 'a1', full.entries);
    const b = new Member(path.join(root, 'b1'), { memberId: memberB, ring: newRingBuffer(1 << 20) });
    await b.commit(prefix);
    const rB = b.currentRev;
    assert.equal(rB, bWrites + 1);
    const hub = await startHub(b);
    const s = new Stream(hub);
    s.watch(1, 0); //          synced: from rB + 1
    s.watch(2, 12); //         history of the old store first, then the new one
    s.watch(3, rB + 20); //    a future revision, inside the snapshot
    s.watch(4, full.events.length + 5); // beyond the snapshot: only the writes after it
    await b.until(() => s.events(2).length === rB - 11, 'old history delivered');

    await install(b, snap.file, snap.index);
    const more = log(8, [], 1000).entries.slice(2).map((e, i) => ({ ...e, index: snap.index + 1 + i }));
    await b.commit(more);
    const afterEvents = log(8, [], 1000).events.map((e) => ({ ...e, rev: e.rev + full.events.length }));
    const want = [...full.events, ...afterEvents];
    const from = (rev: number): Ev[] => want.filter((e) => e.rev >= rev);
    await b.until(() => s.events(1).length === from(rB + 1).length && s.events(4).length === from(full.events.length + 5).length, 'all events');
    assert.deepEqual(s.events(1), from(rB + 1));
    assert.deepEqual(s.events(2), from(12));
    assert.deepEqual(s.events(3), from(rB + 20));
    assert.deepEqual(s.events(4), from(full.events.length + 5));
    for (const id of [1, 2, 3, 4]) assert.equal(s.cancelled(id), undefined);
    assert.equal(s.failed, null);
    await hub.close();
    await b.close();
  });

  test('a watcher behind the snapshot\'s compaction is cancelled with compact_revision', async () => {
    // A compacted at revision 45, after B's prefix (B is at revision 31).
    const full = log(60, [10, 45]);
    const snap = await snapshotOf(root, 'a2', full.entries);
    const b = new Member(path.join(root, 'b2'), { memberId: memberB, ring: newRingBuffer(1 << 20) });
    await b.commit(full.entries.filter((e) => e.index <= 33));
    const rB = b.currentRev;
    const hub = await startHub(b);
    const s = new Stream(hub);
    s.watch(1, 0); //       next revision rB + 1 < 45: cancelled
    s.watch(2, 50); //      from 50 >= 45: continues
    s.watch(3, 45); //      exactly the compaction revision: etcd keeps it (minRev >= compactRev)
    await b.until(() => s.responses.filter((r) => r.created).length === 3, 'created');
    await install(b, snap.file, snap.index);
    await b.until(() => s.cancelled(1) !== undefined && s.events(2).length === full.events.filter((e) => e.rev >= 50).length, 'cancel and events');
    assert.equal(Long.fromValue(s.cancelled(1)!.compact_revision as Long).toNumber(), 45);
    assert.deepEqual(s.events(1), []);
    assert.ok(rB + 1 < 45);
    assert.deepEqual(s.events(2), full.events.filter((e) => e.rev >= 50));
    await b.until(() => s.events(3).length === full.events.filter((e) => e.rev >= 45).length, 'events from 45');
    assert.deepEqual(s.events(3), full.events.filter((e) => e.rev >= 45));
    assert.equal(s.cancelled(2), undefined);
    assert.equal(s.cancelled(3), undefined);

    // A second install (generation 2): the worker reopens again and the watchers go on.
    const longer = log(90, [10, 45]);
    const snap2 = await snapshotOf(root, 'a3', longer.entries);
    await install(b, snap2.file, snap2.index);
    await b.until(() => s.events(2).length === longer.events.filter((e) => e.rev >= 50).length, 'second install events');
    assert.deepEqual(s.events(2), longer.events.filter((e) => e.rev >= 50));
    assert.deepEqual(s.events(3), longer.events.filter((e) => e.rev >= 45));
    await hub.close();
    await b.close();
  });
});
