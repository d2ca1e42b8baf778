// The file operations the WAL performs, behind one small interface (TigerBeetle's Storage,
// etcd's fileutil): the real implementation is node:fs; tests substitute a simulated disk that
// loses what was not synced at a power cut, tears writes, flips bits and fails with EIO or
// ENOSPC on a seeded schedule (test/helpers/sim_disk.ts). Nothing in the WAL touches `fs`
// directly, so every path it takes can be driven through faults.
//
// Contract, as Linux gives it for a regular file on a local filesystem:
//  - `write` lands in the page cache; it is durable only once a later `datasync` (or
//    `datasyncNow`) of that file has returned without error. It writes every byte or throws.
//  - `datasync` covers every write to the file issued before the call.
//  - `rename`, `create` and `remove` are durable once `syncDir` of their directory returned.
import fs from 'node:fs';
import path from 'node:path';

export interface FileIo {
  mkdirp(dir: string): void;
  /** File names (not paths) in `dir`. */
  list(dir: string): string[];
  readFile(file: string): Buffer;
  remove(file: string): void;
  rename(from: string, to: string): void;
  /** fsync of a directory: makes creates, renames and removes in it durable. */
  syncDir(dir: string): void;
  /** Opens an existing file for reading and writing; returns a descriptor. */
  open(file: string): number;
  close(fd: number): void;
  /** Writes `length` bytes of `data` from `offset` at `position`: all of them, or throws. */
  write(fd: number, data: Uint8Array, offset: number, length: number, position: number): void;
  /** fdatasync on a background thread; `done` runs on this thread afterwards. */
  datasync(fd: number, done: (err: NodeJS.ErrnoException | null) => void): void;
  /** fdatasync, blocking this thread (start-up, segment rolls, close). */
  datasyncNow(fd: number): void;
  /**
   * Creates `file` holding `bytes` zero bytes, durable (data and size), in the background;
   * `done` runs on this thread afterwards. The directory entry is not synced.
   */
  preallocate(file: string, bytes: number, done: (err: NodeJS.ErrnoException | null) => void): void;
  /** The same, blocking this thread. */
  preallocateNow(file: string, bytes: number): void;
}

/** Zero bytes written by preallocation, 1 MiB at a time. */
const zeroChunk = Buffer.alloc(1024 * 1024);

/** node:fs. */
export const nodeFileIo: FileIo = {
  mkdirp(dir) {
    // 0700: a member's files are its data (etcd PrivateDirMode; CVE-2020-15113).
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  },
  list(dir) {
    return fs.readdirSync(dir);
  },
  readFile(file) {
    return fs.readFileSync(file);
  },
  remove(file) {
    fs.rmSync(file, { force: true });
  },
  rename(from, to) {
    fs.renameSync(from, to);
  },
  syncDir(dir) {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  },
  open(file) {
    return fs.openSync(file, 'r+');
  },
  close(fd) {
    fs.closeSync(fd);
  },
  write(fd, data, offset, length, position) {
    // A regular file takes a short write only when it runs out of room (ENOSPC, EFBIG); the
    // next call then reports the errno, so looping either finishes or throws.
    let done = 0;
    while (done < length) {
      const n = fs.writeSync(fd, data, offset + done, length - done, position + done);
      if (n <= 0) throw shortWrite(length, done);
      done += n;
    }
  },
  datasync(fd, done) {
    fs.fdatasync(fd, done);
  },
  datasyncNow(fd) {
    fs.fdatasyncSync(fd);
  },
  preallocate(file, bytes, done) {
    fs.open(file, 'w', (err, fd) => {
      if (err) return done(err);
      const finish = (e: NodeJS.ErrnoException | null): void => {
        fs.close(fd, () => done(e));
      };
      const step = (p: number): void => {
        if (p >= bytes) {
          fs.fsync(fd, finish);
          return;
        }
        const n = Math.min(zeroChunk.length, bytes - p);
        fs.write(fd, zeroChunk, 0, n, p, (e, written) => {
          if (e) return finish(e);
          if (written !== n) return finish(shortWrite(n, written));
          step(p + n);
        });
      };
      step(0);
    });
  },
  preallocateNow(file, bytes) {
    const fd = fs.openSync(file, 'w');
    try {
      for (let p = 0; p < bytes; p += zeroChunk.length) {
        nodeFileIo.write(fd, zeroChunk, 0, Math.min(zeroChunk.length, bytes - p), p);
      }
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  },
};

function shortWrite(wanted: number, written: number): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`short write: ${written} of ${wanted} bytes`);
  err.code = 'EIO';
  return err;
}

/** The directory and base name of a path, for messages. */
export function describeFile(file: string): string {
  return path.basename(path.dirname(file)) + '/' + path.basename(file);
}
