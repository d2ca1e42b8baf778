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

export const emptyBytes = new Uint8Array(0);
