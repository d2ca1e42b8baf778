// A TCP fault proxy for tests that run real member processes (issue 12, "Fault tests with real
// processes"): it listens on a loopback port, forwards every accepted connection to one target
// host:port, and injects network faults per direction at run time, on live connections and new
// ones. It plays the part of etcd's `pkg/proxy` server (used by etcd's robustness tests on every
// peer link: `BlackholePeerNetwork`, `DelayPeerNetwork`), written for Node's event loop.
//
// Directions, named from the connecting side as in etcd's proxy:
//   tx = connecting side → target (the client of the TCP connection writes, the target reads)
//   rx = target → connecting side
//
// Faults (each direction has its own, all proxy-wide; `'both'` sets the two):
//   delay(dir, ms, jitterMs)  every chunk waits ms ± jitterMs (seeded PRNG) before it is written;
//                            a chunk never overtakes an earlier one (byte order is kept), so a
//                            jittered link adds latency, not reordering. Latency, not bandwidth:
//                            chunks in flight overlap (etcd's proxy sleeps per read, serially).
//   blackhole(dir)           bytes are dropped silently; connections stay open (one-way
//                            partition; both directions = two-way partition).
//   pause(dir)               bytes are held, in order, and delivered on resume(dir). Held bytes
//                            per connection and direction are bounded by heldBytesMax; beyond it
//                            the rest of the paused stream is dropped and counted (tail drop).
//   refuse(true)             new connections are accepted and reset at once (a dead member's
//                            port; a client sees ECONNRESET where a closed port gives
//                            ECONNREFUSED — both are a failed dial to a transport).
//   dropConnections()        every live connection is reset (RST, `socket.resetAndDestroy()`);
//                            new connections are still accepted. `reset()` is the same call.
// Order of checks for a chunk (etcd's ioCopy order): blackhole → pause/hold → delay → write.
// Half-close is forwarded (`allowHalfOpen` on both sockets): a FIN travels like a zero-length
// chunk after every earlier byte, delayed and held as they are, and is not lost in a blackhole
// (it waits for unblackhole, as a retransmitted FIN would).
//
// Dropped bytes leave a gap in a TCP byte stream: after a blackhole or a pause overflow, the
// receiver reads later bytes as if they followed the earlier ones (a framed protocol must detect
// it by length/CRC or time out). A real partition instead stalls TCP and loses nothing until a
// timeout kills the connection. With `resetGappedOnHeal`, every connection that lost bytes is
// reset when the last blackhole of the proxy is lifted (and on resume after an overflow), so
// the members reconnect to clean streams, as after a TCP timeout; the Partitioner turns it on.
//
// Flow control: when the destination's write returns false, the source socket is paused until
// 'drain'; delayed (not held) bytes per connection and direction above delayedBytesMax pause the
// source too (a bandwidth-delay window), until they fall to half of it.
//
// Errors: socket errors (ECONNRESET, EPIPE, a failed dial) are counted and reset the connection;
// nothing throws out of a socket event. An exception in the proxy's own handlers (a bug) is
// counted in `internalErrors`, kept in `stats().internalErrorFirst`, and resets that connection
// rather than crashing the test process while it still owns member processes; every test asserts
// `internalErrors === 0`. `stop()` closes the listener and every socket and clears every timer,
// and resolves once all of them are closed. Timers are unref'd; sockets are not.
//
// Cluster wiring (one proxy per ordered pair of members, see Partitioner below):
//
//        member i ──dial──▶ proxy(i→j) :P_ij ──▶ member j's real peer listener :R_j
//                  tx: bytes i→j on connections i opened
//                  rx: bytes j→i on the same connections
//
// 1. Allocate each member's real peer port R_j and start `Partitioner.start([{port: R_0}, …])`:
//    it starts N·(N−1) proxies on OS-chosen loopback ports; proxy(i→j) forwards to R_j.
// 2. Member j listens on R_j (`--listen-peer-urls http://127.0.0.1:R_j`).
// 3. Member i must dial j at `partitioner.peerAddress(i, j)` instead of R_j. NB: concord derives
//    member and cluster ids from the peer URLs in `--initial-cluster` (as etcd does), so every
//    member must get the same `--initial-cluster` string (with the real R_j URLs); the rerouting
//    belongs in the dialer: a test-only per-member table "R_j's host:port → P_ij's host:port",
//    given by `partitioner.routes(i)` (e.g. passed in an environment variable the peer transport
//    reads in test builds). Giving member i an `--initial-cluster` with P_ij URLs instead would
//    change the ids member i computes for its peers. Without a dial table, etcd's own layout
//    (one FaultProxy in front of each member, advertised as its peer URL) needs no concord
//    change but can only cut a member's links all together (isolate, not partition(A, B)).
// 4. A transport whose member j also opens connections to i carries j→i bytes on proxy(j→i).tx
//    and i→j bytes on proxy(j→i).rx (etcd's rafthttp: the receiver opens the stream, the sender
//    writes on the response). So "bytes from a to b" means proxy(a→b).tx plus proxy(b→a).rx, and
//    the Partitioner cuts both; a partition holds whichever side opens the connections.
// The same FaultProxy in front of a member's client port injects client-side faults.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { assert } from '../../src/util/assert';
import { Prng } from '../../src/util/prng';

