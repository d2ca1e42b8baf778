// The write-ahead log of raft entries and hard state (etcd: server/storage/wal).
//
// Durability point of the write path: an entry is durable once the fdatasync that follows its
// write has returned. Records are appended to preallocated segment files, so each flush is a
// plain data flush (no file-size metadata), about half the cost of appending to a growing file
// (shared/reference/node-stack.md §1). Writes are synchronous pwrite()s into the page cache;
// fdatasync runs on the libuv pool, and every write issued while one sync runs is covered by
// the next: group commit that grows with load, no timers.
//
// Segment file: <dir>/<seq:16 hex>-<firstIndex:16 hex>.wal, segmentBytes long, zero-filled
// (Node has no fallocate, and blocks fallocate leaves unwritten would cost a journal commit on
// the first flush of each anyway).
// Record: u32 payloadLength | u32 crc32(payload) | payload     (little-endian)
// Payload: u8 kind, then
//   kind 1 entry:      u53 index, u53 term, u8 type, data...
//   kind 2 hardState:  u53 term, u53 vote, u53 commit
//   kind 3 segStart:   u53 prevIndex, u53 prevTerm   (first record of every segment)
// Every segment starts with segStart followed by the last hard state (as etcd's cut() does), so
// deleting old segments (releaseTo) never loses the term and vote.
// A zero length or a bad checksum ends the log (torn tail); replay zeroes what follows it, so
// that stale bytes of an unsynced write can never be read as records later.
import fs from 'node:fs';
import path from 'node:path';
import { assert } from '../util/assert';
import { crc32 } from '../util/crc32';
import type { Entry, HardState } from '../raft/types';

const kindEntry = 1;
const kindHardState = 2;
const kindSegStart = 3;
const recordHeaderBytes = 8;
/** segStart + hard state records at the start of a segment. */
const segmentHeadBytes = 2 * recordHeaderBytes + 17 + 25;
const zeroChunk = Buffer.alloc(1024 * 1024);

export interface WalOptions {
  dir: string;
  segmentBytes: number;
}

export interface WalReplay {
  hardState: HardState;
  /** The log starts after this point. */
  prevIndex: number;
  prevTerm: number;
  entries: Entry[];
}

interface Segment { seq: number; firstIndex: number; file: string; lastIndex: number }

function segmentName(seq: number, firstIndex: number): string {
  return seq.toString(16).padStart(16, '0') + '-' + firstIndex.toString(16).padStart(16, '0') + '.wal';
}

export class Wal {
  private readonly dir: string;
  private readonly segmentBytes: number;
  private segments: Segment[];
  private fd: number;
  private offset: number;
  private lastIndex: number;
  private lastTerm: number;
  /** A zero-filled file ready to become the next segment. */
  private spare: string | null;
  private spareInProgress: boolean;
  private syncing: boolean;
  /** Written since the running sync started: needs another sync. */
  private dirty: boolean;
  private waitingForSync: (() => void)[];
  private coveredBySync: (() => void)[];
  /** Payload of entry and hard state records. */
  private readonly scratch: Buffer;
  /** Payload of the records that open a segment: a roll happens inside writeRecord, while
   * `scratch` holds the payload of the record being written. */
  private readonly headScratch: Buffer;
  /** The last hard state written or replayed; repeated at the start of every new segment. */
  private hardState: HardState;
  /** Segment fds closed at a roll while a sync on them was running: closed once it returns. */
  private retiredFds: number[];
  private readonly onSyncedBound: (err: NodeJS.ErrnoException | null) => void;
  private syncStartedAt = 0;
  /** Told how long each group-commit fdatasync took, in seconds (metrics). */
  syncObserver: ((seconds: number) => void) | null = null;
  private failed: Error | null;

  private constructor(opts: WalOptions) {
    this.dir = opts.dir;
    this.segmentBytes = opts.segmentBytes;
    this.segments = [];
    this.fd = -1;
    this.offset = 0;
    this.lastIndex = 0;
    this.lastTerm = 0;
    this.spare = null;
    this.spareInProgress = false;
    this.syncing = false;
    this.dirty = false;
    this.waitingForSync = [];
    this.coveredBySync = [];
    this.scratch = Buffer.allocUnsafe(1 << 20);
    this.headScratch = Buffer.allocUnsafe(32);
    this.hardState = { term: 0, vote: 0, commit: 0 };
    this.retiredFds = [];
    this.onSyncedBound = this.onSynced.bind(this);
    this.failed = null;
  }

