// Linearizability checker for recorded client histories (issue #12, fault tests with real
// processes): the Wing–Gong search with Lowe's memoization, as anishathalye/porcupine does it,
// over histories split per key (P-compositionality, Horn & Kroening, arXiv 1504.00204).
//
//   const h = new HistoryRecorder();
//   const op = h.invoke(client, { kind: 'put', key: 'k1', value: 'v7' });
//   ...  h.ok(op, { kind: 'put', revision: 42 })  |  h.fail(op)  |  h.unknown(op)
//   const result = checkKvHistory(h.history());
//   assert.ok(result.ok, result.ok ? '' : result.explanation);
//
// History. Every operation has a call time and a return time from one monotonic clock (any
// unit); [call, return] is a closed interval, so two operations that touch at a point are
// concurrent (Porcupine does the same). An operation is
//  - ok: it returned `output`, which the model checks;
//  - fail: it definitely did not take effect (the server refused it before proposing it). It is
//    dropped. Use it only when the server guarantees that; when in doubt, use unknown;
//  - unknown: no answer came (timeout, connection lost, "request timed out", "leader changed",
//    or the test stopped waiting). As in Porcupine and Knossos, its return time is infinite and
//    its output is not checked: it may take effect at any point after its call, or never. A
//    read with an unknown outcome has no effect and nothing to check: it is dropped.
//
// Model (kvModel): one etcd key per partition, a register that is absent or holds a value.
// put sets it; get returns it (or absent); cas(expected, new) sets it iff it holds `expected`
// (expected null: iff the key is absent, etcd's create_revision == 0 compare); delete removes
// it. Revisions are optional: when outputs carry them, the model also checks that, along the
// linearization of one key, writes take strictly increasing revisions above every revision seen
// before them, every header revision is at least every revision seen before it, and a get's
// mod_revision is the revision of the write it reads (see KvState). etcd revisions are global,
// so per key only these order facts are checkable; gaps are expected. Without revisions, only
// values are checked.
//
// Algorithm (checkLinearizable, PartitionSearch). Per partition: the call and return entries of
// its operations, sorted by time (calls before returns at equal times), in a doubly linked list.
// The search walks the list from the head: a call entry is a candidate, and the first return
// entry ends the candidates (that operation must be linearized before anything that follows its
// return). Linearizing a candidate steps the model, lifts its call and return entries out of the
// list (dancing links) and pushes a frame; a dead end pops the last frame, restores the state,
// puts the entries back and tries the next candidate. Lowe's memoization: a (linearized set,
// model state) pair reached before is not explored again.
//
// Beyond Porcupine, each sound (a linearization exists iff the plain search finds one) and each
// checked against a brute-force search in the tests. Measured: they took a linearizable
// 10,000-operation history over 10 keys with 5% unknown outcomes from 520,000 steps to 70,000,
// and a non-linearizable one of 290 operations from over 5,000,000 (out of budget) to 5,600:
//  1. A known-outcome candidate that leaves the state unchanged (a read that matches) is taken
//     first and alone: its alternatives need no search (see PHASE_UNCHANGED).
//  2. Unknown outcomes: their calls are in a list of their own (they have no return entry: it is
//     infinitely late) and are tried after every known-outcome candidate. Success is declared
//     once every known-outcome operation is linearized: the unknown ones left go at the end,
//     where their unchecked steps cannot fail and nothing observes them ("never happened").
//  3. Memoized pairs compare the known-outcome operations exactly and the unknown ones by
//     inclusion: a pair whose search finished without success also prunes a pair with the same
//     known operations, the same state and more unknown ones. A linearization from the bigger
//     one would go on from the smaller one too, with the extra unknown operations appended at
//     the end (they have no return time to respect and no output to check).
//  4. An unknown-outcome candidate is not tried where it changes nothing (a compare that fails)
//     or where, right after another unknown one, it makes that one irrelevant (a put after a
//     put): a sibling pair with fewer unknown operations covers it (PartitionSearch.stepOf).
// Together, 2-4 make an unknown write cost little unless something reads it: it is tried where
// the known operations alone have no way on, and abandoned as soon as it is overwritten.
//
// Budget. The search is exponential in the worst case (many concurrent operations and no
// linearization). Each partition has a step budget (one step = one look at a list entry) and a
// cache byte budget, and the whole check has a step budget and an optional wall-clock limit;
// when one runs out the verdict is 'unknown' with the keys concerned, never a hang.
//
// Output: { ok: true } or { ok: false, verdict: 'not-linearizable' | 'unknown', key,
// explanation }. The explanation shows, for the first failing key, the longest linearization the
// search found (its last operations and the states after them) and every operation that was
// open at that point, each with why it cannot come next.
//
// Room for more operation kinds: the search is generic over a Model (states, inputs, outputs);
// txns on one key fit kvModel as new input kinds; multi-key txns need a model whose partition
// covers all the keys they touch (or one partition for the whole history).

import { assert } from '../../src/util/assert';

// ------------------------------------------------------------------ histories

export type OpStatus = 'ok' | 'fail' | 'unknown';

export interface Operation<I, O> {
  /** Recording order; names the operation in explanations (`#12`). */
  readonly id: number;
  readonly client: number;
  readonly input: I;
  /** When the request was sent. */
  readonly call: number;
  /** When the answer came; Infinity when the outcome is unknown. Invariant: ret >= call. */
  readonly ret: number;
  readonly status: OpStatus;
  /** The answer; defined iff status is 'ok'. */
  readonly output: O | undefined;
}

export interface HistoryRecorderOptions {
  /**
   * The clock, monotonic, in any unit. Default: performance.now() in ms. The recorder makes it
   * strictly increasing (1 ns steps on ties), so that the order in which a single-threaded test
   * records events is the real-time order the checker sees.
   */
  now?: () => number;
}

interface RecordedOp<I, O> {
  id: number;
  client: number;
  input: I;
  call: number;
  ret: number;
  status: OpStatus | 'pending';
  output: O | undefined;
}

/** Records what the clients of a test did. One operation in flight per client. */
export class HistoryRecorder<I = KvInput, O = KvOutput> {
  private readonly records: RecordedOp<I, O>[] = [];
  /** client → id of its operation in flight. */
  private readonly inFlight = new Map<number, number>();
  private readonly now: () => number;
  private timeLast = -Infinity;

