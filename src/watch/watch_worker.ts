// The watch worker thread: follows the storage worker's event ring into an MVCC replica
// (replica.ts), runs the watch engine (engine.ts) and sends the encoded responses to the main
// thread, one message per turn.
//
// Ring records are processed in order. Each carries a sequence number; a jump means the ring
// was full and records were dropped (the storage worker never waits for us). Then every synced
// watcher falls back to history, and the replica is caught up from LMDB once LMDB has committed
// the dropped revisions (at most one backend batch interval later); until then the records read
// after the gap wait here.
//
// A Replaced record (a raft snapshot install on the storage worker) reopens the replica on the
// new store and sends every watcher back to history from where it was (engine.onRestore). A
// Replaced record lost in a gap is found by the generation in the shared slots (KvEnvSlots).
import { parentPort } from 'node:worker_threads';
import { setProtoDepthMax } from '../util/proto_depth';
import { protoDepthMax } from '../config/limits';
import { decodeEventRecord, EventRecord, KvEnvSlots, RecordKind } from './events';
import { RingConsumer } from './ring';
import { MvccReplica } from './replica';
import { WatchEngine } from './engine';
import { FrameBuffer, WatchId, WatchResponseEncoder } from './encode';
import {
  ControlVisitor, CreateFlag, EndKind, FromWatchWorker, OutputWriter, readControl, ToWatchWorker,
  WatchStat, WatchWorkerInit,
} from './protocol';
import type { RangeEnd } from '../mvcc/index';

setProtoDepthMax(protoDepthMax);

/** How often the replica retries catching up from LMDB after a gap. */
const resyncRetryMs = 20;

class WatchWorker {
  private readonly ring: RingConsumer;
  private readonly replica: MvccReplica;
  private readonly encoder: WatchResponseEncoder;
  private readonly engine: WatchEngine;
  /** Hands each op of a Control message to the engine. */
  private readonly controlHandler: ControlHandler;
  private readonly out: OutputWriter;
  /** Responses of this turn per stream, sent framed in one piece each (protocol.ts Output). */
  private readonly outByStream: Map<number, FrameBuffer>;
  private expectedSeq: number;
  /** Records read but not processed because of a gap, oldest first. */
  private stash: EventRecord[];
  private inGap: boolean;
  private gaps: number;
  private syncScheduled: boolean;
  private closed: boolean;
  private readonly timers: NodeJS.Timeout[];
  private readonly stats: Float64Array;

  constructor(init: WatchWorkerInit) {
    this.ring = new RingConsumer(init.eventRing);
    this.replica = new MvccReplica(init.kvPath, init.mapSizeBytes, new KvEnvSlots(init.eventRing));
    this.replica.restore();
    const compactView = new BigInt64Array(init.compactRev);
    this.encoder = new WatchResponseEncoder(init.clusterId, init.memberId, init.raftTerm);
    this.out = new OutputWriter(64 * 1024);
    this.outByStream = new Map();
    this.engine = new WatchEngine(this.replica, this.encoder, (streamId) => {
      let out = this.outByStream.get(streamId);
      if (out === undefined) {
        out = new FrameBuffer();
        this.outByStream.set(streamId, out);
      }
      return out;
    }, {
      fragmentBytesMax: init.fragmentBytesMax,
      streamBytesMax: init.streamBytesMax,
      historyRevsPerRound: 10_000,
      compactRevNow: () => Number(Atomics.load(compactView, 0)),
    });
    this.controlHandler = new ControlHandler(this.engine, this.encoder);
    this.expectedSeq = 0;
    this.stash = [];
    this.inGap = false;
    this.gaps = 0;
    this.syncScheduled = false;
    this.closed = false;
    this.timers = [
      setInterval(() => this.guard(() => this.engine.progressTick()), init.progressNotifyIntervalMs),
    ];
    this.stats = new Float64Array(init.stats);
  }

  get rev(): number {
    return this.replica.rev;
  }

