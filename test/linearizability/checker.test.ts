// The linearizability checker (test/helpers/linearizability.ts) must accept every linearizable
// history and reject every other one, and say which key. Method: hand-written histories for each
// anomaly the cluster fault tests look for (stale reads, reads from the past or of nothing,
// double CAS, lost writes, revision regressions) and for the cases that must pass (concurrent
// orders, unknown outcomes that did or did not happen); then seeded random histories generated
// from a sequential reference execution with overlapping intervals, unknown outcomes and
// failures (must pass), the same with one read's output mutated (must fail whenever the
// mutation is observable: exactly, against a brute-force search on small histories; always,
// on large ones, for mutations that are observable by construction); and a 10,000-operation
// history checked within a step budget.
//
//   LIN_SEEDS=400   random histories per randomized test (default 300)

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Prng } from '../../src/util/prng';
import {
  HistoryRecorder, checkKvHistory, type CheckResult, type KvInput, type KvOperation,
  type KvOutput,
} from '../helpers/linearizability';
import { bruteForceLinearizable, generate, mutate, scramble, type Mutation } from './generate';

const seedCount = Number(process.env.LIN_SEEDS ?? 300);

// ------------------------------------------------------------------ hand-written histories

type Spec = Omit<KvOperation, 'id'>;

function history(...specs: Spec[]): KvOperation[] {
  return specs.map((s, id) => ({ id, ...s }));
}

function ok(client: number, call: number, ret: number, input: KvInput, output: KvOutput): Spec {
  return { client, call, ret, input, status: 'ok', output };
}

function put(
  c: number, call: number, ret: number, key: string, value: string, revision?: number,
): Spec {
  return ok(c, call, ret, { kind: 'put', key, value }, { kind: 'put', revision });
}

function get(
  c: number, call: number, ret: number, key: string, value: string | null,
  rev: { revision?: number; modRevision?: number } = {},
): Spec {
  return ok(c, call, ret, { kind: 'get', key }, { kind: 'get', value, ...rev });
}

function cas(
  c: number, call: number, ret: number, key: string, expected: string | null, value: string,
  succeeded: boolean,
): Spec {
  return ok(c, call, ret, { kind: 'cas', key, expected, value }, { kind: 'cas', succeeded });
}

function del(c: number, call: number, ret: number, key: string, deleted: number): Spec {
  return ok(c, call, ret, { kind: 'delete', key }, { kind: 'delete', deleted });
}

/** The same operation with no answer: it may take effect at any time after its call, or never. */
function unknown(s: Spec): Spec {
  return { ...s, ret: Infinity, status: 'unknown', output: undefined };
}

/** The same operation refused: it definitely did not take effect. */
function failed(s: Spec): Spec {
  return { ...s, status: 'fail', output: undefined };
}

function assertLinearizable(r: CheckResult): void {
  assert.ok(r.ok, r.ok ? '' : `expected linearizable, got ${r.verdict}:\n${r.explanation}`);
}

/** Asserts a definite failure on `key` (and only there); returns the explanation. */
function assertNotLinearizable(r: CheckResult, key: string): string {
  assert.ok(!r.ok, `expected not linearizable on ${key}, got linearizable`);
  assert.equal(r.verdict, 'not-linearizable', r.explanation);
  assert.deepEqual(r.keys, [key], r.explanation);
  return r.explanation;
}

/** Operations on other keys that are linearizable, so a failure must name the right key. */
function noise(): Spec[] {
  return [
    put(8, 0, 3, 'other', 'o1'), get(9, 1, 2, 'other', null), get(9, 4, 5, 'other', 'o1'),
    put(8, 6, 7, 'other2', 'p1'), cas(9, 8, 9, 'other2', 'p1', 'p2', true),
  ];
}

