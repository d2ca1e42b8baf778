// Every bound in concord, named once. Defaults follow etcd where etcd has one.
import { assert } from '../util/assert';

/** etcd --max-request-bytes default: 1.5 MiB. */
export const requestBytesDefault = 1.5 * 1024 * 1024;
/** grpc receive limit = max-request-bytes + this (etcd: v3rpc/grpc.go grpcOverheadBytes). */
export const grpcOverheadBytes = 512 * 1024;
/** etcd --max-txn-ops default. */
export const txnOpsDefault = 128;
/** etcd quota default when --quota-backend-bytes is 0: 2 GiB. */
export const quotaBackendBytesDefault = 2 * 1024 * 1024 * 1024;
/** etcd: committed - applied > 5000 => ErrTooManyRequests. */
export const commitApplyGapMax = 5000;
/** Proposals waiting for apply; beyond it new writes get ErrTooManyRequests (backpressure). */
export const proposalsPendingMax = 65536;
/** Reads queued or in flight; beyond it new reads get ErrTooManyRequests (backpressure). */
export const readsPendingMax = 65536;
/** Maintenance.Hash/HashKV requests waiting for the storage worker; beyond it TooManyRequests.
 * Each is a full scan of the store run one at a time: a queue this long is already minutes. */
export const hashRequestsPendingMax = 64;
/** Maintenance.Defragment requests waiting; beyond it TooManyRequests (each copies the store). */
export const defragmentRequestsPendingMax = 16;
/** An online defragmentation keeps the transactions committed during its copy in memory, to
 * write them into the copy: beyond this many bytes it gives up (the member goes on as it was). */
export const defragJournalBytesMax = 512 * 1024 * 1024;
/** Catch-up rounds while writes go on; the switch comes after them whatever is left. */
export const defragCatchUpRoundsMax = 8;
/** Journal bytes left small enough to write with commits suspended (a few ms of LMDB writes). */
export const defragSwitchBytes = 4 * 1024 * 1024;
/** Entries in one append/apply batch handed to the storage worker. */
export const batchEntriesMax = 4096;
/** Reads in one batch handed to the storage worker. */
export const batchReadsMax = 4096;
/** Raft log entries kept behind the applied index (etcd --snapshot-catchup-entries 5000). */
export const logRetainEntries = 5000;
/**
 * ... and at most this many bytes of them: 5,000 entries of 1.5 MiB values would be 7.5 GiB
 * (issue #10, finding 5). A follower further behind gets a snapshot instead.
 */
export const logRetainBytesMax = 64 * 1024 * 1024;
/**
 * Bytes of entries proposed but not yet applied (in the raft log, the batch to the storage
 * worker and its apply queue). Beyond it new proposals get ErrTooManyRequests, as etcd answers
 * past its commit-apply gap of 5,000 entries, which alone bounds nothing when values are large.
 */
export const unappliedBytesMax = 64 * 1024 * 1024;
/**
 * WAL segment size. etcd uses 64 MB with fallocate; concord zero-fills segments (see wal.ts), so
 * a smaller segment keeps the first start fast (~50k entries of 300 bytes per segment).
 */
export const walSegmentBytes = 16 * 1024 * 1024;
/** MVCC writes reach LMDB at least this often (etcd --backend-batch-interval 100 ms). */
export const backendBatchIntervalMs = 100;
/** ... or after this many writes (etcd --backend-batch-limit 10000). */
export const backendBatchLimit = 10000;
/** Keys handled per compaction step, so a compaction never stalls apply (etcd 1000). */
export const compactionBatchKeys = 1000;
/**
 * Txn nesting levels a request may have. etcd has no such bound (Go stacks grow), but it needs
 * none either: every level of a txn uses at least one of --max-txn-ops, so etcd's checks answer
 * "too many operations" before looking below level txnOpsMax + 2, and wire_check.ts cuts
 * requests there. This cap only matters when --max-txn-ops is set above it; it keeps the
 * recursion of decoding and applying a txn within the JS stack.
 */
export const txnNestingCap = 1024;
/**
 * protobufjs recursion limit (its default, 100, is reached by 50 nested txns): a TxnRequest of
 * txnNestingCap levels, TxnRequest and RequestOp alternating, inside an InternalRequest; and the
 * TxnResponse of it.
 */
