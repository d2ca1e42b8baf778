// The in-memory key index (etcd: server/storage/mvcc/index.go treeIndex): user key -> KeyIndex,
// ordered by key bytes. Keys are latin1 strings (one char per byte) so that JavaScript's string
// order is byte order and the B+ tree compares with `<` instead of Buffer.compare.
import BTree from 'sorted-btree';
import { KeyIndex } from './key_index';

/** Upper bound of a range: `null` = the single key `key`; `''` = no upper bound ("\0"). */
export type RangeEnd = string | null;

export class TreeIndex {
  private readonly tree: BTree<string, KeyIndex>;
  private readonly pair: [string, KeyIndex];

  constructor() {
    this.tree = new BTree<string, KeyIndex>();
    this.pair = ['', new KeyIndex('')];
  }

  get size(): number {
    return this.tree.size;
  }

  get(key: string): KeyIndex | undefined {
    return this.tree.get(key);
  }

  getOrCreate(key: string): KeyIndex {
    let ki = this.tree.get(key);
    if (ki === undefined) {
      ki = new KeyIndex(key);
      this.tree.set(key, ki);
    }
    return ki;
  }

  remove(key: string): void {
    this.tree.delete(key);
  }

  /** Calls fn for every KeyIndex in [key, end) in key order; fn returns false to stop. */
  visit(key: string, end: RangeEnd, fn: (ki: KeyIndex) => boolean): void {
    if (end === null) {
      const ki = this.tree.get(key);
      if (ki !== undefined) fn(ki);
      return;
    }
    if (end !== '' && end <= key) return;
    let pair = this.tree.getPairOrNextHigher(key, this.pair);
    while (pair !== undefined) {
      const k = pair[0];
      if (end !== '' && k >= end) return;
      if (!fn(pair[1])) return;
      pair = this.tree.nextHigherPair(k, this.pair);
    }
  }

  /** All keys in order, for compaction sweeps; fn returns false to stop. */
  visitFrom(key: string, fn: (ki: KeyIndex) => boolean): void {
    this.visit(key, '', fn);
  }
}
