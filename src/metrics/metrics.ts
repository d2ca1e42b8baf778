// /metrics: Prometheus text with etcd's family names for what operators alert on, concord's
// own families (prefix concord_), and Node's process metrics (prom-client's defaults).
//
// Nothing here runs on the request path: values are read at scrape time from the server, the
// storage worker's shared statistics (src/workers/stats.ts), the gRPC call counters and the peer
// transport's stats() (etcd's etcd_network_* peer families, peerMetricsRegister).
import client from 'prom-client';
import type { EtcdServer } from '../server/etcd_server';
import { StatSlot } from '../workers/stats';
import { GRPC_CODE_NAMES, type GrpcCallStats } from '../api/grpc/call_stats';
import { etcdClusterVersion, etcdVersion } from '../version';
import { WatchStat } from '../watch/protocol';
import { peerRttBucketsSeconds } from '../transport/peer';
import type { TransportStats } from '../transport/peer_transport';

interface Sample { value: number; labels?: Record<string, string | number>; metricName?: string }
type Family = { name: string; help: string; type: 'gauge' | 'counter' | 'histogram'; values: Sample[] };

/** A family computed at scrape time (prom-client accepts any object with name and get()). */
class Computed {
  constructor(readonly name: string, readonly help: string, readonly type: Family['type'], private readonly collect: () => Sample[]) {}
  get(): Family {
    return { name: this.name, help: this.help, type: this.type, values: this.collect() };
  }
}

export class Metrics {
  readonly registry = new client.Registry();
  readonly contentType = client.Registry.PROMETHEUS_CONTENT_TYPE;

