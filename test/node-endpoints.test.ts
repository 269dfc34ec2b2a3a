// The node's endpoints without the kernel: an endpoints file read at start (a bad one is an
// error), then watched: a change leaves removed endpoints first, attaches and writes new ones,
// tells the other threads; a bad file, or an interface that cannot be attached, changes nothing.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import t from 'tap'
import { labEndpoints, nodeIfname } from '../lab/topology.js'
import { PolicyEngine } from '../policy/engine.js'
import { NodeEndpoints } from '../proxy/agent/node-endpoints.js'
import { waitUntil } from './fixtures/wait.js'

const ONE =
  'endpoints:\n- { id: 1, name: tiefighter, interface: lxc-tf, ips: [198.18.1.10], labels: { class: tiefighter } }\n'
const TWO = `${ONE}- { id: 3, name: deathstar, interface: lxc-ds, ips: [198.18.2.10], labels: { class: deathstar } }\n`

/** Waits (at most 4 s) until `done` holds; the file is polled every 500 ms. */
const until = (done: () => boolean): Promise<boolean> => waitUntil(done, 40, 100)

t.test('read at start, then each change applied in order; bad ones change nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-node-endpoints-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'endpoints.yaml')
  writeFileSync(file, ONE)
  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  const refused: string[] = []
  const logger = pino(
    { level: 'info' },
    { write: (l: string) => void (JSON.parse(l).level === 50 && refused.push(JSON.parse(l).error as string)) },
  )
  const eps = new NodeEndpoints({ file }, engine, logger)
  t.teardown(() => eps.close())
  t.same(
    eps.list.map((e) => e.id),
    [1],
  )
  t.ok(engine.endpointAt('198.18.1.10') !== undefined, 'registered with the engine')

  const steps: string[] = []
  let told: number[][] = []
  let failAttach = false
  eps.watch({
    attach: (ifname, id) => {
      if (failAttach) throw new Error(`no interface ${ifname}`)
      steps.push(id === undefined ? `attach ${ifname}` : `attach ${ifname} ${id}`)
    },
    forget: (id) => void steps.push(`forget ${id}`),
    quarantine: (ifname) => (steps.push(`quarantine ${ifname}`), 0),
    endQuarantine: () => void steps.push('end quarantine'),
    writeMaps: () => (steps.push('write'), { upserts: 0, deletes: 0 }),
    tellThreads: (list) => void told.push(list.map((e) => e.id)),
  })

  writeFileSync(file, TWO)
  t.ok(await until(() => told.length === 1), 'the change is applied')
  t.same(
    [...steps],
    ['attach lxc-ds', 'write', 'attach lxc-ds 3', 'write'],
    'the new interface checked, then attached with its endpoint and written',
  )
  t.same(told, [[1, 3]])
  t.ok(engine.endpointAt('198.18.2.10') !== undefined)

  writeFileSync(file, 'endpoints: [\n')
  t.ok(await until(() => refused.length === 1), 'a file that does not parse is refused')
  t.match(refused[0], /endpoints\.yaml:\d+:\d+/)
  t.same(
    eps.list.map((e) => e.id),
    [1, 3],
    'and the endpoints in force stay',
  )

  failAttach = true
  writeFileSync(file, ONE.replace('lxc-tf', 'lxc-moved'))
  t.ok(await until(() => refused.length === 2), 'an interface that cannot be attached is refused')
  t.same(
    eps.list.map((e) => e.interface),
    ['lxc-tf', 'lxc-ds'],
  )

  failAttach = false
  steps.length = 0
  told = []
  writeFileSync(file, ONE)
  t.ok(await until(() => told.length === 1))
  t.same(
    [...steps],
    ['write', 'forget 3', 'write'],
    'the removed endpoint leaves the maps, then the datapath forgets it',
  )
  t.equal(engine.endpointAt('198.18.2.10'), undefined)
})

t.test('a bad file at start is an error; a list given is registered, and replaced as a whole', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-node-endpoints-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'bad.yaml'), 'pods: []\n')
  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  t.throws(
    () => new NodeEndpoints({ file: join(dir, 'bad.yaml') }, engine, pino({ level: 'silent' })),
    /unknown field 'pods'/,
  )
  const list = labEndpoints().map((e) => ({ ...e, interface: nodeIfname(e.host) }))
  const given = new NodeEndpoints({ list }, engine, pino({ level: 'silent' }))
  t.same(given.list, list)
  t.ok(engine.endpointAt(list[0]!.ips[0]!) !== undefined, 'registered with the engine')
  t.throws(() => given.replace(list.slice(1)), /before the datapath is up/)
  const steps: string[] = []
  given.watch({
    attach: () => undefined,
    forget: (id) => void steps.push(`forget ${id}`),
    quarantine: () => 0,
    endQuarantine: () => undefined,
    writeMaps: () => ({ upserts: 0, deletes: 0 }),
    tellThreads: () => undefined,
  })
  given.replace(list.slice(1))
  t.same(steps, [`forget ${list[0]!.id}`], 'the endpoint left out leaves')
  t.equal(engine.endpointAt(list[0]!.ips[0]!), undefined)
})

