// One steered client connection: its requests are parsed with llhttp (strict), each one checked
// (framing, Host, path) and judged against the flow's L7 rules, allowed ones written to the
// connection's upstream connection (taken from the pool of idle ones from this source to this
// origin, or opened, and given back when the client is done or has been idle for a second) with their bodies streamed, denied
// ones answered by the proxy. Responses go back in request order: a queue of exchanges, the head
// of which is the one answered next, whether by the upstream or by the proxy.

import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import type { HeaderAction, HttpRequestView } from '../../policy/http-matcher.js'
import { FlowLog } from '../flow-log.js'
import { type Flow, type FlowEnds, FlowPolicy, type FlowVerdict, flowEnds, httpVerdict } from '../flow-verdict.js'
import type { OriginTls } from '../tls/origin-socket.js'
import { HeadFields } from './head-fields.js'
import { dropHopByHop } from './hop-by-hop.js'
import type { MessageHead, ParseError, ParserSink } from './http1-parser.js'
import { Http1Parser } from './http1-parser.js'
import {
  CHUNKED_END,
  CONTINUE,
  CRLF,
  chunkedCoding,
  localResponse,
  requestHead,
  responseHead,
  writeBodyChunk,
} from './http1-writer.js'
import { countOutcome, type Origin, type ProxyContext } from './proxy-context.js'
import type { RawSocket } from './raw-socket.js'
import { forwardedFraming, requestHeadProblem } from './request-head.js'
import { normalizePath } from './request-path.js'
import { SocketWriter } from './socket-writer.js'
import { type ResponseSink, UpstreamConnection } from './upstream-connection.js'
import { poolKey } from './upstream-pool.js'

const DENIED_BODY = 'Access denied\n'
/** How long a connection the proxy ended may wait for the client to close in turn. */
const LINGER_MS = 2_000
const DENIED = localResponse(403, DENIED_BODY, false, false)
/**
 * A client connection idle this long gives its upstream connection back to the pool (which keeps
 * a few per source and origin): idle clients then hold no upstream socket, file or server-side
 * connection, while one that sends its next request at once finds its upstream still there.
 */
const UPSTREAM_HELD_IDLE_MS = 1_000

/** A request as the matchers see it. */
class RequestView implements HttpRequestView {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly host: string,
    private readonly fields: HeadFields,
  ) {}

  header(name: string): string | undefined {
    return this.fields.get(name)
  }
}

function withoutHeader(raw: readonly string[], name: string): string[] {
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() !== name) out.push(raw[i]!, raw[i + 1]!)
  return out
}

/** The forwarded fields of a head with headerMatches mismatch actions applied (rare: made as strings). */
function applyActions(
  fields: HeadFields,
  actions: readonly HeaderAction[],
  log: (a: HeaderAction, got: string | undefined) => void,
): HeadFields {
  let raw = fields.toRaw(true)
  for (const a of actions) {
    const name = a.name.toLowerCase()
    if (a.action === 'LOG') {
      log(a, HeadFields.fromRaw(raw).get(name))
      continue
    }
    if (a.action === 'DELETE' || a.action === 'REPLACE') raw = withoutHeader(raw, name)
    if ((a.action === 'ADD' || a.action === 'REPLACE') && a.value !== undefined) raw.push(a.name, a.value)
  }
  return HeadFields.fromRaw(raw)
}

/** One request and its response. */
class Exchange {
  status = 0
  /** Its response head has gone to the client. */
  answering = false
  /** The response body is chunk-encoded by the proxy on the way to the client. */
  chunked = false
  /** The response runs to the connection's end (an HTTP/1.0 client and no length). */
  closeDelimited = false

