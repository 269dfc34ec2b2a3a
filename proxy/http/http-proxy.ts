// The transparent HTTP/1.1 proxy: accepts connections the datapath steered to it, parses every
// request with Node's llhttp in its strict mode (conflicting framing, obs-fold, bare LF and bad
// header characters are refused with 400 before any policy or upstream sees them), evaluates each
// request on a keep-alive connection against the flow's L7 rules, forwards allowed ones to the
// original destination over pooled connections (undici) with bodies streamed both ways, answers
// denied ones with 403, and logs one line per request.

import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { pipeline } from 'node:stream'
import type { Logger } from 'pino'
import { Pool } from 'undici'
import type { PolicyEngine } from '../../policy/engine.js'
import type { HttpRequestView } from '../../policy/http-matcher.js'
import { httpVerdict, type Flow, type FlowVerdict } from './flow-verdict.js'
import { normalizePath } from './request-path.js'

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

/**
 * Never forwarded: RFC 9110 7.6.1's hop-by-hop fields, any header the Connection header names, and
 * Expect (Node already answered the client's 100-continue; the upstream request is a new one).
 */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect'])

const DENIED_BODY = 'Access denied\n'

function defaultFlow(socket: Socket): Flow {
  return { sourceAddress: socket.remoteAddress!, sourcePort: socket.remotePort!, destAddress: socket.localAddress!, destPort: socket.localPort! }
}

function endToEnd(headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const named = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  )
  const out: Record<string, string | string[]> = {}
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || named.has(k)) continue
    out[k] = v
  }
  return out
}

function firstValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v
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

  private log(req: IncomingMessage, flow: Flow, verdict: FlowVerdict, status: number, started: bigint): void {
    this.opts.logger.info(
      {
        verdict: verdict.allowed ? 'allowed' : 'denied',
        rules: verdict.rules,
        reason: verdict.reason,
        method: req.method,
        path: req.url,
        host: req.headers.host,
        source: `${flow.sourceAddress}:${flow.sourcePort}`,
        sourceIdentity: verdict.sourceIdentity,
        destination: `${flow.destAddress}:${flow.destPort}`,
        destIdentity: verdict.destIdentity,
        status,
        ms: Number(process.hrtime.bigint() - started) / 1e6,
      },
      `http ${verdict.allowed ? 'allowed' : 'denied'}`,
    )
  }

  /** 400 for a request whose meaning is ambiguous; it goes no further. */
  private refuse(req: IncomingMessage, res: ServerResponse, flow: Flow, reason: string): void {
    req.resume()
    const body = `Bad request: ${reason}\n`
    res.writeHead(400, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), connection: 'close' })
    res.end(body)
    this.opts.logger.info({ verdict: 'invalid', reason, path: req.url, source: `${flow.sourceAddress}:${flow.sourcePort}`, status: 400 }, 'http: ambiguous request refused')
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const started = process.hrtime.bigint()
    const flow = (this.opts.flowOf ?? defaultFlow)(req.socket)
    if (req.rawHeaders.length / 2 > this.maxHeaders) return this.refuse(req, res, flow, `more than ${this.maxHeaders} header fields`)
    // HTTP/1.0 has no chunked framing: a Transfer-Encoding there is how requests get smuggled.
    if (req.httpVersion === '1.0' && req.headers['transfer-encoding'] !== undefined) {
      return this.refuse(req, res, flow, 'Transfer-Encoding in an HTTP/1.0 request')
    }
    // Rules see, and the server gets, one normalized path; ambiguous ones go no further.
    const target = normalizePath(req.url!, req.method!)
    if (!target.ok) return this.refuse(req, res, flow, target.reason)
    const path = target.path
    const view: HttpRequestView = {
      method: req.method!,
      path,
      host: req.headers.host ?? '',
      header: (name) => firstValue(req.headers[name]),
    }
    const verdict = httpVerdict(this.opts.engine, flow, view)
    if (!verdict.allowed) {
      req.resume() // drain the body: the connection stays usable for the next request
      res.writeHead(403, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(DENIED_BODY) })
      res.end(DENIED_BODY)
      this.log(req, flow, verdict, 403, started)
      return
    }
    const headers = endToEnd(req.headers)
    for (const a of verdict.actions) {
      if (a.action === 'ADD' && a.value !== undefined) headers[a.name] = headers[a.name] === undefined ? a.value : [String(headers[a.name]), a.value]
      else if (a.action === 'REPLACE' && a.value !== undefined) headers[a.name] = a.value
      else if (a.action === 'DELETE') delete headers[a.name]
      else if (a.action === 'LOG') this.opts.logger.info({ header: a.name, expected: a.value, got: headers[a.name] }, 'http: header mismatch')
    }
    const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
    const origin = (this.opts.originOf ?? ((f: Flow) => `http://${f.destAddress}:${f.destPort}`))(flow)
    this.pool(origin)
      .request({ method: req.method as 'GET', path, headers, body: hasBody ? req : null })
      .then((up) => {
        res.writeHead(up.statusCode, endToEnd(up.headers))
        pipeline(up.body, res, () => undefined)
        this.log(req, flow, verdict, up.statusCode, started)
      })
      .catch((err: NodeJS.ErrnoException) => {
        const timeout = err.code === 'UND_ERR_CONNECT_TIMEOUT' || err.code === 'UND_ERR_HEADERS_TIMEOUT'
        const status = timeout ? 504 : 502
        this.opts.logger.warn({ origin, error: err.code ?? err.message }, `http: upstream failed (${status})`)
        if (!res.headersSent) {
          const body = `${timeout ? 'Upstream timed out' : 'Upstream unavailable'}\n`
          res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) })
          res.end(body)
        } else res.destroy()
        this.log(req, flow, verdict, status, started)
      })
  }
}
