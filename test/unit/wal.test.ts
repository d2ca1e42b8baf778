// WAL: append, group-commit sync, replay, segment rollover, torn tails told from corruption
// (issue #10, finding 2), repair, releaseTo. Each test works in its own directory under one temp
// root, removed at the end. Record bodies start with u32 syncedThrough, then the kind byte.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import type { Entry, HardState } from '../../src/raft/types';
import { Wal, WalCorruptError, WalReplay } from '../../src/storage/wal';
import { AssertionError } from '../../src/util/assert';
import { crc32 } from '../../src/util/crc32';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-wal-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let seq = 0;
const open: Wal[] = [];
after(() => {
  for (const w of open) w.close();
});

function newDir(): string {
  return path.join(root, 'wal' + seq++);
}

function openWal(dir: string, segmentBytes = 4096): { wal: Wal; replay: WalReplay } {
  const r = Wal.open({ dir, segmentBytes });
  open.push(r.wal);
  return r;
}

function closeWal(w: Wal): void {
  w.close();
  open.splice(open.indexOf(w), 1);
}

function reopen(dir: string, w: Wal, segmentBytes = 4096): { wal: Wal; replay: WalReplay } {
  closeWal(w);
  return openWal(dir, segmentBytes);
}

function entry(index: number, term: number, size = 100, type = 0): Entry {
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = (index * 31 + i) & 0xff;
  return { index, term, type, data };
}

function plain(entries: Entry[]): { index: number; term: number; type: number; data: string }[] {
  return entries.map((e) => ({ index: e.index, term: e.term, type: e.type, data: Buffer.from(e.data).toString('hex') }));
}

function segments(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.wal')).sort();
}

function syncWal(w: Wal): Promise<void> {
  return new Promise((resolve) => w.sync(resolve));
}

const segName = (seqNo: number, first: number): string =>
  seqNo.toString(16).padStart(16, '0') + '-' + first.toString(16).padStart(16, '0') + '.wal';

/** Record header bytes: length, body checksum, header checksum. */
const headerBytes = 12;
/** Offset of the kind byte and of an entry's index in a record starting at `at`. */
const kindAt = (at: number): number => at + headerBytes + 4;
const indexAt = (at: number): number => at + headerBytes + 5;
/** A header never crosses a 512-byte sector: the writer moves to the next one. */
const recordStart = (pos: number): number => (pos % 512 > 512 - headerBytes ? pos - (pos % 512) + 512 : pos);

/** Byte offsets of the records of a segment file: [start, bodyLength][]. */
function records(file: string): [number, number][] {
  const data = fs.readFileSync(file);
  const out: [number, number][] = [];
  let pos = 0;
  for (;;) {
    pos = recordStart(pos);
    if (pos + headerBytes > data.length) break;
    const len = data.readUInt32LE(pos);
    if (len === 0 || pos + headerBytes + len > data.length) break;
    if (crc32(data, pos, pos + 8) !== data.readUInt32LE(pos + 8)) break;
    if (crc32(data, pos + headerBytes, pos + headerBytes + len) !== data.readUInt32LE(pos + 4)) break;
    out.push([pos, len]);
    pos += headerBytes + len;
  }
  return out;
}

/** A well-formed entry record: header and body with the given syncedThrough. */
function rawEntryRecord(index: number, term: number, syncedThrough: number): Buffer {
  const body = Buffer.alloc(22 + 4);
  body.writeUInt32LE(syncedThrough, 0);
  body[4] = 1;
  body.writeDoubleLE(index, 5);
  body.writeDoubleLE(term, 13);
  body[21] = 0;
  const hdr = Buffer.alloc(headerBytes);
  hdr.writeUInt32LE(body.length, 0);
  hdr.writeUInt32LE(crc32(body), 4);
  hdr.writeUInt32LE(crc32(hdr, 0, 8), 8);
  return Buffer.concat([hdr, body]);
}