  /** transportStats: the member's PeerTransport.stats(), null while it has none. */
  constructor(server: EtcdServer, grpcStats: GrpcCallStats,
    transportStats: () => TransportStats | null = () => null) {
    const s = server;
    const w = server.workerStats;
    const gauge = (name: string, help: string, f: () => number): void => this.add(new Computed(name, help, 'gauge', () => [{ value: f() }]));
    const counter = (name: string, help: string, f: () => number): void => this.add(new Computed(name, help, 'counter', () => [{ value: f() }]));
    const histogram = (name: string, help: string, slot: StatSlot.WalFsync | StatSlot.BackendCommit): void => {
      this.add(new Computed(name, help, 'histogram', () => {
        const h = w.histogram(slot);
        const out: Sample[] = h.buckets.map(([le, n]) => ({ metricName: `${name}_bucket`, labels: { le: le === Infinity ? '+Inf' : String(le) }, value: n }));
        out.push({ metricName: `${name}_sum`, value: h.sum }, { metricName: `${name}_count`, value: h.count });
        return out;
      }));
    };

    gauge('etcd_server_has_leader', 'Whether or not a leader exists. 1 is existence, 0 is not.', () => (s.hasLeader() ? 1 : 0));
    gauge('etcd_server_is_leader', 'Whether or not this member is a leader. 1 if is, 0 otherwise.', () => (s.isLeader() ? 1 : 0));
    counter('etcd_server_leader_changes_seen_total', 'The number of leader changes seen.', () => s.leaderChanges);
    gauge('etcd_server_proposals_committed_total', 'The total number of consensus proposals committed.', () => s.proposalCounts().committed);
    gauge('etcd_server_proposals_applied_total', 'The total number of consensus proposals applied.', () => s.proposalCounts().applied);
    gauge('etcd_server_proposals_pending', 'The current number of pending proposals to commit.', () => s.proposalCounts().pending);
    counter('etcd_server_proposals_failed_total', 'The total number of failed proposals seen.', () => s.proposalsFailed);
    counter('etcd_server_heartbeat_send_failures_total', 'The total number of leader heartbeat send failures (likely overloaded from slow disk).', () => s.heartbeatsLate);
    counter('etcd_server_slow_apply_total', 'The total number of slow apply requests (likely overloaded from slow disk).', () => w.get(StatSlot.SlowApplies));
    gauge('etcd_server_quota_backend_bytes', 'Current backend storage quota size in bytes.', () => s.cfg.quotaBackendBytes);
    this.add(new Computed('etcd_server_version', 'Which version is running. 1 for \'server_version\' label with current version.', 'gauge',
      () => [{ labels: { server_version: etcdVersion }, value: 1 }]));
    this.add(new Computed('etcd_cluster_version', 'Which version is running. 1 for \'cluster_version\' label with current cluster version', 'gauge',
      () => [{ labels: { cluster_version: etcdClusterVersion.split('.').slice(0, 2).join('.') }, value: 1 }]));
    this.add(new Computed('etcd_server_id', 'Server or member ID in hexadecimal format. 1 for \'server_id\' label with current ID.', 'gauge',
      () => [{ labels: { server_id: s.memberId.toString(16) }, value: 1 }]));

    histogram('etcd_disk_wal_fsync_duration_seconds', 'The latency distributions of fsync called by WAL.', StatSlot.WalFsync);
    histogram('etcd_disk_backend_commit_duration_seconds', 'The latency distributions of commit called by backend.', StatSlot.BackendCommit);
    this.add(new Computed('etcd_disk_backend_defrag_duration_seconds', 'The latency distribution of backend defragmentation.', 'histogram', () => {
      const h = s.defragDurations;
      const out: Sample[] = h.bounds.map((le, i) => ({ metricName: 'etcd_disk_backend_defrag_duration_seconds_bucket', labels: { le: String(le) }, value: h.counts[i]! }));
      out.push({ metricName: 'etcd_disk_backend_defrag_duration_seconds_bucket', labels: { le: '+Inf' }, value: h.count });
      out.push({ metricName: 'etcd_disk_backend_defrag_duration_seconds_sum', value: h.sum }, { metricName: 'etcd_disk_backend_defrag_duration_seconds_count', value: h.count });
      return out;
    }));

    gauge('etcd_mvcc_db_total_size_in_bytes', 'Total size of the underlying database physically allocated in bytes.', () => s.dbSize);
    gauge('etcd_debugging_mvcc_db_total_size_in_bytes', 'Total size of the underlying database physically allocated in bytes.', () => s.dbSize);
    gauge('etcd_mvcc_db_total_size_in_use_in_bytes', 'Total size of the underlying database logically in use in bytes.', () => s.dbSizeInUse);
    gauge('etcd_debugging_mvcc_keys_total', 'Total number of keys.', () => w.get(StatSlot.KeysTotal));
    gauge('etcd_debugging_mvcc_current_revision', 'The current revision of store.', () => s.currentRev);
    gauge('etcd_debugging_mvcc_compact_revision', 'The revision of the last compaction in store.', () => Math.max(0, s.compactRev));
    counter('etcd_mvcc_put_total', 'Total number of puts seen by this member.', () => w.get(StatSlot.PutTotal));
    counter('etcd_mvcc_delete_total', 'Total number of deletes seen by this member.', () => w.get(StatSlot.DeleteTotal));
    counter('etcd_mvcc_range_total', 'Total number of ranges seen by this member.', () => w.get(StatSlot.RangeTotal));
    counter('etcd_mvcc_txn_total', 'Total number of txns seen by this member.', () => w.get(StatSlot.TxnTotal));

    const watch = (slot: WatchStat): number => s.watch.stat(slot);
    gauge('etcd_debugging_mvcc_watch_stream_total', 'Total number of watch streams.', () => s.watch.streamCount);
    gauge('etcd_debugging_mvcc_watcher_total', 'Total number of watchers.', () => watch(WatchStat.Watchers));
    gauge('etcd_debugging_mvcc_slow_watcher_total', 'Total number of unsynced slow watchers.', () => watch(WatchStat.Unsynced));
    counter('etcd_debugging_mvcc_events_total', 'Total number of events sent by this member.', () => watch(WatchStat.EventsSent));
    counter('concord_watch_responses_total', 'WatchResponses encoded by the watch worker.', () => watch(WatchStat.ResponsesSent));
    counter('concord_watch_victims_total', 'Times a synced watcher fell back to history because its stream had too many bytes unsent.', () => watch(WatchStat.Victims));
    counter('concord_watch_ring_gaps_total', 'Times the event ring was full and the watch worker caught up from LMDB.', () => watch(WatchStat.RingGaps));
    gauge('concord_watch_ring_occupancy_ratio', 'Fraction of the event ring (storage worker -> watch worker) in use.', () => watch(WatchStat.RingOccupancy));
    gauge('concord_watch_window_revisions', 'Revisions the watch worker holds in memory because LMDB has not committed them yet.', () => watch(WatchStat.WindowRevisions));

    const grpcLabels = (m: GrpcCallStats['methods'][number]) => ({ grpc_method: m.method, grpc_service: m.service, grpc_type: m.type });
    this.add(new Computed('grpc_server_started_total', 'Total number of RPCs started on the server.', 'counter',
      () => grpcStats.methods.filter((m) => m.started > 0).map((m) => ({ labels: grpcLabels(m), value: m.started }))));
    this.add(new Computed('grpc_server_handled_total', 'Total number of RPCs completed on the server, regardless of success or failure.', 'counter',
      () => grpcStats.methods.flatMap((m) => GRPC_CODE_NAMES.flatMap((code, i) => (m.handled[i]! > 0
        ? [{ labels: { grpc_code: code, ...grpcLabels(m) }, value: m.handled[i]! }] : [])))));
    this.add(new Computed('grpc_server_msg_received_total', 'Total number of RPC stream messages received on the server.', 'counter',
      () => grpcStats.methods.filter((m) => m.received > 0).map((m) => ({ labels: grpcLabels(m), value: m.received }))));
    this.add(new Computed('grpc_server_msg_sent_total', 'Total number of gRPC stream messages sent by the server.', 'counter',
      () => grpcStats.methods.filter((m) => m.sent > 0).map((m) => ({ labels: grpcLabels(m), value: m.sent }))));

    counter('concord_worker_batches_total', 'Batches handed from the main thread to the storage worker (one message each).', () => s.batchStats.batches);
    this.add(new Computed('concord_worker_batch_entries_total', 'Raft entries carried by those batches, to append and to apply (entries / batches = mean batch size).', 'counter',
      () => [{ labels: { kind: 'append' }, value: s.batchStats.appendEntries }, { labels: { kind: 'apply' }, value: s.batchStats.applyEntries }]));
    counter('concord_worker_batch_reads_total', 'Reads carried by those batches.', () => s.batchStats.reads);
    counter('concord_backend_commit_writes_total', 'MVCC records written to LMDB by batched commits.', () => w.get(StatSlot.BackendCommitWrites));
    gauge('concord_proposals_waiting', 'Proposals in the wait table (proposed, not yet answered).', () => s.proposalCounts().pending);
    gauge('concord_raft_commit_apply_gap', 'Committed raft entries not yet applied by the storage worker.', () => {
      const c = s.proposalCounts();
      return c.committed - c.applied;
    });
    this.add(new Computed('concord_thread_busy_seconds_total', 'Event-loop busy time per thread (main: gRPC, raft; storage: WAL, apply, reads).', 'counter',
      () => [
        { labels: { thread: 'main' }, value: performance.eventLoopUtilization().active / 1000 },
        { labels: { thread: 'storage' }, value: w.get(StatSlot.WorkerBusyMs) / 1000 },
        { labels: { thread: 'watch' }, value: watch(WatchStat.BusyMs) / 1000 },
      ]));
    peerMetricsRegister(this.registry, transportStats);
    client.collectDefaultMetrics({ register: this.registry });
  }

