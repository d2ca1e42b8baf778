// A connection this member dials to a peer and keeps (etcd rafthttp streamWriter, turned
// around: concord's sender dials and writes; the receiver only answers — see peer_transport.ts
// for why). The life of the connection lives here, once: dial through the dial table, Hello,
// HelloAck (a refusal goes to the transport's refusal handling), Ping/Pong (RTT) and the read
// timeout, one socket write per turn, the socket's buffered bound, failure and redial with
// backoff. What goes over it is the subclass's: the raft message streams (peer.ts
// OutboundStream) and the forward connection (forward.ts ForwardSender).
//
// Life:  Idle ─(lazy: first use)─┐
//                                ▼
//        Backoff ──dial──▶ Connecting ──connect──▶ Handshaking ──HelloAck ok──▶ Active
//          ▲  ▲               │ fail                  │ fail/refused             │ lost
//          │  └───────────────┴───────────────────────┘                          │
//          └──────── (eager streams) ──────────────────────── (lazy: Idle) ◀─────┘
// Eager connections (the raft streams) redial by themselves after a backoff; lazy ones (forward)
// dial when something is to be sent: after a lost connection at once (Idle), after a failed dial
// not before the backoff has passed (a peer that is down costs one dial per backoff, not one per
// request).
import type net from 'node:net';
import { assert } from '../util/assert';
import { TransportContext } from './context';
import {
  ConnectionKind, FrameError, FrameHandler, FrameReader, FrameType, RefuseReason,
  decodeHelloAck, decodePing, encodeHello, encodePing, frameErrorNames, frameHeaderBytes,
  pingBytes, protocolVersion, refuseReasonNames,
} from './frame';
import type { Peer } from './peer';

export const enum StreamState {
  Connecting = 1,
  Handshaking = 2,
  Active = 3,
  Backoff = 4,
  Closed = 5,
  /** A lazy connection with nothing to send yet, or whose connection was lost: dials on use. */
  Idle = 6,
}

export const streamStateNames: readonly string[] = [
  '', 'connecting', 'handshaking', 'active', 'backoff', 'closed', 'idle',
];

/** Bytes of a Ping frame (appended to a turn's write when one is due). */
export const pingFrameBytes = frameHeaderBytes + pingBytes;

/** Something the transport writes at the end of the turn (flushSchedule). */
export interface Flushable {
  /** In the transport's flush list. Invariant: true iff listed once. */
  flushPending: boolean;
  flush(): void;
}

/** Counters of one outbound connection (monotonic, except the queue gauges). */
export interface StreamStats {
  state: string;
  /** Clock ms when the current connection became active; 0 when not active. */
  activeSinceMs: number;
  /** socket.write calls: one per event-loop turn with something to send. */
  writes: number;
  /** Messages (streams) or requests (forward) written. */
  sentMessages: number;
  /** Bytes written to the socket, framing included. */
  sentBytes: number;
  /** Bytes read from the socket (streams: HelloAck and Pongs; forward: answers too). */
  receivedBytes: number;
  queuedMessages: number;
  queuedBytes: number;
  droppedQueueFull: number;
  /** Dropped because the stream was down (in backoff) or lost with them queued. */
  droppedDown: number;
  connects: number;
  /** Active connections lost (etcd_network_disconnected_peers_total, on the message stream). */
  disconnects: number;
  dialFailures: number;
  refusals: number;
  /** Bad or unexpected frames read from the peer on this connection. */
  frameErrors: number;
  timeouts: number;
}

export abstract class OutboundConnection implements FrameHandler, Flushable {
  state: StreamState;
  private socket: net.Socket | null = null;
  private reader: FrameReader | null = null;
  // Consecutive failed dials or lost connections since the last Active; drives the backoff.
  private failures = 0;
  protected retryAtMs = 0;
  private stateSinceMs = 0;
  activeSinceMs = 0;
  // Liveness: a frame received or the socket drained (a slow link that is moving is alive).
  private progressMs = 0;
  private pingLastMs = 0;
  private pingSeq = 0;
  private pingSentAtMs = 0;
  protected pingDue = false;
  /** Smoothed RTT (TCP's srtt, gain 1/8) and the last sample; 0 = none yet. */
  rttMs = 0;
  rttMsLast = 0;
  flushPending = false;
  // The socket holds >= socketBufferedBytesMax unsent: wait for 'drain'.
  private blocked = false;
  private socketError = '';
  // The peer URL index the current dial uses (a failure moves the peer off that URL only).
  private dialUrlIndex = 0;
  protected readonly counters: StreamStats;

  constructor(protected readonly ctx: TransportContext, readonly peer: Peer,
    readonly kind: ConnectionKind, private readonly lazy: boolean) {
    this.state = lazy ? StreamState.Idle : StreamState.Backoff;
    this.counters = {
      state: '', activeSinceMs: 0, writes: 0, sentMessages: 0, sentBytes: 0, receivedBytes: 0,
      queuedMessages: 0,
      queuedBytes: 0, droppedQueueFull: 0, droppedDown: 0, connects: 0, disconnects: 0,
      dialFailures: 0, refusals: 0, frameErrors: 0, timeouts: 0,
    };
  }

  /** For logs: message, app, forward. */
  abstract get name(): string;
  /** HelloAck accepted: the connection is usable (write what waits). */
  protected abstract activated(): void;
  /** A frame other than Pong while Active; return false after failing the connection. */
  protected abstract activeFrame(type: FrameType, payload: Buffer): boolean;
  /** The connection failed or closed: drop or fail what waits on it. */
  protected abstract dropped(closing: boolean): void;
  /** Writes what waits, at most once per turn (see writeTurn). */
  abstract flush(): void;

