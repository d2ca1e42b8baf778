// Storage-worker statistics in a SharedArrayBuffer: the worker writes plain numbers into fixed
// slots as it works (no messages), the main thread reads them when /metrics is scraped.
// One writer per slot (the worker); a reader may see a histogram mid-update, which is fine for
// monitoring and costs nothing on the write path.
//
// Histograms use etcd's buckets for disk latencies: prometheus.ExponentialBuckets(0.001, 2, 14),
// i.e. upper bounds 1 ms .. 8.192 s, plus +Inf.

export const LATENCY_BUCKETS: readonly number[] = Array.from({ length: 14 }, (_, i) => 0.001 * 2 ** i);

/** A histogram block: one count per bucket (+Inf last), then sum and count. */
const HIST_SLOTS = LATENCY_BUCKETS.length + 1 + 2;

/** Slot offsets; a histogram takes HIST_SLOTS (17) slots. */
export const enum StatSlot {
  WalFsync = 0,
  BackendCommit = 17,
  KeysTotal = 34,
  PutTotal = 35,
  DeleteTotal = 36,
  RangeTotal = 37,
  TxnTotal = 38,
  BackendCommitWrites = 39,
  /** Storage worker event-loop busy time since start, ms (performance.eventLoopUtilization). */
  WorkerBusyMs = 40,
  /** Entries whose apply took longer than 100 ms (etcd_server_slow_apply_total). */
  SlowApplies = 41,
  Slots = 42,
}
if (HIST_SLOTS !== 17) throw new Error('stats layout: histogram slot count changed');

export function newStatsBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(StatSlot.Slots * 8);
}

export class WorkerStats {
  readonly values: Float64Array;

  constructor(buffer: SharedArrayBuffer) {
    this.values = new Float64Array(buffer);
  }

  observe(histogram: StatSlot.WalFsync | StatSlot.BackendCommit, seconds: number): void {
    const v = this.values;
    let b = 0;
    while (b < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[b]!) b++;
    v[histogram + b]! += 1;
    v[histogram + LATENCY_BUCKETS.length + 1]! += seconds;
    v[histogram + LATENCY_BUCKETS.length + 2]! += 1;
  }

  add(slot: StatSlot, n: number): void {
    this.values[slot]! += n;
  }

  set(slot: StatSlot, n: number): void {
    this.values[slot] = n;
  }

  get(slot: StatSlot): number {
    return this.values[slot]!;
  }

  /** Cumulative bucket counts (le = bound), sum and count, as Prometheus wants them. */
  histogram(histogram: StatSlot.WalFsync | StatSlot.BackendCommit): { buckets: [number, number][]; sum: number; count: number } {
    const v = this.values;
    const buckets: [number, number][] = [];
    let cumulative = 0;
    for (let b = 0; b <= LATENCY_BUCKETS.length; b++) {
      cumulative += v[histogram + b]!;
      buckets.push([b < LATENCY_BUCKETS.length ? LATENCY_BUCKETS[b]! : Infinity, cumulative]);
    }
    return { buckets, sum: v[histogram + LATENCY_BUCKETS.length + 1]!, count: v[histogram + LATENCY_BUCKETS.length + 2]! };
  }
}
