// Raft data types (etcd-io/raft raftpb). Plain data, no behaviour.
//
// Entry, EntryType and HardState are shared with the WAL (storage/wal.ts) and the worker protocol
// (workers/protocol.ts): their fields and the numeric values of EntryType must not change.

export const enum EntryType {
  Normal = 0,
  /** data = a ConfChange in the layout of confchange.ts (etcd raftpb.ConfChange, protobuf). */
  ConfChange = 1,
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  data: Uint8Array;
}

export interface HardState {
  term: number;
  vote: number;
  commit: number;
}

export const enum StateType {
  Follower = 0,
  Candidate = 1,
  Leader = 2,
  PreCandidate = 3,
}

/**
 * Message types, numbered as etcd raftpb.MessageType so that traces read the same. Local
 * inputs (ticks, campaign, reports) are methods of RawNode rather than messages, except MsgProp,
 * MsgReadIndex and MsgTransferLeader which a follower forwards to the leader as they are.
 */
export const enum MessageType {
  Prop = 2,
  App = 3,
  AppResp = 4,
  Vote = 5,
  VoteResp = 6,
  Snap = 7,
  Heartbeat = 8,
  HeartbeatResp = 9,
  TransferLeader = 13,
  TimeoutNow = 14,
  ReadIndex = 15,
  ReadIndexResp = 16,
  PreVote = 17,
  PreVoteResp = 18,
}

/**
 * One raft message (etcd raftpb.Message). Every field is always present (stable shape); unused
 * ones are 0 / false / empty.
 *   App:           index/logTerm = the entry before `entries`; commit = leader's commit.
 *   AppResp:       index = last index the follower now holds; on reject, index = the rejected
 *                  MsgApp's index and (rejectHint, logTerm) = the follower's guess of the last
 *                  matching entry (fast backtracking).
 *   Vote/PreVote:  index/logTerm = candidate's last entry; context = campaignTransferContext for
 *                  a leader transfer campaign (it overrides the lease rule).
 *   Heartbeat:     commit = min(follower's match, leader's commit); context = read round (8 bytes).
 *   ReadIndex:     context = the driver's opaque request context; ReadIndexResp adds index.
 */
export interface Message {
  type: MessageType;
  to: number;
  from: number;
  term: number;
  logTerm: number;
  index: number;
  entries: Entry[];
  commit: number;
  snapshot: Snapshot | null;
  reject: boolean;
  rejectHint: number;
  context: Uint8Array;
}

export interface ConfState {
  /** Sorted ascending. */
  voters: number[];
  /** Sorted ascending; disjoint from voters. */
  learners: number[];
}

export interface SnapshotMetadata {
  index: number;
  term: number;
  /** The configuration as of `index`. */
  confState: ConfState;
}

/**
 * A snapshot: metadata plus opaque state machine data. The core never reads `data`; concord's
 * driver streams the LMDB state out of band and may leave it empty here.
 */
export interface Snapshot {
  metadata: SnapshotMetadata;
  data: Uint8Array;
}

/** etcd raftpb.ConfChangeType values. */
export const enum ConfChangeType {
  AddNode = 0,
  RemoveNode = 1,
  UpdateNode = 2,
  AddLearnerNode = 3,
}

/** A single membership change (etcd raftpb.ConfChange, v1: no joint consensus). */
export interface ConfChange {
  /** The proposer's request id (the driver's wait-table key); not interpreted by raft. */
  id: number;
  type: ConfChangeType;
  nodeId: number;
  /** Opaque to raft; concord puts the member's 64-bit id and peer URLs here. */
  context: Uint8Array;
}

/** A confirmed linearizable read: serve it once applied >= index (etcd ReadState). */
export interface ReadState {
  index: number;
  context: Uint8Array;
}

/** Volatile state the driver shows (leader, role); in Ready only when it changed. */
export interface SoftState {
  lead: number;
  state: StateType;
}

/**
 * One write for the storage thread. Writes are made durable strictly in `seq` order; the driver
 * reports each with RawNode.persisted(seq), in order. An empty batch is never handed out.
 */
export interface PersistBatch {
  seq: number;
  /** Install first when set: the state machine takes its state, every stored entry goes. */
  snapshot: Snapshot | null;
  /** Append; writing index i first discards every stored entry >= i (a conflicting tail). */
  entries: Entry[];
  /** Write with (after) the entries, atomically or entries first (etcd raft README). */
  hardState: HardState | null;
  /** False when only the commit index changed: the write may skip fsync (etcd MustSync). */
  mustSync: boolean;
}

/**
 * The core's output (etcd Ready). ready() hands each item out once; nothing is handed out again.
 * See raw_node.ts for the contract.
 */
export interface Ready {
  softState: SoftState | null;
  /** The write to hand to storage now, or null. */
  persist: PersistBatch | null;
  /** Send now, in any order: none of them depends on a write that is not durable yet. */
  messages: Message[];
  /** Apply in order (they are committed and durable here); then call appliedTo(). */
  committedEntries: Entry[];
  /** Serve each read once applied >= its index. */
  readStates: ReadState[];
}

export const emptyBytes = new Uint8Array(0);

/** The vote context of a leader-transfer campaign (etcd campaignTransfer). */
export const campaignTransferContext = new Uint8Array([0x54]); // 'T'

/**
 * Bytes an entry counts for in message-size and inflight limits: its payload plus a fixed
 * estimate of its framing (term, index, type: three varints and tags, as raftpb encodes them).
 */
export const entryOverheadBytes = 24;

export function entryBytes(e: Entry): number {
  return e.data.length + entryOverheadBytes;
}

export function newMessage(type: MessageType, to: number, from: number, term: number): Message {
  return {
    type, to, from, term, logTerm: 0, index: 0, entries: [], commit: 0, snapshot: null,
    reject: false, rejectHint: 0, context: emptyBytes,
  };
}

export function isEmptyHardState(hs: HardState): boolean {
  return hs.term === 0 && hs.vote === 0 && hs.commit === 0;
}

export function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

/** MsgAppResp, MsgVoteResp and MsgPreVoteResp wait until the state they vouch for is durable. */
export function isResponseToHold(type: MessageType): boolean {
  return type === MessageType.AppResp || type === MessageType.VoteResp ||
    type === MessageType.PreVoteResp;
}

export function voteRespType(t: MessageType): MessageType {
  return t === MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp;
}

const messageTypeNames: Record<number, string> = {
  2: 'MsgProp', 3: 'MsgApp', 4: 'MsgAppResp', 5: 'MsgVote', 6: 'MsgVoteResp', 7: 'MsgSnap',
  8: 'MsgHeartbeat', 9: 'MsgHeartbeatResp', 13: 'MsgTransferLeader', 14: 'MsgTimeoutNow',
  15: 'MsgReadIndex', 16: 'MsgReadIndexResp', 17: 'MsgPreVote', 18: 'MsgPreVoteResp',
};

export function messageTypeName(t: MessageType): string {
  return messageTypeNames[t] ?? `Msg(${t})`;
}

const stateNames = ['Follower', 'Candidate', 'Leader', 'PreCandidate'];

export function stateName(s: StateType): string {
  return stateNames[s] ?? `State(${s})`;
}
