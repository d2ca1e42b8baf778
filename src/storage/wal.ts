// The write-ahead log of raft entries and hard state (etcd: server/storage/wal).
//
// Durability point of the write path: an entry is durable once the fdatasync that follows its
// write has returned. Records are appended to preallocated segment files, so each flush is a
// plain data flush (no file-size metadata), about half the cost of appending to a growing file
// (shared/reference/node-stack.md §1). Writes are synchronous pwrite()s into the page cache;
// fdatasync runs on the libuv pool, and every write issued while one sync runs is covered by
// the next: group commit that grows with load, no timers. Every file operation goes through
// `FileIo` (storage/file_io.ts), so tests run this code on a simulated disk with faults.
//
// Segment file: <dir>/<seq:16 hex>-<firstIndex:16 hex>.wal, segmentBytes long, zero-filled
// (Node has no fallocate, and blocks fallocate leaves unwritten would cost a journal commit on
// the first flush of each anyway).
// Record: u32 bodyLength | u32 crc32(body) | u32 crc32(the 8 bytes before) | body  (little-endian)
//   A header never crosses a 512-byte sector boundary: where fewer than 12 bytes are left in a
//   sector, the record starts at the next one (the gap stays zero). A sector is written whole or
//   not at all, so a header reads as written or as zeros, never half: one that fails its own
//   checksum was damaged after it was written (a flipped length would otherwise pass for a
//   torn write and silently cut the log).
// Body:   u32 syncedThrough, u8 kind, then
//   kind 1 entry:      u53 index, u53 term, u8 type, data...
//   kind 2 hardState:  u53 term, u53 vote, u53 commit
//   kind 3 segStart:   u53 prevIndex, u53 prevTerm   (first record of every segment)
// syncedThrough: the byte offset in this segment up to which an fdatasync had returned when the
// record was written. It is what tells a torn tail from corruption (see `replay`).
// Every segment starts with segStart followed by the last hard state (as etcd's cut() does), so
// deleting old segments (releaseTo) never loses the term and vote.
//
// Restart segments: <dir>/<seq>-<firstIndex>.restart.wal. The log was restarted after
// firstIndex - 1 (a raft snapshot installed there, or a repair): the segment's segStart names
// that point, and every segment with a lower seq is obsolete. It is written and synced whole
// under a temporary name and renamed into place (then the directory synced): that rename is the
// restart's commit point. Replay ignores and removes the segments before the newest restart
// segment, so a crash between the rename and the removal of the old segments leaves a log that
// opens as restarted, and a crash before the rename one that opens as it was.
//
// Recovery rules (replay):
//  - The log ends at the first header that is all zeros (never written) or at the first *bad*
//    record: a header that fails its checksum, a length that does not fit, a body whose
//    checksum does not match, an unknown kind.
//  - In the last segment a bad record is a *torn tail*, the remains of a write no fdatasync
//    covered, and is repaired (zeroed with everything after it) unless something proves it was
//    covered or damaged afterwards: a valid record after it whose syncedThrough lies beyond it;
//    a damaged header; a body whose checksum fails although no 512-byte sector of it is zero (a
//    torn write leaves whole sectors unwritten; a flipped bit does not: etcd's isTornEntry).
//    Records after a torn one were not covered by a sync either, so none was acknowledged.
//  - Anything else is corruption: in a sealed segment (it was synced whole before the next one
//    began) any bad record followed by a valid one, or a gap between segments. The WAL then
//    refuses to open with WalCorruptError, naming the file and offset; `Wal.repair` (the
//    `concordutl wal repair` command) truncates the log there for an operator who accepts the
//    loss.
import path from 'node:path';
import { assert } from '../util/assert';
import { crc32 } from '../util/crc32';
import type { Entry, HardState } from '../raft/types';
import { FileIo, nodeFileIo } from './file_io';

const kindEntry = 1;
const kindHardState = 2;
const kindSegStart = 3;
const recordHeaderBytes = 12;
/** syncedThrough + kind, before each record's own fields. */
const bodyHeadBytes = 5;
const segStartBodyBytes = bodyHeadBytes + 16;
const hardStateBodyBytes = bodyHeadBytes + 24;
const entryBodyHeadBytes = bodyHeadBytes + 17;
/** segStart + hard state records at the start of a segment. */
const segmentHeadBytes = 2 * recordHeaderBytes + segStartBodyBytes + hardStateBodyBytes;
/** etcd's torn-write granularity: a sector is written whole or not at all. */
const sectorBytes = 512;

