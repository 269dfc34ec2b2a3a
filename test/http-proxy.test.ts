// The HTTP/1.1 proxy against plain listeners on loopback: flows are injected as if the datapath
// had steered them (tiefighter or xwing to deathstar:80), and forwarded to a lab HTTP server.

import { createHash } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect, createServer as createNetServer } from 'node:net'
import t, { type Test } from 'tap'
import { Client } from 'undici'
import { startHttpServer } from '../lab/servers/http-server.js'
import type { HttpProxyOptions } from '../proxy/http/http-proxy.js'
import { type LoopbackProxy, rawExchange, startLoopbackProxy } from './fixtures/loopback-proxy.js'
import { testOverload } from './fixtures/overload.js'
import { waitUntil } from './fixtures/wait.js'

const STAR_WARS = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: deathstar-l7 }
spec:
  endpointSelector: { matchLabels: { org: empire, class: deathstar } }
  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules:
        http:
        - { method: POST, path: "/v1/request-landing" }
        - { method: POST, path: "/v1/echo" }
        - { method: PUT, path: "/v1/exhaust-port", headers: [ "X-Has-Force: True" ] }
`

interface Setup extends LoopbackProxy {
  proxyUrl: string
}

/** The proxy as if steered from `source` to deathstar:80, forwarding to a lab HTTP server (or `upstreamPort`). */
async function setup(
  t: Test,
  source: string,
  upstreamPort?: number,
  policy = STAR_WARS,
  extra: Partial<HttpProxyOptions> = {},
): Promise<Setup> {
  let port = upstreamPort
  if (port === undefined) {
    const upstream = await startHttpServer({ name: 'deathstar', port: 0, host: '127.0.0.1' })
    t.teardown(() => new Promise<void>((r) => upstream.close(() => r())))
    port = (upstream.address() as AddressInfo).port
  }
  const p = await startLoopbackProxy(t, {
    source,
    dest: { address: '198.18.2.10', port: 80 },
    originPort: port,
    policy,
    extra,
  })
  return { ...p, proxyUrl: `http://127.0.0.1:${p.port}` }
}

const TIEFIGHTER = '198.18.1.10'
const XWING = '198.18.1.20'

t.test('star-wars: allowed requests are forwarded, others get 403 from the proxy', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const land = await fetch(`${s.proxyUrl}/v1/request-landing`, {
    method: 'POST',
    body: '',
    headers: { host: 'deathstar' },
  })
  t.equal(land.status, 200)
  t.equal(await land.text(), 'Ship landed\n', "the server's own answer")
  t.equal(land.headers.get('x-lab-host'), 'deathstar')
  const exhaust = await fetch(`${s.proxyUrl}/v1/exhaust-port`, { method: 'PUT', body: 'boom' })
  t.equal(exhaust.status, 403)
  t.equal(await exhaust.text(), 'Access denied\n')
  const forced = await fetch(`${s.proxyUrl}/v1/exhaust-port`, {
    method: 'PUT',
    body: '',
    headers: { 'X-Has-Force': 'True' },
  })
  t.equal(forced.status, 503, 'with the header it reaches the server (which panics)')
  const denied = s.logs.find((l) => l.verdict === 'denied')!
  t.match(
    denied,
    {
      method: 'PUT',
      path: '/v1/exhaust-port',
      destination: '198.18.2.10:80',
      status: 403,
      reason: /ingress of endpoint 3: no http rule matched on ingress TCP\/80/,
    },
    'a denial is logged with its reason',
  )
  t.match(
    s.logs.find((l) => l.verdict === 'allowed'),
    { rules: ['CiliumNetworkPolicy/default/deathstar-l7'], source: /^198\.18\.1\.10:\d+$/, status: 200 },
    'an allow names the rule',
  )
  t.ok(typeof denied.sourceIdentity === 'number' && typeof denied.destIdentity === 'number', 'with identities')
})

t.test('an xwing gets 403 for everything (it would be dropped in the kernel first)', async (t) => {
  const s = await setup(t, XWING)
  const r = await fetch(`${s.proxyUrl}/v1/request-landing`, { method: 'POST', body: '' })
  t.equal(r.status, 403)
  t.match(s.logs[0], { verdict: 'denied', reason: /identity \d+ is not allowed/ })
})

t.test('every request of a keep-alive connection is evaluated, and the connection survives a denial', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const acceptedBefore = s.proxy.accepted
  const client = new Client(s.proxyUrl, { pipelining: 1 })
  t.teardown(() => client.close())
  const statuses: number[] = []
  for (const [method, path] of [
    ['POST', '/v1/request-landing'],
    ['PUT', '/v1/exhaust-port'],
    ['POST', '/v1/request-landing'],
  ] as const) {
    const r = await client.request({ method, path, body: '' })
    statuses.push(r.statusCode)
    await r.body.text()
  }
  t.same(statuses, [200, 403, 200])
  t.equal(s.proxy.accepted - acceptedBefore, 1, 'all three on one connection')
})

