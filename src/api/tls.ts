// The client certificate behind a call, for the auth layer.
//
// etcd, with --client-cert-auth and auth enabled, takes the Common Name of a client's verified
// certificate as the user name of a call that carries no token. This module gives that name:
//
//   clientCertCommonName(call): string | undefined
//     `call` is what a gRPC handler receives (a grpc-js call object, or the fast path's
//     FastCall / FastDuplexCall from unary_fast_path.ts). Returns the subject CN of the client
//     certificate of the call's connection when the connection is TLS and the certificate was
//     verified against --trusted-ca-file (that is: --client-cert-auth is on); undefined
//     otherwise (plain connection, no certificate, certificate without a CN).
//
// How: the client listener (api/listener.ts) marks each TLS connection once its handshake is
// done (markConnection), on the socket itself; whatever wraps the socket later (authority.ts's
// transcoder) copies the mark. A call finds its connection through its HTTP/2 session.
import type tls from 'node:tls';
import { verifiedPeerCommonName } from '../tls/tls_info';

/** The mark on a client connection: the CN of its verified client certificate ('' = none). */
export const clientCommonNameKey = Symbol.for('concord.clientCertCommonName');

interface Marked { [clientCommonNameKey]?: string }

/** Marks a TLS client connection after its handshake (api/listener.ts). */
export function markConnection(socket: tls.TLSSocket): void {
  (socket as Marked)[clientCommonNameKey] = verifiedPeerCommonName(socket) ?? '';
}

/** Carries the mark of `from` to a stream that wraps it. */
export function copyMark(from: object, to: object): void {
  const cn = (from as Marked)[clientCommonNameKey];
  if (cn !== undefined) (to as Marked)[clientCommonNameKey] = cn;
}

/** The mark of a connection (an HTTP/2 session's socket), or undefined. */
export function connectionCommonName(connection: unknown): string | undefined {
  if (connection === null || typeof connection !== 'object') return undefined;
  let cn = (connection as Marked)[clientCommonNameKey];
  // node's http2 puts a connection that is not a net.Socket (the transcoder's Duplex) inside
  // a JSStreamSocket, which keeps it as `stream`.
  if (cn === undefined) {
    const inner = (connection as { stream?: unknown }).stream;
    if (inner !== null && typeof inner === 'object') cn = (inner as Marked)[clientCommonNameKey];
  }
  return cn === undefined || cn === '' ? undefined : cn;
}

interface SessionHolder { session?: { socket?: unknown } | null }

/** The CN of the verified client certificate of the connection `call` came on; see the top. */
export function clientCertCommonName(call: unknown): string | undefined {
  if (call === null || typeof call !== 'object') return undefined;
  // Fast path calls know their stream.
  const fast = call as { tlsCommonName?: () => string | undefined };
  if (typeof fast.tlsCommonName === 'function') return fast.tlsCommonName();
  // grpc-js calls (pinned version, as unary_fast_path.ts): the call wraps an intercepting call
  // whose innermost layer holds the HTTP/2 stream.
  let layer: unknown = (call as { call?: unknown }).call;
  for (let depth = 0; depth < 4 && layer !== null && typeof layer === 'object'; depth++) {
    const stream = (layer as { stream?: SessionHolder }).stream;
    if (stream !== undefined) return connectionCommonName(stream.session?.socket);
    layer = (layer as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}
