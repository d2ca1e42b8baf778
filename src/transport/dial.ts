// Where to dial a peer: its peer URLs (etcd --initial-advertise-peer-urls, e.g.
// `http://127.0.0.1:2380`), and the test-only dial table that reroutes them through fault
// proxies.
//
// TEST ONLY — CONCORD_TEST_PEER_DIAL: comma-separated `host:port=host:port` pairs, read once when
// this module loads. A peer whose URL's `host:port` is on the left is dialled at the right
// instead; nothing else changes (the member keeps its real URLs in --initial-cluster, so the
// member and cluster ids derived from them stay the same). Fault tests that start real member
// processes give member i the table of `Partitioner.routes(i)` (test/helpers/fault_proxy.ts),
// formatted by formatDialTable(). In-process tests pass PeerTransportOptions.dialTable instead.
// Example: CONCORD_TEST_PEER_DIAL=127.0.0.1:40002=127.0.0.1:51001,127.0.0.1:40003=127.0.0.1:51002
// Hosts are compared as written (no DNS); IPv6 in brackets: `[::1]:2380=[::1]:41000`.
import { assert } from '../util/assert';

export const dialTableEnv = 'CONCORD_TEST_PEER_DIAL';

/** A TCP address to dial; host without IPv6 brackets (as node:net wants it). */
export interface DialAddress {
  host: string;
  port: number;
  /** An https:// peer URL: the connection is TLS (peer TLS, transport/peer_tls.ts). */
  tls?: true;
  /** TLS to an address the dial table rerouted: the URL's host, which the certificate names. */
  tlsHost?: string;
}

/** `host:port` as keys of the dial table are written (IPv6 hosts in brackets). */
export function addressKey(a: DialAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** Parses `host:port` / `[v6]:port`; null when malformed. */
export function parseHostPort(s: string): DialAddress | null {
  const colon = s.lastIndexOf(':');
  if (colon <= 0) return null;
  let host = s.slice(0, colon);
  const portText = s.slice(colon + 1);
  if (!/^[0-9]{1,5}$/.test(portText)) return null;
  const port = Number(portText);
  if (port < 1 || port > 65535) return null;
  if (host.startsWith('[')) {
    if (!host.endsWith(']')) return null;
    host = host.slice(1, -1);
  } else if (host.includes(':')) {
    return null;
  }
  if (host.length === 0 || /[\s,=]/.test(host)) return null;
  return { host, port };
}

/**
 * The TCP address of a peer URL, or null for what the transport cannot dial: a scheme other
 * than http or https, a path. https URLs are marked `tls` (as etcd, the scheme of each URL
 * decides whether TLS is spoken to it).
 */
export function peerUrlAddress(url: string): DialAddress | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch (err) {
    if (err instanceof TypeError) return null; // ERR_INVALID_URL
    throw err;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
  if (u.pathname !== '/' && u.pathname !== '') return null;
  const secure = u.protocol === 'https:';
  // URL drops a default port (http://h:80 has port ''): dial 80 (443) as Go's http client would.
  const a = parseHostPort(u.port === '' ? `${u.host}:${secure ? 443 : 80}` : u.host);
  if (a !== null && secure) a.tls = true;
  return a;
}

/** Parses a dial table; throws a TypeError naming the bad pair (a test's configuration bug). */
export function parseDialTable(text: string): Map<string, DialAddress> {
  const table = new Map<string, DialAddress>();
  for (const pair of text.split(',')) {
    const item = pair.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    const from = eq > 0 ? parseHostPort(item.slice(0, eq)) : null;
    const to = eq > 0 ? parseHostPort(item.slice(eq + 1)) : null;
    if (from === null || to === null) {
      throw new TypeError(`${dialTableEnv}: bad pair '${item}' (want host:port=host:port)`);
    }
    table.set(addressKey(from), to);
  }
  return table;
}

/** The inverse of parseDialTable, for tests that start member processes. */
export function formatDialTable(routes: ReadonlyMap<string, string>): string {
  const pairs: string[] = [];
  for (const [from, to] of routes) {
    assert(parseHostPort(from) !== null && parseHostPort(to) !== null, 'dial table address');
    pairs.push(`${from}=${to}`);
  }
  return pairs.join(',');
}

/** Converts Partitioner.routes(i) (strings) into a table for PeerTransportOptions.dialTable. */
export function dialTableFromRoutes(routes: ReadonlyMap<string, string>):
Map<string, DialAddress> {
  return parseDialTable(formatDialTable(routes));
}

/** The table from the environment, read once at load; empty when unset (production). */
export const envDialTable: ReadonlyMap<string, DialAddress> =
  parseDialTable(process.env[dialTableEnv] ?? '');

/** Where to dial `a`: its table entry, or `a` itself. */
export function dialAddress(table: ReadonlyMap<string, DialAddress>, a: DialAddress):
DialAddress {
  const to = table.get(addressKey(a));
  if (to === undefined) return a;
  return a.tls === true ? { ...to, tls: true, tlsHost: a.tlsHost ?? a.host } : to;
}
