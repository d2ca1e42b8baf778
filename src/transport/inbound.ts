// A connection another member dialled to this one: Hello first (checked against this member's
// cluster id, member id and peer table), then either a stream of Messages frames (message and
// app connections), one snapshot transfer, or forward requests (forward.ts ForwardReceive). Untrusted input: every malformation resets the
// connection and is counted; nothing here throws from a socket event.
import type net from 'node:net';
import { assert } from '../util/assert';
import { ConcordError } from '../util/errors';
import { MessageType } from '../raft/types';
import { TransportContext } from './context';
import {
  ConnectionKind, FrameError, FrameHandler, FrameReader, FrameType, Hello, RefuseReason,
  decodeHello, decodePing, encodeFrame, encodeHelloAck, encodePing, frameErrorNames, messageFramingBytes,
  protocolVersion, refuseReasonNames,
} from './frame';
import { ForwardReceive } from './forward';
import { decodeMessage, errMessageMalformed } from './message_codec';
import type { Peer } from './peer';
import { SnapshotReceive } from './snapshot';

export const enum InboundState {
  /** Waiting for Hello. */
  Hello = 1,
  Stream = 2,
  Snapshot = 3,
  /** Refused or finished: the last frame is written, waiting for the socket to close. */
  Closing = 4,
  Closed = 5,
  /** A forward connection: ForwardRequest and Ping frames. */
  Forward = 6,
}

/** Why inbound connections ended badly, for the transport's counters. */
export interface InboundCounters {
  accepted: number;
  refusedByReason: number[];
  /** Bad frames on connections not (yet) attributed to a peer. */
  frameErrors: number;
  timeouts: number;
}

export class InboundConnection implements FrameHandler {
  state = InboundState.Hello;
  kind: ConnectionKind | 0 = 0;
  peer: Peer | null = null;
  receive: SnapshotReceive | null = null;
  forward: ForwardReceive | null = null;
  private readonly reader: FrameReader;
  private readonly acceptedAtMs: number;
  private lastReceivedMs: number;
  private closingSinceMs = 0;
  readonly remote: string;

