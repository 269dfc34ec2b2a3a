// The comparison as one self-contained HTML page: per workload, bar charts (inline SVG, no
// scripts, no network) of throughput (with the runs' spread as a whisker), latency percentiles
// and CPU per operation by redirect mode, and the table of every figure. Pure: a result in, a string out.

export interface ReportCell {
  mode: string
  valid: boolean
  reason: string | null
  opsPerSec: number | null
  /** The lowest and highest operations/s of the valid runs (drawn as a whisker). */
  spread: { min: number; max: number } | null
  p50Ms: number | null
  p99Ms: number | null
  cpuUsPerOp: number | null
  runs: number
}

export interface ReportWorkload {
  name: string
  what: string
  unit: string
  cells: ReportCell[]
}

export interface ReportInput {
  title: string
  date: string
  machine: string
  settings: string
  workloads: ReportWorkload[]
}

const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1']

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

function num(v: number | null, digits = 0): string {
  if (v === null || !Number.isFinite(v)) return '-'
  return v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
}

export interface Series {
  name: string
  values: ReadonlyArray<number | null>
  /** Per mode, the range its runs spanned, drawn as a whisker over the bar. */
  ranges?: ReadonlyArray<{ min: number; max: number } | null>
}

/** One bar chart: a bar per mode (or a group of bars per mode, one per series). */
export function barChart(title: string, unit: string, modes: readonly string[], series: readonly Series[]): string {
  const width = 520
  const rowH = 14 * series.length + 10
  // Room for the longest mode label at 11px (about 6.5px a character), at least 110.
  const left = Math.max(110, 12 + Math.ceil(6.5 * Math.max(0, ...modes.map((m) => m.length))))
  const top = 28
  const height = top + modes.length * rowH + 24
  const finite = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v)
  const max = Math.max(
    1e-9,
    ...series.flatMap((s) => [...s.values.filter(finite), ...(s.ranges ?? []).map((r) => r?.max).filter(finite)]),
  )
  const scale = (width - left - 80) / max
  let bars = ''
  modes.forEach((mode, i) => {
    const y0 = top + i * rowH
    bars += `<text x="${left - 6}" y="${y0 + rowH / 2 + 4}" text-anchor="end" class="label">${esc(mode)}</text>`
    series.forEach((s, j) => {
      const v = s.values[i] ?? null
      const y = y0 + 4 + j * 14
      if (v === null || !Number.isFinite(v)) {
        bars += `<text x="${left + 4}" y="${y + 10}" class="na">n/a</text>`
        return
      }
      const w = Math.max(1, v * scale)
      bars += `<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="12" fill="${COLORS[j % COLORS.length]}"><title>${esc(`${mode} ${s.name}: ${num(v, 2)} ${unit}`)}</title></rect>`
      const range = s.ranges?.[i] ?? null
      const x1 = range ? left + range.min * scale : 0
      const x2 = range ? left + range.max * scale : 0
      if (range)
        bars += `<path d="M${x1.toFixed(1)} ${y + 3}v6M${x1.toFixed(1)} ${y + 6}H${x2.toFixed(1)}M${x2.toFixed(1)} ${y + 3}v6" class="whisker"><title>${esc(`${mode} runs: ${num(range.min)}-${num(range.max)} ${unit}`)}</title></path>`
      bars += `<text x="${(Math.max(left + w, x2) + 4).toFixed(1)}" y="${y + 10}" class="value">${esc(num(v, v < 10 ? 2 : 0))}</text>`
    })
  })
  const legend =
    series.length > 1
      ? series
          .map(
            (s, j) =>
              `<rect x="${left + j * 90}" y="${height - 14}" width="10" height="10" fill="${COLORS[j % COLORS.length]}"/><text x="${left + j * 90 + 14}" y="${height - 5}" class="label">${esc(s.name)}</text>`,
          )
          .join('')
      : ''
  return `<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(title)}"><text x="0" y="16" class="title">${esc(title)} (${esc(unit)})</text>${bars}${legend}</svg>`
}

export function renderReport(r: ReportInput): string {
  const sections = r.workloads.map((w) => {
    const modes = w.cells.map((c) => c.mode)
    const valid = (f: (c: ReportCell) => number | null) => w.cells.map((c) => (c.valid ? f(c) : null))
    const charts = [
      barChart(`${w.name}: throughput`, w.unit, modes, [
        { name: w.unit, values: valid((c) => c.opsPerSec), ranges: w.cells.map((c) => (c.valid ? c.spread : null)) },
      ]),
      barChart(`${w.name}: latency`, 'ms', modes, [
        { name: 'p50', values: valid((c) => c.p50Ms) },
        { name: 'p99', values: valid((c) => c.p99Ms) },
      ]),
      barChart(`${w.name}: CPU per operation (proxy + softirq)`, 'us', modes, [
        { name: 'us/op', values: valid((c) => c.cpuUsPerOp) },
      ]),
    ]
    const rows = w.cells
      .map(
        (c) =>
          `<tr${c.valid ? '' : ' class="invalid"'}><td>${esc(c.mode)}</td><td>${num(c.opsPerSec)}</td><td>${num(c.p50Ms, 2)}</td><td>${num(c.p99Ms, 2)}</td><td>${num(c.cpuUsPerOp, 1)}</td><td>${c.runs}</td><td>${c.valid ? 'yes' : `no: ${esc(c.reason ?? '')}`}</td></tr>`,
      )
      .join('')
    return `<section><h2>${esc(w.name)}</h2><p>${esc(w.what)}</p><div class="charts">${charts.join('')}</div>
<table><thead><tr><th>mode</th><th>${esc(w.unit)}</th><th>p50 ms</th><th>p99 ms</th><th>CPU us/op</th><th>runs</th><th>path confirmed</th></tr></thead><tbody>${rows}</tbody></table></section>`
  })
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}
.charts{display:flex;flex-wrap:wrap;gap:1em}
.chart .title{font-size:13px;font-weight:600}.chart .label,.chart .value,.chart .na{font-size:11px}.chart .na{fill:#999}.chart .whisker{stroke:#333;stroke-width:1.2;fill:none}
table{border-collapse:collapse;margin-top:.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}
tr.invalid{color:#a33}
</style></head><body>
<h1>${esc(r.title)}</h1>
<p>${esc(r.date)} · ${esc(r.machine)} · ${esc(r.settings)}</p>
<p>Each figure is the median of interleaved runs whose kernel and proxy counters confirmed the path (mode <em>none</em>: nothing reached the proxy; other modes: the proxy saw every operation). Runs that failed the check are marked and left out. CPU per operation is the proxy process's CPU time plus the machine's softirq time, divided by the operations.</p>
<p>Peers (<em>haproxy</em>, <em>dnsdist</em>) stand in for l7proxy's proxy with the same rules, behind the redirect mode named beside them; their own statistics must count every operation.</p>
${sections.join('\n')}
</body></html>
`
}