export type Direction = 'tx' | 'rx';
export type DirectionArg = Direction | 'both';

export interface FaultProxyOptions {
  /** Port of the target (a member's real peer or client listener). */
  targetPort: number;
  /** Default '127.0.0.1'. */
  targetHost?: string;
  /** Default '127.0.0.1'. */
  listenHost?: string;
  /** Default 0: the OS chooses a free port (read it from `port`). */
  listenPort?: number;
  /** Seed of the jitter PRNG; the same seed and event order give the same delays. Default 1. */
  seed?: number;
  /** Bytes held per connection and direction while paused; beyond, dropped. Default 8 MiB. */
  heldBytesMax?: number;
  /** Delayed bytes per connection and direction before the source is paused. Default 1 MiB. */
  delayedBytesMax?: number;
  /** Reset connections that lost bytes when the faults that dropped them are lifted. */
  resetGappedOnHeal?: boolean;
}

/** Counters of one direction, summed over every connection the proxy has had. */
export interface DirectionStats {
  /** Read from the source socket. */
  bytesRead: number;
  /** Written to the destination socket. */
  bytesForwarded: number;
  /** Blackholed or over heldBytesMax (bytesOverflowed is the part over heldBytesMax). */
  bytesDropped: number;
  bytesOverflowed: number;
  /** Queued now in a paused direction. */
  bytesHeld: number;
  /** Queued now, waiting for their delay. */
  bytesDelayed: number;
  /** Still queued (or arriving) when their connection closed. */
  bytesDiscarded: number;
  /** Half-closes (FIN) read from the source, and passed on to the destination. */
  endsRead: number;
  endsForwarded: number;
}
// Invariant: bytesRead = bytesForwarded + bytesDropped + bytesHeld + bytesDelayed + bytesDiscarded

export interface FaultProxyStats {
  /** Every connection the listener accepted, refused ones included. */
  connectionsAccepted: number;
  connectionsRefused: number;
  connectionsOpen: number;
  /** Reset by dropConnections()/reset() or by resetGappedOnHeal. */
  connectionsDropped: number;
  /** Dials to the target that failed (the connecting side is then reset). */
  dialErrors: number;
  /** 'error' events on live connections (the connection is then reset). */
  socketErrors: number;
  /** Exceptions in the proxy's own handlers: bugs. Tests assert 0. */
  internalErrors: number;
  internalErrorFirst: unknown;
  tx: DirectionStats;
  rx: DirectionStats;
}

export interface DirectionFaultsView {
  delayMs: number;
  jitterMs: number;
  blackholed: boolean;
  paused: boolean;
}

export interface FaultsView {
  tx: DirectionFaultsView;
  rx: DirectionFaultsView;
  refusing: boolean;
}

const heldBytesMaxDefault = 8 * 1024 * 1024;
const delayedBytesMaxDefault = 1024 * 1024;
// Power of two: ChunkQueue indexes with a mask.
const chunkQueueCapacityMin = 16;

/** The faults of one direction, shared by every connection of the proxy. */
class DirectionFaults {
  delayMs = 0;
  jitterMs = 0;
  blackholed = false;
  paused = false;

  view(): DirectionFaultsView {
    return { delayMs: this.delayMs, jitterMs: this.jitterMs, blackholed: this.blackholed,
      paused: this.paused };
  }
}

class DirectionCounters {
  bytesRead = 0;
  bytesForwarded = 0;
  bytesDropped = 0;
  bytesOverflowed = 0;
  bytesDiscarded = 0;
  endsRead = 0;
  endsForwarded = 0;
}

/** FIFO of chunks with their release times: a growable ring, never Array.shift(). */
class ChunkQueue {
  private chunks: (Buffer | null)[] = new Array<Buffer | null>(chunkQueueCapacityMin).fill(null);
  private releaseAtMs = new Float64Array(chunkQueueCapacityMin);
  private head = 0;
  // Invariant: count <= chunks.length, and chunks.length is a power of two.
  count = 0;

  push(chunk: Buffer, releaseAtMs: number): void {
    if (this.count === this.chunks.length) this.grow();
    const mask = this.chunks.length - 1;
    const index = (this.head + this.count) & mask;
    this.chunks[index] = chunk;
    this.releaseAtMs[index] = releaseAtMs;
    this.count++;
  }

  peekReleaseAtMs(): number {
    assert(this.count > 0, 'chunk queue empty');
    return this.releaseAtMs[this.head]!;
  }

  shift(): Buffer {
    assert(this.count > 0, 'chunk queue empty');
    const chunk = this.chunks[this.head];
    assert(chunk !== null && chunk !== undefined, 'chunk queue slot empty');
    this.chunks[this.head] = null;
    this.head = (this.head + 1) & (this.chunks.length - 1);
    this.count--;
    return chunk;
  }

  private grow(): void {
    const capacity = this.chunks.length * 2;
    const chunks = new Array<Buffer | null>(capacity).fill(null);
    const releaseAtMs = new Float64Array(capacity);
    const mask = this.chunks.length - 1;
    for (let i = 0; i < this.count; i++) {
      const from = (this.head + i) & mask;
      chunks[i] = this.chunks[from]!;
      releaseAtMs[i] = this.releaseAtMs[from]!;
    }
    this.chunks = chunks;
    this.releaseAtMs = releaseAtMs;
    this.head = 0;
  }
}

