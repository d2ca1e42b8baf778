// The cluster's membership (etcd: server/etcdserver/api/membership/cluster.go): who the members
// are, their peer and client URLs, which are learners, which ids were removed. Replicated state:
// it changes only by applying log entries — raft configuration changes (their context carries
// the member, as etcd's ConfChange.Context carries the JSON of membership.Member) and attribute
// updates a member publishes after it starts (its name and client URLs). The storage worker
// applies and persists it with the entry (meta `membership`); the main thread gets a copy with
// every Applied message that changed it (transport peers, MemberList, Status).
//
// Pure: no I/O. Both threads use this one definition of the state and of its encodings.
import Long from 'long';
import { assert } from '../util/assert';
import { ConfChange, ConfChangeType } from '../raft/types';

export interface Member {
  /** 64-bit unsigned. */
  id: Long;
  /** Empty until the member publishes its attributes (etcd: "unstarted"). */
  name: string;
  peerUrls: string[];
  clientUrls: string[];
  isLearner: boolean;
}

/** What a configuration change carries about the member (etcd RaftAttributes + id). */
export interface MemberContext {
  id: Long;
  peerUrls: string[];
  isLearner: boolean;
}

/** The raft id of a member: its 64-bit id cut to 53 bits (JS numbers), never 0. */
export function raftIdOf(memberId: Long): number {
  const id = (memberId.high & 0x1fffff) * 0x100000000 + (memberId.low >>> 0);
  return id === 0 ? 1 : id;
}

// Context layout: u32 high, u32 low (id), u8 isLearner, u16 count, count x (u16 length, utf8 url)
export function encodeMemberContext(m: MemberContext): Uint8Array {
  const urls = m.peerUrls.map((u) => Buffer.from(u, 'utf8'));
  const out = Buffer.allocUnsafe(8 + 1 + 2 + urls.reduce((n, u) => n + 2 + u.length, 0));
  out.writeUInt32BE(m.id.high >>> 0, 0);
  out.writeUInt32BE(m.id.low >>> 0, 4);
  out[8] = m.isLearner ? 1 : 0;
  out.writeUInt16BE(urls.length, 9);
  let at = 11;
  for (const u of urls) {
    assert(u.length <= 0xffff, 'peer url length');
    out.writeUInt16BE(u.length, at);
    u.copy(out, at + 2);
    at += 2 + u.length;
  }
  return out;
}

export function decodeMemberContext(data: Uint8Array): MemberContext {
  const b = Buffer.from(data.buffer, data.byteOffset, data.length);
  assert(b.length >= 11, 'member context length');
  const id = Long.fromBits(b.readUInt32BE(4), b.readUInt32BE(0), true);
  const isLearner = b[8] === 1;
  const n = b.readUInt16BE(9);
  const peerUrls: string[] = [];
  let at = 11;
  for (let i = 0; i < n; i++) {
    const len = b.readUInt16BE(at);
    peerUrls.push(b.toString('utf8', at + 2, at + 2 + len));
    at += 2 + len;
  }
  assert(at === b.length, 'member context trailing bytes');
  return { id, peerUrls, isLearner };
}

export class Membership {
  /** By id (decimal string of the unsigned 64-bit id). */
  private readonly members = new Map<string, Member>();
  private readonly removed = new Set<string>();

  static empty(): Membership {
    return new Membership();
  }

  get size(): number {
    return this.members.size;
  }

  /** Members in id order (etcd sorts MemberList by id). */
  list(): Member[] {
    return [...this.members.values()].sort((a, b) => a.id.compare(b.id));
  }

  get(id: Long): Member | undefined {
    return this.members.get(id.toString());
  }

  byRaftId(raftId: number): Member | undefined {
    for (const m of this.members.values()) if (raftIdOf(m.id) === raftId) return m;
    return undefined;
  }

  isRemoved(id: Long): boolean {
    return this.removed.has(id.toString());
  }

  /** Ids removed from the cluster (never reused). */
  removedIds(): Long[] {
    return [...this.removed].map((r) => Long.fromString(r, true));
  }

