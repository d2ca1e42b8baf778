// Peer TLS (etcd --peer-cert-file, --peer-key-file, --peer-trusted-ca-file,
// --peer-client-cert-auth, --peer-cert-allowed-cn, --peer-auto-tls): the socket makers the peer
// transport takes as seams (PeerTransportOptions.connect / serverCreate), and the one-off dial of
// a joining member (members_fetch.ts).
//
// Dialling: as etcd, each peer URL's scheme decides: https:// is TLS, http:// plain TCP. Over TLS
// this member shows its peer certificate as a client certificate, verifies the peer's against
// --peer-trusted-ca-file (the system's roots when not given) and the URL's host - except with a
// generated (auto TLS) certificate, where etcd does not verify the server either.
// Listening (the first --listen-peer-urls is https://): the peer certificate is served; with
// --peer-client-cert-auth a peer without a certificate signed by the trusted CA fails the
// handshake; with --peer-cert-allowed-cn a peer whose verified certificate has another Common
// Name (or none) is cut as soon as the handshake is over, before it can send a byte that counts.
import net from 'node:net';
import tls from 'node:tls';
import type { DialAddress } from './dial';
import { type TlsSource, reloadPerConnection, serverOptions, tlsRemoteAddress, verifiedPeerCommonName } from '../tls/tls_info';
import type { Logger } from '../util/log';

/** Handshakes not done within this are dropped (node's default is 120 s). */
const handshakeTimeoutMs = 5000;

export type PeerConnect = (address: DialAddress, onConnect: () => void) => net.Socket;

/**
 * Dials `address`: TLS when its URL was https:// (with this member's peer TLS material when it
 * has some), TCP otherwise. onConnect once the connection is usable (after the handshake).
 */
export function peerConnector(source: TlsSource | null): PeerConnect {
  return (address, onConnect) => {
    if (address.tls !== true) return net.connect({ host: address.host, port: address.port }, onConnect);
    const opts: tls.ConnectionOptions = { host: address.host, port: address.port };
    if (source !== null) {
      Object.assign(opts, source.options());
      if (source.info.selfSigned) opts.rejectUnauthorized = false;
    }
    // The certificate must name the peer URL's host, also when a test's dial table reroutes
    // the connection through a proxy. SNI takes host names only (RFC 6066).
    const urlHost = address.tlsHost ?? address.host;
    if (net.isIP(urlHost) === 0) opts.servername = urlHost;
    else if (address.tlsHost !== undefined) opts.checkServerIdentity = (_host, cert) => tls.checkServerIdentity(urlHost, cert);
    return tls.connect(opts, onConnect);
  };
}

/** Makes the TLS peer listener; `onConnection` gets each socket once it passed the checks. */
export function peerTlsServer(source: TlsSource, logger: Logger | undefined):
(onConnection: (socket: net.Socket) => void) => net.Server {
  return (onConnection) => {
    const server = tls.createServer({ ...serverOptions(source, undefined), handshakeTimeout: handshakeTimeoutMs }, (socket) => {
      const allowed = source.info.allowedCn;
      if (allowed !== '') {
        const cn = verifiedPeerCommonName(socket);
        if (cn !== allowed) {
          logger?.warn('rejected peer connection: certificate Common Name not allowed', {
            'remote-addr': `${socket.remoteAddress}:${socket.remotePort}`, 'common-name': cn ?? '', 'allowed-cn': allowed,
          });
          socket.destroy();
          return;
        }
      }
      onConnection(socket);
    });
    reloadPerConnection(server, source, undefined);
    server.on('tlsClientError', (err, socket) => {
      logger?.warn('rejected peer connection', {
        'remote-addr': tlsRemoteAddress(socket), error: (err as { reason?: string }).reason ?? err.message,
      });
    });
    return server;
  };
}
