// The transparent HTTP/1.1 proxy: accepts connections the datapath steered to it, parses every
// request with Node's llhttp in its strict mode (conflicting framing, obs-fold, bare LF and bad
// header characters are refused with 400 before any policy or upstream sees them), evaluates each
// request on a keep-alive connection against the flow's L7 rules, forwards allowed ones to the
// original destination over pooled connections (undici) with bodies streamed both ways, answers
// denied ones with 403, and logs one line per request.

import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import { Pool } from 'undici'
import type { PolicyEngine } from '../../policy/engine.js'
import type { HeaderAction, HttpRequestView } from '../../policy/http-matcher.js'
import { FlowPolicy, httpVerdict, type Flow, type FlowVerdict } from './flow-verdict.js'
import { endToEndRaw } from './hop-by-hop.js'
import { normalizePath } from './request-path.js'
import { ResponseRelay } from './response-relay.js'

export interface HttpProxyOptions {
  engine: PolicyEngine
  logger: Logger
  /** The flow a connection belongs to; by default its peer and its (original) local address. */
  flowOf?: (socket: Socket) => Flow
  /** Where to connect for a flow; by default its original destination. */
  originOf?: (flow: Flow) => string
  headersTimeoutMs?: number
  idleTimeoutMs?: number
  upstreamConnectTimeoutMs?: number
  upstreamHeadersTimeoutMs?: number
  maxHeaderBytes?: number
  /** Header fields per request; more is refused (400), never silently truncated. */
  maxHeaders?: number
}

const DENIED_BODY = 'Access denied\n'
const kConnection = Symbol('l7proxy.connection')

/** What a client connection resolved to, kept on its socket for every request it carries. */
interface ConnectionState {
  flow: Flow
  policy: FlowPolicy
  origin: string
  /** The proxy's logger with this connection's source and destination bound (serialized once). */
  log: Logger
}

type ProxiedSocket = Socket & { [kConnection]?: ConnectionState }

function defaultFlow(socket: Socket): Flow {
  return { sourceAddress: socket.remoteAddress!, sourcePort: socket.remotePort!, destAddress: socket.localAddress!, destPort: socket.localPort! }
}

function defaultOrigin(f: Flow): string {
  return `http://${f.destAddress}:${f.destPort}`
}

/** One header's value as rules see it: repeated fields joined as RFC 9110 allows. */
function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v
}


/** A request as the matchers see it: built once per request, no closures. */
class RequestView implements HttpRequestView {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly host: string,
    private readonly headers: IncomingHttpHeaders,
  ) {}

  header(name: string): string | undefined {
    return headerValue(this.headers[name])
  }
}

/** Index of the first field called `name` (lower case) in a raw [name, value...] list, or -1. */
function indexOfHeader(raw: readonly string[], name: string, from = 0): number {
  for (let i = from; i < raw.length; i += 2) if (raw[i]!.length === name.length && raw[i]!.toLowerCase() === name) return i
  return -1
}

function withoutHeader(raw: readonly string[], name: string): string[] {
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() !== name) out.push(raw[i]!, raw[i + 1]!)
  return out
}

/** Applies headerMatches mismatch actions to a raw [name, value...] list. */
function applyActions(raw: string[], actions: readonly HeaderAction[], log: (a: HeaderAction, got: string | undefined) => void): string[] {
  let out = raw
  for (const a of actions) {
    const name = a.name.toLowerCase()
    if (a.action === 'LOG') {
      const i = indexOfHeader(out, name)
      log(a, i < 0 ? undefined : out[i + 1])
      continue
    }
    if (a.action === 'DELETE' || a.action === 'REPLACE') out = withoutHeader(out, name)
    if ((a.action === 'ADD' || a.action === 'REPLACE') && a.value !== undefined) out.push(a.name, a.value)
  }
  return out
}

export class HttpProxy {
  readonly server: Server
  private readonly pools = new Map<string, Pool>()
  private readonly maxHeaders: number

