// Per-method gRPC call counters (go-grpc-prometheus' grpc_server_started_total and
// grpc_server_handled_total): plain numbers bumped on the call path, turned into Prometheus
// families only when /metrics is scraped.

export const GRPC_CODE_NAMES = [
  'OK', 'Canceled', 'Unknown', 'InvalidArgument', 'DeadlineExceeded', 'NotFound', 'AlreadyExists',
  'PermissionDenied', 'ResourceExhausted', 'FailedPrecondition', 'Aborted', 'OutOfRange',
  'Unimplemented', 'Internal', 'Unavailable', 'DataLoss', 'Unauthenticated',
] as const;

export type GrpcType = 'unary' | 'server_stream' | 'client_stream' | 'bidi_stream';

export class MethodCallStats {
  started = 0;
  received = 0;
  sent = 0;
  /** Calls finished, by gRPC status code. */
  readonly handled = new Float64Array(GRPC_CODE_NAMES.length);
  constructor(readonly service: string, readonly method: string, readonly type: GrpcType) {}

  finish(code: number): void {
    if (code >= 0 && code < this.handled.length) this.handled[code]! += 1;
  }
}

export class GrpcCallStats {
  readonly methods: MethodCallStats[] = [];

  register(service: string, method: string, type: GrpcType): MethodCallStats {
    const m = new MethodCallStats(service, method, type);
    this.methods.push(m);
    return m;
  }
}
