// One remote member and the long-lived connections this member dials to it (etcd rafthttp
// peer.go + stream.go's streamWriter, turned around: concord's sender dials and writes; the
// receiver only answers Hello and Ping — see peer_transport.ts for why). The connection's life
// (dial, Hello, Ping, timeouts, backoff) is outbound.ts; forward requests are forward.ts.
//
// Per peer, two streams (etcd: "msgappv2" and "message" streams):
//   app      MsgApp and MsgProp, the messages that carry entries (up to a few MiB each);
//   message  everything else: heartbeats, votes, responses, ReadIndex, TimeoutNow — small.
// A heartbeat written after a 1 MiB append on the SAME socket waits until the kernel has sent
// the append (on a 100 Mbit/s link: 80 ms, most of an election timeout); on its own socket it
// waits for nothing. Priority inside one socket cannot help once bytes are in the kernel's send
// buffer, so the split is by connection, as in etcd.
//
// Messages queue (bounded) while Connecting/Handshaking and go out once Active; on a failure the
// queue is dropped and the peer reported unreachable; while in Backoff (the peer is down) a
// message is dropped at once and reported (etcd: a full or closed stream reports unreachable).
import { assert } from '../util/assert';
import { crc32 } from '../util/crc32';
import { Message } from '../raft/types';
import { TransportContext } from './context';
import { DialAddress } from './dial';
import {
  ConnectionKind, FrameType, frameHeaderBytes, messageFramingBytes, writeFrameHeader,
} from './frame';
import { ForwardSender } from './forward';
import type { InboundConnection } from './inbound';
import { encodeMessage } from './message_codec';
import { MessageQueue } from './message_queue';
import {
  OutboundConnection, StreamState, StreamStats, pingFrameBytes,
} from './outbound';
import type { SnapshotSend } from './snapshot';

export { StreamState, StreamStats, streamStateNames } from './outbound';

/** A raft message stream: a bounded queue written in one socket write per turn. */
export class OutboundStream extends OutboundConnection {
  private readonly queue: MessageQueue;

  constructor(ctx: TransportContext, peer: Peer, kind: ConnectionKind) {
    assert(kind === ConnectionKind.Message || kind === ConnectionKind.App, 'stream kind');
    super(ctx, peer, kind, false);
    this.queue = new MessageQueue(ctx.config.queueMessagesMax, ctx.config.queueBytesMax);
  }

  get name(): string {
    return this.kind === ConnectionKind.App ? 'app' : 'message';
  }

  override stats(): StreamStats {
    const c = super.stats();
    c.queuedMessages = this.queue.length;
    c.queuedBytes = this.queue.byteLength;
    return c;
  }

  /** Queues m (size = messageBytes(m)); false when dropped (the peer is reported unreachable). */
  enqueue(m: Message, size: number): boolean {
    assert(this.state !== StreamState.Closed, 'enqueue on a closed stream');
    if (this.state === StreamState.Backoff) {
      this.counters.droppedDown++;
      this.ctx.unreachableReport(this.peer);
      return false;
    }
    if (!this.queue.fits(size)) {
      this.counters.droppedQueueFull++;
      this.ctx.unreachableReport(this.peer);
      return false;
    }
    this.queue.push(m, size);
    if (this.state === StreamState.Active) this.ctx.flushSchedule(this);
    return true;
  }

  protected activated(): void {
    if (this.queue.length > 0) this.ctx.flushSchedule(this);
  }

  protected activeFrame(type: FrameType): boolean {
    return this.protocolError(`unexpected frame ${type}`);
  }

  protected override rttSampled(ms: number): void {
    // The message stream's samples only: the app stream's Pongs wait behind appends.
    if (this.kind === ConnectionKind.Message) this.peer.rttObserve(ms);
  }

  protected dropped(closing: boolean): void {
    const dropped = this.queue.clear();
    if (dropped > 0 && !closing) {
      this.counters.droppedDown += dropped;
      this.ctx.unreachableReport(this.peer);
    }
  }

  /**
   * Writes what is queued, up to the socket's buffered bound, in ONE socket write: Messages
   * frames of at most frameBytesMax each, then a Ping when due. Called once per turn at most.
   */
  flush(): void {
    this.flushPending = false;
    const budget = this.writeBudget();
    if (budget < 0) return;
    const cfg = this.ctx.config;
    const framePayloadMax = cfg.messageBytesMax + messageFramingBytes;
    // Pass 1: how many messages, and the bytes of their frames.
    let count = 0;
    let total = 0;
    let framePayload = -1;
    while (count < this.queue.length && (count === 0 || total < budget)) {
      const add = messageFramingBytes + this.queue.sizeAt(count);
      if (framePayload < 0 || framePayload + add > framePayloadMax) {
        total += frameHeaderBytes;
        framePayload = 0;
      }
      framePayload += add;
      total += add;
      count++;
    }
    const ping = this.pingDue;
    if (count === 0 && !ping) return;
    const buf = Buffer.allocUnsafe(total + (ping ? pingFrameBytes : 0));
    // Pass 2: the same frames, encoded in place.
    let pos = 0;
    let frameStart = -1;
    for (let i = 0; i < count; i++) {
      const size = this.queue.sizeAt(0);
      const m = this.queue.shift();
      const add = messageFramingBytes + size;
      if (frameStart < 0 || pos - frameStart - frameHeaderBytes + add > framePayloadMax) {
        if (frameStart >= 0) messagesFrameClose(buf, frameStart, pos);
        frameStart = pos;
        pos += frameHeaderBytes;
      }
      buf.writeUInt32BE(size, pos);
      pos = encodeMessage(m, buf, pos + messageFramingBytes, size);
    }
    if (frameStart >= 0) messagesFrameClose(buf, frameStart, pos);
    assert(pos === total, 'flush: frames differ from pass 1');
    if (ping) this.pingWrite(buf, pos);
    if (this.writeTurn(buf, count) && this.queue.length > 0) this.ctx.flushSchedule(this);
  }
}