t.test('a policy change applies to the next request of an open connection', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const client = new Client(s.proxyUrl, { pipelining: 1 })
  t.teardown(() => client.close())
  const land = async () => {
    const r = await client.request({ method: 'POST', path: '/v1/request-landing', body: '' })
    await r.body.text()
    return r.statusCode
  }
  t.equal(await land(), 200, 'allowed while the rule is there')
  s.engine.loadFile('sw.yaml', STAR_WARS.replace('path: "/v1/request-landing"', 'path: "/v1/other"'))
  t.equal(await land(), 403, 'denied on the same connection once it is gone')
  s.engine.loadFile('sw.yaml', STAR_WARS)
  t.equal(await land(), 200, 'and allowed again')
})

t.test('hop-by-hop headers are dropped both ways; Host and end-to-end headers pass as sent', async (t) => {
  const upstream = createServer((req, res) => {
    const body = JSON.stringify(req.rawHeaders)
    res.writeHead(200, {
      connection: 'x-upstream-hop',
      'x-upstream-hop': '1',
      'keep-alive': 'timeout=5',
      'x-kept': 'yes',
      'content-length': Buffer.byteLength(body),
    })
    res.end(body)
  })
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => upstream.close(() => r())))
  const s = await setup(t, TIEFIGHTER, (upstream.address() as AddressInfo).port)
  const reply = await rawRequest(
    s.proxyUrl,
    'POST /v1/echo HTTP/1.1\r\nHost: Deathstar.Empire:80\r\nX-Dup: a\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nTE: trailers\r\nKeep-Alive: timeout=9\r\nProxy-Authorization: Basic Zm9v\r\nX-Dup: b\r\nContent-Length: 0\r\n\r\n',
  )
  const [head, body] = reply.split('\r\n\r\n')
  const seen = JSON.parse(body!) as string[]
  const names = seen.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
  t.same(
    [seen[0]!.toLowerCase(), seen[1]],
    ['host', 'Deathstar.Empire:80'],
    'Host first, its value as the client wrote it',
  )
  t.same(
    seen.filter((_, i) => i % 2 === 1 && /^[ab]$/.test(seen[i]!)),
    ['a', 'b'],
    'repeated fields kept in order',
  )
  for (const hop of ['x-secret', 'te', 'keep-alive', 'proxy-authorization'])
    t.notOk(names.includes(hop), `${hop} not forwarded`)
  t.match(head, /\r\nx-kept: yes/i, 'end-to-end response headers pass')
  t.notMatch(head, /x-upstream-hop/i, 'a response header the upstream Connection named is dropped')
  t.notMatch(head, /keep-alive: timeout=5/i, "the upstream's Keep-Alive is not the client's")
})

t.test('headerMatches mismatch actions reach the server as Cilium documents', async (t) => {
  const policy = STAR_WARS.replace(
    '- { method: POST, path: "/v1/echo" }',
    `- method: POST
          path: "/v1/echo"
          headerMatches:
          - { name: X-Token, value: "expected", mismatch: REPLACE }
          - { name: X-Team, value: "empire", mismatch: ADD }
          - { name: X-Debug, value: "off", mismatch: DELETE }
          - { name: X-Audit, value: "yes", mismatch: LOG }`,
  )
  const s = await setup(t, TIEFIGHTER, undefined, policy)
  const r = await fetch(`${s.proxyUrl}/v1/echo`, {
    method: 'POST',
    body: '',
    headers: { 'x-token': 'forged', 'x-team': 'rebels', 'x-debug': 'on', 'x-audit': 'no' },
  })
  t.equal(r.status, 200, 'mismatches with actions do not fail the rule')
  const seen = (await r.json()) as { headers: Record<string, string> }
  t.equal(seen.headers['x-token'], 'expected', 'REPLACE: the value replaced')
  t.equal(seen.headers['x-team'], 'rebels, empire', 'ADD: a value added beside the one sent')
  t.notOk('x-debug' in seen.headers, 'DELETE: the header removed')
  t.equal(seen.headers['x-audit'], 'no', 'LOG: left as it was')
  t.match(s.logs, [{ msg: 'http: header mismatch', header: 'x-audit', expected: 'yes', got: 'no' }], 'and logged')
  const ok = await fetch(`${s.proxyUrl}/v1/echo`, {
    method: 'POST',
    body: '',
    headers: { 'x-token': 'expected', 'x-team': 'empire', 'x-debug': 'off', 'x-audit': 'yes' },
  })
  const untouched = (await ok.json()) as { headers: Record<string, string> }
  t.match(
    untouched.headers,
    { 'x-token': 'expected', 'x-team': 'empire', 'x-debug': 'off', 'x-audit': 'yes' },
    'matching headers pass unchanged',
  )
})

