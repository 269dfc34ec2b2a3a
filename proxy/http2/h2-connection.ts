// One steered HTTP/2 client connection (h2c with prior knowledge, or h2 inside TLS the proxy
// terminated), spoken by the proxy's own HTTP/2 (h2-session.ts) on both hops. Every stream is
// judged on its own against the flow's L7 rules with the HTTP/1.1 matcher (:method, normalized
// :path, :authority, headers). Allowed streams go to the original destination over this
// connection's own upstream HTTP/2 connection (opened at the first allowed stream, reused by the
// next ones); bodies, trailers and resets cross frame by frame, credited back to the sender only
// once passed on, so flow control carries back-pressure end to end. The upstream's GOAWAY is
// passed to the client. Denied gRPC calls end with grpc-status 7 (PERMISSION_DENIED) in a
// trailers-only response; other denied streams get a 403. Malformed streams are reset with
// PROTOCOL_ERROR; rapid resets and idle connections are bounded here.

import type { Socket } from 'node:net'
import { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { HeaderAction, HttpRequestView } from '../../policy/http-matcher.js'
import { FlowLog } from '../flow-log.js'
import { type Flow, FlowPolicy, type FlowVerdict, flowEnds, httpVerdict } from '../flow-verdict.js'
import { countOutcome, type Origin, type ProxyContext } from '../http/proxy-context.js'
import { RawSocket } from '../http/raw-socket.js'
import { hostProblem } from '../http/request-head.js'
import { normalizePath } from '../http/request-path.js'
import { SocketReads } from '../http/socket-reads.js'
import { SocketWriter } from '../http/socket-writer.js'
import { Refusal, sourceKey } from '../overload/shared-budget.js'
import { noteRefusal } from '../overload/thread-overload.js'
import { connectOrigin, type OriginTls } from '../tls/origin-socket.js'
import {
  GRPC_DEADLINE_EXCEEDED,
  GRPC_INTERNAL,
  GRPC_PERMISSION_DENIED,
  GRPC_UNAVAILABLE,
  grpcCall,
  grpcTrailersOnly,
  isGrpc,
} from './grpc.js'
import { requestProblem, responseProblem, trailersProblem } from './h2-fields.js'
import { ErrorCode, type Http2Error } from './h2-frames.js'
import { H2Session, type H2Stream, HeaderList, type SessionHandler, type SessionLimits } from './h2-session.js'

/**
 * Streams a client may reset before their answer began, or open past a limit (refused): a
 * bucket of RESET_BURST refilled at RESET_RATE a second. A client past it is cut off with
 * ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487): each such stream costs the proxy a rule
 * check and maybe an upstream stream.
 */
const RESET_BURST = 100
const RESET_RATE = 20
/** How long an idle connection with open streams has to answer a PING. */
const PING_WAIT_MS = 5_000
/** How long a connection that ended may take to read what was last sent before it is cut. */
const LINGER_MS = 2_000
const MAX_CONCURRENT_STREAMS = 100
/** Receive windows: a stream's, and the connection's (what may wait in the proxy for a slow hop). */
const STREAM_WINDOW = 1 << 20
const CONNECTION_WINDOW = 4 << 20

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
    private readonly fields: HeaderList,
  ) {}

  header(name: string): string | undefined {
    let out: string | undefined
    const f = this.fields
    for (let i = 0; i < f.names.length; i++)
      if (f.names[i] === name) out = out === undefined ? f.values[i] : `${out}, ${f.values[i]}`
    return out
  }
}

/** One client stream and what became of it: its upstream stream, and what is logged when it closes. */
class Exchange {
  status = 0
  verdict: FlowVerdict | null = null
  invalid: string | null = null
  grpcStatus: string | undefined = undefined
  upstreamFailed = false
  /** The proxy reset it (so it does not count as the client's reset). */
  resetByProxy = false
  /** A final response head went to the client. */
  responded = false
  up: H2Stream | null = null
  /** The path as judged and forwarded (normalized), once it is. */
  judgedPath: string | null = null
  /** The service and method a gRPC call names (null for other streams and unnamed calls). */
  readonly call: { service: string; method: string } | null