// Why a source socket is paused (bit set); it is resumed when no bit is left.
const srcPauseWriteBlocked = 1;
const srcPauseDelayedFull = 2;

/** One direction of one connection: reads `src`, applies the direction's faults, writes `dst`. */
class Pipe {
  readonly conn: ProxyConnection;
  readonly faults: DirectionFaults;
  readonly counters: DirectionCounters;
  readonly src: net.Socket;
  readonly dst: net.Socket;
  private readonly queue = new ChunkQueue();
  // Invariant: queuedBytes = sum of the lengths of the chunks in queue.
  queuedBytes = 0;
  // Release time of the newest queued chunk or FIN: later ones never release before it.
  private releaseLastMs = 0;
  private srcEnded = false;
  private endReleaseAtMs = 0;
  private endForwarded = false;
  private srcPauseMask = 0;
  private timer: NodeJS.Timeout | null = null;
  // Set when a chunk is dropped during the current pause; cleared by resume.
  overflowing = false;
  /** Some bytes of this stream were dropped: the destination saw a gap. */
  gapped = false;
  readonly onData: (chunk: Buffer) => void;
  readonly onEnd: () => void;
  readonly onDrain: () => void;
  private readonly onTimer: () => void;

  constructor(conn: ProxyConnection, dir: Direction, src: net.Socket, dst: net.Socket) {
    this.conn = conn;
    this.faults = conn.proxy.faultsOf(dir);
    this.counters = conn.proxy.countersOf(dir);
    this.src = src;
    this.dst = dst;
    this.onData = this.guardData.bind(this);
    this.onEnd = this.guardEnd.bind(this);
    this.onDrain = this.guardDrain.bind(this);
    this.onTimer = this.guardTimer.bind(this);
    src.on('data', this.onData);
    src.on('end', this.onEnd);
    dst.on('drain', this.onDrain);
  }

  /** Bytes queued now, split by whether the direction is paused. */
  queuedHeldBytes(): number {
    return this.faults.paused ? this.queuedBytes : 0;
  }

  queuedDelayedBytes(): number {
    return this.faults.paused ? 0 : this.queuedBytes;
  }

  private guardData(chunk: Buffer): void {
    try {
      this.handleData(chunk);
    } catch (err) {
      this.conn.proxy.internalError(err, this.conn);
    }
  }

  private guardEnd(): void {
    try {
      this.srcEnded = true;
      this.counters.endsRead++;
      this.endReleaseAtMs = this.releaseAtNext(performance.now());
      this.pump();
    } catch (err) {
      this.conn.proxy.internalError(err, this.conn);
    }
  }

  private guardDrain(): void {
    try {
      this.srcResume(srcPauseWriteBlocked);
    } catch (err) {
      this.conn.proxy.internalError(err, this.conn);
    }
  }

  private guardTimer(): void {
    this.timer = null;
    try {
      this.pump();
    } catch (err) {
      this.conn.proxy.internalError(err, this.conn);
    }
  }

  private handleData(chunk: Buffer): void {
    const size = chunk.length;
    this.counters.bytesRead += size;
    if (this.conn.finished) {
      this.counters.bytesDiscarded += size;
      return;
    }
    if (this.faults.blackholed) {
      this.drop(size);
      return;
    }
    if (this.dst.destroyed) {
      // The destination closed: its kernel would answer with RST, so reset the source.
      this.counters.bytesDiscarded += size;
      this.conn.abort(false);
      return;
    }
    const faults = this.faults;
    if (this.queue.count === 0 && !faults.paused && faults.delayMs === 0 && faults.jitterMs === 0) {
      this.write(chunk);
      return;
    }
    const heldBytesMax = this.conn.proxy.heldBytesMax;
    if (faults.paused && (this.overflowing || this.queuedBytes + size > heldBytesMax)) {
      this.overflowing = true;
      this.counters.bytesOverflowed += size;
      this.drop(size);
      return;
    }
    this.queue.push(chunk, this.releaseAtNext(performance.now()));
    this.queuedBytes += size;
    if (!faults.paused && this.queuedBytes >= this.conn.proxy.delayedBytesMax) {
      this.srcPause(srcPauseDelayedFull);
    }
    this.pump();
  }

  /** When the next chunk (or FIN) may be written: now + delay ± jitter, never before the last. */
  private releaseAtNext(nowMs: number): number {
    const faults = this.faults;
    let delayMs = faults.delayMs;
    if (faults.jitterMs > 0) {
      const unit = this.conn.proxy.prng.nextU32() / 0x1_0000_0000; // [0, 1)
      delayMs += (unit * 2 - 1) * faults.jitterMs;
    }
    let releaseAtMs = nowMs + Math.max(0, delayMs);
    if (releaseAtMs < this.releaseLastMs) releaseAtMs = this.releaseLastMs;
    this.releaseLastMs = releaseAtMs;
    return releaseAtMs;
  }

