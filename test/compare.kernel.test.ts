// `l7proxy compare` end to end in a lab of its own, short: every requested mode and workload
// runs, each run's counters confirm its path, and the JSON and HTML come out. Figures are not
// asserted.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { execCommand } from '../lab/netns.js'
import { runCli } from './fixtures/cli.js'
import { kernelTest } from './fixtures/kernel.js'

interface Cell {
  mode: string
  valid: boolean
  reason: string | null
  median: {
    ops: number
    opsPerSec: number
    cpuUsPerOp: number
    bpfNsPerOp: number | null
    programs: Record<string, { runs: number; ns: number }>
    latencyMs: { p50: number; p99: number }
  } | null
  runs: Array<{ valid: boolean }>
}

t.test('compare refuses bad arguments with usage and exit 2', async (t) => {
  for (const args of [
    ['--modes', 'none,ebpf'],
    ['--workloads', 'smtp'],
    ['--duration', '0'],
    ['--out', 'x.txt'],
    ['--lab', 'Bad Name'],
    ['--frob'],
  ]) {
    const r = runCli(['compare', ...args])
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, /l7proxy: error: .+\n\nUsage: l7proxy/, 'says what is wrong and how to call it')
  }
})

kernelTest(
  t,
  'compare: none, sk-assign, sk-lookup, sockmap and the peers on kept-alive HTTP, new connections and DNS',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'l7-compare-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const out = join(dir, 'compare.json')
    const lab = `c${process.pid}`
    const r = runCli(
      [
        'compare',
        '--duration',
        '1',
        '--runs',
        '1',
        '--warmup',
        '0',
        '--modes',
        'none,sk-assign,sk-lookup,sockmap,haproxy,dnsdist',
        '--workloads',
        'http-keepalive,http-connect,dns',
        '--lab',
        lab,
        '--out',
        out,
      ],
      { timeoutMs: 300_000 },
    )
    t.equal(r.code, 0, r.stderr)
    const result = JSON.parse(readFileSync(out, 'utf8')) as { workloads: Array<{ name: string; cells: Cell[] }> }
    t.same(
      result.workloads.map((w) => [w.name, w.cells.map((c) => c.mode)]),
      [
        ['http-keepalive', ['none', 'sk-assign', 'sk-lookup', 'sockmap', 'haproxy']],
        ['http-connect', ['none', 'sk-assign', 'sk-lookup', 'sockmap', 'haproxy']],
        ['dns', ['none', 'sk-assign', 'sk-lookup', 'dnsdist']],
      ],
      'every pair the modes can carry (sockmap is TCP only, each peer speaks one protocol)',
    )
    for (const w of result.workloads) {
      for (const c of w.cells) {
        t.ok(
          c.valid && c.median !== null && c.median.ops > 0,
          `${w.name}/${c.mode}: path confirmed, ${c.median?.ops} operations${c.reason ? ` (${c.reason})` : ''}`,
        )
        t.ok(
          c.median!.latencyMs.p99 >= c.median!.latencyMs.p50 && c.median!.cpuUsPerOp > 0,
          `${w.name}/${c.mode}: latency and CPU per operation`,
        )
        // Every mode's node runs from-endpoint on each packet; sk-lookup's also its sk_lookup program.
        t.ok(
          (c.median?.bpfNsPerOp ?? 0) > 0,
          `${w.name}/${c.mode}: the datapath's programs cost ${c.median?.bpfNsPerOp} ns an operation`,
        )
        if (c.mode === 'sk-lookup')
          t.ok((c.median?.programs.steer_to_proxy?.runs ?? 0) > 0, `${w.name}/sk-lookup: its sk_lookup program ran`)
      }
    }
    const html = readFileSync(out.replace(/\.json$/, '.html'), 'utf8')
    t.equal(html.match(/<svg /g)?.length, 9, 'three charts per workload in the HTML report')
    t.match(html, /<td>haproxy \(tproxy\)<\/td>/, 'a peer named with the steering it sits behind')
    t.match(
      r.stdout,
      /^workload\s+mode\s+ops\/s.*\nhttp-keepalive\s+none\s+\d+ req\/s/m,
      'and the table on the terminal',
    )
    t.match(r.stderr, /round 1\/1 dns\/dnsdist: \d+ ops\/s \[14\/14, about 0m00s left\]/, 'progress with what is left')
    const left = await execCommand(['ip', 'netns', 'list'])
    t.notMatch(left.stdout, new RegExp(`l7lab-${lab}-`), 'its lab is gone afterwards')
  },
)
