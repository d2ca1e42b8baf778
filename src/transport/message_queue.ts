// A bounded FIFO of raft messages waiting for one peer connection, bounded in count AND bytes
// (etcd's stream buffer bounds the count only: 4096). A ring with a power-of-two capacity and a
// mask (undici fixed-queue.js), so push and shift never move the other items.
import { assert } from '../util/assert';
import { Message } from '../raft/types';

export class MessageQueue {
  private readonly messages: (Message | null)[];
  /** messageBytes(messages[i]): the encoded size, computed once at push. */
  private readonly sizes: Float64Array;
  private readonly mask: number;
  private head = 0;
  // Invariant: 0 <= count <= countMax <= capacity; bytes = sum of sizes of the queued items.
  private count = 0;
  private bytes = 0;

  constructor(readonly countMax: number, readonly bytesMax: number) {
    assert(Number.isInteger(countMax) && countMax > 0, 'queue countMax');
    assert(bytesMax > 0, 'queue bytesMax');
    let capacity = 1;
    while (capacity < countMax) capacity *= 2;
    this.messages = new Array<Message | null>(capacity).fill(null);
    this.sizes = new Float64Array(capacity);
    this.mask = capacity - 1;
  }

  get length(): number {
    return this.count;
  }

  get byteLength(): number {
    return this.bytes;
  }

  /** Whether a message of `size` bytes fits (check before push: push asserts it). */
  fits(size: number): boolean {
    return this.count < this.countMax && this.bytes + size <= this.bytesMax;
  }

  push(m: Message, size: number): void {
    assert(this.fits(size), 'push into a full message queue');
    const at = (this.head + this.count) & this.mask;
    this.messages[at] = m;
    this.sizes[at] = size;
    this.count++;
    this.bytes += size;
  }

  /** Size of the i-th queued message (0 = the oldest). */
  sizeAt(i: number): number {
    assert(i >= 0 && i < this.count, 'queue index');
    return this.sizes[(this.head + i) & this.mask]!;
  }

  shift(): Message {
    assert(this.count > 0, 'shift from an empty message queue');
    const at = this.head;
    const m = this.messages[at]!;
    this.messages[at] = null;
    this.bytes -= this.sizes[at]!;
    this.head = (at + 1) & this.mask;
    this.count--;
    return m;
  }

  /** Drops everything; returns how many messages were dropped. */
  clear(): number {
    const n = this.count;
    while (this.count > 0) this.shift();
    assert(this.bytes === 0, 'queue bytes after clear');
    return n;
  }
}
