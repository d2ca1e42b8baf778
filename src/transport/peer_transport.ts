// PeerTransport: raft messages and snapshots between the members of a cluster, on the peer port
// (etcd server/etcdserver/api/rafthttp). It runs on the main thread next to the raft core: the
// driver hands it Ready.messages with send() and steps what onMessage delivers. It does not
// speak etcd's rafthttp (a concord member cannot join an etcd cluster); it keeps rafthttp's
// behaviour: long-lived streams per peer (MsgApp on its own), bounded send buffers whose
// overflow drops the message and reports the peer unreachable, snapshots on a connection of
// their own with an explicit outcome, a cluster-id check on every connection.
//
// ---- Why plain TCP with our own frames, not node:http2 (measured) ----
// test/transport/tcp_vs_http2.bench.ts, loopback, receiver in a child process, node 20.20, the
// 2-vCPU dev box under load ~3 (hardware.md), 3 runs each; same 8-byte-framed messages, h2 = one
// long-lived POST stream per connection (as rafthttp streams are long-lived HTTP bodies):
//
//                                      TCP                      http2 (one stream)
//   RTT p50 / p99, one in flight        25-37 / 59-119 µs        30-57 / 97-143 µs
//   64 frames per write, 64 B frames    5.2-7.7 M msg/s          2.0-3.1 M msg/s
//     CPU per msg sender / receiver     0.07-0.08 / 0.06-0.08 µs 0.18-0.27 / 0.14-0.22 µs
//   64 frames per write, 300 B frames   2.2-3.2 M msg/s          1.3-1.8 M msg/s
//     CPU per msg sender / receiver     0.10-0.13 / 0.21-0.30 µs 0.26-0.37 / 0.28-0.39 µs
//   1 frame per write (a turn, idle)    65-125 k msg/s, 4.9-9.7  66-88 k msg/s, 7.0-7.7
//                                       µs sender per msg        µs sender per msg
// TCP wins batched throughput 2-2.5× at half the CPU, and RTT; one-per-write is even within
// this box's noise. http2 would also multiplex every stream of a peer on ONE TCP connection, so a
// snapshot or a big append would sit in the same kernel send buffer as the heartbeats (the
// head-of-line blocking the separate connections below exist to avoid), and its 64 KiB default
// windows would need tuning for snapshots (grpc-node#2429). HTTP's one advantage, reusing the
// listener with other HTTP handlers, concord does not need: the peer port is the peer protocol's.
// The transport itself, both ends on one thread (so CPU is sender + receiver), same box: 64
// heartbeats per turn ~0.93-0.97 M msg/s at ~1.0 µs per message; 64 appends of 256 B per turn
// ~0.28-0.32 M msg/s at 3.2-3.8 µs (two table CRC-32s of ~300 B and the decode copy); one
// heartbeat per turn 100-200 k msg/s at 5-13 µs (a write, a read and a setImmediate each).
//
// ---- Connections (frame layouts: frame.ts; message layout: message_codec.ts) ----
// The SENDER dials and writes; the receiver only answers Hello (HelloAck) and Ping (Pong) and ends
// a snapshot with SnapshotStatus. (etcd's
// streams are receiver-initiated; sender-initiated ones make "bytes from a to b" flow on the
// connections a opened, which is all the FaultProxy Partitioner needs, and let the dialler own
// backoff, queue and liveness in one place.) Per ordered pair of members:
//   message stream   votes, heartbeats, responses, ReadIndex, TimeoutNow   (etcd "message")
//   app stream       MsgApp, MsgProp: entries, up to messageBytesMax each   (etcd "msgappv2")
//   snapshot         one connection per transfer (etcd POST /raft/snapshot); snapshot.ts
// Why a separate app stream: see peer.ts. Every connection starts with Hello {protocol version,
// kind, cluster id, sender's member id, receiver's member id}; the acceptor refuses a mismatch
// with a reason (HelloAck), logs it and counts it (etcd: X-Etcd-Cluster-ID → 412).
//
// ---- Sending ----
// send() sorts messages by msg.to into the peer's stream queues (bounded: 4096 messages and
// peerQueueBytesMax, per stream). At the end of the event-loop turn (one setImmediate for the
// whole transport) each stream with something queued writes it in ONE socket write. Order: a
// peer receives the messages of one stream in the order they were sent; the two streams are not
// ordered with respect to each other (as etcd's message and msgappv2 streams). A full
// queue, a peer in backoff, or a lost connection drops the messages and calls onUnreachable(to)
// (once per peer per turn, after the turn's writes: never re-entering the driver inside send()).
// Liveness: a Ping every pingIntervalMs on each stream (its Pong is the RTT sample, etcd's
// etcd_network_peer_round_trip_time_seconds); no frame for readTimeoutMs (etcd
// ConnReadTimeout, 5 s) resets the connection on either side. Redial: exponential backoff with
// jitter (backoff.ts), and at once when the peer dials us (it is up again).
//
// ---- Lifetimes and callbacks ----
// A Message given to send() must not be changed afterwards (it is encoded when its turn's write
// happens). A delivered Message owns its bytes (message_codec.ts). Callbacks must be set right
// after listen() resolves, in the same turn; none is called after close() began. They run from
// socket events and timers: onMessage inline while reading (the driver steps it), the others at
// the end of a turn. An exception from a callback is a bug in the driver and propagates.
//
// ---- Seams ----
// Peer TLS: options.connect and options.serverCreate make the sockets; main passes the TLS
// makers of peer_tls.ts there (https:// peer URLs are marked by dial.ts). Test-only rerouting through fault proxies: options.dialTable or the
// CONCORD_TEST_PEER_DIAL environment variable (dial.ts).
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  peerForwardInflightBytesMax, peerForwardInflightMax, peerInboundHandshakesMax,
  peerMessageBytesDefault, peerQueueBytesMax, peerQueueMessagesMax, peerSnapshotFrameBytesMax,
  peerSnapshotSinkPendingBytesMax, peerSocketBufferedBytesMax,
} from '../config/limits';
import { assert } from '../util/assert';
import { Logger } from '../util/log';
import { Prng } from '../util/prng';
import { Message, MessageType } from '../raft/types';
import { backoffDelayMs } from './backoff';
import { TransportConfig, TransportContext } from './context';
import {
  DialAddress, addressKey, dialAddress, envDialTable, peerUrlAddress,
} from './dial';
import {
  ForwardDone, ForwardError, ForwardHandler, ForwardReply, ForwardSendStats,
} from './forward';
import {
  ConnectionKind, Hello, RefuseReason, forwardOpMax, forwardPrefixBytes, messageFramingBytes,
  protocolVersion, refuseReasonCount, refuseReasonNames, snapshotBeginPrefixBytes,
} from './frame';
import { InboundConnection, InboundCounters } from './inbound';
import { messageBytes } from './message_codec';
import { Flushable } from './outbound';
import { Peer, StreamStats } from './peer';
import {
  FileSnapshotSink, SnapshotSend, SnapshotSink, SnapshotSinkOpen, iteratorClose,
} from './snapshot';

