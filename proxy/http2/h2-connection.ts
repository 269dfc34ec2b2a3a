// One steered HTTP/2 (h2c, prior knowledge) client connection: every stream is judged on its own
// against the flow's L7 rules with the HTTP/1.1 matcher (:method, normalized :path, :authority,
// headers). Allowed streams go to the original destination over this connection's own upstream
// HTTP/2 session (opened at the first allowed stream, reused by the next ones), bodies piped
// both ways so HTTP/2 flow control carries back-pressure end to end, trailers passed on, resets
// propagated both ways and the upstream's GOAWAY passed to the client. Denied gRPC calls end with
// grpc-status 7 (PERMISSION_DENIED) in a trailers-only response; other denied streams get a 403.

import { connectOrigin, type OriginTls } from '../tls/origin-socket.js'
import http2, {
  constants,
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2'
import type { Logger } from 'pino'
import type { HeaderAction, HttpRequestView } from '../../policy/http-matcher.js'
import { FlowPolicy, flowEnds, httpVerdict, type Flow, type FlowVerdict } from '../flow-verdict.js'
import { FlowLog } from '../flow-log.js'
import { countOutcome, type Origin, type ProxyContext } from '../http/proxy-context.js'
import { normalizePath } from '../http/request-path.js'
import { hostProblem } from '../http/request-head.js'
import { relay, resetStream } from './stream-relay.js'
import { Refusal, sourceKey } from '../overload/shared-budget.js'
import { noteRefusal } from '../overload/thread-overload.js'
import { GRPC_DEADLINE_EXCEEDED, GRPC_INTERNAL, GRPC_PERMISSION_DENIED, GRPC_UNAVAILABLE, grpcCall, grpcTrailersOnly, isGrpc } from './grpc.js'

const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_FLAG_END_STREAM } = constants

/**
 * Streams a client may reset before their answer began: a bucket of RESET_BURST refilled at
 * RESET_RATE a second. A client past it is cut off with ENHANCE_YOUR_CALM (rapid reset,
 * CVE-2023-44487): each such stream costs the proxy a rule check and maybe an upstream stream.
 */
const RESET_BURST = 100
const RESET_RATE = 20
/** How long an idle connection with open streams has to answer a PING. */
const PING_WAIT_MS = 5_000
/** RFC 9113 6.5.2: a field's size in a header list is its name and value plus 32. */
const FIELD_OVERHEAD = 32

class UpstreamFailure extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly timedOut: boolean,
  ) {
    super(message)
  }
}

/** A stream's request as the matchers see it. */
class StreamView implements HttpRequestView {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly host: string,
    private readonly headers: IncomingHttpHeaders,
  ) {}

  header(name: string): string | undefined {
    const v = this.headers[name]
    return Array.isArray(v) ? v.join(', ') : v
  }
}

/** One stream: what is logged about it when it closes. */
class StreamExchange {
  status = 0
  verdict: FlowVerdict | null = null
  invalid: string | null = null
  grpcStatus: string | undefined = undefined
  upstreamFailed = false
  /** The proxy reset it (so it does not count as the client's reset). */
  resetByProxy = false
  /** Refused by the node's stream budget: counted there, not as a request. */
  refused = false
  requestTrailers: IncomingHttpHeaders | null = null
  responseTrailers: IncomingHttpHeaders | null = null
  /** The path as judged and forwarded (normalized), once it is. */
  judgedPath: string | null = null
  /** The service and method a gRPC call names (null for other streams and unnamed calls). */
  readonly call: { service: string; method: string } | null

  constructor(
    readonly method: string,
    readonly path: string,
    readonly host: string | undefined,
    /** The client speaks gRPC here: the proxy answers it with grpc-status. */
    readonly grpc: boolean,
    readonly started: number,
  ) {
    this.call = grpc ? grpcCall(path) : null
  }
}

/** A request's header list size as SETTINGS_MAX_HEADER_LIST_SIZE counts it (node:http2 does not enforce it). */
function headerListSize(headers: IncomingHttpHeaders): number {
  let n = 0
  for (const name in headers) {
    const v = headers[name]
    if (v === undefined) continue
    if (Array.isArray(v)) for (const one of v) n += name.length + one.length + FIELD_OVERHEAD
    else n += name.length + v.length + FIELD_OVERHEAD
  }
  return n
}

