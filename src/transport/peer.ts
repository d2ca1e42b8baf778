// One remote member and the long-lived connections this member dials to it (etcd rafthttp
// peer.go + stream.go's streamWriter, turned around: concord's sender dials and writes; the
// receiver only answers Hello and Ping — see peer_transport.ts for why).
//
// Per peer, two streams (etcd: "msgappv2" and "message" streams):
//   app      MsgApp and MsgProp, the messages that carry entries (up to a few MiB each);
//   message  everything else: heartbeats, votes, responses, ReadIndex, TimeoutNow — small.
// A heartbeat written after a 1 MiB append on the SAME socket waits until the kernel has sent
// the append (on a 100 Mbit/s link: 80 ms, most of an election timeout); on its own socket it
// waits for nothing. Priority inside one socket cannot help once bytes are in the kernel's send
// buffer, so the split is by connection, as in etcd.
//
// Stream life:  Backoff ──dial──▶ Connecting ──connect──▶ Handshaking ──HelloAck ok──▶ Active
//                  ▲                  │ fail                  │ fail/refused            │ lost
//                  └──────────────────┴───────────────────────┴─────────────────────────┘
// Messages queue (bounded) while Connecting/Handshaking and go out once Active; on a failure the
// queue is dropped and the peer reported unreachable; while in Backoff (the peer is down) a
// message is dropped at once and reported (etcd: a full or closed stream reports unreachable).
import type net from 'node:net';
import { assert } from '../util/assert';
import { crc32 } from '../util/crc32';
import { Message } from '../raft/types';
import { TransportContext } from './context';
import { DialAddress } from './dial';
import {
  ConnectionKind, FrameError, FrameHandler, FrameReader, FrameType, RefuseReason,
  decodeHelloAck, decodePing, encodeHello, encodePing, frameErrorNames, frameHeaderBytes,
  messageFramingBytes, pingBytes, protocolVersion, refuseReasonNames, writeFrameHeader,
} from './frame';
import type { InboundConnection } from './inbound';
import { encodeMessage } from './message_codec';
import { MessageQueue } from './message_queue';
import type { SnapshotSend } from './snapshot';

export const enum StreamState {
  Connecting = 1,
  Handshaking = 2,
  Active = 3,
  Backoff = 4,
  Closed = 5,
}

export const streamStateNames: readonly string[] = [
  '', 'connecting', 'handshaking', 'active', 'backoff', 'closed',
];

/** Counters of one outbound stream (monotonic, except the queue gauges). */
export interface StreamStats {
  state: string;
  /** Clock ms when the current connection became active; 0 when not active. */
  activeSinceMs: number;
  /** socket.write calls: one per event-loop turn with something to send. */
  writes: number;
  sentMessages: number;
  /** Bytes written to the socket, framing included. */
  sentBytes: number;
  queuedMessages: number;
  queuedBytes: number;
  droppedQueueFull: number;
  /** Dropped because the stream was down (in backoff) or lost with them queued. */
  droppedDown: number;
  connects: number;
  dialFailures: number;
  refusals: number;
  frameErrors: number;
  timeouts: number;
}

export class OutboundStream implements FrameHandler {
  state = StreamState.Backoff;
  private socket: net.Socket | null = null;
  private reader: FrameReader | null = null;
  private readonly queue: MessageQueue;
  // Consecutive failed dials or lost connections since the last Active; drives the backoff.
  private failures = 0;
  private retryAtMs = 0;
  private stateSinceMs = 0;
  activeSinceMs = 0;
  // Liveness: a frame received or the socket drained (a slow link that is moving is alive).
  private progressMs = 0;
  private pingLastMs = 0;
  private pingSeq = 0;
  private pingSentAtMs = 0;
  private pingDue = false;
  /** Smoothed RTT (TCP's srtt, gain 1/8) and the last sample; 0 = none yet. */
  rttMs = 0;
  rttMsLast = 0;
  /** In the transport's flush list. Invariant: true iff listed once. */
  flushPending = false;
  // The socket holds >= socketBufferedBytesMax unsent: wait for 'drain'.
  private blocked = false;
  private socketError = '';
  // The peer URL index the current dial uses (a failure moves the peer off that URL only).
  private dialUrlIndex = 0;
  private readonly counters: StreamStats;

  constructor(private readonly ctx: TransportContext, readonly peer: Peer,
    readonly kind: ConnectionKind) {
    assert(kind === ConnectionKind.Message || kind === ConnectionKind.App, 'stream kind');
    this.queue = new MessageQueue(ctx.config.queueMessagesMax, ctx.config.queueBytesMax);
    this.counters = {
      state: '', activeSinceMs: 0, writes: 0, sentMessages: 0, sentBytes: 0, queuedMessages: 0,
      queuedBytes: 0, droppedQueueFull: 0, droppedDown: 0, connects: 0, dialFailures: 0,
      refusals: 0, frameErrors: 0, timeouts: 0,
    };
  }

