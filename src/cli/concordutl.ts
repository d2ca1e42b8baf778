// concordutl: offline operations on a member's data directory (etcd's etcdutl), run while the
// member is stopped. For now:
//   concordutl wal repair --data-dir <dir>
//     Cuts the WAL at its first damaged record (see storage/wal.ts, "Recovery rules"), after
//     which the member starts again. Records after the cut are lost: acknowledged writes among
//     them are gone unless the state machine (LMDB) had applied them already. A member of a
//     cluster that needed a repair should be removed and added back (its log no longer proves
//     what it promised its peers).
import path from 'node:path';
import * as schema from '../storage/schema';
import { Db } from '../storage/engine';
import { LmdbEngine } from '../storage/lmdb_engine';
import { lockDataDir } from '../storage/data_dir_lock';
import { Wal } from '../storage/wal';
import { walSegmentBytes } from '../config/limits';

const usage = `Usage:
  concordutl wal repair --data-dir <dir>   cut the WAL at its first damaged record
`;

function flag(args: string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === name || a === '-' + name.slice(2)) return args[i + 1];
    if (a.startsWith(name + '=')) return a.slice(name.length + 1);
  }
  return undefined;
}

/** The applied index LMDB holds (consistentIndex), read without changing anything. */
async function appliedIndex(dataDir: string): Promise<number> {
  const engine = new LmdbEngine(path.join(dataDir, schema.kvDir), 1 << 30);
  try {
    const v = engine.get(Db.Meta, schema.metaConsistentIndex);
    return v === undefined ? 0 : schema.readU64(Buffer.from(v.buffer, v.byteOffset, v.length), 0);
  } finally {
    await engine.close();
  }
}

async function walRepair(dataDir: string): Promise<number> {
  const unlock = lockDataDir(dataDir);
  try {
    const applied = await appliedIndex(dataDir);
    const cut = Wal.repair({ dir: path.join(dataDir, schema.walDir), segmentBytes: walSegmentBytes }, applied);
    if (cut === null) {
      process.stdout.write('the WAL reads clean: nothing to repair\n');
      return 0;
    }
    if (cut.offset >= 0) process.stdout.write(`cut ${cut.file} at offset ${cut.offset}: ${cut.reason}\n`);
    else process.stdout.write(`${cut.reason}\n`);
    for (const f of cut.removed) process.stdout.write(`removed ${f}\n`);
    if (cut.restartedAfter > 0) process.stdout.write(`the log now starts after index ${cut.restartedAfter}, the last one the state machine applied\n`);
    process.stdout.write('records after the cut are lost; a cluster member repaired this way should be removed and added back\n');
    return 0;
  } finally {
    unlock();
  }
}

async function main(args: string[]): Promise<number> {
  if (args[0] === 'wal' && args[1] === 'repair') {
    const dataDir = flag(args, '--data-dir');
    if (dataDir === undefined) {
      process.stderr.write('Error: --data-dir is required\n' + usage);
      return 2;
    }
    return walRepair(dataDir);
  }
  process.stderr.write(usage);
  return args.length === 0 || args[0] === '--help' || args[0] === 'help' ? 0 : 2;
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
}, (err: unknown) => {
  process.stderr.write(`Error: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
