// Differential testing of clusters: a 3-member real etcd 3.4 cluster and a 3-member concord
// cluster started with the same flag shape, the same requests sent to the member with the same
// role in each (the leader, or the first or second follower by member index), the answers
// compared field by field.
//
//   const d = await ClusterDiff.start({ token: 'diff' });
//   after(() => d.stop());
//   await d.call('etcdserverpb.KV', 'Put', FOLLOWER1, { key: b('a'), value: b('1') });   // asserts equal
//
// Answers are normalized as test/helpers/differential.ts does for one member (proto3 defaults
// filled in, 64-bit integers as decimal strings, bytes as latin1 strings); header cluster_id,
// member_id and raft_term are removed (they are checked separately against the ids etcd derives
// from each cluster's own flags); revisions are kept and must match exactly. Both clusters start
// empty at revision 1 and get the same writes, so their revisions stay in step.
//
// With CLUSTER_DIFF_SOFT=1 a difference is printed and recorded in `diffs` instead of failing
// the test (to list every difference in one run); CLUSTER_DIFF_VERBOSE=2 prints every compared
// answer (etcd's).
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

import type { MethodsOfKind, RequestInit, ServiceName } from '../../src/api/grpc/services';
import { clusterIdOf, memberIdOf } from '../../src/membership/ids';
import { startCluster, type ClusterHandle } from './cluster';
import { firstDifference, type Outcome } from './differential';
import { startEtcdCluster, type EtcdClusterHandle } from './etcd_cluster';
import { connect, type ServiceClient } from './grpc_client';

export type Side = 'etcd' | 'concord';
export const SIDES: readonly Side[] = ['etcd', 'concord'];
/** Roles: the leader, then the live followers by member index. */
export const LEADER = 0;
export const FOLLOWER1 = 1;
export const FOLLOWER2 = 2;

const conversion = { longs: String, defaults: true, arrays: true, oneofs: true };

/** A decoded protobufjs message (any type) as plain JSON, header ids and term removed. */
export function plainMessage(msg: unknown): Record<string, unknown> {
  const ctor = (msg as { constructor: { toObject?: (m: unknown, o: object) => Record<string, unknown> } }).constructor;
  const obj = typeof ctor.toObject === 'function' ? ctor.toObject(msg, conversion) : (msg as Record<string, unknown>);
  return plain(obj) as Record<string, unknown>;
}

function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('latin1');
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) continue;
      out[k] = plain(x);
      if (k === 'header' && out[k] !== null && typeof out[k] === 'object') {
        const h = out[k] as Record<string, unknown>;
        delete h.cluster_id;
        delete h.member_id;
        delete h.raft_term;
      }
    }
    return out;
  }
  return v;
}

export function show(o: unknown): string {
  return JSON.stringify(o, (_k, v: unknown) => (typeof v === 'string' && v.length > 200 ? `${v.slice(0, 40)}…(${v.length})` : v), 1);
}

/** One member's identity in one cluster, as etcd derives it from the flags. */
export interface MemberView {
  name: string;
  clientUrl: string;
  peerUrl: string;
  /** memberIdOf([peerUrl], token). */
  id: bigint;
}

type Clients = { [S in ServiceName]?: ServiceClient<S> };

export class ClusterDiff {
  readonly token: string;
  readonly etcd: EtcdClusterHandle;
  readonly concord: ClusterHandle;
  /** Per side, per member index: the members' flags and derived ids. */
  readonly views: Record<Side, MemberView[]>;
  /** Per side: etcd's cluster id for these members. */
  readonly clusterIds: Record<Side, bigint>;
  /** Per side: member indices by role (leader first, then live followers by index). */
  roles: Record<Side, number[]> = { etcd: [], concord: [] };
  /** Differences seen in soft mode (CLUSTER_DIFF_SOFT=1). */
  readonly diffs: string[] = [];
  readonly soft = process.env.CLUSTER_DIFF_SOFT === '1';
  steps = 0;
  private readonly clients: Record<Side, Clients[]>;

  private constructor(token: string, etcd: EtcdClusterHandle, concord: ClusterHandle) {
    this.token = token;
    this.etcd = etcd;
    this.concord = concord;
    const view = (ms: { name: string; clientUrl: string; peerUrl: string }[]): MemberView[] =>
      ms.map((m) => ({ name: m.name, clientUrl: m.clientUrl, peerUrl: m.peerUrl, id: memberIdOf([m.peerUrl], token) }));
    this.views = { etcd: view(etcd.members), concord: view(concord.members) };
    this.clusterIds = {
      etcd: clusterIdOf(this.views.etcd.map((v) => v.id)),
      concord: clusterIdOf(this.views.concord.map((v) => v.id)),
    };
    this.clients = { etcd: etcd.members.map(() => ({})), concord: concord.members.map(() => ({})) };
  }

  /** Starts both clusters (concurrently) and learns who leads each. */
  static async start(opts: { token: string; size?: number }): Promise<ClusterDiff> {
    const size = opts.size ?? 3;
    // Both pick free ports, release them, then bind: a port one side picked can be taken by the
    // other (or by another process) in between. The etcd helper retries by itself; a concord
    // member that cannot bind exits, and then both start again on new ports.
    let pair: [EtcdClusterHandle, ClusterHandle] | undefined;
    for (let attempt = 0; pair === undefined; attempt++) {
      const [e, c] = await Promise.allSettled([
        startEtcdCluster({ size, token: opts.token }),
        startCluster({ size, token: opts.token }),
      ]);
      if (e.status === 'fulfilled' && c.status === 'fulfilled') {
        pair = [e.value, c.value];
        break;
      }
      if (e.status === 'fulfilled') await e.value.stop();
      if (c.status === 'fulfilled') await c.value.stop();
      const err: unknown = e.status === 'rejected' ? e.reason : (c as PromiseRejectedResult).reason;
      const portTaken = e.status === 'fulfilled' && err instanceof Error && /EADDRINUSE|address already in use/.test(err.message);
      if (!portTaken || attempt >= 2) throw err;
    }
    const d = new ClusterDiff(opts.token, pair[0], pair[1]);
    try {
      await d.refreshRoles();
    } catch (err) {
      await d.stop();
      throw err;
    }
    return d;
  }