  constructor(options: HistoryRecorderOptions = {}) {
    this.now = options.now ?? (() => performance.now());
  }

  /** Records the call of `input` by `client`; returns the operation's id. */
  invoke(client: number, input: I): number {
    assert(Number.isInteger(client), 'client id must be an integer');
    assert(!this.inFlight.has(client), 'a client has one operation in flight at a time');
    const id = this.records.length;
    this.records.push({
      id, client, input, call: this.clock(), ret: Infinity, status: 'pending', output: undefined,
    });
    this.inFlight.set(client, id);
    return id;
  }

  /** The operation returned `output`. */
  ok(op: number, output: O): void {
    const r = this.close(op);
    r.ret = this.clock();
    r.status = 'ok';
    r.output = output;
  }

  /** The operation definitely did not take effect. */
  fail(op: number): void {
    const r = this.close(op);
    r.ret = this.clock();
    r.status = 'fail';
  }

  /** No answer will come: the operation may or may not have taken effect. */
  unknown(op: number): void {
    const r = this.close(op);
    r.status = 'unknown'; // ret stays Infinity: it may take effect at any later time.
  }

  get size(): number {
    return this.records.length;
  }

  /** A copy of the history; operations still pending count as unknown (Jepsen does the same). */
  history(): Operation<I, O>[] {
    return this.records.map((r) => ({
      id: r.id,
      client: r.client,
      input: r.input,
      call: r.call,
      ret: r.status === 'pending' ? Infinity : r.ret,
      status: r.status === 'pending' ? 'unknown' : r.status,
      output: r.output,
    }));
  }

  private close(op: number): RecordedOp<I, O> {
    const r = this.records[op];
    assert(r !== undefined, 'unknown operation id');
    assert(r.status === 'pending', 'operation already completed');
    assert(this.inFlight.get(r.client) === op, 'operation not in flight');
    this.inFlight.delete(r.client);
    return r;
  }

  private clock(): number {
    const t = Math.max(this.now(), this.timeLast + 1e-6);
    assert(Number.isFinite(t), 'clock must be finite');
    this.timeLast = t;
    return t;
  }
}

// ------------------------------------------------------------------ models

/**
 * A sequential specification. `step` must be deterministic. For an unknown outcome (`output`
 * undefined) it must accept any state: the operation took effect at this point, whatever it
 * returned (the checker asserts this).
 */
export interface Model<S, I, O> {
  /** Operations in different partitions never interact (per key for a KV store). */
  partition(input: I): string;
  init(): S;
  /** The state after `input` returned `output` in `state`; undefined if it cannot return that. */
  step(state: S, input: I, output: O | undefined): S | undefined;
  /** Never changes the state (a get): with an unknown outcome such an operation is dropped. */
  readOnly(input: I): boolean;
  equal(a: S, b: S): boolean;
  /** A 32-bit hash consistent with `equal`. */
  hash(state: S): number;
  describeState(state: S): string;
  describeOperation(input: I, output: O | undefined): string;
  /** Why step(state, input, output) is undefined, in a sentence for the explanation. */
  explainRefusal(state: S, input: I, output: O): string;
}

export type KvInput =
  | { readonly kind: 'put'; readonly key: string; readonly value: string }
  | { readonly kind: 'get'; readonly key: string }
  /** expected null: succeeds iff the key is absent (etcd: compare create_revision == 0). */
  | { readonly kind: 'cas'; readonly key: string; readonly expected: string | null;
      readonly value: string }
  | { readonly kind: 'delete'; readonly key: string };

/** `revision` is the response header's revision; every revision field is optional. */
export type KvOutput =
  | { readonly kind: 'put'; readonly revision?: number }
  /** modRevision: the kv's mod_revision (only with a value). */
  | { readonly kind: 'get'; readonly value: string | null; readonly revision?: number;
      readonly modRevision?: number }
  | { readonly kind: 'cas'; readonly succeeded: boolean; readonly revision?: number }
  /** deleted: the response's deleted count (0 or 1). */
  | { readonly kind: 'delete'; readonly deleted?: number; readonly revision?: number };

export type KvOperation = Operation<KvInput, KvOutput>;

/** modRevision when the key is absent. */
const REV_ABSENT = 0;
/** modRevision when the value was written by an operation whose revision is unknown. */
const REV_UNKNOWN = -1;

/**
 * The state of one key at a point of a linearization.
 * Invariant: value === null iff modRevision === REV_ABSENT.
 * Invariant: modRevision <= revisionFloor when modRevision > 0.
 */
export interface KvState {
  readonly value: string | null;
  readonly valueHash: number;
  /** > 0: the revision that wrote `value`; REV_ABSENT; or REV_UNKNOWN. */
  readonly modRevision: number;
  /** With REV_UNKNOWN: the least revision the write can have had (the floor then, plus one). */
  readonly modRevisionMin: number;
  /**
   * The largest revision returned by an operation linearized so far on this key. etcd's store
   * revision never decreases, so every later header revision is >= it and every later write's
   * revision is > it. Sound, not complete: facts about other keys and about unknown writes'
   * revisions are left out, which can only let more histories pass.
   */
  readonly revisionFloor: number;
}

// Reasons a KV step is refused (explainKvRefusal turns them into sentences).
const R_VALUE = 1;
const R_MOD_REVISION = 2;
const R_MOD_REVISION_RANGE = 3;
const R_READ_REVISION = 4;
const R_WRITE_REVISION = 5;
const R_CAS_SUCCEEDED = 6;
const R_CAS_FAILED = 7;
const R_DELETED = 8;

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** murmur3's 32-bit finalizer: spreads the bits of `x`. */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

function kvState(
  value: string | null, modRevision: number, modRevisionMin: number, revisionFloor: number,
): KvState {
  assert((value === null) === (modRevision === REV_ABSENT), 'kv state: value iff revision');
  assert(modRevision <= revisionFloor || modRevision === REV_UNKNOWN, 'kv state: floor');
  return {
    value,
    valueHash: value === null ? 0 : fnv1a(value),
    modRevision,
    modRevisionMin,
    revisionFloor,
  };
}


