// Raft data types (etcd-io/raft raftpb). Plain data, no behaviour.

export const enum EntryType {
  Normal = 0,
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
}

/** What the driver must do, in order: persist, send, apply; then call advance(). */
export interface Ready {
  /** Set when term/vote/commit changed; persist with `entries` before sending messages. */
  hardState: HardState | null;
  /** Entries to append to stable storage. */
  entries: Entry[];
  /** Entries committed and ready to apply, in log order. */
  committedEntries: Entry[];
  /** True when hardState or entries must reach disk (fsync) before anything else. */
  mustSync: boolean;
}

export const emptyBytes = new Uint8Array(0);
