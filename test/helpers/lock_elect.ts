// Shared pieces of the lock/election tests (test/lock, test/etcdctl/lock_elect, test/gateway/
// lock_elect): the server under test, and the normalization of what differs by nature between
// two independent servers.
//
// The server compared with real etcd is concord. With LOCKELECT_SELF_CHECK=1 it is a second
// real etcd instead: that validates the harness itself (every scenario must pass etcd vs etcd,
// so a failure against concord is concord's, not a flaky or order-dependent test).

import { startConcord } from './concord';
import { startEtcd } from './etcd';

export interface Subject {
  /** 'concord', or 'etcd' under LOCKELECT_SELF_CHECK=1. */
  kind: 'concord' | 'etcd';
  endpoint: string;
  /** 'host:port'. */
  address: string;
  logs(): string;
  stop(): Promise<void>;
}

export const SELF_CHECK = process.env.LOCKELECT_SELF_CHECK === '1';

/** Starts the server under test (see the top of the file). */
export async function startSubject(): Promise<Subject> {
  if (SELF_CHECK) {
    const e = await startEtcd();
    return { kind: 'etcd', endpoint: e.endpoint, address: e.address, logs: () => e.logs(), stop: () => e.stop() };
  }
  const c = await startConcord();
  return { kind: 'concord', endpoint: c.endpoint, address: c.address, logs: () => c.logs(), stop: () => c.stop() };
}

/** Starts real etcd and the subject together; stops whichever started if the other fails. */
export async function startPair(): Promise<[{ endpoint: string; address: string; logs(): string; stop(): Promise<void> }, Subject]> {
  const [e, s] = await Promise.allSettled([startEtcd(), startSubject()]);
  if (e.status === 'rejected' || s.status === 'rejected') {
    if (e.status === 'fulfilled') await e.value.stop();
    if (s.status === 'fulfilled') await s.value.stop();
    throw e.status === 'rejected' ? e.reason : (s as PromiseRejectedResult).reason;
  }
  return [e.value, s.value];
}

/** Drops header fields that differ between two independent clusters: ids and raft term. */
export function dropIds(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(dropIds);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (k === 'cluster_id' || k === 'member_id' || k === 'raft_term') continue;
      out[k] = dropIds(x);
    }
    return out;
  }
  return v;
}

/**
 * Names for ids a server chooses itself (lease ids of sessions etcd's lock/election services and
 * etcdctl create): each distinct id becomes `<lease1>`, `<lease2>`, ... in order of first
 * appearance. Two servers doing the same things in the same order must produce the same text
 * after this. Only id positions are rewritten, so a small id cannot rename a revision: the hex
 * suffix of a key ("name/<hex>") and, in JSON, the decimal value of a "lease" or "ID" field.
 */
export class IdNames {
  private readonly byHex = new Map<string, string>();
  private readonly byDec = new Map<string, string>();

  /** Registers `id` (bigint or decimal string) and returns its name. */
  name(id: bigint | string): string {
    const big = BigInt(id);
    const dec = big.toString();
    let n = this.byDec.get(dec);
    if (n === undefined) {
      n = `<lease${this.byDec.size + 1}>`;
      this.byDec.set(dec, n);
      this.byHex.set(big.toString(16), n);
    }
    return n;
  }

  /** Replaces registered ids in key suffixes ("/<hex>") and JSON "lease"/"ID" fields. */
  apply(text: string): string {
    if (this.byDec.size === 0) return text;
    return text
      .replace(/\/([0-9a-f]+)(?![0-9A-Za-z])/g, (m, h: string) => {
        const n = this.byHex.get(h);
        return n === undefined ? m : `/${n}`;
      })
      .replace(/"(lease|ID)":"(\d+)"/g, (m, f: string, d: string) => {
        const n = this.byDec.get(d);
        return n === undefined ? m : `"${f}":"${n}"`;
      });
  }

  /** Applies to a JSON value. */
  applyValue<T>(v: T): T {
    return v === undefined ? v : (JSON.parse(this.apply(JSON.stringify(v))) as T);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
