// Raft snapshots of the LMDB state, as files (etcd: server/etcdserver/api/snap/snapshotter.go
// and db.go, which keep `<index>.snap.db` files of the backend). The storage worker
// (workers/storage_core.ts) decides when; this module does the file work.
//
// A raft snapshot here is a copy of the kv environment's data file: LMDB's own hot copy
// (mdb_env_copy2 with MDB_CP_COMPACT, lmdb-js `backup`) inside one read transaction, so it holds
// exactly one committed backend transaction, and each of those holds whole entries with their
// consistentIndex, consistentTerm and currentRev (storage/backend.ts). So the file says itself
// which raft (index, term) it is: we read it back from the copy, never assume it.
//
// Files in <data-dir>/member/snap/:
//   out-<index:16 hex>-<term:16 hex>-<n>.mdb   made to be sent to a follower; kept while the
//                                               driver holds it (SnapshotRelease)
//   in-<index:16 hex>-<term:16 hex>.mdb        received, checked and waiting to be installed;
//                                               the install renames it to kv/data.mdb
//   *.tmp, *.tmp.mdb, *-lock                   work in progress (removed at start-up)
// At start-up every file goes except the one `in-` file a crashed install still needs (the WAL
// restarted after its (index, term) but the kv environment is older): see storage_core.ts.
//
// Threads: the copy runs on the libuv pool (lmdb-js CopyWorker, an N-API AsyncWorker): the
// storage worker's thread goes on applying meanwhile. The copy's read transaction keeps the pages
// it reads from being reused, so the data file may grow by what is written during a copy.
// Inspecting a file opens it as an LMDB environment and reads a few meta records: milliseconds.
import fs from 'node:fs';
import path from 'node:path';
import { open, RootDatabase } from 'lmdb';
import * as schema from './schema';
import { assert } from '../util/assert';

/** Why a snapshot file was refused or could not be made (stable codes, protocol.ts). */
export const enum SnapshotErrorCode {
  /** Not an LMDB environment, truncated, or without the records a snapshot must hold. */
  Invalid = 1,
  /** A snapshot of another cluster (etcd refuses a peer of another cluster id too). */
  ClusterMismatch = 2,
  /** At or below the state already applied: nothing to install. */
  Stale = 3,
  /** A file operation failed (ENOSPC, EIO, EXDEV copy failure). */
  Io = 4,
  /** Too many snapshot files held by the driver (snapshotOutFilesMax); try again later. */
  Busy = 5,
  /** The store does not know the term of its applied index (a data dir from before
   * consistentTerm was kept, with nothing applied since): apply an entry first. */
  TermUnknown = 6,
  /** The storage cannot make snapshots (a simulated store in tests). */
  Unsupported = 7,
}

export class SnapshotError extends Error {
  readonly code: SnapshotErrorCode;
  constructor(code: SnapshotErrorCode, message: string) {
    super(message);
    this.name = 'SnapshotError';
    this.code = code;
  }
}

/** What a snapshot file holds, read from its meta records. */
export interface SnapshotMeta {
  /** consistentIndex: the raft index the state is at. */
  index: number;
  /** consistentTerm: that entry's term. */
  term: number;
  currentRev: number;
  /** scheduledCompactRev, -1 when never compacted. */
  compactRev: number;
  /** Decimal unsigned 64-bit. */
  clusterId: string;
  /** The raft configuration as of index. */
  confState: { voters: number[]; learners: number[] };
  /** The membership as of index (membership/membership.ts encoding; empty when none). */
  membership: Uint8Array;
  /** File size in bytes. */
  size: number;
}

/** Snapshot files one member makes for sending and keeps at once (each is a full copy). */
export const snapshotOutFilesMax = 2;

const outPattern = /^out-([0-9a-f]{16})-([0-9a-f]{16})-([0-9]+)\.mdb$/;
const inPattern = /^in-([0-9a-f]{16})-([0-9a-f]{16})\.mdb$/;