export interface PeerTransportOptions {
  /** Listen address (etcd --listen-peer-urls host and port; 0 = any free port). */
  host: string;
  port: number;
  clusterId: bigint;
  /** This member's 64-bit id (what peers put in their Hello as the receiver). */
  memberId: bigint;
  /** This member's raft node id (messages must be addressed to it). */
  raftId: number;
  /** Where the default sink writes received snapshots (default: os.tmpdir()). */
  snapshotDir?: string;
  /** Replaces the default file sink. */
  snapshotSinkOpen?: SnapshotSinkOpen;
  /** Default peerMessageBytesDefault (3 MiB); raise with --max-request-bytes. */
  messageBytesMax?: number;
  /** Largest snapshot payload accepted; default 0 = no bound. */
  snapshotBytesMax?: number;
  queueMessagesMax?: number;
  queueBytesMax?: number;
  /** Default 1000 ms. */
  pingIntervalMs?: number;
  /** Default 5000 ms (etcd ConnReadTimeout). */
  readTimeoutMs?: number;
  /** Dial + Hello/HelloAck; default 2000 ms (etcd's peer dial timeout: 1 s + election). */
  handshakeTimeoutMs?: number;
  /**
   * A snapshot transfer without progress for this long fails (no drain while sending, no byte
   * while receiving, no verdict after the last byte); default 30 000 ms. Longer than the read
   * timeout: the receiver's disk, not the network, may be what is slow.
   */
  snapshotTimeoutMs?: number;
  /** First redial delay (etcd retries streams at 10/s: 100 ms); default 100 ms. */
  dialBackoffMsMin?: number;
  /** Default 1000 ms: one election timeout, so a restarted peer is back within one. */
  dialBackoffMsMax?: number;
  /** Timer resolution of timeouts, pings and redials; default 50 ms. */
  tickMs?: number;
  /** Test only: peer address → address to dial (default: CONCORD_TEST_PEER_DIAL, dial.ts). */
  dialTable?: ReadonlyMap<string, DialAddress>;
  /**
   * The membership a joining member is told (membership/membership.ts encoding), asked on a
   * Members connection (fetchMembers in members_fetch.ts). Empty when not given.
   */
  membersAnswer?: () => Uint8Array;
  /** Forward requests in flight per peer connection, each side (default peerForwardInflightMax). */
  forwardInflightMax?: number;
  /** ... and payload bytes (default peerForwardInflightBytesMax). */
  forwardInflightBytesMax?: number;
  /** TEST ONLY: answers leave with the request ids of pairs swapped (proves checkers check). */
  forwardAnswerIdsSwapTest?: boolean;
  /** Monotonic clock in ms (default: performance.timeOrigin + performance.now()). */
  nowMs?: () => number;
  /** Jitter source (default seeded from Math.random). */
  prng?: Prng;
  logger?: Logger;
  /** Seam for peer TLS: makes an outbound socket; onConnect once it is usable. */
  connect?: (address: DialAddress, onConnect: () => void) => net.Socket;
  /** Seam for peer TLS: makes the listening server; onConnection for each usable socket. */
  serverCreate?: (onConnection: (socket: net.Socket) => void) => net.Server;
}

