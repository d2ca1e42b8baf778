// A simulated disk for the WAL (implements src/storage/file_io.ts FileIo), with the faults the
// storage simulator injects from its seed:
//  - power cut: each file keeps what the last successful fdatasync covered; of the pages written
//    since, each may have reached the disk or not (writeback order is the kernel's and the
//    drive's), and one of them may be torn at 512-byte sectors;
//  - kill -9: the page cache survives, everything written is kept;
//  - EIO on write or fdatasync, ENOSPC on preallocation;
//  - bit flips in stored bytes.
// Directory operations (create, rename, remove) are durable at once: the WAL syncs its
// directory after each, and modelling lost renames is left to the real-process tests.
// fdatasync completes after a seeded delay on the scheduler; a crash drops what is in flight.
import path from 'node:path';
import type { FileIo } from '../../src/storage/file_io';
import { Prng } from '../../src/util/prng';
import { SimScheduler } from './sim_scheduler';

export const pageBytes = 4096;
const sectorBytes = 512;

interface SimFile {
  /** What survives a power cut. */
  durable: Buffer;
  /** What reads see (the page cache). */
  current: Buffer;
  /** Pages written since they were last made durable. */
  dirty: Set<number>;
}

export interface DiskFaults {
  /** Probability that one write fails with EIO. */
  writeEio: number;
  /** Probability that one fdatasync fails with EIO. */
  syncEio: number;
  /** Probability that one preallocation fails with ENOSPC. */
  preallocateEnospc: number;
  /** fdatasync latency, virtual ms: uniform in [min, max]. */
  syncMsMin: number;
  syncMsMax: number;
}

export const noDiskFaults: DiskFaults = { writeEio: 0, syncEio: 0, preallocateEnospc: 0, syncMsMin: 0, syncMsMax: 1 };

/** What a bit flip changed, for the checker. */
export interface BitFlip {
  file: string;
  offset: number;
}

export class SimDisk implements FileIo {
  readonly files = new Map<string, SimFile>();
  private readonly dirs = new Set<string>();
  private readonly fds = new Map<number, string>();
  private nextFd = 3;
  /** Bumped by every crash: callbacks of the process before it are dropped. */
  private epoch = 0;
  faults: DiskFaults;
  /** Faults that fired, for the trace. */
  readonly fired: string[] = [];

  constructor(private readonly sched: SimScheduler, private readonly prng: Prng, faults: DiskFaults = noDiskFaults) {
    this.faults = faults;
  }

  private chance(p: number): boolean {
    return p > 0 && this.prng.int(1_000_000) < p * 1_000_000;
  }

  private file(fd: number): SimFile {
    const name = this.fds.get(fd);
    if (name === undefined) throw errno('EBADF', 'bad file descriptor');
    const f = this.files.get(name);
    if (f === undefined) throw errno('ENOENT', 'file removed');
    return f;
  }

  mkdirp(dir: string): void {
    this.dirs.add(dir);
  }

  list(dir: string): string[] {
    const out: string[] = [];
    for (const name of this.files.keys()) if (path.dirname(name) === dir) out.push(path.basename(name));
    return out;
  }

  readFile(file: string): Buffer {
    const f = this.files.get(file);
    if (f === undefined) throw errno('ENOENT', `no such file: ${file}`);
    return Buffer.from(f.current);
  }

  remove(file: string): void {
    this.files.delete(file);
  }

  rename(from: string, to: string): void {
    const f = this.files.get(from);
    if (f === undefined) throw errno('ENOENT', `no such file: ${from}`);
    this.files.delete(from);
    this.files.set(to, f);
  }

  syncDir(): void {}

  open(file: string): number {
    if (!this.files.has(file)) throw errno('ENOENT', `no such file: ${file}`);
    const fd = this.nextFd++;
    this.fds.set(fd, file);
    return fd;
  }

  close(fd: number): void {
    this.fds.delete(fd);
  }

  write(fd: number, data: Uint8Array, offset: number, length: number, position: number): void {
    const f = this.file(fd);
    if (this.chance(this.faults.writeEio)) {
      this.fired.push('write EIO');
      throw errno('EIO', 'i/o error (simulated)');
    }
    if (position + length > f.current.length) {
      const grown = Buffer.alloc(position + length);
      f.current.copy(grown);
      f.current = grown;
    }
    f.current.set(data.subarray(offset, offset + length), position);
    for (let p = Math.floor(position / pageBytes); p <= Math.floor((position + length - 1) / pageBytes); p++) f.dirty.add(p);
  }

  private syncFile(f: SimFile): void {
    if (f.durable.length !== f.current.length) {
      const d = Buffer.alloc(f.current.length);
      f.durable.copy(d, 0, 0, Math.min(f.durable.length, d.length));
      f.durable = d;
    }
    for (const p of f.dirty) {
      const start = p * pageBytes;
      f.current.copy(f.durable, start, start, Math.min(f.current.length, start + pageBytes));
    }
    f.dirty.clear();
  }

