// protobufjs refuses to decode or encode messages nested deeper than its recursion limit (100 by
// default), but etcd accepts txns nested as deep as --max-txn-ops lets them be
// (config/limits.ts protoDepthMax). Every thread that decodes or encodes requests and responses
// sets it once, before its first message.
import * as protobuf from 'protobufjs/minimal';

export function setProtoDepthMax(depth: number): void {
  protobuf.util.recursionLimit = depth;
  protobuf.Reader.recursionLimit = depth;
}
