// The HTTP/JSON gateway (etcd's grpc-gateway): POST /v3/<service>/<method> with a JSON body,
// answered by the same handlers the gRPC server runs, so both sides agree by construction.
// Also /v3beta/... (alias, as etcd 3.4 serves it) and the operational endpoints /health,
// /livez, /readyz, /version and /metrics.
//
// Streaming methods (watch, lease keep-alive, snapshot, observe) are bridged the way
// grpc-gateway does it: request messages are newline-delimited JSON objects in the body, each
// response is written as a line `{"result": …}`, an error as `{"error": …}`.
import { EventEmitter } from 'node:events';
import type http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import type { EtcdServer } from '../../server/etcd_server';
import { etcdserverpb } from '../../gen/proto';
import { ReadKind } from '../../workers/protocol';
import { services, type ServiceName } from '../grpc/services';
import { internalError, messageTooLarge } from '../grpc/errors';
import { bytesToJson, jsonToBytes, JsonRequestError, lookupService } from './jsonpb';
import type { Metrics } from '../../metrics/metrics';
import type { Logger } from '../../util/log';
import { concordVersion, etcdClusterVersion, etcdVersion } from '../../version';

interface Route { service: ServiceName; method: string }

const ROUTES = new Map<string, Route>();

/** Every route (path after /v3) and the method it serves (tests walk them all). */
export function gatewayRoutes(): [string, Route][] {
  return [...ROUTES.entries()];
}
function route(paths: string[], service: ServiceName, method: string): void {
  for (const p of paths) ROUTES.set(p, { service, method });
}
route(['/kv/range'], 'etcdserverpb.KV', 'Range');
route(['/kv/put'], 'etcdserverpb.KV', 'Put');
route(['/kv/deleterange'], 'etcdserverpb.KV', 'DeleteRange');
route(['/kv/txn'], 'etcdserverpb.KV', 'Txn');
route(['/kv/compaction'], 'etcdserverpb.KV', 'Compact');
route(['/watch'], 'etcdserverpb.Watch', 'Watch');
route(['/lease/grant'], 'etcdserverpb.Lease', 'LeaseGrant');
route(['/lease/revoke', '/kv/lease/revoke'], 'etcdserverpb.Lease', 'LeaseRevoke');
route(['/lease/keepalive'], 'etcdserverpb.Lease', 'LeaseKeepAlive');
route(['/lease/timetolive', '/kv/lease/timetolive'], 'etcdserverpb.Lease', 'LeaseTimeToLive');
route(['/lease/leases', '/kv/lease/leases'], 'etcdserverpb.Lease', 'LeaseLeases');
route(['/cluster/member/add'], 'etcdserverpb.Cluster', 'MemberAdd');
route(['/cluster/member/remove'], 'etcdserverpb.Cluster', 'MemberRemove');
route(['/cluster/member/update'], 'etcdserverpb.Cluster', 'MemberUpdate');
route(['/cluster/member/list'], 'etcdserverpb.Cluster', 'MemberList');
route(['/cluster/member/promote'], 'etcdserverpb.Cluster', 'MemberPromote');
route(['/maintenance/alarm'], 'etcdserverpb.Maintenance', 'Alarm');
route(['/maintenance/status'], 'etcdserverpb.Maintenance', 'Status');
route(['/maintenance/defragment'], 'etcdserverpb.Maintenance', 'Defragment');
// etcd maps Hash and HashKV both to /v3/maintenance/hash; the first registered (Hash) wins.
route(['/maintenance/hash'], 'etcdserverpb.Maintenance', 'Hash');
route(['/maintenance/snapshot'], 'etcdserverpb.Maintenance', 'Snapshot');
route(['/maintenance/transfer-leadership'], 'etcdserverpb.Maintenance', 'MoveLeader');
route(['/maintenance/downgrade'], 'etcdserverpb.Maintenance', 'Downgrade');
route(['/auth/enable'], 'etcdserverpb.Auth', 'AuthEnable');
route(['/auth/disable'], 'etcdserverpb.Auth', 'AuthDisable');
route(['/auth/status'], 'etcdserverpb.Auth', 'AuthStatus');
route(['/auth/authenticate'], 'etcdserverpb.Auth', 'Authenticate');
route(['/auth/user/add'], 'etcdserverpb.Auth', 'UserAdd');
route(['/auth/user/get'], 'etcdserverpb.Auth', 'UserGet');
route(['/auth/user/list'], 'etcdserverpb.Auth', 'UserList');
route(['/auth/user/delete'], 'etcdserverpb.Auth', 'UserDelete');
route(['/auth/user/changepw'], 'etcdserverpb.Auth', 'UserChangePassword');
route(['/auth/user/grant'], 'etcdserverpb.Auth', 'UserGrantRole');
route(['/auth/user/revoke'], 'etcdserverpb.Auth', 'UserRevokeRole');
route(['/auth/role/add'], 'etcdserverpb.Auth', 'RoleAdd');
route(['/auth/role/get'], 'etcdserverpb.Auth', 'RoleGet');
route(['/auth/role/list'], 'etcdserverpb.Auth', 'RoleList');
route(['/auth/role/delete'], 'etcdserverpb.Auth', 'RoleDelete');
route(['/auth/role/grant'], 'etcdserverpb.Auth', 'RoleGrantPermission');
route(['/auth/role/revoke'], 'etcdserverpb.Auth', 'RoleRevokePermission');
route(['/lock/lock'], 'v3lockpb.Lock', 'Lock');
route(['/lock/unlock'], 'v3lockpb.Lock', 'Unlock');
route(['/election/campaign'], 'v3electionpb.Election', 'Campaign');
route(['/election/proclaim'], 'v3electionpb.Election', 'Proclaim');
route(['/election/leader'], 'v3electionpb.Election', 'Leader');
route(['/election/observe'], 'v3electionpb.Election', 'Observe');
route(['/election/resign'], 'v3electionpb.Election', 'Resign');