function hex16(v: number): string {
  return v.toString(16).padStart(16, '0');
}

export function outFileName(index: number, term: number, n: number): string {
  return `out-${hex16(index)}-${hex16(term)}-${n}.mdb`;
}

export function inFileName(index: number, term: number): string {
  return `in-${hex16(index)}-${hex16(term)}.mdb`;
}

/** (index, term) of an `in-` file name, or null. */
export function parseInFileName(name: string): { index: number; term: number } | null {
  const m = inPattern.exec(name);
  if (m === null) return null;
  return { index: parseInt(m[1]!, 16), term: parseInt(m[2]!, 16) };
}

export function isOutFileName(name: string): boolean {
  return outPattern.test(name);
}

/**
 * Removes every file of the snap directory except `keep` (a name, or null), and syncs the
 * directory. Start-up: a sent snapshot is not needed after a restart (the leader makes a new
 * one), a received one only by a crashed install.
 */
export function cleanSnapDir(dir: string, keep: string | null): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  let removed = false;
  for (const name of fs.readdirSync(dir)) {
    if (name === keep) continue;
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    removed = true;
  }
  if (removed) fsyncDir(dir);
}

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Flushes one file's data and size to disk. */
export function fsyncFile(file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Copies the environment `env` (a directory environment) into `<tmpDir>/data.mdb`, compacted,
 * in one read transaction, on the libuv pool. Returns the file. `tmpDir` must not exist.
 */
export async function copyEnvironment(env: RootDatabase, tmpDir: string): Promise<string> {
  fs.mkdirSync(tmpDir, { mode: 0o700 });
  try {
    // Compacted: free pages are left out (a store after compactions is often half free), so
    // fewer bytes cross the network; measured no slower than a plain copy here.
    await env.backup(tmpDir, true);
  } catch (err) {
    fs.rmSync(tmpDir, { recursive: true, force: true });
    throw new SnapshotError(SnapshotErrorCode.Io, `copying the kv environment failed: ${(err as Error).message}`);
  }
  return path.join(tmpDir, schema.kvDataFile);
}

/**
 * Opens `file` (a single-file LMDB environment) and reads its snapshot metadata, refusing what
 * is not a whole snapshot: not LMDB (bad meta pages), shorter than its last page (a truncated
 * transfer: reading past the end of a mapped file is SIGBUS, so this is checked from the meta
 * page before any data page is read), no applied index or term, no cluster id, or a revision
 * stored above the recorded current revision. With `memberId` (8 bytes) the file's member id is
 * rewritten to it: a snapshot carries the sender's, and the installed state must carry ours,
 * already in the file when the install renames it into place (a crash after the rename must
 * not wake up as the sender).
 */
export async function inspectSnapshotFile(file: string, mapSizeBytes: number,
  memberId: Buffer | null): Promise<SnapshotMeta> {
  const size = fs.statSync(file).size;
  checkLmdbHeader(file, size);
  let env: RootDatabase;
  try {
    env = open({
      path: file, maxDbs: 8, mapSize: Math.max(mapSizeBytes, size), readOnly: memberId === null,
      overlappingSync: false, noSubdir: true,
    });
  } catch (err) {
    removeLockFile(file);
    throw new SnapshotError(SnapshotErrorCode.Invalid, `not an LMDB environment: ${(err as Error).message}`);
  }
  try {
    return await readSnapshotMeta(env, file, size, memberId);
  } finally {
    await env.close();
    removeLockFile(file);
  }
}

async function readSnapshotMeta(env: RootDatabase, file: string, size: number,
  memberId: Buffer | null): Promise<SnapshotMeta> {
  const stats = env.getStats() as Record<string, number>;
  const pageSize = stats['pageSize'] ?? 0;
  const lastPage = stats['lastPageNumber'] ?? -1;
  if (pageSize <= 0 || (lastPage + 1) * pageSize > size) {
    throw new SnapshotError(SnapshotErrorCode.Invalid, `${path.basename(file)}: ${size} bytes, but its meta page says ${(lastPage + 1) * pageSize} (truncated)`);
  }
  let meta;
  let key;
  try {
    meta = env.openDB<Buffer, string>({ name: schema.dbMeta, encoding: 'binary' });
    key = env.openDB<Buffer, Buffer>({ name: schema.dbKey, keyEncoding: 'binary', encoding: 'binary' });
  } catch (err) {
    throw new SnapshotError(SnapshotErrorCode.Invalid, `${path.basename(file)}: no concord databases: ${(err as Error).message}`);
  }
  const u64 = (name: string): number | null => {
    const b = meta.getBinary(name);
    if (b === undefined) return null;
    if (b.length !== 8) throw new SnapshotError(SnapshotErrorCode.Invalid, `${path.basename(file)}: meta ${name} has ${b.length} bytes`);
    return schema.readU64(b, 0);
  };
  const index = u64(schema.metaConsistentIndex);
  const term = u64(schema.metaConsistentTerm);
  const currentRev = u64(schema.metaCurrentRev) ?? 1;
  const clusterIdBytes = meta.getBinary(schema.metaClusterId);
  if (index === null || index === 0) throw new SnapshotError(SnapshotErrorCode.Invalid, `${path.basename(file)}: no applied index`);
  if (term === null || term === 0) throw new SnapshotError(SnapshotErrorCode.TermUnknown, `${path.basename(file)}: no term for applied index ${index}`);
  if (clusterIdBytes === undefined || clusterIdBytes.length !== 8) throw new SnapshotError(SnapshotErrorCode.Invalid, `${path.basename(file)}: no cluster id`);
  for (const { key: k } of key.getRange({ reverse: true, limit: 1 })) {
    const main = schema.revKeyMain(k as Buffer);
    if (main > currentRev) throw new SnapshotError(SnapshotErrorCode.Invalid, `${path.basename(file)}: revision ${main} stored above the current revision ${currentRev}`);
  }
  const scheduled = u64(schema.metaScheduledCompact);
  const cs = meta.getBinary(schema.metaConfState);
  const ms = meta.getBinary(schema.metaMembership);
  const b = Buffer.from(clusterIdBytes);
  const clusterId = (BigInt(b.readUInt32BE(0)) << 32n | BigInt(b.readUInt32BE(4))).toString();
  if (memberId !== null) {
    assert(memberId.length === 8, 'member id bytes');
    await meta.put(schema.metaMemberId, memberId); // a synced commit (overlappingSync off)
  }
  return {
    index, term, currentRev, compactRev: scheduled ?? -1, clusterId,
    confState: cs === undefined ? { voters: [], learners: [] } : schema.decodeConfState(Buffer.from(cs)),
    membership: ms === undefined ? new Uint8Array(0) : Uint8Array.from(ms),
    size: fs.statSync(file).size,
  };
}

// LMDB's meta pages (liblmdb mdb.c, 64-bit build, as lmdb-js 3.x compiles it): pages 0 and 1,
// each an MDB_page_header (24 bytes: pgno u64, txnid u64, pad u16, flags u16 at 18, lower/upper
// u32) followed by MDB_meta: magic u32 at 24, version u32 at 28, address u64, mapsize u64,
// mm_dbs[2] (48 bytes each, the first's md_pad u32 at 48 = the page size), last_pg u64 at 144,
// txnid u64 at 152. Checked against files lmdb-js wrote (docs/architecture.md, Raft snapshots).
const metaFlagsAt = 18;
const metaMagicAt = 24;
const metaVersionAt = 28;
const metaPageSizeAt = 48;
const metaLastPageAt = 144;
const metaTxnIdAt = 152;
const metaBytes = 160;
const pageMeta = 0x08; // P_META
const lmdbMagic = 0xbeefc0de;
const lmdbDataVersion = 2;

/**
 * Refuses a file that is not a whole LMDB data file before lmdb-js opens it: lmdb-js 3.5
 * crashes the process (SIGSEGV, measured) on a file whose meta pages are not LMDB's, and
 * reading a page past the end of a truncated file is SIGBUS. So both meta pages must carry
 * LMDB's flag, magic and version and one page size, and the newer one's last page must lie
 * inside the file. Damage inside the tree is not found here: the transport's sha256 covers the
 * bytes in transit, and LMDB has no checksums of its own.
 */
export function checkLmdbHeader(file: string, size: number): void {
  const name = path.basename(file);
  const invalid = (why: string): SnapshotError => new SnapshotError(SnapshotErrorCode.Invalid, `${name}: not an LMDB data file: ${why}`);
  if (size < 2 * 512) throw invalid(`${size} bytes`);
  const fd = fs.openSync(file, 'r');
  try {
    const read = (at: number): Buffer => {
      const b = Buffer.alloc(metaBytes);
      if (fs.readSync(fd, b, 0, metaBytes, at) !== metaBytes) throw invalid('short meta page');
      return b;
    };
    const first = read(0);
    const pageSize = first.readUInt32LE(metaPageSizeAt);
    if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) throw invalid(`page size ${pageSize}`);
    if (size < 2 * pageSize) throw invalid(`${size} bytes, less than two ${pageSize}-byte pages`);
    const metas = [first, read(pageSize)];
    for (const m of metas) {
      if ((m.readUInt16LE(metaFlagsAt) & pageMeta) === 0) throw invalid('no meta page');
      if (m.readUInt32LE(metaMagicAt) !== lmdbMagic) throw invalid('bad magic');
      if ((m.readUInt32LE(metaVersionAt) & 0xffff) !== lmdbDataVersion) throw invalid(`format version ${m.readUInt32LE(metaVersionAt)}`);
      if (m.readUInt32LE(metaPageSizeAt) !== pageSize) throw invalid('meta pages disagree on the page size');
    }
    const newer = metas[0]!.readBigUInt64LE(metaTxnIdAt) >= metas[1]!.readBigUInt64LE(metaTxnIdAt) ? metas[0]! : metas[1]!;
    const pages = Number(newer.readBigUInt64LE(metaLastPageAt)) + 1;
    if (pages * pageSize > size) throw new SnapshotError(SnapshotErrorCode.Invalid, `${name}: ${size} bytes, but its meta page says ${pages * pageSize} (truncated)`);
  } finally {
    fs.closeSync(fd);
  }
}