  /** Opens (creating if needed) the WAL in `dir` and replays it. */
  static open(opts: WalOptions): { wal: Wal; replay: WalReplay } {
    fs.mkdirSync(opts.dir, { recursive: true });
    const wal = new Wal(opts);
    const replay = wal.replay();
    return { wal, replay };
  }

  private replay(): WalReplay {
    for (const f of fs.readdirSync(this.dir)) if (f.endsWith('.tmp')) fs.rmSync(path.join(this.dir, f));
    const files = fs.readdirSync(this.dir).filter((f) => /^[0-9a-f]{16}-[0-9a-f]{16}\.wal$/.test(f)).sort();
    const out: WalReplay = { hardState: { term: 0, vote: 0, commit: 0 }, prevIndex: 0, prevTerm: 0, entries: [] };
    if (files.length === 0) {
      this.createSegment(1, 1, 0, 0);
      return out;
    }
    let first = true;
    for (let i = 0; i < files.length; i++) {
      const name = files[i]!;
      const file = path.join(this.dir, name);
      const seq = parseInt(name.slice(0, 16), 16);
      const firstIndex = parseInt(name.slice(17, 33), 16);
      const data = fs.readFileSync(file);
      let pos = 0;
      let segLast = firstIndex - 1;
      // The log starts where the first segment's name says, unless its segStart says otherwise.
      if (first) out.prevIndex = firstIndex - 1;
      while (pos + recordHeaderBytes <= data.length) {
        const len = data.readUInt32LE(pos);
        if (len === 0 || pos + recordHeaderBytes + len > data.length) break;
        const sum = data.readUInt32LE(pos + 4);
        const start = pos + recordHeaderBytes;
        if (crc32(data, start, start + len) !== sum) break;
        const kind = data[start]!;
        let at = start + 1;
        if (kind === kindEntry) {
          const index = data.readDoubleLE(at);
          const term = data.readDoubleLE(at + 8);
          const type = data[at + 16]!;
          at += 17;
          const e: Entry = { index, term, type, data: Buffer.from(data.subarray(at, start + len)) };
          const entries = out.entries;
          // A rewritten index replaces the old entry and everything after it (raft truncation).
          while (entries.length > 0 && entries[entries.length - 1]!.index >= index) entries.pop();
          assert(entries.length === 0 ? index === out.prevIndex + 1 : index === entries[entries.length - 1]!.index + 1, 'wal index gap');
          entries.push(e);
          segLast = index;
        } else if (kind === kindHardState) {
          out.hardState = { term: data.readDoubleLE(at), vote: data.readDoubleLE(at + 8), commit: data.readDoubleLE(at + 16) };
        } else if (kind === kindSegStart) {
          if (first && out.entries.length === 0) {
            out.prevIndex = data.readDoubleLE(at);
            out.prevTerm = data.readDoubleLE(at + 8);
          }
        } else {
          break;
        }
        pos = start + len;
      }
      first = false;
      this.segments.push({ seq, firstIndex, file, lastIndex: segLast });
      if (i === files.length - 1) {
        this.fd = fs.openSync(file, 'r+');
        this.offset = pos;
        // Zero the torn tail (if any) so stale bytes never parse as records later.
        const end = data.length;
        for (let p = pos; p < end; p += zeroChunk.length) {
          const n = Math.min(zeroChunk.length, end - p);
          if (!isZero(data, p, p + n)) fs.writeSync(this.fd, zeroChunk, 0, n, p);
        }
        if (pos === 0) {
          // A crash after the segment was created and before its first record was written:
          // write its head now, or the log would lose its start once older segments go.
          const last = out.entries[out.entries.length - 1];
          const prevTerm = last !== undefined && last.index === firstIndex - 1 ? last.term
            : out.prevIndex === firstIndex - 1 ? out.prevTerm : 0;
          this.hardState = out.hardState;
          this.writeSegmentHead(firstIndex - 1, prevTerm);
        }
        fs.fdatasyncSync(this.fd);
        this.dirty = false;
      } else if (pos + recordHeaderBytes <= data.length && data.readUInt32LE(pos) !== 0) {
        assert(false, 'wal: corrupt record in a sealed segment');
      }
    }
    const last = out.entries[out.entries.length - 1];
    this.lastIndex = last ? last.index : out.prevIndex;
    this.lastTerm = last ? last.term : out.prevTerm;
    this.hardState = out.hardState;
    return out;
  }

