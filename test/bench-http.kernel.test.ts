// The HTTP benchmark runs end to end in a lab of its own (short runs): every scenario is checked
// to take the path it measures, and the JSON and table come out. Figures are not asserted.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { execCommand } from '../lab/netns.js'
import { distPath } from '../lib/project-root.js'
import { refusesBadArguments } from './fixtures/bench-usage.js'
import { kernelTest } from './fixtures/kernel.js'

interface Row {
  scenario: string
  check: { allowed: number; denied: number }
  median: {
    ops: number
    opsPerSec: number
    errors: number
    latencyMs: { p50: number; p99: number }
    proxyCpuCores: number | null
    proxySystemCores: number | null
    flowLines?: number
    sockmapMessages?: number
  }
}

refusesBadArguments(t, 'http', [
  ['--duration', '0'],
  ['--runs', 'x'],
  ['--mode', 'magic'],
  ['--threads', '0'],
  ['--cpus', 'both'],
  ['--lab', 'Bad Name'],
  ['--frob'],
])

for (const [cpus, mode] of [
  ['shared', 'sk-assign'],
  ['split', 'sk-assign'],
  ['shared', 'sockmap'],
] as const) {
  kernelTest(
    t,
    `bench:http measures direct, l7proxy and haproxy in the lab (--cpus ${cpus}, --mode ${mode})`,
    async (t) => {
      const dir = mkdtempSync(join(tmpdir(), 'l7-bench-'))
      t.teardown(() => rmSync(dir, { recursive: true, force: true }))
      const out = join(dir, 'http.json')
      const lab = `b${process.pid}`
      const r = await execCommand(
        [
          process.execPath,
          distPath('bench/http.js'),
          '--duration',
          '1',
          '--runs',
          '1',
          '--warmup',
          '0',
          '--connections',
          '4',
          '--lab',
          lab,
          '--cpus',
          cpus,
          '--mode',
          mode,
          '--out',
          out,
        ],
        {
          timeoutMs: 120_000,
        },
      )
      t.equal(r.code, 0, r.stderr)
      const result = JSON.parse(readFileSync(out, 'utf8')) as {
        rows: Row[]
        cpus: string
        mode: string
        proxyThreads: number
        l7proxyVsHaproxy: { requestsPerSec: number }
      }
      t.equal(result.cpus, cpus)
      t.equal(result.mode, mode)
      if (cpus === 'split') t.equal(result.proxyThreads, 1, 'one proxy thread on its one CPU')
      t.same(
        result.rows.map((x) => x.scenario),
        ['direct', 'l7proxy', 'haproxy'],
      )
      for (const row of result.rows) {
        t.equal(row.check.allowed, 200, `${row.scenario}: GET /v1/ allowed`)
        t.equal(
          row.check.denied,
          row.scenario === 'direct' ? 503 : 403,
          `${row.scenario}: PUT /v1/exhaust-port ${row.scenario === 'direct' ? 'reaches the server' : 'denied by the proxy'}`,
        )
        t.ok(row.median.ops > 0, `${row.scenario}: ${row.median.ops} requests`)
        t.equal(row.median.errors, 0, `${row.scenario}: no errors`)
        t.ok(row.median.latencyMs.p99 >= row.median.latencyMs.p50, `${row.scenario}: p99 >= p50`)
        t.equal(
          row.median.proxyCpuCores === null,
          row.scenario === 'direct',
          `${row.scenario}: proxy CPU measured when there is a proxy`,
        )
        const { proxyCpuCores: cpu, proxySystemCores: kernel } = row.median
        if (cpu !== null)
          t.ok(
            kernel !== null && kernel >= 0 && kernel <= cpu,
            `${row.scenario}: its kernel part (${kernel}) is part of its CPU (${cpu})`,
          )
        // sockmap: both proxies' hops go socket to socket (wrk, the agent and HAProxy in the lab's cgroup).
        if (mode === 'sockmap' && row.scenario !== 'direct')
          t.ok(
            (row.median.sockmapMessages ?? 0) > 0,
            `${row.scenario}: sk_msg moved ${row.median.sockmapMessages} messages`,
          )
      }
      const l7 = result.rows.find((x) => x.scenario === 'l7proxy')!.median
      t.ok(l7.flowLines! >= l7.ops, `l7proxy logged a flow line for each of its ${l7.ops} requests (${l7.flowLines})`)
      t.ok(result.l7proxyVsHaproxy.requestsPerSec > 0)
      t.match(r.stdout, /^scenario\s+req\/s\s+p50 ms.*\ndirect .*\nl7proxy .*\nhaproxy /m, 'and prints the table')
      const left = await execCommand(['ip', 'netns', 'list'])
      t.notMatch(left.stdout, new RegExp(`l7lab-${lab}-`), 'its lab is gone afterwards')
    },
  )
}
