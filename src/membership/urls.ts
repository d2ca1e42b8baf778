// Peer URLs as etcd reads them (etcd: client/pkg/types/urls.go NewURLs), on top of the part of
// Go's url.Parse and url.URL.String() that such URLs exercise (Go 1.19 net/url, the Go etcd 3.4.23
// is built with). Two things depend on it being exact:
//  - member ids hash the URL *as Go prints it back* (url.String()), not as typed: "HTTP://h:1"
//    becomes "http://h:1", "http://h:1?" keeps its "?", a non-ASCII host byte is %-escaped;
//  - the errors a bad URL gives ("URL scheme must be http, https, unix, or unixs: x", Go's
//    'parse "x": invalid URL escape "%zz"') are etcd's, byte for byte.
// Pure: no I/O, no DNS (etcd resolves host names when it compares URL lists; see
// bootstrap_config.ts for how concord takes resolved names).
import { isIPv4, isIPv6 } from 'node:net';
import { compareGoStrings } from './ids';

/** A URL etcd refuses, with etcd's message. */
export class UrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UrlError';
  }
}

// ---- Go formatting helpers ----------------------------------------------------------------

const printableRe = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;

/** Go strconv.Quote (what %q prints for a string). */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (cp === 0x20 || (cp > 0x20 && cp < 0x7f)) out += ch;
    else if (cp === 0x07) out += '\\a';
    else if (cp === 0x08) out += '\\b';
    else if (cp === 0x0c) out += '\\f';
    else if (cp === 0x0a) out += '\\n';
    else if (cp === 0x0d) out += '\\r';
    else if (cp === 0x09) out += '\\t';
    else if (cp === 0x0b) out += '\\v';
    else if (cp < 0x20 || cp === 0x7f) out += '\\x' + cp.toString(16).padStart(2, '0');
    else if (cp >= 0xd800 && cp <= 0xdfff) out += '\\ufffd'; // a lone surrogate: not UTF-8
    else if (printableRe.test(ch)) out += ch;
    else if (cp < 0x10000) out += '\\u' + cp.toString(16).padStart(4, '0');
    else out += '\\U' + cp.toString(16).padStart(8, '0');
  }
  return out + '"';
}

/** Go %q of a []string: ["a" "b"]. */
export function goQuoteList(list: readonly string[]): string {
  return '[' + list.map(goQuote).join(' ') + ']';
}

/** Go strings.TrimSpace (unicode.IsSpace; unlike String.prototype.trim it keeps U+FEFF). */
export function goTrimSpace(s: string): string {
  return s.replace(/^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/, '')
    .replace(/[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/, '');
}

// ---- Go net/url, the subset peer URLs use -----------------------------------------------------

const enum Mode { Path, Host, Zone, UserPassword, Fragment }

/** A parsed URL: the fields etcd looks at, and the text url.String() gives back. */
export interface GoUrl {
  scheme: string;
  /** host[:port], unescaped, as url.URL.Host. */
  host: string;
  /** Unescaped path. */
  path: string;
  opaque: string;
  /** url.URL.String(). */
  text: string;
}

function isAlnum(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39);
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
}

function unhex(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return c - 0x41 + 10;
}

/** Go net/url shouldEscape for the modes used here. */
function shouldEscape(c: number, mode: Mode): boolean {
  if (isAlnum(c)) return false;
  if (mode === Mode.Host || mode === Mode.Zone) {
    // ! $ & ' ( ) * + , ; = : [ ] < > "
    if ('!$&\'()*+,;=:[]<>"'.includes(String.fromCharCode(c))) return false;
  }
  if (c === 0x2d || c === 0x5f || c === 0x2e || c === 0x7e) return false; // - _ . ~
  if ('$&+,/:;=?@'.includes(String.fromCharCode(c))) {
    switch (mode) {
      case Mode.Path: return c === 0x3f; // ?
      case Mode.UserPassword: return c === 0x40 || c === 0x2f || c === 0x3f || c === 0x3a; // @ / ? :
      case Mode.Fragment: return false;
      default: break;
    }
  }
  if (mode === Mode.Fragment && (c === 0x21 || c === 0x28 || c === 0x29 || c === 0x2a)) return false;
  return true;
}