  get name(): string {
    return this.kind === ConnectionKind.App ? 'app' : 'message';
  }

  stats(): StreamStats {
    const c = this.counters;
    c.state = streamStateNames[this.state]!;
    c.activeSinceMs = this.activeSinceMs;
    c.queuedMessages = this.queue.length;
    c.queuedBytes = this.queue.byteLength;
    return { ...c };
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

  /** Dials now when waiting in backoff (the peer just dialled us: it is up). */
  wake(): void {
    if (this.state === StreamState.Backoff) this.dial();
  }

  /** Called on every transport tick. */
  tick(nowMs: number): void {
    const cfg = this.ctx.config;
    switch (this.state) {
      case StreamState.Backoff:
        if (nowMs >= this.retryAtMs) this.dial();
        return;
      case StreamState.Connecting:
      case StreamState.Handshaking:
        if (nowMs - this.stateSinceMs > cfg.handshakeTimeoutMs) {
          this.counters.timeouts++;
          this.fail('handshake timed out');
        }
        return;
      case StreamState.Active:
        if (nowMs - this.progressMs > cfg.readTimeoutMs) {
          this.counters.timeouts++;
          this.fail('no frame from the peer within the read timeout');
          return;
        }
        if (nowMs - this.pingLastMs >= cfg.pingIntervalMs) {
          this.pingLastMs = nowMs;
          this.pingDue = true;
          this.ctx.flushSchedule(this);
        }
        return;
      case StreamState.Closed:
        return;
    }
  }

  private dial(): void {
    assert(this.state === StreamState.Backoff, 'dial outside backoff');
    this.dialUrlIndex = this.peer.urlIndexCurrent();
    const socket = this.ctx.connect(this.peer, this.kind, () => this.connected(socket));
    this.socket = socket;
    this.reader = new FrameReader(this.ctx.config.frameBytesMax, this);
    this.socketError = '';
    this.stateSet(StreamState.Connecting);
    socket.on('data', (chunk: Buffer) => this.data(socket, chunk));
    socket.on('drain', () => this.drained(socket));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (socket === this.socket) this.socketError = err.code ?? err.message;
    });
    socket.on('close', () => {
      if (socket === this.socket) this.fail(`connection closed (${this.socketError || 'eof'})`);
    });
  }

  private connected(socket: net.Socket): void {
    if (socket !== this.socket) return;
    socket.setNoDelay(true); // batching is per event-loop turn; Nagle would add 40 ms stalls
    socket.write(encodeHello({
      version: protocolVersion, kind: this.kind, clusterId: this.ctx.clusterId,
      fromMemberId: this.ctx.memberId, toMemberId: this.peer.memberId,
    }));
    this.stateSet(StreamState.Handshaking);
  }

  private data(socket: net.Socket, chunk: Buffer): void {
    if (socket !== this.socket) return;
    const err = this.reader!.push(chunk);
    if (err !== FrameError.None) {
      this.counters.frameErrors++;
      this.fail(`bad frame from the peer: ${frameErrorNames[err]!}`);
    }
  }

  onFrame(type: FrameType, payload: Buffer): boolean {
    this.progressMs = this.ctx.nowMs();
    if (this.state === StreamState.Handshaking && type === FrameType.HelloAck) {
      return this.helloAcked(payload);
    }
    if (this.state === StreamState.Active && type === FrameType.Pong) {
      const seq = decodePing(payload);
      if (seq < 0) return this.protocolError('malformed pong');
      if (seq === this.pingSeq && this.pingSentAtMs > 0) {
        this.rttMsLast = this.progressMs - this.pingSentAtMs;
        this.rttMs = this.rttMs === 0 ? this.rttMsLast :
          this.rttMs + (this.rttMsLast - this.rttMs) / 8;
        this.pingSentAtMs = 0;
      }
      return true;
    }
    return this.protocolError(`unexpected frame ${type}`);
  }

  private helloAcked(payload: Buffer): boolean {
    const ack = decodeHelloAck(payload);
    if (ack === null) return this.protocolError('malformed HelloAck');
    if (ack.reason !== RefuseReason.None) {
      this.counters.refusals++;
      this.ctx.logger.warn('peer refused connection', {
        'remote-peer-id': this.peer.memberIdHex, stream: this.name,
        reason: refuseReasonNames[ack.reason], detail: ack.text,
      });
      this.ctx.refusedReport(this.peer, ack.reason);
      this.fail(`refused: ${refuseReasonNames[ack.reason]!}`);
      return false;
    }
    if (ack.version !== protocolVersion) return this.protocolError('protocol version in HelloAck');
    const now = this.ctx.nowMs();
    this.stateSet(StreamState.Active);
    this.failures = 0;
    this.activeSinceMs = now;
    this.pingLastMs = now;
    this.counters.connects++;
    this.ctx.logger.info('established peer connection', {
      'remote-peer-id': this.peer.memberIdHex, stream: this.name,
    });
    if (this.queue.length > 0) this.ctx.flushSchedule(this);
    return true;
  }

  private protocolError(what: string): boolean {
    this.counters.frameErrors++;
    this.fail(`protocol error: ${what}`);
    return false;
  }

  private drained(socket: net.Socket): void {
    if (socket !== this.socket) return;
    this.progressMs = this.ctx.nowMs();
    this.blocked = false;
    if (this.queue.length > 0 || this.pingDue) this.ctx.flushSchedule(this);
  }

  /**
   * Writes what is queued, up to the socket's buffered bound, in ONE socket write: Messages
   * frames of at most frameBytesMax each, then a Ping when due. Called once per turn at most.
   */
  flush(): void {
    this.flushPending = false;
    if (this.state !== StreamState.Active || this.blocked) return;
    const socket = this.socket!;
    const cfg = this.ctx.config;
    const budget = cfg.socketBufferedBytesMax - socket.writableLength;
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
    const buf = Buffer.allocUnsafe(total + (ping ? frameHeaderBytes + pingBytes : 0));
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
    if (ping) {
      this.pingDue = false;
      this.pingSeq = (this.pingSeq + 1) >>> 0;
      this.pingSentAtMs = this.ctx.nowMs();
      buf.set(encodePing(FrameType.Ping, this.pingSeq), pos);
    }
    socket.write(buf);
    this.counters.writes++;
    this.counters.sentMessages += count;
    this.counters.sentBytes += buf.length;
    if (socket.writableLength >= cfg.socketBufferedBytesMax) this.blocked = true;
    else if (this.queue.length > 0) this.ctx.flushSchedule(this);
  }

  /** Tears the connection down and schedules a redial; queued messages are dropped. */
  fail(reason: string): void {
    if (this.state === StreamState.Closed || this.state === StreamState.Backoff) return;
    const wasActive = this.state === StreamState.Active;
    this.socketDrop();
    if (wasActive) {
      this.activeSinceMs = 0;
      this.ctx.logger.warn('lost peer connection', {
        'remote-peer-id': this.peer.memberIdHex, stream: this.name, reason,
      });
    } else {
      this.counters.dialFailures++;
      this.peer.urlFailed(this.dialUrlIndex);
      const level = this.failures === 0 ? 'warn' : 'debug';
      this.ctx.logger.log(level, 'failed to connect to peer; will retry', {
        'remote-peer-id': this.peer.memberIdHex, stream: this.name, reason,
      });
    }
    const dropped = this.queue.clear();
    if (dropped > 0) {
      this.counters.droppedDown += dropped;
      this.ctx.unreachableReport(this.peer);
    }
    this.failures++;
    this.retryAtMs = this.ctx.nowMs() + this.ctx.backoffMs(this.failures);
    this.stateSet(StreamState.Backoff);
  }

  /** For good (peer removed, transport closed): no redial, queued messages dropped silently. */
  close(): void {
    this.socketDrop();
    this.activeSinceMs = 0;
    this.queue.clear();
    this.stateSet(StreamState.Closed);
  }

  private socketDrop(): void {
    const socket = this.socket;
    this.socket = null;
    this.reader = null;
    this.blocked = false;
    this.pingDue = false;
    this.pingSentAtMs = 0;
    if (socket !== null) socket.destroy();
  }

  private stateSet(state: StreamState): void {
    this.state = state;
    this.stateSinceMs = this.ctx.nowMs();
    this.progressMs = this.stateSinceMs;
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
}

