// The comparison's pure parts: when a run's counters confirm its mode's path, and the HTML report
// (self-contained: inline SVG charts, no scripts or links, text escaped, invalid runs marked).

import t from 'tap'
import { pathProblem } from '../bench/compare/compare.js'
import { type CompareMode, carries, contender, modeLabel } from '../bench/compare/contenders.js'
import { renderReport } from '../bench/compare/report-html.js'
import { type ProxyTotals, WORKLOAD_DEFS, WORKLOADS } from '../bench/compare/workloads.js'
import type { LoadResult } from '../bench/load-generators.js'

const load = (ops: number): LoadResult => ({
  ops,
  errors: 0,
  seconds: 1,
  opsPerSec: ops,
  bytes: 0,
  latencyMs: { p50: 1, p90: 2, p99: 3, max: 4 },
})
const totals = (http: number, steered: number, sockmap?: number): ProxyTotals => ({
  httpRequests: { allowed: http, denied: 0, invalid: 0, upstreamFailed: 0 },
  dnsQueries: { allowed: 0, denied: 0 },
  kernelPackets: { 'to-proxy': steered, allowed: 100 },
  ...(sockmap === undefined ? {} : { sockmap: { messages: sockmap, bytes: sockmap * 100 } }),
})

t.test('a run counts only when the counters show the path its mode promises', async (t) => {
  const w = WORKLOAD_DEFS['http-keepalive']
  t.equal(pathProblem('none', w, totals(0, 0), load(10)), null, 'baseline: nothing reached the proxy')
  t.match(
    pathProblem('none', w, totals(3, 9), load(10)),
    /with no L7 rule the proxy still saw 3 operations \(9 packets steered\)/,
  )
  t.equal(
    pathProblem('sk-assign', w, totals(12, 40), load(10)),
    null,
    'the proxy saw every request (and the checks) and the kernel steered them',
  )
  t.match(pathProblem('tproxy', w, totals(7, 40), load(10)), /the proxy saw 7 of the 10 operations/)
  t.match(pathProblem('dnat', w, totals(10, 0), load(10)), /no packet steered/)
  t.match(pathProblem('sockmap', w, totals(10, 0, 0), load(10)), /sk_msg redirected no message/)
  t.equal(pathProblem('sockmap', w, totals(10, 0, 20), load(10)), null)
  t.match(pathProblem('sk-assign', w, totals(0, 0), load(0)), /no operation completed/)
  t.equal(
    pathProblem('dnat', WORKLOAD_DEFS.dns, { ...totals(0, 5), dnsQueries: { allowed: 10, denied: 0 } }, load(10)),
    null,
    'DNS counts the DNS proxy',
  )
})

t.test("a peer's run counts when the kernel steered and the peer's own statistics saw every operation", async (t) => {
  const w = WORKLOAD_DEFS['http-connect']
  t.equal(pathProblem('haproxy', w, totals(0, 40), load(10), 10), null)
  t.match(pathProblem('haproxy', w, totals(0, 40), load(10), 7), /haproxy handled 7 of the 10 operations/)
  t.match(
    pathProblem('haproxy', w, totals(0, 40), load(10), null),
    /haproxy handled 0 of the 10/,
    'no statistics is no confirmation',
  )
  t.match(pathProblem('haproxy', w, totals(4, 40), load(10), 10), /l7proxy saw 4 operations meant for haproxy/)
  t.match(
    pathProblem('haproxy', w, totals(0, 0), load(10), 10),
    /no packet steered/,
    'reached some other way: not the path measured',
  )
  t.equal(pathProblem('haproxy-sockmap', WORKLOAD_DEFS['http-keepalive'], totals(0, 40, 20), load(10), 10), null)
  t.match(
    pathProblem('haproxy-sockmap', WORKLOAD_DEFS['http-keepalive'], totals(0, 40, 0), load(10), 10),
    /sk_msg redirected no message/,
    'behind sockmap, sk_msg must have carried its payload',
  )
  t.equal(pathProblem('dnsdist', WORKLOAD_DEFS.dns, totals(0, 10), load(10), 10), null)
  t.match(
    pathProblem(
      'dnsdist',
      WORKLOAD_DEFS.dns,
      { ...totals(0, 10), dnsQueries: { allowed: 3, denied: 0 } },
      load(10),
      10,
    ),
    /l7proxy saw 3 operations meant for dnsdist/,
  )
})