/** The request headers to send upstream: the client's, with the normalized path and header actions applied. */
function upstreamHeaders(headers: IncomingHttpHeaders, path: string, actions: readonly HeaderAction[], log: (a: HeaderAction, got: string | undefined) => void): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ...headers, ':path': path }
  for (const a of actions) {
    const name = a.name.toLowerCase()
    const got = out[name]
    if (a.action === 'LOG') log(a, Array.isArray(got) ? got.join(', ') : got?.toString())
    else if (a.action === 'DELETE') delete out[name]
    else if (a.action === 'REPLACE') out[name] = a.value
    else if (a.value !== undefined) out[name] = got === undefined ? a.value : [...(Array.isArray(got) ? got : [String(got)]), a.value]
  }
  return out
}

/** Why a request's authority could be read two ways (RFC 9113 8.3.1: :authority and Host must agree), or null. */
function authorityProblem(headers: IncomingHttpHeaders): string | null {
  const authority = headers[':authority']
  const host = headers.host
  if (authority !== undefined && host !== undefined && authority.toLowerCase() !== host.toLowerCase()) return ':authority and Host differ'
  return hostProblem(authority ?? host ?? '')
}

export class H2Connection {
  openSlot = -1
  private readonly log: Logger
  private readonly flows: FlowLog
  private readonly origin: Origin
  private policy: FlowPolicy
  private upstream: ClientHttp2Session | null = null
  private upstreamError: UpstreamFailure | null = null
  private lastStreamId = 0
  private streams = 0
  /** When the last stream ended (or the connection opened). */
  private quietSince = performance.now()
  private readonly sourceKey: number
  private resetTokens = RESET_BURST
  private resetsCheckedAt = performance.now()

  constructor(
    readonly session: ServerHttp2Session,
    private readonly flow: Flow,
    private readonly ctx: ProxyContext,
    /** Set when the proxy terminated the client's TLS: the origin is reached over TLS too. */
    tls: OriginTls | null,
  ) {
    this.origin = tls ? { ...ctx.originOf(flow), tls } : ctx.originOf(flow)
    this.policy = FlowPolicy.of(ctx.engine, flow)
    this.sourceKey = sourceKey(flow.sourceAddress)
    const bindings = flowEnds(flow)
    this.log = ctx.logger.child(bindings)
    this.flows = new FlowLog(ctx.logger, bindings)
    session.on('stream', this.onStream)
    // Bad frames end the connection (nghttp2 sends the GOAWAY with the right code); logged here.
    session.on('error', (e: NodeJS.ErrnoException) => this.log.info({ error: e.code ?? e.message }, 'http2: connection ended on an error'))
    session.on('goaway', () => this.upstream?.close())
    session.once('close', () => {
      this.upstream?.destroy()
      this.upstream = null
    })
    session.setTimeout(ctx.idleMs, this.onIdle)
  }

  /**
   * Nothing crossed the connection for the idle time: without streams it closes; with some, a
   * PING must come back within PING_WAIT_MS or it is cut. That also ends a connection nghttp2
   * has given up on after a GOAWAY for a protocol error (it reads nothing more, so the streams
   * it left open would otherwise hold it forever).
   */
  private readonly onIdle = (): void => {
    const session = this.session
    if (this.streams === 0) return session.close()
    const timer = setTimeout(() => session.destroy(), PING_WAIT_MS)
    timer.unref()
    const sent = session.ping((err) => {
      clearTimeout(timer)
      if (err) session.destroy()
    })
    if (!sent) session.destroy()
  }

  /** Ends the connection and its upstream now (the proxy is closing). */
  destroy(): void {
    this.session.destroy()
  }

  /** When its last stream ended, if it has none open; -1 otherwise. */
  get idleSince(): number {
    return this.streams === 0 ? this.quietSince : -1
  }

  /** Closes it while it is idle (the proxy is under pressure): GOAWAY, then the end. */
  closeIdle(): void {
    this.session.close()
  }

