// The checks etcd's request decoder makes, with its error strings.
//
// etcd 3.4 decodes requests with gogo/protobuf generated code (etcdserverpb/rpc.pb.go
// Unmarshal, skipRpc); grpc-go answers a failure with INTERNAL "grpc: error unmarshalling
// request: " + the error. protobufjs is more lenient (a known field with the wrong wire type is
// skipped as unknown) and words its errors differently, so KV requests are walked here first, the
// way gogo walks them, and refused with gogo's message; only a request that passes is decoded by
// protobufjs. Values are not built here: the walk only moves over varints and lengths.
//
// Go semantics reproduced: tags and lengths are uint64/int64 varints of at most 10 bytes (an 11th
// byte is "integer overflow"), the field number is int32(tag >> 3), lengths are signed int64
// ("negative length"), an unknown field is skipped with skipRpc (groups nest by depth only).

/** Wire types. */
const VARINT = 0;
const FIXED64 = 1;
const BYTES = 2;
const START_GROUP = 3;
const END_GROUP = 4;
const FIXED32 = 5;

interface FieldSpec {
  /** The Go field name, as gogo's "wrong wireType" message gives it. */
  readonly goName: string;
  readonly wire: typeof VARINT | typeof BYTES;
  /** For embedded messages: their spec (checked recursively, as gogo's Unmarshal does). */
  message?: MessageSpec;
}

export interface MessageSpec {
  /** The Go type name, as gogo's "illegal tag" message gives it. */
  readonly name: string;
  readonly fields: ReadonlyMap<number, FieldSpec>;
}

function spec(name: string, fields: [number, string, typeof VARINT | typeof BYTES][]): MessageSpec & { fields: Map<number, FieldSpec> } {
  return { name, fields: new Map(fields.map(([n, goName, wire]) => [n, { goName, wire }])) };
}

// etcd 3.4 api/etcdserverpb/rpc.proto, field numbers and Go names.
export const RangeRequestSpec = spec('RangeRequest', [
  [1, 'Key', BYTES], [2, 'RangeEnd', BYTES], [3, 'Limit', VARINT], [4, 'Revision', VARINT],
  [5, 'SortOrder', VARINT], [6, 'SortTarget', VARINT], [7, 'Serializable', VARINT], [8, 'KeysOnly', VARINT],
  [9, 'CountOnly', VARINT], [10, 'MinModRevision', VARINT], [11, 'MaxModRevision', VARINT],
  [12, 'MinCreateRevision', VARINT], [13, 'MaxCreateRevision', VARINT],
]);
export const PutRequestSpec = spec('PutRequest', [
  [1, 'Key', BYTES], [2, 'Value', BYTES], [3, 'Lease', VARINT], [4, 'PrevKv', VARINT],
  [5, 'IgnoreValue', VARINT], [6, 'IgnoreLease', VARINT],
]);
export const DeleteRangeRequestSpec = spec('DeleteRangeRequest', [
  [1, 'Key', BYTES], [2, 'RangeEnd', BYTES], [3, 'PrevKv', VARINT],
]);
const CompareSpec = spec('Compare', [
  [1, 'Result', VARINT], [2, 'Target', VARINT], [3, 'Key', BYTES], [4, 'Version', VARINT],
  [5, 'CreateRevision', VARINT], [6, 'ModRevision', VARINT], [7, 'Value', BYTES], [8, 'Lease', VARINT],
  [64, 'RangeEnd', BYTES],
]);
const RequestOpSpec = spec('RequestOp', [
  [1, 'RequestRange', BYTES], [2, 'RequestPut', BYTES], [3, 'RequestDeleteRange', BYTES], [4, 'RequestTxn', BYTES],
]);
export const TxnRequestSpec = spec('TxnRequest', [[1, 'Compare', BYTES], [2, 'Success', BYTES], [3, 'Failure', BYTES]]);
export const CompactionRequestSpec = spec('CompactionRequest', [[1, 'Revision', VARINT], [2, 'Physical', VARINT]]);

RequestOpSpec.fields.get(1)!.message = RangeRequestSpec;
RequestOpSpec.fields.get(2)!.message = PutRequestSpec;
RequestOpSpec.fields.get(3)!.message = DeleteRangeRequestSpec;
RequestOpSpec.fields.get(4)!.message = TxnRequestSpec;
TxnRequestSpec.fields.get(1)!.message = CompareSpec;
TxnRequestSpec.fields.get(2)!.message = RequestOpSpec;
TxnRequestSpec.fields.get(3)!.message = RequestOpSpec;

// gogo's error values (rpc.pb.go and io.ErrUnexpectedEOF).
const errEof = 'unexpected EOF';
const errOverflow = 'proto: integer overflow';
const errInvalidLength = 'proto: negative length found during unmarshaling';
const errEndOfGroup = 'proto: unexpected end of group';

// The varint just read: `varNum` is exact unless it took more than 7 bytes (49 bits), in which
// case `varBig` holds the uint64 value (bits past 64 dropped, as Go's shifts drop them).
let varNum = 0;
let varBig: bigint | null = null;
/** Error of the last failed readVarint. */
let varErr = '';