t.test('each peer carries only what it speaks, behind the steering it documents', async (t) => {
  const carried = (m: CompareMode): string[] => WORKLOADS.filter((w) => carries(m, WORKLOAD_DEFS[w]))
  t.same(carried('haproxy'), ['http-keepalive', 'http-connect', 'bulk', 'grpc'])
  t.same(
    carried('haproxy-sockmap'),
    ['http-keepalive', 'bulk', 'grpc'],
    'behind sk_assign, not a connection per operation (TIME_WAIT reuse)',
  )
  t.same(carried('dnsdist'), ['dns'])
  t.same(carried('sockmap'), ['http-keepalive', 'http-connect', 'bulk', 'grpc'])
  t.same(carried('none'), [...WORKLOADS])
  t.same(
    [contender('haproxy'), contender('haproxy-sockmap'), contender('dnsdist'), contender('none')],
    [
      { datapath: 'tproxy', l7: true, peer: 'haproxy' },
      { datapath: 'sockmap', l7: true, peer: 'haproxy' },
      { datapath: 'dnat', l7: true, peer: 'dnsdist' },
      { datapath: 'sk-assign', l7: false, peer: null },
    ],
  )
  t.equal(modeLabel('haproxy'), 'haproxy (tproxy)')
  t.equal(modeLabel('haproxy-sockmap'), 'haproxy (sockmap)')
  t.equal(modeLabel('sk-assign'), 'sk-assign')
})

t.test('the HTML report is one self-contained page with a chart per figure', async (t) => {
  const html = renderReport({
    title: 'modes <compared>',
    date: '2026-11-23',
    machine: '2 cores',
    settings: '1 run',
    workloads: [
      {
        name: 'http-keepalive',
        what: 'GET & more',
        unit: 'req/s',
        cells: [
          {
            mode: 'none',
            valid: true,
            reason: null,
            opsPerSec: 18000,
            spread: { min: 17000, max: 19000 },
            p50Ms: 1.4,
            p99Ms: 4.2,
            cpuUsPerOp: 20,
            runs: 3,
          },
          {
            mode: 'sk-assign',
            valid: true,
            reason: null,
            opsPerSec: 13000,
            spread: null,
            p50Ms: 2,
            p99Ms: 9,
            cpuUsPerOp: 107,
            runs: 3,
          },
          {
            mode: 'tproxy',
            valid: false,
            reason: 'the proxy saw 7 of the 10 operations',
            opsPerSec: null,
            spread: null,
            p50Ms: null,
            p99Ms: null,
            cpuUsPerOp: null,
            runs: 3,
          },
        ],
      },
    ],
  })
  t.match(html, /^<!DOCTYPE html>/)
  t.equal(html.match(/<svg /g)?.length, 3, 'throughput, latency and CPU charts')
  t.equal(html.match(/<rect [^>]*><title>/g)?.length, 2 + 4 + 2, 'one bar per valid mode and series')
  t.equal(html.match(/class="whisker"/g)?.length, 1, "a whisker where the runs' spread is known")
  t.match(html, /<title>none runs: 17,000-19,000 req\/s<\/title>/)
  t.match(
    html,
    /<td>tproxy<\/td>.*no: the proxy saw 7 of the 10 operations/,
    'the invalid run is marked with its reason',
  )
  t.match(html, /modes &#60;compared&#62;/, 'text is escaped')
  t.match(html, /GET &#38; more/)
  t.notMatch(html, /<script|<link|https?:\/\/(?!www\.w3\.org\/2000\/svg)/, 'no scripts, stylesheets or links to fetch')
})
