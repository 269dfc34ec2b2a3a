// A differential fuzzer for the HTTP/1.1 proxy: random requests, and mutations of them, go
// through the proxy on loopback to an upstream that records every byte it receives and hands them
// on to a node:http server. For each connection, either the proxy refuses, or what the upstream
// received reads, under strict llhttp (the bytes) and under node:http (the server, live), as
// exactly the requests the proxy judged and allowed: same method, same path (normalized, no
// parameters), one framing header, the body the client sent, nothing more.
//
// Bounded: L7PROXY_FUZZ_SECONDS (default 3) of cases; L7PROXY_FUZZ_SEED replays a run.

import { createServer as createHttpServer, type IncomingMessage } from 'node:http'
import { type AddressInfo, connect, createServer, type Socket } from 'node:net'
import fc from 'fast-check'
import t from 'tap'
import { hostProblem } from '../proxy/http/request-head.js'
import { normalizePath } from '../proxy/http/request-path.js'
import { startLoopbackProxy } from './fixtures/loopback-proxy.js'
import { deathstarHttp } from './fixtures/policy-text.js'
import { readMessages } from './fixtures/stand-in-parser.js'
import { waitUntil } from './fixtures/wait.js'

const SECONDS = Number(process.env.L7PROXY_FUZZ_SECONDS ?? 3)
const SEED = process.env.L7PROXY_FUZZ_SEED === undefined ? Date.now() % 2 ** 31 : Number(process.env.L7PROXY_FUZZ_SEED)

const POLICY = deathstarHttp('fuzz', ['{ method: "GET|POST|PUT|HEAD|OPTIONS", path: "/public/.*" }'])

/** What node:http's server read on one connection. */
interface NodeRequest {
  method: string
  url: string
  body: Buffer
  complete: boolean
}

/** A relay in front of a node:http server: each connection's bytes recorded, in the order connections came. */
async function recordingUpstream(): Promise<{
  port: number
  connections: Array<{ bytes: Buffer[]; requests: NodeRequest[]; errors: string[]; closed: boolean }>
  close: () => Promise<void>
}> {
  const connections: Array<{ bytes: Buffer[]; requests: NodeRequest[]; errors: string[]; closed: boolean }> = []
  const backend = createHttpServer((req: IncomingMessage, res) => {
    const into = (req.socket as Socket & { record?: (typeof connections)[number] }).record!
    const r: NodeRequest = { method: req.method!, url: req.url!, body: Buffer.alloc(0), complete: false }
    into.requests.push(r)
    req.on('data', (d: Buffer) => (r.body = Buffer.concat([r.body, d])))
    req.on('end', () => {
      r.complete = true
      res.end('ok')
    })
  })
  backend.on(
    'clientError',
    (e: Error & { code?: string }, socket: Socket & { record?: (typeof connections)[number] }) => {
      socket.record?.errors.push(e.code ?? e.message)
      socket.destroy()
    },
  )
  const relay = createServer((inbound) => {
    const record = { bytes: [] as Buffer[], requests: [] as NodeRequest[], errors: [] as string[], closed: false }
    connections.push(record)
    const { port } = backend.address() as AddressInfo
    const outbound = connect(port, '127.0.0.1')
    // The backend's side of the relay connection tells the server handler which record it feeds.
    backend.once('connection', (s: Socket & { record?: typeof record }) => (s.record = record))
    inbound.on('data', (d: Buffer) => {
      record.bytes.push(d)
      outbound.write(d)
    })
    outbound.pipe(inbound)
    const done = (): void => {
      record.closed = true
      inbound.destroy()
      outbound.destroy()
    }
    inbound.on('close', done).on('error', done)
    outbound.on('close', done).on('error', done)
  })
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r))
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r))
  const close = async (): Promise<void> => {
    backend.closeAllConnections()
    await Promise.all([new Promise((r) => relay.close(r)), new Promise((r) => backend.close(r))])
  }
  return { port: (relay.address() as AddressInfo).port, connections, close }
}