/** Where a record written at `offset` starts: its header must not cross a sector boundary. */
function recordStart(offset: number): number {
  const inSector = offset % sectorBytes;
  return inSector > sectorBytes - recordHeaderBytes ? offset - inSector + sectorBytes : offset;
}
/** After a failed spare preallocation, the next try waits until this share of a segment more
 * has been written (no clock here; a failing disk must not be retried on every write). */
const spareRetryShare = 16;

export interface WalOptions {
  dir: string;
  segmentBytes: number;
  /** File operations; node:fs unless a test simulates the disk. */
  io?: FileIo;
  /**
   * etcd's --unsafe-no-fsync: acknowledge writes without fdatasync. Loses acknowledged writes at
   * a power cut; the power-cut tests switch it on to show they notice.
   */
  unsafeNoFsync?: boolean;
  /**
   * Told when the next segment could not be preallocated (ENOSPC, EIO): the current segment
   * still has room, so the server can stop taking writes before the log has nowhere to go.
   * Told `null` once a later attempt succeeded.
   */
  onSpareFailure?: (err: NodeJS.ErrnoException | null) => void;
  /**
   * Told when a background fdatasync failed (its callback runs outside any call into the WAL);
   * without it the error is thrown there. Every later write and sync refuses.
   */
  onFailure?: (err: WalWriteError) => void;
}

export interface WalReplay {
  hardState: HardState;
  /** The log starts after this point. */
  prevIndex: number;
  prevTerm: number;
  entries: Entry[];
}

/** The WAL holds a record that was synced and is now damaged: it refuses to open. */
export class WalCorruptError extends Error {
  readonly code = 'WAL_CORRUPT';
  constructor(readonly file: string, readonly offset: number, readonly reason: string) {
    super(`wal: corrupt record in ${file} at offset ${offset}: ${reason}. Refusing to start: ` +
      'acknowledged writes may be damaged. To discard this record and everything after it, ' +
      'run `concordutl wal repair --data-dir <data-dir>`');
    this.name = 'WalCorruptError';
  }
}

/** A write or sync of the WAL failed: the process must stop (after fsyncgate, no retries). */
export class WalWriteError extends Error {
  readonly code = 'WAL_IO';
  constructor(readonly op: string, file: string, readonly cause: NodeJS.ErrnoException) {
    super(`wal: ${op} of ${file} failed: ${cause.code ?? ''} ${cause.message}`);
    this.name = 'WalWriteError';
  }
}

interface Segment { seq: number; firstIndex: number; file: string; lastIndex: number }

/** What Wal.repair cut. */
export interface WalRepair {
  file: string;
  offset: number;
  reason: string;
  /** Later segments removed whole. */
  removed: string[];
  /** When the cut left the log behind the applied state: the index the log now starts after. */
  restartedAfter: number;
}

function segmentName(seq: number, firstIndex: number): string {
  return seq.toString(16).padStart(16, '0') + '-' + firstIndex.toString(16).padStart(16, '0') + '.wal';
}

const restartSuffix = '.restart.wal';

function restartSegmentName(seq: number, firstIndex: number): string {
  return segmentName(seq, firstIndex).slice(0, -'.wal'.length) + restartSuffix;
}

const segmentNamePattern = /^[0-9a-f]{16}-[0-9a-f]{16}(\.restart)?\.wal$/;

/** Steps of a restart, for crash tests (restartAt's observer). */
export const enum WalRestartStep {
  /** The new segment is written and synced under its temporary name; nothing changed yet. */
  SegmentWritten = 1,
  /** It is renamed into place and the directory synced: the commit point. */
  Renamed = 2,
}

/** How one segment file reads: records up to `end`, and what stopped the reading there. */
interface SegmentScan {
  /** Offset just after the last good record. */
  end: number;
  /** Why reading stopped at `end`: null when the file is clean after it (zeros to the end). */
  stop: string | null;
  /** A record header (not zeros) stands at `end`, but the record is bad. */
  badRecord: boolean;
  /** The bad record at `end` is whole but fails its checksum with no zeroed sector. */
  flipped: boolean;
  /** Offset of a valid record after `end` whose syncedThrough lies beyond `end`, or -1. */
  provenSyncedAt: number;
  /** Offset of any valid record after `end`, or -1. */
  validAfterAt: number;
}

