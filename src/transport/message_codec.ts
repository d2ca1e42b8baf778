// The one binary encoding of a raft Message between members (etcd: raftpb.Message, protobuf; the
// peer protocol need not speak rafthttp, so concord uses a smaller fixed-order layout). Used by
// the sending and the receiving transport and by the tests; nothing else packs a Message.
//
// Layout (integers are unsigned LEB128 varints of safe integers, at most 8 bytes each, since
// 7·8 = 56 >= 53 bits; "bytes" = varint length, then that many bytes):
//
//   u8      type          MessageType (etcd raftpb numbers); other values are refused
//   u8      flags         bit 0 reject, bit 1 snapshot present; other bits must be 0
//   varint  to, from, term, logTerm, index, commit, rejectHint      (7 varints, this order)
//   bytes   context
//   varint  entryCount, then per entry:
//             varint term, varint index, u8 type (EntryType), bytes data
//   if flags bit 1 (snapshot):
//             varint index, varint term,
//             varint voterCount, voters…, varint learnerCount, learners…,
//             bytes data
//
// Worked example: MsgHeartbeat to 2 from 1, term 5, commit 10, an 8-byte read context:
//   08 00 | 02 01 05 00 00 0a 00 | 08 <8 bytes> | 00            = 19 bytes
// and a MsgApp to 3 from 1, term 5, logTerm 5, index 9, commit 9, one entry (term 5, index 10,
// Normal) of 300 bytes: 03 00 | 03 01 05 05 09 09 00 | 00 | 01 05 0a 00 ac 02 <300 bytes>.
//
// Decoding copies: every byte field (context, entry data, snapshot data) of one message is a
// view into ONE fresh copy of that message's bytes, never into the caller's buffer, so a raft
// log that keeps an entry pins only its own message, not a 64 KiB socket read.
import { assert } from '../util/assert';
import { ConcordError, ErrorCode } from '../util/errors';
import {
  ConfState, Entry, EntryType, Message, MessageType, Snapshot, emptyBytes,
} from '../raft/types';

const flagReject = 1;
const flagSnapshot = 2;
const flagsKnown = flagReject | flagSnapshot;
const twoPow7 = 0x80;

/** A message that cannot be decoded (a peer's bug or a protocol mismatch; CRC caught noise). */
export const errMessageMalformed = new ConcordError(ErrorCode.Corrupt, 'peer message malformed');
errMessageMalformed.stack = undefined;

const knownTypes = new Uint8Array(32);
for (const t of [
  MessageType.Prop, MessageType.App, MessageType.AppResp, MessageType.Vote,
  MessageType.VoteResp, MessageType.Snap, MessageType.Heartbeat, MessageType.HeartbeatResp,
  MessageType.TransferLeader, MessageType.TimeoutNow, MessageType.ReadIndex,
  MessageType.ReadIndexResp, MessageType.PreVote, MessageType.PreVoteResp,
]) knownTypes[t] = 1;

export function isKnownMessageType(t: number): boolean {
  return t >= 0 && t < knownTypes.length && knownTypes[t] === 1;
}

/** Bytes of the varint of v (a non-negative safe integer). */
export function varintBytes(v: number): number {
  let n = 1;
  while (v >= twoPow7) {
    v = Math.floor(v / twoPow7);
    n++;
  }
  return n;
}

function uintCheck(v: number): void {
  assert(Number.isSafeInteger(v), 'message field not a safe integer');
  assert(v >= 0, 'message field negative');
}

function bytesFieldBytes(b: Uint8Array): number {
  return varintBytes(b.length) + b.length;
}

function confStateBytes(cs: ConfState): number {
  let n = varintBytes(cs.voters.length) + varintBytes(cs.learners.length);
  for (const id of cs.voters) n += varintBytes(id);
  for (const id of cs.learners) n += varintBytes(id);
  return n;
}

/** Exact encoded size of m. */
export function messageBytes(m: Message): number {
  let n = 2 + varintBytes(m.to) + varintBytes(m.from) + varintBytes(m.term) +
    varintBytes(m.logTerm) + varintBytes(m.index) + varintBytes(m.commit) +
    varintBytes(m.rejectHint) + bytesFieldBytes(m.context) + varintBytes(m.entries.length);
  for (const e of m.entries) {
    n += varintBytes(e.term) + varintBytes(e.index) + 1 + bytesFieldBytes(e.data);
  }
  const s = m.snapshot;
  if (s !== null) {
    n += varintBytes(s.metadata.index) + varintBytes(s.metadata.term) +
      confStateBytes(s.metadata.confState) + bytesFieldBytes(s.data);
  }
  return n;
}

function putVarint(buf: Uint8Array, pos: number, v: number): number {
  uintCheck(v);
  while (v >= twoPow7) {
    buf[pos++] = (v % twoPow7) | 0x80;
    v = Math.floor(v / twoPow7);
  }
  buf[pos++] = v;
  return pos;
}

function putBytes(buf: Uint8Array, pos: number, b: Uint8Array): number {
  pos = putVarint(buf, pos, b.length);
  buf.set(b, pos);
  return pos + b.length;
}

function putIds(buf: Uint8Array, pos: number, ids: number[]): number {
  pos = putVarint(buf, pos, ids.length);
  for (const id of ids) pos = putVarint(buf, pos, id);
  return pos;
}

/**
 * Writes m at buf[offset, offset + bytes), bytes = messageBytes(m) (the caller computed it to
 * size its buffer); returns the end offset.
 */
