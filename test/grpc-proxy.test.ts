// The HTTP proxy's HTTP/2 side on loopback with real @grpc/grpc-js clients and the lab's gRPC
// server: flows injected as if the datapath had steered tiefighter -> grpc:50051. Every call kind,
// metadata, trailers, large messages, deadlines, and gRPC-native denials.

import type { AddressInfo } from 'node:net'
import * as grpc from '@grpc/grpc-js'
import t, { type Test } from 'tap'
import { loadDeathstar } from '../lab/servers/deathstar-proto.js'
import { startGrpcServer } from '../lab/servers/grpc-server.js'
import { type LoopbackProxy, startLoopbackProxy } from './fixtures/loopback-proxy.js'

const GRPC_POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: grpc-l7 }
spec:
  endpointSelector: { matchLabels: { org: empire, class: grpc } }
  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "50051", protocol: TCP } ]
      rules:
        grpc:
        - { service: empire.Deathstar, method: RequestLanding }
        - { service: empire.Deathstar, method: ListShips }
        - { service: empire.Deathstar, method: UploadLogs }
        http:
        - { method: POST, path: "/empire.Deathstar/Chat" }
`

const TIEFIGHTER = '198.18.1.10'
const XWING = '198.18.1.20'
const MAX_MESSAGE = 64 * 1024 * 1024

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>

interface Reply {
  message: string
  peer: string
  payloadBytes: number
  metadata: Record<string, string>
  deadlineMs: number
}

interface GrpcSetup extends LoopbackProxy {
  client: Client
  /** The port the gRPC server listens on (for a client that bypasses the proxy). */
  serverPort: number
}

/** The lab's gRPC server on loopback and the proxy in front of it, as if steered from `source`. */
async function setup(t: Test, source = TIEFIGHTER, policy = GRPC_POLICY): Promise<GrpcSetup> {
  const server = await startGrpcServer({ name: 'grpc', port: 0, host: '127.0.0.1' })
  t.teardown(() => new Promise<void>((r) => server.tryShutdown(() => r())))
  const serverPort = (server as unknown as { boundPorts: Map<string, { portNumber: number }> }).boundPorts
    ?.values()
    .next().value?.portNumber
  const p = await startLoopbackProxy(t, {
    source,
    dest: { address: '198.18.2.20', port: 50051 },
    originPort: serverPort!,
    policy,
  })
  const Deathstar = loadDeathstar()
  const client = new Deathstar(`127.0.0.1:${p.port}`, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': MAX_MESSAGE,
    'grpc.max_send_message_length': MAX_MESSAGE,
  }) as unknown as Client
  t.teardown(() => client.close())
  return { ...p, client, serverPort: serverPort! }
}

function unary(
  c: Client,
  method: string,
  req: object,
  md = new grpc.Metadata(),
  opts: grpc.CallOptions = {},
): Promise<{ err: grpc.ServiceError | null; reply: Reply | null; trailers: grpc.Metadata | null }> {
  return new Promise((resolve) => {
    let trailers: grpc.Metadata | null = null
    const call = c[method]!(req, md, opts, (err: grpc.ServiceError | null, reply: Reply | null) =>
      setImmediate(() => resolve({ err, reply, trailers })),
    ) as grpc.ClientUnaryCall
    call.on('status', (s: grpc.StatusObject) => (trailers = s.metadata))
  })
}

/** Log lines of the proxy's HTTP/2 streams. */
function streamLines(s: LoopbackProxy): Array<Record<string, unknown>> {
  return s.logs.filter((l) => l.httpVersion === '2')
}

async function waitFor(what: () => boolean, ms = 2000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 10)))
    if (what()) return true
  return what()
}

t.test('grpc: an allowed unary call works as without the proxy, metadata both ways', async (t) => {
  const s = await setup(t)
  const md = new grpc.Metadata()
  md.add('x-ship-class', 'tie/ln')
  md.add('x-bin', Buffer.from([0, 1, 2, 255]))
  const r = await unary(s.client, 'RequestLanding', { ship: 'tf-1' }, md)
  t.equal(r.err, null, String(r.err?.details))
  t.equal(r.reply?.message, 'Ship landed (tf-1)', "the server's own reply")
  t.equal(r.reply?.metadata['x-ship-class'], 'tie/ln', 'text metadata reached the server')
  t.equal(r.reply?.metadata['x-bin'], Buffer.from([0, 1, 2, 255]).toString('base64'), 'and binary metadata, intact')
  t.same(r.trailers?.get('x-landed-ship'), ['tf-1'], "the server's trailing metadata arrived")
  await waitFor(() => streamLines(s).length === 1)
  t.match(
    streamLines(s),
    [
      {
        verdict: 'allowed',
        method: 'POST',
        path: '/empire.Deathstar/RequestLanding',
        grpcService: 'empire.Deathstar',
        grpcMethod: 'RequestLanding',
        grpcStatus: 0,
        status: 200,
        rules: ['CiliumNetworkPolicy/default/grpc-l7'],
        destination: '198.18.2.20:50051',
      },
    ],
    'one line with service, method and status',
  )
})

t.test('grpc: a denied method fails with PERMISSION_DENIED and a message naming the policy', async (t) => {
  const s = await setup(t)
  const r = await unary(s.client, 'FireExhaustPort', { ship: 'tf-1' })
  t.equal(r.err?.code, grpc.status.PERMISSION_DENIED, 'PERMISSION_DENIED, not UNKNOWN')
  t.match(
    r.err?.details,
    /access denied by policy .*no http rule matched .*CiliumNetworkPolicy\/default\/grpc-l7/,
    `details: ${r.err?.details}`,
  )
  const again = await unary(s.client, 'RequestLanding', { ship: 'tf-2' })
  t.equal(again.err, null, 'the connection serves the next call')
  await waitFor(() => streamLines(s).length === 2)
  t.match(
    streamLines(s).find((l) => l.verdict === 'denied'),
    { grpcMethod: 'FireExhaustPort', grpcStatus: 7, status: 200, reason: /no http rule matched/ },
  )
})

t.test('grpc: a peer the policy does not name is denied every method', async (t) => {
  const s = await setup(t, XWING)
  const r = await unary(s.client, 'RequestLanding', { ship: 'xw-1' })
  t.equal(r.err?.code, grpc.status.PERMISSION_DENIED)
  t.match(r.err?.details, /identity \d+ is not allowed/)
})

t.test('grpc: server-streaming, client-streaming and bidi calls pass whole', async (t) => {
  const s = await setup(t)
  const ships: number[] = []
  await new Promise<void>((resolve, reject) => {
    const call = s.client.ListShips!({ count: 2000 }) as grpc.ClientReadableStream<{ index: number }>
    call.on('data', (m) => ships.push(m.index))
    call.on('error', reject)
    call.on('end', () => resolve())
  })
  t.equal(ships.length, 2000, 'all 2000 streamed messages')
  t.same(ships.slice(0, 3), [0, 1, 2], 'in order')
  const summary = await new Promise<{ lines: number; bytes: number }>((resolve, reject) => {
    const call = s.client.UploadLogs!((err: grpc.ServiceError | null, r: { lines: number; bytes: number }) =>
      err ? reject(err) : resolve(r),
    ) as grpc.ClientWritableStream<{ text: string }>
    for (let i = 0; i < 500; i++) call.write({ text: `line ${i}` })
    call.end()
  })
  t.same(
    summary,
    { lines: 500, bytes: [...Array(500).keys()].reduce((n, i) => n + `line ${i}`.length, 0) },
    'client-streaming: every line counted',
  )
  const echoes = await new Promise<string[]>((resolve, reject) => {
    const got: string[] = []
    const call = s.client.Chat!() as grpc.ClientDuplexStream<{ text: string }, { text: string }>
    call.on('data', (m) => {
      got.push(m.text)
      if (got.length < 5) call.write({ text: `m${got.length}` })
      else call.end()
    })
    call.on('error', reject)
    call.on('end', () => resolve(got))
    call.write({ text: 'm0' })
  })
  t.same(echoes, ['echo: m0', 'echo: m1', 'echo: m2', 'echo: m3', 'echo: m4'], 'bidi: a ping-pong of five')
  await waitFor(() => streamLines(s).length === 3)
  t.same(
    streamLines(s)
      .map((l) => [l.grpcMethod, l.grpcStatus])
      .sort(),
    [
      ['Chat', 0],
      ['ListShips', 0],
      ['UploadLogs', 0],
    ],
    'each call logged with its status',
  )
})

t.test('grpc: a 4 MB message passes both ways of a call', async (t) => {
  const s = await setup(t)
  const payload = Buffer.alloc(4 * 1024 * 1024, 7)
  const r = await unary(s.client, 'RequestLanding', { ship: 'cargo', payload })
  t.equal(r.err, null, String(r.err?.details))
  t.equal(r.reply?.payloadBytes, payload.length, 'the server got all 4 MB')
})

t.test("grpc: the client's deadline reaches the server and still ends the call", async (t) => {
  const s = await setup(t)
  const r = await unary(s.client, 'RequestLanding', { ship: 'tf' }, undefined, { deadline: Date.now() + 3000 })
  t.ok(
    r.reply !== null && r.reply.deadlineMs > 0 && r.reply.deadlineMs <= 3000,
    `the server saw a deadline of ${r.reply?.deadlineMs} ms (grpc-timeout crossed the proxy)`,
  )
  const started = Date.now()
  const slow = await unary(s.client, 'RequestLanding', { ship: 'slow', delayMs: 5000 }, undefined, {
    deadline: Date.now() + 300,
  })
  t.equal(slow.err?.code, grpc.status.DEADLINE_EXCEEDED, 'a call past its deadline ends DEADLINE_EXCEEDED')
  t.ok(Date.now() - started < 2000, 'at the deadline, not when the server would have answered')
  await waitFor(() => streamLines(s).length === 2)
  t.ok(await waitFor(() => s.proxy.connectionCount === 1), 'the connection is still up')
})

t.test('grpc: an upstream that is down gives UNAVAILABLE with a message, not a broken stream', async (t) => {
  const s = await setup(t)
  const dead = await startLoopbackProxy(t, {
    source: TIEFIGHTER,
    dest: { address: '198.18.2.20', port: 50051 },
    originPort: 1,
    policy: GRPC_POLICY,
  })
  const client = new (loadDeathstar())(`127.0.0.1:${dead.port}`, grpc.credentials.createInsecure()) as unknown as Client
  t.teardown(() => client.close())
  const r = await unary(client, 'RequestLanding', { ship: 'tf' })
  t.equal(r.err?.code, grpc.status.UNAVAILABLE)
  t.match(r.err?.details, /l7proxy: upstream unavailable \(ECONNREFUSED\)/)
  await waitFor(() => dead.logs.some((l) => l.msg === 'http: upstream failed (502)'))
  t.match(
    dead.logs.find((l) => l.msg === 'http: upstream failed (502)'),
    { error: 'ECONNREFUSED' },
  )
  t.equal(s.proxy.stats.upstreamFailed, 0)
  t.equal(dead.proxy.stats.upstreamFailed, 1, 'counted as an upstream failure')
})

t.test('grpc: HTTP/1.1 on the same port still works next to HTTP/2 (preface sniffing)', async (t) => {
  const s = await setup(
    t,
    TIEFIGHTER,
    GRPC_POLICY.replace('http:\n', 'http:\n        - { method: GET, path: "/healthz" }\n'),
  )
  const res = await fetch(`http://127.0.0.1:${s.port}/other`)
  t.equal(res.status, 403, 'an HTTP/1.1 request is judged by the same rules')
  t.equal(await res.text(), 'Access denied\n')
  const r = await unary(s.client, 'RequestLanding', { ship: 'tf' })
  t.equal(r.err, null)
  t.equal((s.proxy.server.address() as AddressInfo).port, s.port)
})
