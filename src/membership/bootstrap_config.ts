// How a member finds its cluster at start-up, from etcd's flags and what its data dir holds: the
// --initial-cluster value, the checks etcd makes on it (with etcd 3.4's messages, checked against
// the etcd binary in test/membership/bootstrap_config.test.ts and test/server/cli.test.ts), the
// initial membership of a new cluster, and the plan for a restart or a join. Pure: no I/O, no
// clock, no DNS; what needs the network (asking the other members) is a hook the server fills.
//
// etcd: server/embed/etcd.go StartEtcd (--initial-cluster parsed only for an uninitialized
// member), server/etcdserver/server.go NewServer (the three cases below),
// server/etcdserver/config.go VerifyBootstrap / VerifyJoinExisting / advertiseMatchesCluster,
// server/etcdserver/cluster_util.go isMemberBootstrapped, membership/cluster.go
// NewClusterFromURLsMap / ValidateClusterAndAssignIDs, client/pkg/types/urlsmap.go NewURLsMap.
//
//   data dir initialized? ──yes──► restart: the data dir's cluster id, member id and members;
//        │                         every --initial-* flag is ignored (not even parsed)
//        no
//        ├─ state new ──────────► new: members and ids from --initial-cluster + token; the
//        │                         server first asks the other members whether this member
//        │                         already started once (checkNotBootstrapped)
//        └─ state existing ─────► join: the server fetches the running cluster from the other
//                                  members' peer URLs (ClusterFetcher), then joinExisting()
//                                  matches it against --initial-cluster and takes its ids
//
// Errors are BootstrapErrors; etcd reports them at start-up as
//   {"level":"warn","msg":"failed to start etcd","error":<message>}
//   {"level":"fatal","msg":"discovery failed","error":<message>}   and exits 1.
import { assert } from '../util/assert';
import { clusterIdOf, compareGoStrings, formatId, memberIdOf, type ClusterId, type MemberId } from './ids';
import {
  UrlError, goQuote, goQuoteList, hostOfUrl, isGoIp, parseGoUrl, parsePeerUrls, splitHostPort,
} from './urls';

/** One name of --initial-cluster with its peer URLs (as etcd holds them: normalized, sorted). */
export interface InitialClusterMember {
  name: string;
  peerUrls: string[];
}

/** --initial-cluster parsed: one entry per distinct name, in the order names first appear. */
export type InitialCluster = InitialClusterMember[];

export type InitialClusterState = 'new' | 'existing';

/** A member as the cluster records it (etcd membership.Member). */
export interface Member {
  id: MemberId;
  /** Empty until the member has started and published itself. */
  name: string;
  peerUrls: string[];
  /** Empty until the member has started and published itself. */
  clientUrls: string[];
  isLearner: boolean;
}

/** A cluster's membership as one member sees it. Invariant: members sorted by id, localId among them. */
export interface Membership {
  clusterId: ClusterId;
  localId: MemberId;
  members: Member[];
}

/** A running cluster as another member reports it (etcd GetClusterFromRemotePeers). */
export interface RemoteCluster {
  clusterId: ClusterId;
  members: Member[];
  /** Ids removed from the cluster: never reused. */
  removedIds: MemberId[];
}

/**
 * Asks the members at `peerUrls` (tried in order, each bounded by `timeoutMs`) for the cluster
 * they belong to; null when none answered. The server implements it over the peer transport;
 * etcd GETs <peer-url>/members and reads the X-Etcd-Cluster-ID header
 * (server/etcdserver/cluster_util.go getClusterFromRemotePeers).
 */
export interface ClusterFetcher {
  fetchCluster(peerUrls: readonly string[], timeoutMs: number): Promise<RemoteCluster | null>;
}

/**
 * A host name → IP address table from DNS, for the hosts hostsToResolve() lists. etcd resolves
 * peer URL host names (not IP addresses, not "localhost") before comparing URL lists, so
 * "http://node1:2380" matches "http://10.0.0.1:2380" when node1 resolves to 10.0.0.1. Without
 * the table, URLs compare as written.
 */