  /**
   * Applies a committed configuration change (the same one raft applies). Returns whether the
   * membership changed. An add of a removed id or a duplicate is ignored, as etcd's apply
   * ignores what its validation refused.
   */
  applyConfChange(cc: ConfChange): boolean {
    switch (cc.type) {
      case ConfChangeType.AddNode:
      case ConfChangeType.AddLearnerNode: {
        const ctx = decodeMemberContext(cc.context);
        assert(raftIdOf(ctx.id) === cc.nodeId, 'conf change context names another member');
        const key = ctx.id.toString();
        if (this.removed.has(key)) return false;
        const existing = this.members.get(key);
        if (existing !== undefined) {
          // Promotion of a learner (AddNode of a learner), or nothing.
          if (cc.type === ConfChangeType.AddNode && existing.isLearner) {
            existing.isLearner = false;
            return true;
          }
          return false;
        }
        this.members.set(key, {
          id: ctx.id, name: '', peerUrls: ctx.peerUrls.slice(), clientUrls: [],
          isLearner: cc.type === ConfChangeType.AddLearnerNode,
        });
        return true;
      }
      case ConfChangeType.RemoveNode: {
        const m = this.byRaftId(cc.nodeId);
        if (m === undefined) return false;
        this.members.delete(m.id.toString());
        this.removed.add(m.id.toString());
        return true;
      }
      case ConfChangeType.UpdateNode: {
        const ctx = decodeMemberContext(cc.context);
        const m = this.members.get(ctx.id.toString());
        if (m === undefined) return false;
        m.peerUrls = ctx.peerUrls.slice();
        return true;
      }
    }
    return false;
  }

  /** A member published its name and client URLs (etcd ClusterMemberAttrSet). */
  setAttributes(id: Long, name: string, clientUrls: string[]): boolean {
    const m = this.members.get(id.toString());
    if (m === undefined) return false;
    m.name = name;
    m.clientUrls = clientUrls.slice();
    return true;
  }

  // Layout: u32 members, per member: u32 high, u32 low, u8 isLearner, strings name, then
  // u16 n + n strings peer URLs, u16 n + n strings client URLs; then u32 removed, u32 high,
  // u32 low each. string = u16 length + utf8.
  encode(): Uint8Array {
    const parts: Buffer[] = [];
    const u32 = (v: number): void => {
      const b = Buffer.allocUnsafe(4);
      b.writeUInt32BE(v >>> 0, 0);
      parts.push(b);
    };
    const u16 = (v: number): void => {
      const b = Buffer.allocUnsafe(2);
      b.writeUInt16BE(v, 0);
      parts.push(b);
    };
    const str = (s: string): void => {
      const b = Buffer.from(s, 'utf8');
      u16(b.length);
      parts.push(b);
    };
    const members = this.list();
    u32(members.length);
    for (const m of members) {
      u32(m.id.high);
      u32(m.id.low);
      parts.push(Buffer.from([m.isLearner ? 1 : 0]));
      str(m.name);
      u16(m.peerUrls.length);
      for (const u of m.peerUrls) str(u);
      u16(m.clientUrls.length);
      for (const u of m.clientUrls) str(u);
    }
    const removed = [...this.removed].sort();
    u32(removed.length);
    for (const r of removed) {
      const id = Long.fromString(r, true);
      u32(id.high);
      u32(id.low);
    }
    return Buffer.concat(parts);
  }

  static decode(data: Uint8Array): Membership {
    const b = Buffer.from(data.buffer, data.byteOffset, data.length);
    let at = 0;
    const u32 = (): number => {
      const v = b.readUInt32BE(at);
      at += 4;
      return v;
    };
    const u16 = (): number => {
      const v = b.readUInt16BE(at);
      at += 2;
      return v;
    };
    const str = (): string => {
      const n = u16();
      const s = b.toString('utf8', at, at + n);
      at += n;
      return s;
    };
    const out = new Membership();
    for (let n = u32(); n > 0; n--) {
      const high = u32();
      const id = Long.fromBits(u32(), high, true);
      const isLearner = b[at++] === 1;
      const name = str();
      const peerUrls: string[] = [];
      for (let k = u16(); k > 0; k--) peerUrls.push(str());
      const clientUrls: string[] = [];
      for (let k = u16(); k > 0; k--) clientUrls.push(str());
      out.members.set(id.toString(), { id, name, peerUrls, clientUrls, isLearner });
    }
    for (let n = u32(); n > 0; n--) {
      const high = u32();
      out.removed.add(Long.fromBits(u32(), high, true).toString());
    }
    assert(at === b.length, 'membership trailing bytes');
    return out;
  }
}