export class Wal {
  private readonly dir: string;
  private readonly segmentBytes: number;
  private readonly io: FileIo;
  private readonly unsafeNoFsync: boolean;
  private readonly onSpareFailure: ((err: NodeJS.ErrnoException | null) => void) | null;
  private readonly onFailure: ((err: WalWriteError) => void) | null;
  private segments: Segment[];
  private fd: number;
  private offset: number;
  /** Offset of the current segment covered by the last fdatasync that returned. */
  private syncedOffset: number;
  /** Offset the running fdatasync will cover once it returns, and the segment it syncs. */
  private syncingOffset: number;
  private syncingFd: number;
  private lastIndex: number;
  private lastTerm: number;
  /** A zero-filled file ready to become the next segment. */
  private spare: string | null;
  private spareInProgress: boolean;
  /** After a failed preallocation: the segment offset past which it is tried again. */
  private spareRetryOffset: number;
  private spareFailed: boolean;
  private syncing: boolean;
  /** Written since the running sync started: needs another sync. */
  private dirty: boolean;
  private waitingForSync: (() => void)[];
  private coveredBySync: (() => void)[];
  /** Body of entry and hard state records. */
  private readonly scratch: Buffer;
  /** Body of the records that open a segment: a roll happens inside writeRecord, while
   * `scratch` holds the body of the record being written. */
  private readonly headScratch: Buffer;
  private readonly header: Buffer;
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
    this.io = opts.io ?? nodeFileIo;
    this.unsafeNoFsync = opts.unsafeNoFsync === true;
    this.onSpareFailure = opts.onSpareFailure ?? null;
    this.onFailure = opts.onFailure ?? null;
    this.segments = [];
    this.fd = -1;
    this.offset = 0;
    this.syncedOffset = 0;
    this.syncingOffset = 0;
    this.syncingFd = -1;
    this.lastIndex = 0;
    this.lastTerm = 0;
    this.spare = null;
    this.spareInProgress = false;
    this.spareRetryOffset = 0;
    this.spareFailed = false;
    this.syncing = false;
    this.dirty = false;
    this.waitingForSync = [];
    this.coveredBySync = [];
    this.scratch = Buffer.allocUnsafe(1 << 20);
    this.headScratch = Buffer.allocUnsafe(64);
    this.header = Buffer.allocUnsafe(recordHeaderBytes);
    this.hardState = { term: 0, vote: 0, commit: 0 };
    this.retiredFds = [];
    this.onSyncedBound = this.onSynced.bind(this);
    this.failed = null;
  }

  /**
   * Opens (creating if needed) the WAL in `dir` and replays it. Throws WalCorruptError when a
   * record that had been synced is damaged.
   */
  static open(opts: WalOptions): { wal: Wal; replay: WalReplay } {
    const io = opts.io ?? nodeFileIo;
    io.mkdirp(opts.dir);
    const wal = new Wal(opts);
    const replay = wal.replay();
    return { wal, replay };
  }

  /**
   * Truncates the log at its first damaged record: zeroes that segment from there and removes
   * every later segment. For an operator who accepts losing what follows (the records after a
   * corrupt one cannot be trusted to follow it). Returns what was cut, or null when the log
   * reads clean.
   */
  static repair(opts: WalOptions, appliedIndex: number): WalRepair | null {
    const io = opts.io ?? nodeFileIo;
    let cut: WalRepair | null = null;
    // Each round cuts at the first damaged record that opening finds; opening after a cut
    // reads the same files minus what was cut, so the rounds end.
    for (;;) {
      try {
        const { wal, replay } = Wal.open(opts);
        const last = replay.entries.length > 0 ? replay.entries[replay.entries.length - 1]!.index : replay.prevIndex;
        if (last < appliedIndex) {
          // The state machine holds entries the log lost (cut here, or lost before): start the
          // log after them, so the WAL and the state agree again.
          wal.restartAfter(appliedIndex, replay.hardState);
          if (cut === null) cut = { file: '', offset: -1, reason: `the log ends at ${last}, before the applied index`, removed: [], restartedAfter: 0 };
          cut.restartedAfter = appliedIndex;
        }
        wal.close();
        return cut;
      } catch (err) {
        if (!(err instanceof WalCorruptError)) throw err;
        const files = segmentFiles(io, opts.dir);
        const at = files.indexOf(path.basename(err.file));
        assert(at >= 0, 'corrupt segment not listed');
        const removed = files.slice(at + 1);
        for (const f of removed) io.remove(path.join(opts.dir, f));
        if (err.offset === 0) {
          io.remove(err.file);
          removed.unshift(files[at]!);
        } else {
          const size = io.readFile(err.file).length;
          const fd = io.open(err.file);
          const zeros = Buffer.alloc(Math.min(1 << 20, Math.max(1, size - err.offset)));
          for (let p = err.offset; p < size; p += zeros.length) io.write(fd, zeros, 0, Math.min(zeros.length, size - p), p);
          io.datasyncNow(fd);
          io.close(fd);
        }
        io.syncDir(opts.dir);
        if (cut === null) cut = { file: err.file, offset: err.offset, reason: err.reason, removed, restartedAfter: 0 };
        else cut.removed.push(...removed);
      }
    }
  }

  private replay(): WalReplay {
    const io = this.io;
    for (const f of io.list(this.dir)) if (f.endsWith('.tmp')) io.remove(path.join(this.dir, f));
    let files = segmentFiles(io, this.dir);
    let restartAt = -1;
    for (let i = files.length - 1; i >= 0 && restartAt < 0; i--) if (files[i]!.endsWith(restartSuffix)) restartAt = i;
    if (restartAt > 0) {
      // The leftovers of a restart that crashed before it removed them (see the header).
      for (const f of files.slice(0, restartAt)) io.remove(path.join(this.dir, f));
      io.syncDir(this.dir);
      files = files.slice(restartAt);
    }
    const out: WalReplay = { hardState: { term: 0, vote: 0, commit: 0 }, prevIndex: 0, prevTerm: 0, entries: [] };
    if (files.length === 0) {
      this.createSegment(1, 1, 0, 0);
      return out;
    }
    for (let i = 0; i < files.length; i++) {
      const name = files[i]!;
      const file = path.join(this.dir, name);
      const seq = parseInt(name.slice(0, 16), 16);
      const firstIndex = parseInt(name.slice(17, 33), 16);
      // The log starts where the first segment's name says, unless its segStart says otherwise.
      if (i === 0) out.prevIndex = firstIndex - 1;
      else {
        const logLast = out.entries.length > 0 ? out.entries[out.entries.length - 1]!.index : out.prevIndex;
        if (firstIndex - 1 !== logLast) {
          throw new WalCorruptError(file, 0, `the segment starts after index ${firstIndex - 1} but the log before it ends at ${logLast}`);
        }
      }
      const data = io.readFile(file);
      const scan = this.scanSegment(data, file, out);
      const isLast = i === files.length - 1;
      if (scan.provenSyncedAt >= 0) {
        throw new WalCorruptError(file, scan.end, `${scan.stop}; the record at offset ${scan.provenSyncedAt} shows it had been synced`);
      }
      if (scan.flipped) throw new WalCorruptError(file, scan.end, `${scan.stop}, and no sector of it is zero (not a torn write)`);
      if (!isLast && (scan.badRecord || scan.validAfterAt >= 0)) {
        throw new WalCorruptError(file, scan.end, `${scan.stop} in a sealed segment`);
      }
      this.segments.push({ seq, firstIndex, file, lastIndex: scan.lastIndex });
      if (isLast) this.openLastSegment(file, data, scan.end, firstIndex, out);
    }
    const last = out.entries[out.entries.length - 1];
    this.lastIndex = last ? last.index : out.prevIndex;
    this.lastTerm = last ? last.term : out.prevTerm;
    this.hardState = out.hardState;
    return out;
  }

  /** Reopens the last segment for appending at `end`, zeroing a torn tail after it. */
  private openLastSegment(file: string, data: Buffer, end: number, firstIndex: number, out: WalReplay): void {
    const io = this.io;
    this.fd = io.open(file);
    this.offset = end;
    this.syncedOffset = end;
    // Zero the torn tail (if any) so stale bytes never parse as records later.
    const zeros = Buffer.alloc(Math.min(1 << 20, Math.max(1, data.length - end)));
    for (let p = end; p < data.length; p += zeros.length) {
      const n = Math.min(zeros.length, data.length - p);
      if (isZero(data, p, p + n)) continue;
      try {
        io.write(this.fd, zeros, 0, n, p);
      } catch (err) {
        throw this.fail('write', file, err as NodeJS.ErrnoException);
      }
    }
    if (end === 0) {
      // A crash after the segment was created and before its first record was written:
      // write its head now, or the log would lose its start once older segments go.
      const last = out.entries[out.entries.length - 1];
      const prevTerm = last !== undefined && last.index === firstIndex - 1 ? last.term
        : out.prevIndex === firstIndex - 1 ? out.prevTerm : 0;
      this.hardState = out.hardState;
      this.writeSegmentHead(firstIndex - 1, prevTerm);
    }
    this.datasyncOrFail(this.fd);
    this.syncedOffset = this.offset;
    this.dirty = false;
  }

  /**
   * Reads the records of one segment into `out` (when given) and looks at what follows the
   * last good one. Entries rewrite the log from their index on (raft truncation).
   */
  private scanSegment(data: Buffer, file: string, out: WalReplay | null): SegmentScan & { lastIndex: number } {
    let pos = 0;
    let stop: string | null = null;
    let badRecord = false;
    let flipped = false;
    let segLast = parseInt(path.basename(file).slice(17, 33), 16) - 1;
    for (;;) {
      const at = recordStart(pos);
      if (at + recordHeaderBytes > data.length) break;
      if (isZero(data, at, at + recordHeaderBytes)) break; // never written
      badRecord = true;
      if (crc32(data, at, at + 8) !== data.readUInt32LE(at + 8)) {
        stop = 'a damaged record header';
        flipped = true;
        pos = at;
        break;
      }
      pos = at;
      const len = data.readUInt32LE(pos);
      const start = pos + recordHeaderBytes;
      if (len < bodyHeadBytes + 16 || start + len > data.length) {
        stop = `a record length of ${len} that does not fit`;
        flipped = true;
        break;
      }
      if (crc32(data, start, start + len) !== data.readUInt32LE(pos + 4)) {
        stop = 'a checksum mismatch';
        flipped = !hasZeroSector(data, pos, start + len);
        break;
      }
      const kind = data[start + 4]!;
      const field = start + bodyHeadBytes;
      if (kind === kindEntry) {
        const index = data.readDoubleLE(field);
        const e: Entry = { index, term: data.readDoubleLE(field + 8), type: data[field + 16]!, data: Buffer.from(data.subarray(field + 17, start + len)) };
        if (out !== null) {
          const entries = out.entries;
          while (entries.length > 0 && entries[entries.length - 1]!.index >= index) entries.pop();
          const expected = entries.length === 0 ? out.prevIndex + 1 : entries[entries.length - 1]!.index + 1;
          if (index !== expected) throw new WalCorruptError(file, pos, `entry ${index} where ${expected} was due`);
          entries.push(e);
        }
        segLast = index;
      } else if (kind === kindHardState) {
        if (out !== null) out.hardState = { term: data.readDoubleLE(field), vote: data.readDoubleLE(field + 8), commit: data.readDoubleLE(field + 16) };
      } else if (kind === kindSegStart) {
        if (out !== null && pos === 0 && out.entries.length === 0) {
          out.prevIndex = data.readDoubleLE(field);
          out.prevTerm = data.readDoubleLE(field + 8);
        }
      } else {
        stop = `an unknown record kind ${kind}`;
        flipped = true;
        break;
      }
      badRecord = false;
      pos = start + len;
    }
    let validAfterAt = -1;
    let provenSyncedAt = -1;
    if (pos < data.length && !isZero(data, pos, data.length)) {
      if (stop === null) stop = 'bytes after the last record';
      for (let p = findValidRecord(data, pos + 1); p >= 0; p = findValidRecord(data, p + 1)) {
        if (validAfterAt < 0) validAfterAt = p;
        if (data.readUInt32LE(p + recordHeaderBytes) > pos) {
          provenSyncedAt = p;
          break;
        }
      }
    }
    return { end: pos, stop, badRecord, flipped, provenSyncedAt, validAfterAt, lastIndex: segLast };
  }

  private createSegment(seq: number, firstIndex: number, prevIndex: number, prevTerm: number): void {
    const io = this.io;
    const file = path.join(this.dir, segmentName(seq, firstIndex));
    let tmp = this.spare;
    this.spare = null;
    if (tmp === null) {
      tmp = spareName(this.dir);
      try {
        io.preallocateNow(tmp, this.segmentBytes);
      } catch (err) {
        io.remove(tmp);
        throw this.fail('preallocation', tmp, err as NodeJS.ErrnoException);
      }
    }
    if (this.fd >= 0) {
      this.datasyncOrFail(this.fd);
      // A running fdatasync still uses the old fd: close it when that sync returns.
      if (this.syncing) this.retiredFds.push(this.fd);
      else io.close(this.fd);
    }
    io.rename(tmp, file);
    io.syncDir(this.dir);
    this.fd = io.open(file);
    this.offset = 0;
    this.syncedOffset = 0;
    this.spareRetryOffset = 0;
    this.segments.push({ seq, firstIndex, file, lastIndex: firstIndex - 1 });
    this.writeSegmentHead(prevIndex, prevTerm);
    this.datasyncOrFail(this.fd);
    this.syncedOffset = this.offset;
    this.dirty = false; // both segments are synced
  }

  private datasyncOrFail(fd: number): void {
    if (this.unsafeNoFsync) return;
    try {
      this.io.datasyncNow(fd);
    } catch (err) {
      throw this.fail('fdatasync', this.currentFile(), err as NodeJS.ErrnoException);
    }
  }

  /** segStart, then the last hard state (if any): the records that open a segment. */
  private writeSegmentHead(prevIndex: number, prevTerm: number): void {
    const p = this.headScratch;
    p[4] = kindSegStart;
    p.writeDoubleLE(prevIndex, bodyHeadBytes);
    p.writeDoubleLE(prevTerm, bodyHeadBytes + 8);
    this.writeRecord(p, segStartBodyBytes);
    const hs = this.hardState;
    if (hs.term !== 0 || hs.vote !== 0 || hs.commit !== 0) {
      writeHardStateBody(p, hs);
      this.writeRecord(p, hardStateBodyBytes);
    }
  }

  /** Zero-fills the next segment in the background (libuv pool), off the write path. */
  private prepareSpare(): void {
    if (this.spare !== null || this.spareInProgress || this.offset < this.spareRetryOffset) return;
    this.spareInProgress = true;
    const tmp = spareName(this.dir);
    this.io.preallocate(tmp, this.segmentBytes, (err) => {
      this.spareInProgress = false;
      if (err) {
        // Not fatal yet: the current segment still has room. Tell the server (it stops taking
        // writes, NOSPACE) and try again after another share of the segment.
        this.io.remove(tmp);
        this.spareRetryOffset = this.offset + Math.floor(this.segmentBytes / spareRetryShare);
        this.spareFailed = true;
        if (this.onSpareFailure !== null) this.onSpareFailure(err);
        return;
      }
      this.spare = tmp;
      if (this.spareFailed) {
        this.spareFailed = false;
        if (this.onSpareFailure !== null) this.onSpareFailure(null);
      }
    });
  }

  /**
   * Tries again to preallocate the next segment after a failure (the server calls this on a
   * timer while NOSPACE is raised: with writes refused the log may not grow to trigger it).
   */
  retrySpare(): void {
    if (!this.spareFailed || this.failed !== null) return;
    this.spareRetryOffset = 0;
    this.prepareSpare();
  }

  private writeRecord(body: Buffer, len: number): void {
    assert(this.failed === null, 'wal write after a failure');
    if (recordStart(this.offset) + recordHeaderBytes + len > this.segmentBytes) {
      assert(segmentHeadBytes + recordHeaderBytes + len <= this.segmentBytes, 'wal record larger than a segment');
      const seg = this.segments[this.segments.length - 1]!;
      this.createSegment(seg.seq + 1, this.lastIndex + 1, this.lastIndex, this.lastTerm);
    }
    this.offset = recordStart(this.offset);
    body.writeUInt32LE(this.syncedOffset, 0);
    const header = this.header;
    header.writeUInt32LE(len, 0);
    header.writeUInt32LE(crc32(body, 0, len), 4);
    header.writeUInt32LE(crc32(header, 0, 8), 8);
    // Body first, then the header: a torn write leaves a zero length, not a half record.
    try {
      this.io.write(this.fd, body, 0, len, this.offset + recordHeaderBytes);
      this.io.write(this.fd, header, 0, recordHeaderBytes, this.offset);
    } catch (err) {
      throw this.fail('write', this.currentFile(), err as NodeJS.ErrnoException);
    }
    this.offset += recordHeaderBytes + len;
    this.dirty = true;
    // The next segment is zero-filled in the background once this one is half full: early
    // enough to be ready at the roll, late enough that short-lived servers never pay for it.
    if (this.offset > this.segmentBytes / 2 && this.spare === null) this.prepareSpare();
  }

  appendEntry(e: Entry): void {
    assert(e.index <= this.lastIndex + 1, 'wal append gap');
    const need = entryBodyHeadBytes + e.data.length;
    const p = need <= this.scratch.length ? this.scratch : Buffer.allocUnsafe(need);
    p[4] = kindEntry;
    p.writeDoubleLE(e.index, bodyHeadBytes);
    p.writeDoubleLE(e.term, bodyHeadBytes + 8);
    p[bodyHeadBytes + 16] = e.type;
    p.set(e.data, entryBodyHeadBytes);
    this.writeRecord(p, need);
    this.lastIndex = e.index;
    this.lastTerm = e.term;
    this.segments[this.segments.length - 1]!.lastIndex = e.index;
  }

  appendHardState(hs: HardState): void {
    writeHardStateBody(this.scratch, hs);
    this.writeRecord(this.scratch, hardStateBodyBytes);
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
    this.syncingOffset = this.offset;
    this.syncingFd = this.fd;
    this.syncStartedAt = performance.now();
    if (this.unsafeNoFsync) queueMicrotask(() => this.onSynced(null));
    else this.io.datasync(this.fd, this.onSyncedBound);
  }

  private onSynced(err: NodeJS.ErrnoException | null): void {
    this.syncing = false;
    for (const fd of this.retiredFds) this.io.close(fd);
    this.retiredFds.length = 0;
    if (err) {
      // A failed fsync leaves the page cache state unknown (fsyncgate): stop, never retry.
      const failure = this.fail('fdatasync', this.currentFile(), err);
      if (this.onFailure === null) throw failure;
      this.onFailure(failure);
      return;
    }
    // A roll while the sync ran synced the old segment itself; this sync says nothing of the
    // new one.
    if (this.syncingFd === this.fd && this.syncingOffset > this.syncedOffset) this.syncedOffset = this.syncingOffset;
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

  /** Records the first failure; every later write or sync refuses. */
  private fail(op: string, file: string, err: NodeJS.ErrnoException): WalWriteError {
    const e = new WalWriteError(op, file, err);
    if (this.failed === null) this.failed = e;
    return e;
  }

  private currentFile(): string {
    const seg = this.segments[this.segments.length - 1];
    return seg !== undefined ? seg.file : this.dir;
  }

  /**
   * Replaces the whole log with an empty one that starts after `index` (repair: the state
   * machine already holds everything up to it). The term of that point is not known any more;
   * the hard state's term stands in for it (a lone member compares no logs; a cluster member
   * that needed a repair is removed and added again).
   */
  restartAfter(index: number, hs: HardState): void {
    assert(index > this.lastIndex, 'restart point inside the log');
    this.hardState = { term: hs.term, vote: hs.vote, commit: hs.commit };
    this.restartAt(index, hs.term, null);
  }

  /**
   * Replaces the whole log with an empty one that starts after (index, term), keeping the hard
   * state (its commit raised to index): a raft snapshot at (index, term) was installed, and
   * every stored entry goes, those after index too (raft restore). Crash-safe: the restart
   * segment appears whole or not at all (see the header); `observer` is told each step (tests
   * crash there by throwing). Precondition: no sync is running or waited for (the caller drains
   * them first: a sync callback of the old log must not vouch for the new one).
   */
  restartAt(index: number, term: number, observer: ((step: WalRestartStep) => void) | null): void {
    assert(this.failed === null, 'wal restart after a failure');
    assert(!this.syncing && this.waitingForSync.length === 0, 'wal restart with syncs in flight');
    assert(Number.isSafeInteger(index) && index >= 0, 'restart index');
    assert(Number.isSafeInteger(term) && term >= 0, 'restart term');
    const io = this.io;
    const old = this.segments.slice();
    const seq = old[old.length - 1]!.seq + 1;
    const hs = this.hardState;
    this.hardState = { term: hs.term, vote: hs.vote, commit: Math.max(hs.commit, index) };
    let tmp = this.spare;
    this.spare = null;
    if (tmp === null) {
      tmp = spareName(this.dir);
      try {
        io.preallocateNow(tmp, this.segmentBytes);
      } catch (err) {
        io.remove(tmp);
        throw this.fail('preallocation', tmp, err as NodeJS.ErrnoException);
      }
    }
    if (this.fd >= 0) io.close(this.fd);
    const file = path.join(this.dir, restartSegmentName(seq, index + 1));
    // Written under the temporary name: a crash before the rename leaves a .tmp that replay
    // removes, and the old log.
    this.fd = io.open(tmp);
    this.offset = 0;
    this.syncedOffset = 0;
    this.spareRetryOffset = 0;
    this.segments = [{ seq, firstIndex: index + 1, file, lastIndex: index }];
    this.lastIndex = index;
    this.lastTerm = term;
    this.writeSegmentHead(index, term);
    this.datasyncOrFail(this.fd);
    this.syncedOffset = this.offset;
    this.dirty = false;
    if (observer !== null) observer(WalRestartStep.SegmentWritten);
    // Renamed closed, as createSegment does (FileIo does not promise that a descriptor follows
    // a rename), then opened again at the offset reached.
    io.close(this.fd);
    this.fd = -1;
    io.rename(tmp, file);
    io.syncDir(this.dir);
    this.fd = io.open(file);
    if (observer !== null) observer(WalRestartStep.Renamed);
    for (const seg of old) io.remove(seg.file);
    io.syncDir(this.dir);
  }

  /** Deletes sealed segments whose entries are all <= index (covered by the durable state). */
  releaseTo(index: number): void {
    let removed = false;
    while (this.segments.length > 1) {
      const seg = this.segments[0]!;
      const next = this.segments[1]!;
      if (next.firstIndex - 1 > index) break;
      this.io.remove(seg.file);
      this.segments.shift();
      removed = true;
    }
    if (removed) this.io.syncDir(this.dir);
  }

  close(): void {
    if (this.fd >= 0) {
      if (this.failed === null) this.datasyncOrFail(this.fd);
      if (this.syncing) this.retiredFds.push(this.fd); // closed when the running sync returns
      else this.io.close(this.fd);
      this.fd = -1;
    }
  }
}

