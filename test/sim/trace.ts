// The run's trace: the last steps kept in a ring (formatted only when a run fails), or every step
// printed as it happens with --trace.
import { Message, MessageType, messageTypeName } from '../../src/raft/types';

export class Trace {
  private readonly ring: (string | (() => string))[];
  private at = 0;
  private count = 0;
  readonly live: boolean;
  private readonly out: (line: string) => void;

  constructor(capacity: number, live: boolean, out: (line: string) => void) {
    this.ring = new Array(capacity);
    this.live = live;
    this.out = out;
  }

  /** `line` may be a thunk so that the common case (no failure) never formats it. */
  add(time: number, line: string | (() => string)): void {
    if (this.live) {
      this.out(`${stamp(time)} ${typeof line === 'string' ? line : line()}`);
      return;
    }
    const t = stamp(time);
    this.ring[this.at] = typeof line === 'string' ? `${t} ${line}` : () => `${t} ${line()}`;
    this.at = (this.at + 1) % this.ring.length;
    this.count++;
  }

  /** The kept lines, oldest first. */
  lines(): string[] {
    const n = Math.min(this.count, this.ring.length);
    const out: string[] = [];
    for (let k = 0; k < n; k++) {
      const e = this.ring[(this.at - n + k + this.ring.length) % this.ring.length]!;
      out.push(typeof e === 'string' ? e : e());
    }
    return out;
  }
}

function stamp(time: number): string {
  return `[t=${(time / 10).toFixed(1).padStart(7)}]`;
}

export function formatMessage(m: Message): string {
  let s = `${messageTypeName(m.type)} ${m.from}->${m.to} term=${m.term}`;
  switch (m.type) {
    case MessageType.App:
      s += ` prev=(${m.index},${m.logTerm}) entries=${range(m)} commit=${m.commit}`;
      break;
    case MessageType.AppResp:
      s += m.reject ? ` reject index=${m.index} hint=(${m.rejectHint},${m.logTerm})` :
        ` index=${m.index}`;
      break;
    case MessageType.Vote:
    case MessageType.PreVote:
      s += ` last=(${m.index},${m.logTerm})${m.context.length > 0 ? ' transfer' : ''}`;
      break;
    case MessageType.VoteResp:
    case MessageType.PreVoteResp:
      s += m.reject ? ' reject' : ' granted';
      break;
    case MessageType.Heartbeat:
      s += ` commit=${m.commit}${m.context.length > 0 ? ' read-round' : ''}`;
      break;
    case MessageType.Snap:
      s += ` snapshot=(${m.snapshot!.metadata.index},${m.snapshot!.metadata.term}) voters=` +
        `[${m.snapshot!.metadata.confState.voters.join(',')}] learners=` +
        `[${m.snapshot!.metadata.confState.learners.join(',')}]`;
      break;
    case MessageType.ReadIndexResp:
      s += ` index=${m.index}`;
      break;
    case MessageType.Prop:
      s += ` entries=${m.entries.length}`;
      break;
    default:
      break;
  }
  return s;
}

function range(m: Message): string {
  const es = m.entries;
  return es.length === 0 ? '-' : `${es[0]!.index}..${es[es.length - 1]!.index}`;
}
