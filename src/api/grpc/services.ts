// gRPC service definitions for every service concord serves (etcd v3 wire API,
// lock/election, grpc health), built from one declarative table over the
// static protobufjs code in src/gen/proto (no reflection, no proto-loader).
//
// - serialize   = T.encode(msg).finish()  (as a Buffer, which grpc-js needs)
// - deserialize = T.decode(buf)           (int64 fields decode to Long)
// - methods marked `raw` in the table also accept an already-encoded
//   Buffer/Uint8Array as the response and send it unchanged.

import * as grpc from '@grpc/grpc-js';
import { etcdserverpb as pb, v3lockpb, v3electionpb, grpc as grpcpb } from '../../gen/proto';

const healthpb = grpcpb.health.v1;

// ------------------------------------------------------------------ table types

/** The parts of a generated static message class the definitions use. */
export interface MessageType<TDecoded, TInit> {
  encode(message: TInit): { finish(): Uint8Array };
  decode(buf: Uint8Array): TDecoded;
}

/** unary | server stream | client stream | bidirectional stream. */
export type MethodKind = 'unary' | 'server_stream' | 'client_stream' | 'bidi';

/** One row of the table: request/response types, streaming kind, raw-response flag. */
export interface MethodSpec<TReq, PReq, TRes, PRes, K extends MethodKind, R extends boolean> {
  readonly req: MessageType<TReq, PReq>;
  readonly res: MessageType<TRes, PRes>;
  readonly kind: K;
  /** When true the response serializer passes Buffer/Uint8Array responses through unencoded. */
  readonly raw: R;
}

function rpc<TReq, PReq, TRes, PRes, const K extends MethodKind = 'unary', const R extends boolean = false>(
  req: MessageType<TReq, PReq>,
  res: MessageType<TRes, PRes>,
  kind?: K,
  raw?: R,
): MethodSpec<TReq, PReq, TRes, PRes, K, R> {
  return { req, res, kind: (kind ?? 'unary') as K, raw: (raw ?? false) as R };
}

const RAW = true;

// ------------------------------------------------------------------ the table
//
// service full name -> method name -> rpc(request type, response type, kind, raw?)

