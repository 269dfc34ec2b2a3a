// The gRPC benchmark runs end to end in a lab of its own (short runs): both ways are checked to
// take their path, and the JSON and table come out. Figures are not asserted.

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
    flowLines?: number
  }
}

refusesBadArguments(t, 'grpc', [
  ['--duration', '0'],
  ['--streams', '101'],
  ['--connections', 'x'],
  ['--mode', 'magic'],
  ['--lab', 'Bad Name'],
  ['--frob'],
])

kernelTest(t, 'bench:grpc measures unary calls direct and through l7proxy in the lab', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-bench-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const out = join(dir, 'grpc.json')
  const lab = `g${process.pid}`
  const r = await execCommand(
    [
      process.execPath,
      distPath('bench/grpc.js'),
      '--duration',
      '1',
      '--runs',
      '1',
      '--warmup',
      '0',
      '--connections',
      '2',
      '--streams',
      '2',
      '--lab',
      lab,
      '--out',
      out,
    ],
    { timeoutMs: 120_000 },
  )
  t.equal(r.code, 0, r.stderr)
  const result = JSON.parse(readFileSync(out, 'utf8')) as { rows: Row[]; l7proxyVsDirect: { callsPerSec: number } }
  t.same(
    result.rows.map((x) => x.scenario),
    ['direct', 'l7proxy'],
  )
  for (const row of result.rows) {
    t.same(
      row.check,
      { allowed: 'ok', denied: row.scenario === 'direct' ? 'ok' : 'status 7' },
      `${row.scenario}: took its path`,
    )
    t.ok(row.median.ops > 0 && row.median.errors === 0, `${row.scenario}: ${row.median.ops} calls, none failed`)
    t.ok(row.median.latencyMs.p99 >= row.median.latencyMs.p50, `${row.scenario}: p99 >= p50`)
    t.equal(
      row.median.proxyCpuCores === null,
      row.scenario === 'direct',
      `${row.scenario}: proxy CPU measured when there is a proxy`,
    )
  }
  t.ok(result.rows[1]!.median.flowLines! >= result.rows[1]!.median.ops, 'l7proxy logged every call')
  t.ok(result.l7proxyVsDirect.callsPerSec > 0)
  t.match(r.stdout, /^scenario\s+calls\/s\s+p50 ms.*\ndirect .*\nl7proxy /m, 'and prints the table')
  const left = await execCommand(['ip', 'netns', 'list'])
  t.notMatch(left.stdout, new RegExp(`l7lab-${lab}-`), 'its lab is gone afterwards')
})
