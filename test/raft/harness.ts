// Test harness for the raft unit tests: RawNodes with an in-memory synchronous driver (every write
// is durable at once), and a network that delivers messages until quiet, with links that can be
// cut. Like etcd-io/raft raft_test.go's `network`, written for RawNode's Ready contract.
import { ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Message, MessageType,
  Ready, Snapshot, StateType, messageTypeName } from '../../src/raft/types';
import { RaftConfig } from '../../src/raft/raft';
import { RawNode } from '../../src/raft/raw_node';
import { bootstrapLog, decodeConfChange } from '../../src/raft/confchange';
import { Prng } from '../../src/util/prng';

export const enc = (s: string): Uint8Array => Buffer.from(s);
export const dec = (b: Uint8Array): string => Buffer.from(b).toString();

export function ent(index: number, term: number, data = ''): Entry {
  return { index, term, type: EntryType.Normal, data: enc(data) };
}

/** What a node's disk holds (the synchronous driver writes here). */
export class MemStorage {
  hardState: HardState = { term: 0, vote: 0, commit: 0 };
  snapshot: Snapshot | null = null;
  entries: Entry[] = [];
  /** The state machine: applied entries' data, plus its configuration. */
  applied: Entry[] = [];
  appliedIndex = 0;
  confState: ConfState;

  constructor(confState: ConfState) {
    this.confState = confState;
  }

  write(rd: Ready): void {
    const p = rd.persist;
    if (p === null) return;
    if (p.snapshot !== null) {
      this.snapshot = p.snapshot;
      this.entries = [];
      this.appliedIndex = p.snapshot.metadata.index;
      this.confState = p.snapshot.metadata.confState;
    }
    if (p.entries.length > 0) {
      const first = p.entries[0]!.index;
      this.entries = this.entries.filter((e) => e.index < first).concat(p.entries);
    }
    if (p.hardState !== null) this.hardState = p.hardState;
  }
}

export function config(id: number, voters: number[], over: Partial<RaftConfig> = {}): RaftConfig {
  return {
    id,
    electionTicks: 10,
    heartbeatTicks: 1,
    prng: new Prng(id * 7919),
    hardState: { term: 0, vote: 0, commit: 0 },
    snapshotIndex: 0,
    snapshotTerm: 0,
    entries: [],
    applied: 0,
    confState: { voters, learners: [] },
    ...over,
  };
}

/** Config overrides for an initial member of a bootstrapped cluster (etcd raft.Bootstrap). */
export function bootstrapped(voters: number[], over: Partial<RaftConfig> = {}): Partial<RaftConfig> {
  const boot = bootstrapLog(voters);
  return { entries: boot.entries, hardState: boot.hardState, confState: { voters: [], learners: [] }, ...over };
}

/** A member added later: empty log, empty configuration (it learns both from the leader). */
export function joiner(id: number, over: Partial<RaftConfig> = {}): RaftConfig {
  return config(id, [], over);
}

/**
 * Runs a node's Ready loop with a synchronous disk: writes are durable at once, committed entries
 * are applied at once (conf changes too). Returns the messages the node sends.
 */
export function drain(node: RawNode, disk?: MemStorage): Message[] {
  const out: Message[] = [];
  for (let i = 0; i < 100 && node.hasReady(); i++) {
    const rd = node.ready();
    for (const m of rd.messages) out.push(m);
    disk?.write(rd);
    if (rd.persist !== null) node.persisted(rd.persist.seq);
    for (const e of rd.committedEntries) {
      if (e.type === EntryType.ConfChange) {
        const cs = node.applyConfChange(e.index, decodeConfChange(e.data));
        if (disk !== undefined) disk.confState = cs;
      }
      if (disk !== undefined) {
        disk.applied.push(e);
        disk.appliedIndex = e.index;
      }
    }
    if (rd.committedEntries.length > 0) node.appliedTo(rd.committedEntries[rd.committedEntries.length - 1]!.index);
  }
  return out;
}