describe('linearizable histories pass', () => {
  test('concurrent writes: concurrent reads see them in either order', () => {
    assertLinearizable(checkKvHistory(history(
      put(1, 0, 10, 'x', 'a'), put(2, 0, 10, 'x', 'b'),
      get(3, 5, 6, 'x', 'b'), get(4, 7, 8, 'x', 'a'), get(3, 11, 12, 'x', 'a'),
    )));
    assertLinearizable(checkKvHistory(history(
      put(1, 0, 10, 'x', 'a'), put(2, 0, 10, 'x', 'b'),
      get(3, 5, 6, 'x', 'a'), get(4, 7, 8, 'x', 'b'), get(3, 11, 12, 'x', 'b'),
    )));
  });

  test('a read concurrent with a write sees the old value, then the new one', () => {
    assertLinearizable(checkKvHistory(history(
      put(1, 0, 10, 'x', '1'), get(2, 1, 2, 'x', null), get(2, 3, 4, 'x', '1'),
      get(3, 9, 12, 'x', '1'),
    )));
  });

  test('intervals are closed: operations touching at one instant are concurrent', () => {
    // The get is called at the put's return time: it may still be ordered before the put.
    assertLinearizable(checkKvHistory(history(put(1, 0, 5, 'x', '1'), get(2, 5, 6, 'x', null))));
  });

  test('an unknown write that took effect is read back, even much later', () => {
    assertLinearizable(checkKvHistory(history(
      put(1, 0, 1, 'x', 'a'), unknown(put(1, 2, 3, 'x', 'b')),
      get(2, 4, 5, 'x', 'a'), get(2, 100, 101, 'x', 'b'), get(3, 102, 103, 'x', 'b'),
    )));
  });

  test('an unknown write that never took effect is never read', () => {
    assertLinearizable(checkKvHistory(history(
      put(1, 0, 1, 'x', 'a'), unknown(put(1, 2, 3, 'x', 'b')), unknown(del(2, 4, 5, 'x', 1)),
      get(2, 6, 7, 'x', 'a'), get(3, 100, 101, 'x', 'a'),
    )));
  });

  test('unknown reads and failed writes are dropped', () => {
    assertLinearizable(checkKvHistory(history(
      failed(put(1, 0, 1, 'x', 'f')), unknown(get(2, 0, 1, 'x', 'garbage')),
      get(3, 2, 3, 'x', null),
    )));
  });

  test('cas, delete and absent keys follow the register', () => {
    assertLinearizable(checkKvHistory(history(
      cas(1, 0, 1, 'x', null, 'a', true), cas(2, 2, 3, 'x', null, 'z', false),
      cas(1, 4, 10, 'x', 'a', 'b', true), cas(2, 5, 11, 'x', 'a', 'c', false),
      del(3, 12, 13, 'x', 1), del(3, 14, 15, 'x', 0), get(1, 16, 17, 'x', null),
      cas(2, 18, 19, 'x', null, 'd', true), get(1, 20, 21, 'x', 'd'),
    )));
  });

  test('revisions: writes in revision order, reads at their revision', () => {
    assertLinearizable(checkKvHistory(history(
      put(1, 0, 10, 'x', 'a', 5), put(2, 0, 10, 'x', 'b', 7),
      get(3, 1, 9, 'x', 'a', { revision: 6, modRevision: 5 }),
      get(3, 11, 12, 'x', 'b', { revision: 9, modRevision: 7 }),
      // An unknown write's revision is learned from a read of it.
      unknown(put(1, 13, 14, 'x', 'c')),
      get(2, 20, 21, 'x', 'c', { revision: 12, modRevision: 11 }),
      put(3, 22, 23, 'x', 'd', 13),
    )));
  });

  test('each key is its own register', () => {
    assertLinearizable(checkKvHistory(history(
      put(1, 0, 1, 'x', 'a'), put(2, 0, 1, 'y', 'b'), get(3, 2, 3, 'x', 'a'),
      get(4, 2, 3, 'y', 'b'), ...noise(),
    )));
  });
});