t.test('a 10 MB body is streamed through and arrives intact', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const body = Buffer.alloc(10 * 1024 * 1024)
  for (let i = 0; i < body.length; i += 4096) body.writeUInt32LE(i, i)
  const r = await fetch(`${s.proxyUrl}/v1/echo`, { method: 'POST', body })
  t.equal(r.status, 200)
  const seen = (await r.json()) as { bodyBytes: number; bodySha256: string; headers: Record<string, string> }
  t.equal(seen.bodyBytes, body.length)
  t.equal(seen.bodySha256, createHash('sha256').update(body).digest('hex'))
})

// Back-pressure: 128 MB, far more than the kernel's socket buffers on both hops hold (a few MB
// each); a proxy that kept reading from the fast side would take all of it in while the slow side
// stalls.
const BIG = 128 * 1024 * 1024
const PIECE = Buffer.alloc(64 * 1024, 0x61)
const STALL_MS = 600

/** Writes `total` bytes to `sock` as fast as it accepts them; `sent()` counts what it has accepted. */
function pour(
  sock: { write(b: Buffer): boolean; once(e: 'drain', f: () => void): unknown },
  total: number,
): { sent: () => number } {
  let sent = 0
  const more = (): void => {
    while (sent < total) {
      const n = Math.min(PIECE.length, total - sent)
      sent += n
      if (!sock.write(n === PIECE.length ? PIECE : PIECE.subarray(0, n))) return void sock.once('drain', more)
    }
  }
  more()
  return { sent: () => sent }
}

const stall = (): Promise<void> => new Promise((r) => setTimeout(r, STALL_MS))

t.test('a client that stops reading holds the upstream back; the response then arrives whole', async (t) => {
  let poured: { sent: () => number } | null = null
  const server = createNetServer((sock) => {
    sock.on('error', () => undefined)
    sock.once('data', () => {
      sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BIG}\r\n\r\n`)
      poured = pour(sock, BIG)
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => server.close())
  const s = await setup(t, TIEFIGHTER, (server.address() as AddressInfo).port)
  const client = connect({ port: Number(new URL(s.proxyUrl).port), host: '127.0.0.1' })
  t.teardown(() => client.destroy())
  client.pause()
  client.write('POST /v1/echo HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n')
  await stall()
  const whileStalled = poured === null ? 0 : (poured as { sent: () => number }).sent()
  t.ok(whileStalled > 0, 'the upstream began to answer')
  t.ok(
    whileStalled < BIG / 2,
    `the upstream was held back (${(whileStalled / 2 ** 20).toFixed(1)} MB of 128 written while the client did not read)`,
  )
  let received = 0
  let head = ''
  const done = new Promise<void>((resolve) => {
    client.on('data', (d: Buffer) => {
      if (!head.includes('\r\n\r\n')) {
        head += d.toString('latin1')
        const end = head.indexOf('\r\n\r\n')
        if (end >= 0) received += Buffer.byteLength(head, 'latin1') - end - 4
      } else received += d.length
      if (received >= BIG) resolve()
    })
    setTimeout(resolve, 20_000).unref()
  })
  client.resume()
  await done
  t.match(head, /^HTTP\/1\.1 200 OK\r\n/)
  t.equal(received, BIG, 'then every byte arrives')
})

t.test('an upstream that stops reading holds the client back; the body then arrives whole', async (t) => {
  let bodyBytes = 0
  const server = createNetServer((sock) => {
    sock.on('error', () => undefined)
    let head = ''
    const onData = (d: Buffer): void => {
      if (!head.includes('\r\n\r\n')) {
        head += d.toString('latin1')
        const end = head.indexOf('\r\n\r\n')
        if (end < 0) return
        bodyBytes += Buffer.byteLength(head, 'latin1') - end - 4
        sock.pause()
        setTimeout(() => sock.resume(), STALL_MS)
      } else bodyBytes += d.length
      if (bodyBytes === BIG)
        sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${String(bodyBytes).length}\r\n\r\n${bodyBytes}`)
    }
    sock.on('data', onData)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => server.close())
  const s = await setup(t, TIEFIGHTER, (server.address() as AddressInfo).port)
  const client = connect({ port: Number(new URL(s.proxyUrl).port), host: '127.0.0.1' })
  t.teardown(() => client.destroy())
  let reply = ''
  const answered = new Promise<void>((resolve) => {
    client.on('data', (d: Buffer) => {
      reply += d.toString('latin1')
      if (reply.endsWith(String(BIG))) resolve()
    })
    setTimeout(resolve, 20_000).unref()
  })
  client.write(`POST /v1/echo HTTP/1.1\r\nHost: deathstar\r\nContent-Length: ${BIG}\r\n\r\n`)
  const poured = pour(client, BIG)
  await stall()
  const whileStalled = poured.sent()
  t.ok(
    whileStalled < BIG / 2,
    `the client was held back (${(whileStalled / 2 ** 20).toFixed(1)} MB of 128 accepted while the upstream did not read)`,
  )
  await answered
  t.match(reply, new RegExp(`^HTTP/1\\.1 200 OK\\r\\n[\\s\\S]*\\r\\n\\r\\n${BIG}$`), 'then every byte arrives')
})

