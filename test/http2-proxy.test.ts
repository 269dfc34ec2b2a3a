// The HTTP proxy's HTTP/2 side on loopback against a node:http2 server: per-stream rules for
// plain HTTP/2, trailers, resets and GOAWAY passed on, and the connection-level defences (rapid
// reset, CONTINUATION floods, oversized header blocks and frames, concurrent streams, garbage),
// each thrown by hand-made frames at a proxy that must keep serving afterwards.

import { execFile } from 'node:child_process'
import http2, { constants, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { FLAG, FRAME, frame, literal, RawH2, requestBlock, rstStream } from './fixtures/h2-frames.js'
import { type LoopbackProxy, type LoopbackProxyOptions, startLoopbackProxy } from './fixtures/loopback-proxy.js'
import { testOverload } from './fixtures/overload.js'
import { waitUntil } from './fixtures/wait.js'

const POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: deathstar-h2 }
spec:
  endpointSelector: { matchLabels: { org: empire, class: deathstar } }
  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules:
        http:
        - { method: GET, path: "/" }
        - { method: GET, path: "/v1/.*" }
        - { method: POST, path: "/v1/upload" }
`

interface Upstream {
  port: number
  /** Streams the upstream server saw. */
  streams: number
  /** What the next stream does instead of the default answer (200 'ok' and a trailer). */
  next: ((s: ServerHttp2Stream, h: IncomingHttpHeaders) => void) | null
}

async function startUpstream(t: Test): Promise<Upstream> {
  const server = http2.createServer()
  const u: Upstream = { port: 0, streams: 0, next: null }
  server.on('stream', (s, h) => {
    u.streams++
    s.on('error', () => undefined)
    const custom = u.next
    u.next = null
    if (custom) return custom(s, h)
    let body = 0
    s.on('data', (d: Buffer) => (body += d.length))
    s.on('end', () => {
      if (s.closed) return
      s.respond({ ':status': 200, 'x-seen-path': String(h[':path']) }, { waitForTrailers: true })
      s.on('wantTrailers', () => s.sendTrailers({ 'x-body-bytes': String(body) }))
      s.end('ok')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const sessions = new Set<http2.ServerHttp2Session>()
  server.on('session', (ss) => {
    sessions.add(ss)
    ss.once('close', () => sessions.delete(ss))
  })
  t.teardown(() => {
    for (const ss of sessions) ss.destroy()
    return new Promise<void>((r) => server.close(() => r()))
  })
  u.port = (server.address() as AddressInfo).port
  return u
}

async function setup(
  t: Test,
  extra: LoopbackProxyOptions['extra'] = {},
): Promise<LoopbackProxy & { upstream: Upstream; url: string }> {
  const upstream = await startUpstream(t)
  const p = await startLoopbackProxy(t, {
    source: '198.18.1.10',
    dest: { address: '198.18.2.10', port: 80 },
    originPort: upstream.port,
    policy: POLICY,
    extra,
  })
  return { ...p, upstream, url: `http://127.0.0.1:${p.port}` }
}

interface Answer {
  headers: IncomingHttpHeaders
  body: string
  trailers: IncomingHttpHeaders | null
  rstCode: number | undefined
}

/** One request on `session`; resolves when the stream closes, however it closes. */
function request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer,
): Promise<Answer> {
  return new Promise((resolve) => {
    const req = session.request(headers, { endStream: body === undefined })
    const a: Answer = { headers: {}, body: '', trailers: null, rstCode: undefined }
    req.on('response', (h) => (a.headers = h))
    req.on('trailers', (tr) => (a.trailers = tr))
    req.on('data', (d: Buffer) => (a.body += d.toString()))
    req.on('error', () => undefined)
    req.on('close', () => {
      a.rstCode = req.rstCode
      resolve(a)
    })
    if (body !== undefined) req.end(body)
  })
}

/** A fresh well-behaved client gets its answer: the proxy is alive and serving. */
async function stillServes(t: Test, url: string): Promise<void> {
  const c = http2.connect(url)
  c.on('error', () => undefined)
  const a = await request(c, { ':path': '/v1/alive' })
  c.close()
  t.equal(a.headers[':status'], 200, 'and a new connection is served afterwards')
}

