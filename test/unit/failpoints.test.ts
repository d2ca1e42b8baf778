// CONCORD_FAILPOINTS parsing (util/failpoints.ts): names with optional values, a closed list of
// names (a misspelt one is refused, not ignored), and nothing set when the variable is empty.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FailpointError, parseFailpoints } from '../../src/util/failpoints';

test('CONCORD_FAILPOINTS: name[=value] items, comma-separated; unknown names refused', () => {
  assert.equal(parseFailpoints('').size, 0);
  assert.equal(parseFailpoints(' , ').size, 0);
  assert.deepEqual([...parseFailpoints('kvPutThrow')], [['kvPutThrow', '']]);
  assert.deepEqual([...parseFailpoints('kvPutThrow=boom')], [['kvPutThrow', 'boom']]);
  assert.deepEqual([...parseFailpoints(' kvPutThrow=a=b ')], [['kvPutThrow', 'a=b']]);
  assert.throws(() => parseFailpoints('kvPutThrow=x,kvPutThrwo=y'), /unknown failpoint "kvPutThrwo"/);
  const err = new FailpointError('kvPutThrow');
  assert.equal(err.failpoint, 'kvPutThrow');
  assert.equal(err.message, 'failpoint kvPutThrow triggered');
});
