// Status and metrics over every proxy thread: this thread's proxies and the other threads'
// reports, per thread and summed; none when a proxy is left to another program.

import t from 'tap'
import { ProxyTotals } from '../proxy/agent/proxy-totals.js'
import type { ProxyWorkers } from '../proxy/agent/proxy-workers.js'
import type { DnsProxy } from '../proxy/dns/dns-proxy.js'
import type { HttpProxy } from '../proxy/http/http-proxy.js'
import { LatencyHistogram } from '../proxy/latency-histogram.js'

function histogram(...seconds: number[]) {
  const h = new LatencyHistogram()
  for (const s of seconds) h.observe(s)
  return h
}

const http = {
  stats: { allowed: 5, denied: 1, invalid: 0, upstreamFailed: 2 },
  connectionCount: 3,
  latency: histogram(0.001, 0.002),
} as unknown as HttpProxy
const dns = {
  stats: { allowed: 10, denied: 2, invalid: 1, timedOut: 0, rateLimited: 0 },
  latency: histogram(0.0005),
  enforce: histogram(0.0001),
} as unknown as DnsProxy
const workers = {
  stats: () => [
    {
      http: {
        stats: { allowed: 7, denied: 0, invalid: 1, upstreamFailed: 0 },
        connections: 4,
        latency: histogram(0.003).snapshot(),
      },
      dns: {
        stats: { allowed: 20, denied: 0, invalid: 0, timedOut: 1, rateLimited: 4 },
        latency: histogram(0.001, 0.001).snapshot(),
        enforce: histogram(0.0002).snapshot(),
      },
    },
    {
      http: null,
      dns: {
        stats: { allowed: 1, denied: 1, invalid: 1, timedOut: 1, rateLimited: 0 },
        latency: histogram().snapshot(),
        enforce: histogram().snapshot(),
      },
    },
  ],
} as unknown as ProxyWorkers

t.test('every thread counted, per thread and summed', async (t) => {
  const totals = new ProxyTotals({ http: () => http, dns: () => dns, workers: () => workers })
  t.same(totals.http(), { requests: { allowed: 12, denied: 1, invalid: 1, upstreamFailed: 2 }, connections: 7 })
  t.same(totals.dnsByThread(), [
    { allowed: 10, denied: 2, invalid: 1, timedOut: 0, rateLimited: 0 },
    { allowed: 20, denied: 0, invalid: 0, timedOut: 1, rateLimited: 4 },
    { allowed: 1, denied: 1, invalid: 1, timedOut: 1, rateLimited: 0 },
  ])
  t.same(totals.dns(), { allowed: 31, denied: 3, invalid: 2, timedOut: 2, rateLimited: 4 })
  t.equal(totals.httpDurations().count, 3)
  t.equal(totals.dnsDurations().count, 3)
  t.equal(totals.dnsEnforce().count, 2)
  t.same(
    dns.stats,
    { allowed: 10, denied: 2, invalid: 1, timedOut: 0, rateLimited: 0 },
    'the proxies’ own counters are not changed',
  )
})

t.test('a proxy left to another program counts nothing, and no threads of its own', async (t) => {
  const totals = new ProxyTotals({ http: () => null, dns: () => null, workers: () => null })
  t.same(totals.http(), { requests: { allowed: 0, denied: 0, invalid: 0, upstreamFailed: 0 }, connections: 0 })
  t.same(totals.dnsByThread(), [])
  t.same(totals.dns(), { allowed: 0, denied: 0, invalid: 0, timedOut: 0, rateLimited: 0 })
  t.equal(totals.httpDurations().count, 0)
})
