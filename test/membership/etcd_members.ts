// Real etcd 3.4 members with chosen cluster flags, for the membership differential tests:
// started through test/helpers/etcd.ts startEtcd (its flags overridden: Go's flag package keeps
// the last value), or run until they refuse to start. Ids come back from etcdctl as bigints.
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ETCD_BIN, freePorts, startEtcd, type EtcdHandle } from '../helpers/etcd';
import { ETCDCTL_BIN, ctlEnv } from '../helpers/etcdctl';

export interface MemberFlags {
  name: string;
  /** --listen-peer-urls (loopback URLs this member binds). */
  listenPeerUrls: string[];
  /** --initial-advertise-peer-urls, as typed. */
  advertisePeerUrls: string[];
  initialCluster: string;
  token: string;
  state?: 'new' | 'existing';
  /** A data dir kept across runs (default: the helper's own, removed by stop()). */
  dataDir?: string;
}

export function flagsToArgs(f: MemberFlags): string[] {
  return [
    '--name', f.name,
    '--listen-peer-urls', f.listenPeerUrls.join(','),
    '--initial-advertise-peer-urls', f.advertisePeerUrls.join(','),
    '--initial-cluster', f.initialCluster,
    '--initial-cluster-token', f.token,
    '--initial-cluster-state', f.state ?? 'new',
    ...(f.dataDir === undefined ? [] : ['--data-dir', f.dataDir]),
  ];
}

/** Starts one member (waits until healthy: for a cluster, start the members together). */
export function startMember(f: MemberFlags): Promise<EtcdHandle> {
  return startEtcd({ name: f.name, extraArgs: ['--logger', 'zap', ...flagsToArgs(f)], readyTimeoutMs: 30_000 });
}

/** `n` loopback peer URLs on free ports. */
export async function loopbackUrls(n: number): Promise<string[]> {
  return (await freePorts(n)).map((p) => `http://127.0.0.1:${p}`);
}

export function tmpDataDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'concord-membership-'));
}

/** etcdctl prints uint64 ids as JSON numbers: quote them before JSON.parse loses their bits. */
export function parseEtcdJson(text: string): unknown {
  return JSON.parse(text.replace(/("(?:ID|cluster_id|member_id|leader)"):(\d+)/g, '$1:"$2"'));
}

export function etcdctl(endpoint: string, args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    execFile(ETCDCTL_BIN, ['--endpoints', endpoint, '--command-timeout=10s', ...args], { env: ctlEnv() },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        resolve({ stdout, stderr, code });
      });
  });
}

export interface EtcdMember {
  id: bigint;
  name: string;
  peerUrls: string[];
  clientUrls: string[];
  isLearner: boolean;
}

/** `etcdctl member list -w json`: the cluster id of the answer's header and the members. */
export async function memberList(endpoint: string): Promise<{ clusterId: bigint; memberId: bigint; members: EtcdMember[] }> {
  const r = await etcdctl(endpoint, ['member', 'list', '-w', 'json']);
  if (r.code !== 0) throw new Error(`etcdctl member list: ${r.stderr}`);
  const doc = parseEtcdJson(r.stdout) as {
    header: { cluster_id: string; member_id: string };
    members: { ID: string; name?: string; peerURLs?: string[]; clientURLs?: string[]; isLearner?: boolean }[];
  };
  return {
    clusterId: BigInt(doc.header.cluster_id),
    memberId: BigInt(doc.header.member_id),
    members: doc.members.map((m) => ({
      id: BigInt(m.ID), name: m.name ?? '', peerUrls: m.peerURLs ?? [], clientUrls: m.clientURLs ?? [], isLearner: m.isLearner === true,
    })),
  };
}

/** `etcdctl endpoint status -w json`: the header's cluster and member ids. */
export async function endpointStatus(endpoint: string): Promise<{ clusterId: bigint; memberId: bigint }> {
  const r = await etcdctl(endpoint, ['endpoint', 'status', '-w', 'json']);
  if (r.code !== 0) throw new Error(`etcdctl endpoint status: ${r.stderr}`);
  const doc = parseEtcdJson(r.stdout) as { Status: { header: { cluster_id: string; member_id: string } } }[];
  return { clusterId: BigInt(doc[0]!.Status.header.cluster_id), memberId: BigInt(doc[0]!.Status.header.member_id) };
}

export interface RefusedStart {
  code: number | null;
  /** The "error" field of etcd's 'failed to start etcd' line, or null. */
  error: string | null;
  output: string;
}

/**
 * Runs etcd with `f` (and free client ports) until it exits by itself, or its output matches
 * `until` (then it is killed); resolves with its exit code and the error it logged. Killed after
 * `timeoutMs` (then error is null).
 */
export async function runUntilRefused(f: MemberFlags, timeoutMs = 20_000, until?: RegExp): Promise<RefusedStart> {
  const [clientPort] = await freePorts(1);
  const client = `http://127.0.0.1:${clientPort}`;
  const ownDataDir = f.dataDir === undefined ? tmpDataDir() : null;
  const args = ['--logger', 'zap', '--listen-client-urls', client, '--advertise-client-urls', client,
    ...flagsToArgs({ ...f, dataDir: f.dataDir ?? ownDataDir! })];
  try {
    return await new Promise((resolve, reject) => {
      const proc = spawn(ETCD_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      const onData = (c: Buffer): void => {
        output += c.toString('utf8');
        if (until !== undefined && until.test(output)) proc.kill('SIGKILL');
      };
      proc.stdout.on('data', onData);
      proc.stderr.on('data', onData);
      const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
      proc.on('error', reject);
      proc.on('close', (code) => {
        clearTimeout(timer);
        let error: string | null = null;
        for (const line of output.split('\n')) {
          if (!line.startsWith('{')) continue;
          const rec = JSON.parse(line) as { msg?: string; error?: string };
          if (rec.msg === 'failed to start etcd' && typeof rec.error === 'string') error = rec.error;
        }
        resolve({ code, error, output });
      });
    });
  } finally {
    if (ownDataDir !== null) fs.rmSync(ownDataDir, { recursive: true, force: true });
  }
}
