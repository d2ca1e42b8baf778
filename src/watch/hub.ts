// Main-thread side of the watch worker: starts it, gathers the watch requests of one turn into
// one control message, and hands each response the worker encoded to its stream. The main
// thread never matches, encodes or reads history; it only moves bytes.
import { Worker } from 'node:worker_threads';
import * as path from 'node:path';
import { etcdserverpb } from '../gen/proto';
import Long from 'long';
import {
  ControlWriter, CreateFlag, EndKind, FromWatchWorker, OutputVisitor, readOutput, ToWatchWorker,
  WatchStat, WatchWorkerInit,
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
const noEnd = new Uint8Array(0);
const maxSafe = Long.fromNumber(Number.MAX_SAFE_INTEGER);
const minSafe = Long.fromNumber(-Number.MAX_SAFE_INTEGER);

export class WatchHub {
  private readonly worker: Worker;
  private readonly options: WatchHubOptions;
  private readonly streams = new Map<number, WatchStreamSink>();
  private nextStreamId = 1;
  /** The requests of this turn (watch/protocol.ts Control). */
  private readonly control = new ControlWriter(4096);
  private flushScheduled = false;
  private readonly flushBound: () => void;
  /** Hands each stream's part of an Output message to its sink. */
  private readonly output: OutputVisitor;
  private closing: (() => void) | null = null;
  private readonly statsView: Float64Array;

  private constructor(worker: Worker, options: WatchHubOptions) {
    this.worker = worker;
    this.options = options;
    this.flushBound = () => this.flush();
    this.output = {
      frames: (id: number, count: number, frames: Uint8Array): void => {
        const sink = this.streams.get(id);
        if (sink !== undefined) sink.writeFramed(frames, count);
      },
    };
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
    this.control.open(id);
    this.scheduleFlush();
    return id;
  }

  closeStream(id: number): void {
    if (!this.streams.delete(id)) return;
    this.control.close(id);
    this.scheduleFlush();
  }

  create(id: number, req: etcdserverpb.IWatchCreateRequest): void {
    // etcd: an empty key is "\0", the smallest key.
    const key = req.key !== null && req.key !== undefined && req.key.length > 0 ? req.key : zeroKey;
    const rangeEnd = req.range_end ?? noEnd;
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
    this.control.create(id, Long.fromValue(req.watch_id ?? 0), storeRev, start, flags, key, endKind,
      endKind === EndKind.Range ? rangeEnd : noEnd);
    this.scheduleFlush();
  }

  cancel(id: number, watchId: Long | number): void {
    this.control.cancel(id, Long.fromValue(watchId));
    this.scheduleFlush();
  }

  requestProgress(id: number): void {
    this.control.progress(id);
    this.scheduleFlush();
  }

  /** `bytes` of this stream's responses were written out. */
  ack(id: number, bytes: number): void {
    if (!this.streams.has(id)) return;
    this.control.ack(id, bytes);
    this.scheduleFlush();
  }

  /** One Control message per turn, however many requests the streams delivered. */
  private scheduleFlush(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushBound);
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.control.opCount === 0) return;
    this.worker.postMessage(this.control.finish(this.options.currentRaftTerm(), this.options.storeRev()));
  }

  private deliver(data: Uint8Array): void {
    readOutput(data, this.output);
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

