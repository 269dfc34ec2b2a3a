// One steered connection that opened with a TLS record. Its ClientHello is read (bounded, not
// terminated). Where the port's HTTP rules ask for interception (terminatingTLS), the proxy
// completes the handshake itself with a leaf for the name asked (from the local CA), offering the
// client's own ALPN choice of h2 or http/1.1, and hands the decrypted connection to the HTTP/1.1
// or HTTP/2 side, which reaches the origin over TLS. Otherwise the server name is judged against
// the port's serverNames: the connection is spliced to the original destination unchanged (the
// hello first, then bytes both ways with back-pressure) or ended with a TLS alert before any
// application data. One log line per connection that is not intercepted.

import { connect, type Socket } from 'node:net'
import { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { TlsInterceptSpec } from '../../policy/model.js'
import { type Flow, FlowPolicy, flowEnds, type L7Kind, tlsVerdict } from '../flow-verdict.js'
import { countOutcome, type ProxyContext } from '../http/proxy-context.js'
import { type ClientHello, MAX_HELLO_BYTES, parseClientHello } from './client-hello.js'
import type { OriginTls } from './origin-socket.js'

/** Where a decrypted connection goes: the HTTP/1.1 or the HTTP/2 side of the proxy. */
export type HandOff = (socket: TLSSocket, protocol: 'h2' | 'http/1.1', flow: Flow, tls: OriginTls) => void

const TLS_KIND: L7Kind = { parser: 'tls', protocol: 'TCP' }
/** A fatal alert record (TLS 1.2 framing, which TLS 1.3 clients accept before the handshake). */
const alert = (description: number): Buffer => Buffer.from([21, 3, 3, 0, 2, 2, description])
const ACCESS_DENIED = alert(49)
const INTERNAL_ERROR = alert(80)
const DECODE_ERROR = alert(50)
/** The hello's records: its bytes plus a record header per 16 KiB, and some slack. */
const MAX_BUFFERED = MAX_HELLO_BYTES + 4096

export class TlsConnection {
  openSlot = -1
  private readonly log: Logger
  private readonly started = performance.now()
  private chunks: Buffer[] = []
  private buffered = 0
  private upstream: Socket | null = null

  constructor(
    private readonly socket: Socket,
    private readonly ctx: ProxyContext,
    private readonly flow: Flow,
    helloTimeoutMs: number,
    private readonly handOff: HandOff,
  ) {
    this.log = ctx.logger.child(flowEnds(this.flow))
    socket.setTimeout(helloTimeoutMs, () => this.refuse(null, 'no complete ClientHello in time', null))
    socket.on('data', this.onData)
    socket.once('close', () => this.upstream?.destroy())
    socket.resume()
  }

  destroy(): void {
    this.socket.destroy()
  }

  private readonly onData = (data: Buffer): void => {
    this.chunks.push(data)
    this.buffered += data.length
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks)
    this.chunks = [all]
    const r = parseClientHello(all)
    if (r.state === 'incomplete' && this.buffered <= MAX_BUFFERED) return
    this.socket.off('data', this.onData)
    this.socket.pause()
    if (r.state === 'complete') this.decide(r.hello, all)
    else
      this.refuse(
        null,
        r.state === 'invalid' ? `malformed ClientHello: ${r.reason}` : `ClientHello above ${MAX_BUFFERED} bytes`,
        DECODE_ERROR,
      )
  }

  private decide(hello: ClientHello, bytes: Buffer): void {
    const intercept = FlowPolicy.of(this.ctx.engine, this.flow).sides.find((s) => s.filter.intercept)?.filter.intercept
    if (intercept) {
      this.intercept(hello, bytes, intercept).catch((e: Error) =>
        this.refuse(hello.serverName, `cannot intercept: ${e.message}`, INTERNAL_ERROR),
      )
      return
    }
    const verdict = tlsVerdict(FlowPolicy.of(this.ctx.engine, this.flow, TLS_KIND), hello.serverName)
    const line = {
      verdict: verdict.allowed ? 'allowed' : 'denied',
      rules: verdict.rules,
      reason: verdict.reason,
      sourceIdentity: verdict.sourceIdentity,
      destIdentity: verdict.destIdentity,
      serverName: hello.serverName,
      alpn: hello.alpn,
      ms: Math.round((performance.now() - this.started) * 1000) / 1000,
    }
    if (!verdict.allowed) {
      countOutcome(this.ctx.stats, verdict, false)
      this.log.info(line, 'tls denied')
      this.socket.end(ACCESS_DENIED)
      return
    }
    this.log.info(line, 'tls allowed')
    this.splice(bytes)
  }

  /** The rest of the connection goes through unchanged; the hello first. */
  private splice(hello: Buffer): void {
    const origin = this.ctx.originOf(this.flow)
    const up = connect({ host: origin.host, port: origin.port, noDelay: true })
    this.upstream = up
    up.setTimeout(this.ctx.upstream.connectMs, () =>
      up.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })),
    )
    up.once('connect', () => {
      this.ctx.stats.allowed++
      up.setTimeout(0)
      this.socket.setTimeout(this.ctx.idleMs, () => this.socket.destroy())
      up.write(hello)
      this.socket.pipe(up)
      up.pipe(this.socket)
      this.socket.resume()
    })
    up.on('error', (e: NodeJS.ErrnoException) => {
      if (!up.connecting) return // a reset mid-stream: 'close' ends the client too
      this.ctx.stats.upstreamFailed++
      this.log.warn({ origin: `${origin.host}:${origin.port}`, error: e.code ?? e.message }, 'tls: upstream failed')
    })
    up.once('close', () => this.socket.destroy())
  }

  /** Terminates the client's TLS with a leaf for the name it asked (or its destination address). */
  private async intercept(hello: ClientHello, bytes: Buffer, spec: TlsInterceptSpec): Promise<void> {
    if (this.ctx.leaves === null)
      throw new Error('TLS interception needs the local CA (l7proxy certs init, and the agent pointed at it)')
    const context = await this.ctx.leaves.context(hello.serverName ?? this.flow.destAddress)
    if (this.socket.destroyed) return
    this.socket.setTimeout(0)
    this.socket.unshift(bytes)
    const tls = new TLSSocket(this.socket, {
      isServer: true,
      secureContext: context,
      ALPNProtocols: ['h2', 'http/1.1'],
    })
    tls.on('error', (e: NodeJS.ErrnoException) =>
      this.log.info(
        { verdict: 'invalid', serverName: hello.serverName, error: e.code ?? e.message },
        'tls: intercepted handshake failed',
      ),
    )
    tls.once('secure', () => {
      // What a tls.Server would do at this point; node:http2 waits for it before reading.
      ;(tls as TLSSocket & { secureConnecting: boolean }).secureConnecting = false
      const protocol = tls.alpnProtocol === 'h2' ? 'h2' : 'http/1.1'
      this.handOff(tls, protocol, this.flow, { servername: hello.serverName, trustedCA: spec.trustedCA })
    })
  }

  private refuse(serverName: string | null, reason: string, alertRecord: Buffer | null): void {
    countOutcome(this.ctx.stats, null, false)
    this.log.info({ verdict: 'invalid', reason, serverName }, 'tls: connection refused')
    if (alertRecord) this.socket.end(alertRecord)
    else this.socket.destroy()
  }
}