t.test('h2: streams are judged one by one on one connection; denied ones get 403', async (t) => {
  const s = await setup(t)
  const c = http2.connect(s.url)
  t.teardown(() => c.close())
  const ok = await request(c, { ':path': '/v1/ships', ':authority': 'deathstar' })
  t.equal(ok.headers[':status'], 200)
  t.equal(ok.headers['x-seen-path'], '/v1/ships')
  t.equal(ok.body, 'ok')
  const denied = await request(c, { ':path': '/v2/ships', ':method': 'GET' })
  t.equal(denied.headers[':status'], 403, 'a path no rule allows: 403 from the proxy')
  t.equal(denied.body, 'Access denied\n')
  const put = await request(c, { ':path': '/v1/ships', ':method': 'PUT' }, Buffer.from('x'))
  t.equal(put.headers[':status'], 403, 'a method no rule allows')
  const normalized = await request(c, { ':path': '/v2/../v1/./ships' })
  t.equal(normalized.headers['x-seen-path'], '/v1/ships', 'the path is matched and forwarded normalized')
  const ambiguous = await request(c, { ':path': '/v1/a%2fb' })
  t.equal(ambiguous.headers[':status'], 400, 'an ambiguous path is refused')
  t.equal(s.upstream.streams, 2, 'only the allowed streams reached the server')
  const lines = s.logs.filter((l) => l.httpVersion === '2' && typeof l.verdict === 'string')
  t.same(
    lines.map((l) => [l.verdict, l.method, l.path, l.target, l.status]),
    [
      ['allowed', 'GET', '/v1/ships', undefined, 200],
      ['denied', 'GET', '/v2/ships', undefined, 403],
      ['denied', 'PUT', '/v1/ships', undefined, 403],
      ['allowed', 'GET', '/v1/ships', '/v2/../v1/./ships', 200],
      ['invalid', undefined, '/v1/a%2fb', undefined, 400],
    ],
    'one line a stream, in order: the path judged, and the target as sent where it differs',
  )
  t.match(lines[1], {
    reason: /no http rule matched on ingress TCP\/80 \(policies: CiliumNetworkPolicy\/default\/deathstar-h2\)/,
    host: `127.0.0.1:${s.port}`,
  })
})

t.test(
  'h2: curl (--http2-prior-knowledge) and nghttp pass through unchanged, bodies and denials included',
  async (t) => {
    const s = await setup(t)
    const run = promisify(execFile)
    const curl = await run(
      'curl',
      [
        '-s',
        '--http2-prior-knowledge',
        '-o',
        '-',
        '-w',
        ' %{http_code} %{http_version}',
        '-H',
        'x-test: 1',
        `${s.url}/v1/curl`,
      ],
      { timeout: 10_000 },
    )
    t.equal(curl.stdout, 'ok 200 2', 'curl: the answer, over HTTP/2')
    const denied = await run(
      'curl',
      ['-s', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_code}', `${s.url}/v2/curl`],
      { timeout: 10_000 },
    )
    t.equal(denied.stdout, '403', 'curl: a denial')
    const upload = await run(
      'curl',
      [
        '-s',
        '--http2-prior-knowledge',
        '--data-binary',
        'x'.repeat(100_000),
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        `${s.url}/v1/upload`,
      ],
      { timeout: 10_000 },
    )
    t.equal(upload.stdout, '200', 'curl: a POST with a body')
    const nghttp = await run('nghttp', ['-n', '-s', `${s.url}/v1/a`, `${s.url}/v1/b`, `${s.url}/v1/c`], {
      timeout: 10_000,
    })
    t.equal(nghttp.stdout.match(/responseEnd/g)?.length, 3, 'nghttp: three streams on one connection complete')
    const lines = s.logs
      .filter((l) => l.httpVersion === '2' && typeof l.verdict === 'string')
      .map((l) => [l.verdict, l.path, l.status])
    t.same(lines.slice(0, 3), [
      ['allowed', '/v1/curl', 200],
      ['denied', '/v2/curl', 403],
      ['allowed', '/v1/upload', 200],
    ])
    t.equal(lines.length, 6, 'one flow line a stream')
  },
)

