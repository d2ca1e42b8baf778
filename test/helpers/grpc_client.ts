// Test helpers: typed gRPC clients (built from src/api/grpc/services.ts, so the
// same definitions talk to concord and to real etcd), promisified calls, and a
// buffered reader for streams.

import * as grpc from '@grpc/grpc-js';
import Long from 'long';
import { prefixEnd as prefixEndOfBytes } from '../../src/util/prefix_end';
import {
  makeClient,
  type MethodsOfKind,
  type RequestInit,
  type ResponseOf,
  type ServiceClient,
  type ServiceName,
} from '../../src/api/grpc/services';

export type { ServiceClient, ServiceName } from '../../src/api/grpc/services';

/** 'http://host:port', 'https://host:port' or 'host:port' -> 'host:port'. */
export function toAddress(endpoint: string): string {
  return endpoint.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
}

/** A typed client for `service` at `endpoint` (insecure). Close it with client.close(). */
export function connect<S extends ServiceName>(
  service: S,
  endpoint: string,
  options?: Partial<grpc.ChannelOptions>,
): ServiceClient<S> {
  return makeClient(service, toAddress(endpoint), grpc.credentials.createInsecure(), options);
}

/** Typed clients for the etcd services at one endpoint (one channel each); close() closes them all. */
export function connectAll(endpoint: string) {
  const clients = {
    kv: connect('etcdserverpb.KV', endpoint),
    watch: connect('etcdserverpb.Watch', endpoint),
    lease: connect('etcdserverpb.Lease', endpoint),
    cluster: connect('etcdserverpb.Cluster', endpoint),
    maintenance: connect('etcdserverpb.Maintenance', endpoint),
    auth: connect('etcdserverpb.Auth', endpoint),
    lock: connect('v3lockpb.Lock', endpoint),
    election: connect('v3electionpb.Election', endpoint),
    health: connect('grpc.health.v1.Health', endpoint),
  };
  return {
    ...clients,
    close(): void {
      for (const c of Object.values(clients)) c.close();
    },
  };
}

export interface CallOpts {
  metadata?: grpc.Metadata;
  /** Deadline in ms from now (default 10 s). */
  timeoutMs?: number;
}

function callOptions(opts: CallOpts): Partial<grpc.CallOptions> {
  return { deadline: Date.now() + (opts.timeoutMs ?? 10_000) };
}

/**
 * Promisified unary call. Resolves with the decoded response; rejects with the
 * grpc-js ServiceError (err.code = gRPC status, err.details = message).
 */
export function unary<S extends ServiceName, M extends MethodsOfKind<S, 'unary'>>(
  client: ServiceClient<S>,
  method: M,
  req: RequestInit<S, M>,
  opts: CallOpts = {},
): Promise<ResponseOf<S, M>> {
  // The method type is only known generically here; call through a plain signature.
  const fn = (client as unknown as Record<string, Function>)[method];
  if (typeof fn !== 'function') return Promise.reject(new Error(`no method ${method} on client`));
  return new Promise((resolve, reject) => {
    fn.call(
      client,
      req,
      opts.metadata ?? new grpc.Metadata(),
      callOptions(opts),
      (err: grpc.ServiceError | null, res?: ResponseOf<S, M>) => {
        if (err) reject(err);
        else resolve(res as ResponseOf<S, M>);
      },
    );
  });
}

