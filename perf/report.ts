// Self-contained HTML report for a perf run: inline SVG plots, no scripts, no external files.
//   * latency percentile distribution per workload (at the largest client count), concord vs etcd
//   * throughput vs p99 latency across the client sweep, concord vs etcd
//   * watch fan-out workloads: delivery latency percentiles at the largest watcher count, and
//     delivered events/s, p99 delivery latency and p99 put latency against the watcher count
//   * lease keep-alive: latency percentiles at the largest lease count, keep-alives/s against it
//   * lease mass expiry: put p99, put throughput and lease keys remaining over time around the
//     deadline (round 1), and put latency percentiles during the expiry
//   * defrag and maintenance: put p99 and puts/s over time around the calls (round 1), phase by
//     phase, and put latency percentiles during the calls
import type { Cell, PerfReport, Sample, Target } from './run';

const COLORS: Record<Target, string> = { concord: '#1f77b4', etcd: '#d62728' };

interface Series { label: Target; points: [number, number][] }

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceLogTicks(min: number, max: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= min / 1.01 && v <= max * 1.01) out.push(v);
    }
  }
  return out;
}

/** A line chart; x and y each linear or log10. */
function chart(title: string, series: Series[], opts: { xLabel: string; yLabel: string; xLog: boolean; yLog: boolean;
  xTicks?: [number, string][] }): string {
  const W = 520;
  const H = 300;
  const L = 60;
  const R = 110;
  const T = 28;
  const B = 42;
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.xLog || x > 0) && (!opts.yLog || y > 0));
  if (pts.length === 0) return `<div class="chart"><b>${esc(title)}</b><p>no data</p></div>`;
  const tx = (v: number): number => (opts.xLog ? Math.log10(v) : v);
  const ty = (v: number): number => (opts.yLog ? Math.log10(v) : v);
  let x0 = Math.min(...pts.map((p) => tx(p[0])));
  let x1 = Math.max(...pts.map((p) => tx(p[0])));
  let y0 = Math.min(...pts.map((p) => ty(p[1])));
  let y1 = Math.max(...pts.map((p) => ty(p[1])));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= opts.yLog ? 0.5 : 1; y1 += opts.yLog ? 0.5 : 1; }
  if (!opts.yLog) y0 = Math.min(0, y0);
  const sx = (v: number): number => L + ((tx(v) - x0) / (x1 - x0)) * (W - L - R);
  const sy = (v: number): number => H - B - ((ty(v) - y0) / (y1 - y0)) * (H - T - B);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`);
  parts.push(`<text x="${L}" y="16" font-weight="bold">${esc(title)}</text>`);
  parts.push(`<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#444"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#444"/>`);
  const yTicks = opts.yLog ? niceLogTicks(10 ** y0, 10 ** y1) : [0, 0.25, 0.5, 0.75, 1].map((f) => y0 + f * (y1 - y0));
  for (const v of yTicks) {
    const y = sy(v);
    parts.push(`<line x1="${L}" y1="${y}" x2="${W - R}" y2="${y}" stroke="#ddd"/><text x="${L - 4}" y="${y + 4}" text-anchor="end">${+v.toPrecision(3)}</text>`);
  }
  const xTicks: [number, string][] = opts.xTicks ?? (opts.xLog
    ? niceLogTicks(10 ** x0, 10 ** x1).map((v) => [v, String(+v.toPrecision(3))])
    : [0, 0.25, 0.5, 0.75, 1].map((f) => { const v = x0 + f * (x1 - x0); return [v, String(Math.round(v))]; }));
  for (const [v, label] of xTicks) {
    if (tx(v) < x0 - 1e-9 || tx(v) > x1 + 1e-9) continue;
    const x = sx(v);
    parts.push(`<line x1="${x}" y1="${T}" x2="${x}" y2="${H - B}" stroke="#eee"/><text x="${x}" y="${H - B + 14}" text-anchor="middle">${esc(label)}</text>`);
  }
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  parts.push(`<text x="14" y="${(T + H - B) / 2}" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">${esc(opts.yLabel)}</text>`);
  series.forEach((s, i) => {
    const ps = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.xLog || x > 0) && (!opts.yLog || y > 0));
    if (ps.length === 0) return;
    const d = ps.map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
    parts.push(`<path d="${d}" fill="none" stroke="${COLORS[s.label]}" stroke-width="2"/>`);
    for (const [x, y] of ps.length <= 12 ? ps : []) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${COLORS[s.label]}"/>`);
    parts.push(`<rect x="${W - R + 10}" y="${T + 4 + i * 16}" width="10" height="10" fill="${COLORS[s.label]}"/><text x="${W - R + 24}" y="${T + 13 + i * 16}">${s.label}</text>`);
  });
  parts.push('</svg>');
  return `<div class="chart">${parts.join('')}</div>`;
}