/** Reads a varint at `i` (< end); returns the index after it, or -1 with varErr set. */
function readVarint(d: Uint8Array, i: number, end: number): number {
  let n = 0;
  let mul = 1;
  for (let k = 0; ; k++) {
    if (k >= 10) { // shift >= 64
      varErr = errOverflow;
      return -1;
    }
    if (i >= end) {
      varErr = errEof;
      return -1;
    }
    const b = d[i++]!;
    if (k < 7) {
      n += (b & 0x7f) * mul;
      mul *= 128;
    }
    if (b < 0x80) {
      if (k < 7) {
        varNum = n;
        varBig = null;
      } else {
        varBig = bigVarint(d, i - k - 1, k + 1);
        varNum = Number(varBig);
      }
      return i;
    }
  }
}

function bigVarint(d: Uint8Array, from: number, count: number): bigint {
  let v = 0n;
  for (let k = 0; k < count; k++) v |= BigInt(d[from + k]! & 0x7f) << BigInt(7 * k);
  return BigInt.asUintN(64, v);
}

/**
 * For a length just read at index `i`: the end index it gives, or -1 with varErr set (gogo:
 * "negative length" when the int64 length or the int64 end is negative, EOF past `end`).
 */
function lengthEnd(i: number, end: number): number {
  if (varBig === null) {
    const post = i + varNum;
    if (post > end) {
      varErr = errEof;
      return -1;
    }
    return post;
  }
  const len = BigInt.asIntN(64, varBig);
  if (len < 0n || BigInt.asIntN(64, BigInt(i) + len) < 0n) {
    varErr = errInvalidLength;
    return -1;
  }
  varErr = errEof; // a non-negative length of 2^49 or more is past any request
  return -1;
}

/**
 * gogo skipRpc over the field starting at `start`: the index after it, or -1 with varErr set.
 * Like gogo, a group is skipped by depth, whatever field numbers its tags carry.
 */
function skipField(d: Uint8Array, start: number, end: number): number {
  let i = start;
  let depth = 0;
  while (i < end) {
    i = readVarint(d, i, end);
    if (i < 0) return -1;
    const wireType = varBig === null ? varNum % 8 : Number(varBig & 7n);
    switch (wireType) {
      case VARINT:
        i = readVarint(d, i, end);
        if (i < 0) return -1;
        break;
      case FIXED64:
        i += 8;
        break;
      case BYTES: {
        i = readVarint(d, i, end);
        if (i < 0) return -1;
        if (varBig !== null) {
          const len = BigInt.asIntN(64, varBig);
          if (len < 0n || BigInt.asIntN(64, BigInt(i) + len) < 0n) {
            varErr = errInvalidLength;
            return -1;
          }
          varErr = errEof;
          return -1;
        }
        i += varNum;
        break;
      }
      case START_GROUP:
        depth++;
        break;
      case END_GROUP:
        if (depth === 0) {
          varErr = errEndOfGroup;
          return -1;
        }
        depth--;
        break;
      case FIXED32:
        i += 4;
        break;
      default:
        varErr = `proto: illegal wireType ${wireType}`;
        return -1;
    }
    if (depth === 0) {
      if (i > end) {
        varErr = errEof;
        return -1;
      }
      return i;
    }
  }
  varErr = errEof;
  return -1;
}

/**
 * Walks KV requests the way gogo's generated Unmarshal does (iteratively: a request may nest
 * txns as deep as its size allows, and gogo has no depth limit).
 *
 * After check():
 *  - `error` is gogo's error string when gogo would refuse the request, else null;
 *  - `irregular` is set when the request holds something protobufjs reads differently from gogo
 *    (an unknown group, whose end tag protobufjs matches against its start tag; a tag above 32
 *    bits, where protobufjs reads only the low 32 bits; a RequestOp with its oneof set twice,
 *    where gogo keeps the last message and protobufjs merges two of the same member); such
 *    requests are rewritten by canonical() before protobufjs decodes them;
 *  - `tooDeep` is set when a txn nests more than `txnLevelsMax` levels (see canonical()).
 */
export class WireChecker {
  error: string | null;
  irregular: boolean;
  tooDeep: boolean;
  // The enclosing messages of the one being walked (parallel arrays: no allocation per message):
  // their spec, where they end, and their txn nesting level (1 for the request's TxnRequest).
  private readonly specs: MessageSpec[];
  private readonly ends: number[];
  private readonly levels: number[];
  /** Whether the RequestOp at that level already had its oneof set. */
  private readonly oneofs: boolean[];

  constructor() {
    this.error = null;
    this.irregular = false;
    this.tooDeep = false;
    this.specs = [];
    this.ends = [];
    this.levels = [];
    this.oneofs = [];
  }