export type ResolvedHosts = ReadonlyMap<string, string>;

/** Something to log (same shape as config.ts Notice). */
export interface BootstrapNotice {
  level: 'info' | 'warn';
  msg: string;
  fields: Record<string, unknown>;
}

export type BootstrapErrorCode =
  | 'initial-cluster-invalid'
  | 'local-member-missing'
  | 'advertise-mismatch'
  | 'duplicate-url'
  | 'member-id-zero'
  | 'already-bootstrapped'
  | 'cluster-fetch-failed'
  | 'cluster-mismatch';

/** A start-up refused as etcd refuses it; `message` is etcd's text, `code` is what to match on. */
export class BootstrapError extends Error {
  readonly code: BootstrapErrorCode;
  constructor(code: BootstrapErrorCode, message: string) {
    super(message);
    this.name = 'BootstrapError';
    this.code = code;
  }
}

/** etcd's messages that do not depend on the input. */
export const errCannotFetchCluster =
  'cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs';

/**
 * etcd: the peer transport refuses a message from a member of another cluster (HTTP 412, body
 * "cluster ID mismatch"), and logs on each side. This is how etcd refuses a member whose data dir
 * belongs to another cluster: it starts (a restart ignores the flags), and its peers refuse it.
 */
export const peerClusterIdMismatch = {
  error: 'cluster ID mismatch',
  /** Logged (warn) by the receiver: rafthttp/http.go checkClusterCompatibilityFromHeader. */
  receiverMsg: 'request cluster ID mismatch',
  /** Logged (warn) by the sender: rafthttp/stream.go. */
  senderMsg: 'request sent was ignored by remote peer due to cluster ID mismatch',
} as const;

/** Log fields of peerClusterIdMismatch.receiverMsg, as etcd names them. */
export function peerClusterIdMismatchFields(localId: MemberId, localClusterId: ClusterId, remoteId: MemberId,
  remoteClusterId: ClusterId): Record<string, string> {
  return {
    'local-member-id': formatId(localId),
    'local-member-cluster-id': formatId(localClusterId),
    'remote-peer-server-name': formatId(remoteId),
    'remote-peer-cluster-id': formatId(remoteClusterId),
  };
}

// ---- --initial-cluster -------------------------------------------------------------------------

/** The default --initial-cluster. */
export const initialClusterDefault = 'default=http://localhost:2380';

/**
 * etcd InitialClusterFromName: `<name>=<url>` for each advertised peer URL. etcd uses it when
 * --initial-cluster keeps its default and --name does not ('etcd --name abc').
 */
export function initialClusterFromName(name: string, advertisePeerUrls: readonly string[]): string {
  const n = name === '' ? 'default' : name;
  return advertisePeerUrls.map((u) => `${n}=${u}`).join(',');
}

/**
 * Parses --initial-cluster (`name=url,name=url,...`; a name may repeat to give several URLs) as
 * etcd types.NewURLsMap does: split at ',', each at its first '='; a value with no '=' is a name
 * with an empty URL; empty items are skipped; no unescaping. Errors carry etcd's prefix
 * "error setting up initial cluster: ".
 */
export function parseInitialCluster(value: string): InitialCluster {
  const byName = new Map<string, string[]>();
  for (const item of value.split(',')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    const name = eq >= 0 ? item.slice(0, eq) : item;
    const url = eq >= 0 ? item.slice(eq + 1) : '';
    let urls = byName.get(name);
    if (urls === undefined) {
      urls = [];
      byName.set(name, urls);
    }
    urls.push(url);
  }
  const cluster: InitialCluster = [];
  for (const [name, urls] of byName) {
    try {
      cluster.push({ name, peerUrls: parsePeerUrls(urls) });
    } catch (err) {
      if (!(err instanceof UrlError)) throw err;
      // etcd walks a Go map here, so which bad name it reports first varies run to run; concord
      // reports the first in the value.
      throw new BootstrapError('initial-cluster-invalid', `error setting up initial cluster: ${err.message}`);
    }
  }
  return cluster;
}