  async stop(): Promise<void> {
    for (const side of SIDES) for (const m of this.clients[side]) for (const c of Object.values(m)) (c as grpc.Client).close();
    await Promise.all([this.etcd.stop(), this.concord.stop()]);
  }

  alive(side: Side, i: number): boolean {
    return side === 'etcd' ? this.etcd.procs[i] !== null : this.concord.procs[i] !== null;
  }

  /** Waits for a leader on each side and orders the live members by role. */
  async refreshRoles(timeoutMs = 15_000): Promise<void> {
    const [le, lc] = await Promise.all([this.etcd.leader(timeoutMs), this.concord.leader(timeoutMs)]);
    for (const [side, l] of [['etcd', le], ['concord', lc]] as const) {
      const n = this.views[side].length;
      const followers = [...Array(n).keys()].filter((i) => i !== l && this.alive(side, i));
      this.roles[side] = [l, ...followers];
    }
  }

  /** The member index that has `role` on `side`. */
  member(side: Side, role: number): number {
    const i = this.roles[side][role];
    assert.ok(i !== undefined, `no member with role ${role} on ${side}`);
    return i;
  }

  /** A (cached) client of `service` to member `i` of `side`. */
  client<S extends ServiceName>(side: Side, i: number, service: S): ServiceClient<S> {
    const m = this.clients[side][i]!;
    let c = m[service] as ServiceClient<S> | undefined;
    if (c === undefined) {
      const url = side === 'etcd' ? this.etcd.members[i]!.clientUrl : this.concord.members[i]!.clientUrl;
      c = connect(service, url);
      (m as Record<string, unknown>)[service] = c;
    }
    return c;
  }

  /** Records (soft mode) or throws a difference. */
  differ(msg: string): void {
    if (this.soft) {
      this.diffs.push(msg);
      console.log(`CLUSTER DIFF: ${msg}`);
      return;
    }
    assert.fail(msg);
  }

  /** Asserts two normalized values are deep-equal (or records the difference in soft mode). */
  same(label: string, want: unknown, got: unknown): void {
    if (process.env.CLUSTER_DIFF_VERBOSE === '2') console.log(`${label}: ${JSON.stringify(want)}`);
    const d = firstDifference(want, got);
    if (d === null) return;
    this.differ(`${label}: concord differs from etcd at ${d}\n--- etcd:\n${show(want)}\n--- concord:\n${show(got)}`);
  }

  /** One unary call to member `i` of `side`, normalized (errors as code and details). */
  async callOne<S extends ServiceName, M extends MethodsOfKind<S, 'unary'>>(
    side: Side, i: number, service: S, method: M, req: RequestInit<S, M>, timeoutMs = 15_000,
  ): Promise<{ outcome: Outcome; raw: unknown }> {
    const client = this.client(side, i, service);
    const fn = (client as unknown as Record<string, Function>)[method] as Function;
    return new Promise((resolve, reject) => {
      fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs },
        (err: grpc.ServiceError | null, res?: unknown) => {
          if (err) {
            if (typeof err.code === 'number') resolve({ outcome: { error: { code: err.code, details: err.details } }, raw: err });
            else reject(err);
          } else {
            resolve({ outcome: { ok: plainMessage(res) }, raw: res });
          }
        });
    });
  }

  /**
   * Sends `req` to the member with `role` on both sides (concurrently), compares the normalized
   * outcomes (after `tweak`, for values that are each server's own), returns etcd's.
   */
  async call<S extends ServiceName, M extends MethodsOfKind<S, 'unary'>>(
    service: S, method: M, role: number, req: RequestInit<S, M>,
    opts: { label?: string; tweak?: (o: Outcome, side: Side) => Outcome } = {},
  ): Promise<Outcome> {
    const [e, c] = await this.callBoth(service, method, role, req);
    const tw = opts.tweak ?? ((o: Outcome) => o);
    const step = ++this.steps;
    this.same(`step ${step} ${method} on role ${role} (etcd m${this.member('etcd', role)}, concord m${this.member('concord', role)}) ${opts.label ?? ''}`,
      tw(e, 'etcd'), tw(c, 'concord'));
    return e;
  }

  /** Sends `req` to the member with `role` on both sides; both outcomes, not compared. */
  async callBoth<S extends ServiceName, M extends MethodsOfKind<S, 'unary'>>(
    service: S, method: M, role: number, req: RequestInit<S, M>,
  ): Promise<[Outcome, Outcome]> {
    const [e, c] = await Promise.all([
      this.callOne('etcd', this.member('etcd', role), service, method, req),
      this.callOne('concord', this.member('concord', role), service, method, req),
    ]);
    return [e.outcome, c.outcome];
  }

  /** Shorthand for KV calls. */
  kv<M extends MethodsOfKind<'etcdserverpb.KV', 'unary'>>(method: M, role: number, req: RequestInit<'etcdserverpb.KV', M>, label = ''): Promise<Outcome> {
    return this.call('etcdserverpb.KV', method, role, req, { label });
  }
}
