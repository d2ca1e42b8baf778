// Tasks the background pool (background_pool.ts) runs on its own threads, so that long scans of
// large files never run on the main thread (gRPC, raft) or in the storage worker's apply loop
// (issue #13 item 7). Each export is one task, called by name: the pool passes one argument.
import { createHash } from 'node:crypto';
import fs from 'node:fs';

/** SHA-256 of a whole file, read in 1 MiB chunks (a backup snapshot's trailer). */
export async function sha256File(file: string): Promise<Uint8Array> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return new Uint8Array(hash.digest());
}
