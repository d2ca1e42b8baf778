// Server-side CPU readings shared by the benchmark runners (perf/run.ts, perf/watch.ts).
import fs from 'node:fs';

/** utime+stime of a process in microseconds (Linux /proc). */
export function processCpuUs(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
    return (ticks * 1e6) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

/** concord's per-thread busy seconds (concord_thread_busy_seconds_total), or null. */
export async function threadBusy(address: string): Promise<{ main: number; storage: number } | null> {
  try {
    const text = await (await fetch(`http://${address}/metrics`)).text();
    const get = (thread: string): number => Number(new RegExp(`^concord_thread_busy_seconds_total\\{thread="${thread}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    return { main: get('main'), storage: get('storage') };
  } catch {
    return null;
  }
}