/** grpc-gateway v1's HTTPStatusFromCode. */
export function httpStatusFromGrpc(code: number): number {
  switch (code) {
    case grpc.status.OK: return 200;
    case grpc.status.CANCELLED: return 408;
    case grpc.status.UNKNOWN: return 500;
    case grpc.status.INVALID_ARGUMENT: return 400;
    case grpc.status.DEADLINE_EXCEEDED: return 504;
    case grpc.status.NOT_FOUND: return 404;
    case grpc.status.ALREADY_EXISTS: return 409;
    case grpc.status.PERMISSION_DENIED: return 403;
    case grpc.status.UNAUTHENTICATED: return 401;
    case grpc.status.RESOURCE_EXHAUSTED: return 429;
    case grpc.status.FAILED_PRECONDITION: return 412;
    case grpc.status.ABORTED: return 409;
    case grpc.status.OUT_OF_RANGE: return 400;
    case grpc.status.UNIMPLEMENTED: return 501;
    case grpc.status.INTERNAL: return 500;
    case grpc.status.UNAVAILABLE: return 503;
    case grpc.status.DATA_LOSS: return 500;
    default: return 500;
  }
}

const CORS_HEADERS: http.OutgoingHttpHeaders = {
  'Access-Control-Allow-Headers': 'accept, content-type, authorization',
  'Access-Control-Allow-Methods': 'POST, GET, OPTIONS, PUT, DELETE',
  'Access-Control-Allow-Origin': '*',
};

type Handler = (call: unknown, callback?: grpc.sendUnaryData<unknown>) => void;

export interface GatewayOptions {
  server: EtcdServer;
  /** service -> method -> the handler the gRPC server runs, behind its guard (GrpcApi.handlers). */
  handlers: Record<ServiceName, grpc.UntypedServiceImplementation>;
  recvBytesMax: number;
  metrics: Metrics | null;
  /** Where an exception in the gateway's own code is reported (handlers' are, by their guard). */
  logger: Logger;
}

interface StatusLike { code?: number; details?: string; message?: string }

function errorBody(code: number, message: string): string {
  return JSON.stringify({ error: message, message, code });
}

export class Gateway {
  constructor(private readonly opts: GatewayOptions) {}

