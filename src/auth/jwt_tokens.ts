// JWT auth tokens (etcd --auth-token jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>,ttl=<d>;
// etcd: auth/jwt.go and auth/options.go, 3.4.10+ and 3.5).
//
// A token is a JWS signed with the member's private key (or HMAC secret) carrying the claims
// "username", "revision" (the auth revision when it was issued) and "exp" (Unix seconds, issue
// time + ttl, default 5m). Tokens are not stored anywhere: any member with the public key
// verifies them, so a token from one member is good on every member configured with the same
// keys. A member given only pub-key verifies but cannot issue (Authenticate answers etcd's
// "token signing attempted with verify-only key").
//
// Signing (once per Authenticate) goes through `jose`. Verifying happens on every request that
// carries a token, on the main thread, inside callers that are synchronous (AuthGate.callerOf),
// so it uses node:crypto's synchronous verify; a verified token is cached by its string until its
// exp (bounded), so a client reusing its token pays the signature check once.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { SignJWT } from 'jose';

/** Sign methods etcd accepts (golang-jwt's RSA, RSA-PSS, ECDSA and HMAC families). */
const signMethods = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'HS256', 'HS384', 'HS512'] as const;
export type SignMethod = typeof signMethods[number];

/** The curve each ECDSA method needs (node's names) and its signature's size in bytes. */
const ecCurves: Record<string, { curve: string; sigBytes: number }> = {
  ES256: { curve: 'prime256v1', sigBytes: 64 },
  ES384: { curve: 'secp384r1', sigBytes: 96 },
  ES512: { curve: 'secp521r1', sigBytes: 132 },
};

/** etcd's default token lifetime (auth/options.go DefaultTTL). */
export const jwtDefaultTtlMs = 5 * 60_000;

/** How many verified tokens a member remembers (oldest forgotten first). */
export const jwtCacheMax = 4096;

/** A start-up error of the jwt token provider (etcd prints these and exits 1). */
export class JwtOptionsError extends Error {}

/** The parsed `--auth-token jwt,...` options, keys loaded. */
export interface JwtOptions {
  signMethod: SignMethod;
  ttlMs: number;
  /** The private key or HMAC secret; null on a verify-only member. */
  signKey: crypto.KeyObject | null;
  /** The public key or HMAC secret. */
  verifyKey: crypto.KeyObject;
  /** Option names etcd does not know (it warns and goes on). */
  unknown: string[];
}

export interface JwtClaims {
  user: string;
  revision: number;
  /** Unix seconds. */
  exp: number;
}

const invalidOpts = 'auth: invalid auth options';

/** `--auth-token`'s type: the part before the first comma ('simple' or 'jwt'). */
export function authTokenType(spec: string): string {
  return spec.split(',')[0]!;
}

/**
 * Parses `jwt,k=v,...` and loads the key files, failing as etcd's newTokenProviderJWT does: a
 * bad option or unreadable file is "invalid auth options" (the cause in `detail`), a missing key
 * "missing key data", a key the method cannot use the parse error. Stricter than etcd: a key of
 * the wrong type or curve, and a public key that is not the private key's, are refused here
 * (etcd 3.4 starts and fails at the first Authenticate, or signs with the private key alone).
 */