  stats(): StreamStats {
    const c = this.counters;
    c.state = streamStateNames[this.state]!;
    c.activeSinceMs = this.activeSinceMs;
    return { ...c };
  }

  /** The peer just dialled us: it is up, do not wait out a backoff to reach it. */
  wake(): void {
    if (this.state !== StreamState.Backoff) return;
    if (this.lazy) this.stateSet(StreamState.Idle);
    else this.dial();
  }

  /** Lazy connections: dials when idle (or backoff is over); false while in backoff. */
  protected use(): boolean {
    if (this.state === StreamState.Backoff && this.ctx.nowMs() >= this.retryAtMs) this.dial();
    else if (this.state === StreamState.Idle) this.dial();
    return this.state !== StreamState.Backoff && this.state !== StreamState.Closed;
  }

  /** Called on every transport tick. */
  tick(nowMs: number): void {
    const cfg = this.ctx.config;
    switch (this.state) {
      case StreamState.Backoff:
        if (!this.lazy && nowMs >= this.retryAtMs) this.dial();
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
      case StreamState.Idle:
      case StreamState.Closed:
        return;
    }
  }

  private dial(): void {
    assert(this.state === StreamState.Backoff || this.state === StreamState.Idle,
      'dial outside backoff');
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
    this.counters.receivedBytes += chunk.length;
    const err = this.reader!.push(chunk);
    // (A callback run by a frame may have closed or failed the connection meanwhile.)
    if (err !== FrameError.None && socket === this.socket) {
      this.counters.frameErrors++;
      this.fail(`bad frame from the peer: ${frameErrorNames[err]!}`);
    }
  }

  /** A Pong's RTT sample, in ms. */
  protected rttSampled(_ms: number): void {}

  onFrame(type: FrameType, payload: Buffer): boolean {
    this.progressMs = this.ctx.nowMs();
    if (this.state === StreamState.Handshaking && type === FrameType.HelloAck) {
      return this.helloAcked(payload);
    }
    if (this.state !== StreamState.Active) return this.protocolError(`unexpected frame ${type}`);
    if (type === FrameType.Pong) {
      const seq = decodePing(payload);
      if (seq < 0) return this.protocolError('malformed pong');
      if (seq === this.pingSeq && this.pingSentAtMs > 0) {
        this.rttMsLast = this.progressMs - this.pingSentAtMs;
        this.rttMs = this.rttMs === 0 ? this.rttMsLast :
          this.rttMs + (this.rttMsLast - this.rttMs) / 8;
        this.pingSentAtMs = 0;
        this.rttSampled(this.rttMsLast);
      }
      return true;
    }
    return this.activeFrame(type, payload);
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
    this.activated();
    return true;
  }

  protected protocolError(what: string): boolean {
    this.counters.frameErrors++;
    this.fail(`protocol error: ${what}`);
    return false;
  }

  private drained(socket: net.Socket): void {
    if (socket !== this.socket) return;
    this.progressMs = this.ctx.nowMs();
    this.blocked = false;
    this.ctx.flushSchedule(this);
  }

  /**
   * For flush(): the bytes this turn's write may add (the socket's buffered bound minus what it
   * holds; at least one frame is always allowed), or -1 when nothing may be written now (not
   * active, or waiting for 'drain').
   */
  protected writeBudget(): number {
    if (this.state !== StreamState.Active || this.blocked) return -1;
    return this.ctx.config.socketBufferedBytesMax - this.socket!.writableLength;
  }

  /** Writes the due Ping at buf[pos, pos + pingFrameBytes). */
  protected pingWrite(buf: Buffer, pos: number): void {
    assert(this.pingDue, 'ping not due');
    this.pingDue = false;
    this.pingSeq = (this.pingSeq + 1) >>> 0;
    this.pingSentAtMs = this.ctx.nowMs();
    buf.set(encodePing(FrameType.Ping, this.pingSeq), pos);
  }

  /** The turn's ONE write of `count` messages or requests; true when more may follow now. */
  protected writeTurn(buf: Buffer, count: number): boolean {
    const socket = this.socket!;
    socket.write(buf);
    this.counters.writes++;
    this.counters.sentMessages += count;
    this.counters.sentBytes += buf.length;
    if (socket.writableLength >= this.ctx.config.socketBufferedBytesMax) this.blocked = true;
    return !this.blocked;
  }

  /** Tears the connection down and schedules a redial; what waits on it is dropped. */
  fail(reason: string): void {
    if (this.state === StreamState.Closed || this.state === StreamState.Backoff ||
      this.state === StreamState.Idle) {
      return;
    }
    const wasActive = this.state === StreamState.Active;
    this.socketDrop();
    if (wasActive) {
      this.activeSinceMs = 0;
      this.counters.disconnects++;
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
    this.failures++;
    this.retryAtMs = this.ctx.nowMs() + this.ctx.backoffMs(this.failures);
    this.stateSet(this.lazy && wasActive ? StreamState.Idle : StreamState.Backoff);
    this.dropped(false);
  }

  /** For good (peer removed, transport closed): no redial. */
  close(): void {
    if (this.state === StreamState.Closed) return;
    this.socketDrop();
    this.activeSinceMs = 0;
    this.stateSet(StreamState.Closed);
    this.dropped(true);
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
