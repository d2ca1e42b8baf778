// Test-only preload (`node --require dist/test/helpers/clock_jump.js`, or through NODE_OPTIONS):
// steps the wall clock of the process it is loaded into, once, as an NTP step or a VM resume
// would. `Date.now()` and `new Date()` read CONCORD_TEST_CLOCK_JUMP_MS (signed, ms) ahead of the
// real wall clock from the moment the file CONCORD_TEST_CLOCK_JUMP_FILE exists; monotonic clocks
// (`performance.now()`, `process.hrtime`, timers) are left alone, as a real step leaves them.
//
// The trigger is a file, polled every 20 ms on an unref'd timer, so it works in worker threads
// too (they get the preload from NODE_OPTIONS; signals reach only the main thread). The main
// thread logs one line on stderr when it steps: `{"msg":"clock_jump: wall clock stepped",...}`.
import fs from 'node:fs';
import { isMainThread } from 'node:worker_threads';

/** What the main thread logs once the wall clock has stepped (tests wait for it). */
export const clockJumpLogLine = 'clock_jump: wall clock stepped';

const pollMs = 20;

function install(file: string, jumpMs: number): void {
  const RealDate = Date;
  const realNow = Date.now.bind(Date);
  let offsetMs = 0;
  const now = (): number => realNow() + offsetMs;
  RealDate.now = now;
  // `new Date()` and `Date()` read the stepped clock; every other form is the real constructor.
  globalThis.Date = new Proxy(RealDate, {
    construct(target, args: unknown[], newTarget) {
      return Reflect.construct(target, args.length === 0 ? [now()] : args, newTarget) as object;
    },
    apply() {
      return new RealDate(now()).toString();
    },
  });
  const timer = setInterval(() => {
    if (!fs.existsSync(file)) return;
    clearInterval(timer);
    offsetMs = jumpMs;
    if (isMainThread) {
      process.stderr.write(JSON.stringify({ level: 'info', msg: clockJumpLogLine, jumpMs, pid: process.pid }) + '\n');
    }
  }, pollMs);
  timer.unref();
}

const file = process.env.CONCORD_TEST_CLOCK_JUMP_FILE;
const jumpMs = Number(process.env.CONCORD_TEST_CLOCK_JUMP_MS ?? '0');
if (file !== undefined && file !== '' && Number.isFinite(jumpMs) && jumpMs !== 0) install(file, jumpMs);
