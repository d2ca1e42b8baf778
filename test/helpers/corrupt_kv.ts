// Test helper: corrupts a STOPPED member's data on purpose, as a bad disk or a bug below the log
// would: one revision record's value in its LMDB (member/kv, db `key`, storage/schema.ts) is
// rewritten in place, nothing else (the raft log, the applied index and the other members are
// untouched, so raft never repairs it). The checks of server/corrupt.ts must catch exactly this.
//
//   await cluster.stopMember(2);
//   const r = await corruptNewestValue(cluster.members[2]!.dataDir, 'k7');
//   await cluster.restart(2);
import path from 'node:path';
import { open } from 'lmdb';
import { mvccpb } from '../../src/gen/proto';
import * as schema from '../../src/storage/schema';

/** The storage worker's map size for the default quota (main.ts: 2 x 2 GiB); only address space. */
const mapSizeBytes = 4 * 1024 * 1024 * 1024;

export interface CorruptedRecord {
  main: number;
  sub: number;
  before: string;
  after: string;
}

/**
 * Flips every bit of the first byte of the value in the newest put record of `key` (same length,
 * so the record stays a valid KeyValue and the store starts normally). The member must be stopped:
 * the environment is opened by path as the server's threads open it.
 */
export async function corruptNewestValue(dataDir: string, key: string): Promise<CorruptedRecord> {
  const env = open({ path: path.join(dataDir, schema.kvDir), maxDbs: 8, mapSize: mapSizeBytes, overlappingSync: false });
  try {
    const db = env.openDB<Buffer, Buffer>({ name: schema.dbKey, keyEncoding: 'binary', encoding: 'binary' });
    const wanted = Buffer.from(key);
    let found: { recordKey: Buffer; kv: mvccpb.KeyValue } | null = null;
    // Records are in revision order: the last match is the newest.
    for (const { key: recordKey, value } of db.getRange()) {
      if (schema.revKeyIsTombstone(recordKey)) continue;
      const kv = mvccpb.KeyValue.decode(value);
      if (Buffer.from(kv.key).equals(wanted)) found = { recordKey: Buffer.from(recordKey), kv };
    }
    if (found === null) throw new Error(`no put record of ${key} in ${dataDir}`);
    const value = Buffer.from(found.kv.value);
    if (value.length === 0) throw new Error(`the newest value of ${key} is empty: nothing to flip`);
    const before = value.toString();
    value[0] = value[0]! ^ 0xff;
    found.kv.value = value;
    await db.put(found.recordKey, Buffer.from(mvccpb.KeyValue.encode(found.kv).finish()));
    return {
      main: schema.revKeyMain(found.recordKey), sub: schema.revKeySub(found.recordKey),
      before, after: value.toString('latin1'),
    };
  } finally {
    await env.close();
  }
}