const TABLE = {
  'etcdserverpb.KV': {
    Range: rpc(pb.RangeRequest, pb.RangeResponse, 'unary', RAW),
    Put: rpc(pb.PutRequest, pb.PutResponse, 'unary', RAW),
    DeleteRange: rpc(pb.DeleteRangeRequest, pb.DeleteRangeResponse, 'unary', RAW),
    Txn: rpc(pb.TxnRequest, pb.TxnResponse, 'unary', RAW),
    Compact: rpc(pb.CompactionRequest, pb.CompactionResponse),
  },
  'etcdserverpb.Watch': {
    Watch: rpc(pb.WatchRequest, pb.WatchResponse, 'bidi', RAW),
  },
  'etcdserverpb.Lease': {
    LeaseGrant: rpc(pb.LeaseGrantRequest, pb.LeaseGrantResponse),
    LeaseRevoke: rpc(pb.LeaseRevokeRequest, pb.LeaseRevokeResponse),
    LeaseKeepAlive: rpc(pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse, 'bidi', RAW),
    LeaseTimeToLive: rpc(pb.LeaseTimeToLiveRequest, pb.LeaseTimeToLiveResponse),
    LeaseLeases: rpc(pb.LeaseLeasesRequest, pb.LeaseLeasesResponse),
  },
  'etcdserverpb.Cluster': {
    MemberAdd: rpc(pb.MemberAddRequest, pb.MemberAddResponse),
    MemberRemove: rpc(pb.MemberRemoveRequest, pb.MemberRemoveResponse),
    MemberUpdate: rpc(pb.MemberUpdateRequest, pb.MemberUpdateResponse),
    MemberList: rpc(pb.MemberListRequest, pb.MemberListResponse),
    MemberPromote: rpc(pb.MemberPromoteRequest, pb.MemberPromoteResponse),
  },
  'etcdserverpb.Maintenance': {
    Alarm: rpc(pb.AlarmRequest, pb.AlarmResponse),
    Status: rpc(pb.StatusRequest, pb.StatusResponse),
    Defragment: rpc(pb.DefragmentRequest, pb.DefragmentResponse),
    Hash: rpc(pb.HashRequest, pb.HashResponse),
    HashKV: rpc(pb.HashKVRequest, pb.HashKVResponse),
    Snapshot: rpc(pb.SnapshotRequest, pb.SnapshotResponse, 'server_stream', RAW),
    MoveLeader: rpc(pb.MoveLeaderRequest, pb.MoveLeaderResponse),
    Downgrade: rpc(pb.DowngradeRequest, pb.DowngradeResponse),
  },
  'etcdserverpb.Auth': {
    AuthEnable: rpc(pb.AuthEnableRequest, pb.AuthEnableResponse),
    AuthDisable: rpc(pb.AuthDisableRequest, pb.AuthDisableResponse),
    AuthStatus: rpc(pb.AuthStatusRequest, pb.AuthStatusResponse),
    Authenticate: rpc(pb.AuthenticateRequest, pb.AuthenticateResponse),
    UserAdd: rpc(pb.AuthUserAddRequest, pb.AuthUserAddResponse),
    UserGet: rpc(pb.AuthUserGetRequest, pb.AuthUserGetResponse),
    UserList: rpc(pb.AuthUserListRequest, pb.AuthUserListResponse),
    UserDelete: rpc(pb.AuthUserDeleteRequest, pb.AuthUserDeleteResponse),
    UserChangePassword: rpc(pb.AuthUserChangePasswordRequest, pb.AuthUserChangePasswordResponse),
    UserGrantRole: rpc(pb.AuthUserGrantRoleRequest, pb.AuthUserGrantRoleResponse),
    UserRevokeRole: rpc(pb.AuthUserRevokeRoleRequest, pb.AuthUserRevokeRoleResponse),
    RoleAdd: rpc(pb.AuthRoleAddRequest, pb.AuthRoleAddResponse),
    RoleGet: rpc(pb.AuthRoleGetRequest, pb.AuthRoleGetResponse),
    RoleList: rpc(pb.AuthRoleListRequest, pb.AuthRoleListResponse),
    RoleDelete: rpc(pb.AuthRoleDeleteRequest, pb.AuthRoleDeleteResponse),
    RoleGrantPermission: rpc(pb.AuthRoleGrantPermissionRequest, pb.AuthRoleGrantPermissionResponse),
    RoleRevokePermission: rpc(pb.AuthRoleRevokePermissionRequest, pb.AuthRoleRevokePermissionResponse),
  },
  'v3lockpb.Lock': {
    Lock: rpc(v3lockpb.LockRequest, v3lockpb.LockResponse),
    Unlock: rpc(v3lockpb.UnlockRequest, v3lockpb.UnlockResponse),
  },
  'v3electionpb.Election': {
    Campaign: rpc(v3electionpb.CampaignRequest, v3electionpb.CampaignResponse),
    Proclaim: rpc(v3electionpb.ProclaimRequest, v3electionpb.ProclaimResponse),
    Leader: rpc(v3electionpb.LeaderRequest, v3electionpb.LeaderResponse),
    Observe: rpc(v3electionpb.LeaderRequest, v3electionpb.LeaderResponse, 'server_stream', RAW),
    Resign: rpc(v3electionpb.ResignRequest, v3electionpb.ResignResponse),
  },
  'grpc.health.v1.Health': {
    Check: rpc(healthpb.HealthCheckRequest, healthpb.HealthCheckResponse),
    Watch: rpc(healthpb.HealthCheckRequest, healthpb.HealthCheckResponse, 'server_stream'),
  },
} as const;

// ------------------------------------------------------------------ derived types

type Table = typeof TABLE;