// ---- requests: well-formed pieces, and the kinds of pieces the review found trouble with ----

const piece = (good: string[], bad: string[]): fc.Arbitrary<string> =>
  fc.oneof({ weight: 12, arbitrary: fc.constantFrom(...good) }, { weight: 1, arbitrary: fc.constantFrom(...bad) })
const method = piece(['GET', 'POST', 'PUT', 'HEAD', 'OPTIONS'], ['DELETE', 'CONNECT', 'get', 'G T', 'PATCH'])
const segment = piece(
  ['a', 'b.txt', 'x-y', '%41', '..', '.'],
  [';x', ';', '..;', '.;p=1', '%2e', '%2e%2e;', '%2F', '%3B', '%0d%0a', '%00', '#f', '', '\\', '%zz', 'é'],
)
const target = fc
  .tuple(
    fc.constantFrom('/public/', '/public/', '/admin/', '/', '//public/'),
    fc.array(segment, { maxLength: 4 }),
    piece(['', '', '?q=1', '?a=/../b'], ['?x#y', '?%0a']),
  )
  .map(([start, segs, q]) => start + segs.join('/') + q)
const version = piece(['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0'], ['HTTP/1.2', 'HTTP/2.0', 'http/1.1'])
const host = piece(
  ['deathstar', 'deathstar.empire:80', '198.18.2.10'],
  ['a.example, b.example', '', 'x y', 'user@deathstar', '[::1', 'deathstar:99999', 'a..b'],
)
/** Extra fields besides Host and framing. */
const extra = piece(
  ['X-A: 1', 'Connection: keep-alive', 'Accept: */*', 'X-Token: t'],
  [
    'Connection: close',
    'X_Token: u',
    'Transfer_Encoding: chunked',
    'Content_Length: 3',
    'X-Fold: a\r\n b',
    'Expect: 100-continue',
    'Host: other',
    'Upgrade: h2c',
    'Content-Length: 3',
    'Transfer-Encoding: chunked',
  ],
)
const body = fc.stringMatching(/^[a-z0-9\r\n]{0,24}$/)
/** How the body is framed: by length (right, or written oddly), chunked (as it should be, or not), or not at all. */
const framing = piece(
  ['length', 'chunked', 'none', 'te-gzip-chunked'],
  ['length-zeros', 'length-list', 'te-empty', 'te-empty+length', 'chunked-bad-size', 'length-short'],
)

function framed(kind: string, b: string): { fields: string[]; bytes: string } {
  const chunked = b === '' ? '0\r\n\r\n' : `${b.length.toString(16)}\r\n${b}\r\n0\r\n\r\n`
  switch (kind) {
    case 'length':
      return { fields: [`Content-Length: ${b.length}`], bytes: b }
    case 'length-zeros':
      return { fields: [`Content-Length: 00${b.length}`], bytes: b }
    case 'length-list':
      return { fields: [`Content-Length: ${b.length}, ${b.length}`], bytes: b }
    case 'length-short':
      return { fields: [`Content-Length: ${b.length + 3}`], bytes: b }
    case 'chunked':
      return { fields: ['Transfer-Encoding: chunked'], bytes: chunked }
    case 'te-gzip-chunked':
      return { fields: ['Transfer-Encoding: gzip, chunked'], bytes: chunked }
    case 'te-empty':
      return { fields: ['Transfer-Encoding:'], bytes: chunked }
    case 'te-empty+length':
      return { fields: ['Transfer-Encoding:', `Content-Length: ${chunked.length}`], bytes: chunked }
    case 'chunked-bad-size':
      return { fields: ['Transfer-Encoding: chunked'], bytes: `${b.length + 1}\r\n${b}\r\n0\r\n\r\n` }
    default:
      return { fields: [], bytes: '' }
  }
}

