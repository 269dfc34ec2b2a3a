// The toFQDNs benchmark runs end to end in a lab of its own, at a small size: every connect made
// at once to a freshly learned address gets through (none raced the maps), the learned addresses
// share one identity, and the JSON and table come out. Latencies are not asserted.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { execCommand } from '../lab/netns.js'
import { labEndpoints } from '../lab/topology.js'
import { distPath } from '../lib/project-root.js'
import { refusesBadArguments } from './fixtures/bench-usage.js'
import { kernelTest } from './fixtures/kernel.js'

interface Row {
  way: string
  rate: number
  client: { names: number; answered: number; connected: number; denied: number; dnsMs: { p50: number; p99: number } }
  enforceMs: { p50: number; p99: number; max: number; answers: number } | null
  identities: { learned: number }
  maps: { ipcache: number }
  addedDnsMs: { p50: number } | null
}

refusesBadArguments(t, 'fqdn', [
  ['--names', '0'],
  ['--rates', '100,x'],
  ['--mode', 'sockmap'],
  ['--lab', 'Bad Name'],
  ['--frob'],
])

kernelTest(t, 'bench:fqdn: new names resolved and connected to at once, direct and through l7proxy', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-bench-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const out = join(dir, 'fqdn.json')
  const lab = `f${process.pid}`
  const names = 200
  const r = await execCommand(
    [
      process.execPath,
      distPath('bench/fqdn.js'),
      '--names',
      String(names),
      '--rates',
      '100,1000',
      '--lab',
      lab,
      '--out',
      out,
    ],
    { timeoutMs: 180_000 },
  )
  t.equal(r.code, 0, r.stderr)
  const result = JSON.parse(readFileSync(out, 'utf8')) as { rows: Row[]; build: { commit: string | null } }
  t.same(
    result.rows.map((x) => `${x.way}@${x.rate}`),
    ['direct@100', 'l7proxy@100', 'direct@1000', 'l7proxy@1000'],
  )
  for (const row of result.rows) {
    const at = `${row.way} at ${row.rate}/s`
    t.match(
      row.client,
      { names, answered: names, connected: names, denied: 0 },
      `${at}: every name answered, every connect through`,
    )
    if (row.way === 'direct') continue
    t.equal(row.identities.learned, 1, `${at}: ${names} learned addresses, one identity`)
    t.equal(row.maps.ipcache, labEndpoints().flatMap((e) => e.ips).length + names, `${at}: an ipcache entry each`)
    t.equal(row.enforceMs!.answers, names, `${at}: answer-to-enforcement for every first learning`)
    t.ok(row.addedDnsMs !== null, `${at}: the DNS latency the proxy adds`)
  }
  t.ok('commit' in result.build, 'the JSON names the build')
  t.match(
    r.stdout,
    /^names\/s\s+way\s+connected.*\n100\s+direct .*\n100\s+l7proxy .*\n1000\s+direct .*\n1000\s+l7proxy /m,
    'and prints the table',
  )
  const left = await execCommand(['ip', 'netns', 'list'])
  t.notMatch(left.stdout, new RegExp(`l7lab-${lab}-`), 'its lab is gone afterwards')
})
