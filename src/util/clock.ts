// The one clock for durations (lease expiry and remaining TTLs, retry intervals, throttles).
//
// A monotonic clock: `performance.now()` is libuv's uv_hrtime, CLOCK_MONOTONIC on Linux, in ms
// (fractional) since the process started. It never goes back, and steps of the wall clock (an
// NTP step, an operator's `date -s`, a VM resumed with a corrected clock) do not move it: with
// `Date.now()` a forward step of 2 h revoked every lease at the next tick and a backward step
// kept them all for 2 h more (test/lease/clock_step.test.ts). CLOCK_MONOTONIC also does not count
// time suspended, so a host waking from sleep does not expire every lease at once either. etcd
// gets the same from Go's monotonic clock reading (time.Now/time.Since, lease/lessor.go).
//
// Readings mean nothing across processes or restarts: persist durations (remaining TTLs), never
// instants. `Date.now()` stays for what is wall time by nature: log timestamps, ids seeded at
// start (server/etcd_server.ts nextProposalId). Timers (setTimeout, setInterval) already run on
// libuv's monotonic clock.
import { performance } from 'node:perf_hooks';

/** Milliseconds on the monotonic clock (fractional; > 0, never decreasing within a process). */
export function monotonicNowMs(): number {
  return performance.now();
}