  private createSegment(seq: number, firstIndex: number, prevIndex: number, prevTerm: number): void {
    const file = path.join(this.dir, segmentName(seq, firstIndex));
    const tmp = this.spare ?? this.preallocateSync();
    this.spare = null;
    fs.renameSync(tmp, file);
    const dirFd = fs.openSync(this.dir, 'r');
    fs.fsyncSync(dirFd);
    fs.closeSync(dirFd);
    if (this.fd >= 0) {
      fs.fdatasyncSync(this.fd);
      // A running fdatasync still uses the old fd: close it when that sync returns.
      if (this.syncing) this.retiredFds.push(this.fd);
      else fs.closeSync(this.fd);
    }
    this.fd = fs.openSync(file, 'r+');
    this.offset = 0;
    this.segments.push({ seq, firstIndex, file, lastIndex: firstIndex - 1 });
    this.writeSegmentHead(prevIndex, prevTerm);
    fs.fdatasyncSync(this.fd);
    this.dirty = false; // both segments are synced
  }

  /** segStart, then the last hard state (if any): the records that open a segment. */
  private writeSegmentHead(prevIndex: number, prevTerm: number): void {
    const p = this.headScratch;
    p[0] = kindSegStart;
    p.writeDoubleLE(prevIndex, 1);
    p.writeDoubleLE(prevTerm, 9);
    this.writeRecord(p, 17);
    const hs = this.hardState;
    if (hs.term !== 0 || hs.vote !== 0 || hs.commit !== 0) {
      writeHardStatePayload(p, hs);
      this.writeRecord(p, 25);
    }
  }

