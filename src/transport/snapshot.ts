// Snapshot transfer (etcd rafthttp snapshot_sender.go + http.go snapshotHandler): a MsgSnap and
// the state machine's data (an LMDB copy, gigabytes possibly) on a connection of its own, so
// that heartbeats and appends to the same peer never wait behind it.
//
//   sender                                              receiver
//   dial, Hello(kind Snapshot)             ──▶          check ids, HelloAck
//   SnapshotBegin(size, MsgSnap)           ──▶          open the sink (caller's; default a file)
//   SnapshotChunk × n  (≤ 1 MiB each,      ──▶          SHA-256 and write each chunk in order;
//     each with its frame CRC)                          pause the socket while the sink lags
//   SnapshotEnd(SHA-256 of all bytes)      ──▶          size and digest match? sink.finish();
//                                                       onSnapshot(MsgSnap, handle)
//   reportSnapshot(to, ok)                 ◀──          SnapshotStatus(ok | reason), FIN
//
// Failures anywhere (a frame CRC, a short or long payload, a digest mismatch, a sink error, a
// stalled peer, a closed connection) discard the receiver's partial data (sink.abort()) and
// report failure to the sender's raft (etcd: ReportSnapshot(SnapshotFailure)); a receiver that
// can, says why in SnapshotStatus. Flow control: the sender writes while the socket holds less
// than socketBufferedBytesMax unsent and otherwise awaits 'drain'; it pulls the next chunk from
// the caller's async iterator only then, so a 50 GiB snapshot costs a few MiB of memory.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type net from 'node:net';
import { AssertionError, assert } from '../util/assert';
import { ConcordError } from '../util/errors';
import type { Logger } from '../util/log';
import { Message, MessageType } from '../raft/types';
import { TransportContext } from './context';
import {
  ConnectionKind, FrameError, FrameHandler, FrameReader, FrameType, RefuseReason,
  decodeHelloAck, decodeSnapshotStatus, encodeFrame, encodeHello, encodeSnapshotStatus,
  frameErrorNames, frameHeaderBytes, protocolVersion, readSnapshotSize, refuseReasonNames,
  sha256Bytes, snapshotBeginPrefixBytes, writeFrameHeader, writeSnapshotSize,
} from './frame';
import type { InboundConnection } from './inbound';
import { decodeMessage, encodeMessage, errMessageMalformed, messageBytes } from './message_codec';
import type { Peer } from './peer';
import { crc32 } from '../util/crc32';

/**
 * Where a received snapshot's payload goes. Calls come one at a time, in order: write* then
 * finish, or abort at any point (also after finish, when the transfer failed meanwhile).
 */
export interface SnapshotSink {
  /** Appends the next bytes; the sink may keep `chunk` (the transport never reuses it). */
  write(chunk: Buffer): Promise<void>;
  /** Every byte is in and verified: make them durable; resolves to what onSnapshot gets. */
  finish(): Promise<string>;
  /** Discards everything written (partial or unverified data). */
  abort(): Promise<void>;
}

/** Opens the sink for one incoming snapshot (the MsgSnap, the payload size announced). */
export type SnapshotSinkOpen = (m: Message, size: number) => SnapshotSink;

/** The default sink: a new file (never an existing one), fsynced by finish(), gone on abort(). */
export class FileSnapshotSink implements SnapshotSink {
  private fh: FileHandle | null = null;

  constructor(readonly path: string) {}

  private async handle(): Promise<FileHandle> {
    if (this.fh === null) this.fh = await fs.open(this.path, 'wx', 0o600);
    return this.fh;
  }

  async write(chunk: Buffer): Promise<void> {
    const fh = await this.handle();
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
      off += bytesWritten;
    }
  }

  async finish(): Promise<string> {
    const fh = await this.handle();
    await fh.sync();
    this.fh = null;
    await fh.close();
    return this.path;
  }

  async abort(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh !== null) await fh.close();
    await fs.rm(this.path, { force: true });
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ?? err.message;
  return String(err);
}

// ---------------------------------------------------------------------------------------------
// Receiving side

const enum ReceiveState {
  Begin = 1,
  Chunks = 2,
  /** Size and digest checked; waiting for the sink to take the last chunks, then finish. */
  Verified = 3,
  Finishing = 4,
  Done = 5,
  Failed = 6,
}

