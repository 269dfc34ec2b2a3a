// The HTTP/2 side of the HTTP proxy: a never-listening node:http2 server that the proxy hands
// the steered connections whose first bytes are the HTTP/2 preface. Its settings are the
// connection-level limits: concurrent streams, header list size and count, frame size (nghttp2's
// default maximum, 16 KiB: bigger frames are a FRAME_SIZE_ERROR), invalid frames and refused
// streams before the connection is cut. nghttp2 itself bounds CONTINUATION frames per header
// block; rapid resets are bounded per connection in h2-connection.ts.

import http2, { type Http2Server, type ServerHttp2Session } from 'node:http2'
import type { Socket } from 'node:net'
import type { Flow } from '../flow-verdict.js'
import type { ProxyContext } from '../http/proxy-context.js'
import type { OriginTls } from '../tls/origin-socket.js'
import { OpenSet } from '../open-set.js'
import { H2Connection } from './h2-connection.js'

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
const MAX_CONCURRENT_STREAMS = 100

/** Whether a connection's first bytes are (the start of) the HTTP/2 client preface. */
export function startsHttp2(first: Buffer): boolean {
  const n = Math.min(first.length, PREFACE.length)
  return n > 0 && first.compare(PREFACE, 0, n, 0, n) === 0
}

export class H2Frontend {
  private readonly server: Http2Server
  private readonly connections = new OpenSet<H2Connection>()
  /** The flow of the socket being handed over (sessions are made synchronously from it). */
  private pending: { flow: Flow; tls: OriginTls | null } | null = null

  constructor(ctx: ProxyContext) {
    this.server = http2.createServer({
      settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize: ctx.maxHeaderBytes, enablePush: false },
      // Pseudo-headers count too: four of them, besides the regular fields.
      maxHeaderListPairs: ctx.maxHeaders + 4,
      maxSessionInvalidFrames: 100,
      maxSessionRejectedStreams: 100,
    })
    this.server.on('session', (session: ServerHttp2Session) => {
      const c = new H2Connection(session, this.pending!.flow, ctx, this.pending!.tls)
      this.connections.add(c)
      session.once('close', () => this.connections.delete(c))
    })
  }

  get connectionCount(): number {
    return this.connections.size
  }

  /** Calls `fn` on every open connection (it may close the one it is given). */
  forEach(fn: (c: H2Connection) => void): void {
    this.connections.forEach(fn)
  }

  /**
   * Takes a connection whose first bytes (the preface) were read and put back, or the proxy's
   * TLS termination of one (`tls`: how to reach its origin over TLS).
   */
  accept(socket: Socket, flow: Flow, tls: OriginTls | null = null): void {
    this.pending = { flow, tls }
    try {
      this.server.emit('connection', socket)
    } finally {
      this.pending = null
    }
  }

  destroy(): void {
    this.connections.forEach((c) => c.destroy())
  }
}