  /** Writes every released chunk, then the FIN once the queue is empty. Idempotent. */
  pump(): void {
    if (this.conn.finished) return;
    const faults = this.faults;
    const nowMs = performance.now();
    while (this.queue.count > 0) {
      if (faults.blackholed) {
        const chunk = this.queue.shift();
        this.queuedBytes -= chunk.length;
        this.drop(chunk.length);
        continue;
      }
      // NB: a source paused for srcPauseDelayedFull stays paused while the direction is: its
      // bytes wait in the sender's kernel buffer, as behind a full TCP window.
      if (faults.paused) return;
      const releaseAtMs = this.queue.peekReleaseAtMs();
      if (releaseAtMs > nowMs) {
        this.timerArm(releaseAtMs - nowMs);
        break;
      }
      const chunk = this.queue.shift();
      this.queuedBytes -= chunk.length;
      this.write(chunk);
    }
    assert(this.queue.count > 0 || this.queuedBytes === 0, 'queued bytes without chunks');
    if (this.queuedBytes * 2 <= this.conn.proxy.delayedBytesMax) {
      this.srcResume(srcPauseDelayedFull);
    }
    if (this.queue.count > 0 || !this.srcEnded || this.endForwarded) return;
    if (faults.blackholed || faults.paused) return;
    if (this.endReleaseAtMs > nowMs) {
      this.timerArm(this.endReleaseAtMs - nowMs);
      return;
    }
    this.endForwarded = true;
    if (this.dst.destroyed || this.dst.writableEnded) return;
    this.counters.endsForwarded++;
    this.dst.end();
  }

  private write(chunk: Buffer): void {
    if (this.dst.destroyed || this.dst.writableEnded) {
      this.counters.bytesDiscarded += chunk.length;
      return;
    }
    this.counters.bytesForwarded += chunk.length;
    if (!this.dst.write(chunk)) this.srcPause(srcPauseWriteBlocked);
  }

  private drop(size: number): void {
    this.counters.bytesDropped += size;
    this.gapped = true;
  }

  private timerArm(delayMs: number): void {
    // The head is the earliest release time in the queue, so an armed timer is early enough.
    if (this.timer !== null) return;
    this.timer = setTimeout(this.onTimer, Math.max(1, Math.ceil(delayMs)));
    this.timer.unref();
  }

  private srcPause(reason: number): void {
    if (this.srcPauseMask === 0 && !this.src.destroyed) this.src.pause();
    this.srcPauseMask |= reason;
  }

  private srcResume(reason: number): void {
    if ((this.srcPauseMask & reason) === 0) return;
    this.srcPauseMask &= ~reason;
    if (this.srcPauseMask === 0 && !this.src.destroyed) this.src.resume();
  }

  /** The destination is gone: what is queued will never be written. */
  discard(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    while (this.queue.count > 0) this.queue.shift();
    this.counters.bytesDiscarded += this.queuedBytes;
    this.queuedBytes = 0;
  }
}

/** One accepted connection and its dial to the target: two pipes, two sockets. */
class ProxyConnection {
  readonly proxy: FaultProxy;
  readonly client: net.Socket;
  readonly target: net.Socket;
  readonly tx: Pipe;
  readonly rx: Pipe;
  // Invariant: finished ⇒ not in proxy.connections, both pipes discarded, no timer armed.
  finished = false;
  private targetConnected = false;
  private clientClosed = false;
  private targetClosed = false;
  private readonly onTargetConnect: () => void;
  private readonly onClientError: () => void;
  private readonly onTargetError: () => void;
  private readonly onClientClose: (hadError: boolean) => void;
  private readonly onTargetClose: (hadError: boolean) => void;

  constructor(proxy: FaultProxy, client: net.Socket, target: net.Socket) {
    this.proxy = proxy;
    this.client = client;
    this.target = target;
    this.onTargetConnect = this.targetConnect.bind(this);
    this.onClientError = this.socketError.bind(this, false);
    this.onTargetError = this.socketError.bind(this, true);
    this.onClientClose = this.socketClose.bind(this, false);
    this.onTargetClose = this.socketClose.bind(this, true);
    client.on('error', this.onClientError);
    target.on('error', this.onTargetError);
    client.on('close', this.onClientClose);
    target.on('close', this.onTargetClose);
    target.on('connect', this.onTargetConnect);
    this.tx = new Pipe(this, 'tx', client, target);
    this.rx = new Pipe(this, 'rx', target, client);
  }

  private targetConnect(): void {
    this.targetConnected = true;
    this.target.setNoDelay(true);
  }

  private socketError(isTarget: boolean): void {
    try {
      if (this.finished) return; // errors of sockets reset by the proxy itself
      if (isTarget && !this.targetConnected) this.proxy.dialError();
      else this.proxy.socketError();
      this.abort(false);
    } catch (errInternal) {
      this.proxy.internalError(errInternal, this);
    }
  }

  private socketClose(isTarget: boolean, hadError: boolean): void {
    try {
      if (isTarget) this.targetClosed = true;
      else this.clientClosed = true;
      if (this.finished) return;
      if (hadError) {
        this.abort(false);
        return;
      }
      // A clean close: nothing more can be written to that socket, so the pipe into it is
      // discarded; the pipe out of it goes on flushing what it holds (and its FIN) to the
      // socket still open. Bytes arriving for the closed socket reset the other (Pipe).
      if (isTarget) this.tx.discard();
      else this.rx.discard();
      if (this.clientClosed && this.targetClosed) this.finish();
    } catch (err) {
      this.proxy.internalError(err, this);
    }
  }

