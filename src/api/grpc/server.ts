// The client-facing gRPC server: every etcd service registered, the implemented methods
// answered, the rest UNIMPLEMENTED. Definitions are wrapped once here so that
//  - any method may answer with bytes encoded elsewhere (the storage worker),
//  - a request over the size limit or that does not parse gets etcd's status and message,
//    and never reaches a handler,
//  - an exception thrown by a handler fails its request (INTERNAL) and is logged, whichever way
//    the request came (fast path, grpc-js, HTTP gateway): guardHandlers is the one place.
import * as grpc from '@grpc/grpc-js';
import { EtcdServer } from '../../server/etcd_server';
import { services, serviceNames, unimplementedHandlers, ServiceName } from './services';
import { grpcStatus, internalError, malformed, messageTooLarge } from './errors';
import { kvHandlers } from './kv';
import { authHandlers } from './auth';
import {
  canonical, CompactionRequestSpec, DeleteRangeRequestSpec, MessageSpec, PutRequestSpec, RangeRequestSpec,
  TxnRequestSpec, WireChecker,
} from './wire_check';
import { txnNestingCap } from '../../config/limits';
import { ErrorCode } from '../../util/errors';
import { clusterHandlers, healthHandlers, maintenanceHandlers } from './maintenance';
import { GrpcCallStats, MethodCallStats, type GrpcType } from './call_stats';
import { UnaryFastPath, type DuplexRoute, type UnaryRoute } from './unary_fast_path';
import { watchHandlers } from './watch';
import { leaseHandlers } from './lease';
import { lockHandlers } from '../../concurrency/lock';
import { electionHandlers } from '../../concurrency/election';
import type { Logger } from '../../util/log';
import { RequestGate } from './request_gate';

export interface GrpcOptions {
  requestBytesMax: number;
  recvBytesMax: number;
  txnOpsMax: number;
  maxConcurrentStreams: number;
  /** Where an exception thrown by a handler is reported (with its stack). */
  logger: Logger;
}

/** What a deserializer hands a handler instead of a message when the request is refused. */
class RefusedRequest {
  readonly status: Partial<grpc.StatusObject>;
  constructor(status: Partial<grpc.StatusObject>) {
    this.status = status;
  }
}

/** Requests walked as etcd's decoder walks them before protobufjs decodes them (wire_check.ts). */
const wireSpecs = new Map<string, MessageSpec>([
  ['/etcdserverpb.KV/Range', RangeRequestSpec],
  ['/etcdserverpb.KV/Put', PutRequestSpec],
  ['/etcdserverpb.KV/DeleteRange', DeleteRangeRequestSpec],
  ['/etcdserverpb.KV/Txn', TxnRequestSpec],
  ['/etcdserverpb.KV/Compact', CompactionRequestSpec],
]);

function wrapDefinition(def: grpc.ServiceDefinition, recvBytesMax: number, txnOpsMax: number): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const checker = new WireChecker();
  // Txn levels kept whole (wire_check.ts canonical()): below txnOpsMax + 1 etcd refuses anyway.
  const txnLevelsMax = Math.min(txnOpsMax + 1, txnNestingCap);
  for (const [name, m] of Object.entries(def)) {
    const decode = m.requestDeserialize;
    const encode = m.responseSerialize;
    const wireSpec = wireSpecs.get(m.path);
    out[name] = {
      ...m,
      requestDeserialize(buf: Buffer): unknown {
        if (buf.length > recvBytesMax) return new RefusedRequest(messageTooLarge(buf.length, recvBytesMax));
        if (wireSpec !== undefined) {
          if (!checker.check(wireSpec, buf, txnLevelsMax)) return new RefusedRequest(malformed(checker.error!));
          if (checker.tooDeep && txnLevelsMax < txnOpsMax + 1) {
            // Deeper than concord nests at all (--max-txn-ops above limits.txnNestingCap).
            return new RefusedRequest(grpcStatus(ErrorCode.TooManyOps));
          }
          if (checker.irregular || checker.tooDeep) buf = canonical(wireSpec, buf, txnLevelsMax);
        }
        try {
          return decode(buf);
        } catch (err) {
          return new RefusedRequest(malformed((err as Error).message));
        }
      },
      responseSerialize(value: unknown): Buffer {
        if (value instanceof Uint8Array) {
          return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.length);
        }
        return encode(value);
      },
    };
  }
  return out as grpc.ServiceDefinition;
}

