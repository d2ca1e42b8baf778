// Tasks the background pool (background_pool.ts) runs on its own threads, so that long scans of
// large files never run on the main thread (gRPC, raft) or in the storage worker's apply loop
// (issue #13 item 7). Each export is one task, called by name: the pool passes one argument.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import bcrypt from 'bcryptjs';

/** SHA-256 of a whole file, read in 1 MiB chunks (a backup snapshot's trailer). */
export async function sha256File(file: string): Promise<Uint8Array> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return new Uint8Array(hash.digest());
}

/** bcrypt hash of a password (auth UserAdd/UserChangePassword: ~50-100 ms at cost 10). */
export function bcryptHash(a: { password: string; cost: number }): string {
  return bcrypt.hashSync(a.password, a.cost);
}

/** Whether `password` matches the bcrypt `hash` (Authenticate). */
export function bcryptCompare(a: { password: string; hash: string }): boolean {
  return bcrypt.compareSync(a.password, a.hash);
}