  constructor(
    readonly method: string,
    /** The target as sent. */
    readonly url: string,
    /** The target as judged and forwarded (normalized; `url` when refused before judging). */
    readonly path: string,
    readonly host: string | undefined,
    readonly started: number,
    /** The proxy's own whole response, or null when the upstream answers. */
    readonly local: string | null,
    /** The L7 verdict; null for a request refused before any rule saw it. */
    readonly verdict: FlowVerdict | null,
    /** Why it was refused, when it was. */
    readonly invalid: string | null,
    /** The client connection ends after this response. */
    public closeAfter: boolean,
    readonly http10: boolean,
    /** Owed a 100 Continue when it reaches the head of the queue. */
    public continueWanted: boolean,
  ) {}
}

export class ClientConnection implements ParserSink, ResponseSink {
  openSlot = -1
  private readonly parser: Http1Parser
  /** All the proxy writes to the client. */
  private readonly out: SocketWriter
  private readonly origin: Origin
  private readonly bindings: FlowEnds
  private childLog: Logger | null = null
  private readonly flows: FlowLog
  private policy: FlowPolicy
  /** Requests answered in this order; the first is the one being answered. */
  private readonly queue: Exchange[] = []
  private upstream: UpstreamConnection | null = null
  private readonly poolKey: string
  /** The request whose body is arriving goes upstream (chunk-encoded when `bodyChunked`). */
  private forwarding = false
  private bodyChunked = false
  /** The last request the connection carries has been read; later ones are ignored. */
  private lastRequestRead = false
  /** Nothing more the client sends is read (a parse error, or the connection is ending). */
  private discarding = false
  /** The client half-closed: it sends nothing more, and the connection ends after its last answer. */
  private clientEnded = false
  private clientWaitsForUpstream = false
  private upstreamWaitsForClient = false
  /** The upstream whose writes are held during the current read (the one there was at its start). */
  private heldUpstream: UpstreamConnection | null = null
  /** For the proxy's sweep: when the pending request head began (0: none), and the last activity. */
  headSince = 0
  lastActive: number
  /** When the read being parsed began (one clock read for all it holds). */
  private readAt = 0

  /**
   * `first`: bytes already read from the socket (to tell its protocol). `tls`: the socket is the
   * proxy's TLS termination of the flow; the origin is reached over TLS.
   */
  constructor(
    readonly socket: Socket | RawSocket,
    private readonly ctx: ProxyContext,
    private readonly flow: Flow,
    first: Buffer | null,
    tls: OriginTls | null = null,
  ) {
    this.lastActive = performance.now()
    this.origin = tls ? { ...ctx.originOf(flow), tls } : ctx.originOf(flow)
    this.policy = FlowPolicy.of(ctx.engine, this.flow)
    this.poolKey = poolKey(this.flow.sourceAddress, this.origin)
    this.bindings = flowEnds(this.flow)
    this.flows = new FlowLog(ctx.logger, this.bindings)
    this.out = new SocketWriter(socket)
    this.parser = new Http1Parser('request', ctx.maxHeaderBytes, this)
    socket.allowHalfOpen = true
    socket.once('end', this.onClientEnd)
    socket.once('close', this.onClose)
    this.parser.readFrom(socket, first)
  }

  /** The connection's logger for lines other than flow lines (rare: made when first needed). */
  private get log(): Logger {
    return (this.childLog ??= this.ctx.logger.child(this.bindings))
  }

  /** Idle and header deadlines, called by the proxy's sweep. */
  sweep(now: number, headersMs: number, idleMs: number): void {
    if (this.headSince > 0 && now - this.headSince > headersMs && this.queue.length === 0) {
      this.ctx.stats.invalid++
      this.log.info(
        { verdict: 'invalid', reason: 'request headers timed out', status: 408 },
        'http: slow request refused',
      )
      this.out.write(localResponse(408, 'Request timed out\n', true, false))
      this.end()
      return
    }
    if (this.queue.length === 0 && !this.forwarding && now - this.lastActive > idleMs) {
      this.socket.destroy()
      return
    }
    if (this.upstream !== null && this.idleSince >= 0 && now - this.lastActive > UPSTREAM_HELD_IDLE_MS)
      this.releaseUpstream()
    this.upstream?.sweep(now, this.ctx.upstream)
  }