/** A read at this point with header revision `r`: never below the floor, and it raises it. */
function observed(s: KvState, r: number | undefined): KvState | number {
  if (r === undefined || r === s.revisionFloor) return s;
  if (r < s.revisionFloor) return R_READ_REVISION;
  return kvState(s.value, s.modRevision, s.modRevisionMin, r);
}

/** A write at this point of `value` (null: a delete) with revision `r` (undefined: unknown). */
function written(s: KvState, value: string | null, r: number | undefined): KvState | number {
  if (r !== undefined && r <= s.revisionFloor) return R_WRITE_REVISION;
  const floor = r ?? s.revisionFloor;
  if (value === null) return kvState(null, REV_ABSENT, 0, floor);
  if (r === undefined) return kvState(value, REV_UNKNOWN, s.revisionFloor + 1, floor);
  return kvState(value, r, 0, floor);
}

function kvGet(s: KvState, out: KvOutput & { kind: 'get' }): KvState | number {
  if (out.value !== s.value) return R_VALUE;
  const after = observed(s, out.revision);
  const m = out.modRevision;
  if (typeof after === 'number' || m === undefined || s.value === null) return after;
  if (s.modRevision !== REV_UNKNOWN) return m === s.modRevision ? after : R_MOD_REVISION;
  // The value was written by an operation whose revision is unknown: this read tells it.
  if (m < s.modRevisionMin) return R_MOD_REVISION_RANGE;
  if (out.revision !== undefined && m > out.revision) return R_MOD_REVISION_RANGE;
  return kvState(s.value, m, 0, Math.max(after.revisionFloor, m));
}

/** The KV transition: the next state, or why the output is impossible here (R_*). */
function kvTransition(s: KvState, input: KvInput, output: KvOutput | undefined): KvState | number {
  assert(output === undefined || output.kind === input.kind, 'kv output kind matches input');
  switch (input.kind) {
    case 'get':
      return output === undefined ? s : kvGet(s, output as KvOutput & { kind: 'get' });
    case 'put':
      return written(s, input.value, output?.revision);
    case 'cas': {
      const match = input.expected === s.value;
      if (output === undefined) return match ? written(s, input.value, undefined) : s;
      const out = output as KvOutput & { kind: 'cas' };
      if (out.succeeded !== match) return match ? R_CAS_FAILED : R_CAS_SUCCEEDED;
      // A failed compare writes nothing: etcd answers with the current revision.
      return match ? written(s, input.value, out.revision) : observed(s, out.revision);
    }
    case 'delete': {
      const present = s.value !== null;
      if (output === undefined) return present ? written(s, null, undefined) : s;
      const out = output as KvOutput & { kind: 'delete' };
      if (out.deleted !== undefined && out.deleted !== (present ? 1 : 0)) return R_DELETED;
      // Deleting an absent key does not create a revision in etcd.
      return present ? written(s, null, out.revision) : observed(s, out.revision);
    }
  }
}

function showValue(v: string | null): string {
  if (v === null) return 'absent';
  const s = JSON.stringify(v);
  return s.length <= 40 ? s : `${s.slice(0, 37)}..."`;
}

function showState(s: KvState): string {
  let rev = '';
  if (s.modRevision > 0) rev = `@${s.modRevision}`;
  if (s.modRevision === REV_UNKNOWN && s.revisionFloor > 0) rev = `@>=${s.modRevisionMin}`;
  const floor = s.revisionFloor > Math.max(s.modRevision, 0)
    ? ` (revision >= ${s.revisionFloor})` : '';
  return `${showValue(s.value)}${rev}${floor}`;
}

function showInput(i: KvInput): string {
  switch (i.kind) {
    case 'get': return `get ${i.key}`;
    case 'put': return `put ${i.key}=${showValue(i.value)}`;
    case 'cas': return `cas ${i.key} ${showValue(i.expected)}->${showValue(i.value)}`;
    case 'delete': return `delete ${i.key}`;
  }
}

function showOutput(o: KvOutput): string {
  const rev = o.revision === undefined ? '' : ` rev ${o.revision}`;
  switch (o.kind) {
    case 'get': {
      const mod = o.modRevision === undefined ? '' : `@${o.modRevision}`;
      return `${showValue(o.value)}${mod}${rev}`;
    }
    case 'put': return `ok${rev}`;
    case 'cas': return `${o.succeeded ? 'succeeded' : 'compare failed'}${rev}`;
    case 'delete': return `${o.deleted === undefined ? 'ok' : `deleted ${o.deleted}`}${rev}`;
  }
}

function explainKvRefusal(s: KvState, input: KvInput, output: KvOutput): string {
  const reason = kvTransition(s, input, output);
  assert(typeof reason === 'number', 'explainRefusal of a possible step');
  const r = output.revision;
  switch (reason) {
    case R_VALUE:
      return `read ${showValue((output as { value: string | null }).value)} but the value is ` +
        showState(s);
    case R_MOD_REVISION:
      return `mod_revision ${(output as { modRevision: number }).modRevision} but the value ` +
        `was written at ${s.modRevision}`;
    case R_MOD_REVISION_RANGE:
      return `mod_revision ${(output as { modRevision: number }).modRevision} outside ` +
        `[${s.modRevisionMin}, ${r ?? '∞'}], where the write it reads can be`;
    case R_READ_REVISION:
      return `revision ${r} is below ${s.revisionFloor}, returned before it (a stale read)`;
    case R_WRITE_REVISION:
      return `write at revision ${r}, not above ${s.revisionFloor} returned before it`;
    case R_CAS_SUCCEEDED:
      return `succeeded but the value is ${showState(s)}`;
    case R_CAS_FAILED:
      return `compare failed but the value is the expected one`;
    case R_DELETED:
      return `deleted ${(output as { deleted: number }).deleted} but the value is ${showState(s)}`;
  }
  assert(false, 'unknown kv refusal');
}

const KV_INIT: KvState = kvState(null, REV_ABSENT, 0, 0);