/** x = 1/(1-p): 50% → 2, 99% → 100, 99.9% → 1000. */
function percentileSeries(s: Sample): [number, number][] {
  return s.curve.filter(([p]) => p < 100).map(([p, us]) => [1 / (1 - p / 100), us / 1000]);
}

const PCT_TICKS: [number, string][] = [[1, '0%'], [2, '50%'], [10, '90%'], [100, '99%'], [1000, '99.9%'], [10000, '99.99%'], [100000, '99.999%']];

function firstSample(cell: Cell, target: Target): Sample | undefined {
  return cell.samples.find((s) => s.target === target);
}

function watchSection(name: string, cells: Cell[], largest: Cell, targets: Target[]): string {
  const pct: Series[] = targets.flatMap((t) => { const s = firstSample(largest, t); return s && s.curve.length > 0 ? [{ label: t, points: percentileSeries(s) }] : []; });
  const vsW = (f: (s: Sample) => number): Series[] => targets.map((t) => ({
    label: t,
    points: cells.map((c) => firstSample(c, t)).filter((s): s is Sample => s !== undefined && s.ok > 0).map((s) => [s.clients, f(s)] as [number, number]),
  })).filter((s) => s.points.length > 0);
  const xLog = cells.length > 1 && Math.max(...cells.map((c) => c.clients)) / Math.min(...cells.map((c) => c.clients)) >= 10;
  return `<section><h2>${esc(name)}</h2><p>${esc(cells[0]!.description)}</p>` +
    chart(`delivery latency percentiles, ${largest.clients} watchers (round 1)`, pct, { xLabel: 'percentile', yLabel: 'put sent → event received, ms', xLog: true, yLog: true, xTicks: PCT_TICKS }) +
    chart('events delivered per second (all watchers)', vsW((s) => s.throughput), { xLabel: 'watchers', yLabel: 'events/s', xLog, yLog: false }) +
    chart('p99 delivery latency', vsW((s) => s.latencyUs.p99 / 1000), { xLabel: 'watchers', yLabel: 'ms', xLog, yLog: true }) +
    chart('p99 put latency while watched', vsW((s) => (s.watch?.putLatencyUs.p99 ?? NaN) / 1000), { xLabel: 'watchers', yLabel: 'ms', xLog, yLog: true }) +
    '</section>';
}

function keepAliveSection(name: string, cells: Cell[], largest: Cell, targets: Target[]): string {
  const pct: Series[] = targets.flatMap((t) => { const s = firstSample(largest, t); return s && s.curve.length > 0 ? [{ label: t, points: percentileSeries(s) }] : []; });
  const vsN = (f: (s: Sample) => number): Series[] => targets.map((t) => ({
    label: t,
    points: cells.map((c) => firstSample(c, t)).filter((s): s is Sample => s !== undefined && s.ok > 0).map((s) => [s.clients, f(s)] as [number, number]),
  })).filter((s) => s.points.length > 0);
  const xLog = cells.length > 1;
  return `<section><h2>${esc(name)}</h2><p>${esc(cells[0]!.description)}</p>` +
    chart(`keep-alive latency percentiles, ${largest.clients} leases (round 1)`, pct, { xLabel: 'percentile', yLabel: 'request sent → response read, ms', xLog: true, yLog: true, xTicks: PCT_TICKS }) +
    chart('keep-alives answered per second', vsN((s) => s.throughput), { xLabel: 'leases', yLabel: 'keep-alives/s', xLog, yLog: false }) +
    chart('server CPU per keep-alive', vsN((s) => s.serverCpuUsPerOp), { xLabel: 'leases', yLabel: 'µs', xLog, yLog: false }) +
    '</section>';
}