  constructor(
    readonly client: H2Stream,
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

/**
 * The request to send upstream: the client's own fields (the list is the proxy's, made for this
 * block) with the normalized path, and header actions applied (rare: the list is made anew).
 */
function upstreamRequest(
  f: HeaderList,
  path: string,
  actions: readonly HeaderAction[],
  log: (a: HeaderAction, got: string | undefined) => void,
): HeaderList {
  f.values[f.names.indexOf(':path')] = path
  if (actions.length === 0) return f
  const out = f.names.map((n, i): [string, string, boolean] => [n, f.values[i]!, f.never?.includes(i) ?? false])
  for (const a of actions) {
    const name = a.name.toLowerCase()
    const at = out.findIndex((x) => x[0] === name)
    if (a.action === 'LOG') log(a, at < 0 ? undefined : out[at]![1])
    else if (a.action === 'DELETE') for (let i = out.length - 1; i >= 0; i--) out[i]![0] === name && out.splice(i, 1)
    else if (a.action === 'REPLACE' && a.value !== undefined) {
      for (let i = out.length - 1; i >= 0; i--) out[i]![0] === name && out.splice(i, 1)
      out.push([name, a.value, false])
    } else if (a.value !== undefined) out.push([name, a.value, false])
  }
  return HeaderList.of(out)
}

/** Why a request's authority could be read two ways (RFC 9113 8.3.1: :authority and Host must agree), or null. */
function authorityProblem(authority: string | undefined, host: string | undefined): string | null {
  if (authority !== undefined && host !== undefined && authority.toLowerCase() !== host.toLowerCase())
    return ':authority and Host differ'
  return hostProblem(authority ?? host ?? '')
}

/** A hop's session ended: its socket's reads stop, its write side ends after what is held, and it is cut if the peer lingers. */
function endSocket(session: H2Session, reads: SocketReads, socket: Socket | RawSocket): void {
  reads.stop()
  session.out.end()
  setTimeout(() => socket.destroy(), LINGER_MS).unref()
}

function limits(ctx: ProxyContext): SessionLimits {
  return {
    maxConcurrentStreams: MAX_CONCURRENT_STREAMS,
    streamWindow: STREAM_WINDOW,
    connectionWindow: CONNECTION_WINDOW,
    maxHeaderListSize: ctx.maxHeaderBytes,
    // Pseudo-headers count too: four of them, besides the regular fields.
    maxHeaderFields: ctx.maxHeaders + 4,
    maxHeaderBlock: Math.max(64 * 1024, 4 * ctx.maxHeaderBytes),
  }
}

/** The upstream hop: its socket and session, whose events go to the connection's exchanges. */
class Upstream implements SessionHandler {
  readonly session: H2Session
  error: UpstreamFailure | null = null
  private readonly reads: SocketReads

  constructor(
    readonly socket: Socket,
    private readonly c: H2Connection,
    connectMs: number,
  ) {
    this.session = new H2Session('client', new SocketWriter(socket), this, limits(c.ctx))
    this.reads = new SocketReads((data, n) => this.session.receive(data, 0, n))
    const timer = setTimeout(() => {
      if (socket.connecting)
        socket.destroy(new UpstreamFailure(`no connection within ${connectMs} ms`, 'ETIMEDOUT', true))
    }, connectMs)
    timer.unref()
    socket.on('error', (e: NodeJS.ErrnoException) => {
      this.error ??= e instanceof UpstreamFailure ? e : new UpstreamFailure(e.message, e.code ?? 'ERR', false)
    })
    socket.once('close', () => {
      clearTimeout(timer)
      this.session.destroy()
    })
    // A handle is read from once connected (libuv refuses reads before); TLS through 'data' at once.
    if (socket.connecting && !(socket instanceof TLSSocket)) socket.once('connect', () => this.reads.start(socket))
    else this.reads.start(socket)
    this.session.start()
  }

  get usable(): boolean {
    return !this.session.ended && !this.session.goawayReceived && !this.socket.destroyed
  }

  destroy(): void {
    this.session.destroy()
    this.socket.destroy()
  }

  onReadStart(): void {
    this.c.session.out.hold()
  }

  onReadEnd(): void {
    this.c.session.out.release()
  }

  onHeaders(u: H2Stream, fields: HeaderList, endStream: boolean): void {
    this.c.upstreamHeaders(u.user as Exchange, fields, endStream)
  }

  onData(u: H2Stream, src: Buffer, start: number, end: number, endStream: boolean): void {
    const ex = u.user as Exchange
    const sent = this.c.session.sendData(ex.client, src, start, end, endStream)
    this.session.consume(u, sent)
  }

  onSent(u: H2Stream, n: number): void {
    this.c.session.consume((u.user as Exchange).client, n)
  }

  onReset(u: H2Stream, code: number): void {
    this.c.upstreamReset(u.user as Exchange, code, this.error)
  }

  onStreamClosed(u: H2Stream): void {
    const ex = u.user as Exchange
    if (ex.up === u) ex.up = null
  }

  onGoaway(_last: number, code: number): void {
    this.c.upstreamGoaway(code)
  }

  onSessionEnd(error: Http2Error | null): void {
    if (error !== null) this.error ??= new UpstreamFailure(error.reason, 'EPROTO', false)
    endSocket(this.session, this.reads, this.socket)
  }
}

export class H2Connection implements SessionHandler {
  openSlot = -1
  readonly session: H2Session
  private readonly log: Logger
  private readonly flows: FlowLog
  private readonly origin: Origin
  private policy: FlowPolicy
  private upstream: Upstream | null = null
  private readonly reads: SocketReads
  /** When the last stream ended (or the connection opened), and when it last read anything. */
  private quietSince = performance.now()
  private lastRead = performance.now()
  private idleTimer: NodeJS.Timeout | null = null
  private pinging = false
  private readonly sourceKey: number
  private resetTokens = RESET_BURST
  private resetsCheckedAt = performance.now()

  constructor(
    readonly socket: Socket | RawSocket,
    private readonly flow: Flow,
    readonly ctx: ProxyContext,
    /** Set when the proxy terminated the client's TLS: the origin is reached over TLS too. */
    tls: OriginTls | null,
    /** The connection's first bytes, already read (the preface, or part of it). */
    first: Buffer | null,
  ) {
    this.origin = tls ? { ...ctx.originOf(flow), tls } : ctx.originOf(flow)
    this.policy = FlowPolicy.of(ctx.engine, flow)
    this.sourceKey = sourceKey(flow.sourceAddress)
    const bindings = flowEnds(flow)
    this.log = ctx.logger.child(bindings)
    this.flows = new FlowLog(ctx.logger, bindings)
    this.session = new H2Session('server', new SocketWriter(socket), this, limits(ctx))
    this.reads = new SocketReads((data, n) => this.session.receive(data, 0, n))
    socket.on('error', () => undefined) // a reset: 'close' follows
    socket.once('close', () => {
      this.stopIdleTimer()
      this.session.destroy()
      this.upstream?.destroy()
      this.upstream = null
    })
    this.session.start()
    if (first !== null) this.session.receive(first, 0, first.length)
    this.reads.start(socket)
    if (!(socket instanceof RawSocket)) socket.resume() // held back for this side (http-proxy.ts)
    this.armIdleTimer(ctx.idleMs)
  }

  /** Ends the connection and its upstream now (the proxy is closing). */
  destroy(): void {
    this.socket.destroy()
  }

  /** When its last stream ended, if it has none open; -1 otherwise. */
  get idleSince(): number {
    return this.session.openStreams === 0 ? this.quietSince : -1
  }

  /** Closes it gently (idle under pressure, or the proxy draining): GOAWAY; its open streams finish. */
  closeIdle(): void {
    this.session.goaway(ErrorCode.NO_ERROR)
  }

  // ---- idle ----

  private armIdleTimer(ms: number): void {
    this.idleTimer = setTimeout(this.onIdleTimer, ms)
    this.idleTimer.unref()
  }

  private stopIdleTimer(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer)
    this.idleTimer = null
  }

  /**
   * Nothing read for the idle time: without streams the connection closes; with some, a PING
   * must come back within PING_WAIT_MS or it is cut.
   */
  private readonly onIdleTimer = (): void => {
    const quiet = performance.now() - this.lastRead
    if (this.session.ended) return
    if (quiet < this.ctx.idleMs) return this.armIdleTimer(this.ctx.idleMs - quiet)
    if (this.session.openStreams === 0) return this.closeIdle()
    if (this.pinging) return this.destroy()
    this.pinging = true
    this.session.ping(() => (this.pinging = false))
    this.armIdleTimer(PING_WAIT_MS)
  }

  // ---- the client's session ----

  onReadStart(): void {
    this.lastRead = performance.now()
    this.upstream?.session.out.hold()
  }

  onReadEnd(): void {
    this.upstream?.session.out.release()
  }

  /** Takes the stream from the node's stream budget (given back when it closes), or refuses it (REFUSED_STREAM: retryable). */
  onStreamOpen(): boolean {
    const o = this.ctx.overload
    if (o === null) return true
    const identity = this.policy.sourceIdentity
    const refusal = o.budget.takeStream(this.sourceKey, identity)
    if (refusal === Refusal.None) return true
    noteRefusal(o, 'streams', refusal, { source: this.flow.sourceAddress, identity })
    return false
  }

  /** A refused stream costs its header block like a reset one: it counts against the same budget. */
  onStreamRefused(): void {
    if (!this.session.ended) this.clientReset()
  }

  onHeaders(s: H2Stream, fields: HeaderList, endStream: boolean): void {
    if (s.headerBlocks > 1) return this.requestTrailers(s, fields)
    const started = performance.now()
    this.policy = this.policy.current(this.ctx.engine, this.flow)
    const method = fields.get(':method') ?? ''
    const rawPath = fields.get(':path')
    const authority = fields.get(':authority')
    const host = authority ?? fields.get('host')
    const ex = new Exchange(s, method, rawPath ?? '', host, isGrpc(fields.get('content-type')), started)
    s.user = ex
    if (fields.tooBig) {
      ex.invalid = `header list above ${this.ctx.maxHeaderBytes} bytes`
      return this.answerLocally(ex, 431, 'Request header fields too large\n', GRPC_INTERNAL)
    }
    const malformed = requestProblem(fields)
    if (malformed !== null) {
      ex.invalid = malformed
      ex.status = 400
      return this.reset(ex, ErrorCode.PROTOCOL_ERROR)
    }
    const hostIssue = authorityProblem(authority, fields.get('host'))
    const target =
      method === 'CONNECT' || rawPath === undefined
        ? { ok: false as const, reason: 'CONNECT is not proxied' }
        : hostIssue !== null
          ? { ok: false as const, reason: hostIssue }
          : normalizePath(rawPath, method)
    if (!target.ok) {
      ex.invalid = target.reason
      return this.answerLocally(ex, 400, `Bad request: ${target.reason}\n`, GRPC_INTERNAL)
    }
    ex.judgedPath = target.path
    const verdict = httpVerdict(this.policy, new StreamView(method, target.path, host ?? '', fields))
    ex.verdict = verdict
    if (!verdict.allowed)
      return this.answerLocally(
        ex,
        403,
        'Access denied\n',
        GRPC_PERMISSION_DENIED,
        `l7proxy: access denied by policy (${verdict.reason})`,
      )
    const request = upstreamRequest(fields, target.path, verdict.actions, (a, got) =>
      this.log.info({ header: a.name, expected: a.value, got }, 'http: header mismatch'),
    )
    this.forward(ex, request, endStream)
  }

  private requestTrailers(s: H2Stream, fields: HeaderList): void {
    const ex = s.user as Exchange | null
    if (ex === null) return
    const problem = fields.tooBig ? 'trailers too large' : trailersProblem(fields)
    if (problem !== null) {
      this.log.info({ verdict: 'invalid', reason: problem }, 'http2: bad request trailers, stream reset')
      return this.reset(ex, ErrorCode.PROTOCOL_ERROR)
    }
    if (ex.up !== null) this.upstream!.session.sendHeaders(ex.up, fields, true)
  }

  onData(s: H2Stream, src: Buffer, start: number, end: number, endStream: boolean): void {
    const ex = s.user as Exchange | null
    const up = ex?.up ?? null
    if (up === null) return this.session.consume(s, end - start) // answered by the proxy: read and dropped
    const sent = this.upstream!.session.sendData(up, src, start, end, endStream)
    this.session.consume(s, sent)
  }

  onSent(s: H2Stream, n: number): void {
    const up = (s.user as Exchange | null)?.up ?? null
    if (up !== null) this.upstream!.session.consume(up, n)
  }

  /** The client reset the stream (or the connection ended under it): so does the upstream stream. */
  onReset(s: H2Stream, code: number): void {
    const ex = s.user as Exchange | null
    if (ex === null) return
    if (ex.up !== null) this.upstream?.session.reset(ex.up, code === ErrorCode.NO_ERROR ? ErrorCode.CANCEL : code)
    if (!ex.responded && !this.session.ended) this.clientReset()
  }

  onStreamClosed(s: H2Stream): void {
    if (this.session.openStreams === 0) this.quietSince = performance.now()
    const o = this.ctx.overload
    if (o !== null) o.budget.giveStream(this.sourceKey, this.policy.sourceIdentity)
    const ex = s.user as Exchange | null
    if (ex === null) return
    // The client is done with it before the upstream was (a completed one is ending both ways now).
    const up = ex.up
    if (up !== null && !(up.remoteEnded && up.localEnded)) this.upstream?.session.reset(up, ErrorCode.CANCEL)
    this.logExchange(ex)
  }

  onGoaway(): void {}

  onSessionEnd(error: Http2Error | null): void {
    // Bad frames end the connection (the GOAWAY with its code has gone out); logged here.
    if (error !== null && error.code !== ErrorCode.NO_ERROR)
      this.log.info({ error: error.reason, code: error.code }, 'http2: connection ended on an error')
    this.stopIdleTimer()
    this.upstream?.session.goaway(ErrorCode.NO_ERROR)
    endSocket(this.session, this.reads, this.socket)
  }

  // ---- streams ----

  /** The proxy's own answer: a trailers-only gRPC status for a call, a short text otherwise. */
  private answerLocally(
    ex: Exchange,
    status: number,
    body: string,
    grpcStatus: number,
    grpcMessage = body.trim(),
  ): void {
    const s = ex.client
    if (s.localEnded || ex.responded) return
    ex.responded = true
    if (ex.grpc) {
      ex.status = 200
      ex.grpcStatus = String(grpcStatus)
      this.session.sendHeaders(s, HeaderList.of(grpcTrailersOnly(grpcStatus, grpcMessage)), true)
    } else {
      ex.status = status
      this.session.sendHeaders(
        s,
        new HeaderList().add(':status', String(status)).add('content-type', 'text/plain; charset=utf-8'),
        false,
      )
      const bytes = Buffer.from(body)
      this.session.sendData(s, bytes, 0, bytes.length, true)
    }
    // A request body still coming is read and dropped; one that will not come ends the stream now.
    if (!s.remoteEnded && !s.closed) this.reset(ex, ErrorCode.NO_ERROR)
  }

  private reset(ex: Exchange, code: number): void {
    ex.resetByProxy = true
    this.session.reset(ex.client, code)
  }

  private upstreamSession(): Upstream {
    const live = this.upstream
    if (live?.usable) return live
    const u = new Upstream(connectOrigin(this.origin, 'h2'), this, this.ctx.upstream.connectMs)
    u.socket.once('close', () => {
      if (this.upstream === u) this.upstream = null
    })
    this.upstream = u
    return u
  }

  private forward(ex: Exchange, request: HeaderList, endStream: boolean): void {
    const u = this.upstreamSession()
    const up = u.session.request(request, endStream)
    if (up === null) {
      // The upstream is going away, or at its stream limit: not processed, so retryable.
      return this.reset(ex, ErrorCode.REFUSED_STREAM)
    }
    up.user = ex
    ex.up = up
  }

  /** A header block from the upstream on `ex`'s stream: the response head (1xx too), or trailers. */
  upstreamHeaders(ex: Exchange, fields: HeaderList, endStream: boolean): void {
    const s = ex.client
    if (s.closed) return
    if (!ex.responded) {
      const problem = fields.tooBig ? 'response header list too large' : responseProblem(fields)
      if (problem !== null) {
        this.upstream?.session.reset(ex.up!, ErrorCode.PROTOCOL_ERROR)
        return this.upstreamFailed(ex, new UpstreamFailure(problem, 'EPROTO', false))
      }
      const status = fields.values[0]!
      if (status[0] === '1') return this.session.sendHeaders(s, fields, false)
      ex.responded = true
      ex.status = Number(status)
      if (endStream) ex.grpcStatus = fields.get('grpc-status')
      return this.session.sendHeaders(s, fields, endStream)
    }
    const problem = fields.tooBig ? 'trailers too large' : trailersProblem(fields)
    if (problem !== null) {
      this.upstream?.session.reset(ex.up!, ErrorCode.PROTOCOL_ERROR)
      return this.reset(ex, ErrorCode.INTERNAL_ERROR)
    }
    ex.grpcStatus = fields.get('grpc-status')
    this.session.sendHeaders(s, fields, true)
  }

  /** The upstream reset `ex`'s stream, or failed under it. */
  upstreamReset(ex: Exchange, code: number, error: UpstreamFailure | null): void {
    ex.up = null
    const s = ex.client
    if (s.closed) return
    if (!ex.responded && code === ErrorCode.REFUSED_STREAM) return this.reset(ex, code)
    if (!ex.responded)
      return this.upstreamFailed(ex, error ?? new UpstreamFailure(`stream reset (code ${code})`, 'ECONNRESET', false))
    this.reset(ex, code === ErrorCode.NO_ERROR ? ErrorCode.CANCEL : code)
  }

  /**
   * The server is going away: so does the connection the client believes it has with it.
   * Streams it already took finish; those it refused are reset REFUSED_STREAM (retryable).
   */
  upstreamGoaway(code: number): void {
    this.session.goaway(code === ErrorCode.NO_ERROR ? ErrorCode.NO_ERROR : code)
  }

  private upstreamFailed(ex: Exchange, failure: UpstreamFailure): void {
    ex.upstreamFailed = true
    const status = failure.timedOut ? 504 : 502
    this.log.warn(
      { origin: `${this.origin.host}:${this.origin.port}`, error: failure.code },
      `http: upstream failed (${status})`,
    )
    this.answerLocally(
      ex,
      status,
      status === 504 ? 'Upstream timed out\n' : 'Upstream unavailable\n',
      failure.timedOut ? GRPC_DEADLINE_EXCEEDED : GRPC_UNAVAILABLE,
      `l7proxy: upstream ${failure.timedOut ? 'timed out' : 'unavailable'} (${failure.code})`,
    )
  }

  private logExchange(ex: Exchange): void {
    countOutcome(this.ctx.stats, ex.invalid === null ? ex.verdict : null, ex.upstreamFailed)
    const status = ex.status === 0 ? 499 : ex.status
    if (ex.invalid !== null) {
      this.log.info(
        { verdict: 'invalid', reason: ex.invalid, path: ex.path, status, httpVersion: '2' },
        'http: ambiguous request refused',
      )
      return
    }
    const ms = performance.now() - ex.started
    this.ctx.latency.observe(ms / 1000)
    const path = ex.judgedPath ?? ex.path
    this.flows.http({
      verdict: ex.verdict!,
      method: ex.method,
      path,
      target: path === ex.path ? undefined : ex.path,
      host: ex.host,
      status,
      ms,
      httpVersion: '2',
      grpc: ex.call && { ...ex.call, status: ex.grpcStatus },
    })
  }

  /** A stream the client reset before its answer began: past the budget, the connection ends. */
  private clientReset(): void {
    const now = performance.now()
    this.resetTokens = Math.min(RESET_BURST, this.resetTokens + ((now - this.resetsCheckedAt) / 1000) * RESET_RATE)
    this.resetsCheckedAt = now
    if (--this.resetTokens >= 0) return
    this.ctx.stats.invalid++
    this.log.warn(
      { verdict: 'invalid', reason: `more than ${RESET_BURST} streams reset by the client (${RESET_RATE}/s)` },
      'http2: rapid reset, connection closed',
    )
    this.session.goaway(ErrorCode.ENHANCE_YOUR_CALM, 'rapid reset')
  }
}
