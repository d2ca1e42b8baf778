// Assertions for programmer errors (bugs). Always on, in production too: a broken invariant in a
// store that promises durability must stop the process before it writes something wrong.
// Expected operating conditions are ConcordErrors (util/errors.ts), never assertions.

export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AssertionError';
  }
}

export function assert(cond: unknown, msg = 'assertion failed'): asserts cond {
  if (!cond) throw new AssertionError(msg);
}