/** One incoming transfer, owned by its InboundConnection. */
export class SnapshotReceive {
  private state = ReceiveState.Begin;
  private msg: Message | null = null;
  private size = 0;
  private received = 0;
  private readonly hash = createHash('sha256');
  private sink: SnapshotSink | null = null;
  // Chunks the sink has not taken yet: FIFO (array + head, emptied when drained).
  // Invariant: pendingBytes = sum of pending[pendingHead..] lengths.
  private pending: (Buffer | null)[] = [];
  private pendingHead = 0;
  private pendingBytes = 0;
  private writing = false;
  private paused = false;

  constructor(private readonly ctx: TransportContext, private readonly conn: InboundConnection) {}

  onFrame(type: FrameType, payload: Buffer): boolean {
    if (this.state === ReceiveState.Begin) {
      if (type !== FrameType.SnapshotBegin) return this.fail('expected SnapshotBegin');
      return this.begin(payload);
    }
    if (this.state !== ReceiveState.Chunks) return this.fail('frame after SnapshotEnd');
    if (type === FrameType.SnapshotChunk) return this.chunk(payload);
    if (type === FrameType.SnapshotEnd) return this.end(payload);
    return this.fail(`unexpected frame ${type} in a snapshot`);
  }

  private begin(payload: Buffer): boolean {
    const peer = this.conn.peer!;
    if (payload.length < snapshotBeginPrefixBytes) return this.fail('SnapshotBegin too short');
    const size = readSnapshotSize(payload, 0);
    if (size < 0) return this.fail('snapshot size');
    let m: Message;
    try {
      m = decodeMessage(payload, snapshotBeginPrefixBytes, payload.length);
    } catch (err) {
      if (err !== errMessageMalformed) throw err;
      return this.fail((err as ConcordError).message);
    }
    if (m.type !== MessageType.Snap || m.snapshot === null) return this.fail('not a MsgSnap');
    if (m.from !== peer.raftId || m.to !== this.ctx.raftId) return this.fail('MsgSnap from/to');
    const max = this.ctx.config.snapshotBytesMax;
    if (max > 0 && size > max) {
      return this.fail(`snapshot of ${size} bytes is over the limit ${max}`);
    }
    this.msg = m;
    this.size = size;
    this.sink = this.ctx.snapshotSinkOpen(m, size);
    this.state = ReceiveState.Chunks;
    this.ctx.logger.info('receiving database snapshot', {
      'remote-peer-id': peer.memberIdHex, 'snapshot-index': m.snapshot.metadata.index,
      'snapshot-size-bytes': size,
    });
    return true;
  }

  private chunk(payload: Buffer): boolean {
    if (payload.length === 0) return this.fail('empty SnapshotChunk');
    this.received += payload.length;
    this.conn.peer!.counters.snapshotReceivedBytes += payload.length;
    if (this.received > this.size) return this.fail(`more than the announced ${this.size} bytes`);
    this.hash.update(payload);
    this.pending.push(payload);
    this.pendingBytes += payload.length;
    if (!this.paused && this.pendingBytes >= this.ctx.config.snapshotSinkPendingBytesMax) {
      this.paused = true;
      this.conn.socket.pause();
    }
    this.pumpStart();
    return true;
  }

  private end(payload: Buffer): boolean {
    if (payload.length !== sha256Bytes) return this.fail('SnapshotEnd size');
    if (this.received !== this.size) {
      return this.fail(`payload of ${this.received} bytes, announced ${this.size}`);
    }
    if (!this.hash.digest().equals(payload)) return this.fail('payload SHA-256 mismatch');
    this.state = ReceiveState.Verified;
    this.pumpStart();
    return true;
  }

  /** Whether the transfer is stalled: nothing received for snapshotTimeoutMs, not paused. */
  idle(_nowMs: number, sinceReceivedMs: number): boolean {
    const waitingForPeer = this.state === ReceiveState.Begin || this.state === ReceiveState.Chunks;
    return waitingForPeer && !this.paused && sinceReceivedMs > this.ctx.config.snapshotTimeoutMs;
  }

  /** Starts the pump unless it runs; close() waits for it (and the sink clean-up after it). */
  private pumpStart(): void {
    if (this.writing) return;
    this.writing = true;
    this.ctx.pendingTrack(this.pump());
  }

