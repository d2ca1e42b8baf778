// The cluster's alarms: replicated state, one AlarmMember (member id, alarm type) each, changed
// only by applied AlarmRequests (etcd: etcdserver/api/v3alarm/alarms.go AlarmStore). The storage
// worker owns the applied copy and writes it to the meta table in the same LMDB transaction as
// the rest of an entry's effects, so after a crash the alarms are those of the persisted applied
// index; the main thread keeps a copy it learns from Applied messages (as for leases).
//
// Encoding (meta record `alarm`, Applied's alarm section, WorkerReady.alarms):
//   u32 count | count x (u32 memberIdHigh, u32 memberIdLow, u8 alarmType)
// never empty (an empty list is 4 bytes), so a zero length can mean "unchanged".
import Long from 'long';
import { etcdserverpb } from '../gen/proto';
import { assert } from '../util/assert';

export const AlarmType = etcdserverpb.AlarmType;
export const AlarmAction = etcdserverpb.AlarmRequest.AlarmAction;

/** At most this many alarms: one per (member, type); 3 types x a few members. Bounded so that a
 * bug proposing alarms in a loop shows as an assertion, not as growth. */
export const alarmsMax = 1024;

export interface AlarmMember {
  memberId: Long; // unsigned
  alarm: number; // etcdserverpb.AlarmType
}

/** Whether `t` is an alarm type of the etcd 3.4 API (NONE, NOSPACE, CORRUPT). */
export function isKnownAlarmType(t: number): boolean {
  return t === AlarmType.NONE || t === AlarmType.NOSPACE || t === AlarmType.CORRUPT;
}

/** Whether `a` is GET, ACTIVATE or DEACTIVATE. */
export function isKnownAlarmAction(a: number): boolean {
  return a === AlarmAction.GET || a === AlarmAction.ACTIVATE || a === AlarmAction.DEACTIVATE;
}

/**
 * etcd's AlarmMember.String(), as Status.errors lists it: "memberID:<decimal> alarm:NOSPACE ".
 * Protobuf text leaves zero fields out: member 0 (a CORRUPT alarm raised for the whole cluster,
 * server/corrupt.ts) is "alarm:CORRUPT " (etcd 3.4's endpoint status shows exactly that).
 */
export function alarmMemberString(m: AlarmMember): string {
  const name = etcdserverpb.AlarmType[m.alarm] ?? String(m.alarm);
  const member = m.memberId.isZero() ? '' : 'memberID:' + m.memberId.toString() + ' ';
  return member + 'alarm:' + name + ' ';
}

export class AlarmStore {
  // Invariant: sorted by (alarm, memberId), no duplicates, length <= alarmsMax.
  private members: AlarmMember[];

  constructor(members: AlarmMember[] = []) {
    this.members = members;
  }

  /** Adds the alarm; the new member, or null when it was already active (etcd: Activate). */
  activate(memberId: Long, alarm: number): AlarmMember | null {
    assert(isKnownAlarmType(alarm), 'alarm type');
    assert(alarm !== AlarmType.NONE, 'activate NONE');
    if (this.find(memberId, alarm) >= 0) return null;
    assert(this.members.length < alarmsMax, 'too many alarms');
    const m = { memberId: memberId.toUnsigned(), alarm };
    this.members.push(m);
    this.members.sort(compareMembers);
    return m;
  }

  /** Removes the alarm; the removed member, or null when it was not active. */
  deactivate(memberId: Long, alarm: number): AlarmMember | null {
    const at = this.find(memberId, alarm);
    if (at < 0) return null;
    const [m] = this.members.splice(at, 1);
    return m!;
  }

  /** The alarms of type `alarm`, every alarm for NONE (etcd: Get). */
  get(alarm: number): AlarmMember[] {
    if (alarm === AlarmType.NONE) return this.members.slice();
    return this.members.filter((m) => m.alarm === alarm);
  }

  has(alarm: number): boolean {
    for (const m of this.members) if (m.alarm === alarm) return true;
    return false;
  }

  get size(): number {
    return this.members.length;
  }

  private find(memberId: Long, alarm: number): number {
    const id = memberId.toUnsigned();
    return this.members.findIndex((m) => m.alarm === alarm && m.memberId.equals(id));
  }

  encode(): Uint8Array {
    const b = Buffer.alloc(4 + 9 * this.members.length);
    let pos = b.writeUInt32LE(this.members.length, 0);
    for (const m of this.members) {
      pos = b.writeUInt32LE(m.memberId.high >>> 0, pos);
      pos = b.writeUInt32LE(m.memberId.low >>> 0, pos);
      pos = b.writeUInt8(m.alarm, pos);
    }
    assert(pos === b.length, 'alarm encoding size');
    return new Uint8Array(b.buffer, b.byteOffset, b.length);
  }

  static decode(data: Uint8Array): AlarmStore {
    const b = Buffer.from(data.buffer, data.byteOffset, data.length);
    assert(b.length >= 4, 'alarm encoding too short');
    const count = b.readUInt32LE(0);
    assert(count <= alarmsMax, 'too many alarms');
    assert(b.length === 4 + 9 * count, 'alarm encoding size');
    const members: AlarmMember[] = [];
    let pos = 4;
    for (let i = 0; i < count; i++) {
      const high = b.readUInt32LE(pos);
      const low = b.readUInt32LE(pos + 4);
      const alarm = b.readUInt8(pos + 8);
      pos += 9;
      assert(isKnownAlarmType(alarm) && alarm !== AlarmType.NONE, 'stored alarm type');
      members.push({ memberId: Long.fromBits(low, high, true), alarm });
    }
    const store = new AlarmStore(members);
    return store;
  }
}

function compareMembers(a: AlarmMember, b: AlarmMember): number {
  if (a.alarm !== b.alarm) return a.alarm - b.alarm;
  return a.memberId.compare(b.memberId);
}
