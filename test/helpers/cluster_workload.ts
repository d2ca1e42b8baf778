// A recorded client workload for cluster fault tests: clients spread over the members run puts,
// linearizable gets and compare-and-swaps (txns) on a few keys while faults happen, and every
// operation goes into a history for the linearizability checker (test/helpers/linearizability.ts)
// with its outcome as a client can know it:
//  - ok: the answer;
//  - fail: the request certainly had no effect (a read's error; a write refused before it
//    reached the log: "no leader", "too many requests");
//  - unknown: a write whose fate the client cannot know (timeout, connection lost, "request timed
//    out": it may have been committed), as Porcupine handles them.
import * as grpc from '@grpc/grpc-js';
import { etcdserverpb } from '../../src/gen/proto';
import { Prng } from '../../src/util/prng';
import { connect, unary, str } from './grpc_client';
import { HistoryRecorder, KvInput, KvOutput } from './linearizability';

export interface WorkloadOptions {
  /** Client URLs: client i talks to endpoints[i % n]. */
  endpoints: string[];
  clients: number;
  keys: number;
  seed: number;
  /** Per-request deadline. */
  timeoutMs?: number;
  /** Reads as serializable (stale-allowed): the mutation the checker must catch. */
  serializableReads?: boolean;
}

/** Refusals before the log: the write did not happen. */
const definiteFailures = new Set(['etcdserver: no leader', 'etcdserver: too many requests', 'etcdserver: server stopped']);

export class ClusterWorkload {
  readonly history = new HistoryRecorder<KvInput, KvOutput>();
  private running = true;
  private readonly loops: Promise<void>[] = [];
  /** Operations by outcome, for the report. */
  readonly counts = { ok: 0, fail: 0, unknown: 0 };

  constructor(private readonly opts: WorkloadOptions) {}

  start(): void {
    for (let i = 0; i < this.opts.clients; i++) this.loops.push(this.client(i));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private async client(i: number): Promise<void> {
    const endpoint = this.opts.endpoints[i % this.opts.endpoints.length]!;
    const kv = connect('etcdserverpb.KV', endpoint);
    const p = new Prng(this.opts.seed * 1000 + i + 1);
    let n = 0;
    try {
      while (this.running) {
        const key = 'k' + p.int(this.opts.keys);
        const roll = p.int(10);
        const value = `c${i}-${n++}`;
        const input: KvInput = roll < 4 ? { kind: 'put', key, value }
          : roll < 8 ? { kind: 'get', key }
            : { kind: 'cas', key, expected: p.int(3) === 0 ? null : `c${p.int(this.opts.clients)}-${p.int(n + 1)}`, value };
        await this.run(kv, i, input);
      }
    } finally {
      kv.close();
    }
  }

  /** One operation, recorded. */
  async run(kv: ReturnType<typeof connect<'etcdserverpb.KV'>>, client: number, input: KvInput): Promise<void> {
    const op = this.history.invoke(client, input);
    const timeoutMs = this.opts.timeoutMs ?? 3000;
    try {
      if (input.kind === 'put') {
        const r = await unary(kv, 'Put', { key: Buffer.from(input.key), value: Buffer.from(input.value) }, { timeoutMs });
        this.history.ok(op, { kind: 'put', revision: Number(r.header!.revision) });
      } else if (input.kind === 'get') {
        const r = await unary(kv, 'Range', { key: Buffer.from(input.key), serializable: this.opts.serializableReads === true }, { timeoutMs });
        const kvs = r.kvs[0];
        this.history.ok(op, kvs === undefined
          ? { kind: 'get', value: null, revision: Number(r.header!.revision) }
          : { kind: 'get', value: str(kvs.value), revision: Number(r.header!.revision), modRevision: Number(kvs.mod_revision) });
      } else if (input.kind === 'cas') {
        const compare = input.expected === null
          ? { key: Buffer.from(input.key), target: etcdserverpb.Compare.CompareTarget.CREATE, result: etcdserverpb.Compare.CompareResult.EQUAL, create_revision: 0 }
          : { key: Buffer.from(input.key), target: etcdserverpb.Compare.CompareTarget.VALUE, result: etcdserverpb.Compare.CompareResult.EQUAL, value: Buffer.from(input.expected) };
        const r = await unary(kv, 'Txn', {
          compare: [compare],
          success: [{ request_put: { key: Buffer.from(input.key), value: Buffer.from(input.value) } }],
        }, { timeoutMs });
        this.history.ok(op, { kind: 'cas', succeeded: r.succeeded === true, revision: Number(r.header!.revision) });
      } else {
        throw new Error('unused');
      }
      this.counts.ok++;
    } catch (err) {
      const e = err as grpc.ServiceError;
      if (input.kind === 'get' || definiteFailures.has(e.details)) {
        this.history.fail(op);
        this.counts.fail++;
      } else {
        this.history.unknown(op);
        this.counts.unknown++;
      }
      // Errors come fast when a member is down: do not spin.
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