  private add(metric: Computed): void {
    this.registry.registerMetric(metric as unknown as client.Metric);
  }

  /**
   * The exposition text. A family without series (the peer families of a member with no peers)
   * is left out entirely, as Prometheus' Go client leaves it out of etcd's.
   */
  async render(): Promise<string> {
    const text = await this.registry.metrics();
    const lines = text.split('\n');
    const out: string[] = [];
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i]!;
      if (l.startsWith('# HELP ') && (lines[i + 1] ?? '').startsWith('# TYPE ') &&
        ((lines[i + 2] ?? '').startsWith('#') || (lines[i + 2] ?? '') === '')) {
        i++; // and its TYPE line
        continue;
      }
      out.push(l);
    }
    return out.join('\n');
  }
}

/**
 * etcd's peer network families (etcd server/etcdserver/api/rafthttp/metrics.go: same names,
 * help, types, label names and buckets), one series per peer, label values the member ids in
 * hex as etcd's types.ID prints them (To="8211f1d0f64f3269"). Counted by the transport over
 * every connection kind (PeerStats in peer_transport.ts says what each includes); Local is
 * this member. No transport (a member not started yet): no series.
 */
export function peerMetricsRegister(registry: client.Registry,
  transportStats: () => TransportStats | null): void {
  const add = (name: string, help: string, type: Family['type'],
    collect: (t: TransportStats) => Sample[]): void => {
    const metric = new Computed(name, help, type, () => {
      const t = transportStats();
      return t === null ? [] : collect(t);
    });
    registry.registerMetric(metric as unknown as client.Metric);
  };
  const hex = (id: bigint): string => id.toString(16);
  add('etcd_network_active_peers', 'The current number of active peer connections.', 'gauge',
    (t) => t.peers.map((p) => ({
      labels: { Local: hex(t.memberId), Remote: hex(p.memberId) }, value: p.active ? 1 : 0,
    })));
  add('etcd_network_disconnected_peers_total', 'The total number of disconnected peers.',
    'counter', (t) => t.peers.map((p) => ({
      labels: { Local: hex(t.memberId), Remote: hex(p.memberId) }, value: p.disconnects,
    })));
  add('etcd_network_peer_sent_bytes_total', 'The total number of bytes sent to peers.', 'counter',
    (t) => t.peers.map((p) => ({ labels: { To: hex(p.memberId) }, value: p.sentBytes })));
  add('etcd_network_peer_received_bytes_total', 'The total number of bytes received from peers.',
    'counter',
    (t) => t.peers.map((p) => ({ labels: { From: hex(p.memberId) }, value: p.receivedBytes })));
  add('etcd_network_peer_sent_failures_total', 'The total number of send failures from peers.',
    'counter',
    (t) => t.peers.map((p) => ({ labels: { To: hex(p.memberId) }, value: p.sentFailures })));
  add('etcd_network_peer_received_failures_total',
    'The total number of receive failures from peers.', 'counter',
    (t) => t.peers.map((p) => ({ labels: { From: hex(p.memberId) }, value: p.receivedFailures })));
  const rtt = 'etcd_network_peer_round_trip_time_seconds';
  add(rtt, 'Round-Trip-Time histogram between peers', 'histogram', (t) => {
    const out: Sample[] = [];
    for (const p of t.peers) {
      const to = hex(p.memberId);
      let cumulative = 0;
      peerRttBucketsSeconds.forEach((le, i) => {
        cumulative += p.rttBucketCounts[i]!;
        out.push({ metricName: `${rtt}_bucket`, labels: { To: to, le: String(le) }, value: cumulative });
      });
      out.push({ metricName: `${rtt}_bucket`, labels: { To: to, le: '+Inf' }, value: p.rttCount });
      out.push({ metricName: `${rtt}_sum`, labels: { To: to }, value: p.rttSumSeconds });
      out.push({ metricName: `${rtt}_count`, labels: { To: to }, value: p.rttCount });
    }
    return out;
  });
}
