// Slows down password guessing (beyond etcd, which answers every Authenticate as fast as bcrypt
// allows): after a failed Authenticate, the next attempt for the same user name, and the next
// from the same connection (peer address), waits until a delay has passed, doubling with each
// failure in a row (100 ms, 200 ms, ... up to 10 s) and forgotten after a success or after a
// quiet minute. A legitimate client that mistypes once pays 100 ms; a guesser pays ~10 s a try
// per name and per connection.
//
// Bounded: at most `entriesMax` names and peers are remembered (the oldest go first), so a flood
// of made-up names cannot grow memory.

export const loginDelayFirstMs = 100;
export const loginDelayMaxMs = 10_000;
/** Failures older than this are forgotten. */
export const loginForgetMs = 60_000;

interface Entry {
  failures: number;
  /** No attempt is judged before this time. */
  notBefore: number;
  lastFailure: number;
}

export class LoginThrottle {
  private readonly byName = new Map<string, Entry>();
  private readonly byPeer = new Map<string, Entry>();
  private readonly now: () => number;
  private readonly entriesMax: number;

  constructor(now: () => number, entriesMax = 10_000) {
    this.now = now;
    this.entriesMax = entriesMax;
  }

  /** How long an attempt for `name` from `peer` must wait before it is judged (0: at once). */
  waitMs(name: string, peer: string): number {
    const now = this.now();
    return Math.max(this.remaining(this.byName, name, now), this.remaining(this.byPeer, peer, now));
  }

  failed(name: string, peer: string): void {
    const now = this.now();
    this.bump(this.byName, name, now);
    this.bump(this.byPeer, peer, now);
  }

  succeeded(name: string, peer: string): void {
    this.byName.delete(name);
    this.byPeer.delete(peer);
  }

  private remaining(m: Map<string, Entry>, k: string, now: number): number {
    const e = m.get(k);
    if (e === undefined) return 0;
    if (now - e.lastFailure > loginForgetMs) {
      m.delete(k);
      return 0;
    }
    return Math.max(0, e.notBefore - now);
  }

  private bump(m: Map<string, Entry>, k: string, now: number): void {
    let e = m.get(k);
    if (e === undefined || now - e.lastFailure > loginForgetMs) {
      e = { failures: 0, notBefore: now, lastFailure: now };
    } else {
      m.delete(k); // re-inserted below: the map's order is the order of last failure
    }
    e.failures++;
    e.lastFailure = now;
    e.notBefore = now + Math.min(loginDelayMaxMs, loginDelayFirstMs * 2 ** Math.min(e.failures - 1, 20));
    m.set(k, e);
    if (m.size > this.entriesMax) m.delete(m.keys().next().value as string);
  }
}
