// The comparison's HTML report rendered by a real browser (Debian's headless Chromium): every
// chart is laid out with a size, and every bar of a valid figure is drawn where it can be seen
// (the topmost element at its centre), the runs' spread as a whisker inside its chart, no label
// cut off, and nothing fetched. The report has no scripts of its own;
// the test appends one to a copy that measures the layout and writes it into the DOM, which
// Chromium's --dump-dom then returns. Skips without Chromium, fails instead under
// L7PROXY_REQUIRE_KERNEL=1 (CI installs it).

import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { COMPARE_MODES, carries, modeLabel } from '../bench/compare/contenders.js'
import { type ReportWorkload, renderReport } from '../bench/compare/report-html.js'
import { WORKLOAD_DEFS, WORKLOADS } from '../bench/compare/workloads.js'
import { kernelGate, kernelRequired } from './fixtures/kernel.js'

const CHROMIUM = '/usr/bin/chromium'

interface Layout {
  charts: Array<{
    label: string
    width: number
    height: number
    bars: number
    visibleBars: number
    outside: number
    clippedText: number
    whiskers: number
  }>
  requests: number
}

// Runs in the page: what the browser actually laid out and drew.
const MEASURE = `<script>
const charts = [...document.querySelectorAll('svg.chart')].map((svg) => {
  const box = svg.getBoundingClientRect()
  const bars = [...svg.querySelectorAll('rect')].filter((r) => r.querySelector('title'))
  const outside = bars.filter((r) => {
    const b = r.getBoundingClientRect()
    return b.left < box.left || b.right > box.right + 0.5 || b.top < box.top || b.bottom > box.bottom + 0.5
  }).length
  const clippedText = [...svg.querySelectorAll('text')].filter((x) => {
    const b = x.getBoundingClientRect()
    return b.left < box.left - 0.5 || b.right > box.right + 0.5
  }).length
  const whiskers = [...svg.querySelectorAll('path.whisker')].filter((x) => {
    const b = x.getBoundingClientRect()
    return b.width > 0 && b.left >= box.left && b.right <= box.right + 0.5
  }).length
  let visibleBars = 0
  for (const r of bars) {
    // Scrolled into view first: elementFromPoint sees the viewport only.
    r.scrollIntoView({ block: 'center' })
    const c = r.getBoundingClientRect()
    if (c.width > 0 && c.height > 0 && document.elementFromPoint(c.left + c.width / 2, c.top + c.height / 2) === r) visibleBars++
  }
  return { label: svg.getAttribute('aria-label'), width: box.width, height: box.height, bars: bars.length, visibleBars, outside, clippedText, whiskers }
})
const out = document.createElement('pre')
out.id = 'layout'
out.textContent = JSON.stringify({ charts, requests: performance.getEntriesByType('resource').length })
document.body.append(out)
</script>`

/** A report of every workload in every mode and peer, one of them invalid, as a real run would give. */
function sampleReport(): { html: string; workloads: ReportWorkload[] } {
  const workloads = WORKLOADS.map(
    (name, wi): ReportWorkload => ({
      name,
      what: WORKLOAD_DEFS[name].what,
      unit: WORKLOAD_DEFS[name].unit,
      cells: COMPARE_MODES.filter((m) => carries(m, WORKLOAD_DEFS[name])).map((mode, mi) => {
        const valid = !(wi === 1 && mode === 'dnat')
        return {
          mode: modeLabel(mode),
          valid,
          reason: valid ? null : 'the proxy saw 7 of the 10 operations',
          opsPerSec: valid ? 1000 * (mi + 1) + wi : null,
          spread: valid ? { min: 900 * (mi + 1), max: 1100 * (mi + 1) + wi } : null,
          p50Ms: valid ? 0.5 + mi : null,
          p99Ms: valid ? 2 + mi : null,
          cpuUsPerOp: valid ? 40 + 10 * mi : null,
          runs: 3,
        }
      }),
    }),
  )
  return {
    html: renderReport({
      title: 'l7proxy: redirect modes compared',
      date: '2026-11-23',
      machine: '2 cores',
      settings: '3 runs',
      workloads,
    }),
    workloads,
  }
}

const gate = kernelGate(existsSync(CHROMIUM) ? null : `missing ${CHROMIUM} (Debian package chromium)`, kernelRequired())

t.test(
  'headless Chromium draws every chart and every bar of the report',
  gate.run ? {} : 'skip' in gate ? { skip: gate.skip } : {},
  async (t) => {
    if (!gate.run && 'fail' in gate) return void t.fail(gate.fail)
    const dir = mkdtempSync(join(tmpdir(), 'l7-report-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const { html, workloads } = sampleReport()
    const page = join(dir, 'compare.html')
    writeFileSync(page, html.replace('</body>', `${MEASURE}</body>`))
    const r = await promisify(execFile)(
      CHROMIUM,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        `--user-data-dir=${join(dir, 'profile')}`,
        '--window-size=1280,900',
        '--virtual-time-budget=5000',
        '--dump-dom',
        `file://${page}`,
      ],
      { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
    )
    const m = /<pre id="layout">(.*?)<\/pre>/s.exec(r.stdout)
    if (!m) return void t.fail(`Chromium returned no layout (stderr: ${r.stderr.slice(-400)})`)
    const layout = JSON.parse(
      m[1]!
        .replace(/&quot;/g, '"')
        .replace(/&amp;/g, '&')
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>'),
    ) as Layout

    t.equal(layout.charts.length, workloads.length * 3, 'throughput, latency and CPU charts for each workload')
    for (const [i, w] of workloads.entries()) {
      const valid = w.cells.filter((c) => c.valid).length
      const charts = layout.charts.slice(i * 3, i * 3 + 3)
      t.match(
        charts.map((c) => c.label),
        [`${w.name}: throughput`, `${w.name}: latency`, /CPU per operation/],
        `${w.name}: charts in order`,
      )
      t.same(
        charts.map((c) => c.whiskers),
        [valid, 0, 0],
        `${w.name}: the runs' spread drawn inside the throughput chart`,
      )
      t.same(
        charts.map((c) => c.bars),
        [valid, 2 * valid, valid],
        `${w.name}: a bar per valid mode and series (${w.cells.length - valid} invalid left out)`,
      )
      for (const c of charts) {
        t.ok(c.width > 100 && c.height > 50, `${c.label}: laid out at ${c.width}x${c.height}`)
        t.equal(c.visibleBars, c.bars, `${c.label}: every bar drawn and on top`)
        t.equal(c.outside, 0, `${c.label}: no bar outside its chart`)
        t.equal(c.clippedText, 0, `${c.label}: no label or value cut off at its sides`)
      }
    }
    t.equal(layout.requests, 0, 'the page fetched nothing')
  },
)
