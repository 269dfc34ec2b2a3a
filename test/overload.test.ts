// The overload budgets as pure logic: the shared budget's decisions against a model (random
// takes and gives over colliding keys), its counts shared by threads that race for them, the DNS
// query rate per source, refusals logged at a bounded rate, the pressure flag with hysteresis and
// memory given back after a flood, the configuration's overload section, and the file limit.

import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import fc from 'fast-check'
import type { Logger } from 'pino'
import t from 'tap'
import { fileLimit } from '../lib/libc.js'
import { projectRoot } from '../lib/project-root.js'
import { ConfigError, parseConfigText, resolveConfig } from '../proxy/agent/config.js'
import { raiseFileLimit } from '../proxy/overload/file-limit.js'
import {
  budgetLimits,
  connectionsForFileLimit,
  DEFAULT_OVERLOAD,
  pressureConnections,
} from '../proxy/overload/overload-settings.js'
import { PressureMonitor } from '../proxy/overload/pressure-monitor.js'
import { RefusalLog } from '../proxy/overload/refusal-log.js'
import { type BudgetLimits, Refusal, SharedBudget } from '../proxy/overload/shared-budget.js'
import { SourceRates } from '../proxy/overload/source-rates.js'

const limits = (l: Partial<BudgetLimits>): BudgetLimits => ({
  connectionsPerSource: 0,
  connectionsPerIdentity: 0,
  connectionsPerNode: 1000,
  streamsPerSource: 0,
  streamsPerIdentity: 0,
  ...l,
})

/** A logger that keeps what it was given. */
function capture(): { logger: Logger; lines: Array<{ level: string; fields: Record<string, unknown>; msg: string }> } {
  const lines: Array<{ level: string; fields: Record<string, unknown>; msg: string }> = []
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) =>
    void lines.push({ level, fields, msg })
  return { logger: { warn: at('warn'), info: at('info') } as unknown as Logger, lines }
}

t.test(
  'connections: per source, per identity and per node, each refused and counted; given back, taken again',
  async (t) => {
    const b = SharedBudget.create(limits({ connectionsPerSource: 2, connectionsPerIdentity: 3, connectionsPerNode: 4 }))
    t.equal(b.takeConnection(1, 100), Refusal.None)
    t.equal(b.takeConnection(1, 100), Refusal.None)
    t.equal(b.takeConnection(1, 100), Refusal.Source, 'a third from one source')
    t.equal(b.takeConnection(2, 100), Refusal.None)
    t.equal(b.takeConnection(3, 100), Refusal.Identity, 'a fourth of one identity, from another source')
    t.equal(b.takeConnection(3, 200), Refusal.None)
    t.equal(b.takeConnection(4, 300), Refusal.Node, 'a fifth on the node')
    t.equal(b.connections, 4)
    t.same(b.refusals().connections, { source: 1, identity: 1, node: 1 })
    b.giveConnection(1, 100)
    t.equal(b.takeConnection(4, 300), Refusal.None, 'room again once one closed')
    t.same(
      b
        .topSources(10)
        .map((s) => [s.source, s.connections])
        .sort(),
      [
        [1, 1],
        [2, 1],
        [3, 1],
        [4, 1],
      ],
      'who holds the budget, by source',
    )
  },
)

t.test('streams are counted apart from connections, with their own limits and no node limit', async (t) => {
  const b = SharedBudget.create(
    limits({ connectionsPerSource: 1, streamsPerSource: 3, streamsPerIdentity: 4, connectionsPerNode: 1 }),
  )
  t.equal(b.takeConnection(7, 9), Refusal.None)
  for (let i = 0; i < 3; i++) t.equal(b.takeStream(7, 9), Refusal.None)
  t.equal(b.takeStream(7, 9), Refusal.Source)
  t.equal(b.takeStream(8, 9), Refusal.None)
  t.equal(b.takeStream(8, 9), Refusal.Identity)
  t.same(b.refusals().streams, { source: 1, identity: 1 })
  t.equal(b.streams, 4)
  b.giveConnection(7, 9)
  t.equal(
    b.topSources(5).find((s) => s.source === 7)?.streams,
    3,
    'a source whose connections closed keeps its streams until they end',
  )
  for (let i = 0; i < 3; i++) b.giveStream(7, 9)
  b.giveStream(8, 9)
  t.same(b.topSources(5), [], 'nothing held: every key is gone from the tables')
})

