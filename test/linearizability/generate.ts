// Random KV histories for the checker's tests: a sequential reference execution spread over
// clients with overlapping intervals (linearizable by construction), mutations of one read's
// output, scrambled outputs, and a brute-force oracle for small histories. The oracle shares
// kvModel with the checker (it checks the search, not the model); the reference store checks
// the model, since every history it generates must pass.

import { Prng } from '../../src/util/prng';
import {
  kvModel, type KvInput, type KvOperation, type KvOutput, type KvState,
} from '../helpers/linearizability';

export interface GenOptions {
  ops: number;
  clients: number;
  keys: number;
  /** Probability that an operation's outcome is unknown (half of those took effect). */
  unknownRate: number;
  /** Probability that an operation is refused (no effect). */
  failRate: number;
  /** Outputs carry revisions. */
  revisions: boolean;
  /** The most time units between a call and its effect, and between the effect and return. */
  latencyMax: number;
}

export interface Generated {
  history: KvOperation[];
  /** Written value → the revision it got, or undefined if it never took effect. */
  writeRevision: Map<string, number | undefined>;
}

/** The reference store: applies `input` at one instant and answers as etcd would. */
class ReferenceStore {
  private readonly kvs = new Map<string, { value: string; modRevision: number }>();
  revision = 1; // etcd's first revision.

  value(key: string): string | null {
    return this.kvs.get(key)?.value ?? null;
  }

  apply(input: KvInput): KvOutput {
    const kv = this.kvs.get(input.key);
    switch (input.kind) {
      case 'get':
        return { kind: 'get', value: kv?.value ?? null, revision: this.revision,
          modRevision: kv?.modRevision };
      case 'put':
        this.kvs.set(input.key, { value: input.value, modRevision: ++this.revision });
        return { kind: 'put', revision: this.revision };
      case 'cas': {
        const succeeded = (kv?.value ?? null) === input.expected;
        if (succeeded) {
          this.kvs.set(input.key, { value: input.value, modRevision: ++this.revision });
        }
        return { kind: 'cas', succeeded, revision: this.revision };
      }
      case 'delete':
        if (kv !== undefined) {
          this.kvs.delete(input.key);
          this.revision++;
        }
        return { kind: 'delete', deleted: kv === undefined ? 0 : 1, revision: this.revision };
    }
  }
}

function withoutRevisions(o: KvOutput): KvOutput {
  switch (o.kind) {
    case 'get': return { kind: 'get', value: o.value };
    case 'put': return { kind: 'put' };
    case 'cas': return { kind: 'cas', succeeded: o.succeeded };
    case 'delete': return { kind: 'delete', deleted: o.deleted };
  }
}

function randomInput(prng: Prng, j: number, key: string, store: ReferenceStore,
  writtenByKey: Map<string, string[]>): KvInput {
  const value = `v${j}`;
  const roll = prng.int(100);
  if (roll < 40) return { kind: 'get', key };
  if (roll < 70) return { kind: 'put', key, value };
  if (roll < 90) {
    const past = writtenByKey.get(key) ?? [];
    const expected = prng.int(10) < 6 || past.length === 0 ? store.value(key)
      : prng.int(5) === 0 ? null : past[prng.int(past.length)]!;
    return { kind: 'cas', key, expected, value };
  }
  return { kind: 'delete', key };
}

/**
 * A linearizable history by construction: operation j takes effect at instant t_j (increasing)
 * on the reference store, and is called before and returns after it, on a client that is idle.
 */
export function generate(seed: number, o: GenOptions): Generated {
  const prng = new Prng(seed);
  const store = new ReferenceStore();
  const readyAt = new Array<number>(o.clients).fill(0);
  const writtenByKey = new Map<string, string[]>();
  const writeRevision = new Map<string, number | undefined>();
  const ops: KvOperation[] = [];
  let t = 0;
  for (let j = 0; j < o.ops; j++) {
    t += 1 + prng.int(3);
    let c = prng.int(o.clients);
    for (let k = 0; k < o.clients && readyAt[c]! >= t - 1; k++) c = (c + 1) % o.clients;
    if (readyAt[c]! >= t - 1) {
      c = readyAt.indexOf(Math.min(...readyAt));
      t = readyAt[c]! + 2;
    }
    const call = t - 1 - prng.int(Math.min(o.latencyMax, t - 1 - readyAt[c]!));
    const ret = t + 1 + prng.int(o.latencyMax);
    readyAt[c] = ret; // After an unknown outcome the client gives up at `ret` and goes on.
    const key = `k${prng.int(o.keys)}`;
    const input = randomInput(prng, j, key, store, writtenByKey);
    const roll = prng.int(1000);
    const status = roll < o.failRate * 1000 ? 'fail'
      : roll < (o.failRate + o.unknownRate) * 1000 ? 'unknown' : 'ok';
    const applied = status === 'ok' || (status === 'unknown' && prng.int(2) === 0);
    const output = applied ? store.apply(input) : undefined;
    if (input.kind === 'put' || input.kind === 'cas') {
      writtenByKey.set(key, [...(writtenByKey.get(key) ?? []), input.value]);
      const wrote = output !== undefined &&
        (output.kind === 'put' || (output.kind === 'cas' && output.succeeded));
      writeRevision.set(input.value, wrote ? output.revision : undefined);
    }
    ops.push({
      id: j, client: c, input, call,
      ret: status === 'unknown' ? Infinity : ret,
      status,
      output: status !== 'ok' ? undefined : o.revisions ? output : withoutRevisions(output!),
    });
  }
  return { history: ops, writeRevision };
}

