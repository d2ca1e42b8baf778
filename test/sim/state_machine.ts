// The simulated state machine: a small key-value map written by client entries, plus a hash chain
// over every applied entry so that two nodes' states can be compared in O(1), and the
// configuration as of the applied index (a driver keeps it with its state machine).
//
// Client entry payload: "w <client>.<seq> <key>" (the value written is "<client>.<seq>").
import { ConfState, Entry } from '../../src/raft/types';

export interface KvValue {
  value: string;
  /** Log index of the write. */
  index: number;
}

export class StateMachine {
  index = 0;
  term = 0;
  hash = 0x811c9dc5;
  kv = new Map<string, KvValue>();
  confState: ConfState = { voters: [], learners: [] };

  apply(e: Entry): void {
    if (e.index !== this.index + 1) throw new Error(`apply gap: ${this.index} -> ${e.index}`);
    this.index = e.index;
    this.term = e.term;
    this.hash = entryHash(this.hash, e);
    const w = parseWrite(e);
    if (w !== null) this.kv.set(w.key, { value: w.value, index: e.index });
  }

  clone(): StateMachine {
    const s = new StateMachine();
    s.index = this.index;
    s.term = this.term;
    s.hash = this.hash;
    s.kv = new Map(this.kv);
    const cs = this.confState;
    s.confState = { voters: cs.voters.slice(), learners: cs.learners.slice() };
    return s;
  }

  encode(): Uint8Array {
    return Buffer.from(JSON.stringify({
      index: this.index, term: this.term, hash: this.hash, kv: [...this.kv],
      confState: this.confState,
    }));
  }

  static decode(data: Uint8Array): StateMachine {
    const o = JSON.parse(Buffer.from(data).toString()) as {
      index: number; term: number; hash: number; kv: [string, KvValue][]; confState: ConfState;
    };
    const s = new StateMachine();
    s.index = o.index;
    s.term = o.term;
    s.hash = o.hash;
    s.kv = new Map(o.kv);
    s.confState = o.confState;
    return s;
  }
}

export interface Write {
  client: number;
  seq: number;
  key: string;
  value: string;
}

export function encodeWrite(client: number, seq: number, key: string): Uint8Array {
  return Buffer.from(`w ${client}.${seq} ${key}`);
}

export function parseWrite(e: Entry): Write | null {
  if (e.type !== 0 || e.data.length < 2 || e.data[0] !== 0x77 /* w */) return null;
  const [, id, key] = Buffer.from(e.data).toString().split(' ');
  const [client, seq] = id!.split('.');
  return { client: Number(client), seq: Number(seq), key: key!, value: id! };
}

/** FNV-1a over the entry's term, index, type and payload. */
export function entryHash(h: number, e: Entry): number {
  h = mix(h, e.term);
  h = mix(h, e.index);
  h = mix(h, e.type);
  for (let i = 0; i < e.data.length; i++) h = Math.imul(h ^ e.data[i]!, 0x01000193) >>> 0;
  return h;
}

function mix(h: number, v: number): number {
  for (let k = 0; k < 4; k++) {
    h = Math.imul(h ^ (v & 0xff), 0x01000193) >>> 0;
    v = Math.floor(v / 256);
  }
  return h;
}

/** A short identity of an entry for the checker: same (index) + same key means same entry. */
export function entryKey(e: Entry): string {
  return `${e.term}/${e.type}/${Buffer.from(e.data).toString('latin1')}`;
}