  /** Resets both sockets (RST) and forgets the connection. Idempotent. */
  abort(dropped: boolean): void {
    if (this.finished) return;
    this.finish();
    if (dropped) this.proxy.connectionDropped();
    socketReset(this.client);
    socketReset(this.target);
  }

  private finish(): void {
    this.finished = true;
    this.tx.discard();
    this.rx.discard();
    this.proxy.connectionFinished(this);
  }
}

function socketReset(socket: net.Socket): void {
  if (socket.destroyed) return;
  // A socket we forwarded a FIN to (end()) may still have its shutdown request pending in
  // libuv, which then refuses a reset (uv_tcp_close_reset: UV_EINVAL, "mixing uv_shutdown and
  // uv_tcp_close_reset is not allowed"). Node 20 emits that as an 'error' and drops the handle
  // without closing it: no 'close' ever comes (stop() never resolves) and the process spins at
  // exit in CleanupHandles. Seen when a member was killed right after a FIN went through. Such a
  // socket is destroyed instead (its FIN is on the way already).
  if (socket.writableEnded && !socket.writableFinished) {
    socket.destroy();
    return;
  }
  socket.resetAndDestroy();
}

/**
 * The proxy. Start it with `FaultProxy.start(options)`; stop it with `stop()` in a `finally`
 * or `t.after` (it is idempotent and always resolves).
 */
export class FaultProxy {
  readonly listenHost: string;
  /** The port it listens on (the OS-chosen one when listenPort was 0). */
  port = 0;
  readonly heldBytesMax: number;
  readonly delayedBytesMax: number;
  readonly resetGappedOnHeal: boolean;
  readonly prng: Prng;
  private targetHost: string;
  private targetPort: number;
  private readonly server: net.Server;
  private readonly connections = new Set<ProxyConnection>();
  private readonly faultsTx = new DirectionFaults();
  private readonly faultsRx = new DirectionFaults();
  private readonly countersTx = new DirectionCounters();
  private readonly countersRx = new DirectionCounters();
  private refusing = false;
  private stopping: Promise<void> | null = null;
  private stopDone: (() => void) | null = null;
  private serverClosed = false;
  // Sockets created (accepted or dialed) whose 'close' has not fired yet.
  private socketsLive = 0;
  private connectionsAccepted = 0;
  private connectionsRefused = 0;
  private connectionsDropped = 0;
  private dialErrors = 0;
  private socketErrors = 0;
  private internalErrors = 0;
  private internalErrorFirst: unknown = null;
  private readonly onConnection: (socket: net.Socket) => void;
  private readonly onSocketClose: () => void;

  private constructor(options: FaultProxyOptions) {
    assert(Number.isInteger(options.targetPort), 'targetPort');
    assert(options.targetPort > 0 && options.targetPort < 65536, 'targetPort range');
    this.listenHost = options.listenHost ?? '127.0.0.1';
    this.heldBytesMax = options.heldBytesMax ?? heldBytesMaxDefault;
    this.delayedBytesMax = options.delayedBytesMax ?? delayedBytesMaxDefault;
    assert(this.heldBytesMax >= 0, 'heldBytesMax');
    assert(this.delayedBytesMax > 0, 'delayedBytesMax');
    this.resetGappedOnHeal = options.resetGappedOnHeal ?? false;
    this.prng = new Prng(options.seed ?? 1);
    this.targetHost = options.targetHost ?? '127.0.0.1';
    this.targetPort = options.targetPort;
    this.onConnection = this.guardConnection.bind(this);
    this.onSocketClose = this.socketClosed.bind(this);
    this.server = net.createServer({ allowHalfOpen: true }, this.onConnection);
    this.server.on('error', this.serverError.bind(this));
  }

  /** Listens (on an OS-chosen port unless listenPort is given) and resolves once it does. */
  static start(options: FaultProxyOptions): Promise<FaultProxy> {
    const proxy = new FaultProxy(options);
    const listenPort = options.listenPort ?? 0;
    assert(Number.isInteger(listenPort) && listenPort >= 0 && listenPort < 65536, 'listenPort');
    return new Promise<FaultProxy>((resolve, reject) => {
      const onListenError = (err: Error): void => reject(err);
      proxy.server.once('error', onListenError);
      proxy.server.listen(listenPort, proxy.listenHost, () => {
        proxy.server.removeListener('error', onListenError);
        const address = proxy.server.address();
        assert(address !== null && typeof address === 'object', 'proxy address');
        proxy.port = address.port;
        resolve(proxy);
      });
    });
  }

  /** `host:port` the proxy listens on. */
  address(): string {
    return `${this.listenHost}:${this.port}`;
  }

  /** URL of the proxy, e.g. `http://127.0.0.1:41234`, for a member's view of a peer. */
  url(scheme = 'http'): string {
    return `${scheme}://${this.listenHost}:${this.port}`;
  }