  /** The request listener for node's http server: a request can fail, the server cannot. */
  readonly handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    try {
      this.route(req, res);
    } catch (err) {
      this.internalError(res, err);
    }
  };

  /**
   * An exception in the gateway's own code (a handler's is answered by its guard): JSON nested
   * past the stack is bad input; anything else fails the request like a handler's exception
   * (500, INTERNAL) and is logged with its stack.
   */
  private internalError(res: http.ServerResponse, err: unknown): void {
    let status: StatusLike;
    if (err instanceof RangeError) {
      status = { code: grpc.status.INVALID_ARGUMENT, details: 'exceeded max depth' };
    } else {
      status = internalError(err);
      this.opts.logger.error('request failed: exception in the HTTP gateway', {
        error: err instanceof Error ? err.message : String(err),
        stack: err instanceof Error ? err.stack : undefined,
      });
    }
    if (!res.headersSent) this.replyError(res, status);
    else res.destroy();
  }

  private route(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const p = url.pathname;
    if (p === '/health') return void this.health(url, res);
    if (p === '/livez' || p === '/readyz') return void this.probe(p, url, res);
    if (p === '/version') return this.reply(res, 200, 'application/json', JSON.stringify({ etcdserver: etcdVersion, etcdcluster: etcdClusterVersion, concord: concordVersion }));
    if (p === '/metrics' && this.opts.metrics !== null) return void this.metrics(res);
    const m = /^\/v3(?:beta)?(\/.*)$/.exec(p);
    const r = m ? ROUTES.get(m[1]!) : undefined;
    if (r === undefined) {
      return this.reply(res, 404, 'text/plain; charset=utf-8', m ? 'Not Found\n' : '404 page not found\n');
    }
    if (req.method !== 'POST') return this.reply(res, 405, 'text/plain; charset=utf-8', 'Method Not Allowed\n');
    if (services[r.service][r.method]!.requestStream) return this.call(r, req, res);
    this.readBody(req, (err, body) => {
      if (err !== null) return this.replyError(res, err);
      try {
        this.call(r, body, res);
      } catch (e) {
        this.internalError(res, e);
      }
    });
  }

  private reply(res: http.ServerResponse, status: number, contentType: string, body: string): void {
    res.writeHead(status, { ...CORS_HEADERS, 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  private replyError(res: http.ServerResponse, s: StatusLike): void {
    const code = s.code ?? grpc.status.UNKNOWN;
    this.reply(res, httpStatusFromGrpc(code), 'application/json', errorBody(code, s.details ?? s.message ?? ''));
  }

  private readBody(req: http.IncomingMessage, done: (err: StatusLike | null, body: string) => void): void {
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > this.opts.recvBytesMax * 2 && !refused) {
        refused = true;
        const s = messageTooLarge(size, this.opts.recvBytesMax);
        done({ code: s.code, details: s.details }, '');
        req.resume();
        return;
      }
      if (!refused) chunks.push(c);
    });
    req.on('end', () => { if (!refused) done(null, Buffer.concat(chunks).toString('utf8')); });
    req.on('error', () => { if (!refused) { refused = true; done({ code: grpc.status.CANCELLED, details: 'request aborted' }, ''); } });
  }

  private call(r: Route, body: string | http.IncomingMessage, res: http.ServerResponse): void {
    const def = services[r.service][r.method]!;
    const m = lookupService(r.service).methods[r.method]!;
    const reqType = m.resolvedRequestType!.fullName.replace(/^\./, '');
    const resType = m.resolvedResponseType!.fullName.replace(/^\./, '');
    const handler = this.opts.handlers[r.service][r.method] as Handler;
    if (def.requestStream || def.responseStream) return this.stream(def, reqType, resType, handler, body, res);
    if (typeof body !== 'string') throw new Error('unary gateway call without a body');
    let request: unknown;
    try {
      const bytes = jsonToBytes(reqType, body);
      if (bytes.length > this.opts.recvBytesMax) {
        const s = messageTooLarge(bytes.length, this.opts.recvBytesMax);
        return this.replyError(res, { code: s.code, details: s.details });
      }
      request = def.requestDeserialize(Buffer.from(bytes));
    } catch (err) {
      if (err instanceof JsonRequestError) return this.replyError(res, { code: grpc.status.INVALID_ARGUMENT, details: err.message });
      throw err;
    }
    const peer = peerOfRequest(res.req);
    const call = { request, metadata: metadataOf(res.req), getPeer: () => peer };
    handler(call, (err: StatusLike | null, value?: unknown) => {
      if (err) return this.replyError(res, err);
      try {
        const bytes = value instanceof Uint8Array ? value : def.responseSerialize(value);
        this.reply(res, 200, 'application/json', JSON.stringify(bytesToJson(resType, bytes)));
      } catch (e) {
        this.internalError(res, e);
      }
    });
  }

  /** grpc-gateway's streaming bridge: NDJSON requests in, `{"result":…}` lines out. */
  private stream(def: grpc.MethodDefinition<unknown, unknown>, reqType: string, resType: string, handler: Handler,
    body: string | http.IncomingMessage, res: http.ServerResponse): void {
    const call = new EventEmitter() as EventEmitter & Record<string, unknown>;
    let started = false;
    let ended = false;
    const start = (): void => {
      if (started) return;
      started = true;
      res.writeHead(200, { ...CORS_HEADERS, 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    };
    call.metadata = metadataOf(res.req);
    const peer = peerOfRequest(res.req);
    call.getPeer = () => peer;
    call.write = (value: unknown, cb?: () => void): boolean => {
      if (ended) return false;
      try {
        const bytes = value instanceof Uint8Array ? value : def.responseSerialize(value);
        const line = JSON.stringify({ result: bytesToJson(resType, bytes) }) + '\n';
        start();
        res.write(line, cb);
      } catch (e) {
        this.internalError(res, e);
        ended = true;
        return false;
      }
      return true;
    };
    call.end = (): void => {
      if (ended) return;
      ended = true;
      start();
      res.end();
    };
    call.on('error', (s: StatusLike) => {
      if (ended) return;
      ended = true;
      const code = s.code ?? grpc.status.UNKNOWN;
      const message = s.details ?? s.message ?? '';
      if (!started) return this.replyError(res, { code, details: message });
      res.end(JSON.stringify({ error: { grpc_code: code, http_code: httpStatusFromGrpc(code), message, http_status: '' } }) + '\n');
    });
    res.on('close', () => {
      if (!ended) call.emit('cancelled');
      ended = true;
    });
    if (typeof body !== 'string') {
      // grpc-gateway reads a request stream with Go's streaming JSON decoder, as the body
      // arrives: values need no newline between them; a first value that does not decode fails
      // the call (500, code 2); a later one ends the request stream, keeping what came before.
      const values = new JsonValueStream(this.opts.recvBytesMax * 2);
      let count = 0;
      let closed = false;
      let handled = false;
      const deliver = (text: string): boolean => {
        let msg: unknown;
        try {
          msg = def.requestDeserialize(Buffer.from(jsonToBytes(reqType, text)));
        } catch (err) {
          if (!(err instanceof JsonRequestError) && !(err instanceof SyntaxError)) throw err;
          if (count === 0 && !started) {
            ended = true;
            this.replyError(res, { code: grpc.status.UNKNOWN, details: err.message });
          }
          return false;
        }
        count++;
        if (!handled) {
          handled = true;
          handler(call);
        }
        call.emit('data', msg);
        return true;
      };
      const finish = (): void => {
        if (closed) return;
        closed = true;
        body.removeAllListeners('data');
        body.resume();
        if (ended) return;
        if (!handled) {
          handled = true;
          handler(call);
        }
        call.emit('end');
      };
      body.setEncoding('utf8');
      body.on('data', (chunk: string) => {
        if (closed) return;
        const got = values.push(chunk);
        if (got === null) return finish(); // a value past the size limit: the stream ends
        for (const v of got) {
          if (!deliver(v)) return finish();
        }
      });
      body.on('end', () => {
        if (closed) return;
        const rest = values.end();
        if (rest !== null) deliver(rest);
        finish();
      });
      body.on('error', () => {
        if (!closed) {
          closed = true;
          if (!ended) call.emit('cancelled');
          ended = true;
        }
      });
      return;
    }
    const request = (() => {
      try {
        return def.requestDeserialize(Buffer.from(jsonToBytes(reqType, body.trim().length > 0 ? body : '{}')));
      } catch (err) {
        if (err instanceof JsonRequestError) return err;
        throw err;
      }
    })();
    if (request instanceof JsonRequestError) return this.replyError(res, { code: grpc.status.INVALID_ARGUMENT, details: request.message });
    call.request = request;
    handler(call);
  }

  /** etcd's /health: leader known and a read served (linearizable unless ?serializable=true). */
  private health(url: URL, res: http.ServerResponse): void {
    const serializable = url.searchParams.get('serializable') === 'true';
    // etcd 3.4 answers an unhealthy member with http.Error (503), which ends the body in '\n'.
    const answer = (ok: boolean): void => this.reply(res, ok ? 200 : 503, 'text/plain; charset=utf-8', ok ? '{"health":"true"}' : '{"health":"false"}\n');
    if (!this.opts.server.hasLeader()) return answer(false);
    const excluded = new Set(url.searchParams.getAll('exclude'));
    // etcd checkHealth: any active alarm whose type is not excluded makes it false.
    if (this.opts.server.hasAlarmExcept(excluded)) return answer(false);
    const timer = setTimeout(() => answer(false), 1000);
    const req = etcdserverpb.RangeRequest.encode({ key: Buffer.from('health'), serializable }).finish();
    const code = this.opts.server.read(ReadKind.Range, req, serializable, (err: unknown) => {
      clearTimeout(timer);
      if (!res.headersSent) answer(err === null);
    });
    if (code !== 0) {
      clearTimeout(timer);
      answer(false);
    }
  }

  /** /livez and /readyz as etcd 3.6 serves them: "ok" or 503 with the failed check. */
  private probe(p: string, url: URL, res: http.ServerResponse): void {
    const verbose = url.searchParams.has('verbose');
    const checks: [string, boolean][] = [['serializable_read', true]];
    if (p === '/readyz') checks.push(['data_corruption', true], ['leader', this.opts.server.hasLeader()]);
    const ok = checks.every(([, pass]) => pass);
    const lines = checks.map(([name, pass]) => `[${pass ? '+' : '-'}]${name} ${pass ? 'ok' : 'failed'}`);
    const body = verbose || !ok ? `${lines.join('\n')}\n${p.slice(1)} check ${ok ? 'passed' : 'failed'}\n` : 'ok';
    this.reply(res, ok ? 200 : 503, 'text/plain; charset=utf-8', body);
  }

  private metrics(res: http.ServerResponse): void {
    this.opts.metrics!.render().then(
      (text) => this.reply(res, 200, this.opts.metrics!.contentType, text),
      (err: unknown) => this.reply(res, 500, 'text/plain; charset=utf-8', String(err)),
    );
  }
}

/**
 * Top-level JSON values of a body as it arrives ('{..}{..}', '{..}\n{..}'), as Go's streaming
 * decoder reads them. push() returns the values completed by a chunk (null once one grows past
 * `valueBytesMax`); end() returns what is left that is not white space (a malformed last value
 * for the decoder to refuse), or null.
 */
export class JsonValueStream {
  private current = '';
  private depth = 0;
  private inString = false;
  private escaped = false;
  private inValue = false;
  private broken = false;

  constructor(private readonly valueBytesMax: number) {}

  push(chunk: string): string[] | null {
    const out: string[] = [];
    let from = 0;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (!this.inValue) {
        if (c === ' ' || c === '\n' || c === '\r' || c === '\t') {
          from = i + 1;
          continue;
        }
        this.inValue = true;
        from = i;
        if (c !== '{' && c !== '[') this.broken = true; // not a message: the decoder refuses it
      }
      if (this.broken) continue;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') this.inString = false;
      } else if (c === '"') this.inString = true;
      else if (c === '{' || c === '[') this.depth++;
      else if (c === '}' || c === ']') {
        this.depth--;
        if (this.depth === 0) {
          out.push(this.current + chunk.slice(from, i + 1));
          this.current = '';
          this.inValue = false;
          from = i + 1;
        }
      }
    }
    if (this.inValue) {
      this.current += chunk.slice(from);
      if (this.current.length > this.valueBytesMax) return null;
    }
    return out;
  }

  end(): string | null {
    return this.inValue && this.current.trim().length > 0 ? this.current : null;
  }
}

/** What a gateway request carries for the handlers: its `Authorization` header as the auth
 * token (etcd's gateway does the same), as gRPC metadata `token`. */
function metadataOf(req: http.IncomingMessage): grpc.Metadata {
  const md = new grpc.Metadata();
  const auth = req.headers.authorization;
  if (auth !== undefined && auth !== '') md.set('token', auth);
  return md;
}

/** The HTTP client's connection, as grpc-js names a peer ("ip:port"). */
function peerOfRequest(req: http.IncomingMessage): string {
  return `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? 0}`;
}