/** A cluster on a perfect network (except for cut links), everything synchronous. */
export class Network {
  readonly nodes = new Map<number, RawNode>();
  readonly disks = new Map<number, MemStorage>();
  /** Directed links that drop every message: "from->to". */
  readonly cut = new Set<string>();
  /** Message types dropped everywhere. */
  readonly ignore = new Set<MessageType>();
  readonly readStates = new Map<number, { index: number; context: string }[]>();
  delivered: Message[] = [];

  constructor(ids: number[], over: (id: number) => Partial<RaftConfig> = () => ({})) {
    for (const id of ids) this.add(id, config(id, ids, over(id)));
  }

  add(id: number, cfg: RaftConfig): RawNode {
    const n = new RawNode(cfg);
    this.nodes.set(id, n);
    this.disks.set(id, new MemStorage(cfg.confState));
    this.readStates.set(id, []);
    return n;
  }

  node(id: number): RawNode {
    return this.nodes.get(id)!;
  }

  isolate(id: number): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}->${other}`);
      this.cut.add(`${other}->${id}`);
    }
  }

  heal(): void {
    this.cut.clear();
    this.ignore.clear();
  }

  /** Runs every node's Ready loop and delivers messages until nothing moves. */
  settle(maxRounds = 1000): void {
    for (let round = 0; round < maxRounds; round++) {
      const msgs: Message[] = [];
      for (const [id, n] of this.nodes) {
        const disk = this.disks.get(id)!;
        for (let i = 0; i < 100 && n.hasReady(); i++) {
          const rd = n.ready();
          for (const rs of rd.readStates) this.readStates.get(id)!.push({ index: rs.index, context: dec(rs.context) });
          for (const m of rd.messages) msgs.push(m);
          disk.write(rd);
          if (rd.persist !== null) n.persisted(rd.persist.seq);
          applyAll(n, disk, rd);
        }
      }
      if (msgs.length === 0) return;
      for (const m of msgs) this.deliver(m);
    }
    throw new Error('network did not settle');
  }

  deliver(m: Message): void {
    if (this.cut.has(`${m.from}->${m.to}`) || this.ignore.has(m.type)) return;
    const n = this.nodes.get(m.to);
    if (n === undefined) return;
    this.delivered.push(m);
    n.step(m);
  }

  tickAll(ticks = 1): void {
    for (let t = 0; t < ticks; t++) {
      for (const n of this.nodes.values()) n.tick();
      this.settle();
    }
  }

  /** Elects `id` by campaign (pre-vote + vote) and settles. */
  elect(id: number): void {
    this.node(id).campaign();
    this.settle();
  }

  leaders(): number[] {
    return [...this.nodes].filter(([, n]) => n.state === StateType.Leader).map(([id]) => id);
  }

  appliedData(id: number): string[] {
    return this.disks.get(id)!.applied.filter((e) => e.type === EntryType.Normal && e.data.length > 0)
      .map((e) => dec(e.data));
  }
}

function applyAll(n: RawNode, disk: MemStorage, rd: Ready): void {
  for (const e of rd.committedEntries) {
    if (e.type === EntryType.ConfChange) disk.confState = n.applyConfChange(e.index, decodeConfChange(e.data));
    disk.applied.push(e);
    disk.appliedIndex = e.index;
  }
  if (rd.committedEntries.length > 0) n.appliedTo(rd.committedEntries[rd.committedEntries.length - 1]!.index);
}

export function cc(type: ConfChangeType, nodeId: number, id = 0): ConfChange {
  return { id, type, nodeId, context: new Uint8Array(0) };
}

export function describeMessage(m: Message): string {
  return `${messageTypeName(m.type)} ${m.from}->${m.to} t${m.term} i${m.index} lt${m.logTerm}` +
    ` c${m.commit} n${m.entries.length}${m.reject ? ' reject' : ''}`;
}
