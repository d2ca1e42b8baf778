// A keep-alive stream is answered in the order of its requests, as etcd's one-at-a-time loop
// answers it, although renewals finish out of order: a lease with a checkpointed remaining TTL
// is renewed through the log (its checkpoint cleared, so that the renewal survives a restart)
// while an unknown lease is answered at once, and on a follower every renewal is forwarded.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { startConcord } from '../helpers/concord';
import { connect, num, openStream, unary } from '../helpers/grpc_client';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('keep-alive answers come in request order (a checkpointed lease, then an unknown one)', async (t) => {
  const h = await startConcord({ extraArgs: ['--experimental-lease-checkpoint-interval', '1s'] });
  t.after(() => h.stop());
  const lease = connect('etcdserverpb.Lease', h.endpoint);
  t.after(() => lease.close());
  const granted = await unary(lease, 'LeaseGrant', { ID: 0, TTL: 30 });
  await sleep(2500); // checkpointed: its next renewal clears the checkpoint through the log
  const ka = openStream(lease, 'LeaseKeepAlive');
  t.after(() => ka.call.cancel());
  ka.call.write({ ID: granted.ID });
  ka.call.write({ ID: 424242 });
  const first = await ka.reader.next(5000);
  const second = await ka.reader.next(5000);
  assert.deepEqual([String(first.ID), num(first.TTL)], [String(granted.ID), 30], 'the first request answered first');
  assert.deepEqual([String(second.ID), num(second.TTL)], ['424242', 0], 'then the unknown lease (TTL 0)');
});