/** etcd URLsMap.String(): every `name=url` pair, sorted. */
export function formatInitialCluster(cluster: readonly InitialClusterMember[]): string {
  const pairs: string[] = [];
  for (const m of cluster) for (const u of m.peerUrls) pairs.push(`${m.name}=${u}`);
  return pairs.sort(compareGoStrings).join(',');
}

/** The host names etcd would resolve with DNS before comparing these URLs (see ResolvedHosts). */
export function hostsToResolve(urls: readonly string[]): string[] {
  const hosts = new Set<string>();
  for (const u of urls) {
    const parsed = parseGoUrl(u);
    if (parsed.scheme === 'unix' || parsed.scheme === 'unixs') continue;
    const host = hostOfUrl(u);
    if (host === '' || host === 'localhost' || isGoIp(host)) continue;
    hosts.add(host);
  }
  return [...hosts].sort(compareGoStrings);
}

/** A URL with its host replaced by the address DNS gave (etcd netutil resolveURL). */
function resolveUrl(url: string, resolved: ResolvedHosts | undefined): string {
  if (resolved === undefined || resolved.size === 0) return url;
  const parsed = parseGoUrl(url);
  if (parsed.scheme === 'unix' || parsed.scheme === 'unixs') return url;
  const hp = splitHostPort(parsed.host);
  if (hp === null) return url;
  const ip = resolved.get(hp.host);
  if (ip === undefined) return url;
  const host = ip.includes(':') ? `[${ip}]:${hp.port}` : `${ip}:${hp.port}`;
  return `${parsed.scheme}://${host}`;
}

/**
 * etcd netutil.URLStringsEqual (3.4.23): equal as sorted lists once host names are resolved;
 * otherwise the reason, in etcd's words.
 */
export function urlListsDiffer(a: readonly string[], b: readonly string[],
  resolved?: ResolvedHosts): string | null {
  if (a.length !== b.length) return `len(${goQuoteList(a)}) != len(${goQuoteList(b)})`;
  const ra = a.map((u) => resolveUrl(u, resolved)).sort(compareGoStrings);
  const rb = b.map((u) => resolveUrl(u, resolved)).sort(compareGoStrings);
  for (let i = 0; i < ra.length; i++) {
    if (ra[i] !== rb[i]) return `resolved urls: ${goQuote(ra[i]!)} != ${goQuote(rb[i]!)}`;
  }
  return null;
}

function memberByName(cluster: InitialCluster, name: string): InitialClusterMember | undefined {
  return cluster.find((m) => m.name === name);
}

/** etcd hasLocalMember. */
function checkLocalMember(cluster: InitialCluster, name: string): InitialClusterMember {
  const local = memberByName(cluster, name);
  if (local === undefined) {
    throw new BootstrapError('local-member-missing',
      `couldn't find local name ${goQuote(name)} in the initial cluster configuration`);
  }
  return local;
}

