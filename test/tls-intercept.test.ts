// TLS interception on loopback: the proxy terminates the client's TLS with a leaf from its local
// CA, applies the HTTP rules (HTTP/1.1 and HTTP/2, chosen by ALPN), and opens TLS to the real
// server, which it verifies against the policy's trustedCA; an unverifiable server is a 502.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import http2 from 'node:http2'
import { request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSecureContext } from 'node:tls'
import t, { type Test } from 'tap'
import { initCa, issueLeaf, type LocalCa } from '../certs/local-ca.js'
import { type LoopbackProxy, startLoopbackProxy } from './fixtures/loopback-proxy.js'

function policy(trustedCA: string | null): string {
  return `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: deathstar-https }
spec:
  endpointSelector: { matchLabels: { class: deathstar } }
  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "443", protocol: TCP } ]
      terminatingTLS: {}
      originatingTLS: ${trustedCA ? `{ trustedCA: ${trustedCA} }` : '{}'}
      rules:
        http:
        - { method: GET, path: "/v1/.*" }
`
}

interface Setup extends LoopbackProxy {
  /** The proxy's CA: what clients trust. */
  proxyCa: LocalCa
}

/** An HTTPS server (h2 and http/1.1) with leaves from `ca`, answering with what it saw. */
async function startHttpsServer(t: Test, ca: LocalCa): Promise<number> {
  const server = http2.createSecureServer({
    allowHTTP1: true,
    SNICallback: (name, cb) =>
      void issueLeaf(ca, name).then((l) => cb(null, createSecureContext({ cert: l.certPem, key: l.keyPem })), cb),
  })
  server.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    res.setHeader('content-type', 'application/json')
    res.end(
      JSON.stringify({
        method: req.method,
        path: req.url,
        httpVersion: req.httpVersion,
        servername: (req.socket as unknown as { servername?: string }).servername ?? null,
      }),
    )
  })
  server.on('sessionError', () => undefined)
  server.on('tlsClientError', () => undefined)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return (server.address() as AddressInfo).port
}

async function setup(t: Test, trustUpstream: boolean): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'l7-intercept-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const proxyCa = await initCa(join(dir, 'proxy-ca'), { commonName: 'proxy CA' })
  const upstreamCa = await initCa(join(dir, 'upstream-ca'), { commonName: 'upstream CA' })
  const bundle = join(dir, 'upstream-ca.pem')
  writeFileSync(bundle, upstreamCa.certPem)
  const port = await startHttpsServer(t, upstreamCa)
  const p = await startLoopbackProxy(t, {
    source: '198.18.1.10',
    dest: { address: '198.18.2.10', port: 443 },
    originPort: port,
    policy: policy(trustUpstream ? bundle : null),
    extra: { caDir: join(dir, 'proxy-ca') },
  })
  return { ...p, proxyCa }
}

function https1(s: Setup, method: string, path: string): Promise<{ status: number; body: string; issuer: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: s.port,
        method,
        path,
        servername: 'api.empire',
        ca: s.proxyCa.certPem,
        headers: { host: 'api.empire' },
        agent: false,
      },
      (res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d.toString()))
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            body,
            issuer: (res.socket as unknown as { getPeerCertificate(): { issuer: { CN: string } } }).getPeerCertificate()
              .issuer.CN,
          }),
        )
      },
    )
    req.on('error', reject)
    req.end()
  })
}

async function waitFor(what: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 10))
}

t.test('intercepted HTTPS: an allowed GET reaches the server over TLS, a PUT gets 403 over TLS', async (t) => {
  const s = await setup(t, true)
  const ok = await https1(s, 'GET', '/v1/ships')
  t.equal(ok.status, 200)
  t.equal(ok.issuer, 'proxy CA', "the client saw a leaf from the proxy's CA, and trusted it")
  t.same(
    JSON.parse(ok.body),
    { method: 'GET', path: '/v1/ships', httpVersion: '1.1', servername: 'api.empire' },
    'the server got it over TLS, for the name the client asked',
  )
  const put = await https1(s, 'PUT', '/v1/ships')
  t.same([put.status, put.body], [403, 'Access denied\n'], 'a denied PUT: 403 inside TLS')
  await waitFor(() => s.logs.filter((l) => l.msg === 'http allowed' || l.msg === 'http denied').length === 2)
  t.match(
    s.logs.find((l) => l.msg === 'http allowed'),
    { method: 'GET', path: '/v1/ships', host: 'api.empire', rules: ['CiliumNetworkPolicy/default/deathstar-https'] },
  )
})

t.test('intercepted HTTPS: HTTP/2 over TLS (ALPN h2) is judged per stream', async (t) => {
  const s = await setup(t, true)
  const c = http2.connect(`https://127.0.0.1:${s.port}`, { ca: s.proxyCa.certPem, servername: 'api.empire' })
  t.teardown(() => c.close())
  const get = (method: string, path: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const r = c.request({ ':method': method, ':path': path, ':authority': 'api.empire' })
      let status = 0
      let body = ''
      r.on('response', (h) => (status = Number(h[':status'])))
      r.on('data', (d: Buffer) => (body += d.toString()))
      r.on('end', () => resolve({ status, body }))
      r.on('error', reject)
      r.end()
    })
  const ok = await get('GET', '/v1/h2')
  t.equal(ok.status, 200)
  t.same(
    JSON.parse(ok.body),
    { method: 'GET', path: '/v1/h2', httpVersion: '2.0', servername: 'api.empire' },
    'the server saw HTTP/2 over TLS too',
  )
  t.equal((await get('DELETE', '/v1/h2')).status, 403, 'a denied stream: 403')
  t.equal(c.alpnProtocol, 'h2')
})

t.test(
  'intercepted HTTPS: a server the trust store cannot verify gets the client a 502, never plain text',
  async (t) => {
    const s = await setup(t, false)
    const r = await https1(s, 'GET', '/v1/ships')
    t.same([r.status, r.body], [502, 'Upstream unavailable\n'])
    await waitFor(() => s.logs.some((l) => l.msg === 'http: upstream failed (502)'))
    t.match(
      s.logs.find((l) => l.msg === 'http: upstream failed (502)'),
      { error: /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED/ },
      'logged with the verification error',
    )
  },
)

t.test('interception without a CA configured fails closed with an alert', async (t) => {
  const s = await setup(t, true)
  const noCa = await startLoopbackProxy(t, {
    source: '198.18.1.10',
    dest: { address: '198.18.2.10', port: 443 },
    originPort: 1,
    policy: policy(null),
  })
  const err = await new Promise<string>((resolve) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: noCa.port,
        path: '/v1/x',
        servername: 'api.empire',
        ca: s.proxyCa.certPem,
        agent: false,
      },
      () => resolve('answered'),
    )
    req.on('error', (e: NodeJS.ErrnoException) => resolve(`${e.code} ${e.message}`))
    req.end()
  })
  t.match(err, /alert internal error/i, `the handshake ends with an internal_error alert (${err})`)
  await waitFor(() => noCa.logs.some((l) => l.msg === 'tls: connection refused'))
  t.match(
    noCa.logs.find((l) => l.msg === 'tls: connection refused'),
    { reason: /cannot intercept: TLS interception needs the local CA/ },
  )
})
