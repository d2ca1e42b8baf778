// Main-thread side of the watch worker: starts it, gathers the watch requests of one turn into
// one control message, and hands each response the worker encoded to its stream. The main
// thread never matches, encodes or reads history; it only moves bytes.
import { Worker } from 'node:worker_threads';
import * as path from 'node:path';
import { etcdserverpb } from '../gen/proto';
import { PackReader, PackWriter } from '../workers/protocol';
import Long from 'long';
import {
  ControlOp, CreateFlag, EndKind, FromWatchWorker, ToWatchWorker, WatchStat, WatchWorkerInit,
} from './protocol';

/** Where a stream's responses go (the gRPC call or the gateway's HTTP response). */
export interface WatchStreamSink {
  /** `count` gRPC-framed responses in one piece (watch/protocol.ts Output). */
  writeFramed(frames: Uint8Array, count: number): void;
  /** The worker failed: the stream must end with an error. */
  fail(message: string): void;
}

export interface WatchHubOptions extends Omit<WatchWorkerInit, 'type' | 'raftTerm'> {
  /** The revision applied now and the raft term, read when requests are passed on. */
  storeRev(): number;
  currentRaftTerm(): number;
  onFatal(message: string): void;
}

const zeroKey = new Uint8Array([0]);
const maxSafe = Long.fromNumber(Number.MAX_SAFE_INTEGER);
const minSafe = Long.fromNumber(-Number.MAX_SAFE_INTEGER);

function writeI64(w: PackWriter, v: Long): void {
  w.u32(v.high >>> 0);
  w.u32(v.low >>> 0);
}

export class WatchHub {
  private readonly worker: Worker;
  private readonly options: WatchHubOptions;
  private readonly streams = new Map<number, WatchStreamSink>();
  private nextStreamId = 1;
  private readonly control = new PackWriter(4096);
  private controlCount = 0;
  private flushScheduled = false;
  private readonly flushBound: () => void;
  private closing: (() => void) | null = null;
  private readonly statsView: Float64Array;

  private constructor(worker: Worker, options: WatchHubOptions) {
    this.worker = worker;
    this.options = options;
    this.flushBound = () => this.flush();
    this.statsView = new Float64Array(options.stats);
  }

  /** A statistic the worker keeps in shared memory (watch/protocol.ts WatchStat). */
  stat(slot: WatchStat): number {
    return this.statsView[slot]!;
  }

  static start(options: WatchHubOptions): Promise<WatchHub> {
    const worker = new Worker(path.join(__dirname, 'watch_worker.js'));
    const hub = new WatchHub(worker, options);
    return new Promise((resolve, reject) => {
      let ready = false;
      worker.on('message', (msg: FromWatchWorker) => {
        if (msg instanceof Uint8Array) return hub.deliver(msg);
        switch (msg.type) {
          case 'ready':
            ready = true;
            resolve(hub);
            return;
          case 'fatal':
            if (!ready) reject(new Error(msg.message));
            else hub.fatal(msg.message);
            return;
          case 'closed':
            void worker.terminate();
            return;
        }
      });
      worker.on('error', (err) => (ready ? hub.fatal(err.stack ?? String(err)) : reject(err)));
      worker.on('exit', (code) => {
        if (hub.closing !== null) hub.closing();
        else if (ready) hub.fatal(`watch worker exited with code ${code}`);
      });
      const { storeRev: _s, currentRaftTerm: _t, onFatal: _f, ...init } = options;
      const msg: ToWatchWorker = { type: 'init', ...init, raftTerm: options.currentRaftTerm() };
      worker.postMessage(msg);
    });
  }

  get streamCount(): number {
    return this.streams.size;
  }

  openStream(sink: WatchStreamSink): number {
    const id = this.nextStreamId++;
    this.streams.set(id, sink);
    this.op(ControlOp.Open, id);
    return id;
  }