export function parseJwtOptions(spec: string, readFile: (p: string) => Buffer = (p) => fs.readFileSync(p)): JwtOptions {
  const parts = spec.split(',');
  if (parts[0] !== 'jwt') throw new JwtOptionsError(invalidOpts);
  const opts = new Map<string, string>();
  for (const p of parts.slice(1)) {
    const eq = p.indexOf('=');
    // etcd 3.4 (auth.NewTokenProvider) splits each option at '=' and refuses one without it.
    if (eq < 0) throw new JwtOptionsError(`${invalidOpts} (option ${JSON.stringify(p)} is not key=value)`);
    opts.set(p.slice(0, eq), p.slice(eq + 1));
  }
  const known = new Set(['sign-method', 'pub-key', 'priv-key', 'ttl']);
  const unknown = [...opts.keys()].filter((k) => !known.has(k));
  let ttlMs = jwtDefaultTtlMs;
  const ttlRaw = opts.get('ttl') ?? '';
  if (ttlRaw !== '') {
    const ms = parseDuration(ttlRaw);
    if (ms === null) throw new JwtOptionsError(`${invalidOpts} (time: invalid duration ${JSON.stringify(ttlRaw)})`);
    ttlMs = ms;
  }
  const read = (name: string): Buffer | null => {
    const file = opts.get(name) ?? '';
    if (file === '') return null;
    try {
      return readFile(file);
    } catch (err) {
      // Go's wording (os.PathError), as etcd logs it.
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file or directory' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
      throw new JwtOptionsError(`${invalidOpts} (open ${file}: ${why})`);
    }
  };
  const pubBytes = read('pub-key');
  const privBytes = read('priv-key');
  const method = opts.get('sign-method') ?? '';
  if (!(signMethods as readonly string[]).includes(method)) {
    throw new JwtOptionsError(`${invalidOpts} (auth: invalid auth signature method${method === '' ? '' : ` ${JSON.stringify(method)}`})`);
  }
  const signMethod = method as SignMethod;
  if (signMethod.startsWith('HS')) {
    // HMAC: the priv-key file's bytes are the shared secret (etcd hmacKey).
    if (privBytes === null || privBytes.length === 0) throw new JwtOptionsError('auth: missing key data');
    const secret = crypto.createSecretKey(privBytes);
    return { signMethod, ttlMs, signKey: secret, verifyKey: secret, unknown };
  }
  let priv: crypto.KeyObject | null = null;
  let pub: crypto.KeyObject | null = null;
  try {
    if (privBytes !== null && privBytes.length > 0) priv = crypto.createPrivateKey(privBytes);
  } catch (err) {
    throw new JwtOptionsError(`failed to parse the private key (${opts.get('priv-key')}): ${(err as Error).message}`);
  }
  try {
    if (pubBytes !== null && pubBytes.length > 0) pub = crypto.createPublicKey(pubBytes);
  } catch (err) {
    throw new JwtOptionsError(`failed to parse the public key (${opts.get('pub-key')}): ${(err as Error).message}`);
  }
  if (priv === null && pub === null) throw new JwtOptionsError('auth: missing key data');
  for (const [which, k] of [['private', priv], ['public', pub]] as const) {
    if (k !== null) checkKeyFits(signMethod, k, which);
  }
  const derived = priv === null ? pub! : crypto.createPublicKey(priv);
  if (priv !== null && pub !== null) {
    const a = derived.export({ type: 'spki', format: 'der' });
    const b = pub.export({ type: 'spki', format: 'der' });
    if (!a.equals(b)) throw new JwtOptionsError("auth: public and private keys don't match");
  }
  return { signMethod, ttlMs, signKey: priv, verifyKey: derived, unknown };
}

/** Throws unless `key` is of the kind (and curve) `method` signs with. */
function checkKeyFits(method: SignMethod, key: crypto.KeyObject, which: string): void {
  const type = key.asymmetricKeyType;
  if (method.startsWith('RS') || method.startsWith('PS')) {
    if (type !== 'rsa' && type !== 'rsa-pss') throw new JwtOptionsError(`the ${which} key is not an RSA key (${type}), as ${method} needs`);
    // jose signs with RSA keys of 2048 bits or more only (etcd takes smaller ones): refused at
    // start rather than at every Authenticate.
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048) throw new JwtOptionsError(`the ${which} RSA key has ${bits} bits, ${method} needs 2048 or more`);
    return;
  }
  const want = ecCurves[method]!.curve;
  if (type !== 'ec') throw new JwtOptionsError(`the ${which} key is not an ECDSA key (${type}), as ${method} needs`);
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (curve !== want) throw new JwtOptionsError(`the ${which} key's curve is ${curve}, ${method} needs ${want}`);
}

