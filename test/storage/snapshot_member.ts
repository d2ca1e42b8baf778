// A storage core on real files (LMDB, node:fs, real timers) in a temp dir, driven the way the
// server's driver drives the storage worker, for the raft snapshot tests (test/storage/
// raft_snapshot.test.ts, test/watch/snapshot_restore.test.ts): batches that append and apply
// entries, reads, snapshot create/stage/release, installs, simulated crashes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Long from 'long';

import { concordpb, etcdserverpb } from '../../src/gen/proto';
import { encodeConfChange } from '../../src/raft/confchange';
import { ConfChangeType, EntryType, type Entry, type HardState } from '../../src/raft/types';
import { encodeMemberContext, raftIdOf } from '../../src/membership/membership';
import { nodeFileIo } from '../../src/storage/file_io';
import { realTimers } from '../../src/util/timers';
import { InstallStep, StorageCore } from '../../src/workers/storage_core';
import {
  AppliedHeader, BatchSnapshot, decodeApplied, decodeEntries, decodePersisted, encodeBatch, PackWriter, ReadKind,
  HashDone, ReadRequest, SnapshotAnswer, SnapshotCreated, SnapshotStaged, WorkerInit, WorkerMessageType, WorkerReady,
} from '../../src/workers/protocol';
import { newStatsBuffer } from '../../src/workers/stats';
import { newRingBuffer } from '../../src/watch/ring';

export const clusterIdDec = '8123456789012345678';
export const memberA = Long.fromString('1111111111111111111', true);
export const memberB = Long.fromString('2222222222222222222', true);

export function tempDir(name: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `concord-${name}-`));
}

export interface MemberOptions {
  clusterId?: string;
  memberId?: Long;
  crashAt?: InstallStep;
  /** The event ring (a watch worker may be reading it). */
  ring?: SharedArrayBuffer;
  compactRev?: SharedArrayBuffer;
}

let nextProposal = 1;

/** One entry of the log (member_id 0: every member answers it, so answers compare). */
export function entry(index: number, term: number, req: concordpb.InternalRequest.$Properties): Entry {
  req.id = nextProposal++;
  return { index, term, type: EntryType.Normal, data: concordpb.InternalRequest.encode(req).finish() };
}

export function addMember(index: number, term: number, id: Long, url: string): Entry {
  return {
    index, term, type: EntryType.ConfChange,
    data: encodeConfChange({
      id: 0, type: ConfChangeType.AddNode, nodeId: raftIdOf(id),
      context: encodeMemberContext({ id, peerUrls: [url], isLearner: false }),
    }),
  };
}

export const put = (key: string, value: string, lease = 0): concordpb.InternalRequest.$Properties =>
  ({ put: { key: Buffer.from(key), value: Buffer.from(value), lease } });
export const del = (key: string): concordpb.InternalRequest.$Properties => ({ delete_range: { key: Buffer.from(key) } });

export class Member {
  readonly core: StorageCore;
  readonly ready: WorkerReady;
  readonly persisted: { seq: number; index: number; term: number }[] = [];
  readonly results = new Map<number, { code: number; response: Uint8Array }>();
  readonly reads = new Map<number, { code: number; response: Uint8Array }>();
  readonly applied: AppliedHeader[] = [];
  readonly answers = new Map<number, SnapshotAnswer>();
  readonly hashes = new Map<number, HashDone>();
  readonly ring: SharedArrayBuffer;
  readonly compactRev: SharedArrayBuffer;
  fatal: string | null = null;
  crashed: InstallStep | null = null;
  appliedIndex = 0;
  currentRev = 0;
  private readonly w = new PackWriter(1024);
  private seq = 0;
  private nextRead = 1;
  private nextRequest = 1;

  constructor(readonly dataDir: string, readonly options: MemberOptions = {}) {
    this.ring = options.ring ?? newRingBuffer(1 << 20);
    this.compactRev = options.compactRev ?? new SharedArrayBuffer(8);
    const init: WorkerInit = {
      type: WorkerMessageType.Init, dataDir, mapSizeBytes: 1 << 30, walSegmentBytes: 256 * 1024,
      statsBuffer: newStatsBuffer(), watchEventRing: this.ring, watchCompactRev: this.compactRev,
      leaseTtlMin: 5, unsafeNoFsync: false,
      newClusterId: options.clusterId ?? clusterIdDec,
      newMemberId: (options.memberId ?? memberA).toString(),
    };
    this.core = new StorageCore(init, {
      io: nodeFileIo, timers: realTimers, backendBatchIntervalMs: 5,
      post: (m) => this.onPost(m),
      alarm: () => undefined,
      fatal: (message) => {
        this.fatal = message;
      },
      snapshotAnswer: (a: SnapshotCreated | SnapshotStaged) => this.answers.set(a.requestId, a),
      hashAnswer: (a: HashDone) => this.hashes.set(a.requestId, a),
      installCrashPoint: (step) => {
        if (step !== options.crashAt) return false;
        this.crashed = step;
        return true;
      },
    });
    this.ready = this.core.ready();
    this.appliedIndex = this.ready.appliedIndex;
    this.currentRev = this.ready.currentRev;
  }

  private onPost(m: Uint8Array): void {
    if (this.fatal !== null) throw new Error(`posted after the fatal error: ${this.fatal}`);
    if (m[0] === WorkerMessageType.Persisted) {
      this.persisted.push(decodePersisted(m));
      return;
    }
    const h = decodeApplied(m, {
      result: (id, code, response) => this.results.set(id, { code, response: Uint8Array.from(response) }),
      read: (id, code, response) => this.reads.set(id, { code, response: Uint8Array.from(response) }),
      leaseChange: () => undefined,
    });
    if (h.membership !== null) h.membership = Uint8Array.from(h.membership);
    this.applied.push(h);
    this.appliedIndex = h.appliedIndex;
    this.currentRev = h.currentRev;
  }