  datasync(fd: number, done: (err: NodeJS.ErrnoException | null) => void): void {
    const name = this.fds.get(fd);
    const epoch = this.epoch;
    const fail = this.chance(this.faults.syncEio);
    // The pages dirty now are what this sync covers; pages written meanwhile may ride along.
    const covered = name !== undefined ? new Set(this.files.get(name)?.dirty ?? []) : new Set<number>();
    this.sched.at(this.syncDelay(), () => {
      if (epoch !== this.epoch) return; // the process died meanwhile
      if (fail) {
        this.fired.push('fdatasync EIO');
        done(errno('EIO', 'i/o error (simulated fdatasync)'));
        return;
      }
      const f = name !== undefined ? this.files.get(name) : undefined;
      if (f !== undefined) {
        const rest = new Set([...f.dirty].filter((p) => !covered.has(p)));
        f.dirty = covered;
        this.syncFile(f);
        f.dirty = rest;
      }
      done(null);
    });
  }

  datasyncNow(fd: number): void {
    const f = this.file(fd);
    if (this.chance(this.faults.syncEio)) {
      this.fired.push('fdatasync EIO');
      throw errno('EIO', 'i/o error (simulated fdatasync)');
    }
    this.syncFile(f);
  }

  preallocate(file: string, bytes: number, done: (err: NodeJS.ErrnoException | null) => void): void {
    const epoch = this.epoch;
    const fail = this.chance(this.faults.preallocateEnospc);
    this.sched.at(this.syncDelay(), () => {
      if (epoch !== this.epoch) return;
      if (fail) {
        this.fired.push('preallocate ENOSPC');
        done(errno('ENOSPC', 'no space left on device (simulated)'));
        return;
      }
      this.files.set(file, { durable: Buffer.alloc(bytes), current: Buffer.alloc(bytes), dirty: new Set() });
      done(null);
    });
  }

  preallocateNow(file: string, bytes: number): void {
    if (this.chance(this.faults.preallocateEnospc)) {
      this.fired.push('preallocate ENOSPC');
      throw errno('ENOSPC', 'no space left on device (simulated)');
    }
    this.files.set(file, { durable: Buffer.alloc(bytes), current: Buffer.alloc(bytes), dirty: new Set() });
  }

  private syncDelay(): number {
    const { syncMsMin, syncMsMax } = this.faults;
    return syncMsMin + this.prng.int(Math.max(1, syncMsMax - syncMsMin + 1));
  }

  /**
   * The power goes: each file is what was synced, plus a seeded choice of the pages written
   * since (each kept with probability `keepPage`), one of which may be torn at a sector.
   * `keepPage` 0 and `tear` false = exactly what was synced.
   */
  powerCut(keepPage: number, tear: boolean): void {
    this.epoch++;
    this.fds.clear();
    for (const f of this.files.values()) {
      const out = Buffer.alloc(f.current.length);
      f.durable.copy(out, 0, 0, Math.min(f.durable.length, out.length));
      const dirty = [...f.dirty].sort((a, b) => a - b);
      for (const p of dirty) {
        const start = p * pageBytes;
        const end = Math.min(f.current.length, start + pageBytes);
        if (this.chance(keepPage)) f.current.copy(out, start, start, end);
      }
      if (tear && dirty.length > 0) {
        // One page written in part: a seeded prefix of its sectors reached the disk.
        const p = dirty[this.prng.int(dirty.length)]!;
        const start = p * pageBytes;
        const sectors = this.prng.int(pageBytes / sectorBytes);
        f.current.copy(out, start, start, Math.min(f.current.length, start + sectors * sectorBytes));
      }
      f.durable = out;
      f.current = Buffer.from(out);
      f.dirty.clear();
    }
  }

  /** A copy of what is on the disk now (durable contents only), on another scheduler. */
  cloneDurable(sched: SimScheduler, prng: Prng): SimDisk {
    const d = new SimDisk(sched, prng);
    for (const [name, f] of this.files) d.files.set(name, { durable: Buffer.from(f.durable), current: Buffer.from(f.durable), dirty: new Set() });
    return d;
  }

  /** kill -9: the process dies, the page cache (everything written) survives. */
  kill(): void {
    this.epoch++;
    this.fds.clear();
    for (const f of this.files.values()) this.syncFile(f);
  }

  /** Flips one bit in a seeded stored byte of a seeded file that holds data; null if none. */
  flipBit(): BitFlip | null {
    const names = [...this.files.keys()].filter((n) => n.endsWith('.wal')).sort();
    if (names.length === 0) return null;
    const name = names[this.prng.int(names.length)]!;
    const f = this.files.get(name)!;
    let last = f.durable.length - 1;
    while (last >= 0 && f.durable[last] === 0) last--;
    if (last < 0) return null;
    const offset = this.prng.int(last + 1);
    f.durable[offset]! ^= 1 << this.prng.int(8);
    f.current = Buffer.from(f.durable);
    return { file: name, offset };
  }
}

function errno(code: string, message: string): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(message);
  e.code = code;
  return e;
}