/** A peer as stats() shows it. Counters are monotonic; etcd metric names where they exist. */
export interface PeerStats {
  raftId: number;
  memberId: bigint;
  urls: string[];
  /** The message stream to the peer is up. */
  active: boolean;
  /** Clock ms since when it is up (etcd peer activeSince, for strict reconfig checks); 0. */
  activeSinceMs: number;
  /** Smoothed RTT of Ping/Pong on the message stream, and the last sample; 0 = none yet. */
  rttMs: number;
  rttMsLast: number;
  sentMessages: number;
  /**
   * etcd_network_peer_sent_bytes_total: bytes written to the peer on its streams and forward
   * connection (framing included), forward answers written to it, plus snapshot payload bytes,
   * as etcd counts the snapshot it sends.
   */
  sentBytes: number;
  receivedMessages: number;
  /**
   * etcd_network_peer_received_bytes_total: raft message bytes, forward request and answer
   * frames (framing included), snapshot payload bytes.
   */
  receivedBytes: number;
  /**
   * etcd_network_peer_sent_failures_total: dropped messages, failed snapshot sends, forward
   * requests failed without an answer (timeout, unreachable, busy, too large; not Closed).
   */
  sentFailures: number;
  /**
   * etcd_network_peer_received_failures_total: bad frames from the peer on any connection,
   * failed snapshot receives.
   */
  receivedFailures: number;
  /** etcd_network_disconnected_peers_total: times the active message stream was lost. */
  disconnects: number;
  /**
   * etcd_network_peer_round_trip_time_seconds: message stream Ping/Pong samples per bucket of
   * peerRttBucketsSeconds (peer.ts; not cumulative, the last slot above the last bound).
   */
  rttBucketCounts: number[];
  rttSumSeconds: number;
  rttCount: number;
  /** Every drop (queue full, peer down, too large); each was reported unreachable. */
  droppedMessages: number;
  droppedTooLarge: number;
  writes: number;
  connects: number;
  inboundConnects: number;
  inboundFrameErrors: number;
  snapshotSending: boolean;
  snapshotsSent: number;
  snapshotsSendFailed: number;
  snapshotsReceived: number;
  snapshotsReceiveFailed: number;
  forwardRequestsReceived: number;
  forwardAnswersSent: number;
  forwardBusyAnswered: number;
  forwardUnsupportedAnswered: number;
  forwardRepliesLost: number;
  message: StreamStats;
  app: StreamStats;
  /** This member's requests to the peer. */
  forward: ForwardSendStats;
}

export interface TransportStats {
  /** This member (etcd's Local label). */
  memberId: bigint;
  peers: PeerStats[];
  inboundAccepted: number;
  /** Refused Hellos by reason name. */
  inboundRefused: Record<string, number>;
  /** Bad frames before a connection was attributed to a peer. */
  inboundFrameErrors: number;
  inboundTimeouts: number;
  /** Connections reset at once: too many waiting for their Hello. */
  inboundRejectedBusy: number;
  /** send() to a raft id with no peer. */
  droppedUnknownPeer: number;
  /** forward() to a raft id with no peer. */
  forwardUnknownPeer: number;
  /** Messages received while onMessage was not set. */
  receivedUnhandled: number;
  socketsOpen: number;
}

const enum EventKind {
  SnapshotStatus = 1,
  Refused = 2,
}

function noop(): void {}

const emptyPayload = new Uint8Array(0);

export class PeerTransport implements TransportContext {
  /** A raft message from a peer: step it. */
  onMessage: (m: Message) => void;
  /** A verified snapshot: `handle` is the sink's (the file's path by default); step m after. */
  onSnapshot: (m: Message, handle: string) => void = noop;
  /** Sending to raftId failed or was dropped: call rawNode.reportUnreachable(raftId). */
  onUnreachable: (raftId: number) => void = noop;
  /** Outcome of sendSnapshot: call rawNode.reportSnapshot(raftId, ok). */
  onSnapshotStatus: (raftId: number, ok: boolean) => void = noop;
  /** A peer refused our connection; MemberRemoved means this member was removed (etcd 410). */
  onRefused: (raftId: number, reason: RefuseReason) => void = noop;
  /**
   * A forward request from a peer (forward.ts): answer with reply(code, payload), now or later
   * (code below forwardErrorMin; a reply after the connection went away is a no-op). null: the
   * transport answers ForwardError.Unsupported.
   */
  onForward: ForwardHandler | null = null;

