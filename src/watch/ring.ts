// Single-producer single-consumer byte ring over a SharedArrayBuffer: the storage worker hands
// committed MVCC events to the watch worker without a postMessage per batch. A postMessage of a
// bare Uint8Array costs ~16 µs round trip here (workers/protocol.ts); a ring write is a memcpy
// plus one Atomics.store, and one notify() per batch wakes the consumer.
//
// Layout (one SharedArrayBuffer, Int32 control slots, then the data region):
//
//   byte 0    DataBytes       capacity of the data region, written once by newRingBuffer()
//   byte 4    Magic           layout check for the side that attaches later
//   byte 8    UserSlots       14 Int32 slots for the two sides' own use (ringUserSlots():
//                             watch/events.ts keeps the kv environment lock there)
//   byte 64   WritePos        producer-owned line: free-running u32 byte position
//   byte 68   NotifySeq       bumped by notify(); the consumer's Atomics.waitAsync slot
//   byte 72   WritesRefused   tryWrite()/reserve() calls refused for lack of space (metrics)
//   byte 76   Overflow        1 after markOverflow(): the producer dropped records
//   byte 128  ReadPos         consumer-owned line: free-running u32 byte position
//   byte 192  data region     DataBytes bytes, a power of two
//
// WritePos and ReadPos sit on separate 64-byte lines so each side's stores do not invalidate the
// line the other side writes (false sharing) on every record.
//
// Positions are free-running u32 byte counters: the offset in the data region is pos & mask and
// the bytes in use are (write - read) >>> 0, exact while DataBytes <= 2^30 < 2^32.
// Invariant: 0 <= (WritePos - ReadPos) >>> 0 <= DataBytes; both positions are multiples of 4.
//
// Records are [u32 length][payload][pad to 4]. A record never splits across the end of the data
// region: when it does not fit in the tail, the producer writes a wrap marker (length
// WRAP_MARKER) in the tail and the record goes at offset 0; the tail counts as used until the
// consumer passes it. Example, DataBytes 32, write at offset 24, a 10-byte payload (16 bytes):
//
//   offset  0          16           24        32
//           [len=10|payload|pad][....][WRAP|...]
//   WritePos advances 8 (tail) + 16 (record) = 24 bytes.
//
// Publication order (the JS memory model orders plain accesses around seq-cst Atomics):
//   producer: write header and payload bytes, then Atomics.store(WritePos)
//   consumer: Atomics.load(WritePos), read the bytes, then Atomics.store(ReadPos)
//   producer: Atomics.load(ReadPos) before it overwrites any byte the consumer may still read.
//
// Exactly one RingProducer and one RingConsumer may use a buffer at a time: each side keeps its
// own position in a field and is the only writer of it.
import { assert } from '../util/assert';

/** Int32 slot indexes of the control block. */
const enum RingSlot {
  DataBytes = 0,
  Magic = 1,
  UserSlots = 2,
  WritePos = 16,
  NotifySeq = 17,
  WritesRefused = 18,
  Overflow = 19,
  ReadPos = 32,
}

const RING_CONTROL_BYTES = 192;
const RING_MAGIC = 0x52494e47; // "RING"
/** Length field of the padding record that sends the consumer back to offset 0. */
const WRAP_MARKER = 0xffffffff;
const RECORD_HEADER_BYTES = 4;
/** Int32 slots after Magic and before the WritePos line, free for the ring's users. */
export const ringUserSlotCount = 14;

/**
 * The ring's user slots (bytes 8..63 of the control block, zero at allocation): shared state of
 * the producer and consumer threads that is not a record (watch/events.ts KvEnvSlots).
 */
export function ringUserSlots(sab: SharedArrayBuffer): Int32Array {
  assert(sab.byteLength > RING_CONTROL_BYTES, 'ring buffer too small');
  const control = new Int32Array(sab, 0, RING_CONTROL_BYTES / 4);
  assert(Atomics.load(control, RingSlot.Magic) === RING_MAGIC, 'not a ring buffer');
  return new Int32Array(sab, RingSlot.UserSlots * 4, ringUserSlotCount);
}