  /** Writes pending chunks to the sink in order; finishes once verified. Never rejects on I/O. */
  private async pump(): Promise<void> {
    assert(this.writing, 'pump without pumpStart');
    try {
      while (this.pendingHead < this.pending.length && !this.failed()) {
        const chunk = this.pending[this.pendingHead]!;
        this.pending[this.pendingHead++] = null;
        await this.sink!.write(chunk);
        this.pendingBytes -= chunk.length;
        if (this.paused && this.pendingBytes <= this.ctx.config.snapshotSinkPendingBytesMax / 2) {
          this.paused = false;
          if (!this.failed()) this.conn.socket.resume();
        }
      }
      if (!this.failed()) {
        this.pending = [];
        this.pendingHead = 0;
      }
      if (this.state === ReceiveState.Verified) await this.complete();
    } catch (err) {
      if (err instanceof AssertionError) throw err;
      this.fail(`snapshot sink failed: ${errorText(err)}`);
    } finally {
      this.writing = false;
      if (this.failed()) this.sinkAbort();
    }
  }

  /** (A method, so that TypeScript does not narrow the state across awaits.) */
  private failed(): boolean {
    return this.state === ReceiveState.Failed;
  }

  private async complete(): Promise<void> {
    this.state = ReceiveState.Finishing;
    const handle = await this.sink!.finish();
    if (this.failed()) return; // failed meanwhile: pump aborts the sink (the file goes)
    if (this.ctx.isClosed()) {
      this.fail('transport closed');
      return;
    }
    this.state = ReceiveState.Done;
    const peer = this.conn.peer!;
    peer.counters.snapshotsReceived++;
    this.ctx.logger.info('received and saved database snapshot', {
      'remote-peer-id': peer.memberIdHex, 'snapshot-index': this.msg!.snapshot!.metadata.index,
      'snapshot-size-bytes': this.size,
    });
    this.ctx.snapshotDeliver(peer, this.msg!, handle);
    this.statusWrite(true, '');
  }

  /** Ends the transfer as failed: the sender learns why (when it still listens). */
  fail(reason: string): boolean {
    if (this.state === ReceiveState.Done || this.state === ReceiveState.Failed) return false;
    this.state = ReceiveState.Failed;
    const peer = this.conn.peer!;
    peer.counters.snapshotsReceiveFailed++;
    this.ctx.logger.warn('failed to receive database snapshot', {
      'remote-peer-id': peer.memberIdHex, reason,
    });
    this.statusWrite(false, reason);
    if (!this.writing) this.sinkAbort();
    return false;
  }

  private statusWrite(ok: boolean, text: string): void {
    const socket: net.Socket = this.conn.socket;
    if (!socket.destroyed && socket.writable) socket.write(encodeSnapshotStatus({ ok, text }));
    this.conn.finish();
  }

  private sinkAbort(): void {
    const sink = this.sink;
    this.sink = null;
    this.pending = [];
    this.pendingHead = 0;
    this.pendingBytes = 0;
    if (sink === null) return;
    this.ctx.pendingTrack(sink.abort().catch((err: unknown) => {
      this.ctx.logger.warn('failed to discard a partial snapshot', { error: errorText(err) });
    }));
  }
}

// ---------------------------------------------------------------------------------------------
// Sending side

const enum SendState {
  Connecting = 1,
  Handshaking = 2,
  Streaming = 3,
  AwaitStatus = 4,
  Done = 5,
}

/**
 * Bytes written between forced yields to the event loop when the socket never pushes back (a
 * source that yields from memory would otherwise chain microtasks past every I/O event): one
 * frame, so heartbeats and the receiver's status are read between any two snapshot frames.
 */
const snapshotYieldBytes = 1024 * 1024;

/** One outgoing transfer; at most one per peer (raft sends one snapshot at a time). */
export class SnapshotSend implements FrameHandler {
  private state = SendState.Connecting;
  private socket: net.Socket | null = null;
  private reader: FrameReader;
  private waiter: (() => void) | null = null;
  /** Non-empty once failed. */
  private failure = '';
  private statusOk = false;
  // The outcome went to onSnapshotStatus (at abort, even while the caller's source is stuck).
  private reported = false;
  private stateSinceMs: number;
  private progressMs: number;
  private socketError = '';

