// The storage worker thread: StorageCore (workers/storage_core.ts) on real files, LMDB and
// timers, talking to the main thread through the messages of workers/protocol.ts.
import { parentPort } from 'node:worker_threads';
import { protoDepthMax } from '../config/limits';
import { nodeFileIo } from '../storage/file_io';
import { isUnclaimedCommitFailure } from '../storage/lmdb_engine';
import { setProtoDepthMax } from '../util/proto_depth';
import { realTimers } from '../util/timers';
import { assert } from '../util/assert';
import { StorageCore } from './storage_core';
import { FromWorker, ToWorker, WorkerMessageType } from './protocol';

setProtoDepthMax(protoDepthMax);

function post(msg: FromWorker): void {
  parentPort!.postMessage(msg);
}

function fatal(message: string): void {
  post({ type: WorkerMessageType.Fatal, message });
}

let core: StorageCore | null = null;

// Node's default for an unhandled rejection is to end the thread; keep that for everything but
// lmdb-js's duplicate of a commit failure the backend already handles (lmdb_engine.ts).
process.on('unhandledRejection', (reason) => {
  if (isUnclaimedCommitFailure(reason)) return;
  fatal('unhandled rejection in the storage worker: ' + String((reason as Error)?.stack ?? reason));
});

parentPort!.on('message', (msg: ToWorker) => {
  try {
    if (msg instanceof Uint8Array) {
      assert(msg[0] === WorkerMessageType.Batch, 'unknown worker message');
      core!.batch(msg);
      return;
    }
    switch (msg.type) {
      case WorkerMessageType.Init:
        core = new StorageCore(msg, { io: nodeFileIo, timers: realTimers, post, alarm: post, fatal, snapshotAnswer: post, hashAnswer: post, defragmentAnswer: post });
        post(core.ready());
        break;
      case WorkerMessageType.SnapshotCreate:
        core!.snapshotCreate(msg);
        break;
      case WorkerMessageType.SnapshotStage:
        core!.snapshotStage(msg);
        break;
      case WorkerMessageType.SnapshotRelease:
        core!.snapshotRelease(msg);
        break;
      case WorkerMessageType.Hash:
        core!.hash(msg);
        break;
      case WorkerMessageType.Defragment:
        core!.defragment(msg);
        break;
      case WorkerMessageType.Close:
        void core!.close().then(() => post({ type: WorkerMessageType.Closed }));
        break;
    }
  } catch (err) {
    // A bug or a storage failure: the process must stop before it acknowledges anything more.
    fatal((err as Error).stack ?? String(err));
  }
});
