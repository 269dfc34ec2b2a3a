import t from 'tap'
import { compileMatchName, compileMatchPattern, compileServerName, fqdn } from '../policy/dns-pattern.js'
import { compileHttpRule, type HeaderAction, type HttpRequestView } from '../policy/http-matcher.js'
import { portBlocks } from '../policy/map-state.js'
import { compileAnchored } from '../policy/regex.js'

t.test('regexes are anchored, RE2 syntax, and never backtrack catastrophically', async (t) => {
  const r = compileAnchored('/v1/.*')
  t.ok(r.test('/v1/request-landing'))
  t.notOk(r.test('/v2/v1/x'), 'anchored at the start')
  t.notOk(compileAnchored('GET').test('GETX'), 'anchored at the end')
  t.ok(compileAnchored('GET|POST').test('POST'), 'alternation is grouped before anchoring')
  t.notOk(compileAnchored('GET|POST').test('xPOST'))
  t.ok(compileAnchored('(?i)get').test('GET'), 'RE2 (?i) flag')
  t.ok(compileAnchored('/(?P<v>v[0-9])/x').test('/v1/x'), 'RE2 named group')
  t.equal(compileAnchored('/v1/.*').engine, 'backtracking', 'simple shape: fast engine')
  t.equal(compileAnchored('/api/v[0-9]+/users/.*').engine, 'linear', 'two unbounded quantifiers: linear engine')
  const evil = compileAnchored('(a+)+b')
  t.equal(evil.engine, 'linear', 'nested quantifier: linear engine')
  const start = process.hrtime.bigint()
  t.notOk(evil.test(`${'a'.repeat(100_000)}c`))
  t.ok(Number(process.hrtime.bigint() - start) / 1e6 < 2000, 'a classic ReDoS input finishes')
  t.equal(compileAnchored('(a|ab)*c').engine, 'linear', 'quantified alternation: linear engine')
  t.throws(() => compileAnchored('(a{2,300})+'), { code: 'EREGEX', message: /backtrack catastrophically/ })
  t.throws(() => compileAnchored('(a)\\1'), { code: 'EREGEX', message: /backreferences/ })
  t.throws(() => compileAnchored('a(?=b)'), { code: 'EREGEX', message: /lookahead/ })
  t.throws(() => compileAnchored('[a-'), { code: 'EREGEX', message: /invalid regular expression/ })
  t.ok(compileAnchored('[.*+]x').test('*x'), 'quantifier characters inside a class are literal')
  const ci = compileAnchored('(?i).*REGEX.*')
  t.equal(ci.engine, 'linear', "a case-insensitive pattern of Cilium's tests runs on the linear engine")
  t.ok(ci.test('a-regex-b') && ci.test('ReGeX') && !ci.test('re gex'))
  const host = compileAnchored('[a-f]+(?<sub>\\.api)*\\.EMPIRE.*', 'i')
  t.ok(host.test('BEEF.Api.api.empire:80') && !host.test('beefg.empire'), 'host rules (matched without case) too')
  t.equal(compileAnchored('[.*+]x[*]').engine, 'backtracking')
})

t.test('DNS matchName: case-insensitive, trailing dot optional', async (t) => {
  const m = compileMatchName('Cantina.Empire')
  for (const n of ['cantina.empire', 'cantina.empire.', 'CANTINA.EMPIRE']) t.ok(m.test(n), n)
  for (const n of ['www.cantina.empire', 'cantina.empire.x', 'cantina']) t.notOk(m.test(n), n)
  t.throws(() => compileMatchName('bad name'), { code: 'EDNSPATTERN' })
  t.throws(() => compileMatchName(''), { message: /empty/ })
  t.throws(() => compileMatchName('a'.repeat(256)), { message: /longer than 255/ })
  t.equal(fqdn('A.b'), 'a.b.')
})