function grpcType(m: grpc.MethodDefinition<unknown, unknown>): GrpcType {
  if (m.requestStream) return m.responseStream ? 'bidi_stream' : 'client_stream';
  return m.responseStream ? 'server_stream' : 'unary';
}

interface StatusLike { code?: number }

/** The log message of a request failed by an exception in its handler. */
const handlerExceptionLogMessage = 'request failed: exception in its handler';

function logHandlerException(logger: Logger, path: string, err: unknown): void {
  logger.error(handlerExceptionLogMessage, {
    method: path,
    error: err instanceof Error ? err.message : String(err),
    stack: err instanceof Error ? err.stack : undefined,
  });
}

/** A unary call's answer: not yet, given by the handler, or INTERNAL given by the guard. */
const enum Answer { Pending, Handler, Guard }

/**
 * Refused requests are answered before the handler runs, for every kind of method; every call
 * is counted for /metrics (grpc_server_started_total, grpc_server_handled_total) when
 * `callStats` is given (the HTTP gateway's copy is not counted). Counting the outcome of a unary
 * call wraps its callback: one small closure per call, next to the dozens of objects grpc-js
 * allocates per call itself.
 *
 * An exception thrown by a handler fails that call only: a unary call is answered INTERNAL
 * (unless the handler answered before it threw; a late answer after the guard's is dropped), a
 * streaming call ends with INTERNAL; the exception is logged once with its stack. Without this,
 * a throw on the fast path reached node's http2 'stream' event and stopped the process, and
 * grpc-js answered UNKNOWN "Unknown error" and logged nothing (test/api/handler_errors.test.ts).
 * Only synchronous throws can be caught here: handlers that answer later catch their own.
 */
function guardHandlers(service: string, def: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation,
  callStats: GrpcCallStats | null, logger: Logger, gate: RequestGate): grpc.UntypedServiceImplementation {
  const out: grpc.UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(impl)) {
    const m = def[name]!;
    const path = m.path;
    const stats = callStats !== null ? callStats.register(service, name, grpcType(m))
      : new MethodCallStats(service, name, grpcType(m));
    const h = handler as (call: unknown, cb?: grpc.sendUnaryData<unknown>) => void;
    type AnyCall = { request?: unknown; emit(e: string, s: unknown): void; on(e: string, f: (x: StatusLike) => void): void };
    out[name] = ((call: AnyCall, cb?: grpc.sendUnaryData<unknown>) => {
      stats.started++;
      if (call.request instanceof RefusedRequest) {
        stats.finish(call.request.status.code ?? grpc.status.UNKNOWN);
        if (cb !== undefined) cb(call.request.status);
        else call.emit('error', call.request.status);
        return;
      }
      if (cb !== undefined) {
        stats.received++;
        const refusal = gate.refuseUnary(path, call as never);
        if (refusal !== null) {
          stats.finish(refusal.code ?? grpc.status.UNKNOWN);
          cb(refusal);
          return;
        }
        let answer = Answer.Pending;
        try {
          h(call, (err, value) => {
            if (answer === Answer.Guard) return;
            answer = Answer.Handler;
            if (err) stats.finish((err as StatusLike).code ?? grpc.status.UNKNOWN);
            else {
              stats.sent++;
              stats.finish(grpc.status.OK);
            }
            cb(err, value);
          });
        } catch (err) {
          logHandlerException(logger, path, err);
          if (answer !== Answer.Pending) return;
          answer = Answer.Guard;
          const status = internalError(err);
          stats.finish(grpc.status.INTERNAL);
          cb(status);
        }
        return;
      }
      call.on('error', (s) => stats.finish(s.code ?? grpc.status.UNKNOWN));
      call.on('finish', () => stats.finish(grpc.status.OK));
      const refusal = gate.admitStream(call as never, path);
      if (refusal !== null) {
        call.emit('error', refusal);
        return;
      }
      try {
        h(call);
      } catch (err) {
        logHandlerException(logger, path, err);
        call.emit('error', internalError(err));
      }
    }) as grpc.UntypedHandleCall;
  }
  return out;
}

/** Streaming methods with handlers written for the fast path's call as well as grpc-js's. */
const fastDuplexPaths = new Set(['/etcdserverpb.Watch/Watch', '/etcdserverpb.Lease/LeaseKeepAlive']);