/** lmdb-js names a single-file environment's lock file `<file>-lock`. */
function removeLockFile(file: string): void {
  fs.rmSync(file + '-lock', { force: true });
}

/**
 * Moves the staged file into the kv directory environment, for an open by path to find the new
 * state: removes lock.mdb (so that the open makes a new environment, not the old one another
 * thread may still hold: watch/events.ts), renames `staged` over data.mdb (atomic), and syncs
 * both directories. The caller holds the kv environment lock and has closed its own handle.
 */
export function replaceKvDataFile(kvPath: string, staged: string): void {
  fs.rmSync(path.join(kvPath, schema.kvLockFile), { force: true });
  fs.renameSync(staged, path.join(kvPath, schema.kvDataFile));
  fsyncDir(kvPath);
  fsyncDir(path.dirname(staged));
}

/**
 * Moves a received file to `to` in the snap directory: a rename, or on another filesystem
 * (EXDEV: the transport wrote it elsewhere) a copy on the libuv pool, synced, then the source
 * removed. The destination's directory is synced by the caller's later rename.
 */
export async function moveInto(from: string, to: string): Promise<void> {
  try {
    fs.renameSync(from, to);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
  }
  await fs.promises.copyFile(from, to);
  const fh = await fs.promises.open(to, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  fs.rmSync(from, { force: true });
}
