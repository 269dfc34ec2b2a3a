// The HTTP/1.1 proxy against plain listeners on loopback: flows are injected as if the datapath
// had steered them (tiefighter or xwing to deathstar:80), and forwarded to a lab HTTP server.

import { createHash } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { connect } from 'node:net'
import { Writable } from 'node:stream'
import pino from 'pino'
import t, { type Test } from 'tap'
import { Client } from 'undici'
import { labEndpoints } from '../lab/topology.js'
import { startHttpServer } from '../lab/servers/http-server.js'
import { PolicyEngine } from '../policy/engine.js'
import type { Flow } from '../proxy/http/flow-verdict.js'
import { HttpProxy } from '../proxy/http/http-proxy.js'

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

interface Setup {
  proxyUrl: string
  logs: Array<Record<string, unknown>>
  proxy: HttpProxy
}

async function setup(t: Test, source: string, upstreamPort?: number): Promise<Setup> {
  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  for (const ep of labEndpoints()) engine.upsertEndpoint(ep)
  engine.loadFile('sw.yaml', STAR_WARS)
  let port = upstreamPort
  if (port === undefined) {
    const upstream = await startHttpServer({ name: 'deathstar', port: 0, host: '127.0.0.1' })
    t.teardown(() => new Promise<void>((r) => upstream.close(() => r())))
    port = (upstream.address() as AddressInfo).port
  }
  const logs: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(JSON.parse(chunk.toString()) as Record<string, unknown>)
      cb()
    },
  })
  const proxy = new HttpProxy({
    engine,
    logger: pino({ base: null }, sink),
    // As if the datapath had steered `source` -> deathstar:80 here.
    flowOf: (socket): Flow => ({ sourceAddress: source, sourcePort: socket.remotePort!, destAddress: '198.18.2.10', destPort: 80 }),
    originOf: () => `http://127.0.0.1:${port}`,
    upstreamConnectTimeoutMs: 2000,
  })
  await proxy.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => proxy.close())
  return { proxyUrl: `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`, logs, proxy }
}

const TIEFIGHTER = '198.18.1.10'
const XWING = '198.18.1.20'

t.test('star-wars: allowed requests are forwarded, others get 403 from the proxy', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const land = await fetch(`${s.proxyUrl}/v1/request-landing`, { method: 'POST', body: '', headers: { host: 'deathstar' } })
  t.equal(land.status, 200)
  t.equal(await land.text(), 'Ship landed\n', "the server's own answer")
  t.equal(land.headers.get('x-lab-host'), 'deathstar')
  const exhaust = await fetch(`${s.proxyUrl}/v1/exhaust-port`, { method: 'PUT', body: 'boom' })
  t.equal(exhaust.status, 403)
  t.equal(await exhaust.text(), 'Access denied\n')
  const forced = await fetch(`${s.proxyUrl}/v1/exhaust-port`, { method: 'PUT', body: '', headers: { 'X-Has-Force': 'True' } })
  t.equal(forced.status, 503, 'with the header it reaches the server (which panics)')
  const denied = s.logs.find((l) => l.verdict === 'denied')!
  t.match(denied, { method: 'PUT', path: '/v1/exhaust-port', destination: '198.18.2.10:80', status: 403, reason: /ingress of endpoint 3: no http rule matched on ingress TCP\/80/ }, 'a denial is logged with its reason')
  t.match(s.logs.find((l) => l.verdict === 'allowed'), { rules: ['CiliumNetworkPolicy/default/deathstar-l7'], source: /^198\.18\.1\.10:\d+$/, status: 200 }, 'an allow names the rule')
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
  let connections = 0
  s.proxy.server.on('connection', () => connections++)
  const client = new Client(s.proxyUrl, { pipelining: 1 })
  t.teardown(() => client.close())
  const statuses: number[] = []
  for (const [method, path] of [['POST', '/v1/request-landing'], ['PUT', '/v1/exhaust-port'], ['POST', '/v1/request-landing']] as const) {
    const r = await client.request({ method, path, body: '' })
    statuses.push(r.statusCode)
    await r.body.text()
  }
  t.same(statuses, [200, 403, 200])
  t.equal(connections, 1, 'all three on one connection')
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

t.test('ambiguous framing is refused with 400 and never forwarded', async (t) => {
  const s = await setup(t, TIEFIGHTER)
  const port = Number(new URL(s.proxyUrl).port)
  const raw = 'POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\n\r\n'
  const reply = await new Promise<string>((resolve) => {
    const sock = connect(port, '127.0.0.1', () => sock.write(raw))
    let data = ''
    sock.on('data', (d) => (data += d.toString()))
    sock.on('close', () => resolve(data))
    setTimeout(() => sock.destroy(), 2000)
  })
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