  closeStream(id: number): void {
    if (!this.streams.delete(id)) return;
    this.op(ControlOp.Close, id);
  }

  create(id: number, req: etcdserverpb.IWatchCreateRequest): void {
    // etcd: an empty key is "\0", the smallest key.
    const key = req.key !== null && req.key !== undefined && req.key.length > 0 ? req.key : zeroKey;
    const rangeEnd = req.range_end ?? new Uint8Array(0);
    let endKind = EndKind.Range;
    if (rangeEnd.length === 0) endKind = EndKind.Single;
    else if (rangeEnd.length === 1 && rangeEnd[0] === 0) endKind = EndKind.FromKey;
    // etcd: 0 means "from the next revision", the one after what is applied now; the created
    // response's header carries that same revision.
    const storeRev = this.options.storeRev();
    // Revisions never leave the safe-integer range; a start beyond it waits forever either way.
    const startLong = Long.fromValue(req.start_revision ?? 0);
    let start = startLong.greaterThan(maxSafe) ? Number.MAX_SAFE_INTEGER
      : startLong.lessThan(minSafe) ? -Number.MAX_SAFE_INTEGER : startLong.toNumber();
    if (start === 0) start = storeRev + 1;
    let flags = 0;
    if (req.prev_kv) flags |= CreateFlag.PrevKv;
    if (req.progress_notify) flags |= CreateFlag.ProgressNotify;
    if (req.fragment) flags |= CreateFlag.Fragment;
    for (const f of req.filters ?? []) {
      if (f === etcdserverpb.WatchCreateRequest.FilterType.NOPUT) flags |= CreateFlag.NoPut;
      else if (f === etcdserverpb.WatchCreateRequest.FilterType.NODELETE) flags |= CreateFlag.NoDelete;
    }
    this.op(ControlOp.Create, id);
    const w = this.control;
    writeI64(w, Long.fromValue(req.watch_id ?? 0));
    w.u53(storeRev);
    w.u53(start);
    w.u8(flags);
    w.bytes(key);
    w.u8(endKind);
    w.bytes(endKind === EndKind.Range ? rangeEnd : new Uint8Array(0));
  }

  cancel(id: number, watchId: Long | number): void {
    this.op(ControlOp.Cancel, id);
    writeI64(this.control, Long.fromValue(watchId));
  }

  requestProgress(id: number): void {
    this.op(ControlOp.Progress, id);
  }

  /** `bytes` of this stream's responses were written out. */
  ack(id: number, bytes: number): void {
    if (!this.streams.has(id)) return;
    this.op(ControlOp.Ack, id);
    this.control.u53(bytes);
  }

  private op(op: ControlOp, streamId: number): void {
    this.control.u8(op);
    this.control.u32(streamId);
    this.controlCount++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushBound);
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.controlCount === 0) return;
    const head = new PackWriter(24);
    head.u53(this.options.currentRaftTerm());
    head.u53(this.options.storeRev());
    head.u32(this.controlCount);
    const m = new Uint8Array(head.length + this.control.length);
    head.copyTo(m, 0);
    this.control.copyTo(m, head.length);
    this.control.reset();
    this.controlCount = 0;
    this.worker.postMessage(m);
  }

  private deliver(data: Uint8Array): void {
    const r = new PackReader(data);
    for (let n = r.u32(); n > 0; n--) {
      const id = r.u32();
      const count = r.u32();
      const frames = r.bytes();
      const sink = this.streams.get(id);
      if (sink !== undefined) sink.writeFramed(frames, count);
    }
  }

  private fatal(message: string): void {
    for (const sink of this.streams.values()) sink.fail('etcdserver: watch engine failed');
    this.streams.clear();
    this.options.onFatal(message);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => void this.worker.terminate(), 2000);
      this.closing = () => {
        clearTimeout(timer);
        resolve();
      };
      this.worker.postMessage({ type: 'close' } satisfies ToWatchWorker);
    });
  }
}