t.test('h2: a malformed :authority, or one Host contradicts, is refused with 400 and never forwarded', async (t) => {
  const s = await setup(t)
  const c = http2.connect(s.url)
  t.teardown(() => c.close())
  const spaced = await request(c, { ':path': '/v1/ships', ':authority': 'a.example, b.example' })
  t.equal(
    spaced.rstCode,
    http2.constants.NGHTTP2_PROTOCOL_ERROR,
    'a space in :authority: the stream is reset by nghttp2 itself',
  )
  for (const [headers, why] of [
    [{ ':authority': 'a.example,b.example' }, /malformed Host/],
    [{ ':authority': 'user@deathstar' }, /malformed Host/],
    [{ ':authority': 'deathstar', host: 'admin.internal' }, /:authority and Host differ/],
  ] as const) {
    const a = await request(c, { ':path': '/v1/ships', ...headers })
    // Newer nghttp2 (Node 24 on) resets some of these itself, before the proxy sees them.
    if (a.rstCode === http2.constants.NGHTTP2_PROTOCOL_ERROR) t.pass(`${JSON.stringify(headers)}: reset by nghttp2`)
    else {
      t.equal(a.headers[':status'], 400, JSON.stringify(headers))
      t.match(a.body, why)
    }
  }
  t.equal(s.upstream.streams, 0, 'none reached the server')
  t.equal(
    (await request(c, { ':path': '/v1/ships', ':authority': 'Deathstar:80', host: 'deathstar:80' })).headers[':status'],
    200,
    'the same authority twice, in any case, passes',
  )
})

t.test('h2: request and response trailers cross; bodies are streamed', async (t) => {
  const s = await setup(t)
  s.upstream.next = (st) => {
    let n = 0
    st.on('data', (d: Buffer) => (n += d.length))
    st.on('trailers', (tr) => {
      st.respond({ ':status': 200 }, { waitForTrailers: true })
      st.on('wantTrailers', () => st.sendTrailers({ 'x-got': `${n} ${String(tr['x-checksum'])}` }))
      st.end(Buffer.alloc(1024 * 1024, 1))
    })
  }
  const c = http2.connect(s.url)
  t.teardown(() => c.close())
  const a = await new Promise<Answer>((resolve) => {
    const req = c.request({ ':method': 'POST', ':path': '/v1/upload' }, { waitForTrailers: true })
    const ans: Answer = { headers: {}, body: '', trailers: null, rstCode: undefined }
    let bytes = 0
    req.on('response', (h) => (ans.headers = h))
    req.on('data', (d: Buffer) => (bytes += d.length))
    req.on('trailers', (tr) => (ans.trailers = tr))
    req.on('wantTrailers', () => req.sendTrailers({ 'x-checksum': 'abc' }))
    req.on('close', () => {
      ans.body = String(bytes)
      resolve(ans)
    })
    req.end(Buffer.alloc(3 * 1024 * 1024, 2))
  })
  t.equal(a.headers[':status'], 200)
  t.equal(a.body, String(1024 * 1024), 'a 1 MB response body')
  t.equal(
    a.trailers?.['x-got'],
    `${3 * 1024 * 1024} abc`,
    'the server got 3 MB and the request trailer; its trailer came back',
  )
})

t.test('h2: a reset from the server reaches the client, and a client reset reaches the server', async (t) => {
  const s = await setup(t)
  s.upstream.next = (st) => {
    st.respond({ ':status': 200 })
    st.write('partial')
    setTimeout(() => st.destroy(new Error('cut')), 50) // RST_STREAM INTERNAL_ERROR, no END_STREAM
  }
  const c = http2.connect(s.url)
  t.teardown(() => c.close())
  const a = await request(c, { ':path': '/v1/cut' })
  t.equal(a.body, 'partial')
  t.equal(a.rstCode, constants.NGHTTP2_INTERNAL_ERROR, "the server's RST_STREAM code arrives at the client")
  const serverSaw = new Promise<number | undefined>((resolve) => {
    s.upstream.next = (st) => st.on('close', () => resolve(st.rstCode))
  })
  const req = c.request({ ':path': '/v1/hang' })
  req.on('error', () => undefined)
  setTimeout(() => req.close(constants.NGHTTP2_CANCEL), 150)
  t.equal(await serverSaw, constants.NGHTTP2_CANCEL, "the client's CANCEL reaches the server's stream")
})

t.test("h2: the server's GOAWAY reaches the client; the stream in flight completes", async (t) => {
  const s = await setup(t)
  s.upstream.next = (st) => {
    st.session!.goaway(constants.NGHTTP2_NO_ERROR, st.id)
    st.respond({ ':status': 200 })
    st.end('last')
  }
  const c = http2.connect(s.url)
  t.teardown(() => c.close())
  const goaway = new Promise<number>((r) => c.once('goaway', (code: number) => r(code)))
  const a = await request(c, { ':path': '/v1/last' })
  t.equal(a.body, 'last', 'the stream the server took finishes')
  t.equal(await goaway, constants.NGHTTP2_NO_ERROR, 'the client is told the connection is going away')
  await stillServes(t, s.url)
})