t.test('ambiguous framing is refused with 400 and never forwarded', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const port = Number(new URL(s.proxyUrl).port)
  const raw =
    'POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\n\r\n'
  const reply = await rawExchange(port, raw, 2000)
  t.match(reply, /^HTTP\/1\.1 400 Bad Request/, 'Content-Length with Transfer-Encoding: 400')
  t.notMatch(reply, /Ship landed|Panic/, 'nothing reached the server')
  t.match(s.logs, [{ verdict: 'invalid' }])
})

t.test('an upstream that is down gives 502 and a log line', async (t) => {
  const s = await setup(t, TIEFIGHTER, 1) // nothing listens on 127.0.0.1:1
  const r = await fetch(`${s.proxyUrl}/v1/request-landing`, { method: 'POST', body: '' })
  t.equal(r.status, 502)
  t.equal(await r.text(), 'Upstream unavailable\n')
  t.ok(s.logs.some((l) => String(l.msg).includes('upstream failed (502)')))
})

/** Sends raw bytes to the proxy and returns everything it answers before closing (bounded). */
function rawRequest(proxyUrl: string, raw: string): Promise<string> {
  return rawExchange(Number(new URL(proxyUrl).port), raw, 1500)
}

/** An upstream that answers `upstream` to each request it reads whole, and counts them. */
async function countingUpstream(t: Test): Promise<{ port: number; completed: () => number }> {
  let completed = 0
  const upstream = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      completed++
      res.end('upstream\n')
    })
  })
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => new Promise<void>((r) => upstream.close(() => r())))
  return { port: (upstream.address() as AddressInfo).port, completed: () => completed }
}

/** Waits (at most `tries` x 20 ms) until the proxy has no connection open. */
async function untilNoConnections(s: Setup, tries: number): Promise<void> {
  for (let i = 0; i < tries && s.proxy.connectionCount > 0; i++) await new Promise((r) => setTimeout(r, 20))
}

