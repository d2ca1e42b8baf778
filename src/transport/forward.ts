// Forward requests: a member asks a peer and gets an answer, on the peer port (etcd's peer-port
// HTTP endpoints a follower uses to reach the leader: POST /leases with a LeaseKeepAliveRequest,
// /leases/internal for LeaseTimeToLive, /members/promote/<id>; etcd
// server/etcdserver/api/v3rpc/../leasehttp/http.go, api/etcdhttp/peer.go).
//
//   sender (PeerTransport.forward)                    receiver (PeerTransport.onForward)
//   dial on first use, Hello(kind Forward)  ──▶       check ids as for every connection, HelloAck
//   ForwardRequest{id, op, payload} × n     ──▶       onForward(from, op, payload, reply)
//     (one write per turn, pipelined)                   reply(code, payload), now or later
//   done(code, payload)                     ◀──       ForwardAnswer{id, code, payload}, any order
//   Ping                                    ──▶       Pong
//
// ONE long-lived connection per peer and direction, many requests in flight, matched by a u32
// request id the sender picks. Ops and answer codes are the server's: the transport carries an
// op (u16) and a code (u32 below forwardErrorMin) without reading them. Codes from
// forwardErrorMin up are the transport's own (ForwardError): the sender's done() gets them when
// no answer came, and the receiver's transport answers Busy / Unsupported / TooLarge itself.
//
// Why not on the raft streams: a forwarded request is answered, raft messages are not; a slow
// answer (a leader waiting for its apply loop) must not hold a heartbeat behind it; and a
// connection of its own lets the fault proxy cut it like the others, as etcd's separate HTTP
// requests are cut.
//
// Delivery: at most once. A request whose connection is lost before its answer is failed with
// Unreachable and NOT resent (the peer may have executed it: a retry is the server's choice,
// as etcd's client retries a lease keep-alive). The next request dials again at once (a lost
// connection) or after the backoff (a failed dial: a dead peer costs one dial per backoff).
//
// Bounds: per connection peerForwardInflightMax requests and peerForwardInflightBytesMax payload
// bytes on each side (limits.ts); past them a request is answered Busy at once, never queued
// without bound. Payloads are at most messageBytesMax (the sender fails a larger request with
// TooLarge; the receiver's transport answers TooLarge for a larger answer instead of writing a
// frame the sender would refuse).
//
// Callbacks: done() exactly once per forward(): with the answer (inline, while reading the
// connection) or with a ForwardError at the end of the turn (never inside forward() itself).
// onForward() runs inline while reading, like onMessage. Payloads handed to either are copies
// they own: a view would pin the socket's 64 KiB read buffer for as long as the leader waits.
import { assert } from '../util/assert';
import { TransportContext } from './context';
import {
  ConnectionKind, ForwardFields, FrameType, decodeForwardAnswer, decodeForwardRequest,
  encodeForwardAnswer, encodeForwardRequest, forwardFrameBytes, frameHeaderBytes,
} from './frame';
import type { InboundConnection } from './inbound';
import {
  Flushable, OutboundConnection, StreamState, StreamStats, pingFrameBytes,
} from './outbound';
import type { Peer } from './peer';

/**
 * The transport's codes, from forwardErrorMin up (answer codes below it are the server's and
 * opaque to the transport). Stable numbers: Busy, Unsupported and TooLarge go on the wire.
 */
export const enum ForwardError {
  /** No answer within the request's timeout (it may still be executed by the peer). */
  Timeout = 0xffffff01,
  /**
   * The connection failed before the answer came (dial failed, refused, lost, reset), or the
   * peer is in backoff after a failed dial. The peer may or may not have executed the request.
   */
  Unreachable = 0xffffff02,
  /** This transport was closed (close() fails what is pending with it). */
  Closed = 0xffffff03,
  /** No such peer (never added, or removed while the request was pending). */
  UnknownPeer = 0xffffff04,
  /** Too many requests or bytes in flight: on the sender (not sent) or the receiver (answered). */
  Busy = 0xffffff05,
  /** Answered by the receiver's transport: no onForward handler is set there. */
  Unsupported = 0xffffff06,
  /** The request (sender) or the answer (receiver) is larger than messageBytesMax. */
  TooLarge = 0xffffff07,
}
/** Codes >= this are ForwardError; the server's answer codes must be below it. */
export const forwardErrorMin = 0xffffff00;

