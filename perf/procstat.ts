// Server-side CPU readings shared by the benchmark runners (perf/run.ts, perf/watch.ts, perf/cluster.ts).
import fs from 'node:fs';
import http from 'node:http';

/** utime+stime of a process (or, given its stat file, one thread) in microseconds (Linux /proc). */
export function processCpuUs(pid: number, statPath = `/proc/${pid}/stat`): number {
  try {
    const stat = fs.readFileSync(statPath, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
    return (ticks * 1e6) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

/**
 * GET http://address/path on a connection of its own, closed after the answer. (fetch would keep
 * the connection open in its pool, and an idle keep-alive connection holds up concord's SIGTERM
 * shutdown for its 2 s grace period: 2 s more per measured server.)
 */
export function httpGet(address: string, path: string): Promise<string> {
  const i = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = http.get({ host: address.slice(0, i), port: Number(address.slice(i + 1)), path, agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** concord's per-thread busy seconds (concord_thread_busy_seconds_total), or null. */
export async function threadBusy(address: string): Promise<{ main: number; storage: number } | null> {
  try {
    const text = await httpGet(address, '/metrics');
    const get = (thread: string): number => Number(new RegExp(`^concord_thread_busy_seconds_total\\{thread="${thread}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    return { main: get('main'), storage: get('storage') };
  } catch {
    return null;
  }
}

/**
 * utime+stime of each thread of a process in microseconds, by thread id (Linux /proc). The main
 * thread's id is the pid. Node names no thread (every comm is "node"), so a worker is told apart
 * from V8's and libuv's threads only by how busy it is.
 */
export function threadsCpuUs(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const us = processCpuUs(Number(tid), `/proc/${pid}/task/${tid}/stat`);
    if (!Number.isNaN(us)) out.set(Number(tid), us);
  }
  return out;
}