/** One etcd key per partition (see the file comment). */
export const kvModel: Model<KvState, KvInput, KvOutput> = {
  partition: (input) => input.key,
  init: () => KV_INIT,
  step(state, input, output) {
    const next = kvTransition(state, input, output);
    return typeof next === 'number' ? undefined : next;
  },
  readOnly: (input) => input.kind === 'get',
  equal: (a, b) => a === b || (a.value === b.value && a.modRevision === b.modRevision &&
    a.modRevisionMin === b.modRevisionMin && a.revisionFloor === b.revisionFloor),
  hash: (s) => mix32(s.valueHash ^ mix32(s.modRevision + 2) ^
    Math.imul(mix32(s.modRevisionMin), 31) ^ Math.imul(mix32(s.revisionFloor), 17)),
  describeState: showState,
  describeOperation: (input, output) =>
    `${showInput(input)} -> ${output === undefined ? 'unknown' : showOutput(output)}`,
  explainRefusal: explainKvRefusal,
};

// ------------------------------------------------------------------ search

export interface CheckOptions {
  /** Search steps for one partition before it is reported unknown. */
  partitionStepsMax?: number;
  /** Search steps over all partitions; partitions left when it runs out are unknown. */
  stepsMax?: number;
  /** Bytes of memoized (linearized set, state) pairs for one partition (an estimate). */
  partitionCacheBytesMax?: number;
  /** Wall-clock limit for the whole check (ms); off by default, tests bound steps instead. */
  timeMsMax?: number;
  /** Operations of the longest linearization shown in an explanation. */
  explainOpsMax?: number;
}

// Measured (tests, 2-core box): a linearizable 10,000-operation history over 10-50 keys takes
// 3-7 steps per operation at 0.3-0.6 us a step; one hot key with ~20 operations open at once,
// 150. The defaults let one key search ~1-2 s and a whole check ~10 s before giving up, and
// bound the memo of one key to 128 MiB (~400,000 pairs).
const partitionStepsMaxDefault = 4_000_000;
const stepsMaxDefault = 20_000_000;
const partitionCacheBytesMaxDefault = 128 * 1024 * 1024;
const explainOpsMaxDefault = 10;
/** Steps between two looks at the clock (performance.now() costs ~50 ns). */
const clockStepsMask = 0xfff;

export interface CheckStats {
  /** Operations in the history. */
  operations: number;
  /** Operations searched: failed ones and unknown reads are dropped. */
  searched: number;
  partitions: number;
  steps: number;
  /** The most steps one partition took. */
  partitionStepsPeak: number;
  /** Memoized pairs, all partitions. */
  cacheEntries: number;
  elapsedMs: number;
}

export type CheckResult =
  | { ok: true; verdict: 'linearizable'; stats: CheckStats }
  | {
    ok: false;
    verdict: 'not-linearizable' | 'unknown';
    /** The first key (in sort order) with that verdict. */
    key: string;
    /** Every key with that verdict. */
    keys: string[];
    explanation: string;
    stats: CheckStats;
  };

interface SearchLimits {
  stepsMax: number;
  cacheBytesMax: number;
  /** performance.now() value past which the search gives up. */
  deadline: number;
  explainOpsMax: number;
}

/** Where the search got furthest before every way on failed. */
interface DeadEnd<S> {
  /** Known-outcome operations linearized. */
  depth: number;
  /** The last operations linearized (partition indexes) and the states after them. */
  tailOps: number[];
  tailStates: S[];
  /** Operations linearized before the tail. */
  tailStart: number;
  state: S;
  /** The operations open at that point (the candidates). */
  candidates: number[];
  /** The operation whose return ended the candidates. */
  blocker: number;
}

type SearchOutcome<S> =
  | { kind: 'linearizable' }
  | { kind: 'not-linearizable'; deadEnd: DeadEnd<S> }
  | { kind: 'budget'; reason: string; deadEnd: DeadEnd<S> | undefined };

/**
 * A memoized (linearized set, state) pair. The set is kept small: known-outcome operations are
 * numbered in call order, so the set is "all of the first 32 * knownLow, then knownWindow":
 * operations called long ago are all linearized, and only a window about as wide as the
 * concurrency is stored (a 10,000-operation key costs tens of bytes per pair, not 1.2 KB).
 */
interface CacheEntry<S> {
  /** Invariant: the first word of the known set that is not full (words below are). */
  readonly knownLow: number;
  /** The known set's words from knownLow to its last non-zero word. */
  readonly knownWindow: Uint32Array;
  readonly unknownBits: Uint32Array;
  readonly state: S;
  /** The search from this pair finished without a linearization (else: on the current path). */
  done: boolean;
}

/**
 * Sentinels. HEAD starts the entry list: the calls and returns of known-outcome operations, in
 * time order. UNKNOWN_HEAD starts the calls of unknown-outcome operations, in call order: kept
 * apart so that a walk over the candidates does not pass every unknown operation still open
 * (they never leave by returning), only those called before the candidates end.
 */
const HEAD = 0;
const UNKNOWN_HEAD = 1;
const NIL = -1;
/**
 * The candidates are walked in three phases.
 * PHASE_UNCHANGED: a known-outcome candidate that leaves the state as it is (a read that
 * matches) is taken, with no alternatives: if some linearization goes on from here, one goes on
 * with it first. Why: it is a candidate, so no operation still open had to come before it;
 * moved to the front of that linearization, it sees the same state, and so does every other
 * operation. Without this, a write taken first strands the reads concurrent with it, and the
 * search backtracks over every order of the writes around them.
 * PHASE_KNOWN: the other known-outcome candidates, each with its alternatives.
 * PHASE_UNKNOWN: then the unknown-outcome ones (see the file comment).
 */
const PHASE_UNCHANGED = 0;
const PHASE_KNOWN = 1;
const PHASE_UNKNOWN = 2;
/** fail() found no alternative left anywhere. */
const FAILED = -2;
/** Estimated bytes of a cache entry besides its bitsets (object, 2 typed arrays, bucket slot). */
const cacheEntryOverheadBytes = 300;

