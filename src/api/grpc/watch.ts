// etcdserverpb.Watch/Watch: one bidirectional stream per call, many watchers on it. The main
// thread only passes requests to the watch worker (watch/hub.ts) and writes the response bytes
// it gets back; it tells the worker how many bytes the client has taken, which is what bounds
// the memory a slow stream can hold (limits.watchStreamBytesMax).
import * as grpc from '@grpc/grpc-js';
import { etcdserverpb } from '../../gen/proto';
import type { WatchHub, WatchStreamSink } from '../../watch/hub';
import { ConcordError } from '../../util/errors';
import { PermType } from '../../auth/auth_store';
import type { EtcdServer } from '../../server/etcd_server';
import { tokenOf } from './request_gate';

/**
 * With auth enabled, whether the stream's caller may watch a range (READ on it, at creation, as
 * etcd's isWatchPermitted; from-key watches and every range included): null when it may, else
 * the reason etcd puts in cancel_reason. The token is the one the stream was opened with.
 */
type WatchAuthorizer = (create: etcdserverpb.IWatchCreateRequest) => string | null;

function watchAuthorizer(server: EtcdServer, call: unknown): WatchAuthorizer | null {
  if (!server.auth.enabled) return null;
  const token = tokenOf(call as { metadata?: grpc.Metadata; header?(n: string): string | undefined });
  return (create) => {
    try {
      const caller = server.auth.callerOf(token, call);
      if (caller === null) return null;
      const key = create.key ?? new Uint8Array(0);
      const end = create.range_end ?? new Uint8Array(0);
      server.auth.store.checkOp(caller.user, caller.revision, Buffer.from(key), Buffer.from(end), PermType.READ);
      return null;
    } catch (err) {
      if (!(err instanceof ConcordError)) throw err;
      return 'etcdserver: ' + err.message.replace(/^etcdserver: /, '');
    }
  };
}

/**
 * The subset of a grpc-js duplex call (or the gateway's stand-in, or the fast path's call) a
 * watch stream uses. `writeFramed`, when there, takes already framed messages in one write.
 */
export interface WatchCall {
  on(event: string, listener: (arg: never) => void): unknown;
  write(bytes: Uint8Array, cb?: () => void): boolean;
  writeFramed?(frames: Uint8Array, cb: () => void): void;
  emit(event: string, arg: unknown): boolean;
}

class WatchStream implements WatchStreamSink {
  private readonly hub: WatchHub;
  private readonly call: WatchCall;
  readonly id: number;
  /** Sizes of the writes not yet flushed, oldest first (acknowledged to the worker on flush). */
  private readonly inFlight: number[] = [];
  private inFlightHead = 0;
  private closed = false;
  /** Bound once per stream: no closure per write. */
  private readonly onWritten: () => void;

  private readonly authorize: WatchAuthorizer | null;
  private readonly server: EtcdServer | null;

  constructor(hub: WatchHub, call: WatchCall, server: EtcdServer | null) {
    this.hub = hub;
    this.call = call;
    this.server = server;
    this.authorize = server === null ? null : watchAuthorizer(server, call);
    this.onWritten = () => {
      const size = this.inFlight[this.inFlightHead++]!;
      if (this.inFlightHead === this.inFlight.length) {
        this.inFlight.length = 0;
        this.inFlightHead = 0;
      }
      if (!this.closed) this.hub.ack(this.id, size);
    };
    this.id = hub.openStream(this);
    call.on('data', (req: etcdserverpb.WatchRequest) => this.onRequest(req));
    const close = (): void => this.close();
    call.on('cancelled', close);
    call.on('error', close);
    call.on('close', close);
  }

  private onRequest(req: etcdserverpb.WatchRequest): void {
    if (this.closed) return;
    if (!(req instanceof etcdserverpb.WatchRequest)) {
      // Refused by the deserializer (too large, malformed): the stream ends with its status.
      const status = (req as { status?: Partial<grpc.StatusObject> }).status ?? { code: grpc.status.INVALID_ARGUMENT };
      this.close();
      this.call.emit('error', status);
      return;
    }
    try {
      if (req.create_request) {
        const denied = this.authorize === null ? null : this.authorize(req.create_request);
        if (denied !== null) this.refuseCreate(denied);
        else this.hub.create(this.id, req.create_request);
      }
      else if (req.cancel_request) this.hub.cancel(this.id, req.cancel_request.watch_id ?? 0);
      else if (req.progress_request) this.hub.requestProgress(this.id);
    } catch (err) {
      // Client input must never stop the server: this stream ends, the others go on.
      this.close();
      this.call.emit('error', { code: grpc.status.INTERNAL, details: `etcdserver: ${(err as Error).message}` });
    }
  }

  /** etcd's answer to a create the caller may not make: a created-and-canceled response. */
  private refuseCreate(reason: string): void {
    const s = this.server!;
    const bytes = etcdserverpb.WatchResponse.encode({
      header: { cluster_id: s.clusterId, member_id: s.memberId, revision: s.currentRev, raft_term: s.raftTerm() },
      watch_id: -1, created: true, canceled: true, cancel_reason: reason,
    }).finish();
    this.call.write(bytes);
  }

  writeFramed(frames: Uint8Array, count: number): void {
    if (this.closed) return;
    const call = this.call;
    if (call.writeFramed !== undefined) {
      this.inFlight.push(frames.length);
      call.writeFramed(frames, this.onWritten);
      return;
    }
    // grpc-js (or the gateway) frames each message itself: one write per response.
    const b = Buffer.from(frames.buffer, frames.byteOffset, frames.length);
    let pos = 0;
    for (let i = 0; i < count; i++) {
      const len = b.readUInt32BE(pos + 1);
      this.inFlight.push(5 + len);
      call.write(b.subarray(pos + 5, pos + 5 + len), this.onWritten);
      pos += 5 + len;
    }
  }

  fail(message: string): void {
    if (this.closed) return;
    this.closed = true;
    this.call.emit('error', { code: grpc.status.UNAVAILABLE, details: message });
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.hub.closeStream(this.id);
  }
}

export function watchHandlers(hub: WatchHub, server: EtcdServer | null = null): grpc.UntypedServiceImplementation {
  return {
    Watch(call: grpc.ServerDuplexStream<etcdserverpb.WatchRequest, Uint8Array>): void {
      new WatchStream(hub, call as unknown as WatchCall, server);
    },
  };
}