t.test('random takes and gives over many colliding keys decide as a model of the counts does', async () => {
  const op = fc.record({
    take: fc.boolean(),
    stream: fc.boolean(),
    source: fc.integer({ min: 1, max: 600 }),
    identity: fc.integer({ min: 1, max: 40 }),
  })
  fc.assert(
    fc.property(fc.array(op, { maxLength: 3000 }), (ops) => {
      const l = limits({
        connectionsPerSource: 3,
        connectionsPerIdentity: 40,
        connectionsPerNode: 500,
        streamsPerSource: 4,
        streamsPerIdentity: 50,
      })
      const b = SharedBudget.create(l)
      const held: Array<{ stream: boolean; source: number; identity: number }> = []
      const count = (stream: boolean, key: 'source' | 'identity', v: number): number =>
        held.filter((h) => h.stream === stream && h[key] === v).length
      for (const o of ops) {
        if (!o.take) {
          const i = held.findIndex((h) => h.stream === o.stream && h.source === o.source)
          if (i < 0) continue
          const [h] = held.splice(i, 1)
          if (o.stream) b.giveStream(h!.source, h!.identity)
          else b.giveConnection(h!.source, h!.identity)
          continue
        }
        const perSource = o.stream ? l.streamsPerSource : l.connectionsPerSource
        const perIdentity = o.stream ? l.streamsPerIdentity : l.connectionsPerIdentity
        const expected =
          !o.stream && held.filter((h) => !h.stream).length >= l.connectionsPerNode
            ? Refusal.Node
            : count(o.stream, 'source', o.source) >= perSource
              ? Refusal.Source
              : count(o.stream, 'identity', o.identity) >= perIdentity
                ? Refusal.Identity
                : Refusal.None
        const got = o.stream ? b.takeStream(o.source, o.identity) : b.takeConnection(o.source, o.identity)
        if (got !== expected) return false
        if (got === Refusal.None) held.push({ stream: o.stream, source: o.source, identity: o.identity })
      }
      const top = b.topSources(10_000)
      const sources = new Set(held.map((h) => h.source))
      if (top.length !== sources.size) return false
      for (const s of top)
        if (s.connections !== count(false, 'source', s.source) || s.streams !== count(true, 'source', s.source))
          return false
      return b.connections === held.filter((h) => !h.stream).length && b.streams === held.filter((h) => h.stream).length
    }),
    { numRuns: 60 },
  )
})