  readonly raftId: number;
  readonly memberId: bigint;
  readonly clusterId: bigint;
  readonly config: TransportConfig;
  readonly logger: Logger;
  readonly nowMs: () => number;
  private readonly prng: Prng;
  private readonly backoffMsMin: number;
  private readonly backoffMsMax: number;
  private readonly dialTable: ReadonlyMap<string, DialAddress>;
  private readonly membersAnswerFn: () => Uint8Array;
  private readonly snapshotDir: string;
  private readonly sinkOpen: SnapshotSinkOpen | null;
  private readonly connectFn: (address: DialAddress, onConnect: () => void) => net.Socket;
  private readonly server: net.Server;
  private readonly peersByRaftId = new Map<number, Peer>();
  private readonly peersByMemberId = new Map<bigint, Peer>();
  /** Members removed from the cluster: their Hellos are refused with MemberRemoved. */
  private readonly removedMemberIds = new Set<bigint>();
  private readonly inbound = new Set<InboundConnection>();
  private readonly inboundCounters: InboundCounters;
  private readonly sockets = new Set<net.Socket>();
  private readonly pending = new Set<Promise<void>>();
  // End-of-turn work. Invariant: a connection is in `dirty` iff its flushPending; a peer is in
  // `unreachable` iff peer.unreachablePending. The spare arrays are swapped in while flushing.
  private dirty: Flushable[] = [];
  private dirtySpare: Flushable[] = [];
  // Forward requests failed by the transport: done(code) at the end of the turn, in order.
  private completionDones: ForwardDone[] = [];
  private completionCodes: ForwardError[] = [];
  private unreachable: Peer[] = [];
  private unreachableSpare: Peer[] = [];
  private events: [EventKind, number, number][] = [];
  private immediate: NodeJS.Immediate | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  private socketsClosedResolve: (() => void) | null = null;
  private sinkSeq = 0;
  private droppedUnknownPeer = 0;
  private forwardUnknownPeer = 0;
  private receivedUnhandled = 0;
  private inboundRejectedBusy = 0;
  private readonly flushBound: () => void;
  private readonly tickBound: () => void;

  private constructor(opts: PeerTransportOptions) {
    this.onMessage = this.unhandled.bind(this);
    this.raftId = opts.raftId;
    this.memberId = opts.memberId;
    this.clusterId = opts.clusterId;
    const messageBytesMax = opts.messageBytesMax ?? peerMessageBytesDefault;
    this.config = {
      messageBytesMax,
      // A Messages frame with one maximal message, a SnapshotBegin, a forward request or answer:
      // the larger.
      frameBytesMax: messageBytesMax +
        Math.max(messageFramingBytes, snapshotBeginPrefixBytes, forwardPrefixBytes),
      queueMessagesMax: opts.queueMessagesMax ?? peerQueueMessagesMax,
      queueBytesMax: opts.queueBytesMax ?? peerQueueBytesMax,
      socketBufferedBytesMax: peerSocketBufferedBytesMax,
      pingIntervalMs: opts.pingIntervalMs ?? 1000,
      readTimeoutMs: opts.readTimeoutMs ?? 5000,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 2000,
      snapshotTimeoutMs: opts.snapshotTimeoutMs ?? 30_000,
      snapshotBytesMax: opts.snapshotBytesMax ?? 0,
      snapshotFrameBytesMax: Math.min(peerSnapshotFrameBytesMax, messageBytesMax),
      snapshotSinkPendingBytesMax: peerSnapshotSinkPendingBytesMax,
      forwardInflightMax: opts.forwardInflightMax ?? peerForwardInflightMax,
      forwardInflightBytesMax: opts.forwardInflightBytesMax ?? peerForwardInflightBytesMax,
      forwardAnswerIdsSwapTest: opts.forwardAnswerIdsSwapTest ?? false,
    };
    configCheck(this.config);
    this.logger = opts.logger ?? new Logger('info');
    this.nowMs = opts.nowMs ?? monotonicMs;
    this.prng = opts.prng ?? new Prng(Math.floor(Math.random() * 0x100000000));
    this.backoffMsMin = opts.dialBackoffMsMin ?? 100;
    this.backoffMsMax = opts.dialBackoffMsMax ?? 1000;
    assert(this.backoffMsMin > 0 && this.backoffMsMax >= this.backoffMsMin, 'dial backoff');
    this.dialTable = opts.dialTable ?? envDialTable;
    this.membersAnswerFn = opts.membersAnswer ?? (() => new Uint8Array(0));
    this.snapshotDir = opts.snapshotDir ?? os.tmpdir();
    this.sinkOpen = opts.snapshotSinkOpen ?? null;
    this.connectFn = opts.connect ?? tcpConnect;
    this.inboundCounters = {
      accepted: 0, refusedByReason: new Array<number>(refuseReasonCount).fill(0), frameErrors: 0,
      timeouts: 0,
    };
    this.flushBound = this.flush.bind(this);
    this.tickBound = this.tick.bind(this);
    const onConnection = (socket: net.Socket): void => this.accept(socket);
    this.server = opts.serverCreate !== undefined ? opts.serverCreate(onConnection) :
      net.createServer(onConnection);
    // A TLS server hands over its sockets once their handshake is done: the raw ones are
    // tracked from the start too, so that close() also ends handshakes in progress.
    if (opts.serverCreate !== undefined) this.server.on('connection', (socket: net.Socket) => this.socketTrack(socket));
  }

  /** Listens on opts.host:opts.port; rejects if it cannot (EADDRINUSE, say). */
  static listen(opts: PeerTransportOptions): Promise<PeerTransport> {
    assert(Number.isSafeInteger(opts.raftId) && opts.raftId > 0, 'raft id');
    assert(opts.memberId > 0n && opts.memberId < 1n << 64n, 'member id');
    assert(opts.clusterId >= 0n && opts.clusterId < 1n << 64n, 'cluster id');
    assert(Number.isInteger(opts.port) && opts.port >= 0 && opts.port <= 65535, 'port');
    const t = new PeerTransport(opts);
    return new Promise<PeerTransport>((resolve, reject) => {
      const listenFailed = (err: Error): void => reject(err);
      t.server.once('error', listenFailed);
      t.server.listen(opts.port, opts.host, () => {
        t.server.off('error', listenFailed);
        t.server.on('error', (err: Error) => {
          t.logger.error('peer listener failed', { error: err.message });
        });
        t.ticker = setInterval(t.tickBound, opts.tickMs ?? 50);
        t.ticker.unref();
        t.logger.info('listening for peers', { address: addressKey(t.address()) });
        resolve(t);
      });
    });
  }

