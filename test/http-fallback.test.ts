// Without the Node internals of the HTTP fast path (a Node release that changed them, or
// --permission, where process.binding throws), the proxy serves on plain net.Sockets: it says so
// once, and still enforces and forwards (HTTP/1.1 keep-alive, HTTP/2, the connection budget).
// This file forces it with L7PROXY_FAST_PATH=off, set before the proxy's modules load; the probe
// under --permission runs in a child process.

import { spawnSync } from 'node:child_process'
import http2 from 'node:http2'
import { type AddressInfo, connect } from 'node:net'
import { pathToFileURL } from 'node:url'
import t, { type Test } from 'tap'
import { distPath } from '../lib/project-root.js'

process.env.L7PROXY_FAST_PATH = 'off'
const { fastPath } = await import('../proxy/http/native-stream.js')
const { startLoopbackProxy, rawExchange } = await import('./fixtures/loopback-proxy.js')
const { startHttpServer } = await import('../lab/servers/http-server.js')
const { testOverload } = await import('./fixtures/overload.js')
const { deathstarHttp } = await import('./fixtures/policy-text.js')

const POLICY = deathstarHttp('deathstar-l7', [
  '{ method: POST, path: "/v1/request-landing" }',
  '{ method: GET, path: "/v1/" }',
])
const H = 'Host: deathstar\r\n'

async function setup(t: Test, extra = {}) {
  const upstream = await startHttpServer({ name: 'deathstar', port: 0, host: '127.0.0.1' })
  t.teardown(() => new Promise<void>((r) => upstream.close(() => r())))
  return startLoopbackProxy(t, {
    source: '198.18.1.10',
    dest: { address: '198.18.2.10', port: 80 },
    originPort: (upstream.address() as AddressInfo).port,
    policy: POLICY,
    extra,
  })
}

t.test('the probe tells what is missing, and the proxy says it serves on net.Socket', async (t) => {
  t.same(fastPath, { available: false, missing: 'nothing (L7PROXY_FAST_PATH=off)' })
  const p = await setup(t)
  t.match(p.logs, [{ level: 40, missing: 'nothing (L7PROXY_FAST_PATH=off)', msg: /serving on net\.Socket/ }])
})

t.test(
  'HTTP/1.1 on net.Socket: allowed requests forwarded, denied ones 403, on one kept-alive connection',
  async (t) => {
    const p = await setup(t)
    const reply = await rawExchange(
      p.port,
      `POST /v1/request-landing HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\nPUT /v1/exhaust-port HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\nGET /v1/ HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
      3000,
    )
    t.match(
      reply,
      /^HTTP\/1\.1 200 [\s\S]*Ship landed\n[\s\S]*HTTP\/1\.1 403 [\s\S]*Access denied\n[\s\S]*HTTP\/1\.1 200 /,
      'allowed, denied, allowed, in order',
    )
    t.match(
      p.logs.filter((l) => l.verdict !== undefined),
      [
        { verdict: 'allowed', method: 'POST', path: '/v1/request-landing', status: 200 },
        { verdict: 'denied', method: 'PUT', path: '/v1/exhaust-port', status: 403 },
        { verdict: 'allowed', method: 'GET', path: '/v1/', status: 200 },
      ],
    )
  },
)

t.test('HTTP/2 on net.Socket: a stream allowed, one denied', async (t) => {
  const upstream = http2.createServer()
  upstream.on('stream', (s) => s.respond({ ':status': 200 }, { endStream: true }))
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => upstream.close(() => r())))
  const p = await startLoopbackProxy(t, {
    source: '198.18.1.10',
    dest: { address: '198.18.2.10', port: 80 },
    originPort: (upstream.address() as AddressInfo).port,
    policy: POLICY,
  })
  const c = http2.connect(`http://127.0.0.1:${p.port}`)
  t.teardown(() => c.close())
  const status = (path: string, method: string) =>
    new Promise<unknown>((resolve) => {
      const req = c.request({ ':path': path, ':method': method })
      req.on('response', (h) => resolve(h[':status']))
      req.on('error', () => resolve('error'))
      req.resume()
    })
  t.equal(await status('/v1/request-landing', 'POST'), 200)
  t.equal(await status('/v1/exhaust-port', 'PUT'), 403)
})

t.test('the connection budget holds on net.Socket too: the excess is reset', async (t) => {
  const overload = testOverload({ connectionsPerSource: 1 })
  const p = await setup(t, { overload })
  const held = connect({ port: p.port, host: '127.0.0.1' })
  t.teardown(() => held.destroy())
  await new Promise<void>((r) => held.once('connect', () => r()))
  for (let i = 0; i < 50 && overload.budget.connections < 1; i++) await new Promise((r) => setTimeout(r, 20))
  const second = connect({ port: p.port, host: '127.0.0.1' })
  const error = await new Promise<string | null>((resolve) => {
    second.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
    second.once('close', () => resolve(null))
    second.write(`GET /v1/ HTTP/1.1\r\n${H}\r\n`)
  })
  t.equal(error, 'ECONNRESET')
  t.equal(overload.budget.refusals().connections.source, 1)
})

t.test(
  'under --permission process.binding is refused: the probe finds the fast path missing instead of failing to load',
  async (t) => {
    const flag = Number(process.versions.node.split('.')[0]) >= 22 ? '--permission' : '--experimental-permission'
    const module = pathToFileURL(distPath('proxy/http/native-stream.js')).href
    // Without tap's NODE_OPTIONS (added to every child it sees spawned: its hooks call process.binding), nor this file's switch.
    const argv = [
      '-u',
      'NODE_OPTIONS',
      '-u',
      'L7PROXY_FAST_PATH',
      process.execPath,
      flag,
      '--allow-fs-read=*',
      '--input-type=module',
      '-e',
      `const m = await import(${JSON.stringify(module)}); console.log(JSON.stringify(m.fastPath))`,
    ]
    const r = spawnSync('env', argv, { encoding: 'utf8' })
    t.equal(r.status, 0, r.stderr)
    t.match(JSON.parse(r.stdout) as unknown, { available: false, missing: /^process\.binding/ })
  },
)
