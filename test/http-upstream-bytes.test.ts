// What the upstream receives, byte for byte, for the request classes an outside review found
// forwarded unsafely: framing (RFC 9112 6), path parameters (RFC 3986 3.3, read as Tomcat,
// Jetty and Spring read them), request targets that are not origin-form (RFC 9112 3.2) and Host
// (RFC 9110 7.2, RFC 3986 3.2.2). The upstream is a raw socket that records and answers 200.

import { type AddressInfo, createServer } from 'node:net'
import t, { type Test } from 'tap'
import { type LoopbackProxy, rawExchange, startLoopbackProxy } from './fixtures/loopback-proxy.js'
import { deathstarHttp } from './fixtures/policy-text.js'

const POLICY = deathstarHttp('review', [
  '{ method: "GET|POST", path: "/public/.*" }',
  '{ method: GET, path: "/abc/def" }',
])

interface Setup extends LoopbackProxy {
  /** Everything the upstream received since the last call. */
  received(): string
  send(raw: string): Promise<string>
}

/** A raw upstream answering each request head with `reply` (a 200 with an empty body by default). */
async function setup(t: Test, reply = 'HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n'): Promise<Setup> {
  let bytes = ''
  const upstream = createServer((sock) => {
    sock.on('data', (d: Buffer) => {
      const before = bytes.split('\r\n\r\n').length
      bytes += d.toString('latin1')
      for (let i = before; i < bytes.split('\r\n\r\n').length; i++) sock.write(reply)
    })
    sock.on('error', () => undefined)
  })
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    upstream.close()
    upstream.unref()
  })
  const p = await startLoopbackProxy(t, {
    source: '198.18.1.10',
    dest: { address: '198.18.2.10', port: 80 },
    originPort: (upstream.address() as AddressInfo).port,
    policy: POLICY,
  })
  return {
    ...p,
    received: () => {
      const b = bytes
      bytes = ''
      return b
    },
    send: (raw) => rawExchange(p.port, raw, 1000),
  }
}

const H = 'Host: deathstar\r\n'