  /** The address the transport listens on (the OS's port when opts.port was 0). */
  address(): DialAddress {
    const a = this.server.address() as net.AddressInfo;
    return { host: a.address, port: a.port };
  }

  /** Starts connections to a peer (etcd Transport.AddPeer). urls: its peer URLs, http://h:p. */
  addPeer(raftId: number, memberId: bigint, urls: readonly string[]): void {
    assert(this.closing === null, 'addPeer after close');
    assert(Number.isSafeInteger(raftId) && raftId > 0 && raftId !== this.raftId, 'peer raft id');
    assert(memberId > 0n && memberId < 1n << 64n && memberId !== this.memberId, 'peer member id');
    assert(!this.peersByRaftId.has(raftId), 'peer raft id already added');
    assert(!this.peersByMemberId.has(memberId), 'peer member id already added');
    const peer = new Peer(this, raftId, memberId, urlsParse(urls), urls.slice());
    this.peersByRaftId.set(raftId, peer);
    this.peersByMemberId.set(memberId, peer);
    this.removedMemberIds.delete(memberId);
    peer.message.wake();
    peer.app.wake();
  }

  /** Stops everything to and from a peer (etcd RemovePeer); its Hellos are refused afterwards. */
  removePeer(raftId: number): boolean {
    const peer = this.peersByRaftId.get(raftId);
    if (peer === undefined) return false;
    this.peersByRaftId.delete(raftId);
    this.peersByMemberId.delete(peer.memberId);
    this.removedMemberIds.add(peer.memberId);
    this.peerStop(peer, 'peer removed', ForwardError.UnknownPeer);
    return true;
  }

  /** New peer URLs (etcd UpdatePeer): used from the next dial on. */
  updatePeer(raftId: number, urls: readonly string[]): void {
    const peer = this.peersByRaftId.get(raftId);
    assert(peer !== undefined, 'updatePeer of an unknown peer');
    peer.urlsSet(urlsParse(urls), urls.slice());
  }

  hasPeer(raftId: number): boolean {
    return this.peersByRaftId.has(raftId);
  }

  /** The raft ids of the peers added (and not removed). */
  peerIds(): number[] {
    return [...this.peersByRaftId.keys()];
  }

  /** Clock ms since when the peer is connected, 0 if it is not (etcd ActiveSince). */
  activeSince(raftId: number): number {
    return this.peersByRaftId.get(raftId)?.message.activeSinceMs ?? 0;
  }

  /**
   * Queues each message for its peer (msg.to); written at the end of this event-loop turn.
   * Never blocks, never throws for a slow or dead peer: drops and reports it (onUnreachable).
   * MsgSnap goes through sendSnapshot.
   */
  send(messages: readonly Message[]): void {
    if (this.closing !== null) return;
    const cfg = this.config;
    for (const m of messages) {
      assert(m.from === this.raftId, 'send: message not from this member');
      assert(m.to !== this.raftId, 'send: message to self');
      assert(m.type !== MessageType.Snap, 'send: MsgSnap goes through sendSnapshot');
      const peer = this.peersByRaftId.get(m.to);
      if (peer === undefined) {
        this.droppedUnknownPeer++;
        continue;
      }
      const size = messageBytes(m);
      if (size > cfg.messageBytesMax) {
        peer.counters.droppedTooLarge++;
        this.logger.warn('dropped raft message larger than the peer message limit', {
          'remote-peer-id': peer.memberIdHex, type: m.type, size, limit: cfg.messageBytesMax,
        });
        this.unreachableReport(peer);
        continue;
      }
      const bulk = m.type === MessageType.App || m.type === MessageType.Prop;
      (bulk ? peer.app : peer.message).enqueue(m, size);
    }
  }

  /**
   * Sends a MsgSnap with its payload (size bytes; optional sha256 = the digest the caller knows,
   * checked before the last frame) on a connection of its own; onSnapshotStatus(to, ok) follows,
   * always (also when refused at once: a transfer to that peer already running, unknown peer).
   */
  sendSnapshot(msg: Message, payload: AsyncIterable<Uint8Array>, size: number,
    sha256: Uint8Array | null = null): void {
    assert(msg.type === MessageType.Snap && msg.snapshot !== null, 'sendSnapshot: not a MsgSnap');
    assert(msg.from === this.raftId && msg.to !== this.raftId, 'sendSnapshot: from/to');
    assert(Number.isSafeInteger(size) && size >= 0, 'sendSnapshot: size');
    assert(sha256 === null || sha256.length === 32, 'sendSnapshot: sha256');
    if (this.closing !== null) {
      iteratorClose(payload, this.logger);
      return;
    }
    const peer = this.peersByRaftId.get(msg.to);
    let refusal = '';
    if (peer === undefined) refusal = 'unknown peer';
    else if (peer.snapshotSend !== null) refusal = 'a snapshot to this peer is in flight';
    else if (messageBytes(msg) > this.config.messageBytesMax) refusal = 'MsgSnap too large';
    if (refusal !== '') {
      this.logger.warn('refused to send snapshot', { to: msg.to, reason: refusal });
      iteratorClose(payload, this.logger);
      this.eventPush(EventKind.SnapshotStatus, msg.to, 0);
      return;
    }
    const send = new SnapshotSend(this, peer!, msg, size);
    peer!.snapshotSend = send;
    // Not awaited by close(): an aborted transfer has nothing of ours left, and the caller's
    // source may be stuck in next() for as long as it likes (the loop ends when it yields).
    // run() rejects only on a bug, which then crashes the process as an unhandled rejection.
    void send.run(payload, sha256);
  }

