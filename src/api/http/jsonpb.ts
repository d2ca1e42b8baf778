// Protobuf <-> JSON as etcd's grpc-gateway does it (golang/protobuf jsonpb with OrigName):
//  - out: proto field names, 64-bit integers as strings, bytes as base64, enums by name, fields
//    holding their default value left out;
//  - in: proto names or lowerCamelCase JSON names, integers as numbers or strings, enums by name
//    or number, bytes as base64.
// It works on protobufjs reflection types loaded from proto/ on first use: the gateway is not
// the gRPC hot path, and reflection gives the field kinds (enum, bytes, 64-bit) the static code
// does not expose.
import path from 'node:path';
import protobuf from 'protobufjs';
import Long from 'long';

let root: protobuf.Root | null = null;

const PROTO_FILES = [
  'mvccpb/kv.proto', 'authpb/auth.proto', 'etcdserverpb/rpc.proto', 'v3lockpb/v3lock.proto',
  'v3electionpb/v3election.proto', 'grpc/health/v1/health.proto',
];

/** dist/src/api/http -> repository root -> proto/ */
const PROTO_DIR = path.resolve(__dirname, '../../../../proto');

function reflectionRoot(): protobuf.Root {
  if (root !== null) return root;
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_DIR, target));
  r.loadSync(PROTO_FILES.map((f) => path.join(PROTO_DIR, f)), { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

export function lookupType(fullName: string): protobuf.Type {
  return reflectionRoot().lookupType(fullName);
}

export function lookupService(fullName: string): protobuf.Service {
  return reflectionRoot().lookupService(fullName);
}

const LONG_TYPES = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);

function isDefault(field: protobuf.Field, v: unknown): boolean {
  if (v === null || v === undefined) return true;
  if (typeof v === 'number') return v === 0;
  if (typeof v === 'boolean') return !v;
  if (typeof v === 'string') return v.length === 0;
  if (v instanceof Uint8Array || Array.isArray(v)) return v.length === 0; // absent bytes decode as []
  if (Long.isLong(v)) return (v as Long).isZero();
  void field;
  return false;
}

function scalarToJson(field: protobuf.Field, v: unknown): unknown {
  if (field.resolvedType instanceof protobuf.Enum) {
    const name = field.resolvedType.valuesById[v as number];
    return name ?? v;
  }
  if (LONG_TYPES.has(field.type)) {
    if (Long.isLong(v)) return (v as Long).toString();
    return String(v);
  }
  if (field.type === 'bytes') return Buffer.from(v as Uint8Array).toString('base64');
  return v;
}

/** A decoded reflection message as etcd's gateway writes it. */
export function messageToJson(type: protobuf.Type, msg: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    const v = msg[field.name];
    const inOneof = field.partOf !== null && field.partOf !== undefined;
    if (field.repeated) {
      if (!Array.isArray(v) || v.length === 0) continue;
      out[field.name] = field.resolvedType instanceof protobuf.Type
        ? v.map((x) => messageToJson(field.resolvedType as protobuf.Type, x as Record<string, unknown>))
        : v.map((x) => scalarToJson(field, x));
    } else if (field.resolvedType instanceof protobuf.Type) {
      if (v === null || v === undefined) continue;
      out[field.name] = messageToJson(field.resolvedType, v as Record<string, unknown>);
    } else {
      if (inOneof ? !Object.prototype.hasOwnProperty.call(msg, field.name) : isDefault(field, v)) continue;
      out[field.name] = scalarToJson(field, v);
    }
  }
  return out;
}

export function bytesToJson(typeName: string, bytes: Uint8Array): Record<string, unknown> {
  const type = lookupType(typeName);
  return messageToJson(type, type.decode(bytes) as unknown as Record<string, unknown>);
}

function camelToSnake(s: string): string {
  return s.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
}

export class JsonRequestError extends Error {}