describe('non-linearizable histories fail on the right key', () => {
  test('a stale read after a completed write', () => {
    const r = checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', '1'), put(1, 2, 3, 'x', '2'), get(2, 4, 5, 'x', '1'),
    ));
    const e = assertNotLinearizable(r, 'x');
    // The explanation shows the dead end: the read, and why it cannot come next.
    assert.match(e, /key "x" is not linearizable/);
    assert.match(e, /#7 client 2 \[4, 5\] get x -> "1" +impossible: read "1" but the value is "2"/);
  });

  test('a read of a value never written', () => {
    assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', '1'), get(2, 0, 5, 'x', 'never'),
    )), 'x');
  });

  test('two successful CAS from the same expected value', () => {
    assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', 'a'),
      cas(2, 10, 20, 'x', 'a', 'b', true), cas(3, 12, 22, 'x', 'a', 'c', true),
    )), 'x');
  });

  test('a lost write: acknowledged, then not read back', () => {
    assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', 'a'), put(1, 2, 3, 'x', 'b'), get(2, 10, 11, 'x', 'a'),
    )), 'x');
    assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', 'a'), get(2, 10, 11, 'x', null),
    )), 'x');
  });

  test('a write reported as refused is read back', () => {
    assertNotLinearizable(checkKvHistory(history(
      ...noise(), failed(put(1, 0, 1, 'x', 'a')), get(2, 10, 11, 'x', 'a'),
    )), 'x');
  });

  test('a read goes back to an older value (serializable read from a partitioned member)', () => {
    // Client 3 reads the new value; afterwards client 4, on a member cut off from the leader,
    // reads the old one. Each read alone could be ordered; together they cannot.
    const e = assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', 'old'), put(2, 2, 20, 'x', 'new'),
      get(3, 3, 4, 'x', 'new'), get(4, 5, 6, 'x', 'old'),
    )), 'x');
    assert.match(e, /read "old" but the value is "new"/);
  });

  test('an unknown write, once read, cannot be unread', () => {
    assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', 'a'), unknown(put(1, 2, 3, 'x', 'b')),
      get(2, 10, 11, 'x', 'b'), get(3, 12, 13, 'x', 'a'),
    )), 'x');
  });

  test('a delete or a compare that contradicts the register', () => {
    assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', 'a'), del(2, 2, 3, 'x', 0),
    )), 'x');
    assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', 'a'), cas(2, 2, 3, 'x', 'a', 'b', false),
    )), 'x');
  });

  test('revisions: a header revision going back, a wrong mod_revision, writes out of order', () => {
    // Same value both times, but the second read was served from an older store revision.
    const e = assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', 'a', 5),
      get(2, 2, 3, 'x', 'a', { revision: 9, modRevision: 5 }),
      get(3, 4, 5, 'x', 'a', { revision: 7, modRevision: 5 }),
    )), 'x');
    assert.match(e, /revision 7 is below 9/);
    assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', 'a', 5), get(2, 2, 3, 'x', 'a', { modRevision: 4 }),
    )), 'x');
    assertNotLinearizable(checkKvHistory(history(
      ...noise(), put(1, 0, 1, 'x', 'a', 8), put(1, 2, 3, 'x', 'b', 6),
    )), 'x');
  });

  test('every failing key is reported', () => {
    const r = checkKvHistory(history(
      put(1, 0, 1, 'b', '1'), get(2, 2, 3, 'b', null), put(1, 4, 5, 'a', '1'),
      get(2, 6, 7, 'a', '2'), ...noise(),
    ));
    assert.ok(!r.ok);
    assert.deepEqual(r.keys, ['a', 'b']);
    assert.match(r.explanation, /Also not linearizable: "b"/);
  });
});