  /** `host:port` new connections are forwarded to. */
  targetAddress(): string {
    return `${this.targetHost}:${this.targetPort}`;
  }

  /** Forward new connections elsewhere (a member restarted on another port); live ones stay. */
  retarget(targetPort: number, targetHost = this.targetHost): void {
    assert(Number.isInteger(targetPort) && targetPort > 0 && targetPort < 65536, 'targetPort');
    this.targetPort = targetPort;
    this.targetHost = targetHost;
  }

  /** Delay every chunk in `dir` by ms ± jitterMs (uniform, seeded); delay(dir, 0) removes it. */
  delay(dir: DirectionArg, ms: number, jitterMs = 0): void {
    assert(Number.isFinite(ms) && ms >= 0, 'delay ms');
    assert(Number.isFinite(jitterMs) && jitterMs >= 0, 'delay jitterMs');
    for (const faults of this.faultsFor(dir)) {
      faults.delayMs = ms;
      faults.jitterMs = jitterMs;
    }
  }

  undelay(dir: DirectionArg): void {
    this.delay(dir, 0, 0);
  }

  blackhole(dir: DirectionArg): void {
    for (const faults of this.faultsFor(dir)) faults.blackholed = true;
    this.pumpAll(); // held and delayed bytes of live connections are dropped now
  }

  unblackhole(dir: DirectionArg): void {
    for (const faults of this.faultsFor(dir)) faults.blackholed = false;
    this.pumpAll(); // a FIN waiting in the blackhole goes on
    this.gappedReset();
  }

  pause(dir: DirectionArg): void {
    for (const faults of this.faultsFor(dir)) faults.paused = true;
  }

  /** Delivers every held byte, in order, then lets new ones through. */
  resume(dir: DirectionArg): void {
    for (const faults of this.faultsFor(dir)) faults.paused = false;
    for (const conn of this.connections) {
      if (dir !== 'rx') conn.tx.overflowing = false;
      if (dir !== 'tx') conn.rx.overflowing = false;
    }
    this.pumpAll();
    this.gappedReset();
  }

  /** While on, new connections are reset as soon as they are accepted; live ones stay. */
  refuse(on: boolean): void {
    this.refusing = on;
  }

  /** Resets (RST) every live connection; returns how many. New connections are accepted. */
  dropConnections(): number {
    let count = 0;
    for (const conn of [...this.connections]) {
      conn.abort(true);
      count++;
    }
    return count;
  }

  /** The same as dropConnections(). */
  reset(): number {
    return this.dropConnections();
  }

  /** No delay, blackhole, pause or refusal in either direction (held bytes are delivered). */
  clearFaults(): void {
    this.refusing = false;
    this.undelay('both');
    this.unblackhole('both');
    this.resume('both');
  }

  faults(): FaultsView {
    return { tx: this.faultsTx.view(), rx: this.faultsRx.view(), refusing: this.refusing };
  }

  /** A snapshot of the counters (a new object each call). */
  stats(): FaultProxyStats {
    let txHeld = 0;
    let txDelayed = 0;
    let rxHeld = 0;
    let rxDelayed = 0;
    for (const conn of this.connections) {
      txHeld += conn.tx.queuedHeldBytes();
      txDelayed += conn.tx.queuedDelayedBytes();
      rxHeld += conn.rx.queuedHeldBytes();
      rxDelayed += conn.rx.queuedDelayedBytes();
    }
    return {
      connectionsAccepted: this.connectionsAccepted,
      connectionsRefused: this.connectionsRefused,
      connectionsOpen: this.connections.size,
      connectionsDropped: this.connectionsDropped,
      dialErrors: this.dialErrors,
      socketErrors: this.socketErrors,
      internalErrors: this.internalErrors,
      internalErrorFirst: this.internalErrorFirst,
      tx: directionStats(this.countersTx, txHeld, txDelayed),
      rx: directionStats(this.countersRx, rxHeld, rxDelayed),
    };
  }

  /**
   * Closes the listener, resets every connection, clears every timer; resolves once the
   * listener and every socket the proxy created are closed. Idempotent; never rejects.
   */
  stop(): Promise<void> {
    if (this.stopping !== null) return this.stopping;
    this.stopping = new Promise<void>((resolve) => {
      this.stopDone = resolve;
    });
    for (const conn of [...this.connections]) conn.abort(false);
    this.server.close(() => {
      this.serverClosed = true;
      this.stopCheck();
    });
    return this.stopping;
  }

  // ---- called by connections and pipes ----

  faultsOf(dir: Direction): DirectionFaults {
    return dir === 'tx' ? this.faultsTx : this.faultsRx;
  }

  countersOf(dir: Direction): DirectionCounters {
    return dir === 'tx' ? this.countersTx : this.countersRx;
  }

  connectionFinished(conn: ProxyConnection): void {
    this.connections.delete(conn);
  }

  connectionDropped(): void {
    this.connectionsDropped++;
  }

  dialError(): void {
    this.dialErrors++;
  }

  socketError(): void {
    this.socketErrors++;
  }

  internalError(err: unknown, conn: ProxyConnection | null): void {
    this.internalErrors++;
    if (this.internalErrors === 1) this.internalErrorFirst = err;
    if (conn !== null) conn.abort(false);
  }

