// Helpers for the peer transport tests: in-process members on loopback (OS-chosen ports, never
// 2379/2380), a logger that records instead of printing, condition waits with deadlines, and
// cleanup that closes every transport whatever happened.
import { Message, MessageType, newMessage } from '../../src/raft/types';
import { Logger, LogLevel } from '../../src/util/log';
import { Prng } from '../../src/util/prng';
import { DialAddress } from '../../src/transport/dial';
import { PeerTransport, PeerTransportOptions } from '../../src/transport/peer_transport';

export interface LogRecord {
  level: LogLevel;
  msg: string;
  fields: Record<string, unknown>;
}

/** Records every log line (tests assert on them); prints nothing. */
export class RecordingLogger extends Logger {
  readonly records: LogRecord[] = [];

  constructor() {
    super('debug');
  }

  override log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    this.records.push({ level, msg, fields: fields ?? {} });
  }
}

export const clusterIdDefault = 0x5ca1ab1e_0000_0001n;

/** Member id of raft node i in these tests: a 64-bit id above 2^53, as real ones are. */
export function memberIdOf(raftId: number): bigint {
  return 0xc0c0_0000_0000_0000n + BigInt(raftId);
}

export interface Member {
  raftId: number;
  transport: PeerTransport;
  logger: RecordingLogger;
  received: Message[];
  unreachable: number[];
  snapshotStatuses: [number, boolean][];
  url: string;
}

/** Small timeouts so that failure paths finish in well under a second. */
export const fastOptions: Partial<PeerTransportOptions> = {
  pingIntervalMs: 100,
  readTimeoutMs: 1000,
  handshakeTimeoutMs: 500,
  dialBackoffMsMin: 20,
  dialBackoffMsMax: 100,
  tickMs: 10,
};

export async function memberStart(raftId: number, extra: Partial<PeerTransportOptions> = {},
  port = 0): Promise<Member> {
  const logger = new RecordingLogger();
  const transport = await PeerTransport.listen({
    host: '127.0.0.1', port, clusterId: clusterIdDefault, memberId: memberIdOf(raftId), raftId,
    logger, prng: new Prng(raftId), ...fastOptions, ...extra,
  });
  const member: Member = {
    raftId, transport, logger, received: [], unreachable: [], snapshotStatuses: [],
    url: `http://127.0.0.1:${transport.address().port}`,
  };
  transport.onMessage = (m) => member.received.push(m);
  transport.onUnreachable = (id) => member.unreachable.push(id);
  transport.onSnapshotStatus = (id, ok) => member.snapshotStatuses.push([id, ok]);
  return member;
}

/** Starts n members (raft ids 1..n), each a peer of every other. */
export async function clusterStart(n: number, extra: Partial<PeerTransportOptions> = {},
  dialTables: (ReadonlyMap<string, DialAddress> | undefined)[] = []): Promise<Member[]> {
  const members: Member[] = [];
  try {
    for (let i = 1; i <= n; i++) {
      const table = dialTables[i - 1];
      const opts = table === undefined ? extra : { ...extra, dialTable: table };
      members.push(await memberStart(i, opts));
    }
  } catch (err) {
    await closeAll(members);
    throw err;
  }
  for (const a of members) {
    for (const b of members) {
      if (a !== b) a.transport.addPeer(b.raftId, memberIdOf(b.raftId), [b.url]);
    }
  }
  return members;
}

export async function closeAll(members: readonly (Member | null)[]): Promise<void> {
  await Promise.all(members.map((m) => (m === null ? undefined : m.transport.close())));
}

/** Waits until cond() holds, checking every few ms; fails naming `what` after timeoutMs. */
export async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * Sockets, listeners, timers and immediates still open in this process (stdio pipes aside),
 * after two turns: libuv frees closed handles in the close phase that follows the check phase.
 */
export async function handlesLeft(): Promise<string[]> {
  await turn();
  await turn();
  return process.getActiveResourcesInfo().filter((r) => r !== 'PipeWrap' && r !== 'TTYWrap');
}

/** One event-loop turn (lets the transport's end-of-turn flush run). */
export function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A heartbeat-sized message with a sequence number in commit (checks order on arrival). */
export function heartbeat(from: number, to: number, seq: number): Message {
  const m = newMessage(MessageType.Heartbeat, to, from, 7);
  m.commit = seq;
  m.context = new Uint8Array(8).fill(seq & 0xff);
  return m;
}

/** An append with one entry of `bytes` bytes; index carries a sequence number. */
export function append(from: number, to: number, seq: number, bytes: number): Message {
  const m = newMessage(MessageType.App, to, from, 7);
  m.index = seq;
  m.logTerm = 7;
  m.entries = [{ term: 7, index: seq + 1, type: 0, data: new Uint8Array(bytes).fill(seq & 0xff) }];
  return m;
}

/** Both streams of a's peer b are up. */
export function connected(a: Member, b: Member): boolean {
  const s = a.transport.peerStats(b.raftId);
  return s !== null && s.message.state === 'active' && s.app.state === 'active';
}

export function allConnected(members: readonly Member[]): boolean {
  for (const a of members) for (const b of members) if (a !== b && !connected(a, b)) return false;
  return true;
}
