// Messages between the main thread and the storage worker. Hot-path messages are ONE plain
// Uint8Array each, its first byte the message type: no wrapper object, no transfer list.
// Measured here (node 20, 2 vCPU): a bare Uint8Array round trip costs ~16 µs, the same bytes
// inside an object {type, data} ~41 µs and with a transferred ArrayBuffer ~58 µs; one batch per
// event-loop turn costs ~0.1-0.3 µs per request instead of ~4 µs for a message per request
// (shared/reference/node-stack.md §4).
//
// Each message has ONE encoder and ONE decoder, below its layout; both threads and the tests
// use them (issue #10: layouts written once).
//
// Layouts (little-endian; u53 = a safe integer stored as float64):
//   Batch   main -> worker                      encodeBatch / decodeBatch
//     u8  type = Batch
//     u32 seq                         1, 2, 3, ...: Persisted names the last batch made durable;
//                                     0: the batch writes nothing (applies and reads only)
//     u8  flags (BatchFlag)           | [u53 term, u53 vote, u53 commit] if HardState
//                                     | [u53 index, u53 term] if Snapshot (hasSnapshot): install
//                                     the staged snapshot (SnapshotStage) at (index, term) before
//                                     anything else of this batch; needs seq != 0 and MustSync
//                                     (raft's PersistBatch.snapshot). Persisted{seq} follows the
//                                     install. A batch without it is byte for byte as before.
//     u53 raftTerm                    term to put in response headers
//     u32 appendCount | appendCount x Entry     entries to make durable
//     u32 applyCount  | applyCount  x Entry     committed entries to apply, in order
//     u32 readCount   | readCount   x Read      reads to serve after the applies
//   Entry  = u53 index, u53 term, u8 type, u32 dataLength, data
//   Read   = u32 readId, u8 readKind, u8 linearizable, u32 length, request bytes
//   Applied worker -> main                      AppliedWriter / decodeApplied
//     u8  type = Applied
//     u53 appliedIndex, u53 currentRev, u53 compactRev, u53 dbSize, u53 dbSizeInUse
//     u32 resultCount | resultCount x Result    proposals answered (id = InternalRequest.id)
//     u32 readCount   | readCount   x ReadResult
//     u32 leaseCount  | leaseCount  x LeaseChange   lease/lease_store.ts changes, apply order
//     u32 length | membership (membership/membership.ts encoding) when it changed, else length 0
//     u32 length | alarms (apply/alarm_store.ts encoding, never empty) when they changed, else 0
//     u32 length | auth (concordpb.AuthApplied, never empty) when the auth store changed or
//                  tokens were assigned, else 0
//     only in the first Applied after a raft snapshot install (the rest of the message; the
//     state was replaced before these items; other Applied messages end after membership):
//       u53 snapshotIndex, u53 snapshotTerm
//       u32 voters, u32 learners, (voters + learners) x u53 id    the configuration as of it
//       u32 leaseCount | leaseCount x LeaseInfo                   EVERY lease of the new state
//                                     (the lessor resets to exactly these, as at start-up)
//     (appliedIndex/currentRev/compactRev then describe the new state; membership is set)
//   Result     = u53 id, u8 errorCode (0 = ok), u32 length, response bytes
//   ReadResult = u32 readId, u8 errorCode, u32 length, response bytes
//   LeaseChange = u8 kind, u32 length, decimal int64 id (ascii), u53 ttl, u53 remaining
//   LeaseInfo   = u32 length, decimal int64 id (ascii), u53 ttl, u53 remaining
//   Persisted worker -> main                    encodePersisted / decodePersisted
//     u8 type = Persisted, u32 seq, u53 index, u53 term
//     every batch up to `seq` is durable: its entries (the last one is index/term; 0/0 when
//     none were ever appended) and its hard state. A batch without MustSync is acknowledged
//     with the next sync, or at once when no sync is pending (it needed none).
//   Ready entries (start-up)                    encodeEntries / decodeEntries
//     u32 count | count x Entry
//
// The durability contract (docs/architecture.md): the worker syncs the WAL for every batch whose
// flags say MustSync (new entries, or a new term or vote) and sends Persisted{seq} only after
// that sync returned; it applies an entry only once the WAL sync covering it has returned.
// A batch's committed entries may include entries appended in the same batch.
// Start-up, shutdown, alarm and raft snapshot messages are plain objects (rare); see "Raft
// snapshots" below for SnapshotCreate/Created, SnapshotStage/Staged and SnapshotRelease.
import { assert } from '../util/assert';
import type { Entry, HardState } from '../raft/types';

