// Idle upstream connections are pooled per source address and origin: a client that opens a
// connection per request reuses one upstream connection, another pod never gets it, and a
// connection is only pooled whole (nothing owed, nothing half-sent, the server keeping it open).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { type AddressInfo, connect, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import type { Flow } from '../proxy/flow-verdict.js'
import type { SocketEnds } from '../proxy/http/http-proxy.js'
import { type LoopbackProxy, rawExchange, startLoopbackProxy } from './fixtures/loopback-proxy.js'

const OPEN_POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: open-l7 }
spec:
  endpointSelector: { matchLabels: { org: empire, class: deathstar } }
  ingress:
  - fromEndpoints: [ {} ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules: { http: [ { method: "GET|POST" } ] }
`
/** Which lab pod a loopback client address stands for. */
const SOURCES: Record<string, string> = { '127.0.0.2': '198.18.1.10', '127.0.0.3': '198.18.1.20' }

interface Upstream {
  server: Server
  /** TCP connections the server accepted. */
  connections: number
  /** Requests whose bodies arrived whole. */
  completed: number
}

async function upstream(t: Test, handler?: (req: IncomingMessage, res: ServerResponse) => void): Promise<Upstream> {
  const u: Upstream = { server: createServer(), connections: 0, completed: 0 }
  u.server.on('connection', () => u.connections++)
  u.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    req.on('end', () => {
      u.completed++
      if (handler) handler(req, res)
      else res.end('ok\n')
    })
  })
  await new Promise<void>((r) => u.server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => u.server.close(() => r())))
  return u
}

async function proxyTo(t: Test, u: Upstream): Promise<LoopbackProxy> {
  return startLoopbackProxy(t, {
    source: '198.18.1.10',
    dest: { address: '198.18.2.10', port: 80 },
    originPort: (u.server.address() as AddressInfo).port,
    policy: OPEN_POLICY,
    extra: {
      flowOf: (s: SocketEnds): Flow => ({
        sourceAddress: SOURCES[s.remoteAddress!]!,
        sourcePort: s.remotePort!,
        destAddress: '198.18.2.10',
        destPort: 80,
      }),
    },
  })
}

/** One request on a new connection from `from`, Connection: close; the whole answer once the proxy closes (bounded). */
function once(
  p: LoopbackProxy,
  from: string,
  raw = 'GET / HTTP/1.1\r\nHost: deathstar\r\nConnection: close\r\n\r\n',
): Promise<string> {
  return rawExchange(p.port, raw, 2000, from)
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Waits (bounded) until the proxy holds `n` idle upstream connections. */
async function idle(p: LoopbackProxy, n: number): Promise<number> {
  for (let i = 0; i < 100 && p.proxy.idleUpstreamCount !== n; i++) await sleep(10)
  return p.proxy.idleUpstreamCount
}

t.test('a connection per request from one pod reuses one upstream connection; another pod gets its own', async (t) => {
  const u = await upstream(t)
  const p = await proxyTo(t, u)
  for (let i = 0; i < 3; i++)
    t.match(
      await once(p, '127.0.0.2'),
      /^HTTP\/1\.1 200 [\s\S]*connection: close[\s\S]*ok\n$/i,
      `request ${i + 1}: answered, and the client told the connection ends`,
    )
  t.equal(u.connections, 1, 'three client connections, one upstream connection')
  t.equal(await idle(p, 1), 1, 'parked between clients')
  t.match(await once(p, '127.0.0.3'), /^HTTP\/1\.1 200/)
  t.equal(u.connections, 2, "the other pod does not get the first pod's connection")
  t.equal(await idle(p, 2), 2, 'each pod has its own idle connection')
})

t.test(
  'a pooled connection the server closed is not used; one past the keep-alive timeout the server gave is not either',
  async (t) => {
    const u = await upstream(t)
    u.server.keepAliveTimeout = 1000 // the server says `Keep-Alive: timeout=1`
    const p = await proxyTo(t, u)
    t.match(await once(p, '127.0.0.2'), /^HTTP\/1\.1 200/)
    t.equal(await idle(p, 1), 1)
    // The server ends its idle connections: the pool lets go of it, and the next request opens another.
    u.server.closeIdleConnections()
    t.equal(await idle(p, 0), 0, 'a pooled connection the server closed leaves the pool')
    t.match(await once(p, '127.0.0.2'), /^HTTP\/1\.1 200/, 'the next request is answered, with no 502')
    t.equal(u.connections, 2)
    await sleep(700) // past what the server allowed less the margin (500 ms), before it closes (1 s)
    t.match(await once(p, '127.0.0.2'), /^HTTP\/1\.1 200/)
    t.equal(u.connections, 3, 'a connection idle longer than the server keeps it is not reused')
  },
)

t.test(
  'only whole connections are pooled: not after a cut request body, nor after the server said close',
  async (t) => {
    const u = await upstream(t, (req, res) => {
      if (req.url === '/last') res.setHeader('connection', 'close')
      res.end('ok\n')
    })
    const p = await proxyTo(t, u)
    const cut = connect({ port: p.port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () =>
      cut.write('POST / HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 100\r\n\r\n0123456789'),
    )
    cut.on('error', () => undefined)
    for (let i = 0; i < 100 && u.connections === 0; i++) await sleep(10)
    cut.destroy()
    await sleep(50)
    t.match(await once(p, '127.0.0.2'), /^HTTP\/1\.1 200/)
    t.equal(u.connections, 2, 'the connection that carried part of a body was closed, not pooled')
    t.equal(u.completed, 1, 'and the cut request never completed at the server')
    t.match(
      await once(p, '127.0.0.2', 'GET /last HTTP/1.1\r\nHost: deathstar\r\nConnection: close\r\n\r\n'),
      /^HTTP\/1\.1 200/,
    )
    t.equal(await idle(p, 0), 0, 'a connection the server said it closes is not pooled')
    t.match(await once(p, '127.0.0.2'), /^HTTP\/1\.1 200/)
    t.equal(u.connections, 3)
  },
)

t.test('closing the proxy closes its idle upstream connections', async (t) => {
  const u = await upstream(t)
  const open = new Set<Socket>()
  u.server.on('connection', (s: Socket) => {
    open.add(s)
    s.on('close', () => open.delete(s))
  })
  const p = await proxyTo(t, u)
  t.match(await once(p, '127.0.0.2'), /^HTTP\/1\.1 200/)
  t.equal(await idle(p, 1), 1)
  t.equal(open.size, 1)
  await p.proxy.close()
  for (let i = 0; i < 100 && open.size > 0; i++) await sleep(10)
  t.equal(open.size, 0, 'the server sees the pooled connection end')
})