/** etcd advertiseMatchesCluster: --initial-advertise-peer-urls must be this name's URLs. */
function checkAdvertiseMatches(local: InitialClusterMember, advertised: readonly string[],
  resolved?: ResolvedHosts): void {
  const apurls = [...advertised].sort(compareGoStrings);
  const reason = urlListsDiffer(apurls, local.peerUrls, resolved);
  if (reason === null) return;
  const apSet = new Set(apurls);
  const initSet = new Set(local.peerUrls);
  // etcd builds these lists from Go maps (random order when several are missing); sorted here.
  const missingFromAp = [...initSet].filter((u) => !apSet.has(u)).sort(compareGoStrings);
  if (missingFromAp.length > 0) {
    const m = missingFromAp.map((u) => `${local.name}=${u}`).join(',');
    throw new BootstrapError('advertise-mismatch',
      `--initial-cluster has ${m} but missing from ` +
      `--initial-advertise-peer-urls=${apurls.join(',')} (${reason})`);
  }
  const apAsCluster = formatInitialCluster([{ name: local.name, peerUrls: apurls }]);
  const missingFromInit = [...apSet].filter((u) => !initSet.has(u)).sort(compareGoStrings);
  if (missingFromInit.length > 0) {
    throw new BootstrapError('advertise-mismatch',
      `--initial-advertise-peer-urls has ${missingFromInit.join(',')} but missing from ` +
      `--initial-cluster=${apAsCluster}`);
  }
  throw new BootstrapError('advertise-mismatch',
    `failed to resolve ${apurls.join(',')} to match --initial-cluster=${apAsCluster} (${reason})`);
}

/** etcd checkDuplicateURL: a URL may appear once in the whole --initial-cluster. */
function checkDuplicateUrls(cluster: InitialCluster): void {
  const seen = new Set<string>();
  for (const m of cluster) {
    for (const u of m.peerUrls) {
      if (seen.has(u)) {
        throw new BootstrapError('duplicate-url',
          `initial cluster ${formatInitialCluster(cluster)} has duplicate url`);
      }
      seen.add(u);
    }
  }
}

/** The flags a member bootstraps from (etcd names in comments). */
export interface BootstrapFlags {
  /** --name */
  name: string;
  /** --data-dir (only for log fields) */
  dataDir: string;
  /** --initial-cluster, as given (or its default, see initialClusterFromName) */
  initialCluster: string;
  /** --initial-cluster-state */
  initialClusterState: InitialClusterState;
  /** --initial-cluster-token */
  initialClusterToken: string;
  /** --initial-advertise-peer-urls, as parsePeerUrls returns them */
  initialAdvertisePeerUrls: readonly string[];
}

/**
 * The checks etcd makes on the --initial-* flags of a member without data (etcd VerifyBootstrap
 * for state new: local name present, advertised URLs match it, no duplicate URL; VerifyJoinExisting
 * for existing: the same without the advertised-URL check). Returns --initial-cluster parsed.
 */
export function verifyBootstrapFlags(flags: BootstrapFlags, resolved?: ResolvedHosts): InitialCluster {
  const cluster = parseInitialCluster(flags.initialCluster);
  const local = checkLocalMember(cluster, flags.name);
  if (flags.initialClusterState === 'new') {
    checkAdvertiseMatches(local, flags.initialAdvertisePeerUrls, resolved);
  }
  checkDuplicateUrls(cluster);
  return cluster;
}

function compareIds(a: Member, b: Member): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * The membership a new cluster starts with (etcd NewClusterFromURLsMap + genID): one voter per
 * name, id from its peer URLs and the token; the cluster id from the member ids. Names are set,
 * client URLs empty: a member publishes them once it runs.
 */
export function initialMembership(cluster: InitialCluster, token: string, localName: string): Membership {
  const members: Member[] = [];
  const ids = new Set<MemberId>();
  for (const m of cluster) {
    const id = memberIdOf(m.peerUrls, token);
    if (id === 0n) throw new BootstrapError('member-id-zero', 'cannot use 0 as member id');
    // Two names with the same URL set are caught by the duplicate-URL check; anything else is a
    // SHA-1 collision.
    assert(!ids.has(id), 'initialMembership: two members with one id');
    ids.add(id);
    members.push({ id, name: m.name, peerUrls: [...m.peerUrls], clientUrls: [], isLearner: false });
  }
  members.sort(compareIds);
  const local = members.find((m) => m.name === localName);
  assert(local !== undefined, 'initialMembership: local name not in the cluster');
  return { clusterId: clusterIdOf(members.map((m) => m.id)), localId: local.id, members };
}

