// The request-head checks the HTTP proxy makes after llhttp: framing llhttp lets through, '_'
// look-alikes of fields, and Host syntax; and the one framing line an allowed request is
// forwarded with. Pure: heads made from raw fields.

import t from 'tap'
import { HeadFields } from '../proxy/http/head-fields.js'
import type { MessageHead } from '../proxy/http/http1-parser.js'
import { forwardedFraming, hostProblem, requestHeadProblem } from '../proxy/http/request-head.js'

function head(raw: string[], versionMinor = 1, method = 'POST', versionMajor = 1): MessageHead {
  return {
    versionMajor,
    versionMinor,
    fields: HeadFields.fromRaw(raw),
    method,
    url: '/',
    status: 0,
    reason: '',
    upgrade: false,
    keepAlive: true,
  }
}
const problem = (raw: string[], versionMinor = 1): string | null => {
  const h = head(raw, versionMinor)
  return requestHeadProblem(h, h.fields.indexOf('host'), undefined, 100)
}
const H = ['Host', 'deathstar']

t.test('framing that a server behind the proxy could read another way is refused', async (t) => {
  const refused: Array<[string, string[], RegExp]> = [
    [
      'an empty Transfer-Encoding beside Content-Length',
      [...H, 'Transfer-Encoding', '', 'Content-Length', '5'],
      /both Transfer-Encoding and Content-Length/,
    ],
    ['an empty Transfer-Encoding alone', [...H, 'Transfer-Encoding', ''], /an empty Transfer-Encoding/],
    ['an empty coding in a list', [...H, 'Transfer-Encoding', 'gzip,,chunked'], /an empty Transfer-Encoding/],
    ['Content-Length with a leading zero', [...H, 'Content-Length', '0200'], /leading zeros/],
    ['Content-Length 00', [...H, 'Content-Length', '00'], /leading zeros/],
    [
      'Transfer_Encoding next to Content-Length',
      [...H, 'Transfer_Encoding', 'chunked', 'Content-Length', '5'],
      /'Transfer_Encoding' reads as transfer-encoding/,
    ],
    ['Content_Length', [...H, 'Content_Length', '5'], /reads as content-length/],
    ['X_Token beside X-Token', [...H, 'X-Token', 'a', 'X_Token', 'b'], /'X_Token' and 'X-Token' are one field/],
    [
      'X_Token beside X-TOKEN (either order)',
      [...H, 'x_token', 'b', 'X-TOKEN', 'a'],
      /'x_token' and 'X-TOKEN' are one field/,
    ],
    ['Transfer-Encoding in HTTP/1.0', [...H, 'Transfer-Encoding', 'chunked'], /HTTP\/1\.0/],
  ]
  for (const [what, raw, why] of refused) {
    t.match(problem(raw, what.includes('1.0') ? 0 : 1), why, what)
  }
  t.equal(
    problem([...H, 'HOST_', 'x']),
    null,
    "a name that only starts like one is not a look-alike ('host-' is not a field)",
  )
  for (const ok of [
    [...H, 'Content-Length', '0'],
    [...H, 'Content-Length', '10'],
    [...H, 'Transfer-Encoding', 'gzip, chunked'],
    [...H, 'X_Custom', '1'],
    [...H, 'X_A', '1', 'X_B', '2'],
  ]) {
    t.equal(problem(ok), null, `${ok.slice(2).join(': ')} passes`)
  }
})

t.test('only HTTP/1.0 and HTTP/1.1 are forwarded (llhttp reads 2.0 and 0.9 request lines too)', async (t) => {
  for (const [major, minor] of [
    [2, 0],
    [0, 9],
  ] as const) {
    const h = head(H, minor, 'GET', major)
    t.match(requestHeadProblem(h, 0, 'deathstar', 100), new RegExp(`HTTP/${major}\\.${minor} is not HTTP/1\\.x`))
  }
})

t.test('Host: exactly one, and only a host with an optional port', async (t) => {
  t.match(problem(['Content-Length', '0']), /no Host header/)
  t.match(problem(['Content-Length', '0'], 0), /no Host header/, 'in HTTP/1.0 too: the request goes on in HTTP/1.1')
  t.match(problem([...H, ...H]), /more than one Host/)
  for (const good of [
    'deathstar',
    'deathstar.empire',
    'Deathstar.Empire:80',
    'deathstar.empire.',
    '198.18.2.10',
    '198.18.2.10:8080',
    '[2001:db8::1]',
    '[::1]:443',
    'under_score.empire',
    '',
  ])
    t.equal(hostProblem(good), null, `${JSON.stringify(good)} is a host`)
  for (const bad of [
    'a.example, b.example',
    'a.example,b.example',
    'a b',
    'user@deathstar',
    'deathstar/x',
    'deathstar:',
    'deathstar:99999',
    'deathstar:8o',
    '[::1',
    'a..b',
    '.a',
    'deathstar\\x',
    'deathstar;x',
    'd%41',
  ])
    t.match(hostProblem(bad), /Host/, `${JSON.stringify(bad)} is refused`)
  t.match(hostProblem('x'.repeat(256)), /longer than 255/)
})

t.test("an allowed request is forwarded with one framing line the proxy writes, the client's dropped", async (t) => {
  const cl = HeadFields.fromRaw([...H, 'Content-Length', '5', 'X-A', '1'])
  t.equal(forwardedFraming(cl), 'content-length: 5\r\n')
  t.same(cl.toRaw(true), [...H, 'X-A', '1'], "the client's Content-Length is not forwarded as it came")
  const te = HeadFields.fromRaw([...H, 'Transfer-Encoding', 'gzip, chunked'])
  te.drop(1) // hop-by-hop: dropped before
  t.equal(forwardedFraming(te), 'transfer-encoding: gzip, chunked\r\n')
  t.equal(forwardedFraming(HeadFields.fromRaw(H)), '', 'no body: no framing')
})