t.test('confusing paths reach the server only in their normalized form, or not at all', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const via = async (target: string, method = 'POST') =>
    rawRequest(
      s.proxyUrl,
      `${method} ${target} HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    )
  for (const target of ['/v1/public/../echo', '/v1/%65cho', '/v1//echo', '/v1/./echo', '/x/../v1/echo']) {
    const reply = await via(target)
    t.match(reply, /^HTTP\/1\.1 200/, `${target} is /v1/echo`)
    t.match(reply, /"url":"\/v1\/echo"/, `and the server got /v1/echo for ${target}`)
  }
  const bypass = await via('/v1/request-landing/../exhaust-port', 'PUT')
  t.match(bypass, /^HTTP\/1\.1 403/, 'a dot-segment detour to /v1/exhaust-port is judged as /v1/exhaust-port')
  for (const target of ['/v1/echo%2f..%2fexhaust-port', '/v1/x/%2e%2e/echo', '/v1/echo%00', '/v1/%zz']) {
    t.match(await via(target), /^HTTP\/1\.1 400/, `${target} is refused`)
  }
})

const H = 'Host: deathstar\r\n'
const SMUGGLING: Array<[string, string]> = [
  [
    'Content-Length with Transfer-Encoding',
    `POST /v1/echo HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX`,
  ],
  [
    'Transfer-Encoding before Content-Length',
    `POST /v1/echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX`,
  ],
  [
    'two different Content-Lengths',
    `POST /v1/echo HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
  ],
  [
    'two Host headers',
    `POST /v1/echo HTTP/1.1\r\nHost: deathstar\r\nHost: internal-admin\r\nContent-Length: 0\r\n\r\n`,
  ],
  ['two equal Content-Lengths', `POST /v1/echo HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`],
  ['a Content-Length list', `POST /v1/echo HTTP/1.1\r\n${H}Content-Length: 5, 5\r\n\r\nhello`],
  ['a negative Content-Length', `POST /v1/echo HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\nhello`],
  ['a Content-Length with a plus sign', `POST /v1/echo HTTP/1.1\r\n${H}Content-Length: +5\r\n\r\nhello`],
  ['a hexadecimal Content-Length', `POST /v1/echo HTTP/1.1\r\n${H}Content-Length: 0x5\r\n\r\nhello`],
  [
    'Transfer-Encoding not ending in chunked',
    `POST /v1/echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
  ],
  ['an unknown Transfer-Encoding', `POST /v1/echo HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`],
  ['a space before the colon', `POST /v1/echo HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`],
  ['obs-fold', `POST /v1/echo HTTP/1.1\r\n${H}X-Note: a\r\n folded\r\nContent-Length: 0\r\n\r\n`],
  ['obs-fold of Transfer-Encoding', `POST /v1/echo HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`],
  ['bare LF line endings', `POST /v1/echo HTTP/1.1\n${H.replace('\r', '')}Content-Length: 0\n\n`],
  ['bare CR in a header', `POST /v1/echo HTTP/1.1\r\n${H}X-Note: a\rb\r\nContent-Length: 0\r\n\r\n`],
  ['NUL in a header value', `POST /v1/echo HTTP/1.1\r\n${H}X-Note: a\u0000b\r\nContent-Length: 0\r\n\r\n`],
  ['a space in a header name', `POST /v1/echo HTTP/1.1\r\n${H}X Note: a\r\nContent-Length: 0\r\n\r\n`],
  ['an invalid chunk size', `POST /v1/echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`],
  [
    'a chunk size that overflows',
    `POST /v1/echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n`,
  ],
  ['a chunk without its CRLF', `POST /v1/echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n`],
  ['HTTP/1.0 with Transfer-Encoding', `POST /v1/echo HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ['an invalid HTTP version', `POST /v1/echo HTTP/1.2\r\n${H}Content-Length: 0\r\n\r\n`],
  [
    'duplicate Transfer-Encoding headers',
    `POST /v1/echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
  ],
]

// A framing error found mid-body (a bad chunk) can only stop a request that is already streaming:
// the server may see it begin, never complete. So completed requests are what is counted.
t.test(`${SMUGGLING.length} request-smuggling attempts: refused, and no request completes at the server`, async (t) => {
  t.ok(SMUGGLING.length >= 20, 'at least 20 cases')
  const upstream = await countingUpstream(t)
  const s = await setup(t, TIEFIGHTER, upstream.port)
  for (const [name, raw] of SMUGGLING) {
    const before = upstream.completed()
    const reply = await rawRequest(s.proxyUrl, raw)
    t.notMatch(
      reply,
      /^HTTP\/1\.[01] 2\d\d/,
      `${name}: not answered as a success (${JSON.stringify(reply.split('\r\n')[0] ?? '')})`,
    )
    t.notMatch(reply, /upstream/, `${name}: no upstream answer`)
    t.equal(upstream.completed(), before, `${name}: no request completed at the server`)
  }
})

t.test('more header fields than the limit are refused, not silently truncated', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const headers = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: ${i}\r\n`).join('')
  // Host, Content-Length and Connection besides the generated ones.
  const ok = await rawRequest(
    s.proxyUrl,
    `POST /v1/echo HTTP/1.1\r\n${H}${headers(97)}Content-Length: 0\r\nConnection: close\r\n\r\n`,
  )
  t.match(ok, /^HTTP\/1\.1 200/, '100 header fields pass')
  const tooMany = await rawRequest(
    s.proxyUrl,
    `POST /v1/echo HTTP/1.1\r\n${H}${headers(98)}Content-Length: 0\r\nConnection: close\r\n\r\n`,
  )
  t.match(tooMany, /^HTTP\/1\.1 400[\s\S]*more than 100 header fields/, '101 are refused')
})

t.test('a request head above the size limit (16 KiB) is refused and never reaches the upstream', async (t) => {
  let reached = 0
  const upstream = createServer((_req, res) => {
    reached++
    res.end('upstream\n')
  })
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => new Promise<void>((r) => upstream.close(() => r())))
  const s = await setup(t, TIEFIGHTER, (upstream.address() as AddressInfo).port)
  const big = (n: number) =>
    `POST /v1/echo HTTP/1.1\r\n${H}X-Big: ${'b'.repeat(n)}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`
  t.match(await rawRequest(s.proxyUrl, big(15 * 1024)), /^HTTP\/1\.1 200/, '15 KiB of header passes')
  t.match(await rawRequest(s.proxyUrl, big(17 * 1024)), /^HTTP\/1\.1 400/, '17 KiB is refused')
  t.equal(reached, 1, 'only the first reached the upstream')
})

