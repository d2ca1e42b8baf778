// WatchResponse encoding without protobufjs objects: the watch worker splices the stored
// mvccpb.KeyValue bytes into Event messages, as the storage worker does for RangeResponse.
//
//   WatchResponse: 1 header, 2 watch_id, 3 created, 4 canceled, 5 compact_revision,
//                  6 cancel_reason, 7 fragment, 11 events (repeated Event)
//   Event:         1 type (PUT = 0 is the default, not written), 2 kv, 3 prev_kv
//   ResponseHeader: 1 cluster_id, 2 member_id, 3 revision, 4 raft_term (uint64 / int64)
import Long from 'long';
import { assert } from '../util/assert';
import {
  varintSize, varintSizeBigInt, varintSizeLong, WireType, writeVarint, writeVarintBigInt,
  writeVarintLong,
} from '../util/protobuf_wire';

/** Tags ((field << 3) | wire type) of the fields written here, one byte each. */
const enum Tag {
  Header = (1 << 3) | WireType.Bytes,
  WatchId = (2 << 3) | WireType.Varint,
  Created = (3 << 3) | WireType.Varint,
  Canceled = (4 << 3) | WireType.Varint,
  CompactRevision = (5 << 3) | WireType.Varint,
  CancelReason = (6 << 3) | WireType.Bytes,
  Fragment = (7 << 3) | WireType.Varint,
  Events = (11 << 3) | WireType.Bytes,
  EventType = (1 << 3) | WireType.Varint,
  EventKv = (2 << 3) | WireType.Bytes,
  EventPrevKv = (3 << 3) | WireType.Bytes,
  HeaderClusterId = (1 << 3) | WireType.Varint,
  HeaderMemberId = (2 << 3) | WireType.Varint,
  HeaderRevision = (3 << 3) | WireType.Varint,
  HeaderRaftTerm = (4 << 3) | WireType.Varint,
}

/** One event of a response: the stored KeyValue bytes, and the previous ones when asked. */
export interface OutEvent {
  kv: Uint8Array;
  tombstone: boolean;
  prevKv: Uint8Array | null;
}

/** A watch id: a number, or a bigint for client-chosen ids outside the safe-integer range. */
export type WatchId = number | bigint;

export interface ResponseFields {
  revision: number;
  watchId: WatchId;
  created?: boolean;
  canceled?: boolean;
  compactRevision?: number;
  cancelReason?: string;
  fragment?: boolean;
}

/**
 * gRPC frames of one stream's responses, written in place: [u8 0][u32 BE length][message] each.
 * The engine encodes straight into it, so a response costs no buffer of its own.
 */
export class FrameBuffer {
  buf: Buffer;
  pos = 0;
  count = 0;

  constructor(initialBytes = 4096) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** Reserves a frame of `messageBytes` and returns where the message goes. */
  frame(messageBytes: number): number {
    this.ensure(5 + messageBytes);
    const b = this.buf;
    b[this.pos] = 0;
    b.writeUInt32BE(messageBytes, this.pos + 1);
    this.pos += 5;
    this.count++;
    return this.pos;
  }
}

export class WatchResponseEncoder {
  /** Header fields 1 and 2 (cluster and member ids), fixed for the process. */
  private readonly idFields: Buffer;
  raftTerm: number;

  constructor(clusterId: string, memberId: string, raftTerm: number) {
    const c = Long.fromString(clusterId, true);
    const m = Long.fromString(memberId, true);
    this.idFields = Buffer.allocUnsafe(2 + varintSizeLong(c) + varintSizeLong(m));
    let pos = 0;
    this.idFields[pos++] = Tag.HeaderClusterId;
    pos = writeVarintLong(this.idFields, pos, c);
    this.idFields[pos++] = Tag.HeaderMemberId;
    pos = writeVarintLong(this.idFields, pos, m);
    assert(pos === this.idFields.length, 'header id fields size');
    this.raftTerm = raftTerm;
  }

  private headerSize(revision: number): number {
    return this.idFields.length + 1 + varintSize(revision) + 1 + varintSize(this.raftTerm);
  }

  static eventSize(e: OutEvent): number {
    let n = 0;
    if (e.tombstone) n += 2;
    n += 1 + varintSize(e.kv.length) + e.kv.length;
    if (e.prevKv !== null) n += 1 + varintSize(e.prevKv.length) + e.prevKv.length;
    return n;
  }

  /** Size of the response without events (what etcd's WatchResponse.Size() counts, less events). */
  baseSize(f: ResponseFields): number {
    const h = this.headerSize(f.revision);
    let n = 1 + varintSize(h) + h;
    if (f.watchId !== 0) n += 1 + (typeof f.watchId === 'bigint' ? varintSizeBigInt(f.watchId) : varintSize(f.watchId));
    if (f.created) n += 2;
    if (f.canceled) n += 2;
    if (f.compactRevision) n += 1 + varintSize(f.compactRevision);
    if (f.cancelReason) {
      const l = Buffer.byteLength(f.cancelReason);
      n += 1 + varintSize(l) + l;
    }
    if (f.fragment) n += 2;
    return n;
  }

