// The protobuf wire format by hand, written once: varint sizes and writes (53-bit numbers,
// 64-bit Long parts and bigints), field tags, and a cursor that walks the fields of a message
// without decoding it. Every place that reads or writes protobuf bytes itself uses it: the watch
// worker's WatchResponses (stored KeyValue bytes spliced in), the gogo-compatible request check
// (api/grpc/wire_check.ts), the event ring's key lookup, the storage worker's RangeResponse
// splicing (workers/storage_core.ts) and the perf load generators.
// protobufjs stays the codec for everything that is not on a hot path.
//
// Varint (https://protobuf.dev/programming-guides/encoding/#varints): 7 bits per byte, low group
// first, the high bit set on every byte but the last. A uint64 takes at most 10 bytes; a negative
// int32/int64 is written as its 64-bit two's complement, always 10 bytes.
//
//   300 = 0b10_0101100  ->  ac 02        (0x2c | 0x80, then 300 >> 7 = 2)
//   -1                  ->  ff ff ff ff ff ff ff ff ff 01
//
// Reading follows Go's generated decoders, as etcd 3.4 runs them (gogo/protobuf, rpc.pb.go):
// a varint has at most 10 bytes (an 11th is "integer overflow", checked before the end of the
// input); bits past 64 in the 10th byte are dropped, as Go's `uint64(b&0x7F) << 63` drops them
// (google.golang.org/protobuf's protowire refuses them instead: etcd 3.4 does not run it).
import { assert } from './assert';

export const enum WireType {
  Varint = 0,
  Fixed64 = 1,
  /** Length-delimited: bytes, strings, embedded messages, packed repeated fields. */
  Bytes = 2,
  StartGroup = 3,
  EndGroup = 4,
  Fixed32 = 5,
}

/** The most bytes a varint takes (a 64-bit value). */
export const varintBytesMax = 10;
/** protobuf field numbers are 1 .. 2^29 - 1. */
export const fieldNumberMax = 2 ** 29 - 1;

/** The tag of a field: (field number << 3) | wire type, itself written as a varint. */
export function fieldTag(fieldNumber: number, wireType: WireType): number {
  assert(Number.isInteger(fieldNumber), 'field number is not an integer');
  assert(fieldNumber >= 1 && fieldNumber <= fieldNumberMax, 'field number out of range');
  return fieldNumber * 8 + wireType;
}

// ---- sizes and writes ---------------------------------------------------------------------------

/**
 * Bytes of `v` as a varint. `v` is a safe integer; a negative one is an int64 (10 bytes). The
 * branches compare against powers of 128 instead of dividing in a loop: this runs several times
 * per watch event and per KeyValue of a RangeResponse.
 */
export function varintSize(v: number): number {
  if (v >>> 0 === v) {
    return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;
  }
  assert(Number.isSafeInteger(v), 'varint value is not a safe integer');
  if (v < 0) return varintBytesMax;
  return v < 2 ** 35 ? 5 : v < 2 ** 42 ? 6 : v < 2 ** 49 ? 7 : 8;
}

/**
 * Writes `v` (a safe integer; negative: as an int64) as a varint at buf[pos]; returns the
 * position after it. The caller has made room (varintSize).
 */
