// The DNS benchmark runs end to end in a lab of its own (short runs): every way is checked to
// take its path, and the JSON and table come out. Figures are not asserted.

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
  check: { allowed: string; denied: string }
  median: {
    ops: number
    errors: number
    opsPerSec: number
    latencyMs: { p50: number; p99: number }
    proxyCpuCores: number | null
    enforceMs?: { answers: number }
  }
}

refusesBadArguments(t, 'dns', [
  ['--duration', '0'],
  ['--clients', 'x'],
  ['--mode', 'sockmap'],
  ['--mode', 'magic'],
  ['--lab', 'Bad Name'],
  ['--frob'],
])

kernelTest(t, 'bench:dns measures direct, l7proxy and dnsdist in the lab', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-bench-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const out = join(dir, 'dns.json')
  const lab = `d${process.pid}`
  const r = await execCommand(
    [
      process.execPath,
      distPath('bench/dns.js'),
      '--duration',
      '1',
      '--runs',
      '1',
      '--warmup',
      '0',
      '--clients',
      '2',
      '--lab',
      lab,
      '--out',
      out,
    ],
    { timeoutMs: 120_000 },
  )
  t.equal(r.code, 0, r.stderr)
  const result = JSON.parse(readFileSync(out, 'utf8')) as { rows: Row[]; l7proxyVsDnsdist: { queriesPerSec: number } }
  t.same(
    result.rows.map((x) => x.scenario),
    ['direct', 'l7proxy', 'dnsdist'],
  )
  for (const row of result.rows) {
    t.same(
      row.check,
      { allowed: 'NOERROR', denied: row.scenario === 'direct' ? 'NOERROR' : 'REFUSED' },
      `${row.scenario}: took its path`,
    )
    t.ok(row.median.ops > 0, `${row.scenario}: ${row.median.ops} queries`)
    t.ok(row.median.latencyMs.p99 >= row.median.latencyMs.p50, `${row.scenario}: p99 >= p50`)
    t.equal(
      row.median.proxyCpuCores === null,
      row.scenario === 'direct',
      `${row.scenario}: proxy CPU measured when there is a proxy`,
    )
  }
  t.ok(result.rows[1]!.median.enforceMs!.answers > 0, 'l7proxy: answer-to-enforcement times from its log')
  t.ok(result.l7proxyVsDnsdist.queriesPerSec > 0)
  t.match(r.stdout, /^scenario\s+queries\/s\s+p50 ms.*\ndirect .*\nl7proxy .*\ndnsdist /m, 'and prints the table')
  const left = await execCommand(['ip', 'netns', 'list'])
  t.notMatch(left.stdout, new RegExp(`l7lab-${lab}-`), 'its lab is gone afterwards')
})