export const enum ReadKind {
  Range = 1,
  Status = 2,
  /** LeaseTimeToLiveRequest in; LeaseTimeToLiveResponse out with ID, grantedTTL, keys (no TTL). */
  LeaseTimeToLive = 3,
}

export const enum BatchFlag {
  HardState = 1,
  /** The WAL must be synced before Persisted: new entries, or a new term or vote. */
  MustSync = 2,
  /** hasSnapshot: install the staged raft snapshot first (BatchMessage.snapshot). */
  Snapshot = 4,
}

export const enum WorkerMessageType {
  Init = 1,
  Batch = 2,
  Close = 3,
  SnapshotCreate = 4,
  SnapshotStage = 5,
  SnapshotRelease = 6,
  Hash = 7,
  Defragment = 8,
  Ready = 11,
  Applied = 12,
  Persisted = 13,
  Closed = 14,
  Fatal = 15,
  Alarm = 16,
  SnapshotCreated = 17,
  SnapshotStaged = 18,
  HashDone = 19,
  DefragmentDone = 20,
}

export class PackWriter {
  private buf: Buffer;
  private pos: number;

  constructor(initialBytes: number) {
    this.buf = Buffer.allocUnsafe(initialBytes);
    this.pos = 0;
  }

  reset(): void {
    this.pos = 0;
  }

  get length(): number {
    return this.pos;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = Math.max(this.buf.length * 2, 64); // a 0-byte start must grow too
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf[this.pos++] = v;
  }

  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
  }

  /** Position of a u32 to patch later (counts written before their items are known). */
  u32Placeholder(): number {
    const at = this.pos;
    this.u32(0);
    return at;
  }

  patchU32(at: number, v: number): void {
    this.buf.writeUInt32LE(v, at);
  }

  u53(v: number): void {
    assert(Number.isSafeInteger(v), 'u53 value');
    this.reserve(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }

  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  entry(e: Entry): void {
    this.u53(e.index);
    this.u53(e.term);
    this.u8(e.type);
    this.bytes(e.data);
  }

  /** Copies what was written into `dst` at `offset`; returns the byte count. */
  copyTo(dst: Uint8Array, offset: number): number {
    dst.set(this.buf.subarray(0, this.pos), offset);
    return this.pos;
  }

  /** A copy of what was written, in its own ArrayBuffer. */
  finish(): Uint8Array {
    const out = new Uint8Array(this.pos);
    out.set(this.buf.subarray(0, this.pos));
    return out;
  }
}

export class PackReader {
  private readonly buf: Buffer;
  private pos: number;

  constructor(data: Uint8Array) {
    this.buf = Buffer.from(data.buffer, data.byteOffset, data.length);
    this.pos = 0;
  }

  done(): boolean {
    return this.pos === this.buf.length;
  }

  u8(): number {
    return this.buf[this.pos++]!;
  }