t.test(
  'framing: exactly one framing header reaches the upstream, written by the proxy; ambiguous framing none',
  async (t) => {
    const s = await setup(t)
    const refused: Array<[string, string, RegExp]> = [
      [
        'an empty Transfer-Encoding with Content-Length',
        `POST /public/x HTTP/1.1\r\n${H}Transfer-Encoding:\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n${H}\r\n`,
        /both Transfer-Encoding and Content-Length/,
      ],
      [
        'an empty Transfer-Encoding alone',
        `POST /public/x HTTP/1.1\r\n${H}Transfer-Encoding: \r\n\r\n0\r\n\r\n`,
        /empty Transfer-Encoding/,
      ],
      [
        'Content-Length 0200',
        `POST /public/x HTTP/1.1\r\n${H}Content-Length: 0200\r\n\r\n${'a'.repeat(200)}`,
        /leading zeros/,
      ],
      [
        'Transfer_Encoding next to Content-Length',
        `POST /public/x HTTP/1.1\r\n${H}Transfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`,
        /'Transfer_Encoding' reads as transfer-encoding/,
      ],
      [
        'Content_Length next to Transfer-Encoding',
        `POST /public/x HTTP/1.1\r\n${H}Content_Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
        /'Content_Length' reads as content-length/,
      ],
    ]
    for (const [what, raw, why] of refused) {
      const reply = await s.send(raw)
      t.match(reply, /^HTTP\/1\.1 400 Bad Request/, `${what}: 400`)
      t.match(reply, why, `${what}: says why`)
      t.equal(s.received(), '', `${what}: nothing reached the upstream`)
    }
    await s.send(`POST /public/x HTTP/1.1\r\n${H}X-A: 1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`)
    t.equal(
      s.received(),
      `POST /public/x HTTP/1.1\r\n${H}X-A: 1\r\ncontent-length: 5\r\n\r\nhello`,
      "Content-Length: one line, the proxy's, then the body",
    )
    await s.send(
      `POST /public/x HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n`,
    )
    t.equal(
      s.received(),
      `POST /public/x HTTP/1.1\r\n${H}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
      'chunked: re-framed, no Content-Length',
    )
  },
)

t.test(
  'a response with an empty Transfer-Encoding and a Content-Length reaches the client with one framing',
  async (t) => {
    const s = await setup(t, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\nContent-Length: 5\r\n\r\nhello')
    const reply = await s.send(`GET /public/x HTTP/1.1\r\n${H}Connection: close\r\n\r\n`)
    const [head] = reply.split('\r\n\r\n')
    t.equal(
      (head!.match(/^(content-length|transfer-encoding):/gim) ?? []).length,
      1,
      `one framing header: ${JSON.stringify(head)}`,
    )
  },
)

t.test('path parameters: removed before dot segments, for the rule and the server alike', async (t) => {
  const s = await setup(t)
  t.match(
    await s.send(`GET /public/..;/admin HTTP/1.1\r\n${H}Connection: close\r\n\r\n`),
    /^HTTP\/1\.1 403/,
    '/public/..;/admin is /admin to Tomcat: denied',
  )
  t.match(
    await s.send(`GET /public/%2e%2e;/admin HTTP/1.1\r\n${H}Connection: close\r\n\r\n`),
    /^HTTP\/1\.1 400/,
    'an encoded dot segment with a parameter: refused',
  )
  t.match(
    await s.send(`GET /public/..%3b/admin HTTP/1.1\r\n${H}Connection: close\r\n\r\n`),
    /^HTTP\/1\.1 400[\s\S]*encoded ';'/,
    "an encoded ';': refused",
  )
  t.equal(s.received(), '', 'none reached the upstream')
  t.match(
    await s.send(`GET /abc;p=1/def HTTP/1.1\r\n${H}Connection: close\r\n\r\n`),
    /^HTTP\/1\.1 200/,
    '/abc;p=1/def is allowed by the rule for /abc/def',
  )
  t.match(await s.send(`GET /public/a;jsessionid=1?q=1;2 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`), /^HTTP\/1\.1 200/)
  t.equal(
    s.received(),
    `GET /abc/def HTTP/1.1\r\n${H}\r\nGET /public/a?q=1;2 HTTP/1.1\r\n${H}\r\n`,
    'and forwarded as judged: without parameters, the query as sent',
  )
  t.match(
    s.logs.find((l) => l.msg === 'http allowed'),
    { path: '/abc/def', target: '/abc;p=1/def' },
    'the flow line has the judged path and the target as sent',
  )
})

t.test('request targets that are not origin-form, and malformed Host values, are refused with 400', async (t) => {
  const s = await setup(t)
  const refused: Array<[string, RegExp]> = [
    [`GET /public/x#frag HTTP/1.1\r\n${H}\r\n`, /fragment/],
    [`GET /public/x%0d%0aX-Injected:%20true HTTP/1.1\r\n${H}\r\n`, /encoded control character \(%0D\)/],
    [`GET /public/x HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n`, /malformed Host "a\.example, b\.example"/],
    [`GET /public/x HTTP/1.1\r\nHost: user@deathstar\r\n\r\n`, /malformed Host/],
    [`GET /public/x HTTP/1.1\r\nHost: deathstar:99999\r\n\r\n`, /port 99999 is above 65535/],
    [`GET /public/x HTTP/1.1\r\n\r\n`, /no Host header/],
    [`GET /public/x HTTP/1.0\r\n\r\n`, /no Host header/],
    [`GET /public/x HTTP/2.0\r\n${H}\r\n`, /HTTP\/2\.0 is not HTTP\/1\.x/],
  ]
  for (const [raw, why] of refused) {
    const reply = await s.send(raw)
    t.match(reply, /^HTTP\/1\.1 400/, `${JSON.stringify(raw.split('\r\n')[0])}: 400`)
    t.match(reply, why)
  }
  t.equal(s.received(), '', 'none reached the upstream')
  t.match(
    s.logs.filter((l) => l.verdict === 'invalid').length,
    refused.length,
    'each logged as invalid with its reason',
  )
})
