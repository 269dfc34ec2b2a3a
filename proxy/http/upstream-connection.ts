// The proxy's connection to a client connection's original destination: requests are written to
// it in order (several may be in flight when the client pipelines) and responses are parsed with
// llhttp and handed, one event at a time, to the client side. It serves one client connection at
// a time; between messages (nothing owed, nothing half-written) it may be parked in the
// UpstreamPool for the next connection from the same source, never in the middle of one, so no
// client can leave a half-read response or a desynchronised connection behind for another.

import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { connectOrigin, type Origin } from '../tls/origin-socket.js'
import { Http1Parser, type MessageHead, type ParseError, type ParserSink } from './http1-parser.js'
import { SocketWriter } from './socket-writer.js'

export interface ResponseSink {
  /** Around the callbacks of one read of the upstream: what they write can leave in one write. */
  onUpstreamReadStart(): void
  onUpstreamReadEnd(): void
  /** A response head (1xx included); returns true when the response can carry no body. */
  onResponseHead(head: MessageHead): boolean
  onResponseBody(chunk: Buffer): void
  onResponseComplete(): void
  /**
   * The connection is gone. `failure` is set when responses were still owed (or the bytes were not
   * HTTP), with whether it timed out; null for a connection that closed while idle.
   */
  onUpstreamClosed(failure: { error: NodeJS.ErrnoException; timedOut: boolean } | null): void
}

export interface UpstreamTimeouts {
  connectMs: number
  /** From a request head written to its response head. */
  responseHeadMs: number
}

/** Where a parked connection reports its end (a response to nothing parked is an error too). */
class ParkedSink implements ResponseSink {
  constructor(private readonly gone: () => void) {}
  onUpstreamReadStart(): void {}
  onUpstreamReadEnd(): void {}
  onResponseHead(): boolean {
    return true
  }
  onResponseBody(): void {}
  onResponseComplete(): void {}
  onUpstreamClosed(): void {
    this.gone()
  }
}

/** Whether a message's version and Connection header keep the connection open after it (RFC 9112 9.3). */
function persists(head: MessageHead): boolean {
  const tokens = (head.fields.get('connection') ?? '')
    .toLowerCase()
    .split(',')
    .map((t) => t.trim())
  return head.versionMinor >= 1 ? !tokens.includes('close') : tokens.includes('keep-alive')
}

/** A server's `Keep-Alive: timeout=N` (the header's value), less a margin for the request on its way, in ms. */
function serverIdleMs(keepAlive: string | undefined): number {
  const m = /(?:^|[\s,])timeout=(\d+)/i.exec(keepAlive ?? '')
  return m === null ? Infinity : Number(m[1]) * 1000 - 500
}

export class UpstreamConnection implements ParserSink {
  readonly socket: Socket
  /** All the proxy writes to the origin. */
  readonly out: SocketWriter
  private readonly parser: Http1Parser
  private connected = false
  private readonly openedAt: number
  /** Requests written whose responses have not completed. */
  private owed = 0
  /** Since when the oldest owed response head has been awaited; 0 when none is. */
  private waitingSince = 0
  private keepAlive = true
  private informational = false
  private error: NodeJS.ErrnoException | null = null
  private timedOut = false
  /** Closed on purpose (after a response that ends the connection, or by the client side). */
  private retired = false
  /** While parked: when it stops being reusable (the pool's limit, or the server's sooner). */
  idleUntil = 0
  /** The last final response's Keep-Alive header, read when the connection is parked (not per response). */
  private lastKeepAlive: string | undefined = undefined
  /** The sink told of the current read's start (the sink may change within it: parked). */
  private readSink: ResponseSink | null = null

  constructor(
    origin: Origin,
    maxHeaderBytes: number,
    private sink: ResponseSink,
    now: number,
  ) {
    this.openedAt = now
    this.parser = new Http1Parser('response', maxHeaderBytes, this)
    this.socket = connectOrigin(origin, 'http/1.1')
    this.out = new SocketWriter(this.socket)
    this.socket.once('connect', () => (this.connected = true))
    this.socket.on('error', (e: NodeJS.ErrnoException) => (this.error ??= e))
    this.socket.once('close', this.onClose)
    this.parser.readFrom(this.socket)
  }