  u32(): number {
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  u53(): number {
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }

  /** A view into the message buffer; valid as long as the message is. */
  bytes(): Uint8Array {
    const n = this.u32();
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  entry(): Entry {
    const index = this.u53();
    const term = this.u53();
    const type = this.u8();
    const data = this.bytes();
    return { index, term, type, data };
  }
}

/** Sent once at start-up; the worker answers with WorkerReady. */
export interface WorkerInit {
  type: WorkerMessageType.Init;
  dataDir: string;
  mapSizeBytes: number;
  walSegmentBytes: number;
  /** src/workers/stats.ts: counters and histograms the main thread reads for /metrics. */
  statsBuffer: SharedArrayBuffer;
  /** src/watch/events.ts: the event ring to the watch worker. */
  watchEventRing: SharedArrayBuffer;
  /** BigInt64Array(1): the compaction revision, stored at apply for the watch worker. */
  watchCompactRev: SharedArrayBuffer;
  /** etcd's minimum lease TTL in seconds (from the election timeout). */
  leaseTtlMin: number;
  /** etcd's --unsafe-no-fsync: the WAL acknowledges writes without fdatasync. */
  unsafeNoFsync: boolean;
  /**
   * The ids a member starting for the first time takes (decimal unsigned 64-bit, derived from
   * its flags as etcd derives them); random when absent. A data dir that has ids keeps them.
   */
  newMemberId?: string;
  newClusterId?: string;
}

/** A lease as the storage worker restored it (id as a decimal int64). */
export interface LeaseInfo {
  id: string;
  ttl: number;
  remaining: number;
}

export interface WorkerReady {
  type: WorkerMessageType.Ready;
  clusterId: string; // decimal u64
  memberId: string;
  hardState: { term: number; vote: number; commit: number };
  appliedIndex: number;
  snapshotIndex: number;
  snapshotTerm: number;
  /** Packed entries after the snapshot point (Entry layout), count first. */
  entries: Uint8Array;
  currentRev: number;
  compactRev: number;
  leases: LeaseInfo[];
  /** The raft configuration as of appliedIndex (empty for a member that never applied one). */
  confState: { voters: number[]; learners: number[] };
  /** The membership as of appliedIndex (membership/membership.ts encoding). */
  membership: Uint8Array;
  /** The alarms as of appliedIndex (apply/alarm_store.ts encoding). */
  alarms: Uint8Array;
  /** The auth store as of appliedIndex (concordpb.AuthState). */
  auth: Uint8Array;
}

export interface WorkerFatal {
  type: WorkerMessageType.Fatal;
  message: string;
}

/** Why the storage cannot take writes that grow it (NOSPACE), or that it can again. */
export interface WorkerAlarm {
  type: WorkerMessageType.Alarm;
  /** Which store: the backend could not commit, or the WAL could not preallocate a segment. */
  source: 'backend' | 'wal';
  raised: boolean;
  message: string;
}

// ---- Raft snapshots (plain objects: one per snapshot, not per request) ----
//
// Leader side (raw_node.ts item 7):
//   SnapshotCreate{requestId, minIndex} -> SnapshotCreated{requestId, file, ...}
//     A consistent copy of the LMDB state in <data-dir>/member/snap/, at an applied index >=
//     minIndex (pass the MsgSnap's index: the state sent must be at that index or later). The
//     copy runs on the libuv pool: applies and reads go on. `index`/`term`/`confState`/
//     `membership` are read back from the copy: rewrite the MsgSnap's metadata to them (etcd
//     createMergedSnapshotMessage), send `size` bytes of `file`, then SnapshotRelease{file}.
//     A file held by the driver is reused for a later request whose minIndex it satisfies
//     (one more hold: one release each). At most snapshotOutFilesMax files are held at once;
//     beyond that, error Busy.
// Follower side (raw_node.ts item 4):
//   SnapshotStage{requestId, file} -> SnapshotStaged{requestId, file, ...}
//     `file` is the transport's verified file; the worker takes it (moves it into member/snap;
//     the driver must not touch it again), checks that it is a whole LMDB snapshot of this
//     cluster above the applied index, and answers its metadata. Then step the MsgSnap; when
//     raft hands out PersistBatch.snapshot, send it as the Batch's snapshot field with the same
//     (index, term). One staged file at a time: a new stage replaces the previous one. If raft
//     does not restore it, SnapshotRelease{file} (or stage the next one).
//   Batch{snapshot: {index, term}}: the install; its first Applied has `replaced` (leases,
//     configuration, membership of the new state), then Persisted{seq, index, term}.
//   Order: SnapshotStage must be answered before the Batch that installs it is sent. Every
//   message sent during an install waits until it is done, in order.
//   SnapshotRelease{file}: the driver is done with a file it got in an answer. Unknown files
//   (already released, or consumed by an install) are ignored.

export interface SnapshotCreate {
  type: WorkerMessageType.SnapshotCreate;
  requestId: number;
  /** The state must be at this applied index or later (the MsgSnap's metadata.index). */
  minIndex: number;
}

export interface SnapshotStage {
  type: WorkerMessageType.SnapshotStage;
  requestId: number;
  /** The verified received file (PeerTransport.onSnapshot's handle); the worker takes it. */
  file: string;
}

export interface SnapshotRelease {
  type: WorkerMessageType.SnapshotRelease;
  file: string;
}

/** What a snapshot file holds, or why there is none. */
export interface SnapshotAnswer {
  requestId: number;
  /** null when ok; else a storage/snapshotter.ts SnapshotErrorCode and a message to log. */
  error: { code: number; message: string } | null;
  /** Absolute path of the file (in member/snap); '' on error. */
  file: string;
  /** Bytes to send. */
  size: number;
  /** The raft index and term the state is at (read from the file). */
  index: number;
  term: number;
  confState: { voters: number[]; learners: number[] };
  /** membership/membership.ts encoding, as of index. */
  membership: Uint8Array;
  currentRev: number;
}

export interface SnapshotCreated extends SnapshotAnswer {
  type: WorkerMessageType.SnapshotCreated;
}

export interface SnapshotStaged extends SnapshotAnswer {
  type: WorkerMessageType.SnapshotStaged;
}

// ---- Maintenance.Hash and HashKV (plain objects: rare) ----
//
//   Hash{requestId, kind, rev} -> HashDone{requestId, error, ...}
//     kind 'hashkv': etcd's HashKV at `rev` (0 = current): the worker checks `rev` against its
//     state (Compacted, FutureRev as etcd), commits what it applied, and the hash thread
//     (workers/hash_worker.ts) scans one LMDB snapshot. kind 'hash': concord's Hash of the whole
//     replicated state (mvcc/hash.ts header); `rev` is ignored. Answers come in request order.

export interface HashRequest {
  type: WorkerMessageType.Hash;
  requestId: number;
  kind: 'hash' | 'hashkv';
  rev: number;
}

export interface HashDone {
  type: WorkerMessageType.HashDone;
  requestId: number;
  /** 0, or ErrorCode.Compacted / FutureRev. */
  error: number;
  hash: number;
  /** The hashed snapshot's compaction revision (-1: never compacted) and current revision. */
  compactRev: number;
  currentRev: number;
  /** The revision hashed (etcd 3.5 hash_revision). */
  rev: number;
}

/** workerData of the hash thread. */
export interface HashThreadInit {
  kvPath: string;
  mapSizeBytes: number;
  /** The watch event ring: its user slots hold the kv environment lock (KvEnvSlots). */
  eventRing: SharedArrayBuffer;
}

export interface HashThreadRequest {
  id: number;
  kind: 'hash' | 'hashkv';
  rev: number;
}

export interface HashThreadAnswer {
  id: number;
  error: number;
  hash: number;
  compactRev: number;
  currentRev: number;
  rev: number;
  /** Revision records hashed, and the scan's wall time (logs, measurements). */
  records: number;
  ms: number;
}

// ---- Maintenance.Defragment (plain objects: rare) ----
//
//   Defragment{requestId} -> DefragmentDone{requestId, error, ...}
//     the storage worker's online defragmentation (workers/storage_core.ts "Online
//     defragmentation"); answers come in request order, one defragmentation at a time.

export interface DefragmentRequest {
  type: WorkerMessageType.Defragment;
  requestId: number;
}

export interface DefragmentDone {
  type: WorkerMessageType.DefragmentDone;
  requestId: number;
  /** '' when it worked; else why not (nothing changed: the member goes on with its old file). */
  error: string;
  /** db size and db size in use before and after (equal when it failed). */
  before: { dbSize: number; dbSizeInUse: number };
  after: { dbSize: number; dbSizeInUse: number };
  /** Wall times: the compacted copy, the catch-up while writes went on, and the switch during
   * which this member's requests waited (the pause). */
  copyMs: number;
  catchUpMs: number;
  pauseMs: number;
  /** Bytes of transactions written again into the copy. */
  journalBytes: number;
}

export type ToWorker = WorkerInit | Uint8Array | { type: WorkerMessageType.Close } |
  SnapshotCreate | SnapshotStage | SnapshotRelease | HashRequest | DefragmentRequest;
export type FromWorker = WorkerReady | Uint8Array | WorkerFatal | WorkerAlarm |
  { type: WorkerMessageType.Closed } | SnapshotCreated | SnapshotStaged | HashDone | DefragmentDone;

// ---- Batch ----

export interface ReadRequest {
  id: number;
  kind: ReadKind;
  linearizable: boolean;
  request: Uint8Array;
}

/** Batch.snapshot: install the staged raft snapshot at (index, term) first. */
export interface BatchSnapshot {
  index: number;
  term: number;
}

export interface BatchMessage {
  seq: number;
  /** Install the staged snapshot first (raft PersistBatch.snapshot); absent or null for none
   * (decodeBatch leaves it out when there is none). */
  snapshot?: BatchSnapshot | null;
  /** Set when term, vote or commit changed. */
  hardState: HardState | null;
  /** Sync the WAL before Persisted (raft's Ready.mustSync). */
  mustSync: boolean;
  raftTerm: number;
  append: Entry[];
  apply: Entry[];
  reads: ReadRequest[];
}

/** Writes a Batch into `w` (reset first) and returns a copy of the message. */
export function encodeBatch(w: PackWriter, b: BatchMessage): Uint8Array {
  w.reset();
  w.u8(WorkerMessageType.Batch);
  w.u32(b.seq);
  const snap = b.snapshot ?? null;
  w.u8((b.hardState !== null ? BatchFlag.HardState : 0) | (b.mustSync ? BatchFlag.MustSync : 0) |
    (snap !== null ? BatchFlag.Snapshot : 0));
  if (b.hardState !== null) {
    w.u53(b.hardState.term);
    w.u53(b.hardState.vote);
    w.u53(b.hardState.commit);
  }
  if (snap !== null) {
    assert(b.seq !== 0 && b.mustSync, 'a snapshot batch is a synced write');
    w.u53(snap.index);
    w.u53(snap.term);
  }
  w.u53(b.raftTerm);
  w.u32(b.append.length);
  for (const e of b.append) w.entry(e);
  w.u32(b.apply.length);
  for (const e of b.apply) w.entry(e);
  w.u32(b.reads.length);
  for (const rq of b.reads) {
    w.u32(rq.id);
    w.u8(rq.kind);
    w.u8(rq.linearizable ? 1 : 0);
    w.bytes(rq.request);
  }
  return w.finish();
}

/** Entry data and read requests are views into `data`. */
export function decodeBatch(data: Uint8Array): BatchMessage {
  const r = new PackReader(data);
  assert(r.u8() === WorkerMessageType.Batch, 'not a Batch');
  const seq = r.u32();
  const flags = r.u8();
  const hardState = (flags & BatchFlag.HardState) !== 0 ? { term: r.u53(), vote: r.u53(), commit: r.u53() } : null;
  const snapshot = (flags & BatchFlag.Snapshot) !== 0 ? { index: r.u53(), term: r.u53() } : null;
  const raftTerm = r.u53();
  const append: Entry[] = [];
  for (let n = r.u32(); n > 0; n--) append.push(r.entry());
  const apply: Entry[] = [];
  for (let n = r.u32(); n > 0; n--) apply.push(r.entry());
  const reads: ReadRequest[] = [];
  for (let n = r.u32(); n > 0; n--) {
    const id = r.u32();
    const kind = r.u8() as ReadKind;
    const linearizable = r.u8() === 1;
    reads.push({ id, kind, linearizable, request: r.bytes() });
  }
  assert(r.done(), 'Batch has trailing bytes');
  const b: BatchMessage = { seq, hardState, mustSync: (flags & BatchFlag.MustSync) !== 0, raftTerm, append, apply, reads };
  // Present only when set: a decoded batch equals the BatchMessage it was encoded from.
  if (snapshot !== null) b.snapshot = snapshot;
  return b;
}

// ---- Applied ----

export interface AppliedHeader {
  appliedIndex: number;
  currentRev: number;
  compactRev: number;
  dbSize: number;
  dbSizeInUse: number;
  /** The membership after these applies, when they changed it (a view into the message). */
  membership: Uint8Array | null;
  /** Every alarm after these applies, when they changed (a view into the message). */
  alarms: Uint8Array | null;
  /** concordpb.AuthApplied, when the auth store changed or tokens were assigned (a view). */
  auth: Uint8Array | null;
  /** Set in the first Applied after a raft snapshot install: the state was replaced
   * (decodeApplied leaves it out otherwise). */
  replaced?: AppliedReplaced | null;
}

/** A raft snapshot replaced the state (Applied's `replaced` section). */
export interface AppliedReplaced {
  index: number;
  term: number;
  confState: { voters: number[]; learners: number[] };
  /** Every lease of the new state: the lessor forgets all others. */
  leases: LeaseInfo[];
}

/** What decodeApplied hands over, item by item (no array per message). */
export interface AppliedVisitor {
  result(id: number, code: number, response: Uint8Array): void;
  read(readId: number, code: number, response: Uint8Array): void;
  leaseChange(kind: number, id: string, ttl: number, remaining: number): void;
}

/** Collects the items of one Applied message as the worker produces them. */
export class AppliedWriter {
  private readonly results = new PackWriter(64 * 1024);
  private readonly reads = new PackWriter(64 * 1024);
  private readonly leases = new PackWriter(1024);
  resultCount = 0;
  readCount = 0;
  leaseCount = 0;

  result(id: number, code: number, response: Uint8Array): void {
    this.results.u53(id);
    this.results.u8(code);
    this.results.bytes(response);
    this.resultCount++;
  }

  read(readId: number, code: number, response: Uint8Array): void {
    this.reads.u32(readId);
    this.reads.u8(code);
    this.reads.bytes(response);
    this.readCount++;
  }

  /** `id` is the lease id as a decimal int64. */
  leaseChange(kind: number, id: string, ttl: number, remaining: number): void {
    this.leases.u8(kind);
    this.leases.bytes(Buffer.from(id, 'latin1'));
    this.leases.u53(ttl);
    this.leases.u53(remaining);
    this.leaseCount++;
  }

  isEmpty(): boolean {
    return this.resultCount === 0 && this.readCount === 0 && this.leaseCount === 0;
  }

  /** The message, in its own buffer; the writer is empty afterwards. */
  finish(h: AppliedHeader): Uint8Array {
    const membership = h.membership ?? emptyBytes;
    const alarms = h.alarms ?? emptyBytes;
    assert(h.alarms === null || alarms.length > 0, 'alarm encoding is never empty');
    const auth = h.auth ?? emptyBytes;
    assert(h.auth === null || auth.length > 0, 'auth section is never empty');
    const replaced = h.replaced === undefined || h.replaced === null ? null : encodeReplaced(h.replaced);
    const m = new Uint8Array(1 + 5 * 8 + 24 + alarms.length + auth.length + this.results.length + this.reads.length + this.leases.length +
      membership.length + (replaced === null ? 0 : replaced.length));
    const b = Buffer.from(m.buffer);
    let pos = 0;
    b[pos++] = WorkerMessageType.Applied;
    pos = b.writeDoubleLE(checkU53(h.appliedIndex), pos);
    pos = b.writeDoubleLE(checkU53(h.currentRev), pos);
    pos = b.writeDoubleLE(checkU53(h.compactRev), pos);
    pos = b.writeDoubleLE(checkU53(h.dbSize), pos);
    pos = b.writeDoubleLE(checkU53(h.dbSizeInUse), pos);
    pos = b.writeUInt32LE(this.leaseCount, pos);
    pos += this.leases.copyTo(m, pos);
    pos = b.writeUInt32LE(this.resultCount, pos);
    pos += this.results.copyTo(m, pos);
    pos = b.writeUInt32LE(this.readCount, pos);
    pos += this.reads.copyTo(m, pos);
    pos = b.writeUInt32LE(membership.length, pos);
    m.set(membership, pos);
    pos += membership.length;
    pos = b.writeUInt32LE(alarms.length, pos);
    m.set(alarms, pos);
    pos += alarms.length;
    pos = b.writeUInt32LE(auth.length, pos);
    m.set(auth, pos);
    pos += auth.length;
    if (replaced !== null) {
      m.set(replaced, pos);
      pos += replaced.length;
    }
    assert(pos === m.length, 'applied message size');
    this.results.reset();
    this.reads.reset();
    this.leases.reset();
    this.resultCount = 0;
    this.readCount = 0;
    this.leaseCount = 0;
    return m;
  }
}

/**
 * Hands every item to `v` in message order (lease changes, results, reads); returns the header.
 * Responses are views.
 */
export function decodeApplied(data: Uint8Array, v: AppliedVisitor): AppliedHeader {
  const r = new PackReader(data);
  assert(r.u8() === WorkerMessageType.Applied, 'not an Applied');
  const h: AppliedHeader = {
    appliedIndex: r.u53(), currentRev: r.u53(), compactRev: r.u53(), dbSize: r.u53(), dbSizeInUse: r.u53(),
    membership: null, alarms: null, auth: null,
  };
  // Lease changes before the answers: a client told its grant (or a read that sees the lease)
  // applied must find the lease in the lessor when its next request arrives.
  for (let n = r.u32(); n > 0; n--) {
    const kind = r.u8();
    const id = Buffer.from(r.bytes()).toString('latin1');
    const ttl = r.u53();
    v.leaseChange(kind, id, ttl, r.u53());
  }
  for (let n = r.u32(); n > 0; n--) {
    const id = r.u53();
    const code = r.u8();
    v.result(id, code, r.bytes());
  }
  for (let n = r.u32(); n > 0; n--) {
    const id = r.u32();
    const code = r.u8();
    v.read(id, code, r.bytes());
  }
  const membership = r.bytes();
  if (membership.length > 0) h.membership = membership;
  const alarms = r.bytes();
  if (alarms.length > 0) h.alarms = alarms;
  const auth = r.bytes();
  if (auth.length > 0) h.auth = auth;
  if (!r.done()) h.replaced = decodeReplaced(r); // present only when set, as `snapshot`
  assert(r.done(), 'Applied has trailing bytes');
  return h;
}

function encodeReplaced(x: AppliedReplaced): Uint8Array {
  const w = new PackWriter(64 + 40 * x.leases.length);
  w.u53(x.index);
  w.u53(x.term);
  w.u32(x.confState.voters.length);
  w.u32(x.confState.learners.length);
  for (const id of x.confState.voters) w.u53(id);
  for (const id of x.confState.learners) w.u53(id);
  w.u32(x.leases.length);
  for (const l of x.leases) {
    w.bytes(Buffer.from(l.id, 'latin1'));
    w.u53(l.ttl);
    w.u53(l.remaining);
  }
  return w.finish();
}

function decodeReplaced(r: PackReader): AppliedReplaced {
  const index = r.u53();
  const term = r.u53();
  const nv = r.u32();
  const nl = r.u32();
  const voters: number[] = [];
  const learners: number[] = [];
  for (let i = 0; i < nv; i++) voters.push(r.u53());
  for (let i = 0; i < nl; i++) learners.push(r.u53());
  const leases: LeaseInfo[] = [];
  for (let n = r.u32(); n > 0; n--) {
    const id = Buffer.from(r.bytes()).toString('latin1');
    const ttl = r.u53();
    leases.push({ id, ttl, remaining: r.u53() });
  }
  return { index, term, confState: { voters, learners }, leases };
}

// ---- Persisted ----

export interface PersistedMessage {
  seq: number;
  index: number;
  term: number;
}

export function encodePersisted(p: PersistedMessage): Uint8Array {
  const m = new Uint8Array(1 + 4 + 16);
  const b = Buffer.from(m.buffer);
  b[0] = WorkerMessageType.Persisted;
  b.writeUInt32LE(p.seq, 1);
  b.writeDoubleLE(checkU53(p.index), 5);
  b.writeDoubleLE(checkU53(p.term), 13);
  return m;
}

export function decodePersisted(data: Uint8Array): PersistedMessage {
  const r = new PackReader(data);
  assert(r.u8() === WorkerMessageType.Persisted, 'not a Persisted');
  const p = { seq: r.u32(), index: r.u53(), term: r.u53() };
  assert(r.done(), 'Persisted has trailing bytes');
  return p;
}

// ---- Ready entries ----

export function encodeEntries(entries: readonly Entry[]): Uint8Array {
  const w = new PackWriter(64 * 1024);
  w.u32(entries.length);
  for (const e of entries) w.entry(e);
  return w.finish();
}

export function decodeEntries(data: Uint8Array): Entry[] {
  const r = new PackReader(data);
  const out: Entry[] = [];
  for (let n = r.u32(); n > 0; n--) out.push(r.entry());
  assert(r.done(), 'entries have trailing bytes');
  return out;
}

const emptyBytes = new Uint8Array(0);

function checkU53(v: number): number {
  assert(Number.isSafeInteger(v), 'u53 value');
  return v;
}
