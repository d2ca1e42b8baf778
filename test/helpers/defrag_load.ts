// Test helpers for defragmentation tests: a store with free pages, a put load that records what
// was acknowledged, and the checks that nothing acknowledged is missing or different.
import assert from 'node:assert/strict';
import { connect, long, num, str, unary, type ServiceClient } from './grpc_client';

type Kv = ServiceClient<'etcdserverpb.KV'>;
type Maint = ServiceClient<'etcdserverpb.Maintenance'>;

/**
 * Writes `keys` keys of `valueBytes` each under `prefix` (`clients` at a time), deletes every
 * other one and compacts, so that about half of the file is free pages. Returns the revision
 * after the compaction.
 */
export async function fillWithFreePages(kv: Kv, prefix: string, keys: number, valueBytes: number, clients = 16): Promise<number> {
  const value = Buffer.alloc(valueBytes, 'v');
  const keyOf = (i: number): Buffer => Buffer.from(`${prefix}${String(i).padStart(7, '0')}`);
  let next = 0;
  await Promise.all(Array.from({ length: clients }, async () => {
    for (let i = next++; i < keys; i = next++) await unary(kv, 'Put', { key: keyOf(i), value });
  }));
  next = 0;
  await Promise.all(Array.from({ length: clients }, async () => {
    for (let i = 2 * next++; i < keys; i = 2 * next++) await unary(kv, 'DeleteRange', { key: keyOf(i) });
  }));
  const put = await unary(kv, 'Put', { key: Buffer.from(`${prefix}-marker`), value: Buffer.from('m') });
  const rev = num(put.header!.revision);
  await unary(kv, 'Compact', { revision: long(rev), physical: true });
  return rev;
}

export interface AckedPut { key: string; value: string; rev: number }

/** `clients` loops putting distinct keys under `prefix` until stop(); every acknowledged put is kept. */
export function putLoad(endpoint: string, prefix: string, clients: number): { stop(): Promise<AckedPut[]>; acked: AckedPut[]; errors: string[] } {
  const acked: AckedPut[] = [];
  const errors: string[] = [];
  let running = true;
  const kvs = Array.from({ length: clients }, () => connect('etcdserverpb.KV', endpoint));
  const loops = kvs.map(async (kv, c) => {
    for (let i = 0; running; i++) {
      const key = `${prefix}${c}-${String(i).padStart(6, '0')}`;
      const value = `value-${c}-${i}-${'x'.repeat(i % 200)}`;
      try {
        const r = await unary(kv, 'Put', { key: Buffer.from(key), value: Buffer.from(value) });
        acked.push({ key, value, rev: num(r.header!.revision) });
      } catch (err) {
        // The server may be killed under the load (crash tests): an unacknowledged put is no loss.
        errors.push(String((err as Error).message));
        if (errors.length > 10000) return;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  });
  return {
    acked,
    errors,
    async stop() {
      running = false;
      await Promise.all(loops);
      for (const kv of kvs) kv.close();
      return acked;
    },
  };
}

/** Every acknowledged put is there with its value and the revision it was acknowledged at. */
export async function assertAckedPresent(kv: Kv, acked: AckedPut[], label: string): Promise<void> {
  let missing = 0;
  let wrong = 0;
  let firstProblem = '';
  for (const a of acked) {
    const r = await unary(kv, 'Range', { key: Buffer.from(a.key) });
    const got = r.kvs?.[0];
    if (got === undefined) {
      missing++;
      if (firstProblem === '') firstProblem = `${a.key} (acknowledged at revision ${a.rev}) is missing`;
    } else if (str(got.value) !== a.value || num(got.mod_revision) !== a.rev) {
      wrong++;
      if (firstProblem === '') firstProblem = `${a.key}: value/mod_revision ${str(got.value).slice(0, 20)}/${num(got.mod_revision)}, acknowledged ${a.value.slice(0, 20)}/${a.rev}`;
    }
  }
  assert.ok(missing === 0 && wrong === 0, `${label}: ${missing} acknowledged puts missing, ${wrong} different out of ${acked.length}; first: ${firstProblem}`);
}

export async function statusSizes(m: Maint): Promise<{ dbSize: number; dbSizeInUse: number; revision: number }> {
  const s = await unary(m, 'Status', {});
  return { dbSize: num(s.dbSize), dbSizeInUse: num(s.dbSizeInUse), revision: num(s.header!.revision) };
}

export async function hashKvAt(m: Maint, rev: number): Promise<number> {
  const r = await unary(m, 'HashKV', { revision: long(rev) });
  return r.hash ?? 0;
}
