// Flow lines: pino's format through a fixed template, with the verdict part reused only while it
// is really the same (rule, reason and both identities).

import pino from 'pino'
import t from 'tap'
import { LineChunks } from '../proxy/agent/line-chunks.js'
import { answersJson, FlowLog, NO_ANSWERS } from '../proxy/flow-log.js'
import type { FlowVerdict } from '../proxy/flow-verdict.js'

function capture(level = 'info'): { lines: Array<Record<string, unknown>>; log: FlowLog } {
  const lines: Array<Record<string, unknown>> = []
  const logger = pino(
    { base: null, level },
    { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) },
  )
  return { lines, log: new FlowLog(logger, { source: '198.18.1.10:4000', destination: '198.18.2.10:80' }) }
}

const RULE = 'CiliumNetworkPolicy/default/deathstar-l7'
const allowed = (src: number, dst: number): FlowVerdict => ({
  allowed: true,
  rules: [RULE],
  reason: 'request matched an http rule',
  actions: [],
  sourceIdentity: src,
  destIdentity: dst,
})

t.test('a line has pino fields, the bindings and every flow field; strings are escaped', async (t) => {
  const { lines, log } = capture()
  log.http({
    verdict: allowed(256, 258),
    method: 'GET',
    path: '/v1/"quoted"\\',
    host: 'death"star',
    status: 200,
    ms: 1.23456,
  })
  t.match(lines[0], {
    level: 30,
    time: Number,
    source: '198.18.1.10:4000',
    destination: '198.18.2.10:80',
    verdict: 'allowed',
    rules: [RULE],
    method: 'GET',
    path: '/v1/"quoted"\\',
    host: 'death"star',
    sourceIdentity: 256,
    destIdentity: 258,
    status: 200,
    ms: 1.235,
    msg: 'http allowed',
  })
})

t.test("a line's time is the ms it was written in, for lines of one ms and of the next", async (t) => {
  const { lines, log } = capture()
  const line = (): void =>
    log.http({ verdict: allowed(256, 258), method: 'GET', path: '/', host: undefined, status: 200, ms: 0 })
  const before = Date.now()
  line()
  line()
  const after = Date.now()
  await new Promise((resolve) => setTimeout(resolve, 5))
  const later = Date.now()
  line()
  const times = lines.map((l) => l.time as number)
  t.ok(
    times[0]! >= before && times[1]! >= times[0]! && times[1]! <= after,
    `${times.slice(0, 2)} within [${before}, ${after}]`,
  )
  t.ok(later > after && times[2]! >= later, `a later ms's line says so (${times[2]} >= ${later})`)
})

t.test('the verdict part follows identities, rules and denials', async (t) => {
  const { lines, log } = capture()
  log.http({ verdict: allowed(256, 258), method: 'GET', path: '/', host: undefined, status: 200, ms: 0 })
  log.http({ verdict: allowed(16777217, 258), method: 'GET', path: '/', host: undefined, status: 200, ms: 0 })
  log.http({
    verdict: {
      allowed: false,
      rules: [],
      reason: 'no http rule matched',
      actions: [],
      sourceIdentity: 16777217,
      destIdentity: 258,
    },
    method: 'PUT',
    path: '/',
    host: undefined,
    status: 403,
    ms: 0,
  })
  log.http({ verdict: allowed(16777217, 258), method: 'GET', path: '/', host: undefined, status: 200, ms: 0 })
  t.same(
    lines.map((l) => [l.verdict, l.sourceIdentity, l.rules, l.msg]),
    [
      ['allowed', 256, [RULE], 'http allowed'],
      ['allowed', 16777217, [RULE], 'http allowed'],
      ['denied', 16777217, [], 'http denied'],
      ['allowed', 16777217, [RULE], 'http allowed'],
    ],
  )
  t.notOk('host' in lines[0]!, 'no host field without a Host header')
})

t.test("nothing is written below the logger's level", async (t) => {
  const { lines, log } = capture('warn')
  log.http({ verdict: allowed(256, 258), method: 'GET', path: '/', host: 'x', status: 200, ms: 0 })
  t.equal(lines.length, 0)
})