  private readonly onStream = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void => {
    const started = performance.now()
    this.lastStreamId = stream.id ?? this.lastStreamId
    this.policy = this.policy.current(this.ctx.engine, this.flow)
    const method = headers[':method'] ?? ''
    const rawPath = headers[':path']
    const host = headers[':authority'] ?? headers.host
    const ex = new StreamExchange(method, rawPath ?? '', host, isGrpc(headers['content-type']), started)
    this.streams++
    stream.on('error', () => undefined) // a reset stream: 'close' follows and tells
    stream.once('close', () => this.onStreamClosed(stream, ex))
    if (!this.admit(stream, ex)) return
    if (headerListSize(headers) > this.ctx.maxHeaderBytes) {
      ex.invalid = `header list above ${this.ctx.maxHeaderBytes} bytes`
      this.answerLocally(stream, ex, 431, 'Request header fields too large\n', GRPC_INTERNAL)
      return
    }
    const hostIssue = authorityProblem(headers)
    const target =
      method === 'CONNECT' || rawPath === undefined ? { ok: false as const, reason: 'CONNECT is not proxied' } : hostIssue !== null ? { ok: false as const, reason: hostIssue } : normalizePath(rawPath, method)
    if (!target.ok) {
      ex.invalid = target.reason
      this.answerLocally(stream, ex, 400, `Bad request: ${target.reason}\n`, GRPC_INTERNAL)
      return
    }
    ex.judgedPath = target.path
    const verdict = httpVerdict(this.policy, new StreamView(method, target.path, host ?? '', headers))
    ex.verdict = verdict
    if (!verdict.allowed) {
      this.answerLocally(stream, ex, 403, 'Access denied\n', GRPC_PERMISSION_DENIED, `l7proxy: access denied by policy (${verdict.reason})`)
      return
    }
    const out = upstreamHeaders(headers, target.path, verdict.actions, (a, got) => this.log.info({ header: a.name, expected: a.value, got }, 'http: header mismatch'))
    this.forward(stream, ex, out, (flags & NGHTTP2_FLAG_END_STREAM) !== 0)
  }

  /**
   * Takes the stream from the node's stream budget (given back when it closes), or refuses it
   * with REFUSED_STREAM, which tells the client it was not processed and may be retried.
   */
  private admit(stream: ServerHttp2Stream, ex: StreamExchange): boolean {
    const o = this.ctx.overload
    if (o === null) return true
    const identity = this.policy.sourceIdentity
    const refusal = o.budget.takeStream(this.sourceKey, identity)
    if (refusal === Refusal.None) {
      stream.once('close', () => o.budget.giveStream(this.sourceKey, identity))
      return true
    }
    ex.refused = true
    noteRefusal(o, 'streams', refusal, { source: this.flow.sourceAddress, identity })
    this.reset(stream, ex, NGHTTP2_REFUSED_STREAM)
    return false
  }

  /** The proxy's own answer: a trailers-only gRPC status for a call, a short text otherwise. */
  private answerLocally(stream: ServerHttp2Stream, ex: StreamExchange, status: number, body: string, grpcStatus: number, grpcMessage = body.trim()): void {
    stream.resume() // a request body still coming is read and dropped
    if (stream.closed || stream.headersSent) return
    if (ex.grpc) {
      ex.status = 200
      ex.grpcStatus = String(grpcStatus)
      stream.respond(grpcTrailersOnly(grpcStatus, grpcMessage), { endStream: true })
      return
    }
    ex.status = status
    stream.respond({ ':status': status, 'content-type': 'text/plain; charset=utf-8' })
    stream.end(body)
  }

  private upstreamSession(): ClientHttp2Session {
    const live = this.upstream
    if (live !== null && !live.closed && !live.destroyed) return live
    const { host, port } = this.origin
    this.upstreamError = null
    const s = http2.connect(`${this.origin.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`, {
      createConnection: () => connectOrigin(this.origin, 'h2'),
      settings: { enablePush: false },
    })
    const connectTimer = setTimeout(() => {
      if (s.connecting) s.destroy(new UpstreamFailure(`no connection within ${this.ctx.upstream.connectMs} ms`, 'ETIMEDOUT', true))
    }, this.ctx.upstream.connectMs)
    connectTimer.unref()
    s.once('connect', () => clearTimeout(connectTimer))
    s.on('error', (e: NodeJS.ErrnoException) => {
      this.upstreamError = e instanceof UpstreamFailure ? e : new UpstreamFailure(e.message, e.code ?? 'ERR', false)
    })
    s.on('goaway', (code: number) => {
      if (this.upstream === s) this.upstream = null
      // The server is going away: so does the connection the client believes it has with it.
      // Streams it already took finish; those it refused are reset REFUSED_STREAM (retryable).
      if (!this.session.closed && !this.session.destroyed) {
        this.session.goaway(code, this.lastStreamId)
        this.session.close()
      }
    })
    s.once('close', () => {
      clearTimeout(connectTimer)
      if (this.upstream === s) this.upstream = null
    })
    this.upstream = s
    return s
  }