/** Positions are u32 counters: used = (write - read) >>> 0 is only exact below 2^32. */
export const ringDataBytesMax = 1 << 30;
/** Below this a ring holds no useful record (payloadBytesMax would be under 4). */
export const ringDataBytesMin = 16;

/**
 * Allocates a ring with a `dataBytes` data region (a power of two). The storage worker makes it
 * and sends the SharedArrayBuffer to the watch worker once, at start-up.
 */
export function newRingBuffer(dataBytes: number): SharedArrayBuffer {
  assert(Number.isInteger(dataBytes), 'ring size is an integer');
  assert(dataBytes >= ringDataBytesMin, 'ring size below min');
  assert(dataBytes <= ringDataBytesMax, 'ring size above max');
  assert((dataBytes & (dataBytes - 1)) === 0, 'ring size is a power of two');
  const sab = new SharedArrayBuffer(RING_CONTROL_BYTES + dataBytes);
  const control = new Int32Array(sab, 0, RING_CONTROL_BYTES / 4);
  control[RingSlot.DataBytes] = dataBytes;
  control[RingSlot.Magic] = RING_MAGIC;
  return sab;
}

function recordBytes(payloadBytes: number): number {
  return RECORD_HEADER_BYTES + ((payloadBytes + 3) & ~3);
}

/** Views and metrics both sides share; the position fields live in the subclasses. */
class RingView {
  readonly control: Int32Array;
  protected readonly data: Uint8Array;
  /** The data region as u32 words, for record headers (native byte order: same process). */
  protected readonly words: Uint32Array;
  readonly capacityBytes: number;
  protected readonly mask: number;
  /**
   * Largest payload a record can carry: half the ring less the header. Any record up to this
   * fits once the consumer has caught up, wherever the write position is: an empty ring has
   * max(tail, offset) >= capacityBytes / 2 contiguous bytes. A larger record might wait forever
   * for the position to come round to 0, so reserve() refuses it outright.
   */
  readonly payloadBytesMax: number;

  constructor(sab: SharedArrayBuffer) {
    assert(sab.byteLength > RING_CONTROL_BYTES, 'ring buffer too small');
    this.control = new Int32Array(sab, 0, RING_CONTROL_BYTES / 4);
    assert(Atomics.load(this.control, RingSlot.Magic) === RING_MAGIC, 'not a ring buffer');
    const dataBytes = Atomics.load(this.control, RingSlot.DataBytes);
    assert(sab.byteLength === RING_CONTROL_BYTES + dataBytes, 'ring size mismatch');
    this.data = new Uint8Array(sab, RING_CONTROL_BYTES, dataBytes);
    this.words = new Uint32Array(sab, RING_CONTROL_BYTES, dataBytes / 4);
    this.capacityBytes = dataBytes;
    this.mask = dataBytes - 1;
    this.payloadBytesMax = dataBytes / 2 - RECORD_HEADER_BYTES;
  }

  /** Bytes in use (records, headers, padding and wrap tails) as both sides last published. */
  get usedBytes(): number {
    const used = (Atomics.load(this.control, RingSlot.WritePos) -
      Atomics.load(this.control, RingSlot.ReadPos)) >>> 0;
    assert(used <= this.capacityBytes, 'ring used exceeds capacity');
    return used;
  }

  /** usedBytes / capacityBytes, in [0, 1], for metrics. */
  get occupancy(): number {
    return this.usedBytes / this.capacityBytes;
  }

  get writesRefused(): number {
    return Atomics.load(this.control, RingSlot.WritesRefused);
  }
}

/**
 * The storage worker's side. Never blocks: a write that does not fit returns false and the
 * caller decides (retry on the next turn, or drop and markOverflow()). Writes become visible to
 * the consumer at once; notify() wakes a consumer parked in waitAsync(), once per batch.
 */
