// Lease expiry does not follow the wall clock (issue #10, finding 4): a step of the system clock
// (NTP, a VM resume) must neither revoke leases en masse nor keep them alive forever, since every
// duration in the server is measured on a monotonic clock (src/util/clock.ts).
//
// Method: a real concord process runs with a preload (test/helpers/clock_jump.ts) that steps its
// Date.now() and new Date() by 2 hours, forward or backward, once a trigger file appears. Leases
// granted before the step are then checked over gRPC after more than one lease tick (500 ms).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { startConcord, type ConcordHandle } from '../helpers/concord';
import { clockJumpLogLine } from '../helpers/clock_jump';
import { bytes, connect, num, openStream, prefixEnd, str, unary } from '../helpers/grpc_client';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const PRELOAD = path.resolve(__dirname, '../helpers/clock_jump.js');
const STEP_MS = 2 * 3600 * 1000;
const GRANTED = 60;

interface Stepped {
  c: ConcordHandle;
  kv: ReturnType<typeof connect<'etcdserverpb.KV'>>;
  lease: ReturnType<typeof connect<'etcdserverpb.Lease'>>;
  /** Creates the trigger file and waits until the server logged that its clock stepped. */
  step(): Promise<void>;
}

/** A concord whose wall clock steps by `jumpMs` on step(); stopped and cleaned up whatever happens. */
async function withSteppedConcord(jumpMs: number, fn: (s: Stepped) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'concord-clock-step-'));
  const trigger = path.join(dir, 'step');
  let c: ConcordHandle | null = null;
  let kv: Stepped['kv'] | null = null;
  let lease: Stepped['lease'] | null = null;
  try {
    assert.ok(fs.existsSync(PRELOAD), `preload ${PRELOAD} not built`);
    c = await startConcord({
      env: {
        NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${PRELOAD}`.trim(),
        CONCORD_TEST_CLOCK_JUMP_FILE: trigger,
        CONCORD_TEST_CLOCK_JUMP_MS: String(jumpMs),
      },
    });
    kv = connect('etcdserverpb.KV', c.endpoint);
    lease = connect('etcdserverpb.Lease', c.endpoint);
    const handle = c;
    await fn({
      c, kv, lease,
      async step() {
        fs.writeFileSync(trigger, '');
        const deadline = Date.now() + 2000;
        while (!handle.logs().includes(clockJumpLogLine)) {
          assert.ok(Date.now() < deadline, `the server did not step its clock:\n${handle.logs()}`);
          await sleep(10);
        }
      },
    });
  } finally {
    kv?.close();
    lease?.close();
    await c?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function timeToLive(s: Stepped, ID: number): Promise<{ TTL: number; keys: string[] }> {
  const r = await unary(s.lease, 'LeaseTimeToLive', { ID, keys: true });
  return { TTL: num(r.TTL), keys: r.keys.map((k) => str(k)).sort() };
}

async function keysUnder(s: Stepped, prefix: string): Promise<string[]> {
  const r = await unary(s.kv, 'Range', { key: bytes(prefix), range_end: prefixEnd(prefix) });
  return r.kvs.map((x) => `${str(x.key)}:${num(x.lease)}`);
}

describe('lease expiry on a monotonic clock (wall clock stepped by 2 h)', () => {
  test('a forward step revokes nothing: leases, keys, remaining TTLs and keep-alives unchanged', async () => {
    await withSteppedConcord(STEP_MS, async (s) => {
      for (const ID of [11, 12, 13]) {
        await unary(s.lease, 'LeaseGrant', { ID, TTL: GRANTED });
        await unary(s.kv, 'Put', { key: bytes(`f/${ID}`), value: bytes('x'), lease: ID });
      }
      await s.step();
      await sleep(1500); // three lease ticks on the stepped clock
      const leases = await unary(s.lease, 'LeaseLeases', {});
      assert.deepEqual(leases.leases.map((l) => num(l.ID)).sort(), [11, 12, 13]);
      assert.deepEqual(await keysUnder(s, 'f/'), ['f/11:11', 'f/12:12', 'f/13:13']);
      for (const ID of [11, 12, 13]) {
        const l = await timeToLive(s, ID);
        assert.deepEqual(l.keys, [`f/${ID}`]);
        assert.ok(l.TTL <= GRANTED && l.TTL > GRANTED - 5, `lease ${ID}: ${l.TTL} s left after the step`);
      }
      const ka = openStream(s.lease, 'LeaseKeepAlive');
      try {
        ka.call.write({ ID: 12 });
        assert.equal(num((await ka.reader.next()).TTL), GRANTED, 'keep-alive after the step');
      } finally {
        ka.call.cancel();
      }
    });
  });

  test('a backward step keeps nothing alive: a 2 s lease still expires on time, a 60 s one reads sane', async () => {
    await withSteppedConcord(-STEP_MS, async (s) => {
      await unary(s.lease, 'LeaseGrant', { ID: 21, TTL: GRANTED });
      const tGrant = Date.now();
      await unary(s.lease, 'LeaseGrant', { ID: 22, TTL: 2 });
      await unary(s.kv, 'Put', { key: bytes('b/22'), value: bytes('x'), lease: 22 });
      await s.step();
      // TTL 2 s: due at 2 s, revoked at the next 500 ms tick, + time to apply: ~3 s after the grant.
      const deadline = tGrant + 3500;
      for (;;) {
        const l = await timeToLive(s, 22);
        if (l.TTL === -1) break;
        assert.ok(Date.now() < deadline, `lease 22 (TTL 2) still there ${Date.now() - tGrant} ms after its grant: TTL ${l.TTL}`);
        await sleep(100);
      }
      assert.deepEqual(await keysUnder(s, 'b/'), []);
      const l21 = await timeToLive(s, 21);
      assert.ok(l21.TTL <= GRANTED && l21.TTL > GRANTED - 5, `lease 21: ${l21.TTL} s left after the step`);
    });
  });
});