export const forwardErrorNames: Readonly<Record<number, string>> = {
  [ForwardError.Timeout]: 'timeout', [ForwardError.Unreachable]: 'unreachable',
  [ForwardError.Closed]: 'closed', [ForwardError.UnknownPeer]: 'unknown-peer',
  [ForwardError.Busy]: 'busy', [ForwardError.Unsupported]: 'unsupported',
  [ForwardError.TooLarge]: 'too-large',
};

/** The sender's callback: an answer code (the server's, or a ForwardError) and its payload. */
export type ForwardDone = (code: number, payload: Uint8Array) => void;
/** The receiver's way to answer: once; a no-op when the connection is gone meanwhile. */
export type ForwardReply = (code: number, payload: Uint8Array) => void;
/** The receiver's handler (PeerTransport.onForward). */
export type ForwardHandler = (fromRaftId: number, op: number, payload: Uint8Array,
  reply: ForwardReply) => void;

const empty = new Uint8Array(0);

/** Counters of a peer's forward sender, beyond the connection's (monotonic, except gauges). */
export interface ForwardSendStats extends StreamStats {
  /** Requests issued and not yet answered or failed (gauge). */
  inflight: number;
  answered: number;
  failedTimeout: number;
  failedUnreachable: number;
  /** Refused by this member (over the in-flight bounds) without being sent. */
  failedBusy: number;
  failedTooLarge: number;
  /** Answers for requests already timed out (or never sent: a confused peer). */
  answersUnmatched: number;
}

/** One request the sender waits for. Invariant: in `pending` iff done !== null. */
interface ForwardPending {
  readonly requestId: number;
  readonly op: number;
  /** The caller's bytes until written; then empty. */
  payload: Uint8Array;
  readonly deadlineMs: number;
  done: ForwardDone | null;
  sent: boolean;
}

/** The forward connection this member dials to one peer: its requests and their answers. */
export class ForwardSender extends OutboundConnection {
  private readonly pending = new Map<number, ForwardPending>();
  // Requests not yet written, in issue order, from queueHead on; finished ones (done === null)
  // are skipped. Invariant: queuedBytes = sum of payload lengths of unfinished queued ones.
  private queue: (ForwardPending | null)[] = [];
  private queueHead = 0;
  private queuedBytes = 0;
  private requestIdNext = 1;
  // No pending deadline is before it (the timeout scan runs only once it has passed).
  private deadlineMinMs = Infinity;
  private closeCode: ForwardError = ForwardError.Closed;
  private readonly fields: ForwardFields = { requestId: 0, opOrCode: 0, payload: Buffer.alloc(0) };
  private readonly sendCounters = {
    answered: 0, failedTimeout: 0, failedUnreachable: 0, failedBusy: 0, failedTooLarge: 0,
    answersUnmatched: 0,
  };

  constructor(ctx: TransportContext, peer: Peer) {
    super(ctx, peer, ConnectionKind.Forward, true);
  }

  get name(): string {
    return 'forward';
  }

  override stats(): ForwardSendStats {
    const c = super.stats();
    c.queuedMessages = this.queue.length - this.queueHead;
    c.queuedBytes = this.queuedBytes;
    return { ...c, inflight: this.pending.size, ...this.sendCounters };
  }

  /** Requests failed by the transport without an answer (etcd_network_peer_sent_failures). */
  failuresCount(): number {
    const s = this.sendCounters;
    return s.failedTimeout + s.failedUnreachable + s.failedBusy + s.failedTooLarge;
  }