t.test(
  'an endpoint the maps have no room for is refused alone and quarantined, tried again at the next change, let go when it leaves',
  async (t) => {
    const list = labEndpoints().map((e) => ({ ...e, interface: nodeIfname(e.host) }))
    const probe = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
    for (const ep of list) probe.upsertEndpoint(ep)
    const full = probe.mapFill().ipcache.entries
    const engine = new PolicyEngine({
      proxyPorts: { http: 15001, dns: 15053 },
      capacity: { ipcache: full, policy: 1000 },
    })
    const errors: string[] = []
    const logger = pino(
      { level: 'info' },
      { write: (l: string) => void (JSON.parse(l).level === 50 && errors.push(JSON.parse(l).msg as string)) },
    )
    const eps = new NodeEndpoints({ list }, engine, logger)
    const steps: string[] = []
    const told: number[][] = []
    eps.watch({
      attach: () => undefined,
      forget: (id) => void steps.push(`forget ${id}`),
      quarantine: (ifname) => (steps.push(`quarantine ${ifname}`), 42),
      endQuarantine: (handle) => void steps.push(`end quarantine ${handle}`),
      writeMaps: () => ({ upserts: 0, deletes: 0 }),
      tellThreads: (l) => void told.push(l.map((e) => e.id)),
    })
    const extra = { id: 77, host: 'extra', interface: 'lxc-extra', ips: ['198.18.1.77'], labels: { class: 'extra' } }
    eps.replace([...list, extra])
    t.same(
      steps,
      ['forget 77', 'quarantine lxc-extra'],
      'no room for its address: forgotten by the datapath, its interface quarantined',
    )
    t.match(eps.refusal(77), /^endpoint 77: refused: its 1 address\(es\) do not fit the ipcache/)
    t.same(errors, ['endpoint refused: the maps are full; its interface denies everything'])
    t.equal(engine.endpointAt('198.18.1.77'), undefined, 'the engine does not have it')
    t.same(told, [list.map((e) => e.id)], 'nor do the threads')
    t.same(
      eps.list.map((e) => e.id),
      list.map((e) => e.id),
      'the others stay in force',
    )
    steps.length = 0
    eps.replace([...list.slice(1), extra])
    t.ok(engine.endpointAt('198.18.1.77') !== undefined, 'one endpoint left: the next change takes it')
    t.equal(eps.refusal(77), null)
    eps.replace(list.slice(1))
    t.same(
      steps.filter((s) => s.startsWith('end')),
      [],
      'taken, its own entry replaced the quarantine: nothing to end',
    )
    eps.replace([...list, extra])
    steps.length = 0
    eps.replace(list)
    t.same(steps, ['end quarantine 42'], 'refused again, then gone: its quarantine ends')
  },
)

t.test('a refused endpoint that moves to another interface takes its quarantine along', async (t) => {
  const list = labEndpoints().map((e) => ({ ...e, interface: nodeIfname(e.host) }))
  const probe = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  for (const ep of list) probe.upsertEndpoint(ep)
  const engine = new PolicyEngine({
    proxyPorts: { http: 15001, dns: 15053 },
    capacity: { ipcache: probe.mapFill().ipcache.entries, policy: 1000 },
  })
  const eps = new NodeEndpoints({ list }, engine, pino({ level: 'silent' }))
  const steps: string[] = []
  let handle = 0
  eps.watch({
    attach: () => undefined,
    forget: () => undefined,
    quarantine: (ifname) => (steps.push(`quarantine ${ifname} as ${++handle}`), handle),
    endQuarantine: (h) => void steps.push(`end quarantine ${h}`),
    writeMaps: () => ({ upserts: 0, deletes: 0 }),
    tellThreads: () => undefined,
  })
  const extra = { id: 77, host: 'extra', interface: 'lxc-a', ips: ['198.18.1.77'], labels: { class: 'extra' } }
  eps.replace([...list, extra])
  eps.replace([...list, { ...extra, interface: 'lxc-b' }])
  t.same(
    steps,
    ['quarantine lxc-a as 1', 'end quarantine 1', 'quarantine lxc-b as 2'],
    'still refused on its new interface: that one denies everything, the old one is let go',
  )
  steps.length = 0
  eps.replace([...list.slice(1), { ...extra, interface: 'lxc-c' }])
  t.ok(engine.endpointAt('198.18.1.77') !== undefined, 'room made: taken on a third interface')
  t.same(steps, ['end quarantine 2'], 'the quarantine on the interface it left ends')
})
