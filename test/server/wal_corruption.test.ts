// WAL corruption end to end (issue #10, finding 2): a flipped bit in a record that was synced
// and acknowledged, with valid records after it, makes concord refuse to start with a message
// naming the file and the offset (exit code 1), instead of cutting the log there silently;
// `concordutl wal repair` cuts it for an operator who accepts the loss, after which concord
// starts with what LMDB and the log kept. concordutl refuses a data dir in use.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { crc32 } from '../../src/util/crc32';
import { CONCORD_MAIN, startConcord } from '../helpers/concord';
import { connectAll, unary } from '../helpers/grpc_client';

const concordutl = path.resolve(__dirname, '../../src/cli/concordutl.js');
const headerBytes = 12;
const recordStart = (pos: number): number => (pos % 512 > 512 - headerBytes ? pos - (pos % 512) + 512 : pos);

/** Offsets of the entry records of a segment: [start, bodyLength]. */
function entryRecords(data: Buffer): [number, number][] {
  const out: [number, number][] = [];
  for (let pos = 0; ;) {
    pos = recordStart(pos);
    if (pos + headerBytes > data.length) break;
    const len = data.readUInt32LE(pos);
    if (len === 0 || crc32(data, pos, pos + 8) !== data.readUInt32LE(pos + 8)) break;
    if (data[pos + headerBytes + 4] === 1) out.push([pos, len]);
    pos += headerBytes + len;
  }
  return out;
}

function utl(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [concordutl, ...args], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

/** Starts concord expecting it to refuse; returns its exit code and output. */
function refusedStart(dataDir: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CONCORD_MAIN, '--data-dir', dataDir, '--listen-client-urls', 'http://127.0.0.1:0',
      '--advertise-client-urls', 'http://127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

test('a flipped bit in an acknowledged WAL record: refused with file and offset; concordutl wal repair; starts again', async () => {
  const c = await startConcord({ keepDataDir: true });
  const dataDir = c.dataDir;
  try {
    const client = connectAll(c.endpoint);
    try {
      for (let i = 0; i < 40; i++) await unary(client.kv, 'Put', { key: Buffer.from('k' + String(i).padStart(2, '0')), value: Buffer.alloc(200, 0x61 + (i % 26)) });
    } finally {
      client.close();
    }
    const inUse = utl('wal', 'repair', '--data-dir', dataDir);
    assert.equal(inUse.status, 1);
    assert.match(inUse.out, /in use by process/);
    await c.stop(); // clean stop: LMDB holds everything; the WAL still reads from the start
    const walDir = path.join(dataDir, 'member', 'wal');
    const seg = path.join(walDir, fs.readdirSync(walDir).filter((f) => f.endsWith('.wal')).sort()[0]!);
    const data = fs.readFileSync(seg);
    const recs = entryRecords(data);
    assert.ok(recs.length >= 40, `${recs.length} entry records`);
    const [at] = recs[10]!;
    data[at + headerBytes + 30]! ^= 0x10;
    fs.writeFileSync(seg, data);

    const refused = await refusedStart(dataDir);
    assert.equal(refused.code, 1, refused.out);
    assert.match(refused.out, new RegExp(`corrupt record in ${seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} at offset ${at}`));
    assert.match(refused.out, /concordutl wal repair/);
    assert.doesNotMatch(refused.out, /ready to serve/);

    const repaired = utl('wal', 'repair', '--data-dir', dataDir);
    assert.equal(repaired.status, 0, repaired.out);
    assert.match(repaired.out, new RegExp(`cut .* at offset ${at}`));
    // LMDB had applied every entry: the log now starts after them, nothing is lost.
    assert.match(repaired.out, /the log now starts after index \d+/);
    assert.equal(utl('wal', 'repair', '--data-dir', dataDir).out, 'the WAL reads clean: nothing to repair\n');

    const c2 = await startConcord({ dataDir, keepDataDir: true });
    const client2 = connectAll(c2.endpoint);
    try {
      const r = await unary(client2.kv, 'Range', { key: Buffer.from('k'), range_end: Buffer.from('l'), count_only: true });
      assert.equal(Number(r.count), 40);
      await unary(client2.kv, 'Put', { key: Buffer.from('after'), value: Buffer.from('repair') });
    } finally {
      client2.close();
      await c2.stop();
    }
    const c3 = await startConcord({ dataDir, keepDataDir: true });
    await c3.stop();
  } finally {
    await c.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
