// Request durations: counted into fixed buckets per thread (le semantics: a value on a bound
// counts in that bound's bucket), added up across threads, and rendered as a Prometheus
// histogram with cumulative buckets, +Inf, sum and count.

import t from 'tap'
import { AgentMetrics } from '../proxy/agent/metrics.js'
import { addSnapshots, emptySnapshot, LATENCY_BUCKETS, LatencyHistogram } from '../proxy/latency-histogram.js'

t.test('observations land in the first bucket whose bound they do not exceed', async (t) => {
  const h = new LatencyHistogram()
  for (const v of [0, 0.0001, 0.00011, 0.003, 10, 11]) h.observe(v)
  const s = h.snapshot()
  t.equal(s.counts.length, LATENCY_BUCKETS.length + 1, 'one count per bound, and one above them all')
  t.equal(s.counts[0], 2, '0 and 0.0001 (on the bound) in le=0.0001')
  t.equal(s.counts[1], 1, '0.00011 in le=0.00025')
  t.equal(s.counts[LATENCY_BUCKETS.indexOf(0.005)], 1, '0.003 in le=0.005')
  t.equal(s.counts[LATENCY_BUCKETS.length - 1], 1, '10 in le=10')
  t.equal(s.counts[LATENCY_BUCKETS.length], 1, '11 above every bound')
  t.equal(s.count, 6)
  t.ok(Math.abs(s.sum - 21.00321) < 1e-9, 'sum of the values')
  const again = addSnapshots([s, s, emptySnapshot()])
  t.same(
    again.counts,
    s.counts.map((c) => 2 * c),
    'snapshots add bucket by bucket',
  )
  t.equal(again.count, 12)
})

t.test('scraped as a Prometheus histogram: cumulative buckets by protocol, +Inf, sum, count', async (t) => {
  const http = new LatencyHistogram()
  for (const v of [0.0004, 0.0009, 0.02]) http.observe(v)
  const enforce = new LatencyHistogram()
  enforce.observe(0.0002)
  const m = new AgentMetrics({
    httpRequests: () => ({}),
    httpConnections: () => 0,
    dnsQueries: () => ({}),
    fqdnNames: () => 0,
    kernelCounters: () => [],
    policyRevision: () => 1,
    requestDurations: () => ({ http: http.snapshot(), dns: emptySnapshot() }),
    dnsEnforce: () => enforce.snapshot(),
    cluster: () => null,
    maps: () => ({
      ipcache: { entries: 12, capacity: 64 },
      policy: { entries: 30, capacity: 128 },
      refused: { ipcache: 2, policy: 0 },
    }),
    overload: () => ({
      fileLimit: 1024,
      limits: {
        connectionsPerSource: 10,
        connectionsPerIdentity: 20,
        connectionsPerNode: 30,
        streamsPerSource: 40,
        streamsPerIdentity: 50,
      },
      open: { connections: 3, streams: 4 },
      refused: { connections: { source: 5, identity: 0, node: 0 }, streams: { source: 6, identity: 0 }, dnsQueries: 7 },
      dnsQueries: { perSecondPerSource: 100, burst: 200 },
      pressure: {
        now: true,
        episodes: 1,
        connectionsPercent: 80,
        memoryMB: 64,
        headersTimeoutMs: 2000,
        idleTimeoutMs: 5000,
      },
      rssBytes: 123,
      heapBytesByThread: [1, 2],
    }),
  })
  const text = await m.text()
  t.match(
    text,
    /^l7proxy_overload_refused_total\{what="connection",budget="source"\} 5$/m,
    'refusals by what and budget',
  )
  t.match(text, /^l7proxy_overload_refused_total\{what="dns_query",budget="source"\} 7$/m)
  t.match(text, /^l7proxy_overload_limit\{setting="connectionsPerNode"\} 30$/m, 'each setting in force')
  t.match(text, /^l7proxy_overload_limit\{setting="pressureIdleTimeoutMs"\} 5000$/m)
  t.match(text, /^l7proxy_overload_pressure 1$/m)
  t.match(text, /^l7proxy_map_entries\{map="ipcache"\} 12$/m, 'map fill levels')
  t.match(text, /^l7proxy_map_capacity\{map="policy"\} 128$/m)
  t.match(text, /^l7proxy_map_refused_total\{map="ipcache"\} 2$/m)
  t.match(text, /^# TYPE l7proxy_request_duration_seconds histogram$/m)
  t.match(text, /^l7proxy_request_duration_seconds_bucket\{protocol="http",le="0\.0005"\} 1$/m, 'le=0.0005: one')
  t.match(
    text,
    /^l7proxy_request_duration_seconds_bucket\{protocol="http",le="0\.001"\} 2$/m,
    'le=0.001: two, cumulative',
  )
  t.match(text, /^l7proxy_request_duration_seconds_bucket\{protocol="http",le="0\.025"\} 3$/m)
  t.match(text, /^l7proxy_request_duration_seconds_bucket\{protocol="http",le="\+Inf"\} 3$/m)
  t.match(text, /^l7proxy_request_duration_seconds_sum\{protocol="http"\} 0\.0213$/m)
  t.match(text, /^l7proxy_request_duration_seconds_count\{protocol="http"\} 3$/m)
  t.match(text, /^l7proxy_request_duration_seconds_count\{protocol="dns"\} 0$/m)
  t.match(text, /^l7proxy_dns_enforce_seconds_bucket\{le="0\.00025"\} 1$/m, 'an unlabelled one too')
  t.match(text, /^l7proxy_dns_enforce_seconds_count 1$/m)
})
