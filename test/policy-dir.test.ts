// The policy directory: which files count, and what a scan reports as changed.

import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { diffPolicyFiles, PolicyDirectory } from '../proxy/agent/policy-dir.js'

t.test('diff: added, changed and removed files, in name order; unchanged ones left out', async (t) => {
  const before = new Map([
    ['/p/a.yaml', 'A'],
    ['/p/b.yaml', 'B'],
    ['/p/c.yaml', 'C'],
  ])
  const after = new Map([
    ['/p/a.yaml', 'A'],
    ['/p/b.yaml', 'B2'],
    ['/p/d.yaml', 'D'],
  ])
  t.same(diffPolicyFiles(before, after), [
    { file: '/p/b.yaml', text: 'B2' },
    { file: '/p/c.yaml', text: null },
    { file: '/p/d.yaml', text: 'D' },
  ])
  t.same(diffPolicyFiles(after, after), [])
})

t.test('scan: only policy files count; each change is reported once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-policy-dir-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const name of ['one.yaml', 'two.yml', '.hidden.yaml', '#autosave.yaml#', 'notes.txt', 'backup.yaml~'])
    writeFileSync(join(dir, name), name)
  const pd = new PolicyDirectory(dir)
  const first = pd.scan()
  t.same(
    first.map((c) => [c.file, c.text]),
    [
      [join(dir, 'one.yaml'), 'one.yaml'],
      [join(dir, 'two.yml'), 'two.yml'],
    ],
  )
  t.ok(
    first.every((c) => c.changedAt > 0),
    'with the time each file changed',
  )
  t.same(pd.scan(), [], 'nothing new: nothing reported')
  writeFileSync(join(dir, 'one.yaml'), 'changed')
  unlinkSync(join(dir, 'two.yml'))
  t.same(
    pd.scan().map((c) => [c.file, c.text]),
    [
      [join(dir, 'one.yaml'), 'changed'],
      [join(dir, 'two.yml'), null],
    ],
  )
})