t.test("DNS matchPattern with Cilium's wildcard meaning", async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['*', 'anything.at.all', true],
    ['*', '.', true],
    ['*.empire', 'cantina.empire', true],
    ['*.empire', 'CANTINA.empire.', true],
    ['*.empire', 'www.cantina.empire', false],
    ['*.empire', 'empire', false],
    ['*.empire', 'xempire', false],
    ['sub*.empire', 'subway.empire', true],
    ['sub*.empire', 'sub.empire', true],
    ['sub*.empire', 'asub.empire', false],
    ['*cantina*.empire', 'my-cantina-2.empire', true],
    ['*.*.empire', 'a.b.empire', true],
    ['*.*.empire', 'a.empire', false],
    ['**.empire', 'a.b.c.empire', true],
    ['**.empire', 'empire', false],
    ['cantina.empire', 'cantina.empire.', true],
    ['*.empire', 'under_score.empire', true],
    // Cilium PR 43420: a leading `**.` spans labels; `**` alone or `***` matches all; elsewhere `**` is `*`.
    ['**', 'a.b.c', true],
    ['**.', 'a', true],
    ['***', 'x.y.z.', true],
    ['**.empire', 'deathstar.empire.', true],
    ['a.**.empire', 'a.b.empire', true],
    ['a.**.empire', 'a.b.c.empire', false],
    ['**cantina.empire', 'mycantina.empire', true],
    ['**cantina.empire', 'a.cantina.empire', false],
    ['***.empire', 'a.b.empire', false],
  ]
  for (const [pattern, name, want] of cases)
    t.equal(compileMatchPattern(pattern).test(name), want, `${pattern} ${want ? 'matches' : 'does not match'} ${name}`)
  t.throws(() => compileMatchPattern('[a-z].empire'), { message: /may only contain/ })
  t.throws(() => compileMatchPattern('example..com'), { message: /empty label/ })
  t.throws(() => compileMatchName('.empire'), { message: /empty label/ })
})

t.test("TLS serverNames with cilium-envoy's SNI pattern meaning", async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['*', 'api.empire', true],
    ['*', 'empire', true],
    ['*', '', false],
    ['api.empire', 'API.Empire', true],
    ['api.empire', 'api.empire.x', false],
    ['*.cilium.io', 'www.cilium.io', true],
    ['*.cilium.io', 'foo.bar.cilium.io', false],
    ['*.cilium.io', 'cilium.io', false],
    ['*cilium.io', 'cilium.io', true],
    ['*cilium.io', 'sub-cilium.io', true],
    ['*cilium.io', 'www.cilium.io', false],
    ['sub*.cilium.io', 'subdomain.cilium.io', true],
    ['sub*.cilium.io', 'blog-sub.cilium.io', false],
    ['**.cilium.io', 'test.app.cilium.io', true],
    ['**.cilium.io', 'cilium.io', false],
    ['sub.**.example.com', 'sub.a.b.example.com', true],
    ['sub.**.example.com', 'sub.a.example.com', true],
    ['sub.**.example.com', 'sub.example.com', false],
    ['a*b*c.empire', 'axxbyyc.empire', true],
  ]
  for (const [pattern, name, want] of cases)
    t.equal(
      compileServerName(pattern).test(name),
      want,
      `${pattern} ${want ? 'matches' : 'does not match'} ${JSON.stringify(name)}`,
    )
  for (const bad of ['api.empire.', 'a..b', '***', 'a**.empire', '.empire', 'a b'])
    t.throws(() => compileServerName(bad), { code: 'EDNSPATTERN' }, `'${bad}' refused`)
  const deep = compileServerName('**.**.**.**.**.**.x')
  const start = process.hrtime.bigint()
  t.notOk(deep.test(`${'a.'.repeat(120)}y`))
  t.ok(
    Number(process.hrtime.bigint() - start) / 1e6 < 2000,
    'many ** labels against a long name finish (linear-time engine)',
  )
})

function req(method: string, path: string, headers: Record<string, string> = {}, host = 'deathstar'): HttpRequestView {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]))
  return { method, path, host, header: (n) => lower[n] }
}