  /** Ends the connection now (the proxy is closing). */
  destroy(): void {
    this.socket.destroy()
  }

  /** When it last had something to do, if nothing is in flight or arriving now; -1 otherwise. */
  get idleSince(): number {
    return this.queue.length === 0 && !this.forwarding && this.headSince === 0 ? this.lastActive : -1
  }

  /** Closes it while it is idle (the proxy is under pressure). */
  closeIdle(): void {
    this.socket.destroy()
  }

  // What parsing one read writes (local answers, 100s; request heads and bodies) leaves in one
  // write per socket.
  onReadStart(): void {
    this.readAt = performance.now()
    this.out.hold()
    this.heldUpstream = this.upstream
    this.heldUpstream?.out.hold()
  }

  onReadEnd(err: ParseError | null): void {
    this.lastActive = this.readAt
    if (err !== null && !this.discarding) this.malformed(err)
    this.heldUpstream?.out.release()
    this.heldUpstream = null
    this.out.release()
  }

  private readonly onClose = (): void => {
    this.stop()
    this.parser.close()
    for (const ex of this.queue) if (ex.local === null) this.logExchange(ex, ex.answering ? ex.status : 499)
    this.queue.length = 0
    this.releaseUpstream()
  }

  /**
   * The client half-closed (as `nc -N` or a request piped into a socket do): what it asked is
   * still answered, as HAProxy and nginx do, then the connection ends. A request it cut short is
   * refused like any malformed one, and never completes upstream.
   */
  private readonly onClientEnd = (): void => {
    this.clientEnded = true
    this.parser.finish()
    this.stop()
    if (this.queue.length === 0 && !this.forwarding) this.end()
  }

  /** Gives the upstream connection back to the pool, which keeps it if nothing is half-done on it. */
  private releaseUpstream(): void {
    const up = this.upstream
    if (up === null) return
    this.upstream = null
    if (this.forwarding || this.clientWaitsForUpstream) up.retire()
    else this.ctx.pool.park(this.poolKey, up, performance.now())
  }

  /** Reads nothing more from the client; what is queued is still answered. */
  private stop(): void {
    this.lastRequestRead = true
    this.discarding = true
  }

  /** Half-closes after the last answer; a client that does not close in turn is cut off. */
  private end(): void {
    this.stop()
    this.releaseUpstream()
    this.out.end()
    this.socket.setTimeout(LINGER_MS, () => this.socket.destroy())
  }

  private malformed(err: ParseError): void {
    this.ctx.stats.invalid++
    this.log.info({ verdict: 'invalid', error: err.code, reason: err.reason }, 'http: malformed request refused')
    this.stop()
    // A request already streaming upstream must never complete there: cut it, and the client
    // learns from the connection's end; with nothing in flight it gets a 400.
    if (this.forwarding || this.queue.length > 0) {
      this.socket.destroy()
      return
    }
    this.out.write(localResponse(400, 'Bad request\n', true, false))
    this.end()
  }

  onMessageBegin(): void {
    this.headSince = this.readAt
  }