export function encodeMessage(m: Message, buf: Uint8Array, offset: number, bytes: number): number {
  assert(isKnownMessageType(m.type), 'encode: unknown message type');
  assert(offset + bytes <= buf.length, 'encode: buffer too small');
  buf[offset] = m.type;
  buf[offset + 1] = (m.reject ? flagReject : 0) | (m.snapshot !== null ? flagSnapshot : 0);
  let pos = offset + 2;
  pos = putVarint(buf, pos, m.to);
  pos = putVarint(buf, pos, m.from);
  pos = putVarint(buf, pos, m.term);
  pos = putVarint(buf, pos, m.logTerm);
  pos = putVarint(buf, pos, m.index);
  pos = putVarint(buf, pos, m.commit);
  pos = putVarint(buf, pos, m.rejectHint);
  pos = putBytes(buf, pos, m.context);
  pos = putVarint(buf, pos, m.entries.length);
  for (const e of m.entries) {
    assert(e.type === EntryType.Normal || e.type === EntryType.ConfChange, 'encode: entry type');
    pos = putVarint(buf, pos, e.term);
    pos = putVarint(buf, pos, e.index);
    buf[pos++] = e.type;
    pos = putBytes(buf, pos, e.data);
  }
  const s = m.snapshot;
  if (s !== null) {
    pos = putVarint(buf, pos, s.metadata.index);
    pos = putVarint(buf, pos, s.metadata.term);
    pos = putIds(buf, pos, s.metadata.confState.voters);
    pos = putIds(buf, pos, s.metadata.confState.learners);
    pos = putBytes(buf, pos, s.data);
  }
  assert(pos - offset === bytes, 'encode: size differs from messageBytes');
  return pos;
}

/** Encodes m into a new buffer of exactly its size (tests and cold paths). */
export function encodeMessageAlloc(m: Message): Uint8Array {
  const bytes = messageBytes(m);
  const buf = new Uint8Array(bytes);
  encodeMessage(m, buf, 0, bytes);
  return buf;
}

/**
 * Reads one message from untrusted bytes. Every malformation throws errMessageMalformed (an
 * expected condition: the caller resets the connection); never an assertion.
 */
class Reader {
  pos: number;
  // The lazily made copy of [start, end) that byte fields are views into; copyBase = start.
  private copy: Uint8Array | null = null;

  constructor(private readonly buf: Uint8Array, private readonly start: number,
    private readonly end: number) {
    this.pos = start;
  }

  u8(): number {
    if (this.pos >= this.end) throw errMessageMalformed;
    return this.buf[this.pos++]!;
  }

  varint(): number {
    let v = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      v += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(v)) throw errMessageMalformed;
        if (i > 0 && b === 0) throw errMessageMalformed; // non-minimal: one encoding per value
        return v;
      }
      scale *= twoPow7;
    }
    throw errMessageMalformed;
  }

  /** A count of items each at least minItemBytes long: bounded by what is left. */
  count(minItemBytes: number): number {
    const n = this.varint();
    if (n * minItemBytes > this.end - this.pos) throw errMessageMalformed;
    return n;
  }

  bytes(): Uint8Array {
    const n = this.varint();
    if (n > this.end - this.pos) throw errMessageMalformed;
    if (n === 0) return emptyBytes;
    if (this.copy === null) this.copy = this.buf.slice(this.start, this.end);
    const at = this.pos - this.start;
    this.pos += n;
    return this.copy.subarray(at, at + n);
  }

  ids(): number[] {
    const n = this.count(1);
    const ids = new Array<number>(n);
    for (let i = 0; i < n; i++) ids[i] = this.varint();
    return ids;
  }

  done(): boolean {
    return this.pos === this.end;
  }
}

function readEntries(r: Reader): Entry[] {
  const n = r.count(4); // term, index, type, data length: >= 4 bytes each
  const entries = new Array<Entry>(n);
  for (let i = 0; i < n; i++) {
    const term = r.varint();
    const index = r.varint();
    const type = r.u8();
    if (type !== EntryType.Normal && type !== EntryType.ConfChange) throw errMessageMalformed;
    entries[i] = { term, index, type, data: r.bytes() };
  }
  return entries;
}

function readSnapshot(r: Reader): Snapshot {
  const index = r.varint();
  const term = r.varint();
  const voters = r.ids();
  const learners = r.ids();
  return { metadata: { index, term, confState: { voters, learners } }, data: r.bytes() };
}

/** Decodes the message at buf[start, end) (exactly one message, nothing after it). */
export function decodeMessage(buf: Uint8Array, start: number, end: number): Message {
  assert(start >= 0 && start <= end && end <= buf.length, 'decode: range outside the buffer');
  const r = new Reader(buf, start, end);
  const type = r.u8();
  if (!isKnownMessageType(type)) throw errMessageMalformed;
  const flags = r.u8();
  if ((flags & ~flagsKnown) !== 0) throw errMessageMalformed;
  const to = r.varint();
  const from = r.varint();
  const term = r.varint();
  const logTerm = r.varint();
  const index = r.varint();
  const commit = r.varint();
  const rejectHint = r.varint();
  const context = r.bytes();
  const entries = readEntries(r);
  const snapshot = (flags & flagSnapshot) !== 0 ? readSnapshot(r) : null;
  if (!r.done()) throw errMessageMalformed;
  return {
    type: type as MessageType, to, from, term, logTerm, index, entries, commit, snapshot,
    reject: (flags & flagReject) !== 0, rejectHint, context,
  };
}