/** etcd getRemotePeerURLs: every peer URL of the other names, sorted. */
export function remotePeerUrls(cluster: InitialCluster, localName: string): string[] {
  const urls: string[] = [];
  for (const m of cluster) if (m.name !== localName) urls.push(...m.peerUrls);
  return urls.sort(compareGoStrings);
}

export type BootstrapPlan =
  /** The data dir decides; the flags are ignored. */
  | { kind: 'restart'; membership: Membership; notices: BootstrapNotice[] }
  /**
   * A new cluster. Before starting, the server fetches the cluster from `remotePeerUrls` (when
   * not empty; a failure counts as "not bootstrapped") and calls checkNotBootstrapped().
   */
  | { kind: 'new'; membership: Membership; remotePeerUrls: string[]; notices: BootstrapNotice[] }
  /**
   * Joining a running cluster: the server fetches it from `remotePeerUrls` (null: refuse with
   * errCannotFetchCluster, see fetchFailed()) and calls joinExisting().
   */
  | { kind: 'join'; initialCluster: InitialCluster; remotePeerUrls: string[]; notices: BootstrapNotice[] };

/**
 * What a member does at start-up. `dataDir` is what an initialized data dir holds (null when it
 * holds nothing yet: etcd looks for a WAL). Throws BootstrapError with etcd's message.
 */
export function planBootstrap(flags: BootstrapFlags, dataDir: Membership | null,
  resolved?: ResolvedHosts): BootstrapPlan {
  if (dataDir !== null) return planRestart(flags, dataDir);
  const cluster = verifyBootstrapFlags(flags, resolved);
  const remotes = remotePeerUrls(cluster, flags.name);
  if (flags.initialClusterState === 'existing') {
    return { kind: 'join', initialCluster: cluster, remotePeerUrls: remotes, notices: [] };
  }
  const membership = initialMembership(cluster, flags.initialClusterToken, flags.name);
  return { kind: 'new', membership, remotePeerUrls: remotes, notices: [] };
}

function planRestart(flags: BootstrapFlags, dataDir: Membership): BootstrapPlan {
  checkMembership(dataDir);
  const notices: BootstrapNotice[] = [
    // etcd: etcdmain/etcd.go, before anything else.
    {
      level: 'info', msg: 'server has been already initialized',
      fields: { 'data-dir': flags.dataDir, 'dir-type': 'member' },
    },
  ];
  // Beyond etcd, which says nothing more: when the flags describe a new cluster other than the
  // one in the data dir, say that they are ignored (the usual mistake: a member left with its old
  // data while the others were re-created with a new token; its peers will then refuse it with
  // "cluster ID mismatch").
  if (flags.initialClusterState === 'new') {
    let flagsClusterId: ClusterId | null = null;
    try {
      const cluster = verifyBootstrapFlags(flags);
      flagsClusterId = initialMembership(cluster, flags.initialClusterToken, flags.name).clusterId;
    } catch (err) {
      if (!(err instanceof BootstrapError)) throw err;
    }
    if (flagsClusterId !== dataDir.clusterId) {
      notices.push({
        level: 'warn',
        msg: 'ignoring --initial-cluster, --initial-cluster-token and --initial-advertise-peer-urls: ' +
          'the data dir already belongs to a cluster',
        fields: {
          'data-dir': flags.dataDir,
          'cluster-id': formatId(dataDir.clusterId),
          'local-member-id': formatId(dataDir.localId),
          'initial-cluster-id': flagsClusterId === null ? 'invalid' : formatId(flagsClusterId),
        },
      });
    }
  }
  return { kind: 'restart', membership: dataDir, notices };
}

/** Asserts the Membership invariants (a data dir or a peer that says otherwise is a bug). */
export function checkMembership(m: Membership): void {
  for (let i = 1; i < m.members.length; i++) {
    assert(m.members[i - 1]!.id < m.members[i]!.id, 'membership: members not sorted by id');
  }
  assert(m.members.some((x) => x.id === m.localId), 'membership: local member not a member');
}