  private forward(stream: ServerHttp2Stream, ex: StreamExchange, headers: OutgoingHttpHeaders, endStream: boolean): void {
    let up: ClientHttp2Stream
    try {
      up = this.upstreamSession().request(headers, { endStream, waitForTrailers: !endStream })
    } catch (e) {
      this.upstreamFailed(stream, ex, new UpstreamFailure((e as Error).message, (e as NodeJS.ErrnoException).code ?? 'ERR', false))
      return
    }
    // A stream cut by its session's failure carries that failure as its cause.
    let cut: NodeJS.ErrnoException | undefined
    up.on('error', (e: NodeJS.ErrnoException) => (cut = (e.cause as NodeJS.ErrnoException | undefined) ?? e))
    if (!endStream) {
      stream.on('trailers', (t: IncomingHttpHeaders) => (ex.requestTrailers = t))
      up.on('wantTrailers', () => up.sendTrailers(ex.requestTrailers ?? {}))
      relay(stream, up)
    }
    up.on('response', (h: IncomingHttpHeaders, flags: number) => {
      if (stream.closed || stream.headersSent) return
      ex.status = Number(h[':status'])
      if ((flags & NGHTTP2_FLAG_END_STREAM) !== 0) {
        ex.grpcStatus = h['grpc-status'] as string | undefined
        stream.respond(h, { endStream: true })
        return
      }
      stream.respond(h, { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers(ex.responseTrailers ?? {}))
      relay(up, stream)
    })
    up.on('trailers', (t: IncomingHttpHeaders) => {
      ex.responseTrailers = t
      ex.grpcStatus = t['grpc-status'] as string | undefined
    })
    up.once('close', () => {
      if (stream.closed || stream.destroyed) return
      const code = up.rstCode ?? NGHTTP2_NO_ERROR
      if (ex.status === 0 && code === NGHTTP2_REFUSED_STREAM) this.reset(stream, ex, code)
      else if (ex.status === 0) this.upstreamFailed(stream, ex, this.upstreamError ?? new UpstreamFailure(cut?.message ?? `stream reset (code ${code})`, cut?.code ?? 'ECONNRESET', false))
      else if (code !== NGHTTP2_NO_ERROR) this.reset(stream, ex, code)
    })
    // The client gave up (reset, deadline, connection gone): so does the upstream stream.
    stream.once('close', () => resetStream(up, stream.rstCode && stream.rstCode !== NGHTTP2_NO_ERROR ? stream.rstCode : NGHTTP2_CANCEL))
  }

  private reset(stream: ServerHttp2Stream, ex: StreamExchange, code: number): void {
    ex.resetByProxy = true
    resetStream(stream, code)
  }

  private upstreamFailed(stream: ServerHttp2Stream, ex: StreamExchange, failure: UpstreamFailure): void {
    ex.upstreamFailed = true
    const status = failure.timedOut ? 504 : 502
    this.log.warn({ origin: `${this.origin.host}:${this.origin.port}`, error: failure.code }, `http: upstream failed (${status})`)
    this.answerLocally(stream, ex, status, status === 504 ? 'Upstream timed out\n' : 'Upstream unavailable\n', failure.timedOut ? GRPC_DEADLINE_EXCEEDED : GRPC_UNAVAILABLE, `l7proxy: upstream ${failure.timedOut ? 'timed out' : 'unavailable'} (${failure.code})`)
  }

  private onStreamClosed(stream: ServerHttp2Stream, ex: StreamExchange): void {
    if (--this.streams === 0) this.quietSince = performance.now()
    if (ex.refused) return
    const code = stream.rstCode ?? NGHTTP2_NO_ERROR
    if (code !== NGHTTP2_NO_ERROR && !ex.resetByProxy && !stream.headersSent) this.clientReset()
    countOutcome(this.ctx.stats, ex.invalid === null ? ex.verdict : null, ex.upstreamFailed)
    const status = ex.status === 0 ? 499 : ex.status
    if (ex.invalid !== null) {
      this.log.info({ verdict: 'invalid', reason: ex.invalid, path: ex.path, status, httpVersion: '2' }, 'http: ambiguous request refused')
      return
    }
    const ms = performance.now() - ex.started
    this.ctx.latency.observe(ms / 1000)
    const path = ex.judgedPath ?? ex.path
    this.flows.http({ verdict: ex.verdict!, method: ex.method, path, target: path === ex.path ? undefined : ex.path, host: ex.host, status, ms, httpVersion: '2', grpc: ex.call && { ...ex.call, status: ex.grpcStatus } })
  }

  /** A stream the client reset before its answer began: past the budget, the connection ends. */
  private clientReset(): void {
    const now = performance.now()
    this.resetTokens = Math.min(RESET_BURST, this.resetTokens + ((now - this.resetsCheckedAt) / 1000) * RESET_RATE)
    this.resetsCheckedAt = now
    if (--this.resetTokens >= 0 || this.session.destroyed) return
    this.ctx.stats.invalid++
    this.log.warn({ verdict: 'invalid', reason: `more than ${RESET_BURST} streams reset by the client (${RESET_RATE}/s)` }, 'http2: rapid reset, connection closed')
    this.session.destroy(new Error('rapid reset'), NGHTTP2_ENHANCE_YOUR_CALM)
  }
}