t.test(
  'h2: rapid reset (HEADERS then RST_STREAM, over and over) ends the connection with ENHANCE_YOUR_CALM',
  async (t) => {
    const s = await setup(t)
    const raw = new RawH2(s.port)
    t.teardown(() => raw.close())
    for (let batch = 0; batch < 10 && !raw.closed; batch++) {
      const frames: Buffer[] = []
      for (let i = 0; i < 100; i++) {
        const id = 1 + 2 * (batch * 100 + i)
        frames.push(
          frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, requestBlock('/v1/x')),
          rstStream(id, constants.NGHTTP2_CANCEL),
        )
      }
      raw.write(Buffer.concat(frames))
      await new Promise((r) => setTimeout(r, 20))
    }
    t.ok(await raw.until(() => raw.closed), 'the proxy closed the connection')
    t.equal(raw.goawayCode(), constants.NGHTTP2_ENHANCE_YOUR_CALM, 'with GOAWAY ENHANCE_YOUR_CALM')
    t.ok(
      s.logs.some((l) => l.msg === 'http2: rapid reset, connection closed'),
      'and said why',
    )
    t.ok(s.upstream.streams <= 200, `the server saw ${s.upstream.streams} of up to 1000 streams`)
    await stillServes(t, s.url)
  },
)

t.test('h2: a CONTINUATION flood ends the connection without the header block growing', async (t) => {
  const s = await setup(t)
  const raw = new RawH2(s.port)
  t.teardown(() => raw.close())
  raw.write(frame(FRAME.HEADERS, 0, 1, requestBlock('/v1/x')))
  for (let i = 0; i < 2000 && !raw.closed; i++) raw.write(frame(FRAME.CONTINUATION, 0, 1, literal(`x-f${i}`, 'y')))
  t.ok(await raw.until(() => raw.closed), 'the connection is closed')
  t.not(raw.goawayCode(), undefined, `with a GOAWAY (code ${raw.goawayCode()})`)
  t.equal(s.upstream.streams, 0, 'nothing reached the server')
  await stillServes(t, s.url)
})

t.test('h2: an oversized header block is refused; the connection survives it', async (t) => {
  const s = await setup(t)
  const raw = new RawH2(s.port)
  t.teardown(() => raw.close())
  // 3 x 12 KiB of headers in frames the size limit allows, beyond the 16 KiB header list limit.
  const big = (i: number) => literal(`x-big-${i}`, 'b'.repeat(12 * 1024))
  raw.write(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, Buffer.concat([requestBlock('/v1/x'), big(0)])))
  raw.write(frame(FRAME.CONTINUATION, 0, 1, big(1)))
  raw.write(frame(FRAME.CONTINUATION, FLAG.END_HEADERS, 1, big(2)))
  raw.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 3, requestBlock('/v1/after')))
  t.ok(
    await raw.until(() => raw.frames.some((f) => f.streamId === 3 && f.type === FRAME.HEADERS) || raw.closed),
    'stream 3 answered (or the connection ended)',
  )
  const answers = raw.frames.filter((f) => f.type === FRAME.HEADERS)
  t.same([...new Set(answers.map((f) => f.streamId))], [1, 3], 'both streams answered, the connection kept')
  t.ok(answers[0]!.payload.includes(Buffer.from('431')), 'stream 1 with 431')
  t.equal(s.upstream.streams, 1, 'the oversized request never reached the server')
  t.ok(await raw.until(() => s.logs.some((l) => l.verdict === 'invalid')))
  t.match(
    s.logs.find((l) => l.verdict === 'invalid'),
    { reason: 'header list above 16384 bytes', status: 431 },
  )
  await stillServes(t, s.url)
})

t.test('h2: a frame above the maximum size is a FRAME_SIZE_ERROR, and the dead connection is cut', async (t) => {
  // After that GOAWAY nghttp2 reads nothing more; the idle check's unanswered PING ends it.
  const s = await setup(t, { idleTimeoutMs: 200 })
  const raw = new RawH2(s.port)
  t.teardown(() => raw.close())
  raw.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, requestBlock('/v1/upload', 'POST')))
  raw.write(frame(FRAME.DATA, 0, 1, Buffer.alloc(20_000)))
  t.ok(await raw.until(() => raw.goawayCode() !== undefined))
  t.equal(raw.goawayCode(), constants.NGHTTP2_FRAME_SIZE_ERROR)
  t.ok(await raw.until(() => raw.closed, 8000), 'closed after the idle time and the PING wait')
  t.ok(await raw.until(() => s.proxy.connectionCount === 0), 'and forgotten')
  await stillServes(t, s.url)
})

