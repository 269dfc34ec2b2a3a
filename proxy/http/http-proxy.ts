// The transparent HTTP/1.1 proxy: accepts the connections the datapath steered to it and runs
// each as a ClientConnection (client-connection.ts): requests parsed with Node's llhttp in its
// strict mode, every request of a keep-alive connection judged against the flow's L7 rules,
// allowed ones forwarded to the original destination over that connection's own upstream
// connection with bodies streamed both ways, denied ones answered with 403, one log line each.
// One timer sweeps every connection's deadlines (headers, idle, upstream connect and response).

import { createServer, type Server, type Socket } from 'node:net'
import type { Logger } from 'pino'
import type { PolicyEngine } from '../../policy/engine.js'
import { ClientConnection, type Origin, type ProxyContext, type ProxyStats } from './client-connection.js'
import type { Flow } from '../flow-verdict.js'

export type { Origin, ProxyStats } from './client-connection.js'

export interface HttpProxyOptions {
  engine: PolicyEngine
  logger: Logger
  /** The flow a connection belongs to; by default its peer and its (original) local address. */
  flowOf?: (socket: Socket) => Flow
  /** Where to connect for a flow; by default its original destination. */
  originOf?: (flow: Flow) => Origin
  headersTimeoutMs?: number
  idleTimeoutMs?: number
  upstreamConnectTimeoutMs?: number
  upstreamHeadersTimeoutMs?: number
  maxHeaderBytes?: number
  /** Header fields per request; more is refused (400), never silently truncated. */
  maxHeaders?: number
}

function defaultFlow(socket: Socket): Flow {
  return { sourceAddress: socket.remoteAddress!, sourcePort: socket.remotePort!, destAddress: socket.localAddress!, destPort: socket.localPort! }
}

function defaultOrigin(f: Flow): Origin {
  return { host: f.destAddress, port: f.destPort }
}

export class HttpProxy {
  readonly server: Server
  private readonly ctx: ProxyContext
  /** Requests answered so far, by outcome. */
  readonly stats: ProxyStats = { allowed: 0, denied: 0, invalid: 0, upstreamFailed: 0 }
  private readonly connections = new Set<ClientConnection>()
  private readonly sweeper: NodeJS.Timeout
  private readonly headersMs: number
  private readonly idleMs: number

  constructor(opts: HttpProxyOptions) {
    this.headersMs = opts.headersTimeoutMs ?? 10_000
    this.idleMs = opts.idleTimeoutMs ?? 60_000
    this.ctx = {
      stats: this.stats,
      engine: opts.engine,
      logger: opts.logger,
      flowOf: opts.flowOf ?? defaultFlow,
      originOf: opts.originOf ?? defaultOrigin,
      maxHeaders: opts.maxHeaders ?? 100,
      maxHeaderBytes: opts.maxHeaderBytes ?? 16 * 1024,
      upstream: { connectMs: opts.upstreamConnectTimeoutMs ?? 5_000, responseHeadMs: opts.upstreamHeadersTimeoutMs ?? 30_000 },
    }
    this.server = createServer({ noDelay: true }, (socket) => {
      const c = new ClientConnection(socket, this.ctx)
      this.connections.add(c)
      socket.once('close', () => this.connections.delete(c))
    })
    // Deadlines are checked a few times per shortest timeout, at most every second.
    const shortest = Math.min(this.headersMs, this.idleMs, this.ctx.upstream.connectMs, this.ctx.upstream.responseHeadMs)
    this.sweeper = setInterval(() => this.sweep(), Math.max(10, Math.min(1000, shortest / 4)))
    this.sweeper.unref()
  }

  private sweep(): void {
    const now = performance.now()
    for (const c of this.connections) c.sweep(now, this.headersMs, this.idleMs)
  }

  /** Client connections open now. */
  get connectionCount(): number {
    return this.connections.size
  }

  /** Listens on a socket made elsewhere (a transparent listener's fd), or a port for tests. */
  listen(where: { fd: number } | { port: number; host: string }): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(where, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
  }

  /** Stops accepting, ends every connection (and its upstream), and stops the sweep. */
  async close(): Promise<void> {
    clearInterval(this.sweeper)
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    for (const c of this.connections) c.destroy()
    await closed
  }
}