const request = fc
  .record({
    method,
    target,
    version,
    host: fc.option(host, { freq: 8, nil: null }),
    extra: fc.array(extra, { maxLength: 3 }),
    body,
    framing,
  })
  .map((r) => {
    const f = framed(r.framing, r.body)
    const fields = [...(r.host === null ? [] : [`Host: ${r.host}`]), ...r.extra, ...f.fields]
    return `${r.method} ${r.target} ${r.version}\r\n${fields.map((x) => `${x}\r\n`).join('')}\r\n${f.bytes}`
  })

/** A byte-level change: an inserted CR, LF, space, colon, digit or tab; a byte dropped; a line doubled. */
const mutation = fc.tuple(
  fc.constantFrom('insert', 'drop', 'double-line'),
  fc.nat(),
  fc.constantFrom('\r', '\n', ' ', ':', '0', '\t', ',', ';', '_'),
)
function mutate(s: string, [kind, at, ch]: [string, number, string]): string {
  const i = at % (s.length + 1)
  if (kind === 'insert') return s.slice(0, i) + ch + s.slice(i)
  if (kind === 'drop') return s.slice(0, i) + s.slice(i + 1)
  const lines = s.split('\r\n')
  const l = at % lines.length
  return [...lines.slice(0, l + 1), ...lines.slice(l)].join('\r\n')
}

/** One connection's bytes: 1-3 pipelined requests, now and then mutated. */
const mutations = fc.oneof(
  { weight: 3, arbitrary: fc.constant([]) },
  { weight: 1, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 2 }) },
)
const connectionBytes = fc
  .tuple(fc.array(request, { minLength: 1, maxLength: 3 }), mutations)
  .map(([reqs, muts]) => muts.reduce(mutate, reqs.join('')))

/** Sends `bytes` and half-closes; resolves when the proxy has closed the connection (bounded). */
function exchange(port: number, bytes: string): Promise<void> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1', () => sock.end(Buffer.from(bytes, 'latin1')))
    const timer = setTimeout(() => sock.destroy(), 3000)
    sock.on('data', () => undefined)
    sock.on('error', () => undefined)
    sock.on('close', () => {
      clearTimeout(timer)
      resolve()
    })
  })
}