  constructor(private readonly ctx: TransportContext, readonly socket: net.Socket,
    private readonly counters: InboundCounters) {
    this.reader = new FrameReader(ctx.config.frameBytesMax, this);
    this.acceptedAtMs = ctx.nowMs();
    this.lastReceivedMs = this.acceptedAtMs;
    this.remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.data(chunk));
    socket.on('error', () => undefined); // 'close' follows; the close path does the clean-up
    socket.on('close', () => this.closed());
  }

  get isPending(): boolean {
    return this.state === InboundState.Hello;
  }

  get isForwarding(): boolean {
    return this.state === InboundState.Forward;
  }

  private data(chunk: Buffer): void {
    if (this.state === InboundState.Closed) return;
    this.lastReceivedMs = this.ctx.nowMs();
    // Closing: our last frame is written; what the dialer sends until it reads it is discarded
    // unparsed (the reader stopped inside a chunk and is no longer at a frame boundary).
    if (this.state === InboundState.Closing) return;
    const err = this.reader.push(chunk);
    if (err !== FrameError.None) this.frameError(frameErrorNames[err]!);
  }

  onFrame(type: FrameType, payload: Buffer): boolean {
    switch (this.state) {
      case InboundState.Hello:
        return type === FrameType.Hello ? this.hello(payload) : this.frameError('expected Hello');
      case InboundState.Stream:
        if (type === FrameType.Messages) return this.messages(payload);
        if (type === FrameType.Ping) return this.ping(payload);
        return this.frameError(`unexpected frame ${type} on a stream`);
      case InboundState.Snapshot:
        if (!this.receive!.onFrame(type, payload)) return false;
        return this.state === InboundState.Snapshot;
      case InboundState.Forward:
        if (type === FrameType.ForwardRequest) return this.forward!.onRequest(payload);
        if (type === FrameType.Ping) return this.ping(payload);
        return this.frameError(`unexpected frame ${type} on a forward connection`);
      case InboundState.Closing:
      case InboundState.Closed:
        return false;
    }
  }

  private hello(payload: Buffer): boolean {
    const h = decodeHello(payload);
    if (h !== null && h.kind === ConnectionKind.Members) return this.members(h.version);
    const checked = h === null ? RefuseReason.BadHello : this.ctx.helloCheck(h);
    if (typeof checked === 'number') {
      this.refuse(checked, h === null ? 'malformed hello' : helloRefusalText(this.ctx, checked, h));
      return false;
    }
    assert(h !== null, 'hello checked');
    this.peer = checked;
    this.kind = h.kind;
    this.state = h.kind === ConnectionKind.Snapshot ? InboundState.Snapshot :
      h.kind === ConnectionKind.Forward ? InboundState.Forward : InboundState.Stream;
    this.counters.accepted++;
    checked.counters.inboundConnects++;
    this.socket.write(encodeHelloAck({
      reason: RefuseReason.None, version: protocolVersion, text: '',
    }));
    if (this.state === InboundState.Snapshot) this.receive = new SnapshotReceive(this.ctx, this);
    if (this.state === InboundState.Forward) this.forward = new ForwardReceive(this.ctx, this);
    this.ctx.inboundAttach(this);
    return true;
  }

  /**
   * A joining member asks who the members are (no ids to check yet: the answer is what any
   * member of the cluster may say about it, as etcd's /members is). Answered, then closed.
   */
  private members(version: number): boolean {
    if (version !== protocolVersion) {
      this.refuse(RefuseReason.ProtocolVersion, 'protocol version');
      return false;
    }
    const membership = this.ctx.membersAnswer();
    const p = Buffer.allocUnsafe(8 + membership.length);
    p.writeBigUInt64BE(this.ctx.clusterId, 0);
    p.set(membership, 8);
    this.closingStart();
    this.socket.write(encodeHelloAck({ reason: RefuseReason.None, version: protocolVersion, text: '' }));
    this.socket.end(encodeFrame(FrameType.Members, p));
    return false;
  }

  private refuse(reason: RefuseReason, text: string): void {
    this.counters.refusedByReason[reason]!++;
    this.ctx.logger.warn('refused peer connection', {
      reason: refuseReasonNames[reason], detail: text, remote: this.remote,
    });
    this.closingStart();
    // end() flushes the ack, then FIN; the tick destroys the socket if the dialer lingers.
    this.socket.end(encodeHelloAck({ reason, version: protocolVersion, text }));
  }

  private messages(payload: Buffer): boolean {
    const peer = this.peer!;
    const cfg = this.ctx.config;
    let pos = 0;
    while (pos < payload.length) {
      if (payload.length - pos < messageFramingBytes) return this.frameError('message length cut');
      const size = payload.readUInt32BE(pos);
      pos += messageFramingBytes;
      if (size > payload.length - pos || size > cfg.messageBytesMax) {
        return this.frameError('message length');
      }
      let m;
      try {
        m = decodeMessage(payload, pos, pos + size);
      } catch (err) {
        if (err !== errMessageMalformed) throw err;
        return this.frameError((err as ConcordError).message);
      }
      pos += size;
      if (m.from !== peer.raftId || m.to !== this.ctx.raftId) {
        return this.frameError('message from/to differ from the connection\'s members');
      }
      if (m.type === MessageType.Snap) return this.frameError('MsgSnap outside a snapshot');
      peer.counters.receivedMessages++;
      peer.counters.receivedBytes += size;
      this.ctx.deliver(peer, m);
      // The handler may have removed the peer or closed the transport.
      if (this.state !== InboundState.Stream) return false;
    }
    return true;
  }

  private ping(payload: Buffer): boolean {
    const seq = decodePing(payload);
    if (seq < 0) return this.frameError('malformed ping');
    this.socket.write(encodePing(FrameType.Pong, seq));
    return true;
  }

  /** A bad frame or message: count, log, reset the connection (the dialer redials). */
  frameError(what: string): boolean {
    if (this.peer !== null) this.peer.counters.inboundFrameErrors++;
    else this.counters.frameErrors++;
    this.ctx.logger.warn('bad frame on peer connection; resetting it', {
      'remote-peer-id': this.peer?.memberIdHex ?? '', remote: this.remote, error: what,
    });
    this.close();
    return false;
  }

  /** Called on every transport tick. */
  tick(nowMs: number): void {
    const cfg = this.ctx.config;
    switch (this.state) {
      case InboundState.Hello:
      case InboundState.Closing: {
        // Closing: the last frame is out; the dialer closes once it has read it, or we do after
        // a while. Not while it still sends (a snapshot sender that has not read our failure
        // yet): a reset would make its kernel drop the unread status frame.
        const since = this.state === InboundState.Hello ? this.acceptedAtMs :
          Math.max(this.closingSinceMs, this.lastReceivedMs);
        if (nowMs - since > cfg.handshakeTimeoutMs) {
          this.counters.timeouts++;
          this.close();
        }
        return;
      }
      case InboundState.Stream:
      case InboundState.Forward:
        if (nowMs - this.lastReceivedMs > cfg.readTimeoutMs) {
          this.counters.timeouts++;
          this.ctx.logger.warn('peer connection idle past the read timeout; closing it', {
            'remote-peer-id': this.peer!.memberIdHex, remote: this.remote,
          });
          this.close();
        }
        return;
      case InboundState.Snapshot:
        // The receive decides: it pauses the socket itself while its sink is slow.
        if (this.receive!.idle(nowMs, nowMs - this.lastReceivedMs)) {
          this.counters.timeouts++;
          this.receive!.fail('snapshot stream idle past the read timeout');
        }
        return;
      case InboundState.Closed:
        return;
    }
  }

  /** Snapshot done (status written): FIN after the last frame, as a refusal does. */
  finish(): void {
    if (this.state === InboundState.Closed) return;
    this.closingStart();
    this.socket.end();
  }

  private closingStart(): void {
    this.state = InboundState.Closing;
    this.closingSinceMs = this.ctx.nowMs();
  }

  /** Resets the connection now. */
  close(): void {
    if (this.state === InboundState.Closed) return;
    this.state = InboundState.Closed;
    this.socket.destroy();
    this.detach();
  }

  private closed(): void {
    if (this.state === InboundState.Closed) return;
    this.state = InboundState.Closed;
    this.detach();
  }

  private detach(): void {
    const receive = this.receive;
    if (receive !== null) receive.fail('connection closed');
    if (this.forward !== null) this.forward.closed();
    this.ctx.inboundDetach(this);
  }
}

function helloRefusalText(ctx: TransportContext, reason: RefuseReason, h: Hello): string {
  switch (reason) {
    case RefuseReason.ClusterIdMismatch:
      return `cluster ID mismatch: local ${ctx.clusterId.toString(16)}, ` +
        `remote ${h.clusterId.toString(16)} (member ${h.fromMemberId.toString(16)})`;
    case RefuseReason.WrongMember:
      return `this member is ${ctx.memberId.toString(16)}, not ${h.toMemberId.toString(16)}`;
    case RefuseReason.UnknownMember:
      return `member ${h.fromMemberId.toString(16)} is not a peer of this member`;
    case RefuseReason.MemberRemoved:
      return `member ${h.fromMemberId.toString(16)} was removed from the cluster`;
    case RefuseReason.ProtocolVersion:
      return `peer protocol version ${h.version} differs: this member speaks ${protocolVersion}`;
    default:
      return refuseReasonNames[reason] ?? 'refused';
  }
}
