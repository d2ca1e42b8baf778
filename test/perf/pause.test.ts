// perf/pause.ts: which phase a put of the maintenance workloads belongs to, and the longest
// stretch of a phase with no put completing (the "pause" the defrag table reports).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { completionTimes, longestPause, phaseOf, type PhaseWindow } from '../../perf/pause';

test('longestPause: the longest gap between completions inside the window', () => {
  const done = [100, 110, 130, 180, 190];
  assert.deepEqual(longestPause(done, 100, 200), { us: 50, atUs: 130 });
});

test('longestPause: the stretches at the window edges are bounded by the window, not by completions outside it', () => {
  // Nothing completes from 1,000 until 5,000: a window [2,000, 4,000) inside that silence is all pause.
  assert.deepEqual(longestPause([500, 1000, 5000, 5010], 2000, 4000), { us: 2000, atUs: 2000 });
  // The stall starts before the window: only its part inside the window counts.
  assert.deepEqual(longestPause([0, 10, 900, 905], 500, 1000), { us: 400, atUs: 500 });
  // The stall runs past the window's end (no completion after it at all).
  assert.deepEqual(longestPause([0, 10, 20], 0, 1000), { us: 980, atUs: 20 });
});

test('longestPause: a window with no completion is one pause; an empty window has none', () => {
  assert.deepEqual(longestPause([], 10, 60), { us: 50, atUs: 10 });
  assert.deepEqual(longestPause([5, 100], 10, 60), { us: 50, atUs: 10 });
  assert.deepEqual(longestPause([5, 100], 60, 60), { us: 0, atUs: 60 });
});

test('longestPause: a defrag-like stall is found among many completions', () => {
  // A completion every 100 µs for 10 s, except nothing between 4.0 s and 6.5 s.
  const done: number[] = [];
  for (let t = 0; t < 10e6; t += 100) if (t < 4e6 || t >= 6.5e6) done.push(t);
  const p = longestPause(done, 3e6, 8e6);
  assert.equal(p.us, 2.5e6 + 100);
  assert.equal(p.atUs, 4e6 - 100);
  // The same stall seen from the windows around it: before and after hardly pause at all.
  assert.equal(longestPause(done, 0, 3.9e6).us, 100);
  assert.equal(longestPause(done, 6.6e6, 10e6).us, 100);
});

test('completionTimes: send + latency, sorted', () => {
  const sent = Float64Array.from([0, 10, 20]);
  const lat = Float32Array.from([100, 5, 30]);
  assert.deepEqual(Array.from(completionTimes(sent, lat, 3)), [15, 50, 100]);
  assert.deepEqual(Array.from(completionTimes(sent, lat, 2)), [15, 100]);
});

test('phaseOf: by send time, except that a claiming phase takes every put whose flight overlaps it', () => {
  const phases: PhaseWindow[] = [
    { name: 'baseline', fromUs: 0, toUs: 1000 },
    { name: 'defrag', fromUs: 1000, toUs: 2000, claimsOverlapping: true },
    { name: 'after', fromUs: 2000, toUs: 3000 },
  ];
  assert.equal(phaseOf(100, 200, phases), 0); // a baseline put
  assert.equal(phaseOf(900, 999, phases), 0); // done just before the defrag
  assert.equal(phaseOf(900, 1000, phases), 1); // sent before, done when the defrag started: held up by it
  assert.equal(phaseOf(900, 2500, phases), 1); // held across the whole defrag
  assert.equal(phaseOf(1500, 1600, phases), 1);
  assert.equal(phaseOf(1999, 2100, phases), 1); // sent during, done after
  assert.equal(phaseOf(2000, 2100, phases), 2); // an after put
  assert.equal(phaseOf(-5, 10, phases), -1); // before every window (warmup)
  assert.equal(phaseOf(3000, 3001, phases), -1);
});

test('phaseOf: without claiming phases it is the send-time window (the lease mass-expiry phases)', () => {
  const phases: PhaseWindow[] = [
    { name: 'before', fromUs: 0, toUs: 10 },
    { name: 'during', fromUs: 10, toUs: 20 },
  ];
  assert.equal(phaseOf(9, 50, phases), 0);
  assert.equal(phaseOf(10, 11, phases), 1);
  assert.equal(phaseOf(25, 26, phases), -1);
});