/** Full gRPC service name, e.g. 'etcdserverpb.KV'. */
export type ServiceName = keyof Table;
/** Method names of a service, e.g. 'Range' | 'Put' | ... */
export type MethodName<S extends ServiceName> = Extract<keyof Table[S], string>;
type Spec<S extends ServiceName, M extends MethodName<S>> = Table[S][M] extends MethodSpec<
  unknown, never, unknown, never, MethodKind, boolean
>
  ? Table[S][M]
  : never;

/** Decoded request (what a server handler receives). */
export type RequestOf<S extends ServiceName, M extends MethodName<S>> = ReturnType<Spec<S, M>['req']['decode']>;
/** Request properties accepted by encode (what a client sends). */
export type RequestInit<S extends ServiceName, M extends MethodName<S>> = Parameters<Spec<S, M>['req']['encode']>[0];
/** Decoded response (what a client receives). */
export type ResponseOf<S extends ServiceName, M extends MethodName<S>> = ReturnType<Spec<S, M>['res']['decode']>;
/** Response properties accepted by encode (what a server handler sends). */
export type ResponseInit<S extends ServiceName, M extends MethodName<S>> = Parameters<Spec<S, M>['res']['encode']>[0];
/** What a handler may send: the response properties, or pre-encoded bytes for raw methods. */
export type ResponseOut<S extends ServiceName, M extends MethodName<S>> =
  | ResponseInit<S, M>
  | (Spec<S, M>['raw'] extends true ? Uint8Array : never);
/** Streaming kind of a method. */
export type KindOf<S extends ServiceName, M extends MethodName<S>> = Spec<S, M>['kind'];
/** Method names of a service filtered by kind. */
export type MethodsOfKind<S extends ServiceName, K extends MethodKind> = {
  [M in MethodName<S>]: KindOf<S, M> extends K ? M : never;
}[MethodName<S>];

/** The grpc-js server handler type of one method. */
export type HandlerOf<S extends ServiceName, M extends MethodName<S>> = {
  unary: grpc.handleUnaryCall<RequestOf<S, M>, ResponseOut<S, M>>;
  server_stream: grpc.handleServerStreamingCall<RequestOf<S, M>, ResponseOut<S, M>>;
  client_stream: grpc.handleClientStreamingCall<RequestOf<S, M>, ResponseOut<S, M>>;
  bidi: grpc.handleBidiStreamingCall<RequestOf<S, M>, ResponseOut<S, M>>;
}[KindOf<S, M>];

/** A complete, typed implementation of a service. */
export type ServiceHandlers<S extends ServiceName> = { [M in MethodName<S>]: HandlerOf<S, M> };

type UnaryCallback<Res> = (err: grpc.ServiceError | null, res?: Res) => void;

/** Client method of a unary RPC (the forms grpc-js generic clients accept). */
export interface UnaryClientMethod<Req, Res> {
  (req: Req, callback: UnaryCallback<Res>): grpc.ClientUnaryCall;
  (req: Req, metadata: grpc.Metadata, callback: UnaryCallback<Res>): grpc.ClientUnaryCall;
  (req: Req, metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, callback: UnaryCallback<Res>): grpc.ClientUnaryCall;
}
/** Client method of a server-streaming RPC. */
export type ServerStreamClientMethod<Req, Res> = (
  req: Req,
  metadata?: grpc.Metadata,
  options?: Partial<grpc.CallOptions>,
) => grpc.ClientReadableStream<Res>;
/** Client method of a client-streaming RPC. */
export interface ClientStreamClientMethod<Req, Res> {
  (callback: UnaryCallback<Res>): grpc.ClientWritableStream<Req>;
  (metadata: grpc.Metadata, options: Partial<grpc.CallOptions>, callback: UnaryCallback<Res>): grpc.ClientWritableStream<Req>;
}
/** Client method of a bidirectional-streaming RPC. */
export type BidiClientMethod<Req, Res> = (
  metadata?: grpc.Metadata,
  options?: Partial<grpc.CallOptions>,
) => grpc.ClientDuplexStream<Req, Res>;

