// The overload benchmark runs end to end in a lab of its own (a small flood): the agent holds the
// flood's connections, the JSON and table come out with the commit, and the memory the flood took
// is given back. Figures are not asserted beyond that.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { execCommand } from '../lab/netns.js'
import { distPath } from '../lib/project-root.js'
import { refusesBadArguments } from './fixtures/bench-usage.js'
import { kernelTest } from './fixtures/kernel.js'

refusesBadArguments(t, 'overload', [
  ['--connections', '0'],
  ['--kinds', 'idle,lazy'],
  ['--after', '10,5'],
  ['--lab', 'Bad Name'],
  ['--frob'],
])

kernelTest(t, 'bench:overload floods the agent and reads its memory before, during and after', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-bench-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const out = join(dir, 'overload.json')
  const r = await execCommand(
    [
      process.execPath,
      distPath('bench/overload.js'),
      '--connections',
      '3000',
      '--clients',
      '2',
      '--kinds',
      'idle',
      '--after',
      '1,12',
      '--lab',
      `o${process.pid}`,
      '--out',
      out,
    ],
    { timeoutMs: 180_000 },
  )
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^kind\s+held\s+refused\s+bytes\/connection/, 'a table')
  const result = JSON.parse(readFileSync(out, 'utf8')) as {
    build: { commit: string | null }
    floods: Array<{
      kind: string
      attempted: number
      held: number
      refused: number
      connectionsPerNode: number
      bytesPerConnection: number
      rssMB: { before: number; held: number; after: Record<string, number> }
    }>
  }
  t.match(result.build.commit, /^[0-9a-f]{40}$/, 'the commit it ran on')
  const [idle] = result.floods
  t.equal(idle!.kind, 'idle')
  t.equal(idle!.attempted, 3000)
  t.equal(idle!.held, Math.min(3000, idle!.connectionsPerNode), 'held what the node budget allows')
  t.equal(idle!.refused, 3000 - idle!.held, 'and refused the rest')
  t.ok(idle!.bytesPerConnection > 0, `${Math.round(idle!.bytesPerConnection)} bytes per connection`)
  const { before, held, after } = idle!.rssMB
  t.ok(
    after['12s']! < held,
    `memory given back after the flood: ${before} MB before, ${held} MB held, ${after['12s']} MB 12 s after`,
  )
})