  /**
   * Asks the peer `toRaftId` (forward.ts): op (0..65535) and payload (at most messageBytesMax;
   * not to be changed until done) go to its onForward; done(code, payload) is called exactly
   * once: with the peer's answer (code < forwardErrorMin, the server's), or with a ForwardError
   * (Timeout after timeoutMs, Unreachable, UnknownPeer, Busy, TooLarge, Closed), never inside
   * this call. Written at the end of the turn, with the turn's other requests to that peer.
   */
  forward(toRaftId: number, op: number, payload: Uint8Array, timeoutMs: number,
    done: ForwardDone): void {
    assert(Number.isInteger(op) && op >= 0 && op <= forwardOpMax, 'forward: op');
    assert(Number.isFinite(timeoutMs) && timeoutMs > 0, 'forward: timeout');
    assert(toRaftId !== this.raftId, 'forward: to self');
    if (this.closing !== null) {
      this.forwardComplete(done, ForwardError.Closed);
      return;
    }
    const peer = this.peersByRaftId.get(toRaftId);
    if (peer === undefined) {
      this.forwardUnknownPeer++;
      this.forwardComplete(done, ForwardError.UnknownPeer);
      return;
    }
    peer.forward.request(op, payload, timeoutMs, done);
  }

  stats(): TransportStats {
    const peers: PeerStats[] = [];
    for (const peer of this.peersByRaftId.values()) peers.push(peerStats(peer));
    const refused: Record<string, number> = {};
    this.inboundCounters.refusedByReason.forEach((n, reason) => {
      if (reason !== RefuseReason.None) refused[refuseReasonNames[reason]!] = n;
    });
    return {
      memberId: this.memberId, peers, inboundAccepted: this.inboundCounters.accepted,
      inboundRefused: refused,
      inboundFrameErrors: this.inboundCounters.frameErrors,
      inboundTimeouts: this.inboundCounters.timeouts,
      inboundRejectedBusy: this.inboundRejectedBusy, droppedUnknownPeer: this.droppedUnknownPeer,
      forwardUnknownPeer: this.forwardUnknownPeer, receivedUnhandled: this.receivedUnhandled,
      socketsOpen: this.sockets.size,
    };
  }

  peerStats(raftId: number): PeerStats | null {
    const peer = this.peersByRaftId.get(raftId);
    return peer === undefined ? null : peerStats(peer);
  }

