// The simulator's agenda: a binary min-heap of events by (time, insertion order), so that events
// at the same virtual time run in the order they were scheduled (determinism).
import { Message } from '../../src/raft/types';

export const enum EventKind {
  Tick = 1,
  Deliver = 2,
  DiskDone = 3,
  Notify = 4,
  SnapReport = 5,
  Restart = 6,
  LeaderFault = 7,
}

export interface SimEvent {
  time: number;
  order: number;
  kind: EventKind;
  /** The node the event is for. */
  node: number;
  /** The node's incarnation when scheduled: events of a crashed incarnation are dropped. */
  inc: number;
  msg: Message | null;
  /** Write seq (DiskDone, Notify), peer id (SnapReport). */
  arg: number;
  ok: boolean;
}

export class EventQueue {
  private heap: SimEvent[] = [];
  private nextOrder = 0;

  get size(): number {
    return this.heap.length;
  }

  push(time: number, kind: EventKind, node: number, inc: number, msg: Message | null = null,
    arg = 0, ok = true): void {
    const ev: SimEvent = { time, order: this.nextOrder++, kind, node, inc, msg, arg, ok };
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  pop(): SimEvent | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.time < b.time || (a.time === b.time && a.order < b.order);
}
