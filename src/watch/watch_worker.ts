// The watch worker thread: follows the storage worker's event ring into an MVCC replica
// (replica.ts), runs the watch engine (engine.ts) and sends the encoded responses to the main
// thread, one message per turn.
//
// Ring records are processed in order. Each carries a sequence number; a jump means the ring
// was full and records were dropped (the storage worker never waits for us). Then every synced
// watcher falls back to history, and the replica is caught up from LMDB once LMDB has committed
// the dropped revisions (at most one backend batch interval later); until then the records read
// after the gap wait here.
import { parentPort } from 'node:worker_threads';
import { PackReader, PackWriter } from '../workers/protocol';
import { setProtoDepthMax } from '../util/proto_depth';
import { protoDepthMax } from '../config/limits';
import { decodeEventRecord, EventRecord, RecordKind } from './events';
import { RingConsumer } from './ring';
import { MvccReplica } from './replica';
import { WatchEngine } from './engine';
import { FrameBuffer, WatchId, WatchResponseEncoder } from './encode';
import {
  ControlOp, CreateFlag, EndKind, FromWatchWorker, ToWatchWorker, WatchStat, WatchWorkerInit,
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
  private readonly out: PackWriter;
  private outCount: number;
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
    this.replica = new MvccReplica(init.kvPath, init.mapSizeBytes);
    this.replica.restore();
    const compactView = new BigInt64Array(init.compactRev);
    this.encoder = new WatchResponseEncoder(init.clusterId, init.memberId, init.raftTerm);
    this.out = new PackWriter(64 * 1024);
    this.outCount = 0;
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
    }
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
    const out = this.out;
    for (const [streamId, frames] of this.outByStream) {
      out.u32(streamId);
      out.u32(frames.count);
      out.bytes(frames.buf.subarray(0, frames.pos));
      this.outCount++;
    }
    this.outByStream.clear();
    const m = new Uint8Array(4 + this.out.length);
    new DataView(m.buffer).setUint32(0, this.outCount, true);
    this.out.copyTo(m, 4);
    this.out.reset();
    this.outCount = 0;
    post(m);
  }

  onControl(data: Uint8Array): void {
    this.guard(() => this.control(data));
  }

  private control(data: Uint8Array): void {
    const r = new PackReader(data);
    this.encoder.raftTerm = r.u53();
    const storeRev = r.u53();
    for (let n = r.u32(); n > 0; n--) {
      const op = r.u8() as ControlOp;
      const streamId = r.u32();
      switch (op) {
        case ControlOp.Open:
          this.engine.openStream(streamId);
          break;
        case ControlOp.Close:
          this.engine.closeStream(streamId);
          break;
        case ControlOp.Progress:
          this.engine.requestProgress(streamId, storeRev);
          break;
        case ControlOp.Ack:
          this.engine.ack(streamId, r.u53());
          break;
        case ControlOp.Cancel:
          this.engine.cancel(streamId, readI64(r), storeRev);
          break;
        case ControlOp.Create: {
          const watchId = readI64(r);
          const createdRev = r.u53();
          const startRev = r.u53();
          const flags = r.u8();
          const key = Buffer.from(r.bytes()).toString('latin1');
          const endKind = r.u8() as EndKind;
          const endBytes = r.bytes();
          const end: RangeEnd = endKind === EndKind.Single ? null
            : endKind === EndKind.FromKey ? '' : Buffer.from(endBytes).toString('latin1');
          this.engine.create(streamId, {
            watchId, key, end, startRev,
            prevKv: (flags & CreateFlag.PrevKv) !== 0,
            progressNotify: (flags & CreateFlag.ProgressNotify) !== 0,
            fragment: (flags & CreateFlag.Fragment) !== 0,
            noPut: (flags & CreateFlag.NoPut) !== 0,
            noDelete: (flags & CreateFlag.NoDelete) !== 0,
          }, createdRev);
          break;
        }
      }
    }
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

/** An int64 written as (u32 high, u32 low): a number when safe, else a bigint (encode.ts WatchId). */
function readI64(r: PackReader): WatchId {
  const hi = r.u32();
  const lo = r.u32();
  const v = BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo));
  return v >= -BigInt(Number.MAX_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
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