t.test('threads racing for one source never hold more than its budget, and give it all back', async (t) => {
  const b = SharedBudget.create(limits({ connectionsPerSource: 300, connectionsPerNode: 100_000 }))
  const module = pathToFileURL(join(projectRoot(), 'dist/proxy/overload/shared-budget.js')).href
  // Each thread takes as many as it can (up to 1000), then gives back what it got, then takes and gives 20,000 more.
  const code = `
    const { parentPort, workerData } = require('node:worker_threads')
    import(${JSON.stringify(module)}).then(({ SharedBudget }) => {
      const b = SharedBudget.of(workerData)
      let got = 0
      for (let i = 0; i < 1000; i++) if (b.takeConnection(42, 7) === 0) got++
      parentPort.postMessage(got)
      parentPort.once('message', () => {
        for (let i = 0; i < got; i++) b.giveConnection(42, 7)
        for (let i = 0; i < 20000; i++) if (b.takeConnection(1000 + (i % 50), 8) === 0) b.giveConnection(1000 + (i % 50), 8)
        parentPort.postMessage('done')
      })
    })`
  const workers = [0, 1, 2].map(() => new Worker(code, { eval: true, workerData: b.buffer }))
  const next = (w: Worker): Promise<unknown> =>
    new Promise((resolve, reject) => (w.once('message', resolve), w.once('error', reject)))
  const got = (await Promise.all(workers.map(next))) as number[]
  t.equal(
    got.reduce((a, n) => a + n, 0),
    300,
    `together they got exactly the source's 300 (${got.join(' + ')})`,
  )
  t.equal(b.connections, 300)
  await Promise.all(workers.map((w) => (w.postMessage('give'), next(w))))
  await Promise.all(workers.map((w) => w.terminate()))
  t.equal(b.connections, 0, 'all given back')
  t.same(b.topSources(10), [], 'no key left in the table')
  t.equal(b.refusals().connections.source, 3 * 1000 - 300)
})

t.test('the DNS query rate per source: a burst, then the rate; other sources have their own', async (t) => {
  const r = new SourceRates(10, 5)
  let allowed = 0
  for (let i = 0; i < 20; i++) if (r.allow(1, 0)) allowed++
  t.equal(allowed, 5, 'the burst at once')
  t.ok(r.allow(2, 0), 'another source is not held back')
  t.notOk(r.allow(1, 50), 'half a token refilled: still refused')
  t.ok(r.allow(1, 100), 'one refilled after 100 ms at 10/s')
  t.ok(new SourceRates(0, 0).allow(1, 0), 'rate 0: no limit')
  const few = new SourceRates(10, 5, 4)
  for (let s = 1; s <= 4; s++) few.allow(s, 0)
  few.allow(5, 1000)
  t.equal(few.size, 1, 'past its bound, refilled buckets are dropped first')
})

t.test('refusals are logged at once, then at most once an interval with how many there were', async (t) => {
  const { logger, lines } = capture()
  const log = new RefusalLog(logger, 1000)
  log.note('connections per source', 0, { source: '10.0.0.1' })
  for (let i = 1; i <= 50; i++) log.note('connections per source', i, { source: '10.0.0.1' })
  log.note('dns queries per source', 60, { source: '10.0.0.2' })
  t.equal(lines.length, 2, 'one line per kind so far')
  log.note('connections per source', 1001, { source: '10.0.0.3' })
  t.equal(lines.length, 3)
  t.match(
    lines[2]!.fields,
    { verdict: 'refused', overload: 'connections per source', refused: 51, source: '10.0.0.3' },
    'the count since the last line',
  )
})

t.test('pressure: on at either line, off only under 90% of both; memory given back after a flood', async (t) => {
  const b = SharedBudget.create(limits({ connectionsPerNode: 10_000 }))
  let rss = 100
  let trims = 0
  const { logger, lines } = capture()
  let now = 0
  let collections = 0
  const m = new PressureMonitor({
    budget: b,
    connections: 1000,
    memoryBytes: 1000,
    logger,
    rss: () => rss,
    trim: () => void trims++,
    collect: () => void collections++,
    now: () => now,
  })
  const open = (n: number): void => {
    while (b.connections < n) b.takeConnection(1 + b.connections, 1)
    while (b.connections > n) b.giveConnection(b.connections, 1)
  }
  open(999)
  m.check()
  t.notOk(b.underPressure)
  open(1000)
  m.check()
  t.ok(b.underPressure, 'at the connections line')
  open(950)
  m.check()
  t.ok(b.underPressure, 'still on between 90% and the line')
  open(899)
  m.check()
  t.notOk(b.underPressure, 'off under 90%')
  rss = 1000
  m.check()
  t.ok(b.underPressure, 'at the memory line')
  t.equal(m.episodes, 2)
  rss = 100
  t.equal(collections + trims, 0)
  open(400)
  m.check()
  t.notOk(b.underPressure)
  t.equal(collections, 1, 'connections fell to half a peak of 1000: the threads collect their garbage')
  t.equal(trims, 0)
  now = 1_999
  m.check()
  t.equal(trims, 0)
  now = 2_000
  m.check()
  t.equal(trims, 1, 'then malloc gives back what that freed')
  now = 10_000
  m.check()
  t.same([collections, trims], [2, 2], 'and both once more when allocation has been low for a while')
  now = 90_000
  m.check()
  t.same([collections, trims], [2, 2], 'that is all for one flood')
  t.match(
    lines.map((l) => l.msg),
    [
      /under pressure/,
      /pressure over/,
      /under pressure/,
      /fell to half their peak/,
      /pressure over/,
      /memory given back/,
      /memory given back/,
    ],
  )
})

