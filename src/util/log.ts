// Structured logs: one JSON object per line on stderr, etcd/zap style field names.
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'panic' | 'fatal';

const rank: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3, panic: 4, fatal: 5 };

export class Logger {
  private minRank: number;

  constructor(level: LogLevel) {
    this.minRank = rank[level];
  }

  setLevel(level: LogLevel): void {
    this.minRank = rank[level];
  }

  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    if (rank[level] < this.minRank) return;
    const line = JSON.stringify({ level, ts: new Date().toISOString(), caller: 'concord', msg, ...fields });
    process.stderr.write(line + '\n');
  }

  debug(msg: string, fields?: Record<string, unknown>): void { this.log('debug', msg, fields); }
  info(msg: string, fields?: Record<string, unknown>): void { this.log('info', msg, fields); }
  warn(msg: string, fields?: Record<string, unknown>): void { this.log('warn', msg, fields); }
  error(msg: string, fields?: Record<string, unknown>): void { this.log('error', msg, fields); }
}

export function isLogLevel(s: string): s is LogLevel {
  return s in rank;
}
