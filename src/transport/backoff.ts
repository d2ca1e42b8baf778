// Redial delays: exponential in the number of consecutive failures, with jitter so that the
// members of a cluster that lost a peer at the same moment do not redial in lockstep.
import { assert } from '../util/assert';
import { Prng } from '../util/prng';

/**
 * Delay before redial number `failures` (1 = the first retry): "equal jitter" — half of
 * min(maxMs, minMs·2^(failures−1)) fixed, the other half uniform, so a retry never comes sooner
 * than half the exponential step and the spread grows with it. failures 1..: 100 ms base gives
 * [50, 100], [100, 200], [200, 400] … up to [maxMs/2, maxMs].
 */
export function backoffDelayMs(failures: number, minMs: number, maxMs: number, prng: Prng): number {
  assert(Number.isInteger(failures) && failures >= 1, 'backoff failures');
  assert(minMs > 0 && maxMs >= minMs, 'backoff bounds');
  const stepMs = Math.min(maxMs, minMs * 2 ** Math.min(failures - 1, 30));
  const halfMs = Math.floor(stepMs / 2);
  return stepMs - halfMs + prng.int(halfMs + 1);
}