function messagesFrameClose(buf: Buffer, frameStart: number, end: number): void {
  const payloadStart = frameStart + frameHeaderBytes;
  writeFrameHeader(buf, frameStart, FrameType.Messages, end - payloadStart,
    crc32(buf, payloadStart, end));
}

/** Receive-side counters of one peer (its inbound connections). */
export interface PeerReceiveCounters {
  receivedMessages: number;
  /** Encoded message bytes received (etcd_network_peer_received_bytes_total). */
  receivedBytes: number;
  inboundConnects: number;
  inboundFrameErrors: number;
  droppedTooLarge: number;
  /** Snapshot payload bytes written to / received from the peer. */
  snapshotSentBytes: number;
  snapshotReceivedBytes: number;
  snapshotsSent: number;
  snapshotsSendFailed: number;
  snapshotsReceived: number;
  snapshotsReceiveFailed: number;
  /** Forward requests the peer sent us (on the forward connection it dialled). */
  forwardRequestsReceived: number;
  /** ForwardRequest frame bytes read (header included). */
  forwardReceivedBytes: number;
  /** Answers written to it (the handler's, and Busy/Unsupported/TooLarge), and their bytes. */
  forwardAnswersSent: number;
  forwardAnswerBytes: number;
  /** Answered Busy: over peerForwardInflightMax / peerForwardInflightBytesMax. */
  forwardBusy: number;
  /** Answered Unsupported: no onForward handler. */
  forwardUnsupported: number;
  /** reply() after the request's connection was gone (the sender had failed it already). */
  forwardRepliesLost: number;
}

/**
 * Upper bounds (seconds) of the RTT histogram, as etcd's
 * etcd_network_peer_round_trip_time_seconds: prometheus.ExponentialBuckets(0.0001, 2, 16),
 * 0.1 ms to 3.2768 s (etcd: server/etcdserver/api/rafthttp/metrics.go).
 */
export const peerRttBucketsSeconds: readonly number[] =
  Array.from({ length: 16 }, (_, i) => 0.0001 * 2 ** i);

/** A remote member: its ids, URLs, outbound streams and the connections it dialled to us. */
export class Peer {
  readonly memberIdHex: string;
  urls: DialAddress[];
  urlTexts: string[];
  // Invariant: 0 <= urlIndex < urls.length. The URL dials use until one fails (etcd urlPicker).
  private urlIndex = 0;
  readonly message: OutboundStream;
  readonly app: OutboundStream;
  /** Requests this member sends the peer (dialled on first use). */
  readonly forward: ForwardSender;
  snapshotSend: SnapshotSend | null = null;
  /** Accepted inbound connections, by kind (index ConnectionKind; 0 unused). */
  readonly inbound: (InboundConnection | null)[] = [null, null, null, null, null, null];
  /**
   * RTT samples of the message stream: count per bucket of peerRttBucketsSeconds (not
   * cumulative), the last slot for those above the last bound; their sum and count.
   */
  readonly rttBucketCounts = new Float64Array(peerRttBucketsSeconds.length + 1);
  rttSumSeconds = 0;
  rttCount = 0;
  /** An unreachable report is queued for the end of this turn. */
  unreachablePending = false;
  readonly counters: PeerReceiveCounters = {
    receivedMessages: 0, receivedBytes: 0, inboundConnects: 0, inboundFrameErrors: 0,
    droppedTooLarge: 0, snapshotSentBytes: 0, snapshotReceivedBytes: 0, snapshotsSent: 0,
    snapshotsSendFailed: 0, snapshotsReceived: 0, snapshotsReceiveFailed: 0,
    forwardRequestsReceived: 0, forwardReceivedBytes: 0, forwardAnswersSent: 0,
    forwardAnswerBytes: 0, forwardBusy: 0, forwardUnsupported: 0, forwardRepliesLost: 0,
  };

  constructor(ctx: TransportContext, readonly raftId: number, readonly memberId: bigint,
    urls: DialAddress[], urlTexts: string[]) {
    assert(urls.length > 0 && urls.length === urlTexts.length, 'peer urls');
    this.memberIdHex = memberId.toString(16);
    this.urls = urls;
    this.urlTexts = urlTexts;
    this.message = new OutboundStream(ctx, this, ConnectionKind.Message);
    this.app = new OutboundStream(ctx, this, ConnectionKind.App);
    this.forward = new ForwardSender(ctx, this);
  }

  /** One RTT sample (ms) into the histogram. */
  rttObserve(ms: number): void {
    const seconds = ms / 1000;
    let i = 0;
    while (i < peerRttBucketsSeconds.length && seconds > peerRttBucketsSeconds[i]!) i++;
    this.rttBucketCounts[i]!++;
    this.rttSumSeconds += seconds;
    this.rttCount++;
  }

  url(): DialAddress {
    return this.urls[this.urlIndex]!;
  }

  urlIndexCurrent(): number {
    return this.urlIndex;
  }

  /** A dial to urls[index] failed: the next dials try the next URL (unless already moved). */
  urlFailed(index: number): void {
    if (index === this.urlIndex) this.urlIndex = (this.urlIndex + 1) % this.urls.length;
  }

  urlsSet(urls: DialAddress[], urlTexts: string[]): void {
    assert(urls.length > 0 && urls.length === urlTexts.length, 'peer urls');
    this.urls = urls;
    this.urlTexts = urlTexts;
    this.urlIndex = 0;
  }
}