  /**
   * Stops listening, resets every connection, aborts snapshot transfers (received partial data
   * discarded) and clears every timer; resolves once every socket has closed. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing === null) this.closing = this.closeRun();
    return this.closing;
  }

  private async closeRun(): Promise<void> {
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    if (this.immediate !== null) clearImmediate(this.immediate);
    this.immediate = null;
    const serverClosed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const peer of this.peersByRaftId.values()) {
      this.peerStop(peer, 'transport closed', ForwardError.Closed);
    }
    for (const conn of this.inbound) conn.close();
    for (const socket of this.sockets) socket.destroy();
    const socketsClosed = this.sockets.size === 0 ? Promise.resolve() :
      new Promise<void>((resolve) => { this.socketsClosedResolve = resolve; });
    await Promise.all([serverClosed, socketsClosed]);
    // Transfers and sink clean-ups, including those the closing itself started.
    while (this.pending.size > 0) await Promise.all([...this.pending]);
    // 'close' events come before libuv frees the handles (its close phase follows the check
    // phase): two turns, so that nothing of this transport is left when close() resolves.
    await new Promise<void>((resolve) => setImmediate(resolve));
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.dirty.length = 0;
    this.unreachable.length = 0;
    this.events.length = 0;
  }

  // ---- TransportContext ----

  backoffMs(failures: number): number {
    return backoffDelayMs(failures, this.backoffMsMin, this.backoffMsMax, this.prng);
  }

  connect(peer: Peer, kind: ConnectionKind, onConnect: () => void): net.Socket {
    const target = dialAddress(this.dialTable, peer.url());
    this.logger.debug('dialing peer', {
      'remote-peer-id': peer.memberIdHex, kind, address: addressKey(target),
    });
    const socket = this.connectFn(target, onConnect);
    this.socketTrack(socket);
    return socket;
  }

  flushSchedule(f: Flushable): void {
    if (!f.flushPending) {
      f.flushPending = true;
      this.dirty.push(f);
    }
    this.immediateArm();
  }

  unreachableReport(peer: Peer): void {
    if (peer.unreachablePending) return;
    peer.unreachablePending = true;
    this.unreachable.push(peer);
    this.immediateArm();
  }

  snapshotStatusReport(peer: Peer, ok: boolean): void {
    this.eventPush(EventKind.SnapshotStatus, peer.raftId, ok ? 1 : 0);
  }

  refusedReport(peer: Peer, reason: RefuseReason): void {
    this.eventPush(EventKind.Refused, peer.raftId, reason);
  }

  helloCheck(h: Hello): Peer | RefuseReason {
    if (h.version !== protocolVersion) return RefuseReason.ProtocolVersion;
    if (h.clusterId !== this.clusterId) return RefuseReason.ClusterIdMismatch;
    if (h.toMemberId !== this.memberId) return RefuseReason.WrongMember;
    if (this.removedMemberIds.has(h.fromMemberId)) return RefuseReason.MemberRemoved;
    return this.peersByMemberId.get(h.fromMemberId) ?? RefuseReason.UnknownMember;
  }

  inboundAttach(conn: InboundConnection): void {
    const peer = conn.peer!;
    const kind = conn.kind;
    assert(kind !== 0, 'inbound kind');
    const old = peer.inbound[kind];
    peer.inbound[kind] = conn;
    // A newer connection of the same kind replaces the old one (the dialer lost it and
    // redialled before we noticed); a newer snapshot transfer aborts the older one.
    if (old !== null && old !== undefined && old !== conn) old.close();
    // The peer is up: do not wait out a backoff to reach it.
    peer.message.wake();
    peer.app.wake();
    peer.forward.wake();
  }

  inboundDetach(conn: InboundConnection): void {
    this.inbound.delete(conn);
    const peer = conn.peer;
    if (peer !== null && conn.kind !== 0 && peer.inbound[conn.kind] === conn) {
      peer.inbound[conn.kind] = null;
    }
  }

  deliver(_peer: Peer, m: Message): void {
    this.onMessage(m);
  }

  forwardDeliver(peer: Peer, op: number, payload: Uint8Array, reply: ForwardReply): boolean {
    const handler = this.onForward;
    if (handler === null || this.closing !== null) return false;
    handler(peer.raftId, op, payload, reply);
    return true;
  }

  forwardComplete(done: ForwardDone, code: ForwardError): void {
    this.completionDones.push(done);
    this.completionCodes.push(code);
    // Also while closing: every done() is called once, close() or not.
    if (this.immediate === null) this.immediate = setImmediate(this.flushBound);
  }

  snapshotSinkOpen(m: Message, size: number): SnapshotSink {
    if (this.sinkOpen !== null) return this.sinkOpen(m, size);
    const name = `concord-snap-${this.memberId.toString(16)}-from-${m.from}-` +
      `${m.snapshot!.metadata.term}-${m.snapshot!.metadata.index}-${++this.sinkSeq}.part`;
    return new FileSnapshotSink(path.join(this.snapshotDir, name));
  }

  snapshotDeliver(_peer: Peer, m: Message, handle: string): void {
    this.onSnapshot(m, handle);
  }

  pendingTrack(p: Promise<void>): void {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  isClosed(): boolean {
    return this.closing !== null;
  }

  membersAnswer(): Uint8Array {
    return this.membersAnswerFn();
  }

  // ---- internals ----

  private unhandled(): void {
    this.receivedUnhandled++;
  }

  private accept(socket: net.Socket): void {
    this.socketTrack(socket);
    if (this.closing !== null) {
      socket.destroy();
      return;
    }
    let handshaking = 0;
    for (const conn of this.inbound) if (conn.isPending) handshaking++;
    if (handshaking >= peerInboundHandshakesMax) {
      this.inboundRejectedBusy++;
      socket.destroy();
      return;
    }
    this.inbound.add(new InboundConnection(this, socket, this.inboundCounters));
  }

  private socketTrack(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      if (this.sockets.size === 0 && this.socketsClosedResolve !== null) {
        const resolve = this.socketsClosedResolve;
        this.socketsClosedResolve = null;
        resolve();
      }
    });
  }

  private peerStop(peer: Peer, reason: string, forwardCode: ForwardError): void {
    peer.message.close();
    peer.app.close();
    peer.forward.closeWith(forwardCode);
    if (peer.snapshotSend !== null) peer.snapshotSend.abort(reason);
    for (const conn of peer.inbound) if (conn !== null) conn.close();
  }

  private eventPush(kind: EventKind, raftId: number, arg: number): void {
    this.events.push([kind, raftId, arg]);
    this.immediateArm();
  }

  private immediateArm(): void {
    if (this.immediate === null && this.closing === null) {
      this.immediate = setImmediate(this.flushBound);
    }
  }

  /** End of turn: one write per stream with something to send, then deferred callbacks. */
  private flush(): void {
    this.immediate = null;
    const dirty = this.dirty;
    this.dirty = this.dirtySpare;
    this.dirtySpare = dirty;
    for (let i = 0; i < dirty.length; i++) dirty[i]!.flush();
    dirty.length = 0;
    const unreachable = this.unreachable;
    this.unreachable = this.unreachableSpare;
    this.unreachableSpare = unreachable;
    for (let i = 0; i < unreachable.length; i++) {
      const peer = unreachable[i]!;
      peer.unreachablePending = false;
      if (this.closing === null && this.peersByRaftId.get(peer.raftId) === peer) {
        this.onUnreachable(peer.raftId);
      }
    }
    unreachable.length = 0;
    const events = this.events;
    this.events = [];
    for (const [kind, raftId, arg] of events) {
      if (this.closing !== null) break;
      if (kind === EventKind.SnapshotStatus) this.onSnapshotStatus(raftId, arg === 1);
      else this.onRefused(raftId, arg as RefuseReason);
    }
    this.completionsRun();
  }

