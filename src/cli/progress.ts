// Progress of a long byte copy in the offline tools (`concord snapshot save | restore`).
//
// Interactive (stdout is a terminal): one bar redrawn in place on stderr, with bytes done, the
// rate and the time left. Otherwise (a log file, a pipe, a test): plain lines on stderr, at most
// one per second or one per tenth of the total, so a log gets a handful of lines, not one per
// chunk. Always on stderr: stdout carries the command's answer ("Snapshot saved at ...") and
// stays byte-for-byte what etcdctl prints.
//
// The clock is injected so the throttling can be tested without sleeping.

export interface ProgressOptions {
  /** What is being done ("saving", "restoring"). */
  label: string;
  /** Bytes expected in all; 0 when unknown (a stream that has not said yet). */
  total: number;
  /** Draw a bar (a terminal) or print lines. */
  tty: boolean;
  write: (s: string) => void;
  /** Milliseconds; performance.now by default. */
  now?: () => number;
}

const barWidth = 30;
const lineIntervalMs = 1000;
const redrawIntervalMs = 100;

/** Bytes as etcd prints sizes (go-humanize Bytes: powers of 1000, "25 kB", "2.1 MB"). */
export function humanBytes(n: number): string {
  if (n < 10) return `${n} B`;
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB'];
  const e = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1000)));
  const val = Math.floor((n / 1000 ** e) * 10 + 0.5) / 10;
  return (val < 10 ? val.toFixed(1) : val.toFixed(0)) + ' ' + units[e];
}

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
}

export class Progress {
  private readonly opts: ProgressOptions;
  private readonly now: () => number;
  private readonly startedAt: number;
  private total: number;
  private done: number;
  private lastOutAt: number;
  private lastTenth: number;
  /** Bytes done when the last line was printed (a closing line repeats nothing). */
  private lineDone: number;
  private finished: boolean;

  constructor(opts: ProgressOptions) {
    this.opts = opts;
    this.now = opts.now ?? (() => performance.now());
    this.startedAt = this.now();
    this.total = opts.total;
    this.done = 0;
    this.lastOutAt = this.startedAt;
    this.lastTenth = 0;
    this.lineDone = -1;
    this.finished = false;
  }

  /** The total became known (a stream's first message says how many bytes follow). */
  setTotal(total: number): void {
    this.total = total;
  }

  /** `n` more bytes are done. */
  add(n: number): void {
    this.done += n;
    const t = this.now();
    const tenth = this.total > 0 ? Math.floor((10 * this.done) / this.total) : 0;
    if (this.opts.tty) {
      if (t - this.lastOutAt >= redrawIntervalMs) this.draw(t);
      return;
    }
    if (t - this.lastOutAt >= lineIntervalMs || tenth > this.lastTenth) {
      this.lastTenth = tenth;
      this.line(t);
    }
  }

  /** The last word: a full bar (and its line end) or a closing line. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    const t = this.now();
    if (this.opts.tty) {
      this.draw(t);
      this.opts.write('\n');
    } else if (this.done !== this.lineDone) {
      this.line(t);
    }
  }

  private rate(t: number): number {
    const s = (t - this.startedAt) / 1000;
    return s > 0 ? this.done / s : 0;
  }

  private left(t: number): string {
    const r = this.rate(t);
    if (this.total <= 0 || r <= 0) return '?';
    return duration((this.total - this.done) / r);
  }

  private draw(t: number): void {
    this.lastOutAt = t;
    const share = this.total > 0 ? Math.min(1, this.done / this.total) : 0;
    const full = Math.round(share * barWidth);
    const bar = '#'.repeat(full) + ' '.repeat(barWidth - full);
    const of = this.total > 0 ? ` / ${humanBytes(this.total)}` : '';
    // \r and clear-to-end-of-line: the bar is redrawn over itself.
    this.opts.write(`\r${this.opts.label} [${bar}] ${(share * 100).toFixed(0).padStart(3)}% ` +
      `${humanBytes(this.done)}${of} ${humanBytes(Math.round(this.rate(t)))}/s ${this.left(t)} left\x1b[K`);
  }

  private line(t: number): void {
    this.lastOutAt = t;
    this.lineDone = this.done;
    const pct = this.total > 0 ? ` (${Math.min(100, Math.floor((100 * this.done) / this.total))}%)` : '';
    const of = this.total > 0 ? ` of ${humanBytes(this.total)}` : '';
    this.opts.write(`${this.opts.label}: ${humanBytes(this.done)}${of}${pct}, ` +
      `${humanBytes(Math.round(this.rate(t)))}/s, ${this.left(t)} left\n`);
  }
}