function expirySection(name: string, cells: Cell[], targets: Target[]): string {
  const parts: string[] = [`<section><h2>${esc(name)}</h2><p>${esc(cells[0]!.description)}. Time is seconds from the deadline D at which the leases expire; ` +
    'the put load runs throughout (before = grants done → D, during = D → all leases gone, after).</p>'];
  for (const cell of cells) {
    const ss = targets.map((t) => firstSample(cell, t)).filter((s): s is Sample => s?.lease?.timeline !== undefined);
    if (ss.length === 0) continue;
    type Point = NonNullable<NonNullable<Sample['lease']>['timeline']>[number];
    const series = (f: (p: Point, bucketS: number) => number): Series[] =>
      ss.map((s) => ({ label: s.target, points: s.lease!.timeline!.filter((p) => p.puts > 0).map((p) => [p.t, f(p, s.lease!.timelineBucketS ?? 1)] as [number, number]) }));
    const keys: Series[] = ss.map((s) => ({ label: s.target, points: s.lease!.keysTimeline ?? [] }));
    const pct: Series[] = ss.filter((s) => s.curve.length > 0).map((s) => ({ label: s.target, points: percentileSeries(s) }));
    parts.push(
      chart(`put p99 over time, ${cell.clients} leases (round 1)`, series((p) => p.p99 / 1000), { xLabel: 'seconds from D', yLabel: 'put p99 ms (per interval)', xLog: false, yLog: true }) +
      chart('puts per second over time', series((p, bucketS) => p.puts / bucketS), { xLabel: 'seconds from D', yLabel: 'puts/s', xLog: false, yLog: false }) +
      chart('lease keys remaining', keys, { xLabel: 'seconds from D', yLabel: 'keys', xLog: false, yLog: false }) +
      chart(`put latency percentiles during the expiry, ${cell.clients} leases`, pct, { xLabel: 'percentile', yLabel: 'put latency ms', xLog: true, yLog: true, xTicks: PCT_TICKS }),
    );
  }
  parts.push('</section>');
  return parts.join('');
}

function maintSection(name: string, cells: Cell[], targets: Target[]): string {
  const parts: string[] = [`<section><h2>${esc(name)}</h2><p>${esc(cells[0]!.description)}. Time is seconds from the start of the ` +
    'baseline window; the phases of round 1 are listed under the charts.</p>'];
  for (const cell of cells) {
    const ss = targets.map((t) => firstSample(cell, t)).filter((s): s is Sample => s?.maint !== undefined);
    if (ss.length === 0) continue;
    type Point = NonNullable<Sample['maint']>['timeline'][number];
    const series = (f: (p: Point, bucketS: number) => number): Series[] =>
      ss.map((s) => ({ label: s.target, points: s.maint!.timeline.filter((p) => p.puts > 0).map((p) => [p.t, f(p, s.maint!.timelineBucketS)] as [number, number]) }));
    const pct: Series[] = ss.filter((s) => s.curve.length > 0).map((s) => ({ label: s.target, points: percentileSeries(s) }));
    const phases = ss.map((s) => esc(`${s.target}: ` + s.maint!.phases.map((p) => {
      const op = s.maint!.ops.find((o) => o.name === p.name);
      return `${p.name} ${p.fromS.toFixed(1)}-${p.toS.toFixed(1)} s${op && op.status !== 'ok' ? ` (${op.status})` : ''}`;
    }).join(', '))).join('<br>');
    parts.push(
      chart(`put p99 over time, ${cell.clients} MiB (round 1)`, series((p) => p.p99 / 1000), { xLabel: 'seconds', yLabel: 'put p99 ms (per interval)', xLog: false, yLog: true }) +
      chart('puts per second over time (by send time)', series((p, bucketS) => p.puts / bucketS), { xLabel: 'seconds', yLabel: 'puts/s', xLog: false, yLog: false }) +
      chart(`put latency percentiles during the calls, ${cell.clients} MiB`, pct, { xLabel: 'percentile', yLabel: 'put latency ms', xLog: true, yLog: true, xTicks: PCT_TICKS }) +
      `<p>${phases}</p>`,
    );
  }
  parts.push('</section>');
  return parts.join('');
}