  // ---- private ----

  private guardConnection(socket: net.Socket): void {
    try {
      this.accept(socket);
    } catch (err) {
      socketReset(socket);
      this.internalError(err, null);
    }
  }

  private accept(client: net.Socket): void {
    this.connectionsAccepted++;
    this.socketTrack(client);
    if (this.refusing || this.stopping !== null) {
      this.connectionsRefused++;
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    const target = net.connect({
      host: this.targetHost, port: this.targetPort, allowHalfOpen: true,
    });
    this.socketTrack(target);
    this.connections.add(new ProxyConnection(this, client, target));
  }

  /**
   * Every socket the proxy owns gets these two listeners first: an 'error' event can never
   * become an uncaught exception, and stop() knows when the last socket has closed.
   */
  private socketTrack(socket: net.Socket): void {
    this.socketsLive++;
    socket.on('error', noop);
    socket.on('close', this.onSocketClose);
  }

  private socketClosed(): void {
    this.socketsLive--;
    assert(this.socketsLive >= 0, 'socketsLive');
    this.stopCheck();
  }

  private serverError(): void {
    this.socketErrors++;
  }

  private faultsFor(dir: DirectionArg): DirectionFaults[] {
    if (dir === 'tx') return [this.faultsTx];
    if (dir === 'rx') return [this.faultsRx];
    assert(dir === 'both', 'direction');
    return [this.faultsTx, this.faultsRx];
  }

  private pumpAll(): void {
    for (const conn of [...this.connections]) {
      try {
        conn.tx.pump();
        conn.rx.pump();
      } catch (err) {
        this.internalError(err, conn);
      }
    }
  }

  /** With resetGappedOnHeal, once no direction is blackholed: reset connections with gaps. */
  private gappedReset(): void {
    if (!this.resetGappedOnHeal) return;
    if (this.faultsTx.blackholed || this.faultsRx.blackholed) return;
    for (const conn of [...this.connections]) {
      if (conn.tx.gapped || conn.rx.gapped) conn.abort(true);
    }
  }

  private stopCheck(): void {
    if (this.stopDone === null || !this.serverClosed || this.socketsLive > 0) return;
    const done = this.stopDone;
    this.stopDone = null;
    done();
  }
}

function directionStats(
  counters: DirectionCounters, held: number, delayed: number,
): DirectionStats {
  return {
    bytesRead: counters.bytesRead,
    bytesForwarded: counters.bytesForwarded,
    bytesDropped: counters.bytesDropped,
    bytesOverflowed: counters.bytesOverflowed,
    bytesHeld: held,
    bytesDelayed: delayed,
    bytesDiscarded: counters.bytesDiscarded,
    endsRead: counters.endsRead,
    endsForwarded: counters.endsForwarded,
  };
}

function noop(): void {}

/** A member's real peer listener, as a proxy target. */
export interface PeerTarget {
  port: number;
  /** Default '127.0.0.1'. */
  host?: string;
}

export interface PartitionerOptions {
  /** Seed of link (i→j)'s jitter PRNG is seed + i·1000 + j. Default 1. */
  seed?: number;
  listenHost?: string;
  heldBytesMax?: number;
  delayedBytesMax?: number;
  /** Default true: a healed link resets connections that lost bytes (see FaultProxy). */
  resetGappedOnHeal?: boolean;
}

/**
 * Partitions over a full mesh of FaultProxies, one per ordered pair of members: link(i, j) is
 * the proxy member i dials to reach member j (wiring in the header comment). The partition state
 * is a matrix cut[a][b] = "bytes from a to b are dropped", applied to both links that carry
 * them: link(a, b).tx (connections a opened) and link(b, a).rx (connections b opened). Calls
 * compose (isolate(0) then oneWay(1, 2) cuts both); heal() clears every cut. Delay, pause and
 * refusal stay per link: `partitioner.link(i, j).delay('tx', 50)`.
 */
export class Partitioner {
  private readonly options: PartitionerOptions;
  private readonly targets: PeerTarget[] = [];
  // links[from][to]; null on the diagonal. Invariant: square, size = targets.length.
  private readonly links: (FaultProxy | null)[][] = [];
  // Invariant: square like links; cut[m][m] is always false.
  private readonly cut: boolean[][] = [];

  private constructor(options: PartitionerOptions) {
    this.options = options;
  }

  /** Starts size·(size−1) proxies; members are numbered by their index in `targets`. */
  static async start(targets: readonly PeerTarget[], options: PartitionerOptions = {}):
  Promise<Partitioner> {
    const partitioner = new Partitioner(options);
    try {
      for (const target of targets) await partitioner.addMember(target);
    } catch (err) {
      await partitioner.stop();
      throw err;
    }
    return partitioner;
  }

  get size(): number {
    return this.targets.length;
  }

  /**
   * Adds member `size` (a member added at run time): starts the links between it and every
   * member, uncut. Resolves with its index.
   */
  async addMember(target: PeerTarget): Promise<number> {
    const member = this.targets.length;
    const targetHost = target.host ?? '127.0.0.1';
    this.targets.push({ port: target.port, host: targetHost });
    for (const row of this.links) row.push(null);
    for (const row of this.cut) row.push(false);
    this.links.push(new Array<FaultProxy | null>(member + 1).fill(null));
    this.cut.push(new Array<boolean>(member + 1).fill(false));
    for (let other = 0; other < member; other++) {
      this.links[other]![member] = await this.linkStart(other, member);
      this.links[member]![other] = await this.linkStart(member, other);
    }
    return member;
  }