export const protoDepthMax = 2 * txnNestingCap + 8;
/**
 * The event ring from the storage worker to the watch worker. When the watch worker falls this
 * far behind, records are dropped and it catches up from LMDB instead (watch/events.ts); the
 * largest revision that can pass through whole is half of it.
 */
export const watchEventRingBytes = 64 * 1024 * 1024;
/**
 * Response bytes queued for one watch stream and not yet written to its client. Beyond it the
 * stream's watchers stop taking new events and catch up from history when it drains (etcd's
 * victims; etcd bounds a stream by 128 queued responses, chanBufLen).
 */
export const watchStreamBytesMax = 4 * 1024 * 1024;
/** etcd --experimental-watch-progress-notify-interval default: 10 minutes. */
export const watchProgressNotifyIntervalMsDefault = 10 * 60 * 1000;
/** etcd MaxLeaseTTL. */
export const leaseTtlMaxSeconds = 9_000_000_000;

// ---- Peer transport (src/transport/) ----
/**
 * Largest encoded raft message a member sends or accepts by default: raft's 1 MiB MsgApp budget
 * plus one entry as large as a request (a MsgApp carries at least one entry whatever its size)
 * plus the grpc overhead: 3 MiB. The server passes its own bound when --max-request-bytes is
 * raised. (etcd's rafthttp reads messages up to 512 MB; concord bounds what raft can produce.)
 */
export const peerMessageBytesDefault = 1024 * 1024 + requestBytesDefault + grpcOverheadBytes;
/** Messages queued per peer connection, not yet written (etcd rafthttp streamBufSize 4096). */
export const peerQueueMessagesMax = 4096;
/**
 * ... and bytes (etcd bounds the count only, so 4096 appends of 1 MiB could wait: 4 GiB). 16
 * max-size appends; at 100 MB/s a full queue is 170 ms of sending.
 */
export const peerQueueBytesMax = 16 * 1024 * 1024;
/** Bytes a peer socket may hold unsent before its queue stops draining into it. */
export const peerSocketBufferedBytesMax = 4 * 1024 * 1024;
/** Snapshot payload bytes per frame (a caller's larger chunk is cut; smaller go as they are). */
export const peerSnapshotFrameBytesMax = 1024 * 1024;
/** Received snapshot bytes waiting for the sink before the socket is paused (flow control). */
export const peerSnapshotSinkPendingBytesMax = 8 * 1024 * 1024;
/**
 * Forward requests in flight on one peer's forward connection (transport/forward.ts): on the
 * sender, issued and not yet answered; on the receiver, received and not yet answered on the
 * wire. Past it the sender fails a new request with Busy and the receiver answers Busy, so a
 * leader waiting for its apply loop holds a bounded number (etcd: one HTTP request each, bounded
 * by nothing but Go's http server). 4096 as a stream queue (etcd streamBufSize).
 */
export const peerForwardInflightMax = 4096;
/**
 * ... and payload bytes: the sender's requests not yet written, the receiver's requests and
 * answers not yet written. As a stream queue: 16 max-size payloads.
 */
export const peerForwardInflightBytesMax = peerQueueBytesMax;
/** Inbound peer connections that have not sent their Hello yet; beyond it new ones are reset. */
export const peerInboundHandshakesMax = 64;
assert(peerMessageBytesDefault >= requestBytesDefault, 'peer message vs request size');
assert(peerQueueBytesMax >= 2 * peerMessageBytesDefault, 'peer queue vs message size');
assert(peerSnapshotFrameBytesMax <= peerMessageBytesDefault, 'snapshot frame vs message size');
assert(peerForwardInflightBytesMax >= 2 * peerMessageBytesDefault, 'forward bytes vs message size');

assert(grpcOverheadBytes > 0, 'grpcOverheadBytes');
assert(batchEntriesMax > 0 && batchReadsMax > 0, 'batch limits');
assert(commitApplyGapMax < proposalsPendingMax, 'gap vs pending');
// A proposal as large as a request must fit, or large writes could never pass.
assert(unappliedBytesMax >= 4 * requestBytesDefault, 'unapplied bytes vs request size');
assert(logRetainBytesMax >= 4 * requestBytesDefault, 'retained log bytes vs request size');
