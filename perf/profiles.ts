// Hardware profiles of hardware.md and the per-core capacity model used to project measured
// costs to larger machines. Keep this file and hardware.md in agreement.
import type { Sample } from './run';

export interface Profile {
  name: string;
  cores: number;
  memGiB: number;
  /** Highest fdatasync p99 on the data disk this profile assumes (etcd's guide: < 10 ms). */
  fsyncP99Ms: number;
  settings: string;
}

export const PROFILES: readonly Profile[] = [
  { name: 'small', cores: 2, memGiB: 8, fsyncP99Ms: 10, settings: 'defaults (--quota-backend-bytes 2 GiB); one storage worker' },
  { name: 'medium', cores: 4, memGiB: 16, fsyncP99Ms: 5, settings: '--quota-backend-bytes 4294967296' },
  { name: 'large', cores: 8, memGiB: 32, fsyncP99Ms: 2, settings: '--quota-backend-bytes 8589934592; run the load balancer/clients off-box' },
  { name: 'extra-large', cores: 16, memGiB: 64, fsyncP99Ms: 1, settings: '--quota-backend-bytes 8589934592; NVMe with power-loss protection' },
];

export interface MachineFacts {
  cores: number;
  model: string;
  memGiB: number;
  fsyncUs: { p50: number; p99: number; p999: number; max: number; iops: number };
  writeMBps: number;
  loopbackRttUs: { p50: number; p99: number };
  sha256MBps: number;
}

/**
 * Capacity model: an operation costs M µs on the main thread (gRPC I/O, raft), S µs on the
 * storage worker (WAL, apply, reads) and T µs of CPU in the whole server process (M + S + the
 * LMDB writer, fdatasync and GC threads). One main thread and one storage worker are single
 * threads whatever the core count, so throughput is at most 1e6/M and 1e6/S; all server threads
 * together can use at most `cores` cores, so it is also at most cores × 1e6/T. Clients are
 * assumed to run elsewhere (on this machine they share the cores, which the measured figure
 * includes and the projection does not).
 */
export function projectCapacity(s: Sample, cores: number): { opsPerSec: number; limit: string } {
  const limits: [number, string][] = [[(cores * 1e6) / s.serverCpuUsPerOp, 'cores']];
  if (s.threadBusyUsPerOp) {
    limits.push([1e6 / s.threadBusyUsPerOp.main, 'main thread'], [1e6 / s.threadBusyUsPerOp.storage, 'storage worker']);
  }
  const [opsPerSec, limit] = limits.reduce((a, b) => (b[0] < a[0] ? b : a));
  return { opsPerSec, limit };
}