/**
 * The Wing–Gong search of one partition. Worked example, three operations on one key:
 * A = put "a" [0, 10], B = get -> "a" [2, 4], C = put "c" [1, ∞) (unknown outcome).
 * Entry list: call A, call B, ret B, ret A; unknown list: call C. The candidates are A and B
 * (ret B ends them), then C (called at 1, before ret B at 4). PHASE_UNCHANGED: B would read
 * absent, refused. PHASE_KNOWN: A, linearized and lifted; entry list: call B, ret B.
 * PHASE_UNCHANGED: B reads "a", lifted; entry list empty. No known-outcome operation is left:
 * linearizable, with C last (it never took effect, as far as anyone can tell).
 */
class PartitionSearch<S, I, O> {
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly nodeOp: Int32Array;
  /** Call node of a known-outcome operation → its return node; NIL for other nodes. */
  private readonly nodeMatch: Int32Array;
  private readonly nodeIsCall: Uint8Array;
  /** Per operation: 1 if its outcome is known. */
  private readonly known: Uint8Array;
  /** Per operation: its index among the known-outcome (or among the unknown-outcome) ones. */
  private readonly rank: Int32Array;
  /** Per operation: a random 32-bit word; XOR over linearized known ops hashes the set. */
  private readonly zobrist: Uint32Array;
  // The linearized set, by rank. Invariant: a bit is set iff its operation is on the stack.
  private readonly knownBits: Uint32Array;
  private readonly unknownBits: Uint32Array;
  /** Invariant: the first word of knownBits that is not full. */
  private knownLow = 0;
  /** Invariant: the last non-zero word of knownBits, or knownLow - 1 if none is past it. */
  private knownHigh = -1;
  private readonly knownTotal: number;
  private knownRemaining: number;
  private knownZobrist = 0;
  private state: S;
  private phase = PHASE_UNCHANGED;
  /** The return node that ends the current candidates; set when PHASE_KNOWN reaches it. */
  private regionEnd = NIL;
  // The frame stack: the linearization so far. Invariant: all of them have the same length.
  private readonly frameNode: number[] = [];
  private readonly frameState: S[] = [];
  private readonly framePhase: number[] = [];
  private readonly frameRegionEnd: number[] = [];
  private readonly frameEntry: CacheEntry<S>[] = [];
  private readonly cache = new Map<number, CacheEntry<S>[]>();
  cacheBytes = 0;
  cacheEntries = 0;
  steps = 0;
  private deadEnd: DeadEnd<S> | undefined = undefined;

  constructor(
    private readonly model: Model<S, I, O>,
    private readonly ops: readonly Operation<I, O>[],
    private readonly limits: SearchLimits,
  ) {
    const n = ops.length;
    for (let i = 1; i < n; i++) assert(ops[i - 1]!.call <= ops[i]!.call, 'ops in call order');
    this.known = new Uint8Array(n);
    this.rank = new Int32Array(n);
    this.zobrist = new Uint32Array(n);
    let knownTotal = 0;
    for (let i = 0; i < n; i++) {
      this.zobrist[i] = mix32(Math.imul(i + 1, 0x9e3779b9));
      this.known[i] = ops[i]!.status === 'ok' ? 1 : 0;
      this.rank[i] = this.known[i] === 1 ? knownTotal++ : i - knownTotal;
    }
    this.knownTotal = knownTotal;
    this.knownRemaining = knownTotal;
    this.knownBits = new Uint32Array((knownTotal + 31) >>> 5);
    this.unknownBits = new Uint32Array((n - knownTotal + 31) >>> 5);
    this.state = model.init();
    const nodes = 2 + n + knownTotal;
    this.next = new Int32Array(nodes);
    this.prev = new Int32Array(nodes);
    this.nodeOp = new Int32Array(nodes).fill(NIL);
    this.nodeMatch = new Int32Array(nodes).fill(NIL);
    this.nodeIsCall = new Uint8Array(nodes);
    this.buildLists();
  }

  /** Links the entries in time order (calls first at equal times), nodes from 2 on. */
  private buildLists(): void {
    const entries: { time: number; call: boolean; op: number }[] = [];
    for (let i = 0; i < this.ops.length; i++) {
      const op = this.ops[i]!;
      entries.push({ time: op.call, call: true, op: i });
      if (this.known[i] === 1) entries.push({ time: op.ret, call: false, op: i });
    }
    entries.sort((a, b) => a.time - b.time || (a.call === b.call ? a.op - b.op : a.call ? -1 : 1));
    const callNode = new Int32Array(this.ops.length).fill(NIL);
    const last = [HEAD, UNKNOWN_HEAD];
    for (let k = 0; k < entries.length; k++) {
      const node = k + 2;
      const e = entries[k]!;
      const list = this.known[e.op] === 1 ? 0 : 1;
      this.nodeOp[node] = e.op;
      this.prev[node] = last[list]!;
      this.next[last[list]!] = node;
      last[list] = node;
      if (e.call) {
        this.nodeIsCall[node] = 1;
        callNode[e.op] = node;
      } else {
        assert(callNode[e.op]! !== NIL, 'a return entry follows its call entry');
        this.nodeMatch[callNode[e.op]!] = node;
      }
    }
    this.next[last[0]!] = NIL;
    this.next[last[1]!] = NIL;
  }

  /** Whether unknown-outcome call `node` comes before the return that ends the candidates. */
  private beforeRegionEnd(node: number): boolean {
    return this.ops[this.nodeOp[node]!]!.call <= this.ops[this.nodeOp[this.regionEnd]!]!.ret;
  }