t.test(
  `differential fuzzing: the upstream reads exactly the requests the proxy allowed (${SECONDS} s, seed ${SEED})`,
  async (t) => {
    const upstream = await recordingUpstream()
    t.teardown(upstream.close)
    const s = await startLoopbackProxy(t, {
      source: '198.18.1.10',
      dest: { address: '198.18.2.10', port: 80 },
      originPort: upstream.port,
      policy: POLICY,
      extra: { upstreamPool: { perKey: 0 } },
    })
    let cases = 0
    let forwarded = 0
    let refused = 0
    const failure: string[] = []
    const property = fc.asyncProperty(connectionBytes, async (bytes) => {
      cases++
      s.logs.length = 0
      const firstConnection = upstream.connections.length
      await exchange(s.port, bytes)
      await waitUntil(() => upstream.connections.slice(firstConnection).every((c) => c.closed), 300, 10)
      const conns = upstream.connections.slice(firstConnection)
      const allowed = s.logs.filter((l) => l.msg === 'http allowed')
      // What the proxy judged, as the client's bytes read under the same strict llhttp.
      const sent = readMessages('request', Buffer.from(bytes, 'latin1')).messages
      const got = conns.flatMap((c) =>
        readMessages('request', Buffer.concat(c.bytes)).messages.map((m) => ({ ...m, conn: c })),
      )
      const problem = ((): string | null => {
        // Only the proxy cutting the connection (a client whose later bytes turned out malformed) may end it unfinished.
        const cut = (e: string): boolean => e.startsWith('HPE_INVALID_EOF_STATE') || e === 'ECONNRESET' || e === 'EPIPE'
        for (const c of conns)
          if (c.errors.some((e) => !cut(e))) return `node:http refused what the proxy sent: ${c.errors.join(', ')}`
        for (const c of conns) {
          const r = readMessages('request', Buffer.concat(c.bytes))
          if (r.error !== null && !cut(r.error)) return `llhttp refused what the proxy sent: ${r.error}`
        }
        // Allowed requests the upstream never read are those the proxy dropped when it cut the client off (499).
        const unread = allowed.slice(got.length)
        if (got.length > allowed.length || unread.some((l) => l.status !== 499))
          return `the upstream read ${got.length} requests, the proxy allowed ${allowed.length} (statuses ${allowed.map((l) => String(l.status)).join(', ')})`
        const nodeRead = conns.flatMap((c) => c.requests)
        if (nodeRead.length !== got.length) return `node:http read ${nodeRead.length} requests, llhttp ${got.length}`
        let j = 0 // the client's requests, as far as forwarded ones have been found among them
        for (let i = 0; i < got.length; i++) {
          const g = got[i]!
          const judged = allowed[i]!
          if (g.method !== judged.method || g.url !== judged.path)
            return `request ${i}: the upstream read ${g.method} ${g.url}, the proxy judged ${String(judged.method)} ${String(judged.path)}`
          if (nodeRead[i]!.method !== g.method || nodeRead[i]!.url !== g.url)
            return `request ${i}: node:http read ${nodeRead[i]!.method} ${nodeRead[i]!.url}, llhttp ${g.method} ${g.url}`
          const norm = normalizePath(g.url, g.method)
          if (!norm.ok || norm.path !== g.url || g.url.split('?')[0]!.includes(';'))
            return `request ${i}: forwarded path ${g.url} is not in normal form`
          const names = g.fields.filter((_, k) => k % 2 === 0).map((n) => n.toLowerCase())
          const framingFields = names.filter((n) => n === 'content-length' || n === 'transfer-encoding')
          if (framingFields.length > 1) return `request ${i}: forwarded with ${framingFields.join(' and ')}`
          const hosts = g.fields.filter((_, k) => k % 2 === 1 && names[(k - 1) / 2] === 'host')
          if (hosts.length > 1 || (hosts[0] !== undefined && hostProblem(hosts[0]) !== null))
            return `request ${i}: forwarded with Host ${JSON.stringify(hosts)}`
          if (!g.complete) {
            if (i !== got.length - 1) return `request ${i}: incomplete at the upstream, yet followed by another`
            if (nodeRead[i]!.complete) return `request ${i}: incomplete for llhttp, complete for node:http`
            continue // cut by the proxy when the client's body turned out malformed: never completes
          }
          // Forwarded requests are the client's, in order, some left out (denied): the next with this method, path and body.
          const sameAs = (m: (typeof sent)[number]): boolean =>
            m.complete &&
            m.method === g.method &&
            m.body.equals(g.body) &&
            normalizePath(m.url, m.method).ok &&
            (normalizePath(m.url, m.method) as { path: string }).path === g.url
          while (j < sent.length && !sameAs(sent[j]!)) j++
          if (j++ === sent.length)
            return `request ${i}: the upstream read ${g.method} ${g.url} with a body of ${g.body.length} bytes, which the client did not send`
          if (!nodeRead[i]!.complete || !nodeRead[i]!.body.equals(g.body))
            return `request ${i}: node:http read another body (${nodeRead[i]!.body.length} bytes)`
        }
        return null
      })()
      if (got.length > 0) forwarded++
      else refused++
      if (problem !== null) failure.push(`${JSON.stringify(bytes)}: ${problem}`)
      return problem === null
    })
    const result = await fc.check(property, {
      seed: SEED,
      numRuns: 100_000,
      interruptAfterTimeLimit: SECONDS * 1000,
      markInterruptAsFailure: false,
      endOnFailure: true,
    })
    t.notOk(
      result.failed,
      result.failed ? `counterexample: ${failure.at(-1) ?? fc.stringify(result.counterexample)}` : 'no counterexample',
    )
    t.ok(cases >= Math.min(50, SECONDS * 10), `${cases} connections tried`)
    t.ok(forwarded > 0 && refused > 0, `${forwarded} had requests forwarded, ${refused} none`)
  },
)