  async pump(): Promise<void> {
    while (!this.closed) {
      if (!this.inGap) this.guard(() => this.drain());
      await this.ring.waitAsync(this.inGap ? resyncRetryMs : 1000);
      if (this.inGap) this.guard(() => this.resync());
    }
  }

  /** Runs `fn` and sends what it produced; a thrown error stops the process (a bug). */
  private guard(fn: () => void): void {
    try {
      fn();
      this.afterWork();
    } catch (err) {
      post({ type: 'fatal', message: (err as Error).stack ?? String(err) });
    }
  }

  private drain(): void {
    const records: EventRecord[] = [];
    this.ring.readAll((view) => records.push(decodeEventRecord(view)));
    this.process(records);
  }

  private process(records: EventRecord[]): void {
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      if (r.seq !== this.expectedSeq || (r.kind === RecordKind.Revision && r.rev > this.replica.rev + 1)) {
        this.enterGap(records.slice(i));
        return;
      }
      this.expectedSeq = (r.seq + 1) >>> 0;
      this.apply(r);
    }
  }

  private apply(r: EventRecord): void {
    switch (r.kind) {
      case RecordKind.Revision:
        if (r.rev <= this.replica.rev) return; // already read from LMDB
        this.engine.onRevision(r.rev, r.changes);
        return;
      case RecordKind.Compact:
        if (r.compactRev > this.replica.compactRev) this.engine.onCompact(r.compactRev);
        return;
      case RecordKind.Committed:
        this.replica.markCommitted(Math.min(r.rev, this.replica.rev));
        return;
      case RecordKind.Replaced:
        // Already reopened on this generation or a later one (after a gap): nothing to do.
        if (r.generation > this.replica.generation || this.replica.stale) this.restoreReplica();
        return;
      case RecordKind.Reopened:
        // Before any Committed record of the new file is acted on (ring order).
        if (r.generation > this.replica.generation) this.reopenReplica();
        return;
    }
  }

  /** The file changed (a defragmentation), and maybe the state too (an install after it). */
  private reopenReplica(): void {
    if (this.replica.contentsStale) this.restoreReplica();
    else this.replica.reopenFile();
  }

  /** The store was replaced: watchers go back to history, the replica reads the new store. */
  private restoreReplica(): void {
    this.engine.onRestore();
    this.replica.reopen();
  }

  private enterGap(rest: EventRecord[]): void {
    if (!this.inGap) {
      this.inGap = true;
      this.gaps++;
      this.engine.onGap();
    }
    this.stash.push(...rest);
  }

  /** Catches the replica up from LMDB; leaves the gap once the stash continues from there. */
  private resync(): void {
    // Read what arrived meanwhile too (the ring must keep moving for the producer).
    this.ring.readAll((view) => this.stash.push(decodeEventRecord(view)));
    // Watchers created since the gap began count as synced at the replica's revision, which is
    // about to jump: they go back to history too.
    this.engine.onGap();
    if (this.replica.stale) this.reopenReplica(); // the gap hid a Replaced or Reopened record
    const committed = this.replica.resyncFromLmdb();
    const first = this.stash.findIndex((r) => r.kind === RecordKind.Revision && r.rev > committed);
    if (first >= 0 && (this.stash[first] as { rev: number }).rev > committed + 1) return; // still missing
    const stash = this.stash;
    this.stash = [];
    this.inGap = false;
    if (stash.length > 0) this.expectedSeq = stash[0]!.seq;
    this.process(stash);
  }

  private afterWork(): void {
    // Only when some unsynced watcher can take bytes now: a stream that does not read must not
    // keep this thread spinning.
    if (!this.syncScheduled && !this.inGap && this.engine.needsSync) {
      this.syncScheduled = true;
      setImmediate(() => {
        this.syncScheduled = false;
        this.guard(() => {
          if (!this.inGap) this.engine.syncUnsynced();
        });
      });
    }
    this.engine.afterRecords();
    this.flushOut();
    this.updateStats();
  }

  private flushOut(): void {
    if (this.outByStream.size === 0) return;
    for (const [streamId, frames] of this.outByStream) {
      this.out.stream(streamId, frames.count, frames.buf.subarray(0, frames.pos));
    }
    this.outByStream.clear();
    post(this.out.finish());
  }

  onControl(data: Uint8Array): void {
    this.guard(() => this.control(data));
  }

  private control(data: Uint8Array): void {
    readControl(data, this.controlHandler);
    // Requests are answered after the records already in the ring (a create at storeRev must
    // see the replica reach it before its history is read).
    if (!this.inGap) this.drain();
  }

  private updateStats(): void {
    const e = this.engine;
    const s = this.stats;
    s[WatchStat.Watchers] = e.watcherCount;
    s[WatchStat.Unsynced] = e.unsyncedCount;
    s[WatchStat.EventsSent] = e.eventsSent;
    s[WatchStat.ResponsesSent] = e.responsesSent;
    s[WatchStat.Victims] = e.victims;
    s[WatchStat.RingGaps] = this.gaps;
    s[WatchStat.WindowRevisions] = this.replica.windowRevisions;
    s[WatchStat.ReplicaRev] = this.replica.rev;
    s[WatchStat.RingOccupancy] = this.ring.occupancy;
    s[WatchStat.BusyMs] = performance.eventLoopUtilization().active;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    await this.replica.close();
  }
}