/** Go's encoding/json nesting limit, which etcd's gateway inherits. */
const JSON_DEPTH_MAX = 10000;

/** Renames lowerCamelCase keys to the proto names, recursively, for Type.fromObject. */
function normalize(type: protobuf.Type, obj: unknown, where: string, depth = 0): Record<string, unknown> {
  if (depth > JSON_DEPTH_MAX) throw new JsonRequestError('exceeded max depth');
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new JsonRequestError(`json: cannot unmarshal ${Array.isArray(obj) ? 'array' : typeof obj} into Go value of type ${where}`);
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    const field = type.fields[k] ?? type.fields[camelToSnake(k)];
    if (field === undefined) throw new JsonRequestError(`unknown field "${k}" in ${type.fullName.replace(/^\./, '')}`);
    if (v === null) continue;
    if (field.resolvedType instanceof protobuf.Type) {
      const t = field.resolvedType;
      out[field.name] = field.repeated
        ? (Array.isArray(v) ? v.map((x) => normalize(t, x, t.fullName, depth + 1)) : (() => { throw new JsonRequestError(`json: cannot unmarshal into repeated field ${field.name}`); })())
        : normalize(t, v, t.fullName, depth + 1);
    } else {
      if (field.repeated) {
        if (!Array.isArray(v)) throw new JsonRequestError(`json: cannot unmarshal ${typeof v} into repeated field ${field.name}`);
        for (const x of v) checkScalar(field, x);
      } else {
        checkScalar(field, v);
      }
      out[field.name] = v;
    }
  }
  return out;
}

const INT_TYPES = new Set(['int32', 'uint32', 'sint32', 'fixed32', 'sfixed32', ...LONG_TYPES]);

/** What jsonpb accepts for a scalar: protobufjs' fromObject would coerce the rest silently. */
function checkScalar(field: protobuf.Field, v: unknown): void {
  const bad = (what: string): never => {
    throw new JsonRequestError(`json: cannot unmarshal ${what} into Go value of type ${field.type}`);
  };
  if (field.resolvedType instanceof protobuf.Enum) {
    if (typeof v === 'string' ? !(v in field.resolvedType.values) : !Number.isInteger(v)) bad(JSON.stringify(v));
    return;
  }
  if (INT_TYPES.has(field.type)) {
    if (typeof v === 'number' ? !Number.isInteger(v) : typeof v !== 'string' || !/^-?\d+$/.test(v)) bad(JSON.stringify(v));
    return;
  }
  switch (field.type) {
    case 'bool': if (typeof v !== 'boolean') bad(typeof v); return;
    case 'string': if (typeof v !== 'string') bad(typeof v); return;
    case 'bytes': if (typeof v !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v)) bad(typeof v === 'string' ? 'invalid base64' : typeof v); return;
    case 'double': case 'float': if (typeof v !== 'number' && !(typeof v === 'string' && !Number.isNaN(Number(v)))) bad(typeof v); return;
    default: return;
  }
}

/** JSON text -> protobuf bytes of `typeName` (reflection), ready for the static decoder. */
export function jsonToBytes(typeName: string, text: string): Uint8Array {
  const type = lookupType(typeName);
  let parsed: unknown;
  try {
    parsed = text.trim().length === 0 ? {} : JSON.parse(text);
  } catch (err) {
    throw new JsonRequestError((err as Error).message);
  }
  // Every step below recurses with the nesting of the request; a nesting deep enough to exhaust
  // the stack is the client's error, never the server's end.
  try {
    const obj = normalize(type, parsed, type.fullName);
    const msg = type.fromObject(obj);
    const problem = type.verify(msg);
    if (problem !== null) throw new JsonRequestError(problem);
    return type.encode(msg).finish();
  } catch (err) {
    if (err instanceof JsonRequestError) throw err;
    if (err instanceof RangeError) throw new JsonRequestError('exceeded max depth');
    throw new JsonRequestError((err as Error).message);
  }
}