function segmentFiles(io: FileIo, dir: string): string[] {
  return io.list(dir).filter((f) => segmentNamePattern.test(f)).sort();
}

let spareSeq = 0;

/** A name no other spare of this process uses: an async spare and a sync one in the same
 * millisecond must not share a file (the async writes would zero the new segment). */
function spareName(dir: string): string {
  return path.join(dir, 'spare.' + process.pid + '.' + ++spareSeq + '.tmp');
}

function writeHardStateBody(p: Buffer, hs: HardState): void {
  p[4] = kindHardState;
  p.writeDoubleLE(hs.term, bodyHeadBytes);
  p.writeDoubleLE(hs.vote, bodyHeadBytes + 8);
  p.writeDoubleLE(hs.commit, bodyHeadBytes + 16);
}

const zeroBytes = Buffer.alloc(64 * 1024);

function isZero(b: Buffer, start: number, end: number): boolean {
  // memcmp against zeros: a 16 MiB segment tail is checked at every start.
  for (let p = start; p < end; p += zeroBytes.length) {
    const n = Math.min(zeroBytes.length, end - p);
    if (b.compare(zeroBytes, 0, n, p, p + n) !== 0) return false;
  }
  return true;
}

/**
 * etcd's isTornEntry: a torn write leaves at least one sector of the record unwritten, and the
 * segment was zero-filled, so some sector-aligned chunk of it reads all zero.
 */