export function renderHtml(report: PerfReport, tableText: string): string {
  const byWorkload = new Map<string, Cell[]>();
  for (const c of report.cells) {
    // Cluster runs: a section per workload and the members the clients sent to.
    const key = c.role !== undefined ? `${c.workload}, ${report.options.cluster}-member cluster, to the ${c.role}` : c.workload;
    const list = byWorkload.get(key) ?? [];
    list.push(c);
    byWorkload.set(key, list);
  }
  const sections: string[] = [];
  for (const [name, cells] of byWorkload) {
    const largest = cells.reduce((a, b) => (b.clients > a.clients ? b : a));
    const targets: Target[] = ['concord', 'etcd'];
    if (cells.some((c) => c.samples.some((s) => s.watch !== undefined))) {
      sections.push(watchSection(name, cells, largest, targets));
      continue;
    }
    const kind = cells.flatMap((c) => c.samples).find((s) => s.lease !== undefined)?.lease?.kind;
    if (kind === 'keepalive') {
      sections.push(keepAliveSection(name, cells, largest, targets));
      continue;
    }
    if (kind === 'expiry') {
      sections.push(expirySection(name, cells, targets));
      continue;
    }
    if (cells.some((c) => c.samples.some((s) => s.maint !== undefined))) {
      sections.push(maintSection(name, cells, targets));
      continue;
    }
    const pct: Series[] = targets.flatMap((t) => { const s = firstSample(largest, t); return s ? [{ label: t, points: percentileSeries(s) }] : []; });
    const sweep: Series[] = targets.map((t) => ({
      label: t,
      points: cells.map((c) => firstSample(c, t)).filter((s): s is Sample => s !== undefined).map((s) => [s.throughput, s.latencyUs.p99 / 1000] as [number, number]),
    })).filter((s) => s.points.length > 0);
    sections.push(`<section><h2>${esc(name)}</h2><p>${esc(cells[0]!.description)}</p>` +
      chart(`latency percentiles, ${largest.clients} clients (round 1)`, pct, { xLabel: 'percentile', yLabel: 'latency ms', xLog: true, yLog: true, xTicks: PCT_TICKS }) +
      chart('throughput vs p99 over the client sweep', sweep, { xLabel: 'ops/s', yLabel: 'p99 ms', xLog: false, yLog: true }) +
      '</section>');
  }
  const m = report.machine;
  return `<!doctype html><html><head><meta charset="utf-8"><title>concord perf ${esc(report.startedAt)}</title>
<style>body{font-family:sans-serif;margin:24px;max-width:1200px}pre{font-size:12px;background:#f6f6f6;padding:8px;overflow:auto}
.chart{display:inline-block;margin:4px 12px 4px 0}section{border-top:1px solid #ccc;margin-top:16px}</style></head><body>
<h1>concord perf report</h1>
<p>${esc(report.startedAt)} — ${m.cpus} × ${esc(m.model)}, ${m.memGiB} GiB, node ${esc(m.node)}, ${esc(m.platform)}.
Compared with: ${esc(report.etcdVersion ?? 'nothing (etcd not installed or --no-etcd)')}.
${report.options.durationS}s per measurement after ${report.options.warmupS}s warmup, ${report.options.rounds} round(s), ${report.options.procs} load generator process(es).</p>
<pre>${esc(tableText)}</pre>
${sections.join('\n')}
</body></html>
`;
}
