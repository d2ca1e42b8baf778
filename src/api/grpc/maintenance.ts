// Maintenance (Status, Snapshot, Alarm, Hash, HashKV, MoveLeader), the Cluster service (etcd:
// v3rpc/maintenance.go, member.go), and the grpc health service etcd registers with an empty
// service name. Hash and HashKV: mvcc/hash.ts says what they cover.
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { etcdserverpb, grpc as grpcpb } from '../../gen/proto';
import Long from 'long';
import { EtcdServer } from '../../server/etcd_server';
import type { Member } from '../../membership/membership';
import { parsePeerUrls, UrlError } from '../../membership/urls';
import { ErrorCode } from '../../util/errors';
import { grpcStatus } from './errors';
import { sha256FileInBackground } from '../../workers/background_pool';
import { AlarmAction, AlarmType, isKnownAlarmAction, isKnownAlarmType } from '../../apply/alarm_store';
import type { HashDone } from '../../workers/protocol';

type Callback = grpc.sendUnaryData<Uint8Array>;

export function maintenanceHandlers(server: EtcdServer): grpc.UntypedServiceImplementation {
  return {
    Status(_call: grpc.ServerUnaryCall<unknown, Uint8Array>, callback: Callback): void {
      const code = server.status(callback);
      if (code !== 0) callback(grpcStatus(code));
    },
    Snapshot(call: grpc.ServerWritableStream<etcdserverpb.SnapshotRequest, Uint8Array>): void {
      server.backupSnapshot((code, snap) => {
        if (code !== 0) {
          call.emit('error', grpcStatus(code));
          return;
        }
        streamSnapshot(call, snap!.file, snap!.size).then(
          () => server.releaseBackup(snap!.file),
          (err: Error) => {
            server.releaseBackup(snap!.file);
            if (!call.cancelled) call.emit('error', { code: grpc.status.UNKNOWN, details: `etcdserver: ${err.message}` });
          });
      });
    },
    /**
     * GET answers from the applied alarms here (etcd 3.4 sends GET through the log too; the
     * applied copy is what that would read, minus a member still applying). ACTIVATE and
     * DEACTIVATE go through the log and are answered once applied, with the alarm that changed.
     */
    Alarm(call: grpc.ServerUnaryCall<etcdserverpb.AlarmRequest, Uint8Array>, callback: Callback): void {
      const r = call.request;
      const action = r.action ?? AlarmAction.GET;
      const alarm = r.alarm ?? AlarmType.NONE;
      if (!isKnownAlarmAction(action)) return callback(grpcStatus(ErrorCode.AlarmUnknownAction));
      if (!isKnownAlarmType(alarm)) return callback(grpcStatus(ErrorCode.AlarmUnknownType));
      if (action === AlarmAction.GET) {
        // etcd's AlarmResponse has no header (v3rpc/maintenance.go Alarm does not fill one).
        const alarms = server.alarmList(alarm).map((m) => ({ memberID: m.memberId, alarm: m.alarm }));
        return callback(null, etcdserverpb.AlarmResponse.encode({ alarms }).finish());
      }
      const memberID = Long.fromValue(r.memberID ?? 0).toUnsigned();
      let caller = null;
      try {
        caller = server.auth.callerOfCall(call);
      } catch {
        caller = { user: '', revision: 0 }; // expired since the gate: judged as no user
      }
      const code = server.propose({ alarm: { action, memberID, alarm } }, callback, caller);
      if (code !== 0) callback(grpcStatus(code));
    },
    HashKV(call: grpc.ServerUnaryCall<etcdserverpb.HashKVRequest, Uint8Array>, callback: Callback): void {
      const rev = Long.fromValue(call.request.revision ?? 0).toNumber();
      // etcd takes a negative revision as 0 (HashByRev tests rev > 0).
      const code = server.hashRequest('hashkv', rev > 0 ? rev : 0, (a: HashDone) => {
        if (a.error !== 0) return callback(grpcStatus(a.error));
        callback(null, etcdserverpb.HashKVResponse.encode({
          header: hashHeader(server, a.currentRev),
          hash: a.hash,
          compact_revision: a.compactRev,
          hash_revision: a.rev,
        }).finish());
      });
      if (code !== 0) callback(grpcStatus(code));
    },
    Hash(_call: grpc.ServerUnaryCall<unknown, Uint8Array>, callback: Callback): void {
      const code = server.hashRequest('hash', 0, (a: HashDone) => {
        if (a.error !== 0) return callback(grpcStatus(a.error));
        callback(null, etcdserverpb.HashResponse.encode({ header: hashHeader(server, a.currentRev), hash: a.hash }).finish());
      });
      if (code !== 0) callback(grpcStatus(code));
    },
    Defragment(_call: grpc.ServerUnaryCall<unknown, Uint8Array>, callback: Callback): void {
      // Online (workers/storage_core.ts): this member's requests go on meanwhile. etcd answers an
      // empty DefragmentResponse (no header), and its error as it is (code UNKNOWN).
      const code = server.defragment((a) => {
        if (a.error !== '') callback({ code: grpc.status.UNKNOWN, details: `defragment: ${a.error}` });
        else callback(null, etcdserverpb.DefragmentResponse.encode({}).finish());
      });
      if (code !== 0) callback(grpcStatus(code));
    },
    MoveLeader(call: grpc.ServerUnaryCall<etcdserverpb.MoveLeaderRequest, Uint8Array>, callback: Callback): void {
      const target = Long.fromValue(call.request.targetID ?? 0).toUnsigned();
      const code = server.moveLeader(target, (c) => {
        if (c !== 0) callback(grpcStatus(c));
        // etcd answers an empty MoveLeaderResponse: no header.
        else callback(null, etcdserverpb.MoveLeaderResponse.encode({}).finish());
      });
      if (code !== 0) callback(grpcStatus(code));
    },
  };
}