  constructor(private readonly opts: HttpProxyOptions) {
    this.maxHeaders = opts.maxHeaders ?? 100
    this.server = createServer(
      {
        insecureHTTPParser: false,
        requestTimeout: 0,
        headersTimeout: opts.headersTimeoutMs ?? 10_000,
        keepAliveTimeout: opts.idleTimeoutMs ?? 60_000,
        maxHeaderSize: opts.maxHeaderBytes ?? 16 * 1024,
      },
      (req, res) => this.handle(req, res),
    )
    // Node drops headers beyond maxHeadersCount without a word: let one more through and refuse.
    this.server.maxHeadersCount = this.maxHeaders + 1
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      this.opts.logger.info({ verdict: 'invalid', error: err.code ?? err.message, source: socket.remoteAddress }, 'http: malformed request refused')
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
      else socket.destroy()
    })
  }

  /** Listens on a socket made elsewhere (a transparent listener's fd), or a port for tests. */
  listen(where: { fd: number } | { port: number; host: string }): Promise<void> {
    return new Promise((resolve) => this.server.listen(where, () => resolve()))
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
    await Promise.all([...this.pools.values()].map((p) => p.close()))
    this.pools.clear()
  }

  private pool(origin: string): Pool {
    let p = this.pools.get(origin)
    if (!p) {
      p = new Pool(origin, {
        connections: 128,
        connectTimeout: this.opts.upstreamConnectTimeoutMs ?? 5_000,
        headersTimeout: this.opts.upstreamHeadersTimeoutMs ?? 30_000,
        bodyTimeout: 0,
      })
      this.pools.set(origin, p)
    }
    return p
  }

  private log(req: IncomingMessage, conn: ConnectionState, verdict: FlowVerdict, status: number, started: bigint): void {
    conn.log.info(
      {
        verdict: verdict.allowed ? 'allowed' : 'denied',
        rules: verdict.rules,
        reason: verdict.reason,
        method: req.method,
        path: req.url,
        host: req.headers.host,
        sourceIdentity: verdict.sourceIdentity,
        destIdentity: verdict.destIdentity,
        status,
        ms: Number(process.hrtime.bigint() - started) / 1e6,
      },
      verdict.allowed ? 'http allowed' : 'http denied',
    )
  }

  /** 400 for a request whose meaning is ambiguous; it goes no further. */
  private refuse(req: IncomingMessage, res: ServerResponse, conn: ConnectionState, reason: string): void {
    req.resume()
    const body = `Bad request: ${reason}\n`
    res.writeHead(400, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), connection: 'close' })
    res.end(body)
    conn.log.info({ verdict: 'invalid', reason, path: req.url, status: 400 }, 'http: ambiguous request refused')
  }

  /** The connection's flow and policy, resolved at its first request and again after a policy change. */
  private connection(socket: ProxiedSocket): ConnectionState {
    let c = socket[kConnection]
    if (c === undefined) {
      const flow = (this.opts.flowOf ?? defaultFlow)(socket)
      c = {
        flow,
        policy: new FlowPolicy(this.opts.engine, flow),
        origin: (this.opts.originOf ?? defaultOrigin)(flow),
        log: this.opts.logger.child({ source: `${flow.sourceAddress}:${flow.sourcePort}`, destination: `${flow.destAddress}:${flow.destPort}` }),
      }
      socket[kConnection] = c
    } else c.policy = c.policy.current(this.opts.engine, c.flow)
    return c
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const started = process.hrtime.bigint()
    const conn = this.connection(req.socket)
    const raw = req.rawHeaders
    if (raw.length / 2 > this.maxHeaders) return this.refuse(req, res, conn, `more than ${this.maxHeaders} header fields`)
    // RFC 9112 3.2: more than one Host is refused; rules and server could read different ones.
    const host = indexOfHeader(raw, 'host')
    if (host >= 0 && indexOfHeader(raw, 'host', host + 2) >= 0) return this.refuse(req, res, conn, 'more than one Host header')
    // HTTP/1.0 has no chunked framing: a Transfer-Encoding there is how requests get smuggled.
    if (req.httpVersion === '1.0' && req.headers['transfer-encoding'] !== undefined) {
      return this.refuse(req, res, conn, 'Transfer-Encoding in an HTTP/1.0 request')
    }
    // Rules see, and the server gets, one normalized path; ambiguous ones go no further.
    const target = normalizePath(req.url!, req.method!)
    if (!target.ok) return this.refuse(req, res, conn, target.reason)
    const path = target.path
    const verdict = httpVerdict(conn.policy, new RequestView(req.method!, path, req.headers.host ?? '', req.headers))
    if (!verdict.allowed) {
      req.resume() // drain the body: the connection stays usable for the next request
      res.writeHead(403, { 'content-type': 'text/plain', 'content-length': DENIED_BODY.length })
      res.end(DENIED_BODY)
      this.log(req, conn, verdict, 403, started)
      return
    }
    let headers = endToEndRaw(raw, req.headers.connection)
    if (verdict.actions.length > 0) {
      headers = applyActions(headers, verdict.actions, (a, got) => conn.log.info({ header: a.name, expected: a.value, got }, 'http: header mismatch'))
    }
    const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
    const relay = new ResponseRelay(res, (status, error) => {
      if (error && status !== 499) conn.log.warn({ origin: conn.origin, error: error.code ?? error.message }, `http: upstream failed (${status})`)
      this.log(req, conn, verdict, status, started)
    })
    this.pool(conn.origin).dispatch({ origin: conn.origin, method: req.method as 'GET', path, headers, body: hasBody ? req : null }, relay)
  }
}