t.test('h2: streams beyond the concurrency limit are refused, the rest proceed', async (t) => {
  const s = await setup(t)
  s.upstream.next = null
  const raw = new RawH2(s.port)
  t.teardown(() => raw.close())
  // 110 uploads left open (no END_STREAM): the limit is 100 at a time.
  const frames: Buffer[] = []
  for (let i = 0; i < 110; i++)
    frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1 + 2 * i, requestBlock('/v1/upload', 'POST')))
  raw.write(Buffer.concat(frames))
  t.ok(await raw.until(() => raw.resets().length >= 10), 'ten streams reset')
  t.ok(
    raw.resets().every((r) => r.code === constants.NGHTTP2_REFUSED_STREAM && r.streamId > 199),
    'REFUSED_STREAM, for the streams past the first 100',
  )
  t.notOk(raw.closed, 'the connection stays up')
})

t.test(
  'h2: a client that keeps opening streams past the limit is cut off like a rapid reset (ENHANCE_YOUR_CALM)',
  async (t) => {
    const s = await setup(t)
    const raw = new RawH2(s.port)
    t.teardown(() => raw.close())
    const frames: Buffer[] = []
    for (let i = 0; i < 300; i++)
      frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1 + 2 * i, requestBlock('/v1/upload', 'POST')))
    raw.write(Buffer.concat(frames))
    t.ok(await raw.until(() => raw.closed), 'the proxy closed the connection')
    t.equal(raw.goawayCode(), constants.NGHTTP2_ENHANCE_YOUR_CALM, 'with GOAWAY ENHANCE_YOUR_CALM')
    t.ok(raw.resets().length > 0 && raw.resets().length <= 101, `after ${raw.resets().length} refusals`)
    await stillServes(t, s.url)
  },
)

t.test('h2: garbage after the preface is a connection error, not a crash', async (t) => {
  const s = await setup(t, { idleTimeoutMs: 200 })
  const raw = new RawH2(s.port)
  t.teardown(() => raw.close())
  raw.write(Buffer.from('this is not an HTTP/2 frame at all, just bytes'.repeat(10)))
  t.ok(await raw.until(() => raw.goawayCode() !== undefined))
  t.not(raw.goawayCode(), constants.NGHTTP2_NO_ERROR, `GOAWAY with an error code (${raw.goawayCode()})`)
  t.ok(await raw.until(() => raw.closed, 2000), 'closed once idle')
  await stillServes(t, s.url)
})

t.test(
  'h2: past its stream budget a source gets REFUSED_STREAM (retryable); its open streams go on, and the budget comes back',
  async (t) => {
    const overload = testOverload({ streamsPerSource: 2 })
    const s = await setup(t, { overload })
    // The upstream holds each stream open until told.
    const held: Array<() => void> = []
    s.upstream.next = null
    const hold = (st: ServerHttp2Stream): void => {
      held.push(() => {
        st.respond({ ':status': 200 })
        st.end('held')
      })
    }
    const c = http2.connect(s.url)
    t.teardown(() => c.close())
    s.upstream.next = hold
    const first = request(c, { ':path': '/v1/a' })
    await waitUntil(() => held.length === 1, 100, 20)
    s.upstream.next = hold
    const second = request(c, { ':path': '/v1/b' })
    await waitUntil(() => held.length === 2, 100, 20)
    const third = await request(c, { ':path': '/v1/c' })
    t.equal(third.rstCode, constants.NGHTTP2_REFUSED_STREAM, 'the third stream is refused')
    t.equal(s.upstream.streams, 2, 'and never reached the server')
    t.same(overload.budget.refusals().streams, { source: 1, identity: 0 })
    t.match(overload.lines, [{ overload: 'streams per source', source: '198.18.1.10', limit: 2 }])
    for (const release of held) release()
    t.same([(await first).body, (await second).body], ['held', 'held'], 'the streams it holds complete')
    t.ok(await waitUntil(() => overload.budget.streams === 0, 100, 20), 'their budget is given back')
    t.equal((await request(c, { ':path': '/v1/d' })).headers[':status'], 200, 'the next stream is served')
    t.notOk(
      s.logs.some((l) => l.path === '/v1/c'),
      'a refused stream is no request: no flow line',
    )
  },
)