  /** PeerTransport.forward for this peer: see there. */
  request(op: number, payload: Uint8Array, timeoutMs: number, done: ForwardDone): void {
    const cfg = this.ctx.config;
    if (payload.length > cfg.messageBytesMax) {
      this.sendCounters.failedTooLarge++;
      this.ctx.forwardComplete(done, ForwardError.TooLarge);
      return;
    }
    if (this.pending.size >= cfg.forwardInflightMax ||
      this.queuedBytes + payload.length > cfg.forwardInflightBytesMax) {
      this.sendCounters.failedBusy++;
      this.ctx.forwardComplete(done, ForwardError.Busy);
      return;
    }
    if (!this.use()) {
      this.sendCounters.failedUnreachable++;
      this.ctx.forwardComplete(done, ForwardError.Unreachable);
      return;
    }
    let requestId = this.requestIdNext;
    while (requestId === 0 || this.pending.has(requestId)) requestId = (requestId + 1) >>> 0;
    this.requestIdNext = (requestId + 1) >>> 0;
    const deadlineMs = this.ctx.nowMs() + timeoutMs;
    const p: ForwardPending = { requestId, op, payload, deadlineMs, done, sent: false };
    this.pending.set(requestId, p);
    this.queue.push(p);
    this.queuedBytes += payload.length;
    if (deadlineMs < this.deadlineMinMs) this.deadlineMinMs = deadlineMs;
    if (this.state === StreamState.Active) this.ctx.flushSchedule(this);
  }

  protected activated(): void {
    if (this.queue.length > this.queueHead) this.ctx.flushSchedule(this);
  }

  protected activeFrame(type: FrameType, payload: Buffer): boolean {
    if (type !== FrameType.ForwardAnswer) return this.protocolError(`unexpected frame ${type}`);
    const f = this.fields;
    if (!decodeForwardAnswer(payload, f)) return this.protocolError('malformed forward answer');
    const p = this.pending.get(f.requestId);
    if (p === undefined) {
      this.sendCounters.answersUnmatched++;
      return true;
    }
    if (!p.sent) return this.protocolError('answer to a request not sent');
    this.pending.delete(f.requestId);
    const done = p.done!;
    p.done = null;
    this.sendCounters.answered++;
    done(f.opOrCode, new Uint8Array(f.payload));
    // done() may have closed the transport or removed the peer: stop reading this chunk then.
    return this.state === StreamState.Active;
  }

  /**
   * Writes the queued requests, up to the socket's buffered bound, in ONE socket write: one
   * ForwardRequest frame each, then a Ping when due. Called once per turn at most.
   */
  flush(): void {
    this.flushPending = false;
    const budget = this.writeBudget();
    if (budget < 0) return;
    // Pass 1: how many requests, and their bytes.
    let end = this.queueHead;
    let total = 0;
    while (end < this.queue.length && (total === 0 || total < budget)) {
      const p = this.queue[end++]!;
      if (p.done !== null) total += forwardFrameBytes(p.payload.length);
    }
    const ping = this.pingDue;
    if (total === 0 && !ping) {
      this.queueTrim(end);
      return;
    }
    const buf = Buffer.allocUnsafe(total + (ping ? pingFrameBytes : 0));
    // Pass 2: the same frames, encoded in place.
    let pos = 0;
    let count = 0;
    for (let i = this.queueHead; i < end; i++) {
      const p = this.queue[i]!;
      this.queue[i] = null;
      if (p.done === null) continue;
      pos = encodeForwardRequest(buf, pos, p.requestId, p.op, p.payload);
      this.queuedBytes -= p.payload.length;
      p.payload = empty;
      p.sent = true;
      count++;
    }
    assert(pos === total, 'forward flush: frames differ from pass 1');
    this.queueTrim(end);
    if (ping) this.pingWrite(buf, pos);
    if (this.writeTurn(buf, count) && this.queue.length > this.queueHead) {
      this.ctx.flushSchedule(this);
    }
  }