/** Server-streaming call collected to the end (rejects with the ServiceError on failure). */
export function collect<S extends ServiceName, M extends MethodsOfKind<S, 'server_stream'>>(
  client: ServiceClient<S>,
  method: M,
  req: RequestInit<S, M>,
  opts: CallOpts = {},
): Promise<ResponseOf<S, M>[]> {
  const fn = (client as unknown as Record<string, Function>)[method];
  if (typeof fn !== 'function') return Promise.reject(new Error(`no method ${method} on client`));
  const call = fn.call(client, req, opts.metadata ?? new grpc.Metadata(), callOptions(opts)) as grpc.ClientReadableStream<
    ResponseOf<S, M>
  >;
  return new Promise((resolve, reject) => {
    const out: ResponseOf<S, M>[] = [];
    call.on('data', (msg: ResponseOf<S, M>) => out.push(msg));
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
}

/** How a stream finished: normally, or with the call's ServiceError. */
export type StreamEnd = { kind: 'end' } | { kind: 'error'; error: grpc.ServiceError };

/**
 * Buffers every message of a readable gRPC stream from the moment it is made,
 * so nothing is lost between awaits. `next()` yields the next message, or
 * rejects on timeout / stream error / stream end.
 */
export class StreamReader<T> {
  private readonly queue: T[] = [];
  private waiter: { resolve: (v: T) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;
  private ended: StreamEnd | undefined;

  constructor(stream: NodeJS.ReadableStream) {
    stream.on('data', (msg: T) => {
      const w = this.waiter;
      if (w) {
        this.waiter = undefined;
        clearTimeout(w.timer);
        w.resolve(msg);
      } else {
        this.queue.push(msg);
      }
    });
    stream.on('error', (err: grpc.ServiceError) => this.finish({ kind: 'error', error: err }));
    stream.on('end', () => this.finish({ kind: 'end' }));
  }

  private finish(end: StreamEnd): void {
    this.ended ??= end;
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      clearTimeout(w.timer);
      w.reject(this.endError());
    }
  }

  private endError(): Error {
    const end = this.ended;
    if (end?.kind === 'error') return end.error;
    return new Error('stream ended');
  }

  /** Messages received but not yet taken. */
  get pending(): number {
    return this.queue.length;
  }

  /** How the stream finished, if it has. */
  get end(): StreamEnd | undefined {
    return this.ended;
  }

  /** The next message (waits up to timeoutMs, default 5 s). */
  next(timeoutMs = 5000): Promise<T> {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift() as T);
    if (this.ended) return Promise.reject(this.endError());
    if (this.waiter) return Promise.reject(new Error('StreamReader.next() is already pending'));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no stream message within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = { resolve, reject, timer };
    });
  }

  /** Resolves once nothing arrives for `quietMs`; returns what did arrive (for "no more events" checks). */
  async drain(quietMs = 200): Promise<T[]> {
    const got: T[] = [];
    for (;;) {
      try {
        got.push(await this.next(quietMs));
      } catch {
        return got;
      }
    }
  }
}

/** A bidi/duplex call and a StreamReader over its responses. */
export function openStream<S extends ServiceName, M extends MethodsOfKind<S, 'bidi'>>(
  client: ServiceClient<S>,
  method: M,
  metadata: grpc.Metadata = new grpc.Metadata(),
): { call: grpc.ClientDuplexStream<RequestInit<S, M>, ResponseOf<S, M>>; reader: StreamReader<ResponseOf<S, M>> } {
  const fn = (client as unknown as Record<string, Function>)[method];
  if (typeof fn !== 'function') throw new Error(`no method ${method} on client`);
  const call = fn.call(client, metadata) as grpc.ClientDuplexStream<RequestInit<S, M>, ResponseOf<S, M>>;
  return { call, reader: new StreamReader<ResponseOf<S, M>>(call) };
}

/** A 64-bit protobufjs field (number or Long) as a JS number (exact below 2^53). */
export function num(v: number | { toNumber(): number } | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

/** A 64-bit protobufjs field (number or Long) as a bigint (exact). */
export function big(v: number | { toString(): string } | null | undefined): bigint {
  if (v === null || v === undefined) return 0n;
  return BigInt(typeof v === 'number' ? v : v.toString());
}

/** A bigint/decimal string/number as a Long for 64-bit fields (unsigned for uint64 fields). */
export function long(v: bigint | string | number, unsigned = false): Long {
  return Long.fromString(String(v), unsigned);
}

/** Bytes field as a utf8 string. */
export function str(v: Uint8Array | null | undefined): string {
  return v ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8') : '';
}

/** utf8 string as bytes. */
export function bytes(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

/** range_end for a prefix query (etcd's GetPrefixRangeEnd), of a utf8 string or bytes. */
export function prefixEnd(prefix: string | Uint8Array): Buffer {
  return prefixEndOfBytes(typeof prefix === 'string' ? Buffer.from(prefix, 'utf8') : prefix);
}

/** 'ok' when the call succeeded, else the gRPC error's details (tests that list refusals). */
export async function detailsOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return (err as grpc.ServiceError).details;
  }
}
