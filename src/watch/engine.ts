// The watch engine (etcd: mvcc/watchable_store.go, watcher_group.go, etcdserver/api/v3rpc/
// watch.go): watch streams, their watchers, and which events each must get.
//
// A watcher is either
//   synced:   it has every event up to the replica's revision; new revisions from the event ring
//             are matched against the synced WatcherIndex and sent at once;
//   unsynced: it needs history from `nextRev` (a past start revision, or it fell behind because
//             its stream had too many bytes unsent: etcd's victims). syncUnsynced() reads the
//             history from the replica (LMDB + window) and sends it, at most batchRevsMax
//             revisions per response as etcd does, and the watcher is synced again once it has
//             reached the replica's revision.
// So a slow stream never holds up the ring or other streams: its watchers just fall back to
// history, and the bytes queued for a stream are bounded by streamBytesMax plus one response.
//
// Pure logic, no threads and no timers: watch_worker.ts feeds it ring records, control requests
// and acknowledgements, and ships what it sends (`send(streamId, bytes)`).
import type { RangeEnd } from '../mvcc/index';
import type { EventChange } from './events';
import { FrameBuffer, OutEvent, ResponseFields, WatchId, WatchResponseEncoder } from './encode';
import type { MvccReplica } from './replica';
import { WatcherIndex } from './watcher_index';
import { assert } from '../util/assert';
import { varintSize } from '../util/protobuf_wire';

/** etcd watchBatchMaxRevs: a history response carries events of at most this many revisions. */
export const watchBatchRevsMax = 1000;

export const errDuplicateWatchId = 'mvcc: duplicate watch ID provided on the WatchStream';
export const errEmptyWatcherRange = 'mvcc: watcher range is empty';

export interface WatchEngineOptions {
  /** --max-request-bytes: fragmenting watchers get responses split below this size. */
  fragmentBytesMax: number;
  /** Bytes sent to a stream and not yet written out, beyond which its watchers fall behind. */
  streamBytesMax: number;
  /** Revisions read from history per sync round. */
  historyRevsPerRound: number;
  /** The compaction revision as the storage worker published it at apply (shared memory). */
  compactRevNow: () => number;
}

export interface CreateRequest {
  watchId: WatchId; // 0 = the server picks (etcd AutoWatchID)
  key: string; // latin1
  end: RangeEnd;
  /** First revision wanted (etcd: start_revision, or current + 1 when it was 0). */
  startRev: number;
  prevKv: boolean;
  progressNotify: boolean;
  fragment: boolean;
  noPut: boolean;
  noDelete: boolean;
}

interface Watcher {
  readonly uid: number;
  readonly stream: Stream;
  readonly id: WatchId;
  readonly key: string;
  readonly end: RangeEnd;
  nextRev: number;
  readonly prevKv: boolean;
  readonly progressNotify: boolean;
  readonly fragment: boolean;
  readonly noPut: boolean;
  readonly noDelete: boolean;
  synced: boolean;
  /** etcd sws.progress[id]: no events were sent since the last progress tick. */
  progressDue: boolean;
  // scratch state of one delivery round
  batch: EventChange[] | null;
  batchRevs: number[] | null;
  batchRevCount: number;
  lastBatchRev: number;
  moreRev: number;
  inRound: boolean;
}

interface Stream {
  readonly id: number;
  readonly watchers: Map<WatchId, Watcher>;
  nextWatchId: number;
  /** Bytes handed to the main thread and not yet written to the client. */
  outstanding: number;
  unsynced: number;
  /** A progress request waits until the replica reaches this revision and all are synced. */
  progressTarget: number;
}

export class WatchEngine {
  private readonly replica: MvccReplica;
  private readonly encoder: WatchResponseEncoder;
  /** Where a stream's responses of this turn are framed (the worker ships them per turn). */
  private readonly outputFor: (streamId: number) => FrameBuffer;
  private readonly options: WatchEngineOptions;
  private readonly streams = new Map<number, Stream>();
  private readonly synced = new WatcherIndex<Watcher>(1);
  private readonly unsynced = new WatcherIndex<Watcher>(2);
  private readonly unsyncedSet = new Set<Watcher>();
  private nextUid = 1;
  private readonly touched: Watcher[] = [];
  private readonly outScratch: OutEvent[] = [];
  /** Per revision, the shared events part per option variant (prev_kv, NOPUT, NODELETE). */
  private readonly sharedSegments: ({ bytes: Buffer; count: number } | null)[] = new Array(8).fill(null);
  /** Counters for /metrics and tests. */
  eventsSent = 0;
  responsesSent = 0;
  victims = 0;

  constructor(replica: MvccReplica, encoder: WatchResponseEncoder,
    outputFor: (streamId: number) => FrameBuffer, options: WatchEngineOptions) {
    this.replica = replica;
    this.encoder = encoder;
    this.outputFor = outputFor;
    this.options = options;
  }