  private preallocateSync(): string {
    const tmp = spareName(this.dir);
    const fd = fs.openSync(tmp, 'w');
    for (let p = 0; p < this.segmentBytes; p += zeroChunk.length) {
      fs.writeSync(fd, zeroChunk, 0, Math.min(zeroChunk.length, this.segmentBytes - p), p);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    return tmp;
  }

  /** Zero-fills the next segment in the background (libuv pool), off the write path. */
  private prepareSpare(): void {
    if (this.spare !== null || this.spareInProgress) return;
    this.spareInProgress = true;
    const tmp = spareName(this.dir);
    const size = this.segmentBytes;
    fs.open(tmp, 'w', (err, fd) => {
      if (err) return this.spareFailed(err);
      const step = (p: number): void => {
        if (p >= size) {
          fs.fsync(fd, (e2) => {
            fs.close(fd, () => undefined);
            if (e2) return this.spareFailed(e2);
            this.spare = tmp;
            this.spareInProgress = false;
          });
          return;
        }
        fs.write(fd, zeroChunk, 0, Math.min(zeroChunk.length, size - p), p, (e1) => {
          if (e1) return this.spareFailed(e1);
          step(p + zeroChunk.length);
        });
      };
      step(0);
    });
  }

  private spareFailed(err: Error): void {
    // Not fatal: the next segment roll preallocates synchronously and reports a real failure.
    this.spareInProgress = false;
    void err;
  }

  private writeRecord(payload: Buffer, len: number): void {
    if (this.offset + recordHeaderBytes + len > this.segmentBytes) {
      assert(segmentHeadBytes + recordHeaderBytes + len <= this.segmentBytes, 'wal record larger than a segment');
      const seg = this.segments[this.segments.length - 1]!;
      this.createSegment(seg.seq + 1, this.lastIndex + 1, this.lastIndex, this.lastTerm);
    }
    const header = Buffer.allocUnsafe(recordHeaderBytes);
    header.writeUInt32LE(len, 0);
    header.writeUInt32LE(crc32(payload, 0, len), 4);
    // Payload first, then the header: a torn write leaves a zero length, not a half record.
    fs.writeSync(this.fd, payload, 0, len, this.offset + recordHeaderBytes);
    fs.writeSync(this.fd, header, 0, recordHeaderBytes, this.offset);
    this.offset += recordHeaderBytes + len;
    this.dirty = true;
    // The next segment is zero-filled in the background once this one is half full: early
    // enough to be ready at the roll, late enough that short-lived servers never pay for it.
    if (this.offset > this.segmentBytes / 2 && this.spare === null) this.prepareSpare();
  }

  appendEntry(e: Entry): void {
    assert(e.index <= this.lastIndex + 1, 'wal append gap');
    const need = 18 + e.data.length;
    const p = need <= this.scratch.length ? this.scratch : Buffer.allocUnsafe(need);
    p[0] = kindEntry;
    p.writeDoubleLE(e.index, 1);
    p.writeDoubleLE(e.term, 9);
    p[17] = e.type;
    p.set(e.data, 18);
    this.writeRecord(p, need);
    this.lastIndex = e.index;
    this.lastTerm = e.term;
    this.segments[this.segments.length - 1]!.lastIndex = e.index;
  }

  appendHardState(hs: HardState): void {
    writeHardStatePayload(this.scratch, hs);
    this.writeRecord(this.scratch, 25);
    this.hardState = { term: hs.term, vote: hs.vote, commit: hs.commit };
  }

  /** Calls `done` once everything written before this call is on stable storage. */
  sync(done: () => void): void {
    if (this.failed !== null) throw this.failed;
    if (!this.dirty) {
      if (!this.syncing) done();
      else this.coveredBySync.push(done); // the running sync covers every write so far
      return;
    }
    this.waitingForSync.push(done);
    if (!this.syncing) this.startSync();
  }

  private startSync(): void {
    this.syncing = true;
    this.dirty = false;
    const batch = this.waitingForSync;
    this.waitingForSync = this.coveredBySync;
    this.coveredBySync = batch;
    this.syncStartedAt = performance.now();
    fs.fdatasync(this.fd, this.onSyncedBound);
  }

  private onSynced(err: NodeJS.ErrnoException | null): void {
    this.syncing = false;
    for (const fd of this.retiredFds) fs.closeSync(fd);
    this.retiredFds.length = 0;
    if (err) {
      // A failed fsync leaves the page cache state unknown (fsyncgate): stop, never retry.
      this.failed = err;
      throw err;
    }
    if (this.syncObserver !== null) this.syncObserver((performance.now() - this.syncStartedAt) / 1000);
    let done = this.coveredBySync;
    this.coveredBySync = [];
    if (this.fd < 0) {
      // Closed meanwhile: close() synced every write, the waiters too.
      done = done.concat(this.waitingForSync);
      this.waitingForSync = [];
    } else if (this.waitingForSync.length > 0) {
      // The next sync starts before the callbacks run: a callback may write and sync again.
      this.startSync();
    }
    for (let i = 0; i < done.length; i++) done[i]!();
  }

  /** Deletes sealed segments whose entries are all <= index (covered by the durable state). */
  releaseTo(index: number): void {
    while (this.segments.length > 1) {
      const seg = this.segments[0]!;
      const next = this.segments[1]!;
      if (next.firstIndex - 1 > index) break;
      fs.rmSync(seg.file, { force: true });
      this.segments.shift();
    }
  }

  close(): void {
    if (this.fd >= 0) {
      fs.fdatasyncSync(this.fd);
      if (this.syncing) this.retiredFds.push(this.fd); // closed when the running sync returns
      else fs.closeSync(this.fd);
      this.fd = -1;
    }
  }
}

let spareSeq = 0;

/** A name no other spare of this process uses: an async spare and a sync one in the same
 * millisecond must not share a file (the async writes would zero the new segment). */
function spareName(dir: string): string {
  return path.join(dir, 'spare.' + process.pid + '.' + ++spareSeq + '.tmp');
}

function writeHardStatePayload(p: Buffer, hs: HardState): void {
  p[0] = kindHardState;
  p.writeDoubleLE(hs.term, 1);
  p.writeDoubleLE(hs.vote, 9);
  p.writeDoubleLE(hs.commit, 17);
}

function isZero(b: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (b[i] !== 0) return false;
  return true;
}
