// Test-only failpoints (etcd: gofail, which etcd's robustness tests use to panic or sleep at 26
// named code points): code points that misbehave on purpose when the environment names them, so
// that a test can drive a real server process into a path no client request reaches.
//
//   CONCORD_FAILPOINTS='kvPutThrow=boom'      one failpoint with a value
//   CONCORD_FAILPOINTS='a,b=value'            several, comma-separated; a bare name has value ''
//
// Parsed once, when this module is first loaded. When none is set (production), a code point
// costs one boolean test:   if (failpointsEnabled) putFailpoint(request);
// Names are a closed list: a misspelt name stops the process at start instead of testing nothing.
//
// The failpoints:
//   kvPutThrow=<key>   KV.Put of <key> (utf8) throws FailpointError in the handler, as a bug
//                      would (api/grpc/kv.ts; test/api/handler_errors.test.ts).
//   snapshotRestoreKill=<step>  `concord snapshot restore` kills itself (SIGKILL) at that step
//                      (storage/snapshot_file.ts RestoreStep; test/maintenance/restore_crash.test.ts).
//   snapshotRestoreInPlace  restore builds in the data dir itself instead of a temporary one
//                      (a planted bug: the kill tests must catch the half data dir it leaves).
//   snapshotRestoreDropRev=<rev>  restore drops that revision's records (a planted bug: the
//                      restore tests' comparison must catch it).

export const failpointNames = ['kvPutThrow', 'defragCrashAt', 'defragCopyDelayMs', 'defragSkipCatchUp', 'authHole',
  'snapshotRestoreKill', 'snapshotRestoreInPlace', 'snapshotRestoreDropRev'] as const;
export type FailpointName = (typeof failpointNames)[number];

/** Thrown where a failpoint says "throw": a stand-in for a bug, never an expected condition. */
export class FailpointError extends Error {
  readonly failpoint: FailpointName;
  constructor(failpoint: FailpointName) {
    super('failpoint ' + failpoint + ' triggered');
    this.name = 'FailpointError';
    this.failpoint = failpoint;
  }
}

function isFailpointName(s: string): s is FailpointName {
  return (failpointNames as readonly string[]).includes(s);
}

/** 'a,b=value' -> {a: '', b: 'value'}; throws on a name that is not a failpoint. */
export function parseFailpoints(spec: string): Map<FailpointName, string> {
  const out = new Map<FailpointName, string>();
  for (const item of spec.split(',')) {
    const s = item.trim();
    if (s === '') continue;
    const eq = s.indexOf('=');
    const name = eq < 0 ? s : s.slice(0, eq);
    if (!isFailpointName(name)) {
      throw new Error(`CONCORD_FAILPOINTS: unknown failpoint "${name}" (known: ${failpointNames.join(', ')})`);
    }
    out.set(name, eq < 0 ? '' : s.slice(eq + 1));
  }
  return out;
}

const active = parseFailpoints(process.env.CONCORD_FAILPOINTS ?? '');

/** True when any failpoint is set: the one test a hot path pays. */
export const failpointsEnabled: boolean = active.size > 0;

/** The failpoint's value ('' for a bare name), or undefined when it is not set. */
export function failpointValue(name: FailpointName): string | undefined {
  return active.get(name);
}

/** 'name=value' of every failpoint set (for the start-up log). */
export function activeFailpoints(): string[] {
  return [...active].map(([name, value]) => (value === '' ? name : name + '=' + value));
}