t.test('HTTP rules: method, path, host and headers', async (t) => {
  const rule = compileHttpRule({
    method: 'PUT',
    path: '/v1/exhaust-port',
    headers: [{ name: 'X-Has-Force', value: 'True' }],
    headerMatches: [],
  })
  const actions: HeaderAction[] = []
  t.notOk(rule.matches(req('PUT', '/v1/exhaust-port'), actions), 'header missing')
  t.notOk(rule.matches(req('PUT', '/v1/exhaust-port', { 'X-Has-Force': 'False' }), actions), 'wrong value')
  t.ok(
    rule.matches(req('PUT', '/v1/exhaust-port', { 'x-has-force': 'True' }), actions),
    'header names are case-insensitive',
  )
  t.notOk(rule.matches(req('POST', '/v1/exhaust-port', { 'X-Has-Force': 'True' }), actions), 'method must match')
  const presence = compileHttpRule({ headers: [{ name: 'X-Token' }], headerMatches: [] })
  t.ok(presence.matches(req('GET', '/', { 'X-Token': '' }), actions), 'a header without value needs only be present')
  const host = compileHttpRule({ host: '.*\\.empire', headers: [], headerMatches: [] })
  t.ok(host.matches(req('GET', '/', {}, 'Deathstar.EMPIRE'), actions), 'host is case-insensitive')
  t.notOk(host.matches(req('GET', '/', {}, 'deathstar.alliance'), actions))
  t.same(actions, [], 'no header actions from plain rules')
})

t.test('HTTP headerMatches: mismatch actions as Cilium documents them', async (t) => {
  const strict = compileHttpRule({ headers: [], headerMatches: [{ name: 'X-Fleet', value: 'black' }] })
  const a: HeaderAction[] = []
  t.notOk(strict.matches(req('GET', '/', { 'X-Fleet': 'red' }), a), 'no mismatch action: the rule fails')
  t.ok(strict.matches(req('GET', '/', { 'X-Fleet': 'black' }), a))
  for (const action of ['LOG', 'ADD', 'REPLACE'] as const) {
    const r = compileHttpRule({ headers: [], headerMatches: [{ name: 'X-Fleet', value: 'black', mismatch: action }] })
    const acts: HeaderAction[] = []
    t.ok(r.matches(req('GET', '/', { 'X-Fleet': 'red' }), acts), `${action}: the rule still matches`)
    t.same(acts, [{ action, name: 'x-fleet', value: 'black' }], `${action}: asks the proxy to act`)
  }
  const del = compileHttpRule({ headers: [], headerMatches: [{ name: 'X-Debug', value: 'off', mismatch: 'DELETE' }] })
  const acts: HeaderAction[] = []
  t.ok(del.matches(req('GET', '/', { 'X-Debug': 'on' }), acts))
  t.same(acts, [{ action: 'DELETE', name: 'x-debug', value: 'off' }])
  const failing = compileHttpRule({
    method: 'GET',
    headers: [],
    headerMatches: [
      { name: 'A', value: '1', mismatch: 'ADD' },
      { name: 'B', value: '2' },
    ],
  })
  const none: HeaderAction[] = []
  t.notOk(failing.matches(req('GET', '/'), none), 'a rule that fails later asks for nothing')
  t.same(none, [])
})

t.test('port ranges become the fewest aligned prefix blocks', async (t) => {
  t.same(portBlocks(80, 80), [{ port: 80, prefixLen: 16 }])
  t.same(portBlocks(0, 65535), [{ port: 0, prefixLen: 0 }])
  t.same(portBlocks(8080, 8083), [{ port: 8080, prefixLen: 14 }])
  t.same(portBlocks(1, 6), [
    { port: 1, prefixLen: 16 },
    { port: 2, prefixLen: 15 },
    { port: 4, prefixLen: 15 },
    { port: 6, prefixLen: 16 },
  ])
  for (const [lo, hi] of [
    [1000, 2000],
    [1, 65535],
    [32768, 60999],
    [5, 5],
  ] as const) {
    const covered = new Set<number>()
    for (const b of portBlocks(lo, hi)) {
      const size = 2 ** (16 - b.prefixLen)
      t.equal(b.port % size, 0, `block ${b.port}/${b.prefixLen} is aligned`)
      for (let p = b.port; p < b.port + size; p++) covered.add(p)
    }
    t.equal(covered.size, hi - lo + 1, `${lo}-${hi}: exact cover, no overlap`)
    t.ok(covered.has(lo) && covered.has(hi) && !covered.has(lo - 1) && !covered.has(hi + 1))
  }
})
