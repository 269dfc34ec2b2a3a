// The proxy's connection to one client connection's original destination: requests are written
// to it in order (several may be in flight when the client pipelines) and responses are parsed
// with llhttp and handed, one event at a time, to the client side. It belongs to that client
// connection alone, so one client cannot leave a half-read response or a desynchronised
// connection behind for another (the price of not sharing idle connections between clients).

import type { Socket } from 'node:net'
import { connectOrigin, type Origin } from '../tls/origin-socket.js'
import { Http1Parser, type MessageHead, type ParserSink } from './http1-parser.js'

export interface ResponseSink {
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

export class UpstreamConnection implements ParserSink {
  readonly socket: Socket
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

  constructor(
    origin: Origin,
    maxHeaderBytes: number,
    private readonly sink: ResponseSink,
    /** The client's socket: what one read of responses writes to it leaves in one write. */
    private readonly downstream: Socket,
    now: number,
  ) {
    this.openedAt = now
    this.parser = new Http1Parser('response', maxHeaderBytes, this)
    this.socket = connectOrigin(origin, 'http/1.1')
    this.socket.once('connect', () => (this.connected = true))
    this.socket.on('data', this.onData)
    this.socket.on('error', (e: NodeJS.ErrnoException) => (this.error ??= e))
    this.socket.once('close', this.onClose)
  }

  /** A request head: one more response is owed. */
  sendHead(head: string, now: number): boolean {
    if (this.owed++ === 0) this.waitingSince = now
    return this.socket.write(head, 'latin1')
  }

  write(data: Buffer | string): boolean {
    return this.socket.write(data, 'latin1')
  }

  /** Closes it without telling the sink (the client side is going away or has what it needs). */
  retire(): void {
    this.retired = true
    this.socket.destroy()
    this.parser.close()
  }

  /** Checks the connect and response-head deadlines; a missed one ends the connection as a failure. */
  sweep(now: number, t: UpstreamTimeouts): void {
    const late = (!this.connected && now - this.openedAt > t.connectMs) || (this.waitingSince > 0 && now - this.waitingSince > t.responseHeadMs)
    if (!late || this.retired) return
    this.timedOut = true
    this.error ??= Object.assign(new Error(this.connected ? 'no response in time' : 'connect timed out'), { code: 'ETIMEDOUT' })
    this.socket.destroy()
  }

  private readonly onData = (data: Buffer): void => {
    this.downstream.cork()
    const err = this.parser.execute(data)
    this.downstream.uncork()
    if (err) {
      this.error ??= err as NodeJS.ErrnoException
      this.socket.destroy()
    }
  }

  private readonly onClose = (): void => {
    if (this.retired) return
    // A body that runs to the connection's end completes here; a cut one is an error.
    if (!this.error && this.owed > 0) {
      const err = this.parser.finish()
      if (err) this.error = err as NodeJS.ErrnoException
    }
    this.parser.close()
    if (this.owed === 0 && !this.error) return this.sink.onUpstreamClosed(null)
    const error = this.error ?? Object.assign(new Error('upstream closed the connection'), { code: 'ECONNRESET' })
    this.sink.onUpstreamClosed({ error, timedOut: this.timedOut })
  }

  onMessageBegin(): void {}

  onHead(head: MessageHead): boolean {
    if (this.owed === 0 || this.error) {
      this.error ??= Object.assign(new Error('a response to no request'), { code: 'EPROTO' })
      this.socket.destroy()
      return true
    }
    this.informational = head.status < 200
    if (!this.informational) {
      this.keepAlive = head.keepAlive
      this.waitingSince = this.owed > 1 ? performance.now() : 0
    }
    return this.sink.onResponseHead(head)
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