  run(): SearchOutcome<S> {
    const next = this.next;
    let node = next[HEAD]!;
    for (;;) {
      // Every known-outcome operation is linearized: the unknown ones left go last.
      if (this.knownRemaining === 0) return { kind: 'linearizable' };
      this.steps++;
      if (this.steps > this.limits.stepsMax) return this.outOfBudget('steps');
      if ((this.steps & clockStepsMask) === 0 && performance.now() > this.limits.deadline) {
        return this.outOfBudget('time');
      }
      const regionEnded = node === NIL ||
        (this.phase === PHASE_UNKNOWN ? !this.beforeRegionEnd(node) : this.nodeIsCall[node] === 0);
      if (regionEnded) {
        // The candidates end at the first return entry (there is one: a known op is left).
        assert(node !== NIL || this.phase === PHASE_UNKNOWN, 'a known op is left, so its return');
        if (this.phase === PHASE_UNCHANGED) {
          this.phase = PHASE_KNOWN;
          node = next[HEAD]!;
        } else if (this.phase === PHASE_KNOWN) {
          this.regionEnd = node;
          this.phase = PHASE_UNKNOWN;
          node = next[UNKNOWN_HEAD]!;
        } else {
          this.noteDeadEnd();
          node = this.fail();
          if (node === FAILED) return { kind: 'not-linearizable', deadEnd: this.deadEnd! };
        }
        continue;
      }
      const after = this.stepOf(node);
      if (after === undefined) {
        node = next[node]!;
        continue;
      }
      if (this.phase === PHASE_UNCHANGED) {
        if (!this.model.equal(after, this.state)) {
          node = next[node]!;
          continue;
        }
        // Taken with no alternatives (see PHASE_UNCHANGED): if that fails, this pair fails.
        if (!this.linearize(node, after)) {
          node = this.fail();
          if (node === FAILED) return { kind: 'not-linearizable', deadEnd: this.deadEnd! };
          continue;
        }
      } else if (!this.linearize(node, after)) {
        node = next[node]!;
        continue;
      }
      if (this.cacheBytes > this.limits.cacheBytesMax) {
        return this.outOfBudget('cache');
      }
      this.phase = PHASE_UNCHANGED;
      node = next[HEAD]!;
    }
  }

  /** The state after the operation of call `node` here, or undefined if it cannot come next. */
  private stepOf(node: number): S | undefined {
    const op = this.nodeOp[node]!;
    const o = this.ops[op]!;
    if (this.known[op] === 1) return this.model.step(this.state, o.input, o.output);
    const after = this.model.step(this.state, o.input, undefined);
    assert(after !== undefined, 'a model step with an unknown outcome must succeed');
    // Taking an unknown-outcome operation that changes nothing here (a compare that fails) adds
    // nothing: every way on from there is a way on from here, with it appended at the end.
    if (this.model.equal(after, this.state)) return undefined;
    return this.overwritesUnknown(o, after) ? undefined : after;
  }

  /**
   * The current pair has no linearization: undoes frames up to the last one that has
   * alternatives left (not taken in PHASE_UNCHANGED); returns the node to try next there, or
   * FAILED when none is left.
   */
  private fail(): number {
    for (;;) {
      const top = this.frameNode.length - 1;
      if (top < 0) return FAILED;
      const forced = this.framePhase[top] === PHASE_UNCHANGED;
      const node = this.backtrack();
      if (!forced) return node;
    }
  }

  /** Linearizes the operation of call `node` next, giving `after`, unless the cache refuses. */
  private linearize(node: number, after: S): boolean {
    const op = this.nodeOp[node]!;
    const isKnown = this.known[op] === 1;
    this.include(op);
    const zobrist = isKnown ? (this.knownZobrist ^ this.zobrist[op]!) >>> 0 : this.knownZobrist;
    const key = mix32(this.model.hash(after) ^ Math.imul(zobrist, 0x27d4eb2d));
    if (this.cached(key, after)) {
      this.exclude(op);
      return false;
    }
    const entry: CacheEntry<S> = {
      knownLow: this.knownLow,
      knownWindow: this.knownBits.slice(this.knownLow, this.knownHigh + 1),
      unknownBits: this.unknownBits.slice(),
      state: after,
      done: false,
    };
    const bucket = this.cache.get(key);
    if (bucket === undefined) this.cache.set(key, [entry]);
    else bucket.push(entry);
    this.cacheEntries++;
    this.cacheBytes += cacheEntryOverheadBytes +
      4 * (entry.knownWindow.length + entry.unknownBits.length);
    this.frameNode.push(node);
    this.frameState.push(this.state);
    this.framePhase.push(this.phase);
    this.frameRegionEnd.push(this.regionEnd);
    this.frameEntry.push(entry);
    this.state = after;
    this.knownZobrist = zobrist;
    if (isKnown) this.knownRemaining--;
    this.lift(node);
    return true;
  }

  /** Adds `op` to the linearized set. */
  private include(op: number): void {
    const r = this.rank[op]!;
    const word = r >>> 5;
    const bit = 1 << (r & 31);
    if (this.known[op] === 0) {
      assert((this.unknownBits[word]! & bit) === 0, 'candidate not yet linearized');
      this.unknownBits[word]! |= bit;
      return;
    }
    assert((this.knownBits[word]! & bit) === 0, 'candidate not yet linearized');
    this.knownBits[word]! |= bit;
    if (word > this.knownHigh) this.knownHigh = word;
    while (this.knownLow < this.knownBits.length && this.knownBits[this.knownLow] === 0xffffffff) {
      this.knownLow++;
    }
  }

  /** Removes `op` from the linearized set. */
  private exclude(op: number): void {
    const r = this.rank[op]!;
    const word = r >>> 5;
    const bit = 1 << (r & 31);
    if (this.known[op] === 0) {
      assert((this.unknownBits[word]! & bit) !== 0, 'operation linearized');
      this.unknownBits[word]! &= ~bit;
      return;
    }
    assert((this.knownBits[word]! & bit) !== 0, 'operation linearized');
    this.knownBits[word]! &= ~bit;
    if (word < this.knownLow) this.knownLow = word;
    while (this.knownHigh >= this.knownLow && this.knownBits[this.knownHigh] === 0) {
      this.knownHigh--;
    }
  }

  /**
   * Whether linearizing unknown-outcome `o` (giving `after`) right after another unknown-outcome
   * operation u is pointless because u makes no difference: `o` alone, from the state before u,
   * gives the same state (o overwrites u, as a put does). That pair has the same known
   * operations and a subset of the unknown ones, and it is a sibling the search explores
   * anyway (o is a candidate before u too: unknown operations have no return entry, so lifting
   * u did not move the end of the candidates), so this one adds nothing (see the file comment).
   * Without it, every subset of the unknown writes still open is tried at every dead end.
   */
  private overwritesUnknown(o: Operation<I, O>, after: S): boolean {
    const top = this.frameNode.length - 1;
    if (top < 0 || this.known[this.nodeOp[this.frameNode[top]!]!] === 1) return false;
    const without = this.model.step(this.frameState[top]!, o.input, undefined);
    assert(without !== undefined, 'a model step with an unknown outcome must succeed');
    return this.model.equal(without, after);
  }