function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('latin1');
}

/** Go net/url unescape on UTF-8 bytes; returns bytes, or throws Go's error text. */
function unescape(s: Uint8Array, mode: Mode): Uint8Array {
  for (let i = 0; i < s.length;) {
    const c = s[i]!;
    if (c === 0x25) {
      if (i + 2 >= s.length || !isHex(s[i + 1]!) || !isHex(s[i + 2]!)) {
        throw new UrlError('invalid URL escape ' + goQuote(latin1(s.subarray(i, i + 3))));
      }
      const three = latin1(s.subarray(i, i + 3));
      if (mode === Mode.Host && unhex(s[i + 1]!) < 8 && three !== '%25') {
        throw new UrlError('invalid URL escape ' + goQuote(three));
      }
      if (mode === Mode.Zone) {
        const v = (unhex(s[i + 1]!) << 4) | unhex(s[i + 2]!);
        if (three !== '%25' && v !== 0x20 && shouldEscape(v, Mode.Host)) {
          throw new UrlError('invalid URL escape ' + goQuote(three));
        }
      }
      i += 3;
    } else {
      if ((mode === Mode.Host || mode === Mode.Zone) && c < 0x80 && shouldEscape(c, mode)) {
        throw new UrlError('invalid character ' + goQuote(String.fromCharCode(c)) + ' in host name');
      }
      i++;
    }
  }
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === 0x25) {
      out.push((unhex(s[i + 1]!) << 4) | unhex(s[i + 2]!));
      i += 2;
    } else {
      out.push(s[i]!);
    }
  }
  return Uint8Array.from(out);
}

const upperHex = '0123456789ABCDEF';

/** Go net/url escape: bytes in, ASCII text out. */
function escape(s: Uint8Array, mode: Mode): string {
  let out = '';
  for (const c of s) {
    out += shouldEscape(c, mode) ? '%' + upperHex[c >> 4]! + upperHex[c & 15]! : String.fromCharCode(c);
  }
  return out;
}

/** Go net/url validEncoded. */
function validEncoded(s: Uint8Array, mode: Mode): boolean {
  for (const c of s) {
    if ('!$&\'()*+,;=:@[]%'.includes(String.fromCharCode(c))) continue;
    if (shouldEscape(c, mode)) return false;
  }
  return true;
}

function utf8(s: string): Uint8Array {
  return Buffer.from(s, 'utf8');
}

function fromUtf8(b: Uint8Array): string {
  return Buffer.from(b).toString('utf8');
}

function validOptionalPort(port: string): boolean {
  if (port === '') return true;
  if (port[0] !== ':') return false;
  return /^:[0-9]*$/.test(port);
}

interface Authority { user: string | null; host: Uint8Array }

function parseHost(host: string): Uint8Array {
  if (host.startsWith('[')) {
    const i = host.lastIndexOf(']');
    if (i < 0) throw new UrlError("missing ']' in host");
    const colonPort = host.slice(i + 1);
    if (!validOptionalPort(colonPort)) throw new UrlError(`invalid port ${goQuote(colonPort)} after host`);
    const zone = host.slice(0, i).indexOf('%25');
    if (zone >= 0) {
      const a = unescape(utf8(host.slice(0, zone)), Mode.Host);
      const b = unescape(utf8(host.slice(zone, i)), Mode.Zone);
      const c = unescape(utf8(host.slice(i)), Mode.Host);
      return Uint8Array.from([...a, ...b, ...c]);
    }
  } else {
    const i = host.lastIndexOf(':');
    if (i !== -1) {
      const colonPort = host.slice(i);
      if (!validOptionalPort(colonPort)) throw new UrlError(`invalid port ${goQuote(colonPort)} after host`);
    }
  }
  return unescape(utf8(host), Mode.Host);
}

