// Virtual time for storage simulations: timers and I/O completions are events on one queue,
// run in time order (ties in the order they were scheduled), so a run is a function of its seed.
// Implements the Timers the storage code takes (src/util/timers.ts).
import type { Timers } from '../../src/util/timers';

interface SimEvent {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

export class SimScheduler implements Timers {
  /** Virtual milliseconds. */
  now = 0;
  private seq = 0;
  private queue: SimEvent[] = [];

  /** Runs `fn` `ms` virtual milliseconds from now. */
  at(ms: number, fn: () => void): SimEvent {
    const ev: SimEvent = { at: this.now + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    // Binary insertion keeps the queue sorted by (at, seq).
    let lo = 0;
    let hi = this.queue.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const q = this.queue[mid]!;
      if (q.at < ev.at || (q.at === ev.at && q.seq < ev.seq)) lo = mid + 1;
      else hi = mid;
    }
    this.queue.splice(lo, 0, ev);
    return ev;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    return this.at(ms, fn);
  }

  clearTimeout(handle: unknown): void {
    (handle as SimEvent).cancelled = true;
  }

  setImmediate(fn: () => void): void {
    this.at(0, fn);
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Runs the next event (advancing time); false when none is left. */
  step(): boolean {
    for (;;) {
      const ev = this.queue.shift();
      if (ev === undefined) return false;
      if (ev.cancelled) continue;
      this.now = ev.at;
      ev.fn();
      return true;
    }
  }

  /** Drops every event: the process they belonged to is gone. */
  clear(): void {
    for (const ev of this.queue) ev.cancelled = true;
    this.queue = [];
  }
}

/** Lets every promise callback queued so far run (they are deterministic: no real I/O waits). */
export function drainMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
