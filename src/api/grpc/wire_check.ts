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
// util/protobuf_wire.ts's WireCursor reads that way; this file adds gogo's messages and the specs.
import { assert } from '../../util/assert';
import {
  fieldTag, varintBytes, WireCursor, WireError, WireType,
} from '../../util/protobuf_wire';

const VARINT = WireType.Varint;
const BYTES = WireType.Bytes;

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

// protobufjs refuses a tag or a length of more than 5 bytes ("invalid tag encoding", "invalid
// length encoding"; gogo reads up to 10) and a tag of 2^31 or more (its 5th byte above 7), where
// gogo reads int32(tag >> 3) of any uint64 tag: such requests are irregular and rewritten.
const protobufjsVarintBytesMax = 5;
const protobufjsTagMin = 2 ** 31;

// gogo's error values (rpc.pb.go and io.ErrUnexpectedEOF), by the cursor's error.
function wireErrorString(c: WireCursor): string {
  switch (c.error) {
    case WireError.Truncated: return 'unexpected EOF';
    case WireError.Overflow: return 'proto: integer overflow';
    case WireError.NegativeLength: return 'proto: negative length found during unmarshaling';
    case WireError.EndOfGroup: return 'proto: unexpected end of group';
    case WireError.IllegalWireType: return `proto: illegal wireType ${c.wireType}`;
    case WireError.None: break;
  }
  assert(false, 'wire_check: a failed read without an error');
}

/**
 * Walks KV requests the way gogo's generated Unmarshal does (iteratively: a request may nest
 * txns as deep as its size allows, and gogo has no depth limit).
 *
 * After check():
 *  - `error` is gogo's error string when gogo would refuse the request, else null;
 *  - `irregular` is set when the request holds something protobufjs reads differently from gogo
 *    (an unknown group, whose end tag protobufjs matches against its start tag; a tag of 2^31
 *    or more, or a tag or length written in more than 5 bytes, which protobufjs refuses; a
 *    RequestOp with its oneof set twice, where gogo keeps the last message and protobufjs merges
 *    two of the same member); such requests are rewritten by canonical() before protobufjs
 *    decodes them;
 *  - `tooDeep` is set when a txn nests more than `txnLevelsMax` levels (see canonical()).
 */
export class WireChecker {
  error: string | null;
  irregular: boolean;
  tooDeep: boolean;
  private readonly cursor: WireCursor;
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
    this.cursor = new WireCursor();
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
    const c = this.cursor.reset(d, 0, d.length);
    let depth = 0; // enclosing messages
    let msg = spec;
    let txnLevel = spec === TxnRequestSpec ? 1 : 0;
    let oneofSet = false;
    for (;;) {
      if (c.pos >= c.end) {
        if (depth === 0) return true;
        c.pos = c.end;
        depth--;
        msg = specs[depth]!;
        c.end = ends[depth]!;
        txnLevel = levels[depth]!;
        oneofSet = oneofs[depth]!;
        continue;
      }
      if (!c.readTag()) return this.fail(wireErrorString(c));
      const fieldNum = c.fieldNumber;
      const wireType = c.wireType;
      if (c.pos - c.start > protobufjsVarintBytesMax || c.value >= protobufjsTagMin) this.irregular = true;
      if (wireType === WireType.EndGroup) return this.fail(`proto: ${msg.name}: wiretype end group for non-group`);
      if (fieldNum <= 0) {
        const wire = Number.isSafeInteger(c.value) ? String(c.value) : c.uint64().toString();
        return this.fail(`proto: ${msg.name}: illegal tag ${fieldNum} (wire type ${wire})`);
      }
      const field = msg.fields.get(fieldNum);
      if (field === undefined) {
        if (wireType === WireType.Bytes) { // skipField's checks, and the length's byte count
          if (!c.readLength()) return this.fail(wireErrorString(c));
          if (c.pos - c.start > protobufjsVarintBytesMax) this.irregular = true;
          c.pos += c.value;
          continue;
        }
        if (wireType === WireType.StartGroup) this.irregular = true;
        if (!c.skipField(wireType)) return this.fail(wireErrorString(c));
        continue;
      }
      if (wireType !== field.wire) return this.fail(`proto: wrong wireType = ${wireType} for field ${field.goName}`);
      if (field.wire === VARINT) {
        if (!c.readVarint()) return this.fail(wireErrorString(c));
        continue;
      }
      if (!c.readLength()) return this.fail(wireErrorString(c));
      if (c.pos - c.start > protobufjsVarintBytesMax) this.irregular = true;
      const post = c.pos + c.value;
      if (field.message === undefined) {
        c.pos = post;
        continue;
      }
      if (msg === RequestOpSpec) { // every field of RequestOp is a member of its oneof
        if (oneofSet) this.irregular = true;
        oneofSet = true;
      }
      specs[depth] = msg;
      ends[depth] = c.end;
      levels[depth] = txnLevel;
      oneofs[depth] = oneofSet;
      oneofSet = false;
      depth++;
      msg = field.message;
      c.end = post;
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
 * fields only (etcd ignores unknown ones), with canonical tags and lengths, a RequestOp with only the last
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

/** Rare (irregular requests only), so a cursor per nested message is fine. */
function writeCanonical(msg: MessageSpec, d: Uint8Array, start: number, end: number, txnLevel: number,
  txnLevelsMax: number, out: Uint8Array[]): void {
  const c = new WireCursor(d, start, end);
  while (c.pos < end) {
    assert(c.readTag(), 'canonical: a request check() refused');
    const field = msg.fields.get(c.fieldNumber);
    if (field === undefined) {
      assert(c.skipField(c.wireType), 'canonical: a request check() refused');
      continue;
    }
    const tag = varintBytes(fieldTag(c.fieldNumber, field.wire));
    const valueStart = c.pos;
    if (field.wire === VARINT) {
      assert(c.readVarint(), 'canonical: a request check() refused');
      out.push(tag, d.subarray(valueStart, c.pos));
      continue;
    }
    assert(c.readLength(), 'canonical: a request check() refused');
    const post = c.pos + c.value;
    const nested = field.message;
    if (nested === undefined) {
      out.push(tag, varintBytes(c.value), d.subarray(c.pos, post));
    } else {
      const level = nested === TxnRequestSpec ? txnLevel + 1 : txnLevel;
      const inner: Uint8Array[] = [];
      if (level <= txnLevelsMax) writeCanonical(nested, d, c.pos, post, level, txnLevelsMax, inner);
      const body = Buffer.concat(inner);
      if (msg === RequestOpSpec) out.length = 0; // gogo: the last member set is the op
      out.push(tag, varintBytes(body.length), body);
    }
    c.pos = post;
  }
}