  /** True when gogo accepts d as a `spec`. */
  check(spec: MessageSpec, d: Uint8Array, txnLevelsMax: number): boolean {
    this.error = null;
    this.irregular = false;
    this.tooDeep = false;
    const { specs, ends, levels, oneofs } = this;
    let depth = 0; // enclosing messages
    let msg = spec;
    let end = d.length;
    let txnLevel = spec === TxnRequestSpec ? 1 : 0;
    let oneofSet = false;
    let i = 0;
    for (;;) {
      if (i >= end) {
        if (depth === 0) return true;
        i = end;
        depth--;
        msg = specs[depth]!;
        end = ends[depth]!;
        txnLevel = levels[depth]!;
        oneofSet = oneofs[depth]!;
        continue;
      }
      const pre = i;
      i = readVarint(d, i, end);
      if (i < 0) return this.fail(varErr);
      let fieldNum: number;
      let wireType: number;
      if (varBig === null) {
        fieldNum = Math.floor(varNum / 8) | 0; // int32(wire >> 3)
        wireType = varNum % 8;
        if (varNum >= 0x100000000) this.irregular = true;
      } else {
        fieldNum = Number(BigInt.asIntN(32, varBig >> 3n));
        wireType = Number(varBig & 7n);
        this.irregular = true;
      }
      if (wireType === END_GROUP) return this.fail(`proto: ${msg.name}: wiretype end group for non-group`);
      if (fieldNum <= 0) {
        const wire = varBig === null ? String(varNum) : varBig.toString();
        return this.fail(`proto: ${msg.name}: illegal tag ${fieldNum} (wire type ${wire})`);
      }
      const field = msg.fields.get(fieldNum);
      if (field === undefined) {
        if (wireType === START_GROUP) this.irregular = true;
        i = skipField(d, pre, end);
        if (i < 0) return this.fail(varErr);
        continue;
      }
      if (wireType !== field.wire) return this.fail(`proto: wrong wireType = ${wireType} for field ${field.goName}`);
      i = readVarint(d, i, end);
      if (i < 0) return this.fail(varErr);
      if (field.wire === VARINT) continue;
      const post = lengthEnd(i, end);
      if (post < 0) return this.fail(varErr);
      if (field.message === undefined) {
        i = post;
        continue;
      }
      if (msg === RequestOpSpec) { // every field of RequestOp is a member of its oneof
        if (oneofSet) this.irregular = true;
        oneofSet = true;
      }
      specs[depth] = msg;
      ends[depth] = end;
      levels[depth] = txnLevel;
      oneofs[depth] = oneofSet;
      oneofSet = false;
      depth++;
      msg = field.message;
      end = post;
      if (msg === TxnRequestSpec && ++txnLevel > txnLevelsMax) this.tooDeep = true;
    }
  }

  private fail(err: string): false {
    this.error = err;
    return false;
  }
}

/**
 * Rewrites a request that check() accepted into the form protobufjs reads as gogo does: known
 * fields only (etcd ignores unknown ones), with canonical tags, a RequestOp with only the last
 * of its oneof members; a txn nested deeper than
 * `txnLevelsMax` levels becomes an empty txn. That cut changes no answer when
 * txnLevelsMax >= --max-txn-ops + 1: each level of a txn takes at least one operation from what
 * its nested txns may have (etcd v3rpc/key.go checkTxnRequest), so level txnOpsMax + 2 is always
 * refused with "too many operations" (or an earlier check fails), whatever it holds.
 */
export function canonical(spec: MessageSpec, d: Uint8Array, txnLevelsMax: number): Buffer {
  const parts: Uint8Array[] = [];
  writeCanonical(spec, d, 0, d.length, spec === TxnRequestSpec ? 1 : 0, txnLevelsMax, parts);
  return Buffer.concat(parts);
}

function writeCanonical(msg: MessageSpec, d: Uint8Array, start: number, end: number, txnLevel: number,
  txnLevelsMax: number, out: Uint8Array[]): void {
  let i = start;
  while (i < end) {
    const pre = i;
    i = readVarint(d, i, end);
    const fieldNum = varBig === null ? Math.floor(varNum / 8) | 0 : Number(BigInt.asIntN(32, varBig >> 3n));
    const field = msg.fields.get(fieldNum);
    if (field === undefined) {
      i = skipField(d, pre, end);
      continue;
    }
    const tag = encodeVarint(fieldNum * 8 + field.wire);
    const valueStart = i;
    i = readVarint(d, i, end);
    if (field.wire === VARINT) {
      out.push(tag, d.subarray(valueStart, i));
      continue;
    }
    const post = i + varNum; // checked: a length below 2^49
    const nested = field.message;
    if (nested === undefined) {
      out.push(tag, d.subarray(valueStart, post));
    } else {
      const level = nested === TxnRequestSpec ? txnLevel + 1 : txnLevel;
      const inner: Uint8Array[] = [];
      if (level <= txnLevelsMax) writeCanonical(nested, d, i, post, level, txnLevelsMax, inner);
      const body = Buffer.concat(inner);
      if (msg === RequestOpSpec) out.length = 0; // gogo: the last member set is the op
      out.push(tag, encodeVarint(body.length), body);
    }
    i = post;
  }
}

function encodeVarint(v: number): Uint8Array {
  const out: number[] = [];
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Uint8Array.from(out);
}