  get watcherCount(): number {
    return this.synced.size + this.unsynced.size;
  }

  get unsyncedCount(): number {
    return this.unsyncedSet.size;
  }

  /** True when a sync round has work it can do now. */
  get needsSync(): boolean {
    for (const w of this.unsyncedSet) if (w.stream.outstanding <= this.options.streamBytesMax) return true;
    return false;
  }

  openStream(id: number): void {
    assert(!this.streams.has(id), 'stream opened twice');
    this.streams.set(id, { id, watchers: new Map(), nextWatchId: 0, outstanding: 0, unsynced: 0, progressTarget: -1 });
  }

  closeStream(id: number): void {
    const s = this.streams.get(id);
    if (s === undefined) return;
    for (const w of s.watchers.values()) this.detach(w);
    this.streams.delete(id);
  }

  /** The client wrote `bytes` of this stream's responses out: they no longer count against it. */
  ack(id: number, bytes: number): void {
    const s = this.streams.get(id);
    if (s === undefined) return;
    s.outstanding -= bytes;
    if (s.outstanding < 0) s.outstanding = 0;
  }

  /**
   * etcd v3rpc recvLoop, CreateRequest. `storeRev` is the revision applied when the request
   * arrived: the created response's header, and start_revision 0 became storeRev + 1.
   */
  create(streamId: number, req: CreateRequest, storeRev: number): void {
    const s = this.streams.get(streamId);
    if (s === undefined) return;
    const rev = storeRev;
    if (req.end !== null && req.end !== '' && req.key >= req.end) {
      this.reply(s, { revision: rev, watchId: -1, created: true, canceled: true, cancelReason: errEmptyWatcherRange });
      return;
    }
    let id = req.watchId;
    if (id === 0) {
      while (s.watchers.has(s.nextWatchId)) s.nextWatchId++;
      id = s.nextWatchId++;
    } else if (s.watchers.has(id)) {
      this.reply(s, { revision: rev, watchId: -1, created: true, canceled: true, cancelReason: errDuplicateWatchId });
      return;
    }
    const w: Watcher = {
      uid: this.nextUid++, stream: s, id, key: req.key, end: req.end, nextRev: req.startRev,
      prevKv: req.prevKv, progressNotify: req.progressNotify, fragment: req.fragment,
      noPut: req.noPut, noDelete: req.noDelete, synced: false, progressDue: true,
      batch: null, batchRevs: null, batchRevCount: 0, lastBatchRev: 0, moreRev: 0, inRound: false,
    };
    s.watchers.set(id, w);
    this.reply(s, { revision: rev, watchId: id, created: true });
    // etcd: a start revision in the future (or now) is synced at once; a past one needs history.
    if (w.nextRev > this.replica.rev) this.makeSynced(w);
    else this.makeUnsynced(w);
  }

  /** etcd: a cancel of an existing watcher is answered; of an unknown id, not. */
  cancel(streamId: number, watchId: WatchId, storeRev: number): void {
    const s = this.streams.get(streamId);
    if (s === undefined) return;
    const w = s.watchers.get(watchId);
    if (w === undefined) return;
    this.detach(w);
    s.watchers.delete(watchId);
    this.reply(s, { revision: Math.max(storeRev, this.replica.rev), watchId, canceled: true });
  }

  /**
   * WatchProgressRequest: answered (watch_id -1) once every watcher of the stream has all events
   * up to `storeRev` (etcd 3.5's rule; 3.4 answers at once even when watchers lag).
   */
  requestProgress(streamId: number, storeRev: number): void {
    const s = this.streams.get(streamId);
    if (s === undefined) return;
    s.progressTarget = Math.max(s.progressTarget, storeRev);
    this.answerProgress(s);
  }

  private answerProgress(s: Stream): void {
    if (s.progressTarget < 0 || s.unsynced > 0 || this.replica.rev < s.progressTarget) return;
    s.progressTarget = -1;
    this.reply(s, { revision: this.replica.rev, watchId: -1 });
  }

  /** The periodic progress notification (--experimental-watch-progress-notify-interval). */
  progressTick(): void {
    for (const s of this.streams.values()) {
      for (const w of s.watchers.values()) {
        if (!w.progressNotify) continue;
        if (w.progressDue && w.synced) this.reply(s, { revision: this.replica.rev, watchId: w.id });
        w.progressDue = true;
      }
    }
  }

  // ---- the event ring ----