function hasZeroSector(data: Buffer, start: number, end: number): boolean {
  let chunkStart = start;
  while (chunkStart < end) {
    const chunkEnd = Math.min(end, (Math.floor(chunkStart / sectorBytes) + 1) * sectorBytes);
    if (isZero(data, chunkStart, chunkEnd)) return true;
    chunkStart = chunkEnd;
  }
  return false;
}

/**
 * The offset of the first well-formed record at or after `from` (header and body checksums
 * match, the length fits, the kind is known), or -1. Zero words are skipped.
 */
function findValidRecord(data: Buffer, from: number): number {
  const last = data.length - recordHeaderBytes - bodyHeadBytes;
  let p = from;
  while (p <= last) {
    if ((p & 3) === 0 && data[p] === 0 && data[p + 1] === 0 && data[p + 2] === 0 && data[p + 3] === 0) {
      // Inside zeros: jump to the next non-zero word, then look at the 3 offsets before it too.
      let q = p + 4;
      while (q <= last && data.readUInt32LE(q) === 0) q += 4;
      p = Math.max(from, q - 3);
      continue;
    }
    if (recordStart(p) === p && crc32(data, p, p + 8) === data.readUInt32LE(p + 8)) {
      const len = data.readUInt32LE(p);
      const body = p + recordHeaderBytes;
      if (len >= bodyHeadBytes + 16 && body + len <= data.length) {
        const kind = data[body + 4];
        if ((kind === kindEntry || kind === kindHardState || kind === kindSegStart) &&
          crc32(data, body, body + len) === data.readUInt32LE(p + 4)) {
          return p;
        }
      }
    }
    p++;
  }
  return -1;
}