  /** A request head: one more response is owed. */
  sendHead(head: Buffer, now: number): boolean {
    if (this.owed++ === 0) this.waitingSince = now
    return this.out.write(head)
  }

  write(data: Buffer | string): boolean {
    return this.out.write(data)
  }

  /** Between messages, healthy and kept open by the server: it may serve another client connection. */
  get reusable(): boolean {
    return (
      this.connected &&
      this.owed === 0 &&
      this.keepAlive &&
      this.error === null &&
      !this.retired &&
      !this.socket.destroyed
    )
  }

  /** Parked idle in the pool for at most `maxIdleMs`: `gone` is called if it closes or the server sends anything. */
  park(now: number, maxIdleMs: number, gone: () => void): void {
    this.idleUntil = now + Math.min(maxIdleMs, serverIdleMs(this.lastKeepAlive))
    this.sink = new ParkedSink(gone)
    this.parser.resumeReading() // a client that stopped reading may have paused it
  }

  /** Stops reading responses (back-pressure: the client cannot take more now). */
  pauseReading(): void {
    this.parser.pauseReading()
  }

  resumeReading(): void {
    this.parser.resumeReading()
  }

  /** Taken from the pool by a client connection. */
  adopt(sink: ResponseSink): this {
    this.sink = sink
    return this
  }

  /** Closes it without telling the sink (the client side is going away or has what it needs). */
  retire(): void {
    this.retired = true
    this.socket.destroy()
    this.parser.close()
  }

  /** Checks the connect and response-head deadlines; a missed one ends the connection as a failure. */
  sweep(now: number, t: UpstreamTimeouts): void {
    const late =
      (!this.connected && now - this.openedAt > t.connectMs) ||
      (this.waitingSince > 0 && now - this.waitingSince > t.responseHeadMs)
    if (!late || this.retired) return
    this.timedOut = true
    this.error ??= Object.assign(new Error(this.connected ? 'no response in time' : 'connect timed out'), {
      code: 'ETIMEDOUT',
    })
    this.socket.destroy()
  }

  onReadStart(): void {
    this.readSink = this.sink
    this.sink.onUpstreamReadStart()
  }

  onReadEnd(err: ParseError | null): void {
    this.readSink?.onUpstreamReadEnd()
    this.readSink = null
    if (err === null) return
    this.error ??= err as NodeJS.ErrnoException
    this.socket.destroy()
  }

  private readonly onClose = (): void => {
    if (this.retired) return
    // A body that runs to the connection's end completes here; a cut one is an error.
    if (!this.error && this.owed > 0) this.parser.finish()
    this.parser.close()
    if (this.owed === 0 && !this.error) return this.sink.onUpstreamClosed(null)
    const error = this.error ?? Object.assign(new Error('upstream closed the connection'), { code: 'ECONNRESET' })
    this.sink.onUpstreamClosed({ error, timedOut: this.timedOut })
  }

  onHead(head: MessageHead): boolean {
    if (this.owed === 0 || this.error) {
      this.error ??= Object.assign(new Error('a response to no request'), { code: 'EPROTO' })
      this.socket.destroy()
      return true
    }
    this.informational = head.status < 200
    const noBody = this.sink.onResponseHead(head)
    if (!this.informational) {
      // llhttp reckons a response without a length runs to the close; one without a body (to
      // HEAD, 204, 304) does not, and the connection persists unless its head says otherwise.
      this.keepAlive = head.keepAlive || (noBody && persists(head))
      this.lastKeepAlive = head.fields.get('keep-alive')
      this.waitingSince = this.owed > 1 ? performance.now() : 0
    }
    return noBody
  }

  onBody(chunk: Buffer): void {
    if (!this.error) this.sink.onResponseBody(chunk)
  }

  onMessageComplete(): void {
    if (this.informational || this.error) return
    this.owed--
    this.sink.onResponseComplete()
    if (this.keepAlive || this.retired) return
    // The server closes after this response: requests already sent behind it are lost.
    if (this.owed > 0) {
      this.error ??= Object.assign(new Error('the server closed with requests pending'), { code: 'ECONNRESET' })
      this.socket.destroy()
      return
    }
    this.retire()
    this.sink.onUpstreamClosed(null)
  }
}