  /** Drops queue[..end) (written or finished): no shift(), a copy at most once per half. */
  private queueTrim(end: number): void {
    this.queueHead = end;
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    } else if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.copyWithin(0, this.queueHead);
      this.queue.length -= this.queueHead;
      this.queueHead = 0;
    }
  }

  override tick(nowMs: number): void {
    super.tick(nowMs);
    if (nowMs < this.deadlineMinMs) return;
    let min = Infinity;
    for (const p of this.pending.values()) {
      if (p.deadlineMs > nowMs) {
        if (p.deadlineMs < min) min = p.deadlineMs;
        continue;
      }
      this.sendCounters.failedTimeout++;
      this.finish(p, ForwardError.Timeout);
    }
    this.deadlineMinMs = min;
  }

  /** Fails a pending request (deferred to the end of the turn). */
  private finish(p: ForwardPending, code: ForwardError): void {
    const done = p.done!;
    p.done = null;
    this.pending.delete(p.requestId);
    if (!p.sent) {
      this.queuedBytes -= p.payload.length;
      p.payload = empty;
    }
    this.ctx.forwardComplete(done, code);
  }

  /** For good, failing what is pending with `code` (Closed, or UnknownPeer when removed). */
  closeWith(code: ForwardError): void {
    this.closeCode = code;
    this.close();
  }

  protected dropped(closing: boolean): void {
    const code = closing ? this.closeCode : ForwardError.Unreachable;
    for (const p of this.pending.values()) {
      if (code === ForwardError.Unreachable) this.sendCounters.failedUnreachable++;
      this.finish(p, code);
    }
    assert(this.pending.size === 0 && this.queuedBytes === 0, 'forward: pending after drop');
    this.queue.length = 0;
    this.queueHead = 0;
    this.deadlineMinMs = Infinity;
  }
}

/** An answer waiting for the turn's write. */
interface QueuedAnswer {
  requestId: number;
  code: number;
  payload: Uint8Array;
  /** Counted in the receiver's in-flight bounds (the handler's answers; not Busy ones). */
  counted: boolean;
}

/**
 * The receiving end of a peer's forward connection (an InboundConnection of kind Forward): hands
 * each request to onForward, writes the answers of a turn in one socket write.
 * Invariant: inflight = requests handed to onForward whose answer is not yet written;
 * inflightBytes = their request payloads until replied, then their answer payloads.
 */
export class ForwardReceive implements Flushable {
  flushPending = false;
  private inflight = 0;
  private inflightBytes = 0;
  private answers: QueuedAnswer[] = [];
  private blocked = false;
  private dead = false;
  private readonly fields: ForwardFields = { requestId: 0, opOrCode: 0, payload: Buffer.alloc(0) };

  constructor(private readonly ctx: TransportContext, private readonly conn: InboundConnection) {
    conn.socket.on('drain', () => {
      this.blocked = false;
      if (this.answers.length > 0) this.ctx.flushSchedule(this);
    });
  }

  /** A ForwardRequest frame; false when the connection was reset (or closed by the handler). */
  onRequest(frame: Buffer): boolean {
    const cfg = this.ctx.config;
    const peer = this.conn.peer!;
    const f = this.fields;
    if (!decodeForwardRequest(frame, f)) return this.conn.frameError('malformed forward request');
    const size = f.payload.length;
    if (size > cfg.messageBytesMax) return this.conn.frameError('forward request too large');
    peer.counters.forwardRequestsReceived++;
    peer.counters.forwardReceivedBytes += frameHeaderBytes + frame.length;
    // A sender bounded as we are never gets here: its own bound counts a request until the
    // answer is read. One that ignores Busy answers would grow them without bound: reset it.
    if (this.answers.length >= 2 * cfg.forwardInflightMax) {
      return this.conn.frameError('forward requests keep coming past Busy answers');
    }
    if (this.inflight >= cfg.forwardInflightMax ||
      this.inflightBytes + size > cfg.forwardInflightBytesMax) {
      peer.counters.forwardBusy++;
      this.answerQueue(f.requestId, ForwardError.Busy, empty, false);
      return true;
    }
    const requestId = f.requestId;
    this.inflight++;
    this.inflightBytes += size;
    // NB: one closure per request: the API hands the server a reply function (the server keeps
    // it while its apply loop works); requests come per client call, not per raft message.
    let replied = false;
    const reply: ForwardReply = (code, answer) => {
      assert(!replied, 'forward reply called twice');
      replied = true;
      this.replied(requestId, size, code, answer);
    };
    if (!this.ctx.forwardDeliver(peer, f.opOrCode, new Uint8Array(f.payload), reply)) {
      // No handler: never called, nothing counted.
      this.inflight--;
      this.inflightBytes -= size;
      peer.counters.forwardUnsupported++;
      this.answerQueue(requestId, ForwardError.Unsupported, empty, false);
    }
    return !this.dead && this.conn.isForwarding;
  }