describe('history recorder', () => {
  test('records calls, returns, failures and unknown outcomes in clock order', () => {
    let now = 0;
    const h = new HistoryRecorder({ now: () => now });
    const a = h.invoke(1, { kind: 'put', key: 'x', value: 'a' });
    now = 10;
    const b = h.invoke(2, { kind: 'get', key: 'x' });
    const c = h.invoke(3, { kind: 'put', key: 'x', value: 'c' });
    h.ok(a, { kind: 'put' });
    now = 20;
    h.ok(b, { kind: 'get', value: 'a' });
    h.unknown(c);
    const d = h.invoke(3, { kind: 'delete', key: 'x' }); // The client goes on after a timeout.
    h.fail(d);
    const e = h.invoke(4, { kind: 'get', key: 'x' }); // Never answered.
    const ops = h.history();
    assert.equal(h.size, 5);
    assert.deepEqual(ops.map((o) => [o.id, o.client, o.status]), [
      [a, 1, 'ok'], [b, 2, 'ok'], [c, 3, 'unknown'], [d, 3, 'fail'], [e, 4, 'unknown']]);
    // The clock stood still at 10: ties are broken (1 ns apart) so that the recording order
    // is the real-time order (b called, then c called, then a returned).
    assert.equal(ops[1]!.call, 10);
    assert.ok(ops[2]!.call > ops[1]!.call && ops[0]!.ret > ops[2]!.call);
    assert.equal(ops[1]!.ret, 20);
    assert.equal(ops[2]!.ret, Infinity);
    assert.equal(ops[4]!.ret, Infinity);
    assertLinearizable(checkKvHistory(ops));
  });

  test('one operation in flight per client; completions are checked', () => {
    const h = new HistoryRecorder();
    const a = h.invoke(1, { kind: 'get', key: 'x' });
    assert.throws(() => h.invoke(1, { kind: 'get', key: 'x' }), /one operation in flight/);
    h.ok(a, { kind: 'get', value: null });
    assert.throws(() => h.fail(a), /already completed/);
    assert.throws(() => h.ok(7, { kind: 'get', value: null }), /unknown operation id/);
  });
});

// ------------------------------------------------------------------ random histories

describe('random histories', () => {
  test(`the checker agrees with a brute-force search on ${seedCount * 4} small histories`, (t) => {
    // Generated (linearizable), one read mutated, and two scrambled (many outputs replaced):
    // these exercise the checker's pruning of unknown outcomes and its no-alternative reads.
    const counts = { linearizable: 0, not: 0 };
    for (let seed = 1; seed <= seedCount; seed++) {
      const prng = new Prng(seed * 7919);
      const revisions = seed % 2 === 0;
      const g = generate(seed, {
        ops: 6 + prng.int(5), clients: 2 + prng.int(3), keys: 1 + (seed % 2),
        unknownRate: [0.1, 0.3, 0.5][seed % 3]!, failRate: 0.05, revisions,
        latencyMax: 2 + prng.int(8),
      });
      const cases: [string, readonly KvOperation[] | undefined][] = [
        ['generated', g.history], ['mutated', mutate(g, prng, revisions)?.history],
        ['scrambled', scramble(g, prng, revisions)],
        ['scrambled again', scramble(g, prng, revisions)],
      ];
      for (const [name, h] of cases) {
        if (h === undefined) continue;
        const expected = bruteForceLinearizable(h);
        if (name === 'generated') assert.ok(expected, `seed ${seed}: generated, linearizable`);
        const r = checkKvHistory(h);
        assert.notEqual(r.verdict, 'unknown', `seed ${seed} ${name}`);
        assert.equal(r.ok, expected, `seed ${seed} ${name}: brute force says ${expected}\n` +
          `${r.ok ? '' : r.explanation}\n${JSON.stringify(h)}`);
        counts[expected ? 'linearizable' : 'not']++;
      }
    }
    t.diagnostic(`${counts.linearizable} linearizable, ${counts.not} not, all agreed`);
    assert.ok(counts.not > seedCount, 'many of them are not linearizable');
  });

  for (const revisions of [false, true]) {
    test(`generated histories pass, mutated reads fail (${seedCount} seeds, revisions ` +
      `${revisions ? 'checked' : 'absent'})`, (t) => {
      let steps = 0;
      let sure = 0;
      let maybe = 0;
      let maybeFailed = 0;
      const missed: string[] = [];
      for (let seed = 1; seed <= seedCount; seed++) {
        const prng = new Prng(seed * 104729);
        const g = generate(seed, {
          ops: 100 + prng.int(200), clients: 2 + prng.int(7), keys: 1 + prng.int(5),
          unknownRate: prng.int(4) * 0.03, failRate: 0.02, revisions, latencyMax: 2 + prng.int(10),
        });
        const r = checkKvHistory(g.history);
        assertLinearizable(r);
        steps += r.stats.steps;
        const m = mutate(g, prng, revisions);
        if (m === undefined) continue;
        const rm = checkKvHistory(m.history);
        assert.notEqual(rm.verdict, 'unknown', `seed ${seed}: budget exceeded`);
        if (!rm.ok) assert.deepEqual(rm.keys, [m.key], `seed ${seed}`);
        if (m.sure) {
          sure++;
          if (rm.ok) missed.push(`seed ${seed}: ${m.what}`);
        } else {
          maybe++;
          if (!rm.ok) maybeFailed++;
        }
      }
      t.diagnostic(`${steps} steps for ${seedCount} linearizable histories; mutations: ` +
        `${sure} observable by construction (all must fail), ${maybeFailed} of ${maybe} ` +
        'others failed');
      assert.deepEqual(missed, [], 'every observable mutation is detected');
      assert.ok(sure > seedCount / 2, 'most mutations are observable by construction');
    });
  }
});