/** Go's time.ParseDuration (a sign, then number+unit pairs), in ms; null when not one. */
function parseDuration(raw: string): number | null {
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let s = raw;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s[0] === '-') sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '' || !/^((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$/.test(s)) return null;
  let ms = 0;
  for (const m of s.matchAll(/(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) ms += Number(m[1]) * units[m[2]!]!;
  return sign * ms;
}

/** The node:crypto algorithm and options that check `method`'s signatures. */
function verifierOf(method: SignMethod): { hash: string; options: Partial<crypto.VerifyKeyObjectInput> } {
  const hash = `sha${method.slice(2)}`;
  if (method.startsWith('PS')) return { hash, options: { padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: crypto.constants.RSA_PSS_SALTLEN_AUTO } };
  if (method.startsWith('ES')) return { hash, options: { dsaEncoding: 'ieee-p1363' } };
  return { hash, options: {} };
}

/** Signs and verifies a member's JWT tokens; see the file comment. */
export class JwtTokens {
  readonly options: JwtOptions;
  private readonly cache: Map<string, JwtClaims>;
  private readonly nowMs: () => number;
  private readonly verifier: { hash: string; options: Partial<crypto.VerifyKeyObjectInput> };
  /** Signature checks done (cache misses that got as far as the signature); for tests. */
  signatureChecks: number;

  constructor(options: JwtOptions, nowMs: () => number = Date.now) {
    this.options = options;
    this.cache = new Map();
    this.nowMs = nowMs;
    this.verifier = verifierOf(options.signMethod);
    this.signatureChecks = 0;
  }

  get verifyOnly(): boolean {
    return this.options.signKey === null;
  }

  /** A token for `user` at auth revision `revision`, valid for the ttl from now. */
  async sign(user: string, revision: number): Promise<string> {
    if (this.options.signKey === null) throw new Error('auth: token signing attempted with verify-only key');
    const exp = Math.floor((this.nowMs() + this.options.ttlMs) / 1000);
    return new SignJWT({ username: user, revision, exp })
      .setProtectedHeader({ alg: this.options.signMethod, typ: 'JWT' })
      .sign(this.options.signKey);
  }

  /**
   * The claims of a valid token, or null: a signature by another key, another alg than this
   * member's sign method ("none" included), a malformed token, missing claims, or past exp
   * (etcd, via jwt-go: valid while now <= exp, in seconds).
   */
  verify(token: string): JwtClaims | null {
    const nowSec = Math.floor(this.nowMs() / 1000);
    const hit = this.cache.get(token);
    if (hit !== undefined) {
      if (nowSec <= hit.exp) return hit;
      this.cache.delete(token);
      return null;
    }
    const claims = this.check(token, nowSec);
    if (claims === null) return null;
    if (this.cache.size >= jwtCacheMax) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(token, claims);
    return claims;
  }

  get cachedCount(): number {
    return this.cache.size;
  }

  private check(token: string, nowSec: number): JwtClaims | null {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    const [h, p, s] = parts as [string, string, string];
    const header = parseJsonSegment(h);
    if (header === null || header['alg'] !== this.options.signMethod) return null;
    // A critical extension this member does not understand makes the token invalid (RFC 7515).
    if (header['crit'] !== undefined) return null;
    const sig = Buffer.from(s, 'base64url');
    if (sig.length === 0) return null;
    const ec = ecCurves[this.options.signMethod];
    if (ec !== undefined && sig.length !== ec.sigBytes) return null;
    const signed = Buffer.from(`${h}.${p}`);
    this.signatureChecks++;
    let ok: boolean;
    if (this.options.signMethod.startsWith('HS')) {
      const mac = crypto.createHmac(this.verifier.hash, this.options.verifyKey).update(signed).digest();
      ok = mac.length === sig.length && crypto.timingSafeEqual(mac, sig);
    } else {
      try {
        ok = crypto.verify(this.verifier.hash, signed, { key: this.options.verifyKey, ...this.verifier.options }, sig);
      } catch {
        ok = false;
      }
    }
    if (!ok) return null;
    const payload = parseJsonSegment(p);
    if (payload === null) return null;
    const user = payload['username'];
    const revision = payload['revision'];
    const exp = payload['exp'];
    if (typeof user !== 'string' || typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 0) return null;
    // etcd issues every token with exp; one without it (signed by the same key some other way)
    // would never expire: refused.
    if (typeof exp !== 'number' || !Number.isFinite(exp) || nowSec > exp) return null;
    // jwt-go (etcd) also refuses a token used before its nbf or issued in the future (iat).
    const nbf = payload['nbf'];
    const iat = payload['iat'];
    if ((typeof nbf === 'number' && nowSec < nbf) || (typeof iat === 'number' && nowSec < iat)) return null;
    return { user, revision, exp };
  }
}

/** A base64url JSON object segment, or null. */
function parseJsonSegment(seg: string): Record<string, unknown> | null {
  if (!/^[A-Za-z0-9_-]*$/.test(seg)) return null;
  try {
    const v: unknown = JSON.parse(Buffer.from(seg, 'base64url').toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : null;
  } catch {
    return null;
  }
}
