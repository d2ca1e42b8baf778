// The KV, lease and watch calls the Lock and Election services make, served in-process (etcd's
// v3lock and v3election servers use a clientv3 connected to their own member; concord calls
// the server directly: the same proposals, reads and watch engine, no network round trip).
import Long from 'long';
import { etcdserverpb, mvccpb } from '../gen/proto';
import { EtcdServer, InternalWaiter } from '../server/etcd_server';
import { ReadKind } from '../workers/protocol';
import { ConcordError, ErrorCode, errorByCode } from '../util/errors';
import type { WatchStreamSink } from '../watch/hub';

/** Fails with the server's error code (mapped to etcd's status by the API layer). */
function codeError(code: number): ConcordError {
  return errorByCode(code as ErrorCode);
}

export class InternalClient {
  constructor(private readonly server: EtcdServer) {}

  txn(req: etcdserverpb.ITxnRequest): Promise<etcdserverpb.TxnResponse> {
    return new Promise((resolve, reject) => {
      const code = this.server.propose({ txn: req }, new InternalWaiter((c, bytes) => {
        if (c !== 0) reject(codeError(c));
        else resolve(etcdserverpb.TxnResponse.decode(bytes));
      }));
      if (code !== 0) reject(codeError(code));
    });
  }

  deleteRange(req: etcdserverpb.IDeleteRangeRequest): Promise<etcdserverpb.DeleteRangeResponse> {
    return new Promise((resolve, reject) => {
      const code = this.server.propose({ delete_range: req }, new InternalWaiter((c, bytes) => {
        if (c !== 0) reject(codeError(c));
        else resolve(etcdserverpb.DeleteRangeResponse.decode(bytes));
      }));
      if (code !== 0) reject(codeError(code));
    });
  }

  range(req: etcdserverpb.IRangeRequest): Promise<etcdserverpb.RangeResponse> {
    return new Promise((resolve, reject) => {
      const bytes = etcdserverpb.RangeRequest.encode(req).finish();
      const code = this.server.read(ReadKind.Range, bytes, false, new InternalWaiter((c, out) => {
        if (c !== 0) reject(codeError(c));
        else resolve(etcdserverpb.RangeResponse.decode(out));
      }));
      if (code !== 0) reject(codeError(code));
    });
  }

  /** A lease the server picks the id of (concurrency.NewSession without a lease). */
  leaseGrant(ttl: number): Promise<Long> {
    const id = this.server.lessor.newId();
    return new Promise((resolve, reject) => {
      const code = this.server.propose({ lease_grant: { ID: id, TTL: ttl } }, new InternalWaiter((c) => {
        if (c !== 0) reject(codeError(c));
        else resolve(id);
      }));
      if (code !== 0) reject(codeError(code));
    });
  }

  /**
   * Resolves once `key` is deleted at or after revision `rev` (concurrency waitDelete), or
   * rejects when `signal` aborts. One internal watch stream per wait.
   */
  waitDelete(key: Uint8Array, rev: number, signal: AbortSignal): Promise<void> {
    return this.watch<true>(key, null, rev, signal, (ev) => (ev.type === mvccpb.Event.EventType.DELETE ? true : undefined))
      .then(() => undefined);
  }

  /**
   * Watches [key, end) from `rev`, calling `onEvent` for each event until it returns a value
   * other than undefined (the promise's result) or `signal` aborts.
   */
  watch<T>(key: Uint8Array, end: Uint8Array | null, rev: number, signal: AbortSignal,
    onEvent: (ev: mvccpb.Event, header: etcdserverpb.IResponseHeader) => T | undefined): Promise<T> {
    const hub = this.server.watch;
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const finish = (err: Error | null, value?: T): void => {
        if (done) return;
        done = true;
        signal.removeEventListener('abort', onAbort);
        hub.closeStream(id);
        if (err !== null) reject(err);
        else resolve(value as T);
      };
      const onAbort = (): void => finish(new Error('context canceled'));
      const sink: WatchStreamSink = {
        writeFramed(frames: Uint8Array, count: number): void {
          if (done) return;
          const b = Buffer.from(frames.buffer, frames.byteOffset, frames.length);
          let pos = 0;
          for (let i = 0; i < count && !done; i++) {
            const len = b.readUInt32BE(pos + 1);
            const resp = etcdserverpb.WatchResponse.decode(b.subarray(pos + 5, pos + 5 + len));
            pos += 5 + len;
            if (resp.canceled) {
              finish(new Error(resp.cancel_reason !== '' ? resp.cancel_reason : 'etcdserver: mvcc: required revision has been compacted'));
              return;
            }
            for (const ev of resp.events) {
              const out = onEvent(ev as mvccpb.Event, resp.header ?? {});
              if (out !== undefined) {
                finish(null, out);
                return;
              }
            }
          }
          hub.ack(id, frames.length);
        },
        fail(message: string): void {
          finish(new Error(message));
        },
      };
      const id = hub.openStream(sink);
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort);
      hub.create(id, { key, range_end: end ?? undefined, start_revision: rev });
    });
  }
}
