// The window of MsgApp messages in flight to one follower (etcd-io/raft tracker/inflights.go),
// bounded by count (inflightMsgsMax, etcd MaxInflightMsgs) and by bytes (inflightBytesMax, etcd
// MaxInflightBytes: it bounds the bandwidth-delay product; 1 MiB at 100 ms RTT caps replication
// at 10 MiB/s).
//
// Each entry is the last log index of one message and its payload bytes. full() must be checked
// before add(), and indexes must be added in increasing order; an ack of index i frees every
// message whose last index is <= i.
//
// A ring buffer that grows by doubling up to countMax, so an idle follower costs a few slots.
import { assert } from '../../util/assert';

const initialCapacity = 8;

export class Inflights {
  readonly countMax: number;
  readonly bytesMax: number;
  /** Ring: slot (start + k) % capacity holds the k-th oldest message. */
  private indexes: number[];
  private sizes: number[];
  private start: number;
  private countNow: number;
  private bytesNow: number;

  constructor(countMax: number, bytesMax: number) {
    assert(Number.isSafeInteger(countMax) && countMax > 0, 'inflight count limit');
    assert(bytesMax > 0, 'inflight bytes limit');
    this.countMax = countMax;
    this.bytesMax = bytesMax;
    this.indexes = [];
    this.sizes = [];
    this.start = 0;
    this.countNow = 0;
    this.bytesNow = 0;
  }

  count(): number {
    return this.countNow;
  }

  bytes(): number {
    return this.bytesNow;
  }

  /** No more messages may be sent (etcd Full: either limit reached). */
  full(): boolean {
    return this.countNow === this.countMax || this.bytesNow >= this.bytesMax;
  }

  /** Records a message whose last entry is `index`, carrying `bytes`. */
  add(index: number, bytes: number): void {
    assert(!this.full(), 'add to full inflights');
    assert(bytes >= 0, 'inflight bytes');
    if (this.countNow > 0) assert(index > this.newest(), 'inflight indexes must increase');
    if (this.countNow === this.indexes.length) this.grow();
    const slot = (this.start + this.countNow) % this.indexes.length;
    this.indexes[slot] = index;
    this.sizes[slot] = bytes;
    this.countNow++;
    this.bytesNow += bytes;
  }

  /** Frees every message whose last index is <= `to` (an ack or a probe success up to `to`). */
  freeLE(to: number): void {
    const cap = this.indexes.length;
    while (this.countNow > 0 && this.indexes[this.start]! <= to) {
      this.bytesNow -= this.sizes[this.start]!;
      this.start = (this.start + 1) % cap;
      this.countNow--;
    }
    if (this.countNow === 0) this.start = 0;
    assert(this.bytesNow >= 0, 'inflight bytes underflow');
  }

  reset(): void {
    this.start = 0;
    this.countNow = 0;
    this.bytesNow = 0;
  }

  private newest(): number {
    return this.indexes[(this.start + this.countNow - 1) % this.indexes.length]!;
  }

  private grow(): void {
    const cap = this.indexes.length;
    const next = Math.min(this.countMax, cap === 0 ? initialCapacity : cap * 2);
    assert(next > cap, 'inflights cannot grow');
    const indexes = new Array<number>(next);
    const sizes = new Array<number>(next);
    for (let k = 0; k < this.countNow; k++) {
      indexes[k] = this.indexes[(this.start + k) % cap]!;
      sizes[k] = this.sizes[(this.start + k) % cap]!;
    }
    this.indexes = indexes;
    this.sizes = sizes;
    this.start = 0;
  }
}
