// Goal: the peer message codec returns exactly the Message it was given, for every message type
// and every field at its extremes, and refuses (never misreads, never asserts on) any byte
// string that is not an encoding. Method: round trips of hand-made and seeded random messages;
// every truncation and every single-byte change of encodings must decode to an error or to a
// message whose re-encoding equals the changed bytes (the layout is canonical).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Entry, EntryType, Message, MessageType, Snapshot, emptyBytes, newMessage,
} from '../../src/raft/types';
import { Prng } from '../../src/util/prng';
import {
  decodeMessage, encodeMessage, encodeMessageAlloc, errMessageMalformed, messageBytes, varintBytes,
} from '../../src/transport/message_codec';

const allTypes: MessageType[] = [
  MessageType.Prop, MessageType.App, MessageType.AppResp, MessageType.Vote, MessageType.VoteResp,
  MessageType.Snap, MessageType.Heartbeat, MessageType.HeartbeatResp, MessageType.TransferLeader,
  MessageType.TimeoutNow, MessageType.ReadIndex, MessageType.ReadIndexResp, MessageType.PreVote,
  MessageType.PreVoteResp,
];
const max = Number.MAX_SAFE_INTEGER;

function bytes(n: number, seed: number): Uint8Array {
  const p = new Prng(seed + 1);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = p.nextU32() & 0xff;
  return b;
}

function snapshot(index: number, term: number, dataBytes: number): Snapshot {
  return {
    metadata: { index, term, confState: { voters: [1, 2, max], learners: [4, 2 ** 40] } },
    data: bytes(dataBytes, index),
  };
}

function full(type: MessageType, v: number): Message {
  const m = newMessage(type, v === 0 ? 1 : v, v === 0 ? 2 : v, v);
  m.logTerm = v;
  m.index = v;
  m.commit = v;
  m.rejectHint = v;
  m.reject = v % 2 === 1;
  m.context = bytes(v === 0 ? 0 : 8, v % 1000);
  const entries: Entry[] = [];
  for (let i = 0; i < 3; i++) {
    entries.push({ term: v, index: v, type: i === 1 ? EntryType.ConfChange : EntryType.Normal,
      data: bytes(i * 100, i) });
  }
  m.entries = entries;
  if (type === MessageType.Snap) m.snapshot = snapshot(v, v, 300);
  return m;
}

function roundTrip(m: Message): Message {
  const buf = encodeMessageAlloc(m);
  assert.equal(buf.length, messageBytes(m));
  return decodeMessage(buf, 0, buf.length);
}

