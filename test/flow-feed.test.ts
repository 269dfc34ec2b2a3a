// What `l7proxy flows` is fed: flow lines from the log and the kernel's drop counters, kept in a
// bounded ring and passed to followers through their filters.

import t from 'tap'
import { FlowFeed, parseFlowQuery } from '../proxy/agent/flow-feed.js'
import type { Counter } from '../redirect-bpf/map-layout.js'

const ENDPOINT_IPS: Record<number, string[]> = { 1: ['198.18.1.10'], 3: ['198.18.2.10'] }

function line(verdict: string, source: string, path: string, time = 1000): string {
  const msg = verdict === 'invalid' ? 'http: ambiguous request refused' : `http ${verdict}`
  return JSON.stringify({ level: 30, time, source, destination: '198.18.2.10:80', verdict, path, msg })
}

/** Publishes log text as the agent does: a chunk of whole lines. */
function publish(feed: FlowFeed, text: string): void {
  feed.publishLines(Buffer.from(text), text.split('\n').length - 1)
}

t.test('flow lines become events; other log lines do not', async (t) => {
  const feed = new FlowFeed((id) => ENDPOINT_IPS[id] ?? [])
  const text = `${[
    line('allowed', '198.18.1.10:1000', '/a'),
    JSON.stringify({ level: 30, time: 1, msg: 'policy applied', file: 'x' }),
    line('denied', '198.18.1.20:2000', '/b'),
    line('invalid', '198.18.1.10:3000', '/%zz'),
  ].join('\n')}\n`
  publish(feed, text)
  t.match(feed.recentEvents({}), [
    { protocol: 'http', verdict: 'allowed', path: '/a', time: 1000 },
    { protocol: 'http', verdict: 'denied', path: '/b' },
    { protocol: 'http', verdict: 'invalid', path: '/%zz' },
  ])
  t.notOk('msg' in feed.recentEvents({})[0]! || 'level' in feed.recentEvents({})[0]!, "without pino's level and msg")
  t.same(
    feed.recentEvents({ verdict: 'denied' }).map((e) => e.path),
    ['/b'],
  )
  t.same(
    feed.recentEvents({ endpoint: 1 }).map((e) => e.path),
    ['/a', '/%zz'],
    'by endpoint: its address at either end',
  )
  t.same(feed.recentEvents({ endpoint: 3 }).length, 3, 'the destination counts too')
  t.same(feed.recentEvents({ protocol: 'kernel' }), [])
})

t.test('kernel drops: increases after the first reading, per endpoint and reason', async (t) => {
  const feed = new FlowFeed(() => [])
  const c = (endpointId: number, verdict: Counter['verdict'], packets: number): Counter => ({
    endpointId,
    verdict,
    packets,
    bytes: packets * 60,
  })
  feed.publishKernel([c(3, 'denied-default', 5), c(3, 'allowed', 100)], 1)
  t.same(feed.recentEvents({}), [], 'what was counted before the agent looked is not news')
  feed.publishKernel([c(3, 'denied-default', 7), c(3, 'allowed', 150), c(1, 'no-proxy', 2)], 2)
  t.same(
    feed.recentEvents({}),
    [
      { time: 2, protocol: 'kernel', verdict: 'denied-default', endpoint: 3, packets: 2 },
      { time: 2, protocol: 'kernel', verdict: 'no-proxy', endpoint: 1, packets: 2 },
    ],
    'drops only, by how much they grew',
  )
  t.same(
    feed.recentEvents({ verdict: 'denied', endpoint: 1 }).map((e) => e.verdict),
    ['no-proxy'],
    "'denied' takes every kernel drop",
  )
})

t.test('followers get new events through their filter until they stop; the ring keeps 1000', async (t) => {
  const feed = new FlowFeed((id) => ENDPOINT_IPS[id] ?? [])
  const got: string[] = []
  const stop = feed.follow({ verdict: 'denied' }, (e) => got.push(String(e.path)))
  publish(feed, `${line('allowed', '198.18.1.10:1', '/x')}\n${line('denied', '198.18.1.10:2', '/y')}\n`)
  stop()
  publish(feed, `${line('denied', '198.18.1.10:3', '/z')}\n`)
  t.same(got, ['/y'])
  for (let i = 0; i < 1200; i++) publish(feed, `${line('allowed', '198.18.1.10:4', `/${i}`, i)}\n`)
  const all = feed.recentEvents({})
  t.equal(all.length, 1000)
  t.equal(all[0]!.path, '/200', 'oldest first')
  t.equal(all[999]!.path, '/1199')
})

t.test('queries: filters checked, with what is wrong', async (t) => {
  t.same(parseFlowQuery(new URLSearchParams('verdict=denied&endpoint=3&protocol=http&last=5')), {
    filter: { verdict: 'denied', endpoint: 3, protocol: 'http' },
    last: 5,
  })
  t.throws(() => parseFlowQuery(new URLSearchParams('verdict=maybe')), /unknown verdict 'maybe'/)
  t.throws(() => parseFlowQuery(new URLSearchParams('endpoint=x')), /endpoint must be an endpoint id/)
  t.throws(() => parseFlowQuery(new URLSearchParams('protocol=udp')), /unknown protocol 'udp'/)
  t.throws(() => parseFlowQuery(new URLSearchParams('last=5000')), /last must be a whole number from 0 to 1000/)
})

t.test('what is kept is bounded in bytes too, however long the lines', async (t) => {
  const feed = new FlowFeed(() => [])
  const big = line('allowed', '198.18.1.10:5', `/${'x'.repeat(100_000)}`)
  for (let i = 0; i < 100; i++) publish(feed, `${big}\n`)
  t.ok(feed.heldBytes <= 4 * 1024 * 1024 + 200_000, `${feed.heldBytes} bytes kept for 100 lines of 100 kB`)
  t.equal(feed.recentEvents({}).length, Math.floor(feed.heldBytes / (big.length + 1)), 'the newest of them')
})
