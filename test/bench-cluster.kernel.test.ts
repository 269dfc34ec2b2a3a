// The cluster benchmark runs end to end in a lab of three nodes of its own (a short run): every
// change node 1 made reached both other nodes' kernel maps, the JSON and table come out with the
// commit, and etcd's keys per endpoint are counted. Figures are not asserted beyond that.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { execCommand } from '../lab/netns.js'
import { distPath } from '../lib/project-root.js'
import { refusesBadArguments } from './fixtures/bench-usage.js'
import { kernelTest } from './fixtures/kernel.js'

refusesBadArguments(t, 'cluster', [
  ['--sizes', '1'],
  ['--sizes', '10,x'],
  ['--rate', '0'],
  ['--mode', 'teleport'],
  ['--lab', 'Bad Name'],
  ['--frob'],
])

kernelTest(t, 'bench:cluster: every change on node 1 reaches nodes 2 and 3, timed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-bench-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const out = join(dir, 'cluster.json')
  const r = await execCommand(
    [
      process.execPath,
      distPath('bench/cluster.js'),
      '--sizes',
      '20,40',
      '--rate',
      '40',
      '--seconds',
      '2',
      '--allocations',
      '20',
      '--lab',
      `c${process.pid}`,
      '--out',
      out,
    ],
    { timeoutMs: 240_000 },
  )
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^endpoints\s+identities\s+changes\s+p50 ms\s+p99 ms/, 'a table')
  const result = JSON.parse(readFileSync(out, 'utf8')) as {
    build: { commit: string | null }
    propagation: Array<{
      size: number
      changes: number
      coalesced: number
      lost: number
      ms: { p50: number; p99: number }
      byNodeP99: Record<string, number>
      keysPerEndpoint: number
      identities: number
    }>
    allocation: { sequentialPerSecond: number; concurrentPerSecond: number; allocations: number }
  }
  t.match(result.build.commit, /^[0-9a-f]{40}$/, 'the commit it ran on')
  t.same(
    result.propagation.map((p) => [p.size, p.changes, p.identities]),
    [
      [20, 80, 2],
      [40, 80, 4],
    ],
    'each population, ten endpoints to an identity, changed 40 times a second for 2 s',
  )
  for (const p of result.propagation) {
    t.equal(
      p.lost,
      0,
      `${p.size}: every change reached both other nodes (${p.coalesced} added and removed before it was written)`,
    )
    t.ok(p.ms.p50 > 0 && p.ms.p99 >= p.ms.p50, `${p.size}: p50 ${p.ms.p50} ms, p99 ${p.ms.p99} ms`)
    t.same(Object.keys(p.byNodeP99), ['node2', 'node3'])
    t.ok(p.keysPerEndpoint >= 1, `${p.keysPerEndpoint} etcd keys per endpoint`)
  }
  t.equal(result.allocation.allocations, 20)
  t.ok(
    result.allocation.sequentialPerSecond > 0 && result.allocation.concurrentPerSecond > 0,
    `${Math.round(result.allocation.sequentialPerSecond)} identities/s one at a time`,
  )
})