export class GrpcApi {
  readonly grpcServer: grpc.Server;
  /**
   * service -> method -> the registered handler behind the same guard as gRPC's (refusals,
   * exceptions), not counted as gRPC calls: what the HTTP gateway calls.
   */
  readonly handlers = {} as Record<ServiceName, grpc.UntypedServiceImplementation>;
  readonly callStats = new GrpcCallStats();
  /** ':path' -> wrapped definition and guarded handler of every unary method (unary_fast_path.ts). */
  private readonly unaryRoutes = new Map<string, UnaryRoute>();
  /** Bidi methods the fast path serves too (their handlers take any call with on/write/emit). */
  private readonly duplexRoutes = new Map<string, DuplexRoute>();
  private fastPath: UnaryFastPath | null = null;
  private readonly options: GrpcOptions;
  private readonly gate: RequestGate;

  constructor(server: EtcdServer, options: GrpcOptions) {
    this.options = options;
    this.grpcServer = new grpc.Server({
      // grpc-js enforces this hard cap itself; below it, requestDeserialize answers in etcd's words.
      'grpc.max_receive_message_length': options.recvBytesMax * 2,
      'grpc.max_send_message_length': -1,
      'grpc.max_concurrent_streams': options.maxConcurrentStreams,
      // channelz bookkeeping costs main-thread time on every call; nothing here reads it.
      'grpc.enable_channelz': 0,
    });
    server.setResultSink(deliver);
    this.gate = new RequestGate(server, server.cfg.electionMs);
    const implemented: Partial<Record<ServiceName, grpc.UntypedServiceImplementation>> = {
      'etcdserverpb.KV': kvHandlers(server, options.txnOpsMax),
      'etcdserverpb.Maintenance': maintenanceHandlers(server),
      'etcdserverpb.Cluster': clusterHandlers(server),
      'grpc.health.v1.Health': healthHandlers(server),
      'etcdserverpb.Watch': watchHandlers(server.watch, server),
      'etcdserverpb.Lease': leaseHandlers(server),
      'v3lockpb.Lock': lockHandlers(server),
      'v3electionpb.Election': electionHandlers(server),
      'etcdserverpb.Auth': authHandlers(server, { bcryptCost: server.cfg.bcryptCost ?? 10, passwordMinLength: server.cfg.passwordMinLength ?? 0 }),
    };
    for (const name of serviceNames) {
      const def = services[name];
      const impl = { ...unimplementedHandlers(def), ...(implemented[name] ?? {}) };
      this.handlers[name] = guardHandlers(name, def, impl, null, options.logger, this.gate);
      const wrapped = wrapDefinition(def, options.recvBytesMax, options.txnOpsMax);
      const guarded = guardHandlers(name, def, impl, this.callStats, options.logger, this.gate);
      this.grpcServer.addService(wrapped, guarded);
      for (const [method, m] of Object.entries(wrapped)) {
        if (fastDuplexPaths.has(m.path)) {
          this.duplexRoutes.set(m.path, { def: m, handler: guarded[method] as DuplexRoute['handler'] });
          continue;
        }
        if (m.requestStream || m.responseStream) continue;
        this.unaryRoutes.set(m.path, { def: m, handler: guarded[method] as UnaryRoute['handler'] });
      }
    }
  }

  /**
   * Where the client listener hands HTTP/2 connections (src/api/listener.ts): the unary fast
   * path in front of grpc-js, or grpc-js's own injector when the fast path is unavailable or
   * turned off (CONCORD_GRPC_FAST_PATH=0, for A/B measurements).
   */
  connectionSink(): { injectConnection(socket: import('node:net').Socket): void } {
    if (process.env.CONCORD_GRPC_FAST_PATH !== '0') {
      this.fastPath = UnaryFastPath.create(this.grpcServer, this.unaryRoutes, {
        maxConcurrentStreams: this.options.maxConcurrentStreams, recvBytesMax: this.options.recvBytesMax,
      }, this.duplexRoutes);
      if (this.fastPath !== null) return this.fastPath;
    }
    return this.grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  }

  async stop(): Promise<void> {
    this.gate.close();
    this.fastPath?.close();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.grpcServer.forceShutdown(), 2000);
      this.grpcServer.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

/** The server's ResultSink: `target` is the grpc callback of the call being answered. */
function deliver(target: unknown, code: number, response: Uint8Array): void {
  const callback = target as grpc.sendUnaryData<Uint8Array>;
  if (code === 0) callback(null, response);
  else callback(grpcStatus(code));
}
