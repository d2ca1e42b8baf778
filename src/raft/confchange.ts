// Single-server membership changes (etcd-io/raft confchange/confchange.go Simple, ConfChange v1)
// and the payload layout of EntryType.ConfChange entries.
//
// Layout: the protobuf encoding of etcd raftpb.ConfChange, fields in number order, all present:
//   1 ID      varint   the proposer's request id
//   2 Type    varint   ConfChangeType
//   3 NodeID  varint   raft node id
//   4 Context bytes    opaque (concord: member id and peer URLs)
// Varints carry up to 2^53 - 1 (ids are safe integers).
//
// One change at a time moves at most one voter, so every majority of the old voters overlaps
// every majority of the new ones (raft thesis §4.1). A change takes effect when applied.
import { assert } from '../util/assert';
import { ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState } from './types';

const tagId = 0x08;
const tagType = 0x10;
const tagNodeId = 0x18;
const tagContext = 0x22;
/** Bytes a ConfChange context may have: far above a member's URLs, far below an entry limit. */
export const confChangeContextBytesMax = 64 * 1024;

export function encodeConfChange(cc: ConfChange): Uint8Array {
  checkConfChange(cc);
  const out: number[] = [];
  out.push(tagId);
  pushVarint(out, cc.id);
  out.push(tagType);
  pushVarint(out, cc.type);
  out.push(tagNodeId);
  pushVarint(out, cc.nodeId);
  out.push(tagContext);
  pushVarint(out, cc.context.length);
  const head = new Uint8Array(out);
  const buf = new Uint8Array(head.length + cc.context.length);
  buf.set(head, 0);
  buf.set(cc.context, head.length);
  return buf;
}

/** Decodes an entry's payload; the bytes came from encodeConfChange, so anything else is a bug. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  const cc: ConfChange = {
    id: 0, type: ConfChangeType.AddNode, nodeId: 0, context: new Uint8Array(0),
  };
  const pos = { at: 0 };
  while (pos.at < data.length) {
    const tag = data[pos.at++]!;
    if (tag === tagId) cc.id = readVarint(data, pos);
    else if (tag === tagType) cc.type = readVarint(data, pos) as ConfChangeType;
    else if (tag === tagNodeId) cc.nodeId = readVarint(data, pos);
    else if (tag === tagContext) {
      const n = readVarint(data, pos);
      assert(pos.at + n <= data.length, 'conf change context truncated');
      cc.context = data.slice(pos.at, pos.at + n);
      pos.at += n;
    } else {
      assert(false, 'conf change: unknown field');
    }
  }
  checkConfChange(cc);
  return cc;
}

function checkConfChange(cc: ConfChange): void {
  assert(Number.isSafeInteger(cc.id) && cc.id >= 0, 'conf change id');
  assert(Number.isSafeInteger(cc.nodeId) && cc.nodeId > 0, 'conf change node id');
  assert(cc.type >= ConfChangeType.AddNode && cc.type <= ConfChangeType.AddLearnerNode,
    'conf change type');
  assert(cc.context.length <= confChangeContextBytesMax, 'conf change context too large');
}

function pushVarint(out: number[], v: number): void {
  assert(Number.isSafeInteger(v) && v >= 0, 'varint value');
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

function readVarint(data: Uint8Array, pos: { at: number }): number {
  let v = 0;
  let scale = 1;
  for (let i = 0; i < 8; i++) {
    assert(pos.at < data.length, 'varint truncated');
    const b = data[pos.at++]!;
    v += (b & 0x7f) * scale;
    if (b < 0x80) {
      assert(Number.isSafeInteger(v), 'varint beyond 2^53');
      return v;
    }
    scale *= 0x80;
  }
  assert(false, 'varint too long');
}

/**
 * The configuration after `cc` (etcd Changer.Simple for one change):
 *   AddNode         adds a voter, or promotes a learner;
 *   AddLearnerNode  adds a learner, or demotes a voter;
 *   RemoveNode      removes a voter or learner (a no-op for a non-member);
 *   UpdateNode      changes nothing raft knows (the context is the driver's).
 * Returns null when the result would have no voter (etcd: "removed all voters").
 */
export function applyChange(cs: ConfState, cc: ConfChange): ConfState | null {
  const voters = cs.voters.filter((id) => id !== cc.nodeId);
  const learners = cs.learners.filter((id) => id !== cc.nodeId);
  switch (cc.type) {
    case ConfChangeType.AddNode: voters.push(cc.nodeId); break;
    case ConfChangeType.AddLearnerNode: learners.push(cc.nodeId); break;
    case ConfChangeType.RemoveNode: break;
    case ConfChangeType.UpdateNode:
      return { voters: cs.voters.slice(), learners: cs.learners.slice() };
  }
  if (voters.length === 0) return null;
  voters.sort(ascending);
  learners.sort(ascending);
  assert(changedVoters(cs.voters, voters) <= 1, 'a simple change moves at most one voter');
  return { voters, learners };
}

function changedVoters(a: number[], b: number[]): number {
  let n = 0;
  for (const id of a) if (!b.includes(id)) n++;
  for (const id of b) if (!a.includes(id)) n++;
  return n;
}

function ascending(a: number, b: number): number {
  return a - b;
}

export function sameConfState(a: ConfState, b: ConfState): boolean {
  return sameIds(a.voters, b.voters) && sameIds(a.learners, b.learners);
}

function sameIds(a: number[], b: number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The durable start of a new cluster's log (etcd raft.Bootstrap): entries 1..n add the voters,
 * at term 1, committed. Every initial member starts with these entries, this hard state and an
 * empty configuration, and applies them like any committed entries; a member added later starts
 * empty and learns the whole configuration from the leader's log or snapshot.
 */
export function bootstrapLog(voters: number[]): { entries: Entry[]; hardState: HardState } {
  assert(voters.length > 0, 'bootstrap without voters');
  const ids = voters.slice().sort(ascending);
  const entries: Entry[] = ids.map((nodeId, i) => ({
    term: 1,
    index: i + 1,
    type: EntryType.ConfChange,
    data: encodeConfChange({
      id: 0, type: ConfChangeType.AddNode, nodeId, context: new Uint8Array(0),
    }),
  }));
  return { entries, hardState: { term: 1, vote: 0, commit: entries.length } };
}
