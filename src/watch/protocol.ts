// Messages between the main thread and the watch worker. Like the storage worker's, the hot
// ones are one plain Uint8Array per event-loop turn in each direction (workers/protocol.ts
// explains why): never a message per watch request or per response.
//
//   Control  main -> watch worker, everything the gRPC streams asked for during one turn
//     u53 raftTerm, u53 storeRev (the revision applied when the requests arrived)
//     u32 count | count x op
//     op = u8 ControlOp, u32 streamId, then
//       Open, Close, Progress: nothing
//       Create:  i64 watchId, u53 storeRev when it arrived, u53 startRev, u8 flags (CreateFlag), bytes key,
//                u8 endKind (EndKind), bytes end
//       Cancel:  i64 watchId
//     i64 = u32 high, u32 low (two's complement): client ids use all 64 bits
//       Ack:     u53 bytes written out to the client since the last Ack
//   Output   watch worker -> main, per stream all the responses of the turn, already framed
//     u32 count | count x (u32 streamId, u32 responses, u32 length, gRPC frames)
//     gRPC frame = u8 0 (not compressed), u32 BE length, encoded WatchResponse
//     so the main thread writes each stream's turn with one write.
// Start-up, statistics and failure messages are plain objects (rare).
export const enum ControlOp {
  Open = 1,
  Create = 2,
  Cancel = 3,
  Progress = 4,
  Close = 5,
  Ack = 6,
}

export const enum CreateFlag {
  PrevKv = 1,
  ProgressNotify = 2,
  Fragment = 4,
  NoPut = 8,
  NoDelete = 16,
}

export const enum EndKind {
  /** range_end empty: the single key. */
  Single = 0,
  /** range_end a key: [key, end). */
  Range = 1,
  /** range_end "\0": every key >= key. */
  FromKey = 2,
}

export interface WatchWorkerInit {
  type: 'init';
  kvPath: string;
  mapSizeBytes: number;
  eventRing: SharedArrayBuffer;
  /** BigInt64Array(1): the compaction revision, stored by the storage worker at apply. */
  compactRev: SharedArrayBuffer;
  clusterId: string;
  memberId: string;
  raftTerm: number;
  fragmentBytesMax: number;
  streamBytesMax: number;
  progressNotifyIntervalMs: number;
  /** WatchStat slots. */
  stats: SharedArrayBuffer;
}

/**
 * Statistics the watch worker keeps in a SharedArrayBuffer (Float64Array slots) for /metrics,
 * written as it works and read at scrape time: no message carries them.
 */
export const enum WatchStat {
  Watchers = 0,
  Unsynced = 1,
  EventsSent = 2,
  ResponsesSent = 3,
  Victims = 4,
  RingGaps = 5,
  WindowRevisions = 6,
  ReplicaRev = 7,
  RingOccupancy = 8,
  BusyMs = 9,
  Count = 10,
}

export function newWatchStatsBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(WatchStat.Count * 8);
}

export type FromWatchWorker =
  | Uint8Array
  | { type: 'ready'; rev: number }
  | { type: 'fatal'; message: string }
  | { type: 'closed' };

export type ToWatchWorker = WatchWorkerInit | Uint8Array | { type: 'close' };