  private replied(requestId: number, requestBytes: number, code: number,
    answer: Uint8Array): void {
    assert(Number.isInteger(code) && code >= 0, 'forward answer code');
    assert(code < forwardErrorMin, 'forward answer code in the transport\'s range');
    if (this.dead) {
      this.conn.peer!.counters.forwardRepliesLost++;
      return;
    }
    this.inflightBytes -= requestBytes;
    let payload = answer;
    let answerCode = code;
    if (payload.length > this.ctx.config.messageBytesMax) {
      this.ctx.logger.warn('forward answer larger than the peer message limit; answering TooLarge', {
        'remote-peer-id': this.conn.peer!.memberIdHex, size: payload.length,
        limit: this.ctx.config.messageBytesMax,
      });
      payload = empty;
      answerCode = ForwardError.TooLarge;
    }
    this.inflightBytes += payload.length;
    this.answerQueue(requestId, answerCode, payload, true);
  }

  private answerQueue(requestId: number, code: number, payload: Uint8Array,
    counted: boolean): void {
    this.answers.push({ requestId, code, payload, counted });
    this.ctx.flushSchedule(this);
  }

  /** Writes the queued answers, up to the socket's buffered bound, in ONE socket write. */
  flush(): void {
    this.flushPending = false;
    if (this.dead || this.blocked || this.answers.length === 0) return;
    const cfg = this.ctx.config;
    const socket = this.conn.socket;
    const budget = cfg.socketBufferedBytesMax - socket.writableLength;
    let count = 0;
    let total = 0;
    while (count < this.answers.length && (count === 0 || total < budget)) {
      total += forwardFrameBytes(this.answers[count++]!.payload.length);
    }
    if (cfg.forwardAnswerIdsSwapTest) answerIdsSwap(this.answers, count);
    const buf = Buffer.allocUnsafe(total);
    let pos = 0;
    for (let i = 0; i < count; i++) {
      const a = this.answers[i]!;
      pos = encodeForwardAnswer(buf, pos, a.requestId, a.code, a.payload);
      if (a.counted) {
        this.inflight--;
        this.inflightBytes -= a.payload.length;
      }
    }
    assert(pos === total, 'forward answers: frames differ from pass 1');
    assert(this.inflight >= 0 && this.inflightBytes >= 0, 'forward in-flight accounting');
    // Answers are few per turn unless the socket was blocked: splice is fine here.
    if (count === this.answers.length) this.answers.length = 0;
    else this.answers.splice(0, count);
    socket.write(buf);
    const peer = this.conn.peer!;
    peer.counters.forwardAnswersSent += count;
    peer.counters.forwardAnswerBytes += buf.length;
    if (socket.writableLength >= cfg.socketBufferedBytesMax) this.blocked = true;
    else if (this.answers.length > 0) this.ctx.flushSchedule(this);
  }

  /** The connection is gone: later replies are no-ops. */
  closed(): void {
    this.dead = true;
    this.answers.length = 0;
    this.inflight = 0;
    this.inflightBytes = 0;
  }
}

/** TEST ONLY (forwardAnswerIdsSwapTest): swaps the ids of answers 0/1, 2/3, … of a turn. */
function answerIdsSwap(answers: QueuedAnswer[], count: number): void {
  for (let i = 0; i + 1 < count; i += 2) {
    const id = answers[i]!.requestId;
    answers[i]!.requestId = answers[i + 1]!.requestId;
    answers[i + 1]!.requestId = id;
  }
}