  constructor(private readonly ctx: TransportContext, readonly peer: Peer,
    private readonly msg: Message, private readonly size: number) {
    this.reader = new FrameReader(ctx.config.frameBytesMax, this);
    this.stateSinceMs = ctx.nowMs();
    this.progressMs = this.stateSinceMs;
  }

  /** Runs the transfer; resolves (never rejects on I/O) once the status is reported. */
  async run(payload: AsyncIterable<Uint8Array>, sha256: Uint8Array | null): Promise<void> {
    const size = this.size;
    let ok = false;
    try {
      this.connect();
      while (this.failure === '' && this.state !== SendState.Streaming) await this.wait();
      if (this.failure === '') ok = await this.stream(payload, size, sha256);
      else iteratorClose(payload, this.ctx.logger);
    } finally {
      this.state = SendState.Done;
      this.socketDrop();
      this.report(ok, size);
    }
  }

  /** Once: counters, log, onSnapshotStatus; frees the peer for the next transfer. */
  private report(ok: boolean, size: number): void {
    if (this.reported) return;
    this.reported = true;
    if (this.peer.snapshotSend === this) this.peer.snapshotSend = null;
    if (ok) this.peer.counters.snapshotsSent++;
    else this.peer.counters.snapshotsSendFailed++;
    this.ctx.logger.log(ok ? 'info' : 'warn', ok ? 'sent database snapshot' :
      'failed to send database snapshot', {
      'remote-peer-id': this.peer.memberIdHex, 'snapshot-size-bytes': size, reason: this.failure,
    });
    this.ctx.snapshotStatusReport(this.peer, ok);
  }