describe('Wal', () => {
  test('a new WAL is empty: one preallocated segment, zero hard state', () => {
    const dir = newDir();
    const { wal, replay } = openWal(dir);
    assert.deepEqual(replay, { hardState: { term: 0, vote: 0, commit: 0 }, prevIndex: 0, prevTerm: 0, entries: [] });
    assert.deepEqual(segments(dir), [segName(1, 1)]);
    assert.equal(fs.statSync(path.join(dir, segName(1, 1))).size, 4096);
    const r2 = reopen(dir, wal);
    assert.deepEqual(r2.replay.entries, []);
    assert.equal(r2.replay.prevIndex, 0);
  });

  test('entries and the last hard state survive a reopen, byte for byte', async () => {
    const dir = newDir();
    const { wal } = openWal(dir, 64 * 1024);
    const written = [entry(1, 1, 0), entry(2, 1, 17, 1), entry(3, 2, 300)];
    wal.appendHardState({ term: 1, vote: 1, commit: 0 });
    for (const e of written) wal.appendEntry(e);
    wal.appendHardState({ term: 2, vote: 1, commit: 3 });
    await syncWal(wal);
    const { replay } = reopen(dir, wal, 64 * 1024);
    assert.deepEqual(plain(replay.entries), plain(written));
    assert.deepEqual(replay.hardState, { term: 2, vote: 1, commit: 3 });
    assert.equal(replay.prevIndex, 0);
  });

  test('large index/term values and an entry bigger than the 1 MiB scratch buffer', async () => {
    const dir = newDir();
    const { wal } = openWal(dir, 4 * 1024 * 1024);
    const big = entry(1, 2 ** 40, 1536 * 1024);
    wal.appendEntry(big);
    wal.appendHardState({ term: 2 ** 40, vote: 2 ** 52, commit: 1 });
    await syncWal(wal);
    const { replay } = reopen(dir, wal, 4 * 1024 * 1024);
    assert.deepEqual(plain(replay.entries), plain([big]));
    assert.deepEqual(replay.hardState, { term: 2 ** 40, vote: 2 ** 52, commit: 1 });
  });

  test('appending a gap is a bug; rewriting an index drops it and everything after it', () => {
    const dir = newDir();
    const { wal } = openWal(dir);
    for (let i = 1; i <= 5; i++) wal.appendEntry(entry(i, 1, 10));
    assert.throws(() => wal.appendEntry(entry(7, 1, 10)), AssertionError);
    wal.appendEntry(entry(3, 2, 10)); // raft truncation: 3.. replaced
    wal.appendEntry(entry(4, 2, 10));
    const { replay } = reopen(dir, wal);
    assert.deepEqual(replay.entries.map((e) => [e.index, e.term]), [[1, 1], [2, 1], [3, 2], [4, 2]]);
  });

  test('a record larger than a segment is refused', () => {
    const { wal } = openWal(newDir());
    assert.throws(() => wal.appendEntry(entry(1, 1, 4096)), AssertionError);
  });

  test('sync: nothing written answers at once; group commit answers every waiter in order', async () => {
    const dir = newDir();
    const { wal } = openWal(dir);
    let called = false;
    wal.sync(() => (called = true));
    assert.equal(called, true, 'no write since the last sync: answered synchronously');
    const order: number[] = [];
    wal.appendEntry(entry(1, 1, 10));
    wal.sync(() => order.push(1)); // starts a sync
    wal.sync(() => order.push(2)); // covered by the running sync
    wal.appendEntry(entry(2, 1, 10));
    wal.sync(() => order.push(3)); // needs the next sync
    wal.sync(() => order.push(4));
    assert.deepEqual(order, []);
    await syncWal(wal);
    assert.deepEqual(order, [1, 2, 3, 4]);
  });

  test('sync from inside a sync callback (write, then sync again) is answered', async () => {
    const dir = newDir();
    const { wal } = openWal(dir);
    wal.appendEntry(entry(1, 1, 10));
    const done = await new Promise<string[]>((resolve) => {
      const log: string[] = [];
      wal.sync(() => {
        log.push('first');
        wal.appendEntry(entry(2, 1, 10));
        wal.sync(() => {
          log.push('second');
          resolve(log);
        });
      });
      wal.sync(() => log.push('first-covered'));
    });
    assert.deepEqual(done, ['first', 'first-covered', 'second']);
    // and the WAL still works afterwards
    wal.appendEntry(entry(3, 1, 10));
    await syncWal(wal);
    const { replay } = reopen(dir, wal);
    assert.deepEqual(replay.entries.map((e) => e.index), [1, 2, 3]);
  });

  test('a segment roll and a close while a sync runs: every waiter answered, no error', async () => {
    const dir = newDir();
    const { wal } = openWal(dir);
    wal.appendEntry(entry(1, 1, 100));
    const first = syncWal(wal); // fdatasync of segment 1 in flight
    for (let i = 2; i <= 40; i++) wal.appendEntry(entry(i, 1, 100)); // rolls to segment 2
    assert.equal(segments(dir).length, 2);
    const second = syncWal(wal);
    await first;
    await second;
    wal.appendEntry(entry(41, 1, 100));
    const third = syncWal(wal); // runs
    wal.appendEntry(entry(42, 1, 100));
    const fourth = syncWal(wal); // waits for the next sync
    closeWal(wal); // closing while a sync runs and another waits: close() syncs both
    await third;
    await fourth;
    const { replay } = openWal(dir);
    assert.equal(replay.entries.length, 42);
  });

  test('segment rollover: names carry sequence and first index; replay reads across segments', async () => {
    const dir = newDir();
    const { wal } = openWal(dir);
    const written: Entry[] = [];
    // ~ 30 entries of 100 bytes per 4 KiB segment; a hard state after each 5 entries
    for (let i = 1; i <= 200; i++) {
      const e = entry(i, 1 + Math.floor(i / 50), 100);
      written.push(e);
      wal.appendEntry(e);
      if (i % 5 === 0) wal.appendHardState({ term: e.term, vote: 1, commit: i });
    }
    await syncWal(wal);
    const segs = segments(dir);
    assert.ok(segs.length >= 6, `several segments (${segs.length})`);
    assert.equal(segs[0], segName(1, 1));
    for (const [i, name] of segs.entries()) assert.equal(parseInt(name.slice(0, 16), 16), i + 1, 'sequence numbers');
    const { wal: w2, replay } = reopen(dir, wal);
    assert.deepEqual(plain(replay.entries), plain(written));
    assert.deepEqual(replay.hardState, { term: 5, vote: 1, commit: 200 });
    // every segment starts where its name says: its first entry record has that index
    for (const name of segs.slice(1)) {
      const first = parseInt(name.slice(17, 33), 16);
      const data = fs.readFileSync(path.join(dir, name));
      const recs = records(path.join(dir, name));
      assert.equal(data[kindAt(recs[0]![0])], 3, `${name} starts with a segment-start record`);
      const firstEntry = recs.find(([at]) => data[kindAt(at)] === 1);
      assert.ok(firstEntry !== undefined);
      assert.equal(data.readDoubleLE(indexAt(firstEntry[0])), first, `${name}: first entry index`);
    }
    // appends continue in the last segment
    w2.appendEntry(entry(201, 5, 100));
    await syncWal(w2);
    const r3 = reopen(dir, w2);
    assert.equal(r3.replay.entries.length, 201);
  });

  test('rollover triggered by a hard state record keeps that record', async () => {
    const dir = newDir();
    const { wal } = openWal(dir, 1024);
    // segment start record (12 + 21) + entry (12 + 22 + 953) leaves 4 bytes: a hard state
    // record (12 + 29) does not fit and opens the next segment
    wal.appendEntry(entry(1, 1, 953));
    assert.deepEqual(segments(dir), [segName(1, 1)]);
    wal.appendHardState({ term: 1, vote: 1, commit: 1 });
    assert.deepEqual(segments(dir), [segName(1, 1), segName(2, 2)]);
    wal.appendEntry(entry(2, 1, 10));
    await syncWal(wal);
    const { replay } = reopen(dir, wal, 1024);
    assert.deepEqual(replay.entries.map((e) => e.index), [1, 2]);
    assert.deepEqual(replay.hardState, { term: 1, vote: 1, commit: 1 });
  });

  describe('torn tail', () => {
    async function setup(n: number): Promise<{ dir: string; wal: Wal; file: string }> {
      const dir = newDir();
      const { wal } = openWal(dir, 64 * 1024);
      for (let i = 1; i <= n; i++) wal.appendEntry(entry(i, 1, 50));
      wal.appendHardState({ term: 1, vote: 1, commit: n });
      await syncWal(wal);
      closeWal(wal);
      return { dir, wal, file: path.join(dir, segName(1, 1)) };
    }

    async function checkRecovers(dir: string, wantLast: number, wantHs: HardState): Promise<void> {
      const { wal, replay } = openWal(dir, 64 * 1024);
      assert.equal(replay.entries.length, wantLast);
      assert.equal(replay.entries[replay.entries.length - 1]!.index, wantLast);
      assert.deepEqual(replay.hardState, wantHs);
      // the rest of the file after the last good record is zero
      const file = path.join(dir, segName(1, 1));
      const recs = records(file);
      const [at, len] = recs[recs.length - 1]!;
      const data = fs.readFileSync(file);
      assert.ok(data.subarray(at + headerBytes + len).every((x) => x === 0), 'torn tail zeroed');
      // later appends work and replay
      wal.appendEntry(entry(wantLast + 1, 2, 50));
      wal.appendHardState({ term: 2, vote: 1, commit: wantLast + 1 });
      await syncWal(wal);
      const r2 = reopen(dir, wal, 64 * 1024);
      assert.deepEqual(r2.replay.entries.map((e) => e.index), Array.from({ length: wantLast + 1 }, (_, i) => i + 1));
      assert.equal(r2.replay.entries[wantLast]!.term, 2);
      assert.deepEqual(r2.replay.hardState, { term: 2, vote: 1, commit: wantLast + 1 });
    }

    test('last entry record with a sector never written (zeros): a torn write, repaired', async () => {
      const dir = newDir();
      const { wal } = openWal(dir, 64 * 1024);
      for (let i = 1; i <= 5; i++) wal.appendEntry(entry(i, 1, 50));
      await syncWal(wal);
      // a large last record whose second sector never reached the disk
      wal.appendEntry(entry(6, 1, 2000));
      closeWal(wal);
      const file = path.join(dir, segName(1, 1));
      const [at] = records(file)[6]!;
      const sector = (Math.floor(at / 512) + 2) * 512;
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.alloc(512), 0, 512, sector);
      fs.closeSync(fd);
      await checkRecovers(dir, 5, { term: 0, vote: 0, commit: 0 });
    });

    test('header never written (body-first write order): zero length ends the log', async () => {
      const { dir, file } = await setup(10);
      const recs = records(file);
      const [at] = recs[recs.length - 1]!;
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.alloc(headerBytes), 0, headerBytes, at);
      fs.closeSync(fd);
      await checkRecovers(dir, 10, { term: 0, vote: 0, commit: 0 });
    });

    test('unsynced leftovers after a torn record (written out of order) are zeroed, never read', async () => {
      const { dir, file } = await setup(5);
      const recs = records(file);
      const [at, len] = recs[recs.length - 1]!;
      const fd = fs.openSync(file, 'r+');
      // a valid record far after the end whose syncedThrough does not reach the torn one: a
      // later unsynced write that reached the disk before an earlier one (no sync covered either)
      // the body of the next record without its header (bodies are written first)
      fs.writeSync(fd, Buffer.alloc(40, 0x5a), 0, 40, recordStart(at + headerBytes + len) + headerBytes);
      fs.writeSync(fd, rawEntryRecord(99, 1, at + headerBytes + len), 0, headerBytes + 22 + 4, recordStart(at + headerBytes + len + 500));
      fs.closeSync(fd);
      await checkRecovers(dir, 5, { term: 1, vote: 1, commit: 5 });
    });
  });

  describe('corruption (refuses to open; repair cuts there)', () => {
    /** Entries 1..10 synced one by one: each record's syncedThrough covers the one before it. */
    async function synced(n: number): Promise<{ dir: string; file: string }> {
      const dir = newDir();
      const { wal } = openWal(dir, 64 * 1024);
      for (let i = 1; i <= n; i++) {
        wal.appendEntry(entry(i, 1, 50));
        await syncWal(wal);
      }
      closeWal(wal);
      return { dir, file: path.join(dir, segName(1, 1)) };
    }

    function poke(file: string, at: number, bytes: number[]): void {
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.from(bytes), 0, bytes.length, at);
      fs.closeSync(fd);
    }

    function openError(dir: string, segmentBytes = 64 * 1024): WalCorruptError {
      try {
        Wal.open({ dir, segmentBytes }).wal.close();
      } catch (err) {
        assert.ok(err instanceof WalCorruptError, String(err));
        return err;
      }
      assert.fail('the WAL opened');
    }

    test('a flipped bit in a synced record followed by valid ones: refused, file and offset named', async () => {
      const { dir, file } = await synced(10);
      const [at] = records(file)[4]!; // entry 4
      poke(file, at + headerBytes + 30, [0xee]);
      const err = openError(dir);
      assert.equal(err.file, file);
      assert.equal(err.offset, at);
      assert.match(err.message, /corrupt record in .*0000000000000001-0000000000000001\.wal at offset \d+/);
      assert.match(err.message, /concordutl wal repair/);
      // the bytes are left as they were: refusing changes nothing
      assert.equal(fs.readFileSync(file)[at + headerBytes + 30], 0xee);
    });

    test('a zeroed sector inside synced records: proven synced by a later record, refused', async () => {
      const { dir, file } = await synced(40);
      const recs = records(file);
      const [at] = recs[10]!;
      // a whole sector lost (a lost write looks like a torn one) with synced records after it
      const sector = (Math.floor(at / 512) + 1) * 512;
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.alloc(512), 0, 512, sector);
      fs.closeSync(fd);
      const err = openError(dir);
      assert.match(err.reason, /shows it had been synced/);
    });

    test('a file cut short inside its last record is damage, not a torn write (segments are preallocated)', async () => {
      const { dir, file } = await synced(10);
      const recs = records(file);
      const [at, len] = recs[recs.length - 1]!;
      fs.truncateSync(file, at + headerBytes + len - 3);
      const err = openError(dir);
      assert.equal(err.offset, at);
      assert.match(err.reason, /does not fit/);
    });

    test('a flipped bit in the length of the last record is damage: the header has its own checksum', async () => {
      const { dir, file } = await synced(10);
      const recs = records(file);
      const [at] = recs[recs.length - 1]!;
      poke(file, at + 2, [0x01]); // the length grows past what was written: without the header
      // checksum this read as a torn write and cut an acknowledged record silently
      const err = openError(dir);
      assert.equal(err.offset, at);
      assert.match(err.reason, /damaged record header/);
    });

    test('the last record with a flipped bit and no zeroed sector is corruption, not a torn write', async () => {
      const { dir, file } = await synced(10);
      const recs = records(file);
      const [at] = recs[recs.length - 1]!;
      poke(file, at + headerBytes + 20, [0x55]);
      const err = openError(dir);
      assert.equal(err.offset, at);
      assert.match(err.reason, /not a torn write/);
    });

    test('a CRC mismatch in a sealed segment is corruption, not a torn tail', async () => {
      const dir = newDir();
      const { wal } = openWal(dir);
      for (let i = 1; i <= 80; i++) wal.appendEntry(entry(i, 1, 100));
      await syncWal(wal);
      closeWal(wal);
      const first = path.join(dir, segments(dir)[0]!);
      const recs = records(first);
      poke(first, recs[3]![0] + 20, [0xff]);
      const err = openError(dir, 4096);
      assert.equal(err.file, first);
      assert.equal(err.offset, recs[3]![0]);
    });

    test('a missing segment in the middle is a gap, refused', async () => {
      const dir = newDir();
      const { wal } = openWal(dir);
      for (let i = 1; i <= 120; i++) wal.appendEntry(entry(i, 1, 100));
      await syncWal(wal);
      closeWal(wal);
      const segs = segments(dir);
      assert.ok(segs.length >= 4);
      fs.rmSync(path.join(dir, segs[2]!));
      const err = openError(dir, 4096);
      assert.match(err.reason, /the segment starts after index \d+ but the log before it ends at \d+/);
    });

    test('repair: cuts at the corrupt record, removes later segments, the WAL opens with what was before', async () => {
      const dir = newDir();
      const { wal } = openWal(dir);
      for (let i = 1; i <= 120; i++) {
        wal.appendEntry(entry(i, 1, 100));
        if (i % 10 === 0) await syncWal(wal);
      }
      closeWal(wal);
      const segs = segments(dir);
      const second = path.join(dir, segs[1]!);
      const recs = records(second);
      const [at] = recs[5]!;
      const data = fs.readFileSync(second);
      const firstLost = data.readDoubleLE(indexAt(at));
      poke(second, at + headerBytes + 40, [0x01]);
      openError(dir, 4096);
      const cut = Wal.repair({ dir, segmentBytes: 4096 }, 0);
      assert.ok(cut !== null);
      assert.equal(cut.file, second);
      assert.equal(cut.offset, at);
      assert.deepEqual(cut.removed, segs.slice(2));
      const { replay } = openWal(dir, 4096);
      assert.deepEqual(replay.entries.map((e) => e.index), Array.from({ length: firstLost - 1 }, (_, i) => i + 1));
      assert.equal(Wal.repair({ dir, segmentBytes: 4096 }, 0), null, 'nothing left to repair');
    });
  });

  test('releaseTo deletes only segments whose entries are all covered; replay starts after them', async () => {
    const dir = newDir();
    const { wal } = openWal(dir);
    wal.appendHardState({ term: 3, vote: 1, commit: 0 });
    for (let i = 1; i <= 150; i++) wal.appendEntry(entry(i, 3, 100));
    await syncWal(wal);
    const before = segments(dir);
    assert.ok(before.length >= 4);
    const firsts = before.map((n) => parseInt(n.slice(17, 33), 16));
    // up to the index before the third segment: the first two go
    wal.releaseTo(firsts[2]! - 1);
    assert.deepEqual(segments(dir), before.slice(2));
    // one less: the third segment is not covered entirely, nothing more goes
    wal.releaseTo(firsts[3]! - 2);
    assert.deepEqual(segments(dir), before.slice(2));
    // far beyond the end: the last segment always stays
    wal.releaseTo(10_000);
    assert.deepEqual(segments(dir), before.slice(-1));
    const last = firsts[firsts.length - 1]!;
    const { replay } = reopen(dir, wal);
    assert.equal(replay.prevIndex, last - 1);
    assert.equal(replay.prevTerm, 3);
    assert.deepEqual(replay.entries.map((e) => e.index), Array.from({ length: 150 - last + 1 }, (_, i) => last + i));
    // the hard state written in a released segment is not lost
    assert.deepEqual(replay.hardState, { term: 3, vote: 1, commit: 0 });
  });

  test('a crash between creating a segment and writing its first record', async () => {
    const dir = newDir();
    const { wal } = openWal(dir);
    for (let i = 1; i <= 40; i++) wal.appendEntry(entry(i, 2, 100));
    wal.appendHardState({ term: 2, vote: 1, commit: 40 });
    await syncWal(wal);
    closeWal(wal);
    const segs = segments(dir);
    const lastSeq = parseInt(segs[segs.length - 1]!.slice(0, 16), 16);
    // the next segment exists (renamed from a zero-filled spare) but holds no record yet
    const next = path.join(dir, segName(lastSeq + 1, 41));
    fs.writeFileSync(next, Buffer.alloc(4096));
    const { wal: w2, replay } = openWal(dir);
    assert.equal(replay.entries.length, 40);
    for (let i = 41; i <= 45; i++) w2.appendEntry(entry(i, 2, 100));
    await syncWal(w2);
    w2.releaseTo(40);
    assert.deepEqual(segments(dir), [segName(lastSeq + 1, 41)]);
    const r3 = reopen(dir, w2);
    assert.equal(r3.replay.prevIndex, 40);
    assert.equal(r3.replay.prevTerm, 2);
    assert.deepEqual(r3.replay.entries.map((e) => e.index), [41, 42, 43, 44, 45]);
    assert.deepEqual(r3.replay.hardState, { term: 2, vote: 1, commit: 40 });
  });

  test('leftover spare files are removed at open', () => {
    const dir = newDir();
    const { wal } = openWal(dir);
    closeWal(wal);
    fs.writeFileSync(path.join(dir, 'spare.1.2.tmp'), Buffer.alloc(10));
    const { replay } = openWal(dir);
    assert.deepEqual(replay.entries, []);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
  });
});