t.test('Expect: 100-continue is answered by the proxy and the body forwarded', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const reply = await new Promise<string>((resolve) => {
    const sock = connect(Number(new URL(s.proxyUrl).port), '127.0.0.1', () =>
      sock.write(
        `POST /v1/echo HTTP/1.1\r\n${H}Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
      ),
    )
    let data = ''
    sock.on('data', (d) => {
      data += d.toString()
      if (data.startsWith('HTTP/1.1 100') && !data.includes('hello-sent')) {
        data += '\n[hello-sent]\n'
        sock.write('hello')
      }
    })
    sock.on('close', () => resolve(data))
    setTimeout(() => sock.destroy(), 2000)
  })
  t.match(reply, /^HTTP\/1\.1 100 Continue/, 'the client is told to continue')
  t.match(reply, /HTTP\/1\.1 200 OK[\s\S]*"bodyBytes":5/, 'and the body reaches the server')
  t.notMatch(reply, /"expect"/, 'without the Expect header')
})

/** A server on loopback that answers each request head with `reply` (never, for null), and may close after. */
async function rawServer(t: Test, reply: ((request: string) => string) | null, closeAfter = false): Promise<number> {
  const server = createNetServer((sock) => {
    let seen = ''
    sock.on('data', (d) => {
      seen += d.toString('latin1')
      if (!seen.includes('\r\n\r\n') || reply === null) return
      const out = reply(seen)
      seen = ''
      if (closeAfter) sock.end(out)
      else sock.write(out)
    })
    sock.on('error', () => undefined)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => {
    server.close()
    server.unref()
  })
  return (server.address() as AddressInfo).port
}

const PIPELINED = `POST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\nPUT /v1/exhaust-port HTTP/1.1\r\n${H}Content-Length: 4\r\n\r\nboomPOST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\nConnection: close\r\n\r\n`

t.test('pipelined requests are answered in order, the denied one by the proxy', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const reply = await rawRequest(s.proxyUrl, PIPELINED)
  const statuses = [...reply.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]))
  t.same(statuses, [200, 403, 200], 'allowed, denied, allowed')
  t.equal(reply.split('Ship landed').length - 1, 2, 'both allowed answers are the server’s')
  t.match(
    s.logs.map((l) => l.status),
    [200, 403, 200],
  )
})

t.test('HEAD gets the head only, and the connection goes on', async (t) => {
  const s = await setup(
    t,
    TIEFIGHTER,
    undefined,
    STAR_WARS.replace('- { method: POST, path: "/v1/echo" }', '- { method: "POST|HEAD", path: "/v1/echo" }'),
  )
  const reply = await rawRequest(
    s.proxyUrl,
    `HEAD /v1/echo HTTP/1.1\r\n${H}\r\nPOST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\nConnection: close\r\n\r\n`,
  )
  t.match(
    reply,
    /^HTTP\/1\.1 200 OK\r\n[\s\S]*?\r\n\r\nHTTP\/1\.1 200 OK\r\n[\s\S]*Ship landed\n$/,
    'no body after the HEAD answer; the next answer follows it',
  )
})

t.test(
  'a response delimited by the server closing reaches an HTTP/1.1 client chunked, and the connection stays usable',
  async (t) => {
    const port = await rawServer(t, () => 'HTTP/1.1 200 OK\r\n\r\nuntil the end', true)
    const s = await setup(t, TIEFIGHTER, port)
    const acceptedBefore = s.proxy.accepted
    const client = new Client(s.proxyUrl, { pipelining: 1 })
    t.teardown(() => client.close())
    for (let i = 0; i < 2; i++) {
      const r = await client.request({ method: 'POST', path: '/v1/echo', body: '' })
      t.equal(r.statusCode, 200)
      t.equal(r.headers['transfer-encoding'], 'chunked', 'chunk-encoded by the proxy')
      t.equal(await r.body.text(), 'until the end')
    }
    t.equal(s.proxy.accepted - acceptedBefore, 1, 'both on one client connection (the proxy reconnected upstream)')
  },
)

t.test('an upstream that never answers gives 504 after the response timeout', async (t) => {
  const port = await rawServer(t, null)
  const s = await setup(t, TIEFIGHTER, port, STAR_WARS, { upstreamHeadersTimeoutMs: 200 })
  const started = Date.now()
  const reply = await rawRequest(s.proxyUrl, `POST /v1/echo HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`)
  t.match(reply, /^HTTP\/1\.1 504 Gateway Timeout[\s\S]*Upstream timed out/)
  t.ok(Date.now() - started < 1400, 'answered before the client gave up')
  t.ok(s.logs.some((l) => l.msg === 'http: upstream failed (504)' && l.error === 'ETIMEDOUT'))
})

t.test('a client that does not finish its request head gets 408', async (t) => {
  const s = await setup(t, TIEFIGHTER, undefined, STAR_WARS, { headersTimeoutMs: 200 })
  const reply = await rawRequest(s.proxyUrl, `POST /v1/echo HTTP/1.1\r\n${H}`)
  t.match(reply, /^HTTP\/1\.1 408 Request Timeout/)
  t.match(s.logs, [{ verdict: 'invalid', reason: 'request headers timed out', status: 408 }])
})

t.test('a client that connects and sends nothing is disconnected after the header timeout', async (t) => {
  const s = await setup(t, TIEFIGHTER, undefined, STAR_WARS, { headersTimeoutMs: 200 })
  const url = new URL(s.proxyUrl)
  const started = Date.now()
  const socket = connect({ host: url.hostname, port: Number(url.port) })
  t.teardown(() => socket.destroy())
  let took: number | null = null
  await new Promise<void>((resolve) => {
    const giveUp = setTimeout(resolve, 3000)
    socket.once('close', () => {
      took = Date.now() - started
      clearTimeout(giveUp)
      resolve()
    })
    socket.resume()
  })
  t.ok(took !== null && took >= 150 && took < 2000, `closed by the proxy after ${took} ms`)
})

t.test('CONNECT and protocol upgrades are refused, never tunnelled', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  t.match(
    await rawRequest(s.proxyUrl, `CONNECT deathstar:443 HTTP/1.1\r\n${H}\r\n`),
    /^HTTP\/1\.1 400[\s\S]*CONNECT is not proxied/,
  )
  t.match(
    await rawRequest(
      s.proxyUrl,
      `POST /v1/echo HTTP/1.1\r\n${H}Connection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n`,
    ),
    /^HTTP\/1\.1 400[\s\S]*protocol upgrades are not proxied/,
  )
})

t.test(
  'clients that reset at once, before or after sending a request, leave the proxy serving and nothing open',
  async (t) => {
    const s = await setup(t, TIEFIGHTER)
    const port = Number(new URL(s.proxyUrl).port)
    const resetAtOnce = (request: boolean): Promise<void> =>
      new Promise((resolve) => {
        const c = connect({ host: '127.0.0.1', port }, () => {
          if (request) c.write(`POST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`)
          c.resetAndDestroy()
        })
        c.on('error', () => undefined)
        c.on('close', () => resolve())
      })
    for (let i = 0; i < 100; i++) await Promise.all([resetAtOnce(false), resetAtOnce(true), resetAtOnce(true)])
    t.match(
      await rawRequest(
        s.proxyUrl,
        `POST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\nConnection: close\r\n\r\n`,
      ),
      /^HTTP\/1\.1 200/,
      'still serving',
    )
    await untilNoConnections(s, 100)
    t.equal(s.proxy.connectionCount, 0, 'every reset connection is gone')
  },
)

/** Sends `raw`, half-closes, and returns everything the proxy answers until it closes (bounded). */
function halfClosedExchange(proxyUrl: string, raw: string): Promise<{ reply: string; closed: boolean }> {
  return new Promise((resolve) => {
    const c = connect({ host: '127.0.0.1', port: Number(new URL(proxyUrl).port), allowHalfOpen: true }, () =>
      c.end(raw),
    )
    let reply = ''
    const giveUp = setTimeout(() => {
      c.destroy()
      resolve({ reply, closed: false })
    }, 3000)
    c.on('data', (d: Buffer) => (reply += d.toString('latin1')))
    c.on('error', () => undefined)
    c.on('close', () => {
      clearTimeout(giveUp)
      resolve({ reply, closed: true })
    })
  })
}

t.test(
  'a client that half-closes after its requests gets every answer, in order, then the connection ends',
  async (t) => {
    const s = await setup(t, TIEFIGHTER)
    const { reply, closed } = await halfClosedExchange(
      s.proxyUrl,
      `POST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\nPUT /v1/exhaust-port HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\nPOST /v1/echo HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello`,
    )
    t.ok(closed, 'the proxy closed the connection after the answers')
    t.same(
      [...reply.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]),
      ['200', '403', '200'],
      'allowed, denied, allowed: each answered',
    )
    t.match(reply, /"bodyBytes":5/, 'the last body reached the server whole')
    await untilNoConnections(s, 100)
    t.equal(s.proxy.connectionCount, 0)
  },
)

t.test(
  'a client that half-closes in the middle of a request body: the request never completes at the server',
  async (t) => {
    const upstream = await countingUpstream(t)
    const s = await setup(t, TIEFIGHTER, upstream.port)
    const { reply, closed } = await halfClosedExchange(
      s.proxyUrl,
      `POST /v1/echo HTTP/1.1\r\n${H}Content-Length: 10\r\n\r\nhalf`,
    )
    t.ok(closed, 'the connection ends')
    t.notMatch(reply, /HTTP\/1\.1 200/, 'no answer from the server')
    await new Promise((r) => setTimeout(r, 100))
    t.equal(upstream.completed(), 0, 'the server never saw the request complete')
  },
)

t.test(
  'first bytes of every protocol, cut by a reset or a close at any point, leave the proxy serving and nothing open',
  async (t) => {
    const s = await setup(t, TIEFIGHTER)
    const port = Number(new URL(s.proxyUrl).port)
    const starts = [
      Buffer.from(`POST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 4\r\n\r\nbody`),
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00'),
      Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03]),
      Buffer.from('\x00\xff garbage \r\n\r\n'),
    ]
    let seed = 7
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    }
    const cut = (bytes: Buffer, reset: boolean): Promise<void> =>
      new Promise((resolve) => {
        const c = connect({ host: '127.0.0.1', port }, () => {
          c.write(bytes)
          if (reset) c.resetAndDestroy()
          else c.end()
        })
        c.on('data', () => undefined)
        c.on('error', () => undefined)
        c.setTimeout(2000, () => c.destroy())
        c.on('close', () => resolve())
      })
    for (let i = 0; i < 60; i++) {
      const tries: Array<Promise<void>> = []
      for (let j = 0; j < 4; j++) {
        const start = starts[next(starts.length)]!
        tries.push(cut(start.subarray(0, 1 + next(start.length)), next(2) === 0))
      }
      await Promise.all(tries)
    }
    t.match(
      await rawRequest(
        s.proxyUrl,
        `POST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\nConnection: close\r\n\r\n`,
      ),
      /^HTTP\/1\.1 200/,
      'still serving',
    )
    await untilNoConnections(s, 150)
    t.equal(s.proxy.connectionCount, 0, 'every cut connection is gone')
  },
)

/** A connection that made one request (answered) and stays open, idle: whether the proxy closed it. */
async function keptAlive(t: Test, port: number): Promise<{ closed: () => boolean; close: () => void }> {
  const socket = connect({ host: '127.0.0.1', port })
  t.teardown(() => socket.destroy())
  let closed = false
  socket.on('error', () => undefined)
  socket.once('close', () => (closed = true))
  await new Promise<void>((resolve) => {
    socket.once('data', () => resolve())
    socket.write(`POST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`)
  })
  return { closed: () => closed, close: () => socket.destroy() }
}

t.test(
  'past its connection budget a source is reset at once, counted and logged; a closed one frees room',
  async (t) => {
    const overload = testOverload({ connectionsPerSource: 2 })
    const s = await setup(t, TIEFIGHTER, undefined, STAR_WARS, { overload })
    const held = [await keptAlive(t, s.port), await keptAlive(t, s.port)]
    t.equal(overload.budget.connections, 2)
    const third = connect({ host: '127.0.0.1', port: s.port })
    const error = await new Promise<string | null>((resolve) => {
      third.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
      third.once('close', () => resolve(null))
      third.write(`POST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`)
    })
    t.equal(error, 'ECONNRESET', 'the third connection is reset, not left waiting')
    t.same(overload.budget.refusals().connections, { source: 1, identity: 0, node: 0 })
    t.match(overload.lines, [
      { level: 40, verdict: 'refused', overload: 'connections per source', source: TIEFIGHTER, limit: 2, refused: 1 },
    ])
    t.notOk(
      held.some((c) => c.closed()),
      'the connections it holds are left alone',
    )
    held[0]!.close()
    t.ok(await waitUntil(() => overload.budget.connections === 1, 100, 20), 'a closed connection is given back')
    t.match(
      await rawRequest(
        s.proxyUrl,
        `POST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\nConnection: close\r\n\r\n`,
      ),
      /^HTTP\/1\.1 200/,
      'and a new one is served',
    )
    held[1]!.close()
    t.ok(await waitUntil(() => overload.budget.connections === 0, 100, 20), 'all given back')
  },
)

t.test('under pressure, idle connections are closed oldest first until the node is back at its line', async (t) => {
  const overload = testOverload({}, { connections: 2, idleMs: 60_000 })
  const s = await setup(t, TIEFIGHTER, undefined, STAR_WARS, { overload })
  const idle = []
  for (let i = 0; i < 4; i++) {
    idle.push(await keptAlive(t, s.port))
    await new Promise((r) => setTimeout(r, 20))
  }
  const busy = connect({ host: '127.0.0.1', port: s.port })
  t.teardown(() => busy.destroy())
  busy.write(`POST /v1/request-landing HTTP/1.1\r\n${H}`) // a head still arriving: not idle
  t.ok(await waitUntil(() => overload.budget.connections === 5, 100, 20))
  overload.budget.underPressure = true
  t.ok(await waitUntil(() => overload.budget.connections <= 2, 150, 20), 'closed down to the line')
  t.same(
    idle.map((c) => c.closed()),
    [true, true, true, false],
    'the three idle longest, not the newest idle one nor the one sending its head',
  )
})

t.test('under pressure the shorter header and idle timeouts hold', async (t) => {
  const overload = testOverload({}, { headersMs: 200, idleMs: 200 })
  const s = await setup(t, TIEFIGHTER, undefined, STAR_WARS, { overload })
  overload.budget.underPressure = true
  const started = Date.now()
  const slow = rawRequest(s.proxyUrl, `POST /v1/echo HTTP/1.1\r\n${H}`)
  const idle = await keptAlive(t, s.port)
  t.match(await slow, /^HTTP\/1\.1 408/, 'a head not finished within the pressure timeout')
  t.ok(await waitUntil(() => idle.closed(), 100, 20), 'an idle connection closed')
  t.ok(
    Date.now() - started < 1400,
    `both within the pressure timeouts, not the usual 10 s and 60 s (${Date.now() - started} ms)`,
  )
})