function parseAuthority(authority: string): Authority {
  const i = authority.lastIndexOf('@');
  const host = parseHost(i < 0 ? authority : authority.slice(i + 1));
  if (i < 0) return { user: null, host };
  const userinfo = authority.slice(0, i);
  if (!/^[A-Za-z0-9\-._:~!$&'()*+,;=%@]*$/.test(userinfo)) throw new UrlError('net/url: invalid userinfo');
  const colon = userinfo.indexOf(':');
  let user: string;
  if (colon < 0) {
    user = escape(unescape(utf8(userinfo), Mode.UserPassword), Mode.UserPassword);
  } else {
    const name = unescape(utf8(userinfo.slice(0, colon)), Mode.UserPassword);
    const password = unescape(utf8(userinfo.slice(colon + 1)), Mode.UserPassword);
    user = escape(name, Mode.UserPassword) + ':' + escape(password, Mode.UserPassword);
  }
  return { user, host };
}

/** The scheme and the rest (Go getScheme). */
function getScheme(raw: string): [string, string] {
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if ((c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a)) continue;
    if ((c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2d || c === 0x2e) {
      if (i === 0) return ['', raw];
      continue;
    }
    if (c === 0x3a) {
      if (i === 0) throw new UrlError('missing protocol scheme');
      return [raw.slice(0, i), raw.slice(i + 1)];
    }
    return ['', raw];
  }
  return ['', raw];
}

/** Go url.Parse(raw) for the forms peer URLs take; throws Go's error text ('parse "x": ...'). */
export function parseGoUrl(raw: string): GoUrl {
  const hash = raw.indexOf('#');
  const u = hash < 0 ? raw : raw.slice(0, hash);
  const frag = hash < 0 ? '' : raw.slice(hash + 1);
  let parsed: GoUrl;
  try {
    parsed = parseNoFragment(u);
  } catch (err) {
    if (!(err instanceof UrlError)) throw err;
    throw new UrlError(`parse ${goQuote(u)}: ${err.message}`);
  }
  if (frag === '') return parsed;
  let fragBytes: Uint8Array;
  try {
    fragBytes = unescape(utf8(frag), Mode.Fragment);
  } catch (err) {
    if (!(err instanceof UrlError)) throw err;
    throw new UrlError(`parse ${goQuote(raw)}: ${err.message}`);
  }
  // url.EscapedFragment(): the fragment as typed when that is a valid encoding of it.
  const rawFrag = utf8(frag);
  const shown = validEncoded(rawFrag, Mode.Fragment) ? frag : escape(fragBytes, Mode.Fragment);
  return { ...parsed, text: parsed.text + '#' + shown };
}

function parseNoFragment(raw: string): GoUrl {
  if (/[\x00-\x1f\x7f]/.test(raw)) throw new UrlError('net/url: invalid control character in URL');
  if (raw === '') return { scheme: '', host: '', path: '', opaque: '', text: '' };
  if (raw === '*') return { scheme: '', host: '', path: '*', opaque: '', text: '*' };
  let [scheme, rest] = getScheme(raw);
  scheme = scheme.toLowerCase();
  let query = '';
  let forceQuery = false;
  if (rest.endsWith('?') && rest.split('?').length === 2) {
    forceQuery = true;
    rest = rest.slice(0, -1);
  } else {
    const q = rest.indexOf('?');
    if (q >= 0) {
      query = rest.slice(q + 1);
      rest = rest.slice(0, q);
    }
  }
  const querySuffix = forceQuery || query !== '' ? '?' + query : '';
  if (!rest.startsWith('/')) {
    if (scheme !== '') {
      return { scheme, host: '', path: '', opaque: rest, text: `${scheme}:${rest}${querySuffix}` };
    }
    const segment = rest.split('/', 1)[0]!;
    if (segment.includes(':')) throw new UrlError('first path segment in URL cannot contain colon');
  }
  let authority: Authority | null = null;
  if (rest.startsWith('//') && (scheme !== '' || !rest.startsWith('///'))) {
    let a = rest.slice(2);
    rest = '';
    const slash = a.indexOf('/');
    if (slash >= 0) {
      rest = a.slice(slash);
      a = a.slice(0, slash);
    }
    authority = parseAuthority(a);
  }
  const pathBytes = unescape(utf8(rest), Mode.Path);
  const host = authority === null ? '' : fromUtf8(authority.host);
  const path = fromUtf8(pathBytes);
  // url.String(), for the case that matters here (no opaque part).
  let text = scheme === '' ? '' : scheme + ':';
  if (scheme !== '' || host !== '' || (authority !== null && authority.user !== null)) {
    if (host !== '' || path !== '' || (authority !== null && authority.user !== null)) text += '//';
    if (authority !== null && authority.user !== null) text += authority.user + '@';
    if (authority !== null && host !== '') text += escape(authority.host, Mode.Host);
  }
  // EscapedPath(): the path as typed when it is a valid encoding of it.
  const rawPath = utf8(rest);
  const escapedPath = validEncoded(rawPath, Mode.Path) ? rest : escape(pathBytes, Mode.Path);
  if (escapedPath !== '' && escapedPath[0] !== '/' && host !== '') text += '/';
  text += escapedPath + querySuffix;
  return { scheme, host, path, opaque: '', text };
}

/** Go net.SplitHostPort: the host, or null when the address has no valid host:port form. */
export function splitHostPort(hostport: string): { host: string; port: string } | null {
  const i = hostport.lastIndexOf(':');
  if (i < 0) return null;
  let host: string;
  let j = 0;
  let k = 0;
  if (hostport[0] === '[') {
    const end = hostport.indexOf(']');
    if (end < 0) return null;
    if (end + 1 !== i) return null;
    host = hostport.slice(1, end);
    j = 1;
    k = end + 1;
  } else {
    host = hostport.slice(0, i);
    if (host.includes(':')) return null;
  }
  if (hostport.slice(j).includes('[')) return null;
  if (hostport.slice(k).includes(']')) return null;
  return { host, port: hostport.slice(i + 1) };
}

/** Go net.ParseIP(host) !== nil (no zones; IPv4 without leading zeros). */
export function isGoIp(host: string): boolean {
  if (host.includes('%')) return false;
  if (isIPv4(host)) return !/(^|\.)0\d/.test(host);
  return isIPv6(host);
}

/**
 * etcd types.NewURLs: each value trimmed, parsed, checked (scheme http/https/unix/unixs,
 * host:port, no path); returns url.String() of each, sorted (Go sort.Strings). Throws etcd's
 * message for the first bad value. An empty list is refused ('no valid URLs given').
 */
export function parsePeerUrls(values: readonly string[]): string[] {
  if (values.length === 0) throw new UrlError('no valid URLs given');
  const out: string[] = [];
  for (const value of values) {
    const v = goTrimSpace(value);
    const u = parseGoUrl(v);
    if (u.scheme !== 'http' && u.scheme !== 'https' && u.scheme !== 'unix' && u.scheme !== 'unixs') {
      throw new UrlError(`URL scheme must be http, https, unix, or unixs: ${v}`);
    }
    if (splitHostPort(u.host) === null) throw new UrlError(`URL address does not have the form "host:port": ${v}`);
    if (u.path !== '') throw new UrlError(`URL must not contain a path: ${v}`);
    out.push(u.text);
  }
  return out.sort(compareGoStrings);
}

/** The host part of a URL that parsePeerUrls accepted (brackets of an IPv6 address removed). */
export function hostOfUrl(url: string): string {
  const hp = splitHostPort(parseGoUrl(url).host);
  return hp === null ? '' : hp.host;
}
