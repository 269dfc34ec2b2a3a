// The transparent HTTP proxy: accepts the connections the datapath steered to it and tells the
// protocols apart by their first bytes. HTTP/1.x runs as a ClientConnection (client-connection.ts):
// requests parsed with Node's llhttp in its strict mode, every request of a keep-alive connection
// judged against the flow's L7 rules, allowed ones forwarded to the original destination over one
// upstream connection at a time (idle ones pooled per source and origin: upstream-pool.ts) with
// bodies streamed both ways, denied ones answered with 403, one log line each. One timer sweeps
// those connections' deadlines (headers, idle, upstream connect and response) and the pool's. A connection that opens with the HTTP/2 preface (h2c with prior
// knowledge, as gRPC clients speak it) goes to the HTTP/2 side instead (proxy/http2/), and one
// that opens with a TLS handshake record to the server-name check (proxy/tls/).
// With the node's overload budgets (proxy/overload/), a connection is taken from them as it is
// accepted, or reset at once when its source, identity or the node has spent its budget; under
// pressure the sweep holds shorter timeouts and closes idle connections oldest first.

import { createServer, type Server, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { LeafCache } from '../../certs/leaf-cache.js'
import { loadCa } from '../../certs/local-ca.js'
import type { PolicyEngine } from '../../policy/engine.js'
import { type Flow, FlowPolicy } from '../flow-verdict.js'
import { H2Frontend, startsHttp2 } from '../http2/h2-frontend.js'
import { LatencyHistogram } from '../latency-histogram.js'
import { OpenSet } from '../open-set.js'
import { admitConnection, type ThreadOverload } from '../overload/thread-overload.js'
import { type HandOff, TlsConnection } from '../tls/tls-connection.js'
import { ClientConnection } from './client-connection.js'
import { acceptHandles, fastPath, readInto, readResult, type TcpHandle } from './native-stream.js'
import type { Origin, ProxyContext, ProxyStats } from './proxy-context.js'
import { RawSocket } from './raw-socket.js'
import { threadReadBuffer } from './socket-reads.js'
import { DEFAULT_POOL_LIMITS, UpstreamPool, type UpstreamPoolLimits } from './upstream-pool.js'

export type { Origin, ProxyStats } from './proxy-context.js'

/** A connection's two ends, as net.Socket and RawSocket tell them: what flowOf works from. */
export interface SocketEnds {
  readonly remoteAddress?: string | undefined
  readonly remotePort?: number | undefined
  readonly localAddress?: string | undefined
  readonly localPort?: number | undefined
}

export interface HttpProxyOptions {
  engine: PolicyEngine
  logger: Logger
  /** The flow a connection belongs to; by default its peer and its (original) local address. */
  flowOf?: (socket: SocketEnds) => Flow
  /** Where to connect for a flow; by default its original destination. */
  originOf?: (flow: Flow) => Origin
  headersTimeoutMs?: number
  idleTimeoutMs?: number
  upstreamConnectTimeoutMs?: number
  upstreamHeadersTimeoutMs?: number
  maxHeaderBytes?: number
  /** Header fields per request; more is refused (400), never silently truncated. */
  maxHeaders?: number
  /** Idle upstream connections kept for reuse (defaults: DEFAULT_POOL_LIMITS). */
  upstreamPool?: Partial<UpstreamPoolLimits>
  /** The local CA's directory, for ports whose rules intercept TLS (none: such TLS is refused). */
  caDir?: string
  /** The node's connection and stream budgets, and what pressure changes (none: no limits). */
  overload?: ThreadOverload
}

/** Draining, an HTTP/1 connection idle this long is closed (a client that sends again soon gets `connection: close` instead). */
const DRAIN_IDLE_MS = 1_000

/** A connection that may be idle: when it went idle (-1: it is not), and how it is closed then. */
export interface MaybeIdle {
  readonly idleSince: number
  closeIdle(): void
}

/** The content type of a TLS handshake record: how every TLS connection begins. */
const TLS_HANDSHAKE = 0x16

function defaultFlow(socket: SocketEnds): Flow {
  return {
    sourceAddress: socket.remoteAddress!,
    sourcePort: socket.remotePort!,
    destAddress: socket.localAddress!,
    destPort: socket.localPort!,
  }
}

function defaultOrigin(f: Flow): Origin {
  return { host: f.destAddress, port: f.destPort }
}

const noop = (): void => undefined

export class HttpProxy {
  readonly server: Server
  private readonly ctx: ProxyContext
  /** Requests answered so far, by outcome. */
  readonly stats: ProxyStats = { allowed: 0, denied: 0, invalid: 0, upstreamFailed: 0 }
  /** How long answered requests took (refused ones aside). */
  readonly latency = new LatencyHistogram()
  private readonly connections = new OpenSet<ClientConnection>()
  /** Connections yet to send their first bytes. */
  private readonly sniffing = new OpenSet<RawSocket>()
  private acceptedCount = 0
  private readonly h2: H2Frontend
  private readonly tunnels = new OpenSet<TlsConnection>()
  private readonly sweeper: NodeJS.Timeout
  private readonly headersMs: number
  private readonly flowOf: (socket: SocketEnds) => Flow
  private readonly idleMs: number

  constructor(opts: HttpProxyOptions) {
    this.headersMs = opts.headersTimeoutMs ?? 10_000
    this.flowOf = opts.flowOf ?? defaultFlow
    this.idleMs = opts.idleTimeoutMs ?? 60_000
    this.ctx = {
      stats: this.stats,
      latency: this.latency,
      engine: opts.engine,
      logger: opts.logger,
      originOf: opts.originOf ?? defaultOrigin,
      maxHeaders: opts.maxHeaders ?? 100,
      maxHeaderBytes: opts.maxHeaderBytes ?? 16 * 1024,
      upstream: {
        connectMs: opts.upstreamConnectTimeoutMs ?? 5_000,
        responseHeadMs: opts.upstreamHeadersTimeoutMs ?? 30_000,
      },
      pool: new UpstreamPool({ ...DEFAULT_POOL_LIMITS, ...opts.upstreamPool }),
      idleMs: this.idleMs,
      leaves: opts.caDir ? new LeafCache(() => loadCa(opts.caDir!)) : null,
      overload: opts.overload ?? null,
      draining: false,
    }
    this.h2 = new H2Frontend(this.ctx)
    // The server listens (and closes); its connections are taken as bare handles.
    this.server = createServer()
    // Deadlines are checked a few times per shortest timeout (pressure's too), at most every second.
    const o = this.ctx.overload
    const shortest = Math.min(
      this.headersMs,
      this.idleMs,
      this.ctx.upstream.connectMs,
      this.ctx.upstream.responseHeadMs,
      o?.headersMs ?? Infinity,
      o?.idleMs ?? Infinity,
    )
    this.sweeper = setInterval(() => this.sweep(), Math.max(10, Math.min(1000, shortest / 4)))
    this.sweeper.unref()
  }

  /**
   * Waits for a connection's first bytes (for at most the header timeout: the sweep ends it) to
   * pick its protocol. The connection is a bare handle (raw-socket.ts) until it turns out to be
   * TLS or HTTP/2, which get a net.Socket.
   */
  private readonly onConnection = (handle: TcpHandle): void => {
    this.acceptedCount++
    const raw = new RawSocket(handle)
    // Its ends are read at once, while it is surely connected: after a reset they are unknown.
    if (raw.remoteAddress === undefined || raw.localAddress === undefined) return raw.destroy()
    const flow = this.flowOf(raw)
    const release = this.admit(flow)
    if (release === null) return raw.reset()
    const passOn = handle.onread
    this.sniffing.add(raw)
    // The raw socket closes for good, unless it became a net.Socket (whose close gives it back).
    raw.once('close', () => {
      this.sniffing.delete(raw)
      release()
    })
    // Read where the HTTP/1.1 parser reads (no buffer allocated for a first read).
    const buf = threadReadBuffer()
    readInto(handle, buf)
    handle.onread = (ab) => {
      const n = readResult()
      if (n <= 0) return passOn.call(handle, ab)
      handle.onread = passOn
      this.sniffing.delete(raw)
      // A view of the thread's buffer: parsed at once, or copied for TLS and HTTP/2.
      this.dispatch(raw, flow, buf.subarray(0, n), release)
    }
  }

  /**
   * Without the fast path's internals (native-stream.ts): the same on net.Server's sockets, the
   * header timeout held by the socket's own timer until its first bytes.
   */
  private readonly onSocket = (socket: Socket): void => {
    this.acceptedCount++
    socket.on('error', () => undefined) // reset before it said anything: 'close' follows
    if (socket.remoteAddress === undefined || socket.localAddress === undefined) return void socket.destroy()
    const flow = this.flowOf(socket)
    const release = this.admit(flow)
    if (release === null) return void socket.resetAndDestroy()
    socket.once('close', release)
    socket.setTimeout(this.headersMs, () => socket.destroy())
    socket.once('data', (first: Buffer) => {
      socket.setTimeout(0)
      this.dispatch(socket, flow, first, noop)
    })
  }

  /** A connection's first bytes tell its protocol: HTTP/1.x and HTTP/2 on the socket it came on, TLS on a net.Socket. */
  private dispatch(sock: RawSocket | Socket, flow: Flow, first: Buffer, release: () => void): void {
    if (startsHttp2(first)) return this.h2.accept(sock, flow, first)
    if (first[0] !== TLS_HANDSHAKE) return this.track(new ClientConnection(sock, this.ctx, flow, first))
    let socket: Socket
    if (sock instanceof RawSocket) {
      socket = sock.toNetSocket(Buffer.from(first))
      socket.once('close', release)
      socket.on('error', () => undefined) // reset before it said anything: 'close' follows
    } else {
      // Held back (not flowing past nobody) for TLS, which resumes it.
      socket = sock
      socket.pause()
      socket.unshift(first)
    }
    const c = new TlsConnection(socket, this.ctx, flow, this.headersMs, this.adoptDecrypted)
    this.tunnels.add(c)
    socket.once('close', () => this.tunnels.delete(c))
  }

  /** Takes a connection from the node's budget: how to give it back, or null when it is refused (counted, logged). */
  private admit(flow: Flow): (() => void) | null {
    const o = this.ctx.overload
    return o === null
      ? noop
      : admitConnection(o, flow.sourceAddress, FlowPolicy.of(this.ctx.engine, flow).sourceIdentity)
  }

  /** A connection whose TLS the proxy terminated, to the side its ALPN chose. */
  private readonly adoptDecrypted: HandOff = (socket, protocol, flow, tls) => {
    if (protocol === 'h2') return this.h2.accept(socket, flow, null, tls)
    this.track(new ClientConnection(socket, this.ctx, flow, null, tls))
  }

  private track(c: ClientConnection): void {
    this.connections.add(c)
    c.socket.once('close', () => this.connections.delete(c))
  }

  private sweep(): void {
    const now = performance.now()
    const o = this.ctx.overload
    const pressed = o?.budget.underPressure
    const headersMs = pressed ? Math.min(this.headersMs, o.headersMs) : this.headersMs
    const idleMs = pressed ? Math.min(this.idleMs, o.idleMs) : this.idleMs
    this.sniffing.forEach((raw) => {
      if (now - raw.acceptedAt > headersMs) raw.destroy()
    })
    this.connections.forEach((c) => c.sweep(now, headersMs, idleMs))
    if (pressed) {
      // HTTP/2 connections keep their own idle timer; under pressure the shorter one holds here.
      this.h2.forEach((c) => {
        if (c.idleSince >= 0 && now - c.idleSince > idleMs) c.closeIdle()
      })
      this.shedOldestIdle(o)
    }
    this.ctx.pool.sweep(now)
  }

  /**
   * Past the pressure line, this thread's share of the excess (by its share of the node's open
   * connections) is closed from its idle connections, the longest idle first.
   */
  private shedOldestIdle(o: ThreadOverload): void {
    const open = o.budget.connections
    const mine = this.connectionCount
    const excess = open - o.pressureConnections
    if (excess <= 0 || mine === 0) return
    const idle: MaybeIdle[] = []
    const collect = (c: MaybeIdle): void => void (c.idleSince >= 0 && idle.push(c))
    this.connections.forEach(collect)
    this.h2.forEach(collect)
    idle.sort((a, b) => a.idleSince - b.idleSince)
    const share = Math.min(idle.length, Math.ceil((excess * mine) / open))
    for (let i = 0; i < share; i++) idle[i]!.closeIdle()
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.acceptedCount
  }

  /** Client connections open now (HTTP/1.x and HTTP/2). */
  get connectionCount(): number {
    return this.connections.size + this.h2.connectionCount + this.tunnels.size
  }

  /** Listens on a socket made elsewhere (a transparent listener's fd), or a port for tests. */
  listen(where: { fd: number } | { port: number; host: string }): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(where, () => {
        this.server.off('error', reject)
        const missing = !fastPath.available
          ? fastPath.missing
          : acceptHandles(this.server, this.onConnection)
            ? null
            : "net.Server's handle.onconnection"
        if (missing !== null) {
          this.ctx.logger.warn(
            { missing },
            'http: the Node internals of the fast path are not there; serving on net.Socket (slower)',
          )
          this.server.on('connection', this.onSocket)
        }
        resolve()
      })
    })
  }

  /** Idle upstream connections held for reuse now. */
  get idleUpstreamCount(): number {
    return this.ctx.pool.idleCount
  }

  /**
   * Another agent has taken over the listener (proxy/agent/handover.ts): stops accepting here
   * (the other process holds the same socket, and accepts what is queued on it), answers every
   * request from now on with `connection: close`, sends HTTP/2 clients GOAWAY (their streams
   * finish), closes HTTP/1 connections idle for DRAIN_IDLE_MS, and once none is left, or after
   * `timeoutMs`, closes what remains.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.ctx.draining = true
    this.server.close()
    this.h2.forEach((c) => c.closeIdle())
    const deadline = performance.now() + timeoutMs
    while (this.connectionCount + this.sniffing.size > 0 && performance.now() < deadline) {
      const now = performance.now()
      this.connections.forEach((c) => {
        if (c.idleSince >= 0 && now - c.idleSince > DRAIN_IDLE_MS) c.closeIdle()
      })
      await new Promise((r) => setTimeout(r, 20))
    }
    await this.close()
  }

  /** Stops accepting, ends every connection (and its upstream), and stops the sweep. */
  async close(): Promise<void> {
    clearInterval(this.sweeper)
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    this.connections.forEach((c) => c.destroy())
    this.sniffing.forEach((raw) => raw.destroy())
    this.h2.destroy()
    this.tunnels.forEach((c) => c.destroy())
    this.ctx.pool.close()
    await closed
  }
}
