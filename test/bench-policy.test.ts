// The policy benchmark runs and its correctness check holds: one identity change touches exactly
// the map entries that reference it. (Its timings are reported by the benchmark, never asserted.)

import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { distPath } from '../lib/project-root.js'

t.test('bench:policy --quick writes JSON and a table', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-bench-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const out = join(dir, 'policy.json')
  const r = spawnSync(process.execPath, [distPath('bench/policy.js'), '--quick', '--out', out], {
    encoding: 'utf8',
    timeout: 120_000,
  })
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /policies identities endpoints/)
  const json = JSON.parse(readFileSync(out, 'utf8')) as {
    build: { commit: string | null; dirty: boolean | null; node: string; kernel: string; args: string[] }
    rows: Array<{
      policies: number
      mapEntries: number
      identityAdd: { exact: boolean; touchedMean: number }
      identityRemove: { exact: boolean }
    }>
  }
  t.match(
    json.build,
    { commit: /^[0-9a-f]{40}$/, dirty: Boolean, node: process.version, args: ['--quick', '--out', out] },
    'the result says what it was measured with: commit, changes, Node, arguments',
  )
  t.equal(json.rows.length, 2)
  for (const row of json.rows) {
    t.ok(row.mapEntries > 0, `${row.policies} policies compile to map entries`)
    t.ok(row.identityAdd.exact, 'identity add touches exactly the entries referencing it')
    t.ok(row.identityRemove.exact, 'identity removal too')
  }
  t.ok(
    json.rows.some((r) => r.identityAdd.touchedMean > 0),
    'and touches some',
  )
})