  /** Encoded size of the response with `events[from, to)`. */
  size(f: ResponseFields, events: readonly OutEvent[], from = 0, to = events.length): number {
    let n = this.baseSize(f);
    for (let i = from; i < to; i++) {
      const s = WatchResponseEncoder.eventSize(events[i]!);
      n += 1 + varintSize(s) + s;
    }
    return n;
  }

  /**
   * The events of a response as one piece (repeated field 11), to be shared by every watcher
   * that gets exactly these events: frameWithEvents() then copies it instead of re-encoding.
   */
  eventsSegment(events: readonly OutEvent[]): Buffer {
    let n = 0;
    for (const e of events) {
      const s = WatchResponseEncoder.eventSize(e);
      n += 1 + varintSize(s) + s;
    }
    const out = Buffer.allocUnsafe(n);
    const end = this.writeEvents(out, 0, events, 0, events.length);
    if (end !== n) throw new Error(`watch events size ${end} != ${n}`);
    return out;
  }

  /** Appends the framed response to `out`; returns the framed size. */
  frameWithEvents(out: FrameBuffer, f: ResponseFields, segment: Buffer): number {
    const base = this.baseSize(f);
    const size = base + segment.length;
    let pos = out.frame(size);
    const start = pos;
    pos = this.writeBase(out.buf, f, pos);
    segment.copy(out.buf, pos);
    pos += segment.length;
    if (pos - start !== size) throw new Error(`watch response size ${pos - start} != ${size}`);
    out.pos = pos;
    return 5 + size;
  }

  /** Appends the framed response with events[from, to) to `out`; returns the framed size. */
  frame(out: FrameBuffer, f: ResponseFields, events: readonly OutEvent[], from = 0, to = events.length): number {
    const size = this.size(f, events, from, to);
    let pos = out.frame(size);
    const start = pos;
    pos = this.writeBase(out.buf, f, pos);
    pos = this.writeEvents(out.buf, pos, events, from, to);
    if (pos - start !== size) throw new Error(`watch response size ${pos - start} != ${size}`);
    out.pos = pos;
    return 5 + size;
  }

  encode(f: ResponseFields, events: readonly OutEvent[], from = 0, to = events.length): Buffer {
    const total = this.size(f, events, from, to);
    const out = Buffer.allocUnsafe(total);
    let pos = this.writeBase(out, f, 0);
    pos = this.writeEvents(out, pos, events, from, to);
    if (pos !== total) throw new Error(`watch response size ${pos} != ${total}`);
    return out;
  }

  private writeBase(out: Buffer, f: ResponseFields, pos: number): number {
    const h = this.headerSize(f.revision);
    out[pos++] = Tag.Header;
    pos = writeVarint(out, pos, h);
    this.idFields.copy(out, pos);
    pos += this.idFields.length;
    out[pos++] = Tag.HeaderRevision;
    pos = writeVarint(out, pos, f.revision);
    out[pos++] = Tag.HeaderRaftTerm;
    pos = writeVarint(out, pos, this.raftTerm);
    if (f.watchId !== 0) {
      out[pos++] = Tag.WatchId;
      // int64: -1 (progress responses) takes ten bytes, as any negative int64
      pos = typeof f.watchId === 'bigint' ? writeVarintBigInt(out, pos, f.watchId)
        : writeVarint(out, pos, f.watchId);
    }
    if (f.created) {
      out[pos++] = Tag.Created;
      out[pos++] = 1;
    }
    if (f.canceled) {
      out[pos++] = Tag.Canceled;
      out[pos++] = 1;
    }
    if (f.compactRevision) {
      out[pos++] = Tag.CompactRevision;
      pos = writeVarint(out, pos, f.compactRevision);
    }
    if (f.cancelReason) {
      const l = Buffer.byteLength(f.cancelReason);
      out[pos++] = Tag.CancelReason;
      pos = writeVarint(out, pos, l);
      pos += out.write(f.cancelReason, pos);
    }
    if (f.fragment) {
      out[pos++] = Tag.Fragment;
      out[pos++] = 1;
    }
    return pos;
  }

  private writeEvents(out: Buffer, pos: number, events: readonly OutEvent[], from: number, to: number): number {
    for (let i = from; i < to; i++) {
      const e = events[i]!;
      out[pos++] = Tag.Events;
      pos = writeVarint(out, pos, WatchResponseEncoder.eventSize(e));
      if (e.tombstone) {
        out[pos++] = Tag.EventType;
        out[pos++] = 1; // DELETE
      }
      out[pos++] = Tag.EventKv;
      pos = writeVarint(out, pos, e.kv.length);
      out.set(e.kv, pos);
      pos += e.kv.length;
      if (e.prevKv !== null) {
        out[pos++] = Tag.EventPrevKv;
        pos = writeVarint(out, pos, e.prevKv.length);
        out.set(e.prevKv, pos);
        pos += e.prevKv.length;
      }
    }
    return pos;
  }
}