  onHead(head: MessageHead): boolean {
    this.headSince = 0
    if (this.lastRequestRead) return true
    const started = this.readAt
    this.policy = this.policy.current(this.ctx.engine, this.flow)
    const fields = head.fields
    const hostAt = fields.indexOf('host')
    const host = hostAt < 0 ? undefined : fields.value(hostAt)
    const http10 = head.versionMinor === 0
    const closeAfter = !head.keepAlive || this.ctx.draining
    const problem = requestHeadProblem(head, hostAt, host, this.ctx.maxHeaders)
    const target = problem === null ? normalizePath(head.url, head.method) : { ok: false as const, reason: problem }
    if (!target.ok) {
      this.stop()
      const body = `Bad request: ${target.reason}\n`
      this.enqueue(
        new Exchange(
          head.method,
          head.url,
          head.url,
          host,
          started,
          localResponse(400, body, true, head.method === 'HEAD'),
          null,
          target.reason,
          true,
          http10,
          false,
        ),
      )
      return true
    }
    const path = target.path
    const verdict = httpVerdict(this.policy, new RequestView(head.method, path, host ?? '', fields))
    const expect = http10 ? undefined : fields.get('expect')
    const expectContinue = expect !== undefined && /^100-continue$/i.test(expect)
    if (!verdict.allowed) {
      // The body is read and dropped, so the connection stays usable; unless the client waits
      // for a 100 that will not come: then whether a body follows is unknown, and it closes.
      const close = closeAfter || expectContinue
      if (close) this.stop()
      const response =
        close || head.method === 'HEAD' ? localResponse(403, DENIED_BODY, close, head.method === 'HEAD') : DENIED
      this.enqueue(
        new Exchange(head.method, head.url, path, host, started, response, verdict, null, close, http10, false),
      )
      return false
    }
    dropHopByHop(fields)
    const framing = forwardedFraming(fields)
    const forwarded =
      verdict.actions.length === 0
        ? fields
        : applyActions(fields, verdict.actions, (a, got) =>
            this.log.info({ header: a.name, expected: a.value, got }, 'http: header mismatch'),
          )
    if (closeAfter) this.lastRequestRead = true
    this.bodyChunked = framing.startsWith('transfer-encoding')
    this.forwarding = true
    const upstream = (this.upstream ??=
      this.ctx.pool.take(this.poolKey, started)?.adopt(this) ??
      new UpstreamConnection(this.origin, this.ctx.maxHeaderBytes, this, started))
    upstream.sendHead(requestHead(head.method, path, forwarded, framing), started)
    this.enqueue(
      new Exchange(head.method, head.url, path, host, started, null, verdict, null, closeAfter, http10, expectContinue),
    )
    return false
  }

  onBody(chunk: Buffer): void {
    if (!this.forwarding || this.upstream === null) return
    const up = this.upstream
    if (!writeBodyChunk(up, chunk, this.bodyChunked) && !this.clientWaitsForUpstream) {
      this.clientWaitsForUpstream = true
      this.parser.pauseReading()
      up.out.whenDrained(this.resumeClient)
    }
  }

  private readonly resumeClient = (): void => {
    this.clientWaitsForUpstream = false
    this.parser.resumeReading()
  }

  onMessageComplete(): void {
    if (this.forwarding && this.bodyChunked) this.upstream?.write(CHUNKED_END)
    this.forwarding = false
    // After the last request the rest of what the client sends is not read.
    if (this.lastRequestRead) this.discarding = true
  }

  private enqueue(ex: Exchange): void {
    this.queue.push(ex)
    if (this.queue.length === 1) this.pump()
  }

  /** Answers what the proxy can from the head of the queue, up to the next upstream exchange. */
  private pump(): void {
    while (this.queue.length > 0) {
      const ex = this.queue[0]!
      if (ex.local === null) {
        if (ex.continueWanted) {
          ex.continueWanted = false
          this.out.write(CONTINUE)
        }
        return
      }
      this.out.write(ex.local)
      if (!this.finish(ex, ex.verdict === null ? 400 : 403)) return
    }
  }

  /** Logs an answered exchange and takes it off the queue; false when the connection ends with it. */
  private finish(ex: Exchange, status: number, close = ex.closeAfter || ex.closeDelimited): boolean {
    this.queue.shift()
    this.logExchange(ex, status)
    if (!close && !(this.clientEnded && this.queue.length === 0)) return true
    this.end()
    return false
  }

  private logExchange(ex: Exchange, status: number): void {
    countOutcome(this.ctx.stats, ex.invalid === null ? ex.verdict : null, status === 502 || status === 504)
    if (ex.invalid !== null) {
      this.log.info({ verdict: 'invalid', reason: ex.invalid, path: ex.url, status }, 'http: ambiguous request refused')
      return
    }
    const ms = performance.now() - ex.started
    this.ctx.latency.observe(ms / 1000)
    this.flows.http({
      verdict: ex.verdict!,
      method: ex.method,
      path: ex.path,
      target: ex.path === ex.url ? undefined : ex.url,
      host: ex.host,
      status,
      ms,
    })
  }

