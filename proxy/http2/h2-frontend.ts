// The HTTP/2 side of the HTTP proxy: the steered connections whose first bytes are the HTTP/2
// preface (h2c with prior knowledge, as gRPC clients speak it), and those whose TLS the proxy
// terminated with ALPN h2. Each is an H2Connection, spoken by the proxy's own HTTP/2 on the
// socket it came on: a bare handle read in place, or a net.Socket or TLS socket.

import type { Socket } from 'node:net'
import type { Flow } from '../flow-verdict.js'
import type { ProxyContext } from '../http/proxy-context.js'
import type { RawSocket } from '../http/raw-socket.js'
import { OpenSet } from '../open-set.js'
import type { OriginTls } from '../tls/origin-socket.js'
import { H2Connection } from './h2-connection.js'
import { PREFACE } from './h2-frames.js'

/** Whether a connection's first bytes are (the start of) the HTTP/2 client preface. */
export function startsHttp2(first: Buffer): boolean {
  const n = Math.min(first.length, PREFACE.length)
  return n > 0 && first.compare(PREFACE, 0, n, 0, n) === 0
}

export class H2Frontend {
  private readonly connections = new OpenSet<H2Connection>()

  constructor(private readonly ctx: ProxyContext) {}

  get connectionCount(): number {
    return this.connections.size
  }

  /** Calls `fn` on every open connection (it may close the one it is given). */
  forEach(fn: (c: H2Connection) => void): void {
    this.connections.forEach(fn)
  }

  /**
   * Takes a connection: `first`, its first bytes already read (a view valid only now), or null
   * when they are still to be read from it; `tls`, how to reach its origin when the proxy
   * terminated its TLS.
   */
  accept(socket: Socket | RawSocket, flow: Flow, first: Buffer | null, tls: OriginTls | null = null): void {
    const c = new H2Connection(socket, flow, this.ctx, tls, first)
    this.connections.add(c)
    socket.once('close', () => this.connections.delete(c))
  }

  destroy(): void {
    this.connections.forEach((c) => c.destroy())
  }
}