/**
 * etcd isMemberBootstrapped, for a new member: refused when the running cluster (null: none
 * answered) already has this member started (it has published client URLs), i.e. its data dir
 * was lost or it is started twice.
 */
export function checkNotBootstrapped(membership: Membership, remote: RemoteCluster | null): void {
  if (remote === null) return;
  const m = remote.members.find((x) => x.id === membership.localId);
  if (m !== undefined && m.clientUrls.length > 0) {
    throw new BootstrapError('already-bootstrapped',
      `member ${formatId(membership.localId)} has already been bootstrapped`);
  }
}

/** The error for a join when no other member answered. */
export function fetchFailed(): BootstrapError {
  return new BootstrapError('cluster-fetch-failed', errCannotFetchCluster);
}

/** Go %+v of an etcd *Member. */
function goMemberString(m: Member): string {
  return `&{ID:${formatId(m.id)} RaftAttributes:{PeerURLs:[${m.peerUrls.join(' ')}] IsLearner:${m.isLearner}} ` +
    `Attributes:{Name:${m.name} ClientURLs:[${m.clientUrls.join(' ')}]}}`;
}

/** etcd RaftCluster.String() (Go map order in etcd; sorted by id here). */
export function goClusterString(c: RemoteCluster): string {
  const members = [...c.members].sort(compareIds).map(goMemberString).join(' ');
  const removed = [...c.removedIds].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map(formatId).join(' ');
  return `{ClusterID:${formatId(c.clusterId)} Members:[${members}] RemovedMemberIDs:[${removed}]}`;
}

/**
 * A member joining a running cluster (--initial-cluster-state existing, no data): its
 * --initial-cluster must list the running cluster's members, each with the same peer URLs
 * (etcd ValidateClusterAndAssignIDs, 3.4.23); the ids are the running cluster's (a member added
 * at run time has an id from the time of the add, not from the token). Returns the membership to
 * start with: the running cluster's id and members, and the id it gave this member's name.
 */
export function joinExisting(cluster: InitialCluster, token: string, localName: string, remote: RemoteCluster,
  resolved?: ResolvedHosts): Membership {
  const fail = (reason: string): BootstrapError =>
    new BootstrapError('cluster-mismatch', `error validating peerURLs ${goClusterString(remote)}: ${reason}`);
  const existing = [...remote.members].sort(compareIds);
  // The local side as etcd builds it: ids from the token, sorted by them.
  const local = cluster
    .map((m) => ({ id: memberIdOf(m.peerUrls, token), name: m.name, peerUrls: m.peerUrls }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (existing.length !== local.length) throw fail('member count is unequal');
  const assigned = new Map<string, MemberId>();
  for (const e of existing) {
    let reason: string | null = null;
    let matched = false;
    for (const l of local) {
      reason = urlListsDiffer(e.peerUrls, l.peerUrls, resolved);
      if (reason === null) {
        assigned.set(l.name, e.id);
        matched = true;
        break;
      }
    }
    if (!matched) {
      throw fail('PeerURLs: no match found for existing member ' +
        `(${formatId(e.id)}, [${e.peerUrls.join(' ')}]), ` +
        `last resolver error (${reason})`);
    }
  }
  const localId = assigned.get(localName);
  assert(memberByName(cluster, localName) !== undefined, 'joinExisting: local name not in the cluster');
  // Only a peer reporting two members with one id or one URL list (etcd never lets either
  // happen) leaves a name unmatched; etcd would start with the token's id then.
  const duplicateIds = existing.some((m, i) => i > 0 && existing[i - 1]!.id === m.id);
  if (localId === undefined || duplicateIds) {
    throw new BootstrapError('cluster-mismatch',
      `the cluster reported by the peers is inconsistent: ${goClusterString(remote)}`);
  }
  const members = existing.map((m) => ({ ...m }));
  const membership: Membership = { clusterId: remote.clusterId, localId, members };
  checkMembership(membership);
  return membership;
}
