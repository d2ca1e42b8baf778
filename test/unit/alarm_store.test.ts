// The alarm store (apply/alarm_store.ts) in isolation: activate/deactivate answer only what
// changed, GET of NONE lists every alarm in a fixed order, and the encoding the worker persists
// and posts round-trips 64-bit member ids exactly and is never empty.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Long from 'long';

import { AlarmStore, AlarmType, alarmMemberString } from '../../src/apply/alarm_store';

const big = Long.fromString('18446744073709551615', true); // all 64 bits
const small = Long.fromNumber(7, true);

test('activate and deactivate change a (member, type) once; get filters by type', () => {
  const s = new AlarmStore();
  assert.equal(s.encode().length, 4, 'an empty list still has its count');
  assert.deepEqual(s.activate(big, AlarmType.NOSPACE), { memberId: big, alarm: AlarmType.NOSPACE });
  assert.equal(s.activate(big, AlarmType.NOSPACE), null, 'already active');
  s.activate(small, AlarmType.NOSPACE);
  s.activate(small, AlarmType.CORRUPT);
  assert.deepEqual(s.get(AlarmType.NONE).map(alarmMemberString), [
    'memberID:7 alarm:NOSPACE ', 'memberID:18446744073709551615 alarm:NOSPACE ', 'memberID:7 alarm:CORRUPT ',
  ]);
  assert.equal(s.get(AlarmType.CORRUPT).length, 1);
  // Member 0 (the whole cluster): protobuf text leaves the zero field out, as etcd prints it.
  assert.equal(alarmMemberString({ memberId: Long.UZERO, alarm: AlarmType.CORRUPT }), 'alarm:CORRUPT ');
  assert.equal(s.has(AlarmType.NOSPACE), true);
  const back = AlarmStore.decode(s.encode());
  assert.deepEqual(back.get(AlarmType.NONE).map(alarmMemberString), s.get(AlarmType.NONE).map(alarmMemberString));
  assert.equal(s.deactivate(small, AlarmType.CORRUPT)!.alarm, AlarmType.CORRUPT);
  assert.equal(s.deactivate(small, AlarmType.CORRUPT), null, 'not active any more');
  s.deactivate(small, AlarmType.NOSPACE);
  s.deactivate(big, AlarmType.NOSPACE);
  assert.equal(s.has(AlarmType.NOSPACE), false);
  assert.equal(s.size, 0);
});