export class RingProducer extends RingView {
  /** Our WritePos; only this object stores WritePos. */
  private writePos: number;
  /** Position of the reserved record's header, or -1 when nothing is reserved. */
  private reservedPos: number;
  private reservedBytes: number;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.writePos = Atomics.load(this.control, RingSlot.WritePos) >>> 0;
    this.reservedPos = -1;
    this.reservedBytes = 0;
  }

  /** Copies `payload` into the ring as one record; false when it does not fit now. */
  tryWrite(payload: Uint8Array): boolean {
    const view = this.reserve(payload.length);
    if (view === null) return false;
    view.set(payload);
    this.commit(payload.length);
    return true;
  }

  /**
   * Reserves room for a record of up to `payloadBytes` and returns a view of its payload bytes
   * to encode into in place, or null when it does not fit now (or ever: payloadBytes >
   * payloadBytesMax). Nothing is visible to the consumer until commit(); a reservation that is
   * not committed is given up by the next reserve() or by abort().
   */
  reserve(payloadBytes: number): Uint8Array | null {
    assert(Number.isInteger(payloadBytes), 'payload size is an integer');
    assert(payloadBytes >= 0, 'payload size is negative');
    this.reservedPos = -1;
    const need = recordBytes(payloadBytes);
    if (payloadBytes > this.payloadBytesMax) return this.refuse();
    const readPos = Atomics.load(this.control, RingSlot.ReadPos) >>> 0;
    const used = (this.writePos - readPos) >>> 0;
    assert(used <= this.capacityBytes, 'ring positions crossed');
    const free = this.capacityBytes - used;
    const offset = this.writePos & this.mask;
    const tail = this.capacityBytes - offset;
    let start = this.writePos;
    if (need > tail) {
      // The record would split: the tail becomes padding and the record starts at offset 0.
      if (free < tail + need) return this.refuse();
      this.words[offset >>> 2] = WRAP_MARKER;
      start = (this.writePos + tail) >>> 0;
    } else if (free < need) {
      return this.refuse();
    }
    this.reservedPos = start;
    this.reservedBytes = payloadBytes;
    const at = (start & this.mask) + RECORD_HEADER_BYTES;
    return this.data.subarray(at, at + payloadBytes);
  }

  /** Publishes the reserved record with its final size (at most the reserved size). */
  commit(payloadBytes: number): void {
    assert(this.reservedPos >= 0, 'commit without reserve');
    assert(Number.isInteger(payloadBytes), 'payload size is an integer');
    assert(payloadBytes >= 0, 'payload size is negative');
    assert(payloadBytes <= this.reservedBytes, 'commit larger than reservation');
    const start = this.reservedPos;
    this.words[(start & this.mask) >>> 2] = payloadBytes;
    this.writePos = (start + recordBytes(payloadBytes)) >>> 0;
    this.reservedPos = -1;
    // After the bytes: the consumer that loads this position sees everything before it.
    Atomics.store(this.control, RingSlot.WritePos, this.writePos | 0);
  }

  /** Gives up the reservation; nothing was published. */
  abort(): void {
    this.reservedPos = -1;
  }

  /** Wakes a consumer waiting in waitAsync(). Call once per batch of writes, after them. */
  notify(): void {
    Atomics.add(this.control, RingSlot.NotifySeq, 1);
    Atomics.notify(this.control, RingSlot.NotifySeq);
  }

  /**
   * Records that the caller dropped records it could not write: the consumer has a gap and must
   * resync from mvcc (etcd: a watcher that falls behind becomes unsynced). Sticky until the
   * consumer takes it.
   */
  markOverflow(): void {
    Atomics.store(this.control, RingSlot.Overflow, 1);
  }

  private refuse(): null {
    Atomics.add(this.control, RingSlot.WritesRefused, 1);
    return null;
  }
}

