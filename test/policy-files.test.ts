// The policy files an agent enforces, without the kernel: a directory's good files load and bad
// ones are refused (logged, nothing changes); an import is applied at once and reaches the
// maps and the other threads, and a refused one leaves the directory as it was.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import t from 'tap'
import { labEndpoints } from '../lab/topology.js'
import { projectRoot } from '../lib/project-root.js'
import { PolicyEngine } from '../policy/engine.js'
import { AdminQueryError } from '../proxy/agent/admin-server.js'
import { PolicyFiles } from '../proxy/agent/policy-files.js'

const STAR_WARS = readFileSync(join(projectRoot(), 'policy/examples/star-wars.yaml'), 'utf8')

t.test('a directory: good files in force, a bad one refused; imports applied, reaching maps and threads', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-policy-files-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'star-wars.yaml'), STAR_WARS)
  writeFileSync(join(dir, 'broken.yaml'), 'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nspec: [')
  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  for (const ep of labEndpoints()) engine.upsertEndpoint(ep)
  const errors: string[] = []
  const logger = pino(
    { level: 'info' },
    { write: (line: string) => void (JSON.parse(line).level === 50 && errors.push(JSON.parse(line).file as string)) },
  )
  const files = new PolicyFiles({ engine, logger, file: null, dir })
  t.teardown(() => files.close())
  t.same([...files.texts.keys()], [join(dir, 'star-wars.yaml')], 'the good file is in force')
  t.same(errors, [join(dir, 'broken.yaml')], 'the bad one refused and logged')
  const told: Array<[string, string | null]> = []
  let writes = 0
  let observed = 0
  files.watch({
    writeMaps: () => void writes++,
    tellThreads: (file, text) => void told.push([file, text]),
    observe: () => void observed++,
  })

  const revision = engine.policyRevision
  const r = files.import(
    'extra.yaml',
    STAR_WARS.replace(/name: [a-z-]+/g, (m) => `${m}-extra`),
  )
  t.equal(r.file, join(dir, 'extra.yaml'))
  t.ok(r.revision > revision, 'the engine took it')
  t.equal(writes, 1)
  t.equal(observed, 1)
  t.same(
    told.map(([file]) => file),
    [join(dir, 'extra.yaml')],
    'the other threads are told',
  )
  t.ok(files.texts.has(join(dir, 'extra.yaml')))

  t.throws(() => files.import('bad name.yaml', STAR_WARS), {
    constructor: AdminQueryError,
    message: /is not a policy file name/,
  })
  t.throws(
    () => files.import('extra.yaml', 'spec: ['),
    { constructor: AdminQueryError, message: /extra\.yaml:1:\d+/ },
    'one that does not parse, with where',
  )
  t.equal(readFileSync(join(dir, 'extra.yaml'), 'utf8').includes('-extra'), true, 'and the file in force is untouched')
  t.throws(() => files.import('new.yaml', 'spec: ['), { constructor: AdminQueryError, message: /new\.yaml/ })
  t.notOk(existsSync(join(dir, 'new.yaml')), 'nothing written for a refused import')
  t.equal(writes, 1, 'no map write for what was refused')
})

t.test('a file given by name: loaded, or a start-up error; nothing to import into', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-policy-files-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  const logger = pino({ level: 'silent' })
  writeFileSync(join(dir, 'broken.yaml'), 'spec: [')
  t.throws(() => new PolicyFiles({ engine, logger, file: join(dir, 'broken.yaml'), dir: null }), /broken\.yaml/)
  const files = new PolicyFiles({
    engine,
    logger,
    file: join(projectRoot(), 'policy/examples/star-wars.yaml'),
    dir: null,
  })
  t.equal(files.texts.size, 1)
  t.equal(files.dir, null)
  t.throws(() => files.import('x.yaml', STAR_WARS), { constructor: AdminQueryError, message: /not a directory/ })
})
