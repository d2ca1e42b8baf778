// The background pool: piscina worker threads for heavy work a request needs but that must not
// stall the main thread or the storage worker (hashing a snapshot file, ...). One thread: on the
// machines concord targets the cores are already taken by the main thread and the storage and
// watch workers; background work should take what is left, not compete. The thread starts on
// first use and exits after 10 s idle, so an idle member pays nothing for it.
import path from 'node:path';
import Piscina from 'piscina';

let pool: Piscina | null = null;

function get(): Piscina {
  if (pool === null) {
    pool = new Piscina({
      filename: path.join(__dirname, 'background_tasks.js'),
      minThreads: 0,
      maxThreads: 1,
      idleTimeout: 10_000,
    });
  }
  return pool;
}

/** SHA-256 of `file`, computed on the background thread. */
export function sha256FileInBackground(file: string): Promise<Uint8Array> {
  return get().run(file, { name: 'sha256File' }) as Promise<Uint8Array>;
}

/** bcrypt hash of `password` at `cost`, on the background thread. */
export function bcryptHashInBackground(password: string, cost: number): Promise<string> {
  return get().run({ password, cost }, { name: 'bcryptHash' }) as Promise<string>;
}

/** Whether `password` matches `hash`, on the background thread. */
export function bcryptCompareInBackground(password: string, hash: string): Promise<boolean> {
  return get().run({ password, hash }, { name: 'bcryptCompare' }) as Promise<boolean>;
}

/** Stops the pool's thread (at shutdown); tasks still running are abandoned. */
export async function closeBackgroundPool(): Promise<void> {
  const p = pool;
  pool = null;
  if (p !== null) await p.destroy();
}
