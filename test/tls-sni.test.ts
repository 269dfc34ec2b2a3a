// serverNames without interception, on loopback: the proxy reads the ClientHello, lets the named
// servers through unchanged (the client completes its handshake with the real server) and ends
// the others with a TLS alert before any application data. The servers' certificates come from a
// CA made by certs/local-ca.ts for the test.

import { mkdtempSync, rmSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { connect as netConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSecureContext, createServer as createTlsServer, connect as tlsConnect } from 'node:tls'
import t, { type Test } from 'tap'
import { initCa, issueLeaf, type LocalCa } from '../certs/local-ca.js'
import { type LoopbackProxy, startLoopbackProxy } from './fixtures/loopback-proxy.js'

const POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: deathstar-tls }
spec:
  endpointSelector: { matchLabels: { class: deathstar } }
  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "443", protocol: TCP } ]
      serverNames: [ api.empire, "*.deathstar.empire" ]
`

/** A TLS server that greets with the name the client asked for, with a leaf per name from `ca`. */
async function startTlsServer(t: Test, ca: LocalCa): Promise<number> {
  const server = createTlsServer({
    SNICallback: (name, cb) => {
      issueLeaf(ca, name).then(
        (leaf) => cb(null, createSecureContext({ cert: leaf.certPem, key: leaf.keyPem })),
        (e: Error) => cb(e),
      )
    },
  })
  server.on('secureConnection', (s) => s.end(`hello ${(s as unknown as { servername: string }).servername}\n`))
  server.on('tlsClientError', () => undefined)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return (server.address() as AddressInfo).port
}

async function setup(t: Test): Promise<LoopbackProxy & { ca: LocalCa }> {
  const dir = mkdtempSync(join(tmpdir(), 'l7-ca-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const ca = await initCa(dir, { commonName: 'test CA' })
  const port = await startTlsServer(t, ca)
  const p = await startLoopbackProxy(t, {
    source: '198.18.1.10',
    dest: { address: '198.18.2.10', port: 443 },
    originPort: port,
    policy: POLICY,
  })
  return { ...p, ca }
}

/** A TLS client through the proxy: what the server said, or the error that ended it. */
function tlsCall(
  s: LoopbackProxy & { ca: LocalCa },
  servername?: string,
): Promise<{ body: string; error: string | null }> {
  return new Promise((resolve) => {
    const c = tlsConnect({
      port: s.port,
      host: '127.0.0.1',
      ca: s.ca.certPem,
      ...(servername ? { servername } : { checkServerIdentity: () => undefined }),
    })
    let body = ''
    c.on('data', (d: Buffer) => (body += d.toString()))
    c.on('error', (e: NodeJS.ErrnoException) => resolve({ body, error: e.code ?? e.message }))
    c.on('end', () => resolve({ body, error: null }))
  })
}

async function waitFor(what: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 10))
}

t.test('serverNames: named servers are spliced through, others get an alert', async (t) => {
  const s = await setup(t)
  t.same(
    await tlsCall(s, 'api.empire'),
    { body: 'hello api.empire\n', error: null },
    "an allowed name: the real server's handshake and answer",
  )
  t.same(
    await tlsCall(s, 'gunner.deathstar.empire'),
    { body: 'hello gunner.deathstar.empire\n', error: null },
    'a name under the wildcard',
  )
  t.same(
    await tlsCall(s, 'API.Empire'),
    { body: 'hello API.Empire\n', error: null },
    'names compare case-insensitively (and the hello passes unchanged)',
  )
  const denied = await tlsCall(s, 'hoth.alliance')
  t.same(denied, { body: '', error: 'ERR_SSL_TLSV1_ALERT_ACCESS_DENIED' }, 'another name: access_denied alert, no data')
  t.same(
    await tlsCall(s, 'deathstar.empire'),
    { body: '', error: 'ERR_SSL_TLSV1_ALERT_ACCESS_DENIED' },
    'the wildcard does not match the bare domain',
  )
  t.same(await tlsCall(s), { body: '', error: 'ERR_SSL_TLSV1_ALERT_ACCESS_DENIED' }, 'no server name at all: denied')
  await waitFor(() => s.logs.filter((l) => l.msg === 'tls allowed' || l.msg === 'tls denied').length === 6)
  t.match(
    s.logs.find((l) => l.msg === 'tls allowed'),
    {
      verdict: 'allowed',
      serverName: 'api.empire',
      rules: ['CiliumNetworkPolicy/default/deathstar-tls'],
      destination: '198.18.2.10:443',
    },
  )
  t.match(
    s.logs.find((l) => l.serverName === 'hoth.alliance'),
    {
      msg: 'tls denied',
      reason:
        /no serverNames entry matched 'hoth.alliance' on ingress TCP\/443 \(policies: CiliumNetworkPolicy\/default\/deathstar-tls\)/,
    },
  )
  t.match(
    s.logs.find((l) => l.msg === 'tls denied' && l.serverName === null),
    { reason: /the ClientHello names no server/ },
  )
  t.equal(s.proxy.stats.allowed, 3)
  t.equal(s.proxy.stats.denied, 3)
})

t.test('serverNames: plain HTTP and malformed hellos on the port are refused', async (t) => {
  const s = await setup(t)
  const plain = await fetch(`http://127.0.0.1:${s.port}/`).then((r) => r.status)
  t.equal(plain, 403, 'plain HTTP where serverNames apply: 403, never passed through')
  await waitFor(() => s.logs.some((l) => l.msg === 'http denied'))
  t.match(
    s.logs.find((l) => l.msg === 'http denied'),
    { reason: /tls rules apply on this port, the connection is http/ },
  )
  const garbage = await new Promise<Buffer>((resolve) => {
    const c = netConnect({ port: s.port, host: '127.0.0.1' })
    const got: Buffer[] = []
    c.on('data', (d: Buffer) => got.push(d))
    c.on('close', () => resolve(Buffer.concat(got)))
    c.on('error', () => undefined)
    c.write(Buffer.from([22, 3, 1, 0, 8, 2, 0, 0, 4, 3, 3, 0, 0])) // a ServerHello where a ClientHello belongs
  })
  t.same([...garbage], [21, 3, 3, 0, 2, 2, 50], 'a decode_error alert, then the end')
  await waitFor(() => s.logs.some((l) => l.msg === 'tls: connection refused'))
  t.match(
    s.logs.find((l) => l.msg === 'tls: connection refused'),
    { verdict: 'invalid', reason: /malformed ClientHello: handshake message type 2/ },
  )
})