/** etcd's snapshotSendBufferSize: the blob of every SnapshotResponse but the last two. */
const snapshotChunkBytes = 32 * 1024;

/**
 * Streams a backup as etcd 3.4 does (v3rpc/maintenance.go Snapshot): blobs of 32 KiB with the
 * bytes still to come in remaining_bytes, no header, then one last response whose blob is the
 * SHA-256 of everything before it (etcdctl checks it; the body is whole LMDB pages, so a multiple
 * of 512 bytes as etcdctl also wants). The digest is computed on the background pool while the
 * file streams: the main thread only moves bytes. A cancelled call stops reading.
 */
async function streamSnapshot(call: grpc.ServerWritableStream<etcdserverpb.SnapshotRequest, Uint8Array>,
  file: string, size: number): Promise<void> {
  const digest = sha256FileInBackground(file);
  digest.catch(() => undefined); // awaited below; a cancelled stream may never ask
  let sent = 0;
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    for (let at = 0; at < chunk.length; at += snapshotChunkBytes) {
      if (call.cancelled) return;
      const blob = chunk.subarray(at, Math.min(chunk.length, at + snapshotChunkBytes));
      sent += blob.length;
      const more = call.write(etcdserverpb.SnapshotResponse.encode({ remaining_bytes: size - sent, blob }).finish());
      if (!more) await drainedOrClosed(call);
    }
  }
  if (sent !== size) throw new Error(`snapshot file is ${sent} bytes, expected ${size}`);
  const sha = await digest;
  if (call.cancelled) return;
  call.write(etcdserverpb.SnapshotResponse.encode({ remaining_bytes: 0, blob: sha }).finish());
  call.end();
}

/** Resolves when the stream can take more, or is gone. */
function drainedOrClosed(call: grpc.ServerWritableStream<etcdserverpb.SnapshotRequest, Uint8Array>): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      call.off('drain', done);
      call.off('close', done);
      resolve();
    };
    call.on('drain', done);
    call.on('close', done);
  });
}

/** etcd v3rpc header.fill with the revision the hash was taken at. */
function hashHeader(server: EtcdServer, rev: number): etcdserverpb.IResponseHeader {
  return { cluster_id: server.clusterId, member_id: server.memberId, revision: rev, raft_term: server.raftTerm() };
}

/** etcd's cluster service header: ids and term, no revision (v3rpc/member.go header()). */
function clusterHeader(server: EtcdServer): etcdserverpb.IResponseHeader {
  return { cluster_id: server.clusterId, member_id: server.memberId, raft_term: server.raftTerm() };
}