t.test(
  'a DNS line: the name, type, rcode and answers; enforceMs for an answer with addresses (0: allowed already)',
  async (t) => {
    const { lines, log } = capture()
    const dns: FlowVerdict = {
      allowed: true,
      rules: ['CiliumNetworkPolicy/default/tiefighter-egress'],
      reason: 'name matched a dns rule',
      actions: [],
      sourceIdentity: 256,
      destIdentity: 260,
    }
    const records = [
      { name: 'cantina.empire', type: 'A', ttl: 60, data: '192.0.2.3' },
      { name: 'cantina.empire', type: 'A', ttl: 60, data: '192.0.2.4' },
    ]
    log.dns({
      verdict: dns,
      qname: 'cantina.empire',
      qtype: 'A',
      rcode: 'NOERROR',
      answers: answersJson(records),
      ms: 0.51234,
      enforceMs: 0.0421,
    })
    const odd = [
      { name: 'x\\.evil"', type: 'CNAME', ttl: 60, data: 'y\\.evil"\\\\' },
      { name: 'y\\.evil"\\\\', type: 'AAAA', ttl: 60, data: '2001:db8::1' },
      { name: 'y\\.evil"\\\\', type: 'TYPE65' },
    ]
    log.dns({
      verdict: dns,
      qname: 'x\\.evil"',
      qtype: 'AAAA',
      rcode: 'NOERROR',
      answers: answersJson(odd),
      ms: 1,
      enforceMs: null,
    })
    log.dns({
      verdict: { ...dns, allowed: false, rules: [], reason: "no dns rule matched 'hoth.alliance'" },
      qname: 'hoth.alliance',
      qtype: 'A',
      rcode: 'REFUSED',
      answers: NO_ANSWERS,
      ms: 0.01,
      enforceMs: null,
    })
    t.match(lines[0], {
      level: 30,
      source: '198.18.1.10:4000',
      verdict: 'allowed',
      rules: ['CiliumNetworkPolicy/default/tiefighter-egress'],
      sourceIdentity: 256,
      destIdentity: 260,
      qname: 'cantina.empire',
      qtype: 'A',
      rcode: 'NOERROR',
      answers: ['A 192.0.2.3', 'A 192.0.2.4'],
      ms: 0.512,
      enforceMs: 0.042,
      msg: 'dns allowed',
    })
    t.same(
      lines[1]!.answers,
      ['CNAME y\\.evil"\\\\', 'AAAA 2001:db8::1', 'TYPE65'],
      'a name with a backslash and a quote stays one JSON string',
    )
    t.match(lines[1], { qname: 'x\\.evil"', qtype: 'AAAA' })
    t.same(lines[2]!.answers, [])
    t.notOk('enforceMs' in lines[1]!, 'nothing to enforce: no enforceMs')
    log.dns({
      verdict: dns,
      qname: 'cantina.empire',
      qtype: 'A',
      rcode: 'NOERROR',
      answers: answersJson(records),
      ms: 0.2,
      enforceMs: 0,
    })
    t.equal(lines[3]!.enforceMs, 0, 'addresses the maps allowed already: 0')
    t.match(lines[2], {
      verdict: 'denied',
      rules: [],
      reason: /no dns rule matched/,
      rcode: 'REFUSED',
      msg: 'dns denied',
    })
  },
)

t.test('written into LineChunks: the same lines as through a string destination, long ones too', async (t) => {
  const chunks: Buffer[] = []
  const lines = new LineChunks((b) => void chunks.push(b))
  const viaChunks = new FlowLog(pino({ base: null }, lines), {
    source: '198.18.1.10:4000',
    destination: '198.18.2.10:80',
  })
  const { lines: parsed, log } = capture()
  const paths = ['/v1/', '/v1/é"\\\u0001', `/v1/${'x'.repeat(70_000)}`, '/v1/\ud800']
  for (const path of paths) {
    for (const l of [viaChunks, log])
      l.http({
        verdict: allowed(256, 258),
        method: 'GET',
        path,
        host: 'deathstar',
        status: 200,
        ms: 0.5,
        grpc: { service: 'a.B', method: 'C', status: '3' },
      })
  }
  lines.flush()
  const out = Buffer.concat(chunks)
    .toString()
    .split('\n')
    .filter((x) => x !== '')
  t.equal(out.length, paths.length)
  t.same(
    out.map((l) => JSON.parse(l) as Record<string, unknown>).map(({ time: _, ...rest }) => rest),
    parsed.map(({ time: _, ...rest }) => rest),
  )
  t.same(
    out.map((l) => (JSON.parse(l) as { path: string }).path),
    paths.map((p) => JSON.parse(JSON.stringify(p)) as string),
    'paths as JSON.stringify has them (a lone surrogate too)',
  )
})