/** Node 20 has Atomics.waitAsync; lib ES2022 does not declare it. */
type WaitAsyncResult = { async: false; value: string } | { async: true; value: Promise<string> };
type WaitAsync = (a: Int32Array, index: number, value: number, timeoutMs?: number) =>
  WaitAsyncResult;
const atomicsWaitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;
assert(typeof atomicsWaitAsync === 'function', 'Atomics.waitAsync is missing');

/**
 * The watch worker's side. read() returns copies; readAll() lends views that are valid only
 * inside the visit call, because the producer may overwrite those bytes as soon as it returns.
 */
export class RingConsumer extends RingView {
  /** Our ReadPos; only this object stores ReadPos. */
  private readPos: number;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.readPos = Atomics.load(this.control, RingSlot.ReadPos) >>> 0;
  }

  /** True when a record was published that we have not consumed. */
  hasData(): boolean {
    return (Atomics.load(this.control, RingSlot.WritePos) >>> 0) !== this.readPos;
  }

  /** The next record as a copy in its own ArrayBuffer (safe to keep or transfer), or null. */
  read(): Uint8Array | null {
    const writePos = Atomics.load(this.control, RingSlot.WritePos) >>> 0;
    if (writePos === this.readPos) return null;
    const view = this.nextView(writePos);
    const copy = new Uint8Array(view.length);
    copy.set(view);
    this.release(view.length);
    return copy;
  }

  /**
   * Visits every record published when the call starts (bounded: records published meanwhile
   * wait for the next call) with a view into the ring. The view is valid only until `visit`
   * returns: its space is handed back to the producer right after. If `visit` throws, that
   * record stays unread. Returns the count of records visited.
   */
  readAll(visit: (payload: Uint8Array) => void): number {
    const writePos = Atomics.load(this.control, RingSlot.WritePos) >>> 0;
    let count = 0;
    while (this.readPos !== writePos) {
      const view = this.nextView(writePos);
      visit(view);
      this.release(view.length);
      count++;
    }
    return count;
  }

  /**
   * Resolves when new data may be there: at once if a record is unread, else when the producer
   * calls notify() (or after `timeoutMs`). No spinning: the wait is Atomics.waitAsync on the
   * notify counter, read before the emptiness check so a notify() in between is not lost.
   * NB: a pending wait does not keep the event loop alive by itself.
   */
  waitAsync(timeoutMs?: number): Promise<void> {
    const seq = Atomics.load(this.control, RingSlot.NotifySeq);
    if (this.hasData()) return Promise.resolve();
    const result = atomicsWaitAsync(this.control, RingSlot.NotifySeq, seq, timeoutMs);
    if (!result.async) return Promise.resolve();
    return result.value.then(ignoreWaitResult);
  }

  /** True (once) if the producer dropped records since the last call: resync needed. */
  takeOverflow(): boolean {
    return Atomics.exchange(this.control, RingSlot.Overflow, 0) === 1;
  }

  /** View of the record at readPos (skipping a wrap marker); readPos must be behind writePos. */
  private nextView(writePos: number): Uint8Array {
    let offset = this.readPos & this.mask;
    let length = this.words[offset >>> 2]!;
    if (length === WRAP_MARKER) {
      this.readPos = (this.readPos + this.capacityBytes - offset) >>> 0;
      assert(this.readPos !== writePos, 'ring wrap marker without a record');
      offset = 0;
      length = this.words[0]!;
    }
    assert(length <= this.payloadBytesMax, 'ring record length corrupt');
    assert(recordBytes(length) <= ((writePos - this.readPos) >>> 0), 'ring record past write');
    return this.data.subarray(offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length);
  }

  /** Hands the record's space (and any wrap tail skipped before it) back to the producer. */
  private release(payloadBytes: number): void {
    this.readPos = (this.readPos + recordBytes(payloadBytes)) >>> 0;
    // After we are done with the bytes: the producer may overwrite them once it loads this.
    Atomics.store(this.control, RingSlot.ReadPos, this.readPos | 0);
  }
}

function ignoreWaitResult(): void {}