  /** The proxy member `from` dials to reach member `to`. */
  link(from: number, to: number): FaultProxy {
    this.memberCheck(from);
    this.memberCheck(to);
    assert(from !== to, 'link to itself');
    const proxy = this.links[from]![to];
    assert(proxy !== null && proxy !== undefined, 'link not started');
    return proxy;
  }

  /** Every link, for stats and assertions. */
  allLinks(): FaultProxy[] {
    const proxies: FaultProxy[] = [];
    for (const row of this.links) for (const proxy of row) if (proxy !== null) proxies.push(proxy);
    return proxies;
  }

  /** `host:port` member `from` must dial for member `to`. */
  peerAddress(from: number, to: number): string {
    return this.link(from, to).address();
  }

  /** URL of link(from, to), e.g. `http://127.0.0.1:41234`. */
  peerUrl(from: number, to: number, scheme = 'http'): string {
    return this.link(from, to).url(scheme);
  }

  /** Member `from`'s dial table: each other member's real `host:port` → its link's `host:port`. */
  routes(from: number): Map<string, string> {
    this.memberCheck(from);
    const routes = new Map<string, string>();
    for (let to = 0; to < this.size; to++) {
      if (to === from) continue;
      const target = this.targets[to]!;
      routes.set(`${target.host!}:${target.port}`, this.peerAddress(from, to));
    }
    return routes;
  }

  /** Bytes from `from` to `to` are dropped; `to` → `from` still flows. */
  oneWay(from: number, to: number): void {
    this.memberCheck(from);
    this.memberCheck(to);
    assert(from !== to, 'oneWay to itself');
    this.cut[from]![to] = true;
    this.apply(from, to);
  }

  /** Every byte between `member` and every other member is dropped, both ways. */
  isolate(member: number): void {
    this.memberCheck(member);
    for (let other = 0; other < this.size; other++) {
      if (other === member) continue;
      this.cut[member]![other] = true;
      this.cut[other]![member] = true;
      this.apply(member, other);
    }
  }

  /** Two-way partition between the groups; members in neither group are not affected. */
  partition(groupA: readonly number[], groupB: readonly number[]): void {
    for (const a of groupA) this.memberCheck(a);
    for (const b of groupB) {
      this.memberCheck(b);
      assert(!groupA.includes(b), 'partition groups overlap');
    }
    for (const a of groupA) {
      for (const b of groupB) {
        this.cut[a]![b] = true;
        this.cut[b]![a] = true;
        this.apply(a, b);
      }
    }
  }

  /** Clears every cut (delays, pauses and refusals set on links directly stay). */
  heal(): void {
    for (let a = 0; a < this.size; a++) {
      for (let b = 0; b < this.size; b++) this.cut[a]![b] = false;
    }
    for (let a = 0; a < this.size; a++) {
      for (let b = a + 1; b < this.size; b++) this.apply(a, b);
    }
  }

  /** Whether bytes from `from` to `to` are dropped now. */
  blocked(from: number, to: number): boolean {
    this.memberCheck(from);
    this.memberCheck(to);
    return this.cut[from]![to]!;
  }

  /** Stops every link; never rejects. */
  async stop(): Promise<void> {
    await Promise.all(this.allLinks().map((proxy) => proxy.stop()));
  }

  private async linkStart(from: number, to: number): Promise<FaultProxy> {
    const target = this.targets[to]!;
    const options = this.options;
    return FaultProxy.start({
      targetPort: target.port,
      targetHost: target.host!,
      listenHost: options.listenHost ?? '127.0.0.1',
      seed: (options.seed ?? 1) + from * 1000 + to,
      heldBytesMax: options.heldBytesMax ?? heldBytesMaxDefault,
      delayedBytesMax: options.delayedBytesMax ?? delayedBytesMaxDefault,
      resetGappedOnHeal: options.resetGappedOnHeal ?? true,
    });
  }

  /** Applies cut[a][b] and cut[b][a] to the two links between a and b. */
  private apply(a: number, b: number): void {
    const ab = this.cut[a]![b]!;
    const ba = this.cut[b]![a]!;
    blackholeSet(this.link(a, b), 'tx', ab);
    blackholeSet(this.link(a, b), 'rx', ba);
    blackholeSet(this.link(b, a), 'tx', ba);
    blackholeSet(this.link(b, a), 'rx', ab);
  }

  private memberCheck(member: number): void {
    assert(Number.isInteger(member), 'member index');
    assert(member >= 0 && member < this.size, 'member out of range');
  }
}

/** blackhole/unblackhole only on a change (unblackhole may reset gapped connections). */
function blackholeSet(proxy: FaultProxy, dir: Direction, on: boolean): void {
  if (proxy.faults()[dir].blackholed === on) return;
  if (on) proxy.blackhole(dir);
  else proxy.unblackhole(dir);
}