export interface Mutation {
  history: KvOperation[];
  key: string;
  /** Observable by construction: no linearization can exist. */
  sure: boolean;
  what: string;
}

function isWrite(op: KvOperation): boolean {
  const o = op.output;
  if (op.status !== 'ok' || o === undefined) return false;
  return o.kind === 'put' || (o.kind === 'cas' && o.succeeded) ||
    (o.kind === 'delete' && o.deleted === 1);
}

/** Replaces the output of one successful get; says whether that is surely observable. */
export function mutate(g: Generated, prng: Prng, revisions: boolean): Mutation | undefined {
  const h = g.history;
  const gets = h.filter((op) => op.status === 'ok' && op.input.kind === 'get');
  if (gets.length === 0) return undefined;
  const read = gets[prng.int(gets.length)]!;
  const key = read.input.key;
  const old = read.output as KvOutput & { kind: 'get' };
  const onKey = h.filter((op) => op.input.key === key);
  const writers = onKey.filter((op) => (op.input.kind === 'put' || op.input.kind === 'cas') &&
    op.input.value !== old.value);
  const roll = prng.int(10);
  let value: string | null;
  let sure: boolean;
  let what: string;
  if (roll < 2 || (roll < 4 && old.value === null) || writers.length === 0) {
    value = `never${read.id}`;
    sure = true;
    what = 'a value never written';
  } else if (roll < 4) {
    value = null;
    // Absent is impossible if a write completed before the read and no delete could intervene.
    const written = onKey.some((w) =>
      isWrite(w) && w.input.kind !== 'delete' && w.ret < read.call);
    const deletable = onKey.some((d) =>
      d.input.kind === 'delete' && d.status !== 'fail' && d.call < read.ret);
    sure = written && !deletable;
    what = 'absent';
  } else {
    const w = writers[prng.int(writers.length)]!;
    value = (w.input as { value: string }).value;
    const neverWritten = g.writeRevision.get(value) === undefined && w.status !== 'unknown';
    const fromFuture = w.call > read.ret;
    const overwritten = onKey.some((w2) => isWrite(w2) && w.ret < w2.call && w2.ret < read.call);
    sure = neverWritten || fromFuture || overwritten;
    what = neverWritten ? 'a value never written' : fromFuture ? 'a value from the future'
      : overwritten ? 'a value overwritten before the read' : 'another value';
  }
  const modRevision = value === null ? undefined : g.writeRevision.get(value) ?? old.modRevision;
  const output: KvOutput = revisions
    ? { kind: 'get', value, revision: old.revision, modRevision }
    : { kind: 'get', value };
  return { history: h.map((op) => (op === read ? { ...op, output } : op)), key, sure, what };
}

/**
 * The oracle: tries every order of every partition (no memoization, no list), placing next any
 * operation that no unplaced known-outcome operation returned before; unknown outcomes may stay
 * unplaced. Exponential: for histories of a few operations per key.
 */
export function bruteForceLinearizable(h: readonly KvOperation[]): boolean {
  const byKey = new Map<string, KvOperation[]>();
  for (const op of h) {
    if (op.status === 'fail' || (op.status === 'unknown' && op.input.kind === 'get')) continue;
    byKey.set(op.input.key, [...(byKey.get(op.input.key) ?? []), op]);
  }
  for (const ops of byKey.values()) {
    const placed = new Array<boolean>(ops.length).fill(false);
    const search = (state: KvState): boolean => {
      if (ops.every((op, i) => placed[i] || op.status !== 'ok')) return true;
      for (let i = 0; i < ops.length; i++) {
        if (placed[i]) continue;
        const op = ops[i]!;
        const mustWait = ops.some((p, j) =>
          !placed[j] && j !== i && p.status === 'ok' && p.ret < op.call);
        if (mustWait) continue;
        const next = kvModel.step(state, op.input, op.status === 'ok' ? op.output : undefined);
        if (next === undefined) continue;
        placed[i] = true;
        if (search(next)) return true;
        placed[i] = false;
      }
      return false;
    };
    if (!search(kvModel.init())) return false;
  }
  return true;
}


/**
 * Replaces many outputs at random (reads get another value written to their key or absent,
 * compares and deletes flip their result): histories that may or may not be linearizable, for
 * comparing the checker with the brute-force search where its shortcuts matter most.
 */
export function scramble(g: Generated, prng: Prng, revisions: boolean): KvOperation[] {
  const valuesByKey = new Map<string, string[]>();
  for (const op of g.history) {
    if (op.input.kind === 'put' || op.input.kind === 'cas') {
      valuesByKey.set(op.input.key, [...(valuesByKey.get(op.input.key) ?? []), op.input.value]);
    }
  }
  return g.history.map((op) => {
    const o = op.output;
    if (o === undefined || prng.int(10) >= 3) return op;
    let output: KvOutput = o;
    if (o.kind === 'get') {
      const values = valuesByKey.get(op.input.key) ?? [];
      const value = values.length === 0 || prng.int(4) === 0
        ? null : values[prng.int(values.length)]!;
      const modRevision = value === null ? undefined : g.writeRevision.get(value);
      output = revisions ? { ...o, value, modRevision } : { kind: 'get', value };
    } else if (o.kind === 'cas') {
      output = { ...o, succeeded: !o.succeeded };
    } else if (o.kind === 'delete' && o.deleted !== undefined) {
      output = { ...o, deleted: 1 - o.deleted };
    }
    return { ...op, output };
  });
}