  /**
   * Whether a memoized pair makes (this.bits, state) not worth exploring: the same known
   * operations, the same state, and either the same unknown ones or a subset of them whose
   * search is done (see the file comment for why a subset suffices).
   */
  private cached(key: number, state: S): boolean {
    const bucket = this.cache.get(key);
    if (bucket === undefined) return false;
    for (const e of bucket) {
      if (this.model.equal(e.state, state) && this.dominates(e)) return true;
    }
    return false;
  }

  private dominates(e: CacheEntry<S>): boolean {
    if (e.knownLow !== this.knownLow) return false;
    const window = e.knownWindow;
    if (window.length !== this.knownHigh + 1 - this.knownLow) return false;
    for (let w = 0; w < window.length; w++) {
      if (window[w] !== this.knownBits[this.knownLow + w]) return false;
    }
    let same = true;
    for (let w = 0; w < e.unknownBits.length; w++) {
      const x = e.unknownBits[w]!;
      const y = this.unknownBits[w]!;
      if (x === y) continue;
      if ((x & ~y) !== 0) return false; // e has an unknown operation this set lacks.
      same = false;
    }
    return same || e.done;
  }

  /** Undoes the last linearized operation; returns the node to try next. */
  private backtrack(): number {
    const node = this.frameNode.pop()!;
    this.frameEntry.pop()!.done = true;
    this.state = this.frameState.pop()!;
    this.phase = this.framePhase.pop()!;
    this.regionEnd = this.frameRegionEnd.pop()!;
    const op = this.nodeOp[node]!;
    this.exclude(op);
    if (this.known[op] === 1) {
      this.knownZobrist = (this.knownZobrist ^ this.zobrist[op]!) >>> 0;
      this.knownRemaining++;
    }
    this.unlift(node);
    return this.next[node]!;
  }

  private unlink(n: number): void {
    const p = this.prev[n]!;
    const q = this.next[n]!;
    this.next[p] = q;
    if (q !== NIL) this.prev[q] = p;
  }

  /** Puts back a node unlinked last (dancing links: its own pointers are unchanged). */
  private relink(n: number): void {
    const p = this.prev[n]!;
    const q = this.next[n]!;
    this.next[p] = n;
    if (q !== NIL) this.prev[q] = n;
  }

  private lift(call: number): void {
    this.unlink(call);
    const ret = this.nodeMatch[call]!;
    if (ret !== NIL) this.unlink(ret);
  }

  /** Undoes lift(call); lifts are undone in reverse order. */
  private unlift(call: number): void {
    const ret = this.nodeMatch[call]!;
    if (ret !== NIL) this.relink(ret);
    this.relink(call);
  }

  /**
   * Records the furthest dead end: the most known operations linearized, then the fewest
   * unknown ones (the plainer story), then the first found.
   */
  private noteDeadEnd(): void {
    const depth = this.knownTotal - this.knownRemaining;
    const frames = this.frameNode.length;
    const best = this.deadEnd;
    if (best !== undefined && (depth < best.depth || (depth === best.depth &&
      frames >= best.tailStart + best.tailOps.length))) return;
    const tailStart = Math.max(0, frames - this.limits.explainOpsMax);
    const tailOps: number[] = [];
    const tailStates: S[] = [];
    for (let f = tailStart; f < frames; f++) {
      tailOps.push(this.nodeOp[this.frameNode[f]!]!);
      tailStates.push(f + 1 < frames ? this.frameState[f + 1]! : this.state);
    }
    const candidates: number[] = [];
    for (let n = this.next[HEAD]!; n !== this.regionEnd; n = this.next[n]!) {
      assert(this.nodeIsCall[n] === 1, 'only call entries before the first return entry');
      candidates.push(this.nodeOp[n]!);
    }
    let n = this.next[UNKNOWN_HEAD]!;
    for (; n !== NIL && this.beforeRegionEnd(n); n = this.next[n]!) {
      candidates.push(this.nodeOp[n]!);
    }
    const blocker = this.nodeOp[this.regionEnd]!;
    const state = this.state;
    this.deadEnd = { depth, tailOps, tailStates, tailStart, state, candidates, blocker };
  }

  private outOfBudget(reason: string): SearchOutcome<S> {
    return { kind: 'budget', reason, deadEnd: this.deadEnd };
  }
}

// ------------------------------------------------------------------ check and explain

function showTime(t: number): string {
  if (t === Infinity) return '∞';
  return Number.isInteger(t) ? String(t) : t.toFixed(3);
}

function showOp<S, I, O>(model: Model<S, I, O>, op: Operation<I, O>): string {
  const output = op.status === 'ok' ? op.output : undefined;
  const ret = op.status === 'ok' ? op.ret : Infinity;
  return `#${op.id} client ${op.client} [${showTime(op.call)}, ${showTime(ret)}] ` +
    model.describeOperation(op.input, output);
}

/** Lines `left  right`, the right column aligned (at most 90 columns in). */
function columns(rows: [string, string][]): string[] {
  const width = Math.min(90, Math.max(0, ...rows.map(([l]) => l.length)));
  return rows.map(([l, r]) => `    ${l.padEnd(width)}  ${r}`);
}

function explainDeadEnd<S, I, O>(
  model: Model<S, I, O>, ops: readonly Operation<I, O>[], d: DeadEnd<S>,
): string[] {
  const lines: string[] = [];
  const knownTotal = ops.filter((o) => o.status === 'ok').length;
  lines.push(`The longest linearization found has ${d.depth} of its ${knownTotal} operations ` +
    `with a known outcome${d.tailStart > 0 ? `; after ${d.tailStart} more, its last:` : ':'}`);
  if (d.tailOps.length === 0) lines.push('    (none: no operation can be linearized first)');
  lines.push(...columns(d.tailOps.map((i, k) =>
    [showOp(model, ops[i]!), `=> ${model.describeState(d.tailStates[k]!)}`])));
  const blocker = ops[d.blocker]!;
  const open = d.candidates.length === 1 ? 'the operation still open'
    : `the ${d.candidates.length} operations still open`;
  lines.push(`Then, in state ${model.describeState(d.state)}, none of ${open} can come next, ` +
    `and #${blocker.id} must come before it returns at ${showTime(blocker.ret)}:`);
  lines.push(...columns(d.candidates.map((i) => {
    const op = ops[i]!;
    const output = op.status === 'ok' ? op.output : undefined;
    const possible = model.step(d.state, op.input, output) !== undefined;
    const why = possible ? 'possible here, but no linearization goes on from it'
      : `impossible: ${model.explainRefusal(d.state, op.input, output as O)}`;
    return [showOp(model, op), why];
  })));
  return lines;
}