/** A remote member: its ids, URLs, outbound streams and the connections it dialled to us. */
export class Peer {
  readonly memberIdHex: string;
  urls: DialAddress[];
  urlTexts: string[];
  // Invariant: 0 <= urlIndex < urls.length. The URL dials use until one fails (etcd urlPicker).
  private urlIndex = 0;
  readonly message: OutboundStream;
  readonly app: OutboundStream;
  snapshotSend: SnapshotSend | null = null;
  /** Accepted inbound connections, by kind (index ConnectionKind; 0 unused). */
  readonly inbound: (InboundConnection | null)[] = [null, null, null, null];
  /** An unreachable report is queued for the end of this turn. */
  unreachablePending = false;
  readonly counters: PeerReceiveCounters = {
    receivedMessages: 0, receivedBytes: 0, inboundConnects: 0, inboundFrameErrors: 0,
    droppedTooLarge: 0, snapshotSentBytes: 0, snapshotReceivedBytes: 0, snapshotsSent: 0,
    snapshotsSendFailed: 0, snapshotsReceived: 0, snapshotsReceiveFailed: 0,
  };

  constructor(ctx: TransportContext, readonly raftId: number, readonly memberId: bigint,
    urls: DialAddress[], urlTexts: string[]) {
    assert(urls.length > 0 && urls.length === urlTexts.length, 'peer urls');
    this.memberIdHex = memberId.toString(16);
    this.urls = urls;
    this.urlTexts = urlTexts;
    this.message = new OutboundStream(ctx, this, ConnectionKind.Message);
    this.app = new OutboundStream(ctx, this, ConnectionKind.App);
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