  /** Sends one Batch; returns its seq (0 for one that writes nothing). */
  batch(b: { hardState?: HardState | null; append?: Entry[]; apply?: Entry[]; reads?: ReadRequest[];
    snapshot?: BatchSnapshot | null; mustSync?: boolean }): number {
    const append = b.append ?? [];
    const hs = b.hardState ?? null;
    const writes = append.length > 0 || hs !== null || (b.snapshot ?? null) !== null;
    const seq = writes ? ++this.seq : 0;
    this.core.batch(encodeBatch(this.w, {
      seq, hardState: hs, mustSync: b.mustSync ?? (append.length > 0 || (b.snapshot ?? null) !== null),
      raftTerm: hs?.term ?? 1, append, apply: b.apply ?? [], reads: b.reads ?? [], snapshot: b.snapshot ?? null,
    }));
    return seq;
  }

  /** Appends and commits `entries` (a lone voter would), then waits until they are applied. */
  async commit(entries: Entry[], vote = 0): Promise<void> {
    const last = entries[entries.length - 1]!;
    this.batch({ hardState: { term: last.term, vote, commit: last.index }, append: entries, apply: entries });
    await this.until(() => this.appliedIndex >= last.index, `applied ${last.index}`);
  }

  /**
   * After a restart: applies the committed entries the WAL replayed beyond the state's applied
   * index, as the driver hands them out again.
   */
  async replayCommitted(): Promise<void> {
    const es = decodeEntries(this.ready.entries).filter((e) => e.index > this.ready.appliedIndex && e.index <= this.ready.hardState.commit);
    if (es.length === 0) return;
    this.batch({ apply: es });
    await this.until(() => this.appliedIndex >= es[es.length - 1]!.index, 'replayed entries applied');
  }

  /** Waits until every proposal of `es` was answered (physical compactions answer late). */
  async answered(es: Entry[]): Promise<void> {
    const ids = es.filter((e) => e.type === EntryType.Normal).map((e) => Long.fromValue(concordpb.InternalRequest.decode(e.data).id as Long).toNumber());
    await this.until(() => ids.every((id) => this.results.has(id)), 'answers');
  }

  async read(kind: ReadKind, request: Uint8Array): Promise<{ code: number; response: Uint8Array }> {
    const id = this.nextRead++;
    this.batch({ reads: [{ id, kind, linearizable: false, request }] });
    await this.until(() => this.reads.has(id), `read ${id}`);
    return this.reads.get(id)!;
  }

  async range(rev = 0, key = '\0', end = '\0'): Promise<{ code: number; resp: etcdserverpb.RangeResponse | null }> {
    const r = await this.read(ReadKind.Range, etcdserverpb.RangeRequest.encode({
      key: Buffer.from(key, 'latin1'), range_end: Buffer.from(end, 'latin1'), revision: rev,
    }).finish());
    return { code: r.code, resp: r.code === 0 ? etcdserverpb.RangeResponse.decode(r.response) : null };
  }

  async timeToLive(id: number): Promise<{ code: number; resp: etcdserverpb.LeaseTimeToLiveResponse | null }> {
    const r = await this.read(ReadKind.LeaseTimeToLive, etcdserverpb.LeaseTimeToLiveRequest.encode({ ID: id, keys: true }).finish());
    return { code: r.code, resp: r.code === 0 ? etcdserverpb.LeaseTimeToLiveResponse.decode(r.response) : null };
  }

  async create(minIndex: number): Promise<SnapshotAnswer> {
    const requestId = this.nextRequest++;
    this.core.snapshotCreate({ type: WorkerMessageType.SnapshotCreate, requestId, minIndex });
    await this.until(() => this.answers.has(requestId), 'snapshot created');
    return this.answers.get(requestId)!;
  }

  async stage(file: string): Promise<SnapshotAnswer> {
    const requestId = this.nextRequest++;
    this.core.snapshotStage({ type: WorkerMessageType.SnapshotStage, requestId, file });
    await this.until(() => this.answers.has(requestId), 'snapshot staged');
    return this.answers.get(requestId)!;
  }

  /** Sends a Hash/HashKV request; await hashDone(id) for its answer. */
  hashRequest(kind: 'hash' | 'hashkv', rev = 0): number {
    const requestId = this.nextRequest++;
    this.core.hash({ type: WorkerMessageType.Hash, requestId, kind, rev });
    return requestId;
  }

  async hashDone(requestId: number): Promise<HashDone> {
    await this.until(() => this.hashes.has(requestId), 'hash answered');
    return this.hashes.get(requestId)!;
  }

  release(file: string): void {
    this.core.snapshotRelease({ type: WorkerMessageType.SnapshotRelease, file });
  }

  /** The install batch (raft's PersistBatch.snapshot with its hard state). */
  install(index: number, term: number): number {
    return this.batch({ snapshot: { index, term }, hardState: { term, vote: 0, commit: index } });
  }

  /** Polls (no sleeping: one event-loop turn at a time) until `cond`, or fails after 20 s. */
  async until(cond: () => boolean, what: string): Promise<void> {
    const deadline = performance.now() + 20_000;
    while (!cond()) {
      if (this.fatal !== null) throw new Error(`fatal while waiting for ${what}: ${this.fatal}`);
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setImmediate(r));
    }
  }

  async close(): Promise<void> {
    await this.core.close();
  }
}