  /** A new revision from the ring: into the replica, then to the synced watchers it concerns. */
  onRevision(rev: number, changes: EventChange[]): void {
    this.replica.applyRevision(rev, changes);
    if (this.synced.size === 0) return;
    const touched = this.touched;
    for (const c of changes) {
      this.synced.visit(c.key, (w) => {
        if (w.nextRev > rev) return;
        if (w.batch === null) {
          w.batch = [];
          touched.push(w);
        }
        w.batch.push(c);
      });
    }
    const shared = this.sharedSegments;
    for (const w of touched) {
      const batch = w.batch!;
      w.batch = null;
      if (w.stream.outstanding > this.options.streamBytesMax) {
        // Too much unsent on this stream: the watcher falls back to history (etcd's victim).
        this.victims++;
        w.nextRev = rev;
        this.moveToUnsynced(w);
        continue;
      }
      w.nextRev = rev + 1;
      if (batch.length !== changes.length || w.fragment) {
        this.sendEvents(w, batch, null, rev);
        continue;
      }
      // The watcher gets the whole revision: the events part is the same for every watcher
      // with the same options, encoded once per revision (the common fan-out case).
      const variant = (w.prevKv ? 1 : 0) | (w.noPut ? 2 : 0) | (w.noDelete ? 4 : 0);
      let seg = shared[variant];
      if (seg === null) {
        seg = this.segmentFor(w, changes, rev);
        shared[variant] = seg;
      }
      if (seg.count === 0) continue; // etcd: all filtered out, nothing is sent
      w.progressDue = false;
      this.eventsSent += seg.count;
      this.sent(w.stream, this.encoder.frameWithEvents(this.outputFor(w.stream.id), { revision: rev, watchId: w.id }, seg.bytes));
    }
    touched.length = 0;
    shared.fill(null);
  }

  /** Events of one whole revision as `w`'s options want them, encoded once. */
  private segmentFor(w: Watcher, changes: EventChange[], rev: number): { bytes: Buffer; count: number } {
    const out = this.outScratch;
    out.length = 0;
    for (const c of changes) {
      if (c.tombstone ? w.noDelete : w.noPut) continue;
      out.push({ kv: c.kv, tombstone: c.tombstone, prevKv: w.prevKv ? this.replica.valueAt(c.key, rev - 1) : null });
    }
    const seg = { bytes: this.encoder.eventsSegment(out), count: out.length };
    out.length = 0;
    return seg;
  }

  onCompact(at: number): void {
    this.replica.compact(at);
  }

  /** Answers progress requests that could not be answered when they came. */
  afterRecords(): void {
    for (const s of this.streams.values()) if (s.progressTarget >= 0) this.answerProgress(s);
  }

  /**
   * The ring lost records: every synced watcher may have missed events after the replica's
   * revision, so all go back to history from there (the replica is caught up from LMDB next).
   */
  onGap(): void {
    const rev = this.replica.rev;
    const all: Watcher[] = [];
    this.synced.visitAll((w) => all.push(w));
    for (const w of all) {
      if (w.nextRev <= rev) w.nextRev = rev + 1;
      this.moveToUnsynced(w);
    }
  }

  /**
   * A raft snapshot replaced the store (etcd watchableStore.Restore, which moves every synced
   * watcher to unsynced): every watcher catches up from the new store from where it was, and
   * one whose next revision the new store has compacted is cancelled with compact_revision by
   * the next syncUnsynced (etcd chooseAll). Call before the replica is rebuilt: its revision is
   * still the one the synced watchers have every event up to.
   */
  onRestore(): void {
    this.onGap();
  }

  // ---- history ----

  /**
   * One round of catching up unsynced watchers (etcd syncWatchers): cancels those behind the
   * compaction, reads history once for all the others, sends each its events. Returns true when
   * more rounds are needed.
   */
  syncUnsynced(): boolean {
    if (this.unsyncedSet.size === 0) return false;
    this.replica.beginRead();
    const compactRev = Math.max(this.replica.compactRev, this.options.compactRevNow());
    const curRev = this.replica.rev;
    const round: Watcher[] = [];
    let minRev = Infinity;
    for (const w of [...this.unsyncedSet]) {
      if (w.stream.outstanding > this.options.streamBytesMax) continue;
      // compactRev is -1 when never compacted: etcd cancels a start below -1 all the same.
      if (w.nextRev < compactRev) {
        // etcd: the watcher is cancelled with the compaction revision and never sees events.
        this.detach(w);
        w.stream.watchers.delete(w.id);
        this.reply(w.stream, { revision: 0, watchId: w.id, canceled: true, compactRevision: compactRev });
        continue;
      }
      if (w.nextRev > curRev) {
        this.makeSynced(w);
        continue;
      }
      w.inRound = true;
      w.batch = [];
      w.batchRevs = [];
      w.batchRevCount = 0;
      w.lastBatchRev = 0;
      w.moreRev = 0;
      round.push(w);
      if (w.nextRev < minRev) minRev = w.nextRev;
    }
    if (round.length > 0) {
      const to = Math.min(curRev, minRev + this.options.historyRevsPerRound - 1);
      this.replica.history(minRev, to, (rev, change) => {
        this.unsynced.visit(change.key, (w) => {
          if (!w.inRound || rev < w.nextRev || w.moreRev !== 0) return;
          if (rev !== w.lastBatchRev) {
            if (w.batchRevCount === watchBatchRevsMax) {
              w.moreRev = rev;
              return;
            }
            w.batchRevCount++;
            w.lastBatchRev = rev;
          }
          w.batch!.push(change);
          w.batchRevs!.push(rev);
        });
      });
      for (const w of round) {
        w.inRound = false;
        const batch = w.batch!;
        const revs = w.batchRevs!;
        w.batch = null;
        w.batchRevs = null;
        if (batch.length > 0) this.sendEvents(w, batch, revs, curRev);
        // A watcher whose start lies beyond `to` keeps it (nothing of its range was sent).
        w.nextRev = w.moreRev !== 0 ? w.moreRev : Math.max(w.nextRev, to + 1);
        if (w.nextRev > curRev) this.makeSynced(w);
      }
    }
    for (const s of this.streams.values()) if (s.progressTarget >= 0) this.answerProgress(s);
    return this.needsSync;
  }

