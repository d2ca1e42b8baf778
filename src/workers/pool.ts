// Main-thread side of the storage worker: spawns it and carries typed messages both ways.
import { Worker } from 'node:worker_threads';
import * as path from 'node:path';
import { assert } from '../util/assert';
import { FromWorker, ToWorker, WorkerMessageType, WorkerReady, WorkerInit } from './protocol';

export interface StorageWorkerEvents {
  onMessage(msg: FromWorker): void;
  onFatal(message: string): void;
}

export class StorageWorkerHandle {
  private readonly worker: Worker;
  private events: StorageWorkerEvents | null;
  private closing: ((ok: boolean) => void) | null;

  private constructor(worker: Worker) {
    this.worker = worker;
    this.events = null;
    this.closing = null;
    this.worker.on('message', (msg: FromWorker) => this.dispatch(msg));
    this.worker.on('error', (err) => this.fatal(err.stack ?? String(err)));
    this.worker.on('exit', (code) => {
      if (this.closing !== null) this.closing(code === 0);
      else this.fatal('storage worker exited with code ' + code);
    });
  }

  /** Starts the worker and waits until it has opened and restored the data directory. */
  static start(init: Omit<WorkerInit, 'type'>): Promise<{ handle: StorageWorkerHandle; ready: WorkerReady }> {
    const worker = new Worker(path.join(__dirname, 'storage_worker.js'));
    const handle = new StorageWorkerHandle(worker);
    return new Promise((resolve, reject) => {
      handle.events = {
        onMessage(msg) {
          assert(!(msg instanceof Uint8Array) && msg.type === WorkerMessageType.Ready,
            'first worker message must be Ready');
          resolve({ handle, ready: msg as WorkerReady });
        },
        onFatal(message) {
          reject(new Error(message));
        },
      };
      handle.send({ type: WorkerMessageType.Init, ...init });
    });
  }

  listen(events: StorageWorkerEvents): void {
    this.events = events;
  }

  send(msg: ToWorker): void {
    this.worker.postMessage(msg);
  }

  private dispatch(msg: FromWorker): void {
    if (msg instanceof Uint8Array) {
      this.events!.onMessage(msg);
      return;
    }
    if (msg.type === WorkerMessageType.Fatal) {
      this.fatal(msg.message);
      return;
    }
    if (msg.type === WorkerMessageType.Closed) {
      void this.worker.terminate();
      return;
    }
    this.events!.onMessage(msg);
  }

  private fatal(message: string): void {
    if (this.events !== null) this.events.onFatal(message);
  }

  /** Flushes and closes LMDB, then stops the thread. */
  close(): Promise<boolean> {
    return new Promise((resolve) => {
      this.closing = resolve;
      this.send({ type: WorkerMessageType.Close });
    });
  }
}