function memberOut(m: Member): etcdserverpb.IMember {
  return { ID: m.id, name: m.name, peerURLs: m.peerUrls, clientURLs: m.clientUrls, isLearner: m.isLearner };
}

function membersOut(server: EtcdServer): etcdserverpb.IMember[] {
  return server.members().map(memberOut);
}

/** etcd types.NewURLs: the peer URLs of a MemberAdd/MemberUpdate, or null when invalid. */
function peerUrlsOf(values: string[] | null | undefined): string[] | null {
  try {
    return parsePeerUrls(values ?? []);
  } catch (err) {
    if (err instanceof UrlError) return null;
    throw err;
  }
}

function idOf(v: number | Long | null | undefined): Long {
  return Long.fromValue(v ?? 0).toUnsigned();
}

export function clusterHandlers(server: EtcdServer): grpc.UntypedServiceImplementation {
  return {
    MemberAdd(call: grpc.ServerUnaryCall<etcdserverpb.MemberAddRequest, Uint8Array>, callback: Callback): void {
      const urls = peerUrlsOf(call.request.peerURLs);
      if (urls === null) return callback(grpcStatus(ErrorCode.MemberBadUrls));
      const code = server.memberAdd(urls, call.request.isLearner === true, new Date(), (c, member) => {
        if (c !== 0) callback(grpcStatus(c));
        else callback(null, etcdserverpb.MemberAddResponse.encode({ header: clusterHeader(server), member: memberOut(member!), members: membersOut(server) }).finish());
      });
      if (code !== 0) callback(grpcStatus(code));
    },
    MemberRemove(call: grpc.ServerUnaryCall<etcdserverpb.MemberRemoveRequest, Uint8Array>, callback: Callback): void {
      const code = server.memberRemove(idOf(call.request.ID), (c) => {
        if (c !== 0) callback(grpcStatus(c));
        else callback(null, etcdserverpb.MemberRemoveResponse.encode({ header: clusterHeader(server), members: membersOut(server) }).finish());
      });
      if (code !== 0) callback(grpcStatus(code));
    },
    MemberUpdate(call: grpc.ServerUnaryCall<etcdserverpb.MemberUpdateRequest, Uint8Array>, callback: Callback): void {
      const urls = peerUrlsOf(call.request.peerURLs);
      if (urls === null) return callback(grpcStatus(ErrorCode.MemberBadUrls));
      const code = server.memberUpdate(idOf(call.request.ID), urls, (c) => {
        if (c !== 0) callback(grpcStatus(c));
        else callback(null, etcdserverpb.MemberUpdateResponse.encode({ header: clusterHeader(server), members: membersOut(server) }).finish());
      });
      if (code !== 0) callback(grpcStatus(code));
    },
    MemberPromote(call: grpc.ServerUnaryCall<etcdserverpb.MemberPromoteRequest, Uint8Array>, callback: Callback): void {
      const code = server.memberPromote(idOf(call.request.ID), (c) => {
        if (c !== 0) callback(grpcStatus(c));
        else callback(null, etcdserverpb.MemberPromoteResponse.encode({ header: clusterHeader(server), members: membersOut(server) }).finish());
      });
      if (code !== 0) callback(grpcStatus(code));
    },
    MemberList(_call: grpc.ServerUnaryCall<unknown, Uint8Array>, callback: Callback): void {
      const resp = etcdserverpb.MemberListResponse.encode({ header: clusterHeader(server), members: membersOut(server) }).finish();
      callback(null, resp);
    },
  };
}

const ServingStatus = grpcpb.health.v1.HealthCheckResponse.ServingStatus;

export function healthHandlers(server: EtcdServer): grpc.UntypedServiceImplementation {
  return {
    Check(call: grpc.ServerUnaryCall<grpcpb.health.v1.HealthCheckRequest, unknown>,
      callback: grpc.sendUnaryData<unknown>): void {
      const service = call.request.service ?? '';
      if (service !== '') {
        callback({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
        return;
      }
      callback(null, { status: server.hasLeader() ? ServingStatus.SERVING : ServingStatus.NOT_SERVING });
    },
  };
}