/** The watch engine's side of a Control message (watch/protocol.ts): one call per op. */
class ControlHandler implements ControlVisitor {
  private readonly engine: WatchEngine;
  private readonly encoder: WatchResponseEncoder;
  /** The revision applied when the main thread sent this message (progress, cancel). */
  private storeRev: number;

  constructor(engine: WatchEngine, encoder: WatchResponseEncoder) {
    this.engine = engine;
    this.encoder = encoder;
    this.storeRev = 0;
  }

  turn(raftTerm: number, storeRev: number): void {
    this.encoder.raftTerm = raftTerm;
    this.storeRev = storeRev;
  }

  open(streamId: number): void {
    this.engine.openStream(streamId);
  }

  close(streamId: number): void {
    this.engine.closeStream(streamId);
  }

  progress(streamId: number): void {
    this.engine.requestProgress(streamId, this.storeRev);
  }

  ack(streamId: number, bytes: number): void {
    this.engine.ack(streamId, bytes);
  }

  cancel(streamId: number, watchId: WatchId): void {
    this.engine.cancel(streamId, watchId, this.storeRev);
  }

  create(streamId: number, watchId: WatchId, createdRev: number, startRev: number, flags: number,
    key: Uint8Array, endKind: EndKind, end: Uint8Array): void {
    const range: RangeEnd = endKind === EndKind.Single ? null : endKind === EndKind.FromKey ? '' : latin1(end);
    this.engine.create(streamId, {
      watchId, key: latin1(key), end: range, startRev,
      prevKv: (flags & CreateFlag.PrevKv) !== 0,
      progressNotify: (flags & CreateFlag.ProgressNotify) !== 0,
      fragment: (flags & CreateFlag.Fragment) !== 0,
      noPut: (flags & CreateFlag.NoPut) !== 0,
      noDelete: (flags & CreateFlag.NoDelete) !== 0,
    }, createdRev);
  }
}

/** Keys as the MVCC index holds them: latin1, one char per byte (no copy of the bytes). */
function latin1(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');
}

function post(msg: FromWatchWorker): void {
  parentPort!.postMessage(msg);
}

let worker: WatchWorker | null = null;

parentPort!.on('message', (msg: ToWatchWorker) => {
  try {
    if (msg instanceof Uint8Array) {
      worker!.onControl(msg);
      return;
    }
    if (msg.type === 'init') {
      worker = new WatchWorker(msg);
      post({ type: 'ready', rev: worker.rev });
      void worker.pump();
      return;
    }
    if (msg.type === 'close') {
      void worker?.close().then(() => post({ type: 'closed' }));
    }
  } catch (err) {
    post({ type: 'fatal', message: (err as Error).stack ?? String(err) });
  }
});