function explainPartition<S, I, O>(
  model: Model<S, I, O>, key: string, ops: readonly Operation<I, O>[], steps: number,
  outcome: SearchOutcome<S>,
): string {
  assert(outcome.kind !== 'linearizable', 'explain a failed partition');
  const unknown = ops.filter((o) => o.status === 'unknown').length;
  const size = `${ops.length} operations (${unknown} with an unknown outcome), ${steps} steps`;
  const head = outcome.kind === 'not-linearizable'
    ? `key ${JSON.stringify(key)} is not linearizable: ${size}.`
    : `key ${JSON.stringify(key)}: the search ran out of its ${outcome.reason} budget, so it is ` +
      `unknown whether it is linearizable: ${size}.`;
  const lines = [head];
  if (outcome.deadEnd !== undefined) lines.push(...explainDeadEnd(model, ops, outcome.deadEnd));
  return lines.join('\n');
}

/** Asserts the shape of a recorded operation (a malformed history is a bug of the test). */
function assertOperation<I, O>(op: Operation<I, O>): void {
  assert(Number.isFinite(op.call), 'operation call time is finite');
  assert(op.ret >= op.call, 'operation returns after its call');
  assert(op.status !== 'ok' || op.output !== undefined, 'an ok operation has an output');
  assert(op.status !== 'ok' || Number.isFinite(op.ret), 'an ok operation has a return time');
}

/**
 * Checks that `history` is linearizable with respect to `model`, partition by partition.
 * Failed operations and unknown reads are dropped; other unknown outcomes are searched with an
 * infinite return time (an unknown operation's `ret` is ignored).
 */
export function checkLinearizable<S, I, O>(
  history: readonly Operation<I, O>[], model: Model<S, I, O>, options: CheckOptions = {},
): CheckResult {
  const started = performance.now();
  const partitionStepsMax = options.partitionStepsMax ?? partitionStepsMaxDefault;
  const stepsMax = options.stepsMax ?? stepsMaxDefault;
  assert(partitionStepsMax > 0 && stepsMax > 0, 'step budgets are positive');
  const byKey = new Map<string, Operation<I, O>[]>();
  let searched = 0;
  for (const op of history) {
    assertOperation(op);
    if (op.status === 'fail') continue;
    if (op.status === 'unknown' && model.readOnly(op.input)) continue;
    const key = model.partition(op.input);
    const ops = byKey.get(key);
    if (ops === undefined) byKey.set(key, [op]);
    else ops.push(op);
    searched++;
  }
  const stats: CheckStats = {
    operations: history.length, searched, partitions: byKey.size, steps: 0,
    partitionStepsPeak: 0, cacheEntries: 0, elapsedMs: 0,
  };
  const deadline = started + (options.timeMsMax ?? Infinity);
  const failed: { key: string; explanation: string }[] = [];
  const unknown: { key: string; explanation: string }[] = [];
  for (const key of [...byKey.keys()].sort()) {
    const ops = byKey.get(key)!;
    const stepsLeft = stepsMax - stats.steps;
    if (stepsLeft <= 0 || performance.now() > deadline) {
      unknown.push({ key, explanation: `key ${JSON.stringify(key)}: not checked, the ` +
        `${stepsLeft <= 0 ? 'step' : 'time'} budget of the whole check ran out.` });
      continue;
    }
    // The search numbers known-outcome operations in call order (see CacheEntry).
    ops.sort((a, b) => a.call - b.call || a.id - b.id);
    const search = new PartitionSearch(model, ops, {
      stepsMax: Math.min(partitionStepsMax, stepsLeft),
      cacheBytesMax: options.partitionCacheBytesMax ?? partitionCacheBytesMaxDefault,
      deadline,
      explainOpsMax: options.explainOpsMax ?? explainOpsMaxDefault,
    });
    const outcome = search.run();
    stats.steps += search.steps;
    stats.partitionStepsPeak = Math.max(stats.partitionStepsPeak, search.steps);
    stats.cacheEntries += search.cacheEntries;
    if (outcome.kind === 'linearizable') continue;
    const explanation = explainPartition(model, key, ops, search.steps, outcome);
    (outcome.kind === 'not-linearizable' ? failed : unknown).push({ key, explanation });
  }
  stats.elapsedMs = performance.now() - started;
  if (failed.length === 0 && unknown.length === 0) {
    return { ok: true, verdict: 'linearizable', stats };
  }
  const verdict = failed.length > 0 ? 'not-linearizable' : 'unknown';
  const first = failed.length > 0 ? failed : unknown;
  const keyList = (fs: { key: string }[]): string =>
    fs.map((f) => JSON.stringify(f.key)).join(', ');
  const notes: string[] = [];
  if (failed.length > 1) notes.push(`Also not linearizable: ${keyList(failed.slice(1))}.`);
  if (failed.length > 0 && unknown.length > 0) notes.push(`Unknown (budget): ${keyList(unknown)}.`);
  if (failed.length === 0 && unknown.length > 1) {
    notes.push(`Also unknown: ${keyList(unknown.slice(1))}.`);
  }
  return {
    ok: false,
    verdict,
    key: first[0]!.key,
    keys: first.map((f) => f.key),
    explanation: [first[0]!.explanation, ...notes].join('\n'),
    stats,
  };
}

/** checkLinearizable with kvModel. */
export function checkKvHistory(
  history: readonly KvOperation[], options: CheckOptions = {},
): CheckResult {
  return checkLinearizable(history, kvModel, options);
}
