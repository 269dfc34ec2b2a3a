// The agent's FQDN learning on its own: what an answer teaches reaches the engine, the maps (one
// write per call) and the other threads, is saved and restored by the next agent, expires unless
// a connection still uses it, and is forgotten on clean.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import type { PolicyEngine } from '../policy/engine.js'
import { FqdnLearning } from '../proxy/agent/fqdn-learning.js'
import type { AnswerRecord } from '../proxy/dns/fqdn-cache.js'

const A = (name: string, ip: string, ttl = 60): AnswerRecord => ({ name, type: 'A', ttl, data: ip })

function setup(t: Test, dir: string, o: { minTtlSeconds?: number; live?: Set<string> } = {}) {
  const engine = new Map<string, string[]>()
  const told: Array<[string, string[]]> = []
  let writes = 0
  const learning = new FqdnLearning({
    engine: { setFqdnIps: (name: string, ips: string[]) => void engine.set(name, ips) } as unknown as PolicyEngine,
    logger: pino({ level: 'silent' }),
    cache: { minTtlSeconds: o.minTtlSeconds ?? 3600 },
    stateDir: dir,
    writeMaps: () => void writes++,
    liveDestinations: () => o.live ?? new Set(),
    tellThreads: (name, ips) => void told.push([name, ips]),
  })
  t.teardown(() => learning.close())
  return { learning, engine, told, writes: () => writes }
}

t.test('an answer reaches the engine, the maps and the threads; the same one again only renews', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-fqdn-learning-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const s = setup(t, dir)
  s.learning.learnAll([{ qname: 'cantina.empire', records: [A('cantina.empire', '192.0.2.3')] }])
  t.same(s.engine.get('cantina.empire'), ['192.0.2.3'])
  t.equal(s.writes(), 1)
  t.same(s.told, [['cantina.empire', ['192.0.2.3']]])
  s.learning.learnAll([{ qname: 'cantina.empire', records: [A('cantina.empire', '192.0.2.3')] }])
  t.equal(s.writes(), 1, 'nothing new: no map write')
  s.learning.learnAll([
    { qname: 'cantina.empire', records: [A('cantina.empire', '192.0.2.4')] },
    { qname: 'speeder.empire', records: [A('speeder.empire', '192.0.2.5')] },
  ])
  t.equal(s.writes(), 2, 'a batch of answers: one map write')
  t.same(s.engine.get('cantina.empire'), ['192.0.2.3', '192.0.2.4'])
  s.learning.learnAll([{ qname: 'bad.empire', records: null as unknown as AnswerRecord[] }])
  t.equal(s.writes(), 2, 'a batch that cannot be read changes nothing, and does not throw')

  const saved = () =>
    (JSON.parse(readFileSync(join(dir, 'fqdn-cache.json'), 'utf8')) as Array<{ name: string }>)
      .map((e) => e.name)
      .sort()
  await new Promise((r) => setTimeout(r, 20))
  t.same(saved(), ['cantina.empire', 'speeder.empire'], 'the first change is saved at once, after the maps')
  s.learning.learnAll([{ qname: 'hoth.empire', records: [A('hoth.empire', '192.0.2.9')] }])
  await new Promise((r) => setTimeout(r, 20))
  t.same(
    saved(),
    ['cantina.empire', 'speeder.empire'],
    'one within a second of that save waits (at most one save a second)',
  )
  await new Promise((r) => setTimeout(r, 1_100))
  t.same(saved(), ['cantina.empire', 'hoth.empire', 'speeder.empire'], 'and is saved when the second is over')
  const next = setup(t, dir)
  t.same(next.engine.get('speeder.empire'), ['192.0.2.5'], 'the next agent restores what was learned')
  t.same(next.learning.clean().sort(), ['cantina.empire', 'hoth.empire', 'speeder.empire'])
  t.same(next.engine.get('cantina.empire'), [], 'clean takes the addresses out')
  t.same(next.learning.entries(), [])
  next.learning.close() // saves what the turn has not saved yet
  t.same(setup(t, dir).engine.size, 0, 'and the next agent starts without them')
})

t.test('an expired address leaves, unless a connection still uses it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-fqdn-learning-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const live = new Set(['192.0.2.4'])
  const s = setup(t, dir, { minTtlSeconds: 0, live })
  s.learning.learnAll([
    { qname: 'cantina.empire', records: [A('cantina.empire', '192.0.2.3', 1), A('cantina.empire', '192.0.2.4', 1)] },
  ])
  await new Promise((r) => setTimeout(r, 2_300))
  t.same(s.engine.get('cantina.empire'), ['192.0.2.4'], 'the one in use stays')
  t.match(s.learning.entries(), [{ name: 'cantina.empire', ips: [{ ip: '192.0.2.4', zombie: true }] }])
})