export function writeVarint(buf: Uint8Array, pos: number, v: number): number {
  if (v >>> 0 === v) { // the common case: 32-bit shifts, no division
    while (v > 0x7f) {
      buf[pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[pos++] = v;
    return pos;
  }
  assert(Number.isSafeInteger(v), 'varint value is not a safe integer');
  // Both halves exact: ToUint32 is arithmetic modulo 2^32 (two's complement for a negative v),
  // and a division by 2^32 is exact in binary floating point.
  return writeVarint64(buf, pos, Math.floor(v / 0x100000000), v >>> 0);
}

/** Bytes of the 64-bit value (high, low) as a varint; either half may be signed or unsigned. */
export function varintSize64(high: number, low: number): number {
  high >>>= 0;
  if (high === 0) return varintSize(low >>> 0);
  // 32 + bits of high, 7 per byte: high < 2^3 fits 5 bytes, < 2^10 6, ... < 2^31 9, else 10.
  return high < 0x8 ? 5 : high < 0x400 ? 6 : high < 0x20000 ? 7 : high < 0x1000000 ? 8
    : high < 0x80000000 ? 9 : varintBytesMax;
}

/** Writes the 64-bit value (high, low) as a varint at buf[pos]; returns the position after it. */
export function writeVarint64(buf: Uint8Array, pos: number, high: number, low: number): number {
  let hi = high >>> 0;
  let lo = low >>> 0;
  while (hi !== 0 || lo > 0x7f) {
    buf[pos++] = (lo & 0x7f) | 0x80;
    lo = ((lo >>> 7) | (hi << 25)) >>> 0;
    hi >>>= 7;
  }
  buf[pos++] = lo;
  return pos;
}

/** A 64-bit integer as two 32-bit halves: a `long` Long (signed or not) has this shape. */
export interface Int64Parts {
  readonly high: number;
  readonly low: number;
}

export function varintSizeLong(v: Int64Parts): number {
  return varintSize64(v.high, v.low);
}

export function writeVarintLong(buf: Uint8Array, pos: number, v: Int64Parts): number {
  return writeVarint64(buf, pos, v.high, v.low);
}

const int64Min = -(2n ** 63n);
const uint64Max = 2n ** 64n - 1n;

/** Bytes of `v` (an int64 or a uint64) as a varint. */
export function varintSizeBigInt(v: bigint): number {
  assert(v >= int64Min && v <= uint64Max, 'varint bigint outside int64 and uint64');
  const u = BigInt.asUintN(64, v);
  return varintSize64(Number(u >> 32n), Number(u & 0xffffffffn));
}

/** Writes `v` (an int64 or a uint64) as a varint at buf[pos]; returns the position after it. */
export function writeVarintBigInt(buf: Uint8Array, pos: number, v: bigint): number {
  assert(v >= int64Min && v <= uint64Max, 'varint bigint outside int64 and uint64');
  const u = BigInt.asUintN(64, v);
  return writeVarint64(buf, pos, Number(u >> 32n), Number(u & 0xffffffffn));
}

/** `v` as a varint in a buffer of its own (set-up code: the bytes are spliced in later). */
export function varintBytes(v: number): Buffer {
  const out = Buffer.allocUnsafe(varintSize(v));
  const end = writeVarint(out, 0, v);
  assert(end === out.length, 'varint size');
  return out;
}

// ---- reading ------------------------------------------------------------------------------------

/** Why a WireCursor read failed; wire_check.ts maps each to gogo's error string. */
export const enum WireError {
  None = 0,
  /** The bytes end inside a varint or a field (Go: io.ErrUnexpectedEOF). */
  Truncated = 1,
  /** A varint of more than 10 bytes (gogo: "proto: integer overflow"). */
  Overflow = 2,
  /** A length negative as an int64, or one that overflows the position (gogo: "negative length"). */
  NegativeLength = 3,
  /** An end-group tag with no group open (gogo: "proto: unexpected end of group"). */
  EndOfGroup = 4,
  /** Wire type 6 or 7 (gogo: "proto: illegal wireType N"); the type is in `wireType`. */
  IllegalWireType = 5,
}

const emptyBytes = new Uint8Array(0);

/**
 * Walks the fields of an encoded message in buf[pos, end) without decoding it. One cursor is
 * reused for message after message (reset()); nothing is allocated per field.
 *
 * Two ways to read:
 *  - readVarint() / readTag() / readLength() / skipField() return false on malformed input with
 *    `error` set, never throw: for bytes from a client (wire_check.ts).
 *  - varint() / length() / skip() assert instead: for bytes this process or the server under
 *    test wrote (the event ring, the perf load generators), where malformed bytes are a bug.
 *
 * Invariant: start <= pos, and after a successful read pos <= end.
 */
export class WireCursor {
  buf: Uint8Array;
  pos: number;
  /** Where the message ends (exclusive); nested messages move it (save and restore it). */
  end: number;
  /**
   * The last varint read, as a uint64: exact when it is a safe integer, otherwise rounded to a
   * double (and then always >= 2^53, so Number.isSafeInteger tells which); uint64()/int64() give
   * it exactly. Lengths and tags that matter are far below 2^53.
   */
  value: number;
  /** Where the last varint read begins (uint64() reads it again from there). */
  start: number;
  /** Field number and wire type of the last tag read (readTag), as Go computes them. */
  fieldNumber: number;
  wireType: number;
  /** Why the last failed read failed. */
  error: WireError;

  constructor(buf: Uint8Array = emptyBytes, pos = 0, end = buf.length) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
    this.value = 0;
    this.start = pos;
    this.fieldNumber = 0;
    this.wireType = 0;
    this.error = WireError.None;
  }

  /** Points the cursor at buf[pos, end). */
  reset(buf: Uint8Array, pos = 0, end = buf.length): this {
    assert(pos >= 0 && pos <= end && end <= buf.length, 'cursor range outside the buffer');
    this.buf = buf;
    this.pos = pos;
    this.end = end;
    this.start = pos;
    this.error = WireError.None;
    return this;
  }

  /** Reads a varint into `value`; false with `error` set (Truncated, Overflow) if malformed. */
  readVarint(): boolean {
    const pos = this.pos;
    this.start = pos;
    if (pos < this.end) {
      const b = this.buf[pos]!;
      if (b < 0x80) { // one byte: tags, small lengths and booleans
        this.value = b;
        this.pos = pos + 1;
        return true;
      }
    }
    return this.readVarintLong();
  }

  private readVarintLong(): boolean {
    const buf = this.buf;
    const end = this.end;
    let pos = this.pos;
    let v = 0;
    let mul = 1;
    for (let k = 0; ; k++) {
      if (k === varintBytesMax) return this.fail(WireError.Overflow); // Go: shift >= 64
      if (pos >= end) return this.fail(WireError.Truncated);
      const b = buf[pos++]!;
      // The 10th byte holds bit 63 only; Go's shift drops the rest.
      v += (k === varintBytesMax - 1 ? b & 1 : b & 0x7f) * mul;
      mul *= 128;
      if (b < 0x80) {
        this.value = v;
        this.pos = pos;
        return true;
      }
    }
  }

  /** The last varint read, exactly, as a uint64 (bits past 64 dropped, as Go drops them). */
  uint64(): bigint {
    let v = 0n;
    for (let k = 0, i = this.start; i < this.pos; k++, i++) {
      v |= BigInt(this.buf[i]! & 0x7f) << BigInt(7 * k);
    }
    return BigInt.asUintN(64, v);
  }

  /** The last varint read, exactly, as an int64 (Go's int64(wire)). */
  int64(): bigint {
    return BigInt.asIntN(64, this.uint64());
  }

  /**
   * Reads a tag: `value` is the whole tag, `fieldNumber` = int32(tag >> 3) and `wireType` =
   * tag & 7, as gogo computes them (a tag of 2^32 or more keeps only 32 bits of field number).
   */
  readTag(): boolean {
    if (!this.readVarint()) return false;
    const v = this.value;
    if (v < 0x80) {
      this.fieldNumber = v >>> 3;
      this.wireType = v & 7;
    } else {
      this.fieldNumber = Number.isSafeInteger(v) ? Math.floor(v / 8) | 0
        : Number(BigInt.asIntN(32, this.uint64() >> 3n));
      this.wireType = this.buf[this.start]! & 7; // the low bits are in the first byte
    }
    return true;
  }

  /**
   * Reads the length of a length-delimited field into `value` and checks that many bytes follow
   * before `end`. Go reads it as an int64: negative, or overflowing the position, is
   * NegativeLength; past the end is Truncated.
   */
  readLength(): boolean {
    if (!this.readVarint()) return false;
    const n = this.value;
    if (Number.isSafeInteger(n)) {
      return this.pos + n <= this.end ? true : this.fail(WireError.Truncated);
    }
    return this.fail(this.lengthTooLong());
  }

  /** The error for a length of 2^53 or more: which one Go reports depends on its int64 sign. */
  private lengthTooLong(): WireError {
    const n = this.int64();
    if (n < 0n || BigInt.asIntN(64, BigInt(this.pos) + n) < 0n) return WireError.NegativeLength;
    return WireError.Truncated; // non-negative and far past any message
  }

  /**
   * Skips the value of a field whose tag (of `wireType`) was just read, as gogo's generated
   * skip function (skipRpc) does: a group is skipped by depth, whatever field numbers its tags
   * carry. False with `error` set if malformed.
   */
  skipField(wireType: number): boolean {
    let depth = 0;
    for (;;) {
      switch (wireType) {
        case WireType.Varint:
          if (!this.readVarint()) return false;
          break;
        case WireType.Fixed64:
          this.pos += 8;
          break;
        case WireType.Bytes:
          if (!this.readVarint()) return false;
          if (!Number.isSafeInteger(this.value)) return this.fail(this.lengthTooLong());
          this.pos += this.value;
          break;
        case WireType.StartGroup:
          depth++;
          break;
        case WireType.EndGroup:
          if (depth === 0) return this.fail(WireError.EndOfGroup);
          depth--;
          break;
        case WireType.Fixed32:
          this.pos += 4;
          break;
        default:
          this.wireType = wireType;
          return this.fail(WireError.IllegalWireType);
      }
      if (depth === 0) return this.pos <= this.end ? true : this.fail(WireError.Truncated);
      // Inside a group: the next tag (Go's loop: `for iNdEx < l`).
      if (this.pos >= this.end) return this.fail(WireError.Truncated);
      if (!this.readVarint()) return false;
      wireType = this.buf[this.start]! & 7;
    }
  }

  // ---- for trusted bytes: a malformed message is a bug ----

  /** A varint (exact below 2^53). */
  varint(): number {
    assert(this.readVarint(), 'malformed varint');
    return this.value;
  }

  /** The length of a length-delimited field; that many bytes follow at `pos`. */
  length(): number {
    assert(this.readLength(), 'malformed length');
    return this.value;
  }

  /** Skips the value of a field whose tag (of `wireType`) was just read. */
  skip(wireType: number): void {
    assert(this.skipField(wireType), 'malformed field');
  }

  private fail(error: WireError): false {
    this.error = error;
    return false;
  }
}