// ------------------------------------------------------------------ budget and size

describe('budget and performance', () => {
  test('an exponential search stops at its budget with verdict unknown', () => {
    // 22 concurrent puts, then a read of a value none wrote: Wing–Gong tries the subsets of puts
    // (~22 * 2^21 pairs) before concluding. The budget ends it instead.
    const specs: Spec[] = [];
    for (let i = 0; i < 22; i++) specs.push(put(i, i, 100 + i, 'a', `p${i}`));
    specs.push(get(99, 200, 201, 'a', 'nobody'), ...noise());
    const r = checkKvHistory(history(...specs), { partitionStepsMax: 100_000 });
    assert.ok(!r.ok);
    assert.equal(r.verdict, 'unknown');
    assert.deepEqual(r.keys, ['a']);
    assert.match(r.explanation, /ran out of its steps budget/);
    // Only "a" ran out: the other keys were checked (a few steps each).
    assert.ok(r.stats.steps <= 100_000 + 100, String(r.stats.steps));
    // A whole-check budget leaves the keys after it ("other", "other2") unchecked, named.
    const r2 = checkKvHistory(history(...specs), { stepsMax: 50 });
    assert.ok(!r2.ok && r2.verdict === 'unknown');
    assert.match(r2.explanation, /Also unknown: .*"other2"/);
  });

  // Budgets: multi-key histories get 10 steps per operation (they need 3-7); the hot key (every
  // client on one key, ~20 operations open at once) is a stress case beyond the fault tests' mix.
  const perfCases = [
    { name: '50 keys, revisions', keys: 50, revisions: true, unknownRate: 0.05, stepsMax: 1e5 },
    { name: '20 keys, revisions', keys: 20, revisions: true, unknownRate: 0.02, stepsMax: 1e5 },
    { name: '10 keys, values only', keys: 10, revisions: false, unknownRate: 0.05, stepsMax: 1e5 },
    { name: 'one hot key, values only', keys: 1, revisions: false, unknownRate: 0.01,
      stepsMax: 3e6 },
  ];
  for (const c of perfCases) {
    test(`10,000 operations from 10 clients (${c.name}) within ${c.stepsMax} steps`, (t) => {
      const g = generate(20240601 + c.keys, {
        ops: 10_000, clients: 10, keys: c.keys, unknownRate: c.unknownRate, failRate: 0.01,
        revisions: c.revisions, latencyMax: 20,
      });
      const budget = { stepsMax: c.stepsMax, partitionStepsMax: c.stepsMax };
      const r = checkKvHistory(g.history, budget);
      assertLinearizable(r);
      t.diagnostic(`linearizable: ${r.stats.searched} ops searched, ${r.stats.steps} steps ` +
        `(peak ${r.stats.partitionStepsPeak} in one key), ${r.stats.cacheEntries} pairs ` +
        `memoized, ${r.stats.elapsedMs.toFixed(0)} ms`);
      // The same with one read made observably wrong: the search must exhaust that key's prefix.
      const prng = new Prng(7);
      let m: Mutation | undefined;
      while (m === undefined || !m.sure) m = mutate(g, prng, c.revisions);
      const rm = checkKvHistory(m.history, budget);
      assert.ok(!rm.ok, 'mutated history fails');
      assert.equal(rm.verdict, 'not-linearizable', rm.explanation);
      assert.deepEqual(rm.keys, [m.key]);
      t.diagnostic(`mutated (${m.what}): ${rm.stats.steps} steps, ` +
        `${rm.stats.elapsedMs.toFixed(0)} ms`);
    });
  }
});