describe('message codec', () => {
  test('every message type round-trips, fields at 0, small, 2^32 and 2^53-1', () => {
    for (const type of allTypes) {
      for (const v of [0, 1, 127, 128, 300, 2 ** 31, 2 ** 32, 2 ** 32 + 1, max - 1, max]) {
        const m = full(type, v);
        assert.deepEqual(roundTrip(m), m, `type ${type} value ${v}`);
      }
    }
  });

  test('a message with no optional fields is small; the header comment\'s heartbeat is 19 bytes', () => {
    const hb = newMessage(MessageType.Heartbeat, 2, 1, 5);
    hb.commit = 10;
    hb.context = new Uint8Array(8);
    assert.equal(messageBytes(hb), 19);
    assert.deepEqual(Array.from(encodeMessageAlloc(hb).subarray(0, 11)),
      [8, 0, 2, 1, 5, 0, 0, 10, 0, 8, 0]);
    assert.equal(messageBytes(newMessage(MessageType.AppResp, 1, 2, 3)), 11);
  });

  test('large entries, many entries, empty snapshot data, empty conf state', () => {
    const m = newMessage(MessageType.App, 3, 1, 9);
    m.entries = [{ term: 9, index: 10, type: EntryType.Normal, data: bytes(2 * 1024 * 1024, 1) }];
    assert.deepEqual(roundTrip(m), m);
    m.entries = [];
    for (let i = 0; i < 5000; i++) m.entries.push({ term: 9, index: i, type: 0, data: emptyBytes });
    assert.deepEqual(roundTrip(m), m);
    const s = newMessage(MessageType.Snap, 3, 1, 9);
    s.snapshot = { metadata: { index: 0, term: 0, confState: { voters: [], learners: [] } },
      data: emptyBytes };
    assert.deepEqual(roundTrip(s), s);
  });

  test('varint sizes at the 7-bit boundaries', () => {
    assert.equal(varintBytes(0), 1);
    assert.equal(varintBytes(127), 1);
    assert.equal(varintBytes(128), 2);
    assert.equal(varintBytes(2 ** 49 - 1), 7);
    assert.equal(varintBytes(2 ** 49), 8);
    assert.equal(varintBytes(max), 8);
  });

  test('encodes at an offset inside a larger buffer; decodes a range of it', () => {
    const m = full(MessageType.App, 77);
    const size = messageBytes(m);
    const buf = new Uint8Array(size + 20).fill(0xee);
    assert.equal(encodeMessage(m, buf, 7, size), 7 + size);
    assert.equal(buf[6], 0xee);
    assert.equal(buf[7 + size], 0xee);
    assert.deepEqual(decodeMessage(buf, 7, 7 + size), m);
  });

  test('decoded byte fields are copies: changing the input afterwards changes nothing', () => {
    const m = full(MessageType.App, 5);
    const buf = encodeMessageAlloc(m);
    const d = decodeMessage(buf, 0, buf.length);
    buf.fill(0);
    assert.deepEqual(d, m);
    // All byte fields of one message share one copy of that message, not the input buffer.
    assert.notEqual(d.entries[1]!.data.buffer, buf.buffer);
    assert.equal(d.entries[1]!.data.buffer, d.context.buffer);
  });

  test('random messages round-trip (seeded)', () => {
    const p = new Prng(42);
    for (let i = 0; i < 2000; i++) {
      const type = allTypes[p.int(allTypes.length)]!;
      const big = (): number =>
        (p.int(4) === 0 ? p.nextU32() * 2 ** 21 + p.int(2 ** 21) : p.int(1000));
      const m = newMessage(type, 1 + p.int(7), 1 + p.int(7), big());
      m.logTerm = big();
      m.index = big();
      m.commit = big();
      m.rejectHint = big();
      m.reject = p.int(2) === 1;
      m.context = bytes(p.int(3) === 0 ? p.int(40) : 0, i);
      const n = p.int(4);
      for (let e = 0; e < n; e++) {
        m.entries.push({ term: big(), index: big(), type: p.int(2), data: bytes(p.int(64), e) });
      }
      if (type === MessageType.Snap || p.int(10) === 0) {
        m.snapshot = snapshot(big(), big(), p.int(50));
      }
      assert.deepEqual(roundTrip(m), m);
    }
  });

  test('every truncation is refused with errMessageMalformed', () => {
    for (const type of allTypes) {
      const buf = encodeMessageAlloc(full(type, 300));
      for (let end = 0; end < buf.length; end++) {
        assert.throws(() => decodeMessage(buf, 0, end), (e) => e === errMessageMalformed);
      }
    }
  });

  test('trailing bytes, unknown types, unknown flags, entry types and non-minimal varints are refused', () => {
    const buf = encodeMessageAlloc(full(MessageType.Vote, 5));
    const longer = new Uint8Array(buf.length + 1);
    longer.set(buf);
    const malformed = (b: Uint8Array): void => {
      assert.throws(() => decodeMessage(b, 0, b.length), (e) => e === errMessageMalformed);
    };
    malformed(longer);
    for (const t of [0, 1, 10, 11, 12, 19, 255]) {
      malformed(Uint8Array.from([t, 0, ...buf.subarray(2)]));
    }
    malformed(Uint8Array.from([buf[0]!, 4, ...buf.subarray(2)]));
    // to = 1 written as 0x81 0x00 (two bytes for a one-byte value).
    const hb = encodeMessageAlloc(newMessage(MessageType.Heartbeat, 1, 2, 3));
    malformed(Uint8Array.from([hb[0]!, hb[1]!, 0x81, 0x00, ...hb.subarray(3)]));
    // A varint above 2^53 - 1: nine 0xff bytes.
    malformed(Uint8Array.from([hb[0]!, hb[1]!, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
      ...hb.subarray(3)]));
    const app = newMessage(MessageType.App, 2, 1, 3);
    app.entries = [{ term: 1, index: 1, type: EntryType.Normal, data: emptyBytes }];
    const ab = encodeMessageAlloc(app);
    ab[ab.length - 2] = 2; // the entry's type byte
    malformed(ab);
  });

  test('every single-byte change decodes to an error or to a canonical other message', () => {
    const p = new Prng(7);
    for (const type of allTypes) {
      const buf = encodeMessageAlloc(full(type, 1000));
      for (let i = 0; i < buf.length; i++) {
        const changed = buf.slice();
        changed[i] = (changed[i]! + 1 + p.int(255)) & 0xff;
        let d: Message;
        try {
          d = decodeMessage(changed, 0, changed.length);
        } catch (err) {
          assert.equal(err, errMessageMalformed);
          continue;
        }
        assert.deepEqual(encodeMessageAlloc(d), changed);
      }
    }
  });

  test('a count larger than the bytes left is refused before allocating', () => {
    const m = newMessage(MessageType.App, 2, 1, 3);
    const buf = encodeMessageAlloc(m);
    // The last byte is entryCount = 0: claim 2^40 entries instead.
    const claim = Uint8Array.from([
      ...buf.subarray(0, buf.length - 1), 0x80, 0x80, 0x80, 0x80, 0x80, 0x20,
    ]);
    assert.throws(() => decodeMessage(claim, 0, claim.length), (e) => e === errMessageMalformed);
  });
});