  // ---- responses from the upstream connection ----

  onResponseHead(head: MessageHead): boolean {
    const ex = this.queue[0]
    if (ex === undefined || ex.local !== null) {
      this.socket.destroy() // the upstream's accounting says this cannot happen
      return true
    }
    if (head.status < 200) return false // 1xx: the proxy answered any 100-continue itself
    const noBody = ex.method === 'HEAD' || head.status === 204 || head.status === 304
    const fields = head.fields
    let extra = ''
    if (!noBody) {
      const te = fields.get('transfer-encoding')
      const cl = fields.indexOf('content-length')
      if (te !== undefined || cl < 0) {
        // A body of unknown length: chunk-encoded for HTTP/1.1, to the connection's end for 1.0;
        // a Content-Length beside a Transfer-Encoding is not what frames it, and is not passed on.
        if (cl >= 0) fields.drop(cl)
        if (ex.http10) ex.closeDelimited = true
        else {
          ex.chunked = true
          extra = `transfer-encoding: ${chunkedCoding(te)}${CRLF}`
        }
      }
    }
    // Draining: the last exchange read before it began ends its connection too (one read after it already does).
    if (this.ctx.draining && !ex.closeAfter && this.queue.length === 1) {
      ex.closeAfter = true
      this.lastRequestRead = true
    }
    if (ex.closeAfter || ex.closeDelimited) extra += `connection: close${CRLF}`
    else if (ex.http10) extra += `connection: keep-alive${CRLF}`
    ex.status = head.status
    ex.answering = true
    dropHopByHop(fields)
    this.out.write(responseHead(head.status, head.reason, fields, extra))
    return noBody
  }

  onResponseBody(chunk: Buffer): void {
    if (
      !writeBodyChunk(this.out, chunk, this.queue[0]!.chunked) &&
      !this.upstreamWaitsForClient &&
      this.upstream !== null
    ) {
      this.upstreamWaitsForClient = true
      this.upstream.pauseReading()
      this.out.whenDrained(this.resumeUpstream)
    }
  }

  private readonly resumeUpstream = (): void => {
    this.upstreamWaitsForClient = false
    this.upstream?.resumeReading()
  }

  onResponseComplete(): void {
    const ex = this.queue[0]!
    if (ex.chunked) this.out.write(CHUNKED_END)
    if (this.finish(ex, ex.status)) this.pump()
  }

  // What one read of the upstream writes to the client (the responses it completes) leaves in one write.
  onUpstreamReadStart(): void {
    this.out.hold()
  }

  onUpstreamReadEnd(): void {
    this.out.release()
  }

  onUpstreamClosed(failure: { error: NodeJS.ErrnoException; timedOut: boolean } | null): void {
    this.upstream = null
    this.forwarding = false
    const ex = this.queue[0]
    if (failure === null || ex === undefined || ex.local !== null) return
    if (ex.answering) {
      // Mid-body: the client must see the response was cut.
      this.logExchange(ex, ex.status)
      this.socket.destroy()
      return
    }
    const status = failure.timedOut ? 504 : 502
    this.log.warn(
      { origin: `${this.origin.host}:${this.origin.port}`, error: failure.error.code ?? failure.error.message },
      `http: upstream failed (${status})`,
    )
    // What was sent behind it may or may not have been processed: the connection ends here, and
    // those requests are logged as failed with it.
    const behind = this.queue.splice(1)
    this.out.write(
      localResponse(
        status,
        status === 504 ? 'Upstream timed out\n' : 'Upstream unavailable\n',
        true,
        ex.method === 'HEAD',
      ),
    )
    this.finish(ex, status, true)
    for (const b of behind) if (b.local === null) this.logExchange(b, status)
  }
}
