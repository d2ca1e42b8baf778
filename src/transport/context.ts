// What the transport's parts (outbound connections, inbound connections, snapshot transfers) need
// from the PeerTransport that owns them. Only peer_transport.ts implements it; the parts never
// import it, so each part can be read (and tested) on its own.
import type net from 'node:net';
import type { Message } from '../raft/types';
import type { Logger } from '../util/log';
import type { ForwardDone, ForwardError, ForwardReply } from './forward';
import type { ConnectionKind, Hello, RefuseReason } from './frame';
import type { InboundConnection } from './inbound';
import type { Flushable } from './outbound';
import type { Peer } from './peer';
import type { SnapshotSink } from './snapshot';

/** The transport's resolved bounds and timeouts (PeerTransportOptions with defaults filled). */
export interface TransportConfig {
  /** Largest encoded raft message sent or accepted. */
  readonly messageBytesMax: number;
  /** Largest frame payload accepted: a message plus its framing. */
  readonly frameBytesMax: number;
  readonly queueMessagesMax: number;
  readonly queueBytesMax: number;
  readonly socketBufferedBytesMax: number;
  readonly pingIntervalMs: number;
  readonly readTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  readonly snapshotTimeoutMs: number;
  /** 0 = no bound. */
  readonly snapshotBytesMax: number;
  readonly snapshotFrameBytesMax: number;
  readonly snapshotSinkPendingBytesMax: number;
  /** Forward requests in flight per connection, each side (limits.ts peerForwardInflightMax). */
  readonly forwardInflightMax: number;
  readonly forwardInflightBytesMax: number;
  /** TEST ONLY: the receiver swaps the request ids of pairs of answers (a checker must notice). */
  readonly forwardAnswerIdsSwapTest: boolean;
}

export interface TransportContext {
  readonly raftId: number;
  readonly memberId: bigint;
  readonly clusterId: bigint;
  readonly config: TransportConfig;
  readonly logger: Logger;
  nowMs(): number;
  /** Delay before the next dial after `failures` consecutive failures. */
  backoffMs(failures: number): number;
  /** Opens a TCP connection to the peer's current URL (through the dial table); tracked. */
  connect(peer: Peer, kind: ConnectionKind, onConnect: () => void): net.Socket;
  /** Calls f.flush() at the end of this event-loop turn (once, however often scheduled). */
  flushSchedule(f: Flushable): void;
  /** Deferred to the end of the turn, at most once per peer per turn. */
  unreachableReport(peer: Peer): void;
  snapshotStatusReport(peer: Peer, ok: boolean): void;
  refusedReport(peer: Peer, reason: RefuseReason): void;
  /** A checked Hello: the peer it comes from, or the reason to refuse it. */
  helloCheck(h: Hello): Peer | RefuseReason;
  /** An inbound connection was accepted for `peer` (replaces an older one of its kind). */
  inboundAttach(conn: InboundConnection): void;
  inboundDetach(conn: InboundConnection): void;
  /** A raft message from `peer`, checked (from, to, type). */
  deliver(peer: Peer, m: Message): void;
  snapshotSinkOpen(m: Message, size: number): SnapshotSink;
  /** A complete, verified snapshot: hands it to onSnapshot. */
  snapshotDeliver(peer: Peer, m: Message, handle: string): void;
  /**
   * A forward request from `peer`: hands it to onForward and returns true; false (reply never
   * called) when there is no handler.
   */
  forwardDeliver(peer: Peer, op: number, payload: Uint8Array, reply: ForwardReply): boolean;
  /** Calls done(code, empty) at the end of the turn (runs even while the transport closes). */
  forwardComplete(done: ForwardDone, code: ForwardError): void;
  /** The membership to answer a Members question with (membership/membership.ts encoding). */
  membersAnswer(): Uint8Array;
  /** Work close() must wait for (snapshot transfers, sink clean-up). Never rejects. */
  pendingTrack(p: Promise<void>): void;
  isClosed(): boolean;
}
