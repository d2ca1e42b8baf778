// Memory bounded in bytes, not only in counts (issue #10, finding 5): a burst of large
// proposals is refused with "too many requests" once the unapplied bytes pass their bound, as
// etcd refuses past its commit-apply gap, and the applied entries the raft log keeps for
// catching up stay within their byte bound. Runs a real EtcdServer (storage and watch worker
// threads) in this process on a temporary data dir, proposing directly, as the API does.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import * as limits from '../../src/config/limits';
import { EtcdServer } from '../../src/server/etcd_server';
import { ErrorCode } from '../../src/util/errors';

test('large proposals: refused past the unapplied-bytes bound, retained log bytes bounded', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-membounds-'));
  let server: EtcdServer | null = null;
  try {
    server = await EtcdServer.start({
      name: 'm', dataDir: dir, mapSizeBytes: 4 * 2 ** 30, requestBytesMax: 2 * 1024 * 1024, heartbeatMs: 100,
      electionMs: 1000, initialClusterToken: 't', peerUrls: [], clientUrls: [], quotaBackendBytes: 8 * 2 ** 30,
      watchProgressNotifyIntervalMs: 600_000, leaseCheckpointIntervalMs: 0, unsafeNoFsync: false,
      onFatal: (m) => assert.fail(m),
    });
    const s = server;
    let answered = 0;
    let failed = 0;
    s.setResultSink((_t, code) => {
      answered++;
      if (code !== 0) failed++;
    });
    const value = Buffer.alloc(1024 * 1024, 0x61);
    const propose = (i: number): number => s.propose({ put: { key: Buffer.from('k' + (i % 50)), value } }, {});
    // A burst in one turn: 200 MiB of proposals before anything can be applied.
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 200; i++) {
      const code = propose(i);
      if (code === 0) accepted++;
      else {
        assert.equal(code, ErrorCode.TooManyRequests);
        refused++;
      }
    }
    const peak = s.logByteCounts().unapplied;
    assert.ok(refused > 0, 'some of the burst is refused');
    assert.ok(peak <= limits.unappliedBytesMax, `unapplied bytes ${peak} within ${limits.unappliedBytesMax}`);
    // More bursts as the first ones apply: the retained applied entries stay bounded in bytes.
    let retainedMax = 0;
    let proposedTotal = accepted;
    for (let round = 0; round < 100 && proposedTotal < 300; round++) {
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < 40; i++) if (propose(i) === 0) proposedTotal++;
      retainedMax = Math.max(retainedMax, s.logByteCounts().retained);
    }
    for (let i = 0; i < 100 && answered < proposedTotal; i++) await new Promise((r) => setTimeout(r, 100));
    retainedMax = Math.max(retainedMax, s.logByteCounts().retained);
    assert.equal(answered, proposedTotal, 'every accepted proposal is answered');
    assert.equal(failed, 0);
    assert.ok(proposedTotal * value.length > 3 * limits.logRetainBytesMax, 'more than the bound went through the log');
    // Trimmed in steps: below two bounds plus one entry at any moment.
    assert.ok(retainedMax < 2 * limits.logRetainBytesMax + 2 * value.length, `retained ${retainedMax}`);
    console.log(`burst: ${accepted} accepted, ${refused} refused, peak unapplied ${peak} B; ` +
      `${proposedTotal} MiB through the log, retained at most ${retainedMax} B`);
  } finally {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
