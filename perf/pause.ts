// Pure helpers of the put load around maintenance calls (perf/maintenance.ts, perf/leasegen.ts's
// putter): which phase a put belongs to, and the longest stretch of a phase in which no put completed.

/** A measurement window (µs on the machine-wide monotonic clock). */
export interface PhaseWindow {
  name: string;
  fromUs: number;
  toUs: number;
  /**
   * A put whose flight [sent, completed] overlaps this window belongs to it, whenever it was sent:
   * a put sent just before a Defragment and held up by it is a put slowed by the defrag, not a
   * baseline put. Phases without the flag take the puts sent in them.
   */
  claimsOverlapping?: boolean;
}

/**
 * The index of the phase a put (sent at sentUs, completed at doneUs) belongs to, or -1: the first
 * claiming phase its flight overlaps, else the first phase it was sent in ([fromUs, toUs)).
 */
export function phaseOf(sentUs: number, doneUs: number, phases: readonly PhaseWindow[]): number {
  for (let i = 0; i < phases.length; i++) {
    const p = phases[i]!;
    if (p.claimsOverlapping === true && sentUs < p.toUs && doneUs >= p.fromUs) return i;
  }
  for (let i = 0; i < phases.length; i++) {
    const p = phases[i]!;
    if (sentUs >= p.fromUs && sentUs < p.toUs) return i;
  }
  return -1;
}

/** The longest stretch with no completion inside a window, and where it starts (µs). */
export interface Pause {
  us: number;
  atUs: number;
}

/**
 * The longest part of [fromUs, toUs) in which no put completed. `done` holds completion times in
 * ascending order (all of them, not only the window's: the completions just outside the window
 * bound the stretches at its edges). A window with no completion at all is one pause as long as
 * the window; an empty window has none.
 */
export function longestPause(done: ArrayLike<number>, fromUs: number, toUs: number): Pause {
  if (!(toUs > fromUs)) return { us: 0, atUs: fromUs };
  // The first completion at or after fromUs (binary search), and the one before it.
  let lo = 0;
  let hi = done.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (done[mid]! < fromUs) lo = mid + 1;
    else hi = mid;
  }
  let best: Pause = { us: 0, atUs: fromUs };
  let prev = fromUs; // the stretch before the first completion in the window starts at the window's start
  for (let i = lo; i <= done.length; i++) {
    const next = i < done.length ? Math.min(done[i]!, toUs) : toUs;
    if (next - prev > best.us) best = { us: next - prev, atUs: prev };
    if (i === done.length || done[i]! >= toUs) break;
    prev = done[i]!;
  }
  return best;
}

/** Sorted copy of the completion times of n puts (sent + latency). */
export function completionTimes(sentUs: ArrayLike<number>, latencyUs: ArrayLike<number>, n: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = sentUs[i]! + latencyUs[i]!;
  return out.sort();
}
