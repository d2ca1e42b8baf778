// A joining member's question to the running cluster (etcd GetClusterFromRemotePeers, GET
// /members on a peer URL): dial one peer URL after another, send a Members Hello (no ids: the
// joiner knows none yet), read the cluster id and the membership, close. Used once at start-up
// by a member started with --initial-cluster-state existing.
import net from 'node:net';
import {
  ConnectionKind, FrameError, FrameReader, FrameType, decodeHelloAck, encodeHello, protocolVersion,
} from './frame';
import { type DialAddress, dialAddress, envDialTable, peerUrlAddress } from './dial';

/** Makes the socket (peer_tls.ts peerConnector: TLS for https:// URLs); onConnect when usable. */
export type MembersConnect = (address: DialAddress, onConnect: () => void) => net.Socket;

function tcpConnect(address: DialAddress, onConnect: () => void): net.Socket {
  return net.connect({ host: address.host, port: address.port }, onConnect);
}

export interface MembersAnswer {
  clusterId: bigint;
  /** membership/membership.ts encoding. */
  membership: Uint8Array;
}

/** Asks each URL in turn until one answers; null when none does within `timeoutMs` each. */
export async function fetchMembers(urls: readonly string[], timeoutMs: number, connect: MembersConnect = tcpConnect): Promise<MembersAnswer | null> {
  for (const url of urls) {
    const answer = await askOne(url, timeoutMs, connect).catch(() => null);
    if (answer !== null) return answer;
  }
  return null;
}

function askOne(url: string, timeoutMs: number, connect: MembersConnect): Promise<MembersAnswer | null> {
  const address = peerUrlAddress(url);
  if (address === null) return Promise.resolve(null);
  const target = dialAddress(envDialTable, address);
  return new Promise((resolve) => {
    let done = false;
    let acked = false;
    const socket = connect(target, () => {
      socket.write(encodeHello({ version: protocolVersion, kind: ConnectionKind.Members, clusterId: 0n, fromMemberId: 0n, toMemberId: 0n }));
    });
    const finish = (a: MembersAnswer | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(a);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    const reader = new FrameReader(64 * 1024 * 1024, {
      onFrame(type, payload) {
        if (!acked) {
          const ack = type === FrameType.HelloAck ? decodeHelloAck(payload) : null;
          if (ack === null || ack.reason !== 0) {
            finish(null);
            return false;
          }
          acked = true;
          return true;
        }
        if (type !== FrameType.Members || payload.length < 8) {
          finish(null);
          return false;
        }
        finish({ clusterId: payload.readBigUInt64BE(0), membership: Uint8Array.from(payload.subarray(8)) });
        return false;
      },
    });
    socket.on('data', (chunk: Buffer) => {
      if (reader.push(chunk) !== FrameError.None) finish(null);
    });
    socket.on('error', () => finish(null));
    socket.on('close', () => finish(null));
  });
}
