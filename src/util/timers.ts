// The timers a component uses, injected so that a simulator can run it on virtual time
// (test/helpers/sim_scheduler.ts). Production passes `realTimers`.
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** Runs `fn` after the current event-loop turn's I/O (node's setImmediate). */
  setImmediate(fn: () => void): void;
}

export const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
  setImmediate: (fn) => {
    setImmediate(fn);
  },
};