/** The grpc-js client method type of one method. */
export type ClientMethodOf<S extends ServiceName, M extends MethodName<S>> = {
  unary: UnaryClientMethod<RequestInit<S, M>, ResponseOf<S, M>>;
  server_stream: ServerStreamClientMethod<RequestInit<S, M>, ResponseOf<S, M>>;
  client_stream: ClientStreamClientMethod<RequestInit<S, M>, ResponseOf<S, M>>;
  bidi: BidiClientMethod<RequestInit<S, M>, ResponseOf<S, M>>;
}[KindOf<S, M>];

declare const serviceBrand: unique symbol;

/** A typed grpc-js client for service S (method names as in the proto, e.g. client.Range). */
export type ServiceClient<S extends ServiceName> = grpc.Client & { [M in MethodName<S>]: ClientMethodOf<S, M> } & {
  /** Type-level tag only; absent at runtime. */
  readonly [serviceBrand]?: S;
};

/** Constructor of a typed client for service S. */
export interface ServiceClientConstructor<S extends ServiceName> {
  new (address: string, credentials: grpc.ChannelCredentials, options?: Partial<grpc.ChannelOptions>): ServiceClient<S>;
  service: grpc.ServiceDefinition;
  serviceName: string;
}

// ------------------------------------------------------------------ definitions

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function encoder<P>(type: MessageType<unknown, P>): (msg: P) => Buffer {
  return (msg) => asBuffer(type.encode(msg).finish());
}

function rawEncoder<P>(type: MessageType<unknown, P>): (msg: P | Uint8Array) => Buffer {
  return (msg) => (msg instanceof Uint8Array ? asBuffer(msg) : asBuffer(type.encode(msg).finish()));
}

function decoder<T>(type: MessageType<T, never>): (buf: Buffer) => T {
  return (buf) => type.decode(buf);
}

type AnySpec = MethodSpec<unknown, never, unknown, never, MethodKind, boolean>;

function buildDefinition(service: string, methods: Record<string, AnySpec>): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, spec] of Object.entries(methods)) {
    def[name] = {
      path: `/${service}/${name}`,
      requestStream: spec.kind === 'client_stream' || spec.kind === 'bidi',
      responseStream: spec.kind === 'server_stream' || spec.kind === 'bidi',
      requestSerialize: encoder(spec.req) as (msg: unknown) => Buffer,
      requestDeserialize: decoder(spec.req),
      responseSerialize: (spec.raw ? rawEncoder(spec.res) : encoder(spec.res)) as (msg: unknown) => Buffer,
      responseDeserialize: decoder(spec.res),
    };
  }
  return def;
}

/** All service names, in table order. */
export const serviceNames = Object.keys(TABLE) as ServiceName[];

/** grpc-js ServiceDefinition of every service, keyed by full service name. */
export const services: Readonly<Record<ServiceName, grpc.ServiceDefinition>> = Object.freeze(
  Object.fromEntries(
    serviceNames.map((name) => [name, buildDefinition(name, TABLE[name] as unknown as Record<string, AnySpec>)]),
  ) as Record<ServiceName, grpc.ServiceDefinition>,
);

/** The ServiceDefinition of one service. */
export function serviceDefinition(name: ServiceName): grpc.ServiceDefinition {
  return services[name];
}

export const KVService = services['etcdserverpb.KV'];
export const WatchService = services['etcdserverpb.Watch'];
export const LeaseService = services['etcdserverpb.Lease'];
export const ClusterService = services['etcdserverpb.Cluster'];
export const MaintenanceService = services['etcdserverpb.Maintenance'];
export const AuthService = services['etcdserverpb.Auth'];
export const LockService = services['v3lockpb.Lock'];
export const ElectionService = services['v3electionpb.Election'];
export const HealthService = services['grpc.health.v1.Health'];