  private connect(): void {
    const socket = this.ctx.connect(this.peer, ConnectionKind.Snapshot, () => {
      if (socket !== this.socket) return;
      socket.setNoDelay(true);
      socket.write(encodeHello({
        version: protocolVersion, kind: ConnectionKind.Snapshot, clusterId: this.ctx.clusterId,
        fromMemberId: this.ctx.memberId, toMemberId: this.peer.memberId,
      }));
      this.stateSet(SendState.Handshaking);
    });
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      if (socket !== this.socket) return;
      const err = this.reader.push(chunk);
      if (err !== FrameError.None) this.abort(`bad frame from the peer: ${frameErrorNames[err]!}`);
    });
    socket.on('drain', () => {
      this.progressMs = this.ctx.nowMs();
      this.wake();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.socketError = err.code ?? err.message;
    });
    socket.on('close', () => {
      if (socket === this.socket) this.abort(`connection closed (${this.socketError || 'eof'})`);
    });
  }

  onFrame(type: FrameType, payload: Buffer): boolean {
    this.progressMs = this.ctx.nowMs();
    if (this.state === SendState.Handshaking && type === FrameType.HelloAck) {
      const ack = decodeHelloAck(payload);
      if (ack === null) return this.abort('malformed HelloAck');
      if (ack.reason !== RefuseReason.None) {
        this.ctx.refusedReport(this.peer, ack.reason);
        return this.abort(`refused: ${refuseReasonNames[ack.reason]!}: ${ack.text}`);
      }
      if (ack.version !== protocolVersion) return this.abort('protocol version in HelloAck');
      this.stateSet(SendState.Streaming);
      this.wake();
      return true;
    }
    if ((this.state === SendState.Streaming || this.state === SendState.AwaitStatus) &&
      type === FrameType.SnapshotStatus) {
      const status = decodeSnapshotStatus(payload);
      if (status === null) return this.abort('malformed SnapshotStatus');
      if (!status.ok) return this.abort(`receiver failed: ${status.text}`);
      if (this.state !== SendState.AwaitStatus) return this.abort('ok before SnapshotEnd');
      this.statusOk = true;
      this.stateSet(SendState.Done);
      this.wake();
      return false;
    }
    return this.abort(`unexpected frame ${type}`);
  }

  private async stream(payload: AsyncIterable<Uint8Array>, size: number,
    sha256: Uint8Array | null): Promise<boolean> {
    const socket = this.socket!;
    const cfg = this.ctx.config;
    const msgBytes = messageBytes(this.msg);
    const beginBytes = snapshotBeginPrefixBytes + msgBytes;
    const begin = Buffer.allocUnsafe(frameHeaderBytes + beginBytes);
    writeSnapshotSize(begin, frameHeaderBytes, size);
    encodeMessage(this.msg, begin, frameHeaderBytes + snapshotBeginPrefixBytes, msgBytes);
    writeFrameHeader(begin, 0, FrameType.SnapshotBegin, beginBytes, crc32(begin, frameHeaderBytes));
    socket.write(begin);
    const hash = createHash('sha256');
    let sent = 0;
    let sinceYield = 0;
    try {
      for await (const chunk of payload) {
        assert(chunk instanceof Uint8Array, 'snapshot payload chunk not bytes');
        const step = cfg.snapshotFrameBytesMax;
        for (let off = 0; off < chunk.length && this.failure === ''; off += step) {
          const piece = chunk.subarray(off, Math.min(chunk.length, off + step));
          sent += piece.length;
          if (sent > size) {
            this.abort(`payload longer than the announced ${size} bytes`);
            break;
          }
          hash.update(piece);
          const header = Buffer.allocUnsafe(frameHeaderBytes);
          writeFrameHeader(header, 0, FrameType.SnapshotChunk, piece.length, crc32(piece));
          socket.cork();
          socket.write(header);
          socket.write(piece);
          socket.uncork();
          this.peer.counters.snapshotSentBytes += piece.length;
          this.progressMs = this.ctx.nowMs();
          sinceYield += piece.length;
          while (this.failure === '' && socket.writableLength >= cfg.socketBufferedBytesMax) {
            sinceYield = 0;
            await this.wait();
          }
          if (sinceYield >= snapshotYieldBytes) {
            sinceYield = 0;
            await new Promise<void>((resolve) => setImmediate(resolve));
          }
        }
        if (this.failure !== '') break;
      }
    } catch (err) {
      if (err instanceof AssertionError) throw err;
      // The caller's source failed (a read error of the snapshot file, say).
      this.abort(`payload source failed: ${errorText(err)}`);
    }
    if (this.failure !== '') return false;
    if (sent !== size) {
      this.abort(`payload of ${sent} bytes, announced ${size}`);
      return false;
    }
    const digest = hash.digest();
    if (sha256 !== null && !digest.equals(sha256)) {
      this.abort('payload SHA-256 differs from the one given');
      return false;
    }
    socket.write(encodeFrame(FrameType.SnapshotEnd, digest));
    this.stateSet(SendState.AwaitStatus);
    while (this.failure === '' && !this.statusOk) await this.wait();
    return this.statusOk;
  }

  /** Called on every transport tick. */
  tick(nowMs: number): void {
    const cfg = this.ctx.config;
    switch (this.state) {
      case SendState.Connecting:
      case SendState.Handshaking:
        if (nowMs - this.stateSinceMs > cfg.handshakeTimeoutMs) this.abort('handshake timed out');
        return;
      case SendState.Streaming:
        // No drain for that long: the peer is gone (or its disk is far too slow).
        if (nowMs - this.progressMs > cfg.snapshotTimeoutMs) this.abort('stalled');
        return;
      case SendState.AwaitStatus:
        if (nowMs - this.stateSinceMs > cfg.snapshotTimeoutMs) this.abort('no status');
        return;
      case SendState.Done:
        return;
    }
  }

  /**
   * Fails the transfer: the connection is reset, so the receiver discards what it has; the
   * failure is reported now, not when the caller's source next yields (it may be stuck).
   */
  abort(reason: string): boolean {
    if (this.failure !== '' || this.statusOk) return false;
    this.failure = reason;
    this.socketDrop();
    this.report(false, this.size);
    this.wake();
    return false;
  }

  private socketDrop(): void {
    const socket = this.socket;
    this.socket = null;
    if (socket !== null) socket.destroy();
  }

  private stateSet(state: SendState): void {
    this.state = state;
    this.stateSinceMs = this.ctx.nowMs();
    this.progressMs = this.stateSinceMs;
  }

  private wait(): Promise<void> {
    assert(this.waiter === null, 'one waiter at a time');
    return new Promise<void>((resolve) => {
      this.waiter = resolve;
    });
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter !== null) waiter();
  }
}

/** Releases a payload iterator that will not be read (its file handle, say). */
export function iteratorClose(payload: AsyncIterable<Uint8Array>, logger: Logger): void {
  const it = payload[Symbol.asyncIterator]();
  if (it.return === undefined) return;
  it.return().catch((err: unknown) => {
    logger.warn('snapshot payload source failed to close', { error: errorText(err) });
  });
}
