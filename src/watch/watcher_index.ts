// Which watchers does an event's key concern? (etcd: mvcc/watcher_group.go, a map for single
// keys plus an interval tree for ranges.) The watch fan-out asks this once per event, so the
// answer must cost O(log n + matches), not a scan of every watcher.
//
// Keys are latin1 strings (one char per byte, so string order is byte order, as in the MVCC
// index). A watcher covers one key (end null), [key, end) (end a key), or every key >= key
// (end '', etcd's range_end "\0"). Ranges live in a treap keyed by (start, id) and augmented with
// the largest end in each subtree, so a stabbing query skips every subtree that ends before the
// key. The treap's priorities come from a seeded Prng: the shape is deterministic for tests.
import { assert } from '../util/assert';
import { Prng } from '../util/prng';
import type { RangeEnd } from '../mvcc/index';

/** Greater than every latin1 string: stands for "no upper bound". */
const END_INFINITY = '\u0100';

interface Node<T> {
  start: string;
  end: string; // END_INFINITY for open ranges
  id: number;
  value: T;
  priority: number;
  maxEnd: string;
  left: Node<T> | null;
  right: Node<T> | null;
}

function before(aStart: string, aId: number, bStart: string, bId: number): boolean {
  return aStart < bStart || (aStart === bStart && aId < bId);
}

export class WatcherIndex<T> {
  private readonly single = new Map<string, Map<number, T>>();
  private root: Node<T> | null = null;
  /** id -> where it is, for removal. */
  private readonly where = new Map<number, { key: string; end: RangeEnd }>();
  private readonly prng: Prng;

  constructor(seed = 1) {
    this.prng = new Prng(seed);
  }

  get size(): number {
    return this.where.size;
  }

  /** Registers watcher `id` for `key` (end null), [key, end), or key.. (end ''). */
  add(id: number, key: string, end: RangeEnd, value: T): void {
    assert(!this.where.has(id), 'watcher id registered twice');
    this.where.set(id, { key, end });
    if (end === null) {
      let m = this.single.get(key);
      if (m === undefined) {
        m = new Map();
        this.single.set(key, m);
      }
      m.set(id, value);
      return;
    }
    const node: Node<T> = {
      start: key, end: end === '' ? END_INFINITY : end, id, value,
      priority: this.prng.nextU32(), maxEnd: '', left: null, right: null,
    };
    node.maxEnd = node.end;
    this.root = this.insert(this.root, node);
  }

  /** Unregisters watcher `id`; false when it was not registered. */
  remove(id: number): boolean {
    const w = this.where.get(id);
    if (w === undefined) return false;
    this.where.delete(id);
    if (w.end === null) {
      const m = this.single.get(w.key)!;
      m.delete(id);
      if (m.size === 0) this.single.delete(w.key);
      return true;
    }
    this.root = this.erase(this.root, w.key, id);
    return true;
  }

  /** Calls `fn` for every watcher whose key or range contains `key`. */
  visit(key: string, fn: (value: T, id: number) => void): void {
    const m = this.single.get(key);
    if (m !== undefined) for (const [id, v] of m) fn(v, id);
    if (this.root !== null) this.stab(this.root, key, fn);
  }

  /** Calls `fn` for every registered watcher (order unspecified). */
  visitAll(fn: (value: T, id: number) => void): void {
    for (const m of this.single.values()) for (const [id, v] of m) fn(v, id);
    const walk = (n: Node<T> | null): void => {
      if (n === null) return;
      walk(n.left);
      fn(n.value, n.id);
      walk(n.right);
    };
    walk(this.root);
  }

  private stab(n: Node<T>, key: string, fn: (value: T, id: number) => void): void {
    // Nothing below ends after key: no range here contains it.
    if (n.maxEnd <= key) return;
    if (n.left !== null) this.stab(n.left, key, fn);
    // Starts are ordered: this node and everything right of it start after key.
    if (n.start > key) return;
    if (key < n.end) fn(n.value, n.id);
    if (n.right !== null) this.stab(n.right, key, fn);
  }

  private update(n: Node<T>): void {
    let m = n.end;
    if (n.left !== null && n.left.maxEnd > m) m = n.left.maxEnd;
    if (n.right !== null && n.right.maxEnd > m) m = n.right.maxEnd;
    n.maxEnd = m;
  }

  private rotateRight(n: Node<T>): Node<T> {
    const l = n.left!;
    n.left = l.right;
    l.right = n;
    this.update(n);
    this.update(l);
    return l;
  }

  private rotateLeft(n: Node<T>): Node<T> {
    const r = n.right!;
    n.right = r.left;
    r.left = n;
    this.update(n);
    this.update(r);
    return r;
  }

  private insert(n: Node<T> | null, node: Node<T>): Node<T> {
    if (n === null) return node;
    if (before(node.start, node.id, n.start, n.id)) {
      n.left = this.insert(n.left, node);
      if (n.left.priority > n.priority) n = this.rotateRight(n);
    } else {
      n.right = this.insert(n.right, node);
      if (n.right.priority > n.priority) n = this.rotateLeft(n);
    }
    this.update(n);
    return n;
  }

  private erase(n: Node<T> | null, start: string, id: number): Node<T> | null {
    assert(n !== null, 'watcher range missing from the index');
    if (n.id === id) {
      if (n.left === null) return n.right;
      if (n.right === null) return n.left;
      if (n.left.priority > n.right.priority) {
        n = this.rotateRight(n);
        n.right = this.erase(n.right, start, id);
      } else {
        n = this.rotateLeft(n);
        n.left = this.erase(n.left, start, id);
      }
    } else if (before(start, id, n.start, n.id)) {
      n.left = this.erase(n.left, start, id);
    } else {
      n.right = this.erase(n.right, start, id);
    }
    this.update(n);
    return n;
  }
}
