import fc from 'fast-check'
import t from 'tap'
import { normalizePath } from '../proxy/http/request-path.js'

const normalized: Array<[string, string]> = [
  ['/v1/request-landing', '/v1/request-landing'],
  ['/v1/./request-landing', '/v1/request-landing'],
  ['/v1/public/../request-landing', '/v1/request-landing'],
  ['/v1//request-landing', '/v1/request-landing'],
  ['//v1///request-landing', '/v1/request-landing'],
  ['/v1/%72equest-landing', '/v1/request-landing'],
  ['/%76%31/request%2Dlanding', '/v1/request-landing'],
  ['/v1/a%7Eb', '/v1/a~b'],
  ['/v1/space%20here', '/v1/space%20here'],
  ['/v1/lower%2fslash'.replace('%2f', '%3a'), '/v1/lower%3Aslash'],
  ['/../../etc/passwd', '/etc/passwd'],
  ['/v1/..', '/'],
  ['/v1/.', '/v1/'],
  ['/v1/', '/v1/'],
  ['/', '/'],
  ['/v1/x?a=../b&c=%2f', '/v1/x?a=../b&c=%2f'],
  ['/v1/a/b/../../c', '/v1/c'],
  ['/v1/...', '/v1/...'],
  ['/v1/.hidden', '/v1/.hidden'],
  // Path parameters (RFC 3986 3.3) are removed, as Tomcat, Jetty and Spring remove them.
  ['/abc;p=1/def', '/abc/def'],
  ['/public/..;/admin', '/admin'],
  ['/public/..;x=1/admin', '/admin'],
  ['/public/.;x/admin', '/public/admin'],
  ['/v1/echo;jsessionid=abc?x=1;y', '/v1/echo?x=1;y'],
  ['/a/;x/b', '/a/b'],
  ['/a;/', '/a/'],
  ['/a/b;c;d', '/a/b'],
]

const refused: Array<[string, RegExp]> = [
  ['/v1%2frequest-landing', /encoded slash/],
  ['/v1%2Frequest-landing', /encoded slash/],
  ['/v1%5cadmin', /encoded backslash/],
  ['/v1\\admin', /backslash/],
  ['/v1/%2e%2e/admin', /encoded dot segment/],
  ['/v1/%2E%2E/admin', /encoded dot segment/],
  ['/v1/.%2e/admin', /encoded dot segment/],
  ['/v1/%2e./admin', /encoded dot segment/],
  ['/v1/%2e/admin', /encoded dot segment/],
  ['/v1/%00', /NUL/],
  ['/v1/%zz', /invalid escape '%zz'/],
  ['/v1/%4', /invalid escape/],
  ['/v1/%', /invalid escape/],
  ['/v1/\u0000x', /raw byte 0x00/],
  ['/v1/\tx', /raw byte 0x09/],
  ['/v1/ü', /raw byte 0xfc/],
  ['/v1/%2e%2e;/admin', /encoded dot segment/],
  ['/v1/..%3b/admin', /encoded ';' \(%3b\)/],
  ['/v1/x%3Bjsessionid=1', /encoded ';'/],
  ['/admin#x', /fragment/],
  ['/v1/x?a=1#frag', /fragment/],
  ['/path%0d%0aX-Injected:%20true', /encoded control character \(%0D\)/],
  ['/path%0A', /encoded control character \(%0A\)/],
  ['/path%7f', /encoded control character \(%7F\)/],
  ['v1/request-landing', /origin-form/],
  ['http://deathstar/v1/request-landing', /origin-form/],
]

t.test(`${normalized.length} paths normalize to one form`, async (t) => {
  for (const [input, want] of normalized)
    t.same(normalizePath(input, 'GET'), { ok: true, path: want }, `${input} -> ${want}`)
})

t.test(`${refused.length} ambiguous paths are refused`, async (t) => {
  t.ok(normalized.length + refused.length >= 25, 'a corpus of at least 25 path-confusion cases')
  for (const [input, why] of refused) {
    const r = normalizePath(input, 'GET')
    t.equal(r.ok, false, `${JSON.stringify(input)} refused`)
    if (!r.ok) t.match(r.reason, why)
  }
})

t.test('asterisk-form only for OPTIONS', async (t) => {
  t.same(normalizePath('*', 'OPTIONS'), { ok: true, path: '*' })
  t.match(normalizePath('*', 'GET'), { ok: false, reason: /only for OPTIONS/ })
})

t.test('normalizing is idempotent, and a normal path comes back as it is', async (t) => {
  const piece = fc.constantFrom(
    'a',
    'B',
    '/',
    '.',
    '..',
    '%2e',
    '%41',
    '%7e',
    '%3a',
    '~',
    '-',
    '?',
    '=',
    '//',
    ';',
    ';x=1',
  )
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 12 }), (pieces) => {
      const r = normalizePath(`/${pieces.join('')}`, 'GET')
      if (!r.ok) return true
      const again = normalizePath(r.path, 'GET')
      return again.ok && again.path === r.path
    }),
  )
  for (const p of ['/', '/v1/', '/v1/request-landing', '/a/b.c/d?x=/./..//%2e', '/a-b_c~d/e'])
    t.same(normalizePath(p, 'GET'), { ok: true, path: p })
})

t.test(
  'a normalized path has no parameters, dot segments, encoded separators or controls: servers cannot read it two ways',
  async () => {
    const piece = fc.constantFrom(
      'a',
      '/',
      '.',
      '..',
      ';',
      ';x',
      '%2e',
      '%2E',
      '%3b',
      '%2f',
      '%0d',
      '%0a',
      '%25',
      '%41',
      '#',
      '\\',
      '//',
      '?',
      '..;',
    )
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 14 }), (pieces) => {
        const r = normalizePath(`/${pieces.join('')}`, 'GET')
        if (!r.ok) return true
        const path = r.path.split('?')[0]!
        const segments = path.split('/').slice(1)
        return (
          !path.includes(';') &&
          !/%(2F|5C|3B|0[0-9A-F]|1[0-9A-F]|7F)/i.test(path) &&
          !path.includes('#') &&
          !segments.some((x) => x === '.' || x === '..') &&
          !path.includes('//')
        )
      }),
      { numRuns: 3000 },
    )
  },
)