  /**
   * done(code) of the forward requests failed before this turn's end. Those a done() fails
   * (it retried, say) wait for the next turn: a retry loop cannot hold the event loop.
   */
  private completionsRun(): void {
    const dones = this.completionDones;
    const codes = this.completionCodes;
    if (dones.length === 0) return;
    this.completionDones = [];
    this.completionCodes = [];
    for (let i = 0; i < dones.length; i++) dones[i]!(codes[i]!, emptyPayload);
  }

  private tick(): void {
    const now = this.nowMs();
    for (const peer of this.peersByRaftId.values()) {
      peer.message.tick(now);
      peer.app.tick(now);
      peer.forward.tick(now);
      if (peer.snapshotSend !== null) peer.snapshotSend.tick(now);
    }
    for (const conn of this.inbound) conn.tick(now);
  }
}

function monotonicMs(): number {
  return performance.timeOrigin + performance.now();
}

function tcpConnect(address: DialAddress, onConnect: () => void): net.Socket {
  return net.connect({ host: address.host, port: address.port }, onConnect);
}

function urlsParse(urls: readonly string[]): DialAddress[] {
  assert(urls.length > 0, 'peer without URLs');
  return urls.map((url) => {
    const a = peerUrlAddress(url);
    assert(a !== null, 'peer URL not http(s)://host:port');
    return a;
  });
}

function configCheck(c: TransportConfig): void {
  assert(c.messageBytesMax > 0 && c.frameBytesMax > c.messageBytesMax, 'message bytes');
  assert(c.queueMessagesMax > 0 && c.queueBytesMax >= c.messageBytesMax, 'queue bounds');
  assert(c.pingIntervalMs > 0 && c.readTimeoutMs > c.pingIntervalMs, 'ping vs read timeout');
  assert(c.handshakeTimeoutMs > 0 && c.snapshotTimeoutMs > 0, 'timeouts');
  assert(c.snapshotBytesMax >= 0, 'snapshot bytes max');
  assert(c.snapshotFrameBytesMax > 0, 'snapshot frame');
  assert(c.snapshotFrameBytesMax <= c.frameBytesMax, 'snapshot frame vs frame');
  assert(Number.isInteger(c.forwardInflightMax) && c.forwardInflightMax > 0, 'forward in flight');
  assert(c.forwardInflightBytesMax >= c.messageBytesMax, 'forward bytes vs message size');
}

function peerStats(peer: Peer): PeerStats {
  const m = peer.message.stats();
  const a = peer.app.stats();
  const f = peer.forward.stats();
  const c = peer.counters;
  const droppedMessages = m.droppedQueueFull + m.droppedDown + a.droppedQueueFull +
    a.droppedDown + c.droppedTooLarge;
  return {
    raftId: peer.raftId, memberId: peer.memberId, urls: peer.urlTexts.slice(),
    active: m.state === 'active', activeSinceMs: m.activeSinceMs,
    rttMs: peer.message.rttMs, rttMsLast: peer.message.rttMsLast,
    sentMessages: m.sentMessages + a.sentMessages,
    sentBytes: m.sentBytes + a.sentBytes + f.sentBytes + c.forwardAnswerBytes +
      c.snapshotSentBytes,
    receivedMessages: c.receivedMessages,
    receivedBytes: c.receivedBytes + f.receivedBytes + c.forwardReceivedBytes +
      c.snapshotReceivedBytes,
    sentFailures: droppedMessages + c.snapshotsSendFailed + peer.forward.failuresCount(),
    receivedFailures: c.inboundFrameErrors + m.frameErrors + a.frameErrors + f.frameErrors +
      c.snapshotsReceiveFailed,
    disconnects: m.disconnects,
    rttBucketCounts: Array.from(peer.rttBucketCounts), rttSumSeconds: peer.rttSumSeconds,
    rttCount: peer.rttCount,
    forwardRequestsReceived: c.forwardRequestsReceived, forwardAnswersSent: c.forwardAnswersSent,
    forwardBusyAnswered: c.forwardBusy, forwardUnsupportedAnswered: c.forwardUnsupported,
    forwardRepliesLost: c.forwardRepliesLost,
    droppedMessages,
    droppedTooLarge: c.droppedTooLarge, writes: m.writes + a.writes,
    connects: m.connects + a.connects, inboundConnects: c.inboundConnects,
    inboundFrameErrors: c.inboundFrameErrors, snapshotSending: peer.snapshotSend !== null,
    snapshotsSent: c.snapshotsSent, snapshotsSendFailed: c.snapshotsSendFailed,
    snapshotsReceived: c.snapshotsReceived, snapshotsReceiveFailed: c.snapshotsReceiveFailed,
    message: m, app: a, forward: f,
  };
}