  // ---- sending ----

  /**
   * Sends `changes` (all of one revision `revs === null`, else revs[i] is change i's) to `w`,
   * filtered, with prev_kv when asked, fragmented when asked and needed. `headerRev` goes in the
   * header (etcd: the revision of the notification, or the store revision for history).
   */
  private sendEvents(w: Watcher, changes: EventChange[], revs: number[] | null, headerRev: number): void {
    const out = this.outScratch;
    out.length = 0;
    for (let i = 0; i < changes.length; i++) {
      const c = changes[i]!;
      if (c.tombstone ? w.noDelete : w.noPut) continue;
      let prevKv: Uint8Array | null = null;
      if (w.prevKv) {
        const rev = revs === null ? headerRev : revs[i]!;
        prevKv = this.replica.valueAt(c.key, rev - 1);
      }
      out.push({ kv: c.kv, tombstone: c.tombstone, prevKv });
    }
    if (out.length === 0) return; // etcd: all filtered out, nothing is sent
    w.progressDue = false;
    this.eventsSent += out.length;
    const f: ResponseFields = { revision: headerRev, watchId: w.id };
    const max = this.options.fragmentBytesMax;
    if (!w.fragment || out.length < 2 || this.encoder.size(f, out) < max) {
      this.sent(w.stream, this.encoder.frame(this.outputFor(w.stream.id), f, out));
      return;
    }
    // etcd sendFragments: as many events as stay under the limit (at least one) per response;
    // fragment is set on all but the last.
    let from = 0;
    while (from < out.length) {
      let to = from + 1;
      let size = this.encoder.size(f, out, from, to);
      while (to < out.length) {
        const s = WatchResponseEncoder.eventSize(out[to]!);
        const next = size + 1 + varintSize(s) + s;
        if (next >= max) break;
        size = next;
        to++;
      }
      const last = to === out.length;
      this.sent(w.stream, this.encoder.frame(this.outputFor(w.stream.id), { ...f, fragment: !last }, out, from, to));
      from = to;
    }
    out.length = 0;
  }

  private reply(s: Stream, f: ResponseFields): void {
    this.sent(s, this.encoder.frame(this.outputFor(s.id), f, this.outScratch, 0, 0));
  }

  /** Accounts a framed response of `bytes` to its stream (its bound: streamBytesMax). */
  private sent(s: Stream, bytes: number): void {
    s.outstanding += bytes;
    this.responsesSent++;
  }

  // ---- groups ----

  private makeSynced(w: Watcher): void {
    if (!w.synced) {
      if (this.unsyncedSet.delete(w)) {
        this.unsynced.remove(w.uid);
        w.stream.unsynced--;
      }
      w.synced = true;
      this.synced.add(w.uid, w.key, w.end, w);
    }
  }

  private makeUnsynced(w: Watcher): void {
    assert(!w.synced && !this.unsyncedSet.has(w), 'new watcher is in no group');
    this.unsyncedSet.add(w);
    this.unsynced.add(w.uid, w.key, w.end, w);
    w.stream.unsynced++;
  }

  private moveToUnsynced(w: Watcher): void {
    if (!w.synced) return;
    this.synced.remove(w.uid);
    w.synced = false;
    this.makeUnsynced(w);
  }

  private detach(w: Watcher): void {
    if (w.synced) {
      this.synced.remove(w.uid);
      w.synced = false;
    } else if (this.unsyncedSet.delete(w)) {
      this.unsynced.remove(w.uid);
      w.stream.unsynced--;
    }
  }
}