/** Method names of a service, in table order. */
export function methodNames<S extends ServiceName>(name: S): MethodName<S>[] {
  return Object.keys(TABLE[name]) as MethodName<S>[];
}

/** gRPC path of a method, e.g. '/etcdserverpb.KV/Range'. */
export function methodPath<S extends ServiceName>(service: S, method: MethodName<S>): string {
  return `/${service}/${method}`;
}

/** Whether a method's response serializer accepts pre-encoded bytes. */
export function isRawResponse<S extends ServiceName>(service: S, method: MethodName<S>): boolean {
  return (TABLE[service][method] as AnySpec).raw;
}

/** Encodes a response with the method's response type (e.g. to cache bytes for a raw method). */
export function encodeResponse<S extends ServiceName, M extends MethodName<S>>(
  service: S,
  method: M,
  msg: ResponseInit<S, M>,
): Buffer {
  return asBuffer((TABLE[service][method] as unknown as AnySpec).res.encode(msg as never).finish());
}

/** Decodes a response with the method's response type. */
export function decodeResponse<S extends ServiceName, M extends MethodName<S>>(
  service: S,
  method: M,
  bytes: Uint8Array,
): ResponseOf<S, M> {
  return (TABLE[service][method] as AnySpec).res.decode(bytes) as ResponseOf<S, M>;
}

// ------------------------------------------------------------------ servers

function unimplementedStatus(path: string): grpc.StatusObject {
  const [, service = '', method = ''] = path.split('/');
  return {
    code: grpc.status.UNIMPLEMENTED,
    details: `unknown method ${method} for service ${service}`,
    metadata: new grpc.Metadata(),
  };
}

/**
 * An implementation answering every method of `def` with UNIMPLEMENTED (12),
 * details "unknown method <M> for service <S>" (the grpc-go wording).
 */
export function unimplementedHandlers(def: grpc.ServiceDefinition): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [name, m] of Object.entries(def)) {
    const status = unimplementedStatus(m.path);
    if (!m.responseStream) {
      // unary and client-streaming: answer through the callback
      impl[name] = (_call: unknown, callback: grpc.sendUnaryData<never>) => callback(status);
    } else {
      // server-streaming and bidi: an 'error' event ends the call with this status
      impl[name] = (call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>) => {
        call.emit('error', status);
      };
    }
  }
  return impl;
}

/**
 * A full implementation of service S: the given handlers, and UNIMPLEMENTED
 * for every method left out.
 */
export function implement<S extends ServiceName>(
  name: S,
  handlers: Partial<ServiceHandlers<S>>,
): grpc.UntypedServiceImplementation {
  const impl = unimplementedHandlers(services[name]);
  for (const [method, handler] of Object.entries(handlers)) {
    if (handler !== undefined) impl[method] = handler as grpc.UntypedHandleCall;
  }
  return impl;
}

/** server.addService for service S with typed handlers (missing ones answer UNIMPLEMENTED). */
export function addService<S extends ServiceName>(
  server: grpc.Server,
  name: S,
  handlers: Partial<ServiceHandlers<S>>,
): void {
  server.addService(services[name], implement(name, handlers));
}

// ------------------------------------------------------------------ clients

const clientConstructors = new Map<ServiceName, grpc.ServiceClientConstructor>();

/** A (cached) grpc-js client constructor for service S, via grpc.makeGenericClientConstructor. */
export function clientConstructor<S extends ServiceName>(name: S): ServiceClientConstructor<S> {
  let ctor = clientConstructors.get(name);
  if (!ctor) {
    ctor = grpc.makeGenericClientConstructor(services[name], name);
    clientConstructors.set(name, ctor);
  }
  return ctor as unknown as ServiceClientConstructor<S>;
}

/** A typed client for service S at `address` ('host:port'); insecure credentials by default. */
export function makeClient<S extends ServiceName>(
  name: S,
  address: string,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  options?: Partial<grpc.ChannelOptions>,
): ServiceClient<S> {
  const Ctor = clientConstructor(name);
  return new Ctor(address, credentials, options);
}