t.test('the node budget comes from the open-file limit, the pressure line from its share', async (t) => {
  t.equal(connectionsForFileLimit(1_048_576), (1_048_576 - 4096) / 2)
  t.equal(connectionsForFileLimit(1024), (1024 - 256) / 2, 'a small limit keeps a quarter back')
  const l = budgetLimits(DEFAULT_OVERLOAD, 20_000)
  t.equal(l.connectionsPerNode, 7952)
  t.equal(pressureConnections(DEFAULT_OVERLOAD, l), Math.floor(7952 * 0.8))
  t.equal(
    budgetLimits({ ...DEFAULT_OVERLOAD, connections: { ...DEFAULT_OVERLOAD.connections, perNode: 500 } }, 20_000)
      .connectionsPerNode,
    500,
    'set: as set',
  )
  t.equal(
    budgetLimits({ ...DEFAULT_OVERLOAD, connections: { ...DEFAULT_OVERLOAD.connections, perNode: 50_000 } }, 20_000)
      .connectionsPerNode,
    7952,
    'set above what the files allow: lowered to it',
  )
})

t.test('the overload section: every field checked, layers merged over the defaults', async (t) => {
  const layer = parseConfigText(
    'overload:\n  connections: { perSource: 100 }\n  dnsQueries: { perSecondPerSource: 0 }\n  pressure: { memoryMB: 512 }\n  fileLimit: 65536\n',
    'agent.yaml',
  )
  const c = resolveConfig([layer])
  t.equal(c.overload.connections.perSource, 100)
  t.equal(
    c.overload.connections.perIdentity,
    DEFAULT_OVERLOAD.connections.perIdentity,
    'the rest of a section keeps its defaults',
  )
  t.equal(c.overload.dnsQueries.perSecondPerSource, 0)
  t.equal(c.overload.pressure.memoryMB, 512)
  t.equal(c.overload.fileLimit, 65536)
  t.same(resolveConfig([]).overload, DEFAULT_OVERLOAD)
  const bad = (text: string): string => {
    try {
      parseConfigText(text, 'agent.yaml')
    } catch (e) {
      if (e instanceof ConfigError) return e.message
      throw e
    }
    return ''
  }
  t.match(
    bad('overload:\n  connections: { perSource: -1 }\n'),
    /agent\.yaml:2:.*perSource/,
    'a negative budget, with where',
  )
  t.match(bad('overload:\n  pressure: { connectionsPercent: 150 }\n'), /connectionsPercent/)
  t.match(bad('overload:\n  streams: { perNode: 5 }\n'), /perNode/, 'a field that is not there')
  t.match(bad('overload:\n  fileLimit: lots\n'), /fileLimit/)
})

t.test('the file limit is raised toward what is asked, never lowered', async (t) => {
  const before = fileLimit()
  t.same(raiseFileLimit(64), before, 'asking for less changes nothing')
  const after = raiseFileLimit(before.hard)
  t.equal(after.soft, before.hard, 'the soft limit up to the hard one')
})
