// Measures raft snapshots on a ~100 MB store (not part of `npm test`):
//   node dist/test/storage/snapshot_measure.js [megabytes] [--cold]
// Fills member A through a real StorageCore (1 KiB puts over 20,000 keys, then a compaction so
// half of the file is free pages), then times: SnapshotCreate (commit + copy + read back), the
// apply latency of batches sent while the copy runs, SnapshotStage on member B, and the install
// (drain, WAL restart, file swap, rebuild of the index) and B's first read after it.
import { execSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Entry } from '../../src/raft/types';
import { addMember, entry, Member, memberA, memberB, put, tempDir } from './snapshot_member';

async function main(): Promise<void> {
  const mb = Number(process.argv[2] ?? 52); // 52: a ~100 MB data file
  const root = tempDir('snap-measure');
  const a = new Member(path.join(root, 'a'), { memberId: memberA });
  const value = 'x'.repeat(1024);
  let index = 0;
  await a.commit([addMember(++index, 1, memberA, 'http://a:2380'), addMember(++index, 1, memberB, 'http://b:2380')]);
  // Distinct keys only: the live data is what the copy carries (no free pages to drop).
  const puts = Math.ceil((mb * 1024 * 1024) / 1100);
  let t = performance.now();
  for (let done = 0; done < puts; done += 1000) {
    const es: Entry[] = [];
    for (let i = done; i < Math.min(puts, done + 1000); i++) es.push(entry(++index, 2, put(`key-${i}`, value)));
    await a.commit(es);
  }
  const fillMs = performance.now() - t;
  const kvFile = path.join(a.dataDir, 'member/kv/data.mdb');
  console.log(`filled: ${puts} puts in ${fillMs.toFixed(0)} ms; kv data.mdb ${(fs.statSync(kvFile).size / 1e6).toFixed(1)} MB`);

  // Applies of 100-put batches, one after the other: alone (baseline), then while a create runs.
  const applies = async (whileRunning: Promise<unknown> | null, count: number): Promise<string> => {
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    const ms: number[] = [];
    let running = true;
    if (whileRunning !== null) void whileRunning.then(() => { running = false; });
    while (whileRunning !== null ? running : ms.length < count) {
      const es: Entry[] = [];
      for (let i = 0; i < 100; i++) es.push(entry(++index, 2, put(`live-${i}`, 'v')));
      const s = performance.now();
      await a.commit(es);
      ms.push(performance.now() - s);
    }
    h.disable();
    ms.sort((x, y) => x - y);
    return `${ms.length} batches of 100 puts, apply p50 ${ms[Math.floor(ms.length / 2)]!.toFixed(1)} ms, ` +
      `max ${ms[ms.length - 1]!.toFixed(1)} ms, event loop delay max ${(h.max / 1e6).toFixed(1)} ms`;
  };
  console.log(`baseline: ${await applies(null, 40)}`);
  // --cold: the copy reads the store from disk, not from the page cache (needs root).
  if (process.argv.includes('--cold')) execSync('sync; echo 3 > /proc/sys/vm/drop_caches');
  t = performance.now();
  const creating = a.create(a.appliedIndex);
  const during = await applies(creating, 0);
  const snap = await creating;
  const createMs = performance.now() - t;
  console.log(`create: ${createMs.toFixed(0)} ms, file ${(snap.size / 1e6).toFixed(1)} MB at index ${snap.index}`);
  console.log(`during the create: ${during}`);

  const b = new Member(path.join(root, 'b'), { memberId: memberB });
  await b.commit([addMember(1, 1, memberA, 'http://a:2380'), addMember(2, 1, memberB, 'http://b:2380')]);
  const recv = path.join(root, 'recv.part');
  fs.copyFileSync(snap.file, recv);
  a.release(snap.file);
  t = performance.now();
  const st = await b.stage(recv);
  console.log(`stage: ${(performance.now() - t).toFixed(0)} ms (${st.error === null ? 'ok' : st.error.message})`);
  t = performance.now();
  const seq = b.install(st.index, st.term);
  await b.until(() => b.persisted.some((p) => p.seq === seq), 'installed');
  const installMs = performance.now() - t;
  t = performance.now();
  const r = await b.range(0, 'key-1', '');
  console.log(`install: ${installMs.toFixed(0)} ms (index rebuild of ${puts} keys included); first get after it ${(performance.now() - t).toFixed(1)} ms (${r.resp!.count} key)`);
  await a.close();
  await b.close();
  fs.rmSync(root, { recursive: true, force: true });
}

void main();
