// The transparent DNS proxy, over UDP and TCP: each steered query is read (dns-wire.ts), its question
// judged against the flow's DNS rules (the sender's egress, the server's ingress), allowed ones
// forwarded to the server the client asked and its answer relayed back, denied ones answered by
// the proxy (REFUSED, or NXDOMAIN if configured) without asking anyone. Answers reach the client
// from the address and port it sent to. Malformed queries get FORMERR when their header can be
// read, and are dropped otherwise. One log line per query. Over TCP (RFC 7766: length-prefixed
// messages, several in flight) each client connection gets its own connection to the server.
// UDP goes through a DatagramPump (batched reads and sends on raw sockets) and messages are read
// from their bytes: per datagram, Node's dgram and dns-packet cost more than all the rest. A flow's addresses, and each name's verdict on it, are worked out once; its lines go
// through a FlowLog's fixed template, as the HTTP proxy's do.
// A source past its query rate (proxy/overload/source-rates.ts) is answered REFUSED before any
// rule is asked, counted and logged at a bounded rate; TCP clients come out of the node's
// connection budget as the HTTP proxy's do.

import { connect, createServer, type Server, type Socket as TcpSocket } from 'node:net'
import type { Logger } from 'pino'
import { libc } from '../../lib/libc.js'
import { formatIPv4, parseIPv4 } from '../../policy/cidr.js'
import type { PolicyEngine } from '../../policy/engine.js'
import type { Destination } from '../../redirect-bpf/map-layout.js'
import { localPort, transparentUdpSocket, udpSocket } from '../../redirect-bpf/transparent-socket.js'
import { answersJson, FlowLog, NO_ANSWERS } from '../flow-log.js'
import { dnsVerdict, type Flow, FlowPolicy, type FlowVerdict, flowEnds, type L7Kind } from '../flow-verdict.js'
import { LatencyHistogram } from '../latency-histogram.js'
import { sourceKey } from '../overload/shared-budget.js'
import { SourceRates } from '../overload/source-rates.js'
import { admitConnection, type ThreadOverload } from '../overload/thread-overload.js'
import { DatagramPump } from './datagram-pump.js'
import { DnsWireError, HEADER_BYTES, type QueryInfo, readAnswers, readQuery, typeName } from './dns-wire.js'
import type { AnswerRecord } from './fqdn-cache.js'

export interface Endpoint {
  address: string
  port: number
}

export interface DnsProxyOptions {
  engine: PolicyEngine
  logger: Logger
  /**
   * Where a client's datagram was going (the datapath's proxymap), written into `out`; false if
   * not known. Addresses as numbers. Asked once per client per read of datagrams: the datagrams
   * of one read were all queued before it, so one answer holds for all of a client's.
   */
  originalDestination: (clientAddress: number, clientPort: number, out: Destination) => boolean
  /** Where a client's TCP connection was going; by default its local address (TPROXY, sk_assign). */
  tcpOriginalDestination?: (socket: TcpSocket) => Endpoint | null
  /**
   * How an answer comes from the address the client asked: `listener`, the socket the query came
   * in on (dnat: conntrack rewrites it back); `server`, a transparent socket bound to the server's
   * address and port (made once per server).
   */
  answerFrom: 'listener' | 'server'
  /** The flow a query belongs to; by default its client and original destination. */
  flowOf?: (client: Endpoint, server: Endpoint) => Flow
  /** Where to send an allowed query; by default its original destination. */
  upstreamOf?: (flow: Flow) => Endpoint
  /**
   * Called with an allowed answer's records before the answer is released to the client: what it
   * makes the kernel allow (toFQDNs) is in force by the time the client can connect. A promise
   * holds the answer until it settles. The array is reused once this returns: copy what is kept.
   */
  learn?: (qname: string, answers: AnswerRecord[]) => void | Promise<void>
  /** What a denied query gets. */
  rejectCode?: 'REFUSED' | 'NXDOMAIN'
  upstreamTimeoutMs?: number
  /** Queries a second from one source address this thread answers (0 or none: no limit), and its burst. */
  rate?: { perSecond: number; burst: number }
  /** The node's budgets, for TCP clients, and the line for refusals. */
  overload?: ThreadOverload
}

export interface DnsStats {
  allowed: number
  denied: number
  invalid: number
  /** Allowed queries the server did not answer in time. */
  timedOut: number
  /** Refused because their source was past its query rate. */
  rateLimited: number
}

const DNS_UDP: L7Kind = { parser: 'dns', protocol: 'UDP' }
const DNS_TCP: L7Kind = { parser: 'dns', protocol: 'TCP' }
/** A TCP client connection with nothing in flight is closed after this long (RFC 7766 6.2.3). */
const TCP_IDLE_MS = 10_000
const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const
const RCODE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(RCODE).map(([k, v]) => [v, k]))
const QR = 0x8000
/** Kept from the query in the proxy's own answers: opcode and RD. */
const KEPT_FLAGS = 0x7900
const RA = 0x0080
/** Flow resolutions kept for clients seen recently; cleared whole when it grows past this. */
const MAX_FLOWS = 10_000
/** Names' verdicts kept over all flows; past this, every flow and client is resolved afresh. */
const MAX_NAMED = 20_000

/** How a client's queries go: where allowed ones are sent, and how answers get back. */
interface Route {
  /** Sends a message to the client, the way it asked (from the server's address). */
  reply: (msg: Buffer) => void
  /** Where allowed queries go (the server, unless told otherwise); its address as a number for UDP. */
  upstream: Endpoint
  upstreamAddress: number
}

/** A UDP client as last seen: what its queries to `server` resolve to, worked out once. */
interface UdpClient extends Route {
  server: Destination
  /** The pump's read in which `server` was last looked up. */
  batch: number
  entry: FlowEntry
}

/** A flow as the proxy last resolved it. */
interface FlowEntry {
  policy: FlowPolicy
  /** The source address as the rate budget keys it. */
  sourceKey: number
  /** `host:port` of each end, for log lines. */
  source: string
  destination: string
  /** Its query lines. */
  flows: FlowLog
  /** Names asked on this flow, and their verdicts. */
  names: Map<string, FlowVerdict>
}

/** A query that passed its rules, in flight: what relaying its answer needs. */
interface Pending {
  route: Route
  flows: FlowLog
  query: QueryInfo
  /** The query's header and question as the client sent them (a message of the proxy's own echoes them). */
  question: Buffer
  qname: string
  qtype: string
  verdict: FlowVerdict
  started: number
  /** The id the client gave it. */
  clientId: number
}

/**
 * The proxy's own answer to a query: its header with `rcode` (RA: the proxy stands for a
 * recursive server) and its first question as sent, if it could be read; no records.
 */
function answer(raw: Buffer, query: QueryInfo | null, rcode: number): Buffer {
  const length = query === null ? HEADER_BYTES : query.questionEnd
  const out = Buffer.alloc(length)
  raw.copy(out, 0, 0, length)
  out.writeUInt16BE(QR | (raw.readUInt16BE(2) & KEPT_FLAGS) | RA | rcode, 2)
  out.writeUInt16BE(query !== null && query.questions > 0 ? 1 : 0, 4)
  out.fill(0, 6, HEADER_BYTES)
  return out
}

export class DnsProxy {
  /** The UDP socket (fd) queries arrive on, once listening. */
  listener = -1
  readonly stats: DnsStats = { allowed: 0, denied: 0, invalid: 0, timedOut: 0, rateLimited: 0 }
  /** How long answered queries took, from the query to the answer relayed (or refused). */
  readonly latency = new LatencyHistogram()
  /** From an allowed answer's arrival to the maps allowing what it named being written. */
  readonly enforce = new LatencyHistogram()
  readonly tcp: Server = createServer((c) => this.onTcpClient(c))
  /** Where allowed UDP queries leave for their servers from (fd). */
  private upstream = -1
  private pump: DatagramPump | null = null
  /** UDP queries in flight by the proxy's id; TCP ones by connection and client id. */
  private readonly pending = new Map<number, Pending>()
  private readonly tcpPending = new Map<TcpSocket, Map<number, Pending>>()
  private readonly flows = new Map<string, FlowEntry>()
  /** By address * 65536 + port. */
  private readonly clients = new Map<number, UdpClient>()
  private readonly destination: Destination = { address: 0, port: 0 }
  /** Names' verdicts kept in all flows' entries. */
  private namedCount = 0
  /** answerFrom 'server': a transparent socket per server address. */
  private readonly replySockets = new Map<string, number>()
  /** Reused for each answer read (learning takes what it needs before the next). */
  private readonly records: AnswerRecord[] = []
  private nextId = Math.floor(Math.random() * 0x10000)
  private readonly sweeper: NodeJS.Timeout
  private readonly rejectCode: number
  private readonly timeoutMs: number
  private readonly rates: SourceRates

  constructor(private readonly opts: DnsProxyOptions) {
    this.rejectCode = RCODE[opts.rejectCode ?? 'REFUSED']
    this.timeoutMs = opts.upstreamTimeoutMs ?? 5_000
    this.rates = new SourceRates(opts.rate?.perSecond ?? 0, opts.rate?.burst ?? 0)
    this.sweeper = setInterval(() => this.sweep(), Math.max(50, Math.min(1000, this.timeoutMs / 4)))
    this.sweeper.unref()
  }

  /**
   * Receives on sockets made elsewhere (transparent ones' fds: a UDP socket, now the proxy's to
   * close, and a TCP listener if given), or on a port for tests (both protocols).
   */
  async listen(where: { fd: number; tcpFd?: number } | { port: number; address: string }): Promise<void> {
    this.upstream = udpSocket('0.0.0.0', 0)
    this.listener = 'fd' in where ? where.fd : udpSocket(where.address, where.port)
    const pump = new DatagramPump(
      [this.listener, this.upstream],
      (fd, data, address, port) =>
        fd === this.listener ? this.onQuery(data, address, port) : this.onAnswer(data, address, port),
      (e) => this.opts.logger.error({ error: e.message }, 'dns: handling a datagram failed'),
    )
    this.pump = pump
    pump.start()
    const tcpAt =
      'fd' in where
        ? where.tcpFd === undefined
          ? null
          : { fd: where.tcpFd }
        : { port: this.port, host: where.address }
    if (tcpAt) await new Promise<void>((resolve) => this.tcp.listen(tcpAt, resolve))
  }

  /** The UDP port queries arrive on. */
  get port(): number {
    return localPort(this.listener)
  }

  /**
   * Another agent has taken over the proxy's sockets (proxy/agent/handover.ts): stops reading
   * queries here (the other reads the same sockets) and accepting DNS over TCP, and closes once
   * the queries in flight are answered (or timed out), or after `timeoutMs`.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.pump?.stopReading(this.listener)
    this.tcp.close()
    const deadline = performance.now() + timeoutMs
    while (this.pending.size + this.tcpPending.size > 0 && performance.now() < deadline)
      await new Promise((r) => setTimeout(r, 20))
    this.close()
  }

  close(): void {
    clearInterval(this.sweeper)
    this.pump?.close()
    for (const fd of [this.listener, this.upstream, ...this.replySockets.values()]) if (fd >= 0) libc().close(fd)
    this.listener = this.upstream = -1
    this.replySockets.clear()
    this.tcp.close()
    for (const c of this.tcpPending.keys()) c.destroy()
  }

  /** performance.now(), read once for all the datagrams of a read (their arrival) inside one. */
  private now(): number {
    return this.pump ? this.pump.now : performance.now()
  }

  private flowEntry(flow: Flow, kind: L7Kind): FlowEntry {
    const key = `${kind.protocol}:${flow.sourceAddress}:${flow.sourcePort}>${flow.destAddress}:${flow.destPort}`
    const known = this.flows.get(key)
    if (known && known.policy.generation === this.opts.engine.stateGeneration) return known
    if (this.flows.size >= MAX_FLOWS) this.flows.clear()
    const ends = flowEnds(flow)
    const entry = {
      policy: FlowPolicy.of(this.opts.engine, flow, kind),
      sourceKey: sourceKey(flow.sourceAddress),
      ...ends,
      flows: new FlowLog(this.opts.logger, ends),
      names: new Map<string, FlowVerdict>(),
    }
    this.flows.set(key, entry)
    return entry
  }

  /** A datagram on the listening socket: `msg` is the pump's, valid until this returns. */
  private onQuery(msg: Buffer, address: number, port: number): void {
    const c = this.udpClient(address, port)
    if (c === null) {
      this.stats.invalid++
      this.opts.logger.warn(
        { source: `${formatIPv4(address)}:${port}` },
        'dns: query with no known destination dropped',
      )
      return
    }
    const allowed = this.judge(msg, c, c.entry)
    if (allowed === null) return
    const id = this.freeId()
    if (id === null) {
      c.reply(answer(msg, allowed.query, RCODE.SERVFAIL)) // 65536 queries in flight: none more until some end
      return
    }
    this.pending.set(id, allowed)
    msg.writeUInt16BE(id, 0)
    this.pump!.send(this.upstream, msg, msg.length, c.upstreamAddress, c.upstream.port)
  }

  /**
   * The client at address:port and the server it asked: as looked up earlier in this read, known
   * (same server, same policy), or worked out again; null when the datapath has no destination.
   */
  private udpClient(address: number, port: number): UdpClient | null {
    const key = address * 65536 + port
    const batch = this.pump!.batch
    const known = this.clients.get(key)
    const current =
      known !== undefined && known.entry.policy.generation === this.opts.engine.stateGeneration ? known : null
    if (current?.batch === batch) return current
    const server = this.destination
    if (!this.opts.originalDestination(address, port, server)) return null
    if (current !== null && current.server.address === server.address && current.server.port === server.port) {
      current.batch = batch
      return current
    }
    if (this.clients.size >= MAX_FLOWS) this.clients.clear()
    const client = { address: formatIPv4(address), port }
    const to = { address: formatIPv4(server.address), port: server.port }
    const flow = this.opts.flowOf
      ? this.opts.flowOf(client, to)
      : { sourceAddress: client.address, sourcePort: port, destAddress: to.address, destPort: to.port }
    const pump = this.pump!
    const replyFrom = this.opts.answerFrom === 'listener' ? this.listener : this.serverSocket(to)
    const upstream = this.opts.upstreamOf?.(flow) ?? to
    const upstreamAddress = parseIPv4(upstream.address)
    if (upstreamAddress === null) throw new DnsWireError(`server '${upstream.address}' is not an IPv4 address`)
    const c: UdpClient = {
      server: { address: server.address, port: server.port },
      batch,
      entry: this.flowEntry(flow, DNS_UDP),
      reply: (data) => void pump.send(replyFrom, data, data.length, address, port),
      upstream,
      upstreamAddress,
    }
    this.clients.set(key, c)
    return c
  }

  private serverSocket(server: Endpoint): number {
    const key = `${server.address}:${server.port}`
    let fd = this.replySockets.get(key)
    if (fd === undefined) {
      fd = transparentUdpSocket(server.address, server.port)
      this.replySockets.set(key, fd)
    }
    return fd
  }

  /**
   * Checks a query and judges its question; answers it itself (and returns null) when it is
   * malformed, odd or denied.
   */
  private judge(msg: Buffer, route: Route, entry: FlowEntry): Pending | null {
    const reply = route.reply
    let query: QueryInfo
    try {
      query = readQuery(msg)
    } catch (e) {
      if (!(e instanceof DnsWireError)) throw e
      this.stats.invalid++
      this.opts.logger.info(
        { source: entry.source, destination: entry.destination, verdict: 'invalid', reason: e.message },
        'dns: malformed query',
      )
      if (msg.length >= HEADER_BYTES && (msg.readUInt16BE(2) & QR) === 0) reply(answer(msg, null, RCODE.FORMERR))
      return null
    }
    if (query.response) return null // not a query: nothing to answer
    if (query.opcode !== 0 || query.questions !== 1) {
      this.stats.invalid++
      const rcode = query.opcode !== 0 ? RCODE.NOTIMP : RCODE.FORMERR
      const reason = query.opcode !== 0 ? `opcode ${query.opcode} is not QUERY` : `${query.questions} questions`
      this.opts.logger.info(
        { source: entry.source, destination: entry.destination, verdict: 'invalid', reason },
        'dns: query refused',
      )
      reply(answer(msg, query, rcode))
      return null
    }
    const started = this.now()
    if (!this.rates.allow(entry.sourceKey, started)) {
      this.stats.rateLimited++
      this.opts.overload?.refusals.note('dns queries per source', started, {
        source: entry.source,
        limit: this.rates.perSecond,
      })
      reply(answer(msg, query, RCODE.REFUSED))
      return null
    }
    const qname = query.name
    const qtype = typeName(query.type)
    const verdict = this.verdictOf(entry, qname)
    if (!verdict.allowed) {
      this.stats.denied++
      reply(answer(msg, query, this.rejectCode))
      this.logQuery(
        entry.flows,
        verdict,
        qname,
        qtype,
        this.rejectCode === RCODE.REFUSED ? 'REFUSED' : 'NXDOMAIN',
        started,
        NO_ANSWERS,
      )
      return null
    }
    const question = Buffer.from(msg.subarray(0, query.questionEnd))
    return { route, flows: entry.flows, query, question, qname, qtype, verdict, started, clientId: msg.readUInt16BE(0) }
  }

  /** A name's verdict on a flow, judged once per name and policy generation (the entry is made anew when the policy changes). */
  private verdictOf(entry: FlowEntry, qname: string): FlowVerdict {
    let v = entry.names.get(qname)
    if (v === undefined) {
      if (++this.namedCount > MAX_NAMED) {
        this.flows.clear()
        this.clients.clear()
        this.namedCount = 1
      }
      v = dnsVerdict(entry.policy, qname)
      entry.names.set(qname, v)
    }
    return v
  }

  private freeId(): number | null {
    for (let i = 0; i < 0x10000; i++) {
      const id = (this.nextId + i) & 0xffff
      if (!this.pending.has(id)) {
        this.nextId = (id + 1) & 0xffff
        return id
      }
    }
    return null
  }

  /** A datagram on the upstream socket: `msg` is the pump's, valid until this returns. */
  private onAnswer(msg: Buffer, address: number, port: number): void {
    if (msg.length < HEADER_BYTES) return
    const p = this.pending.get(msg.readUInt16BE(0))
    // Only the server asked may answer (an answer from elsewhere is dropped, not relayed).
    if (!p || address !== p.route.upstreamAddress || port !== p.route.upstream.port) return
    this.pending.delete(msg.readUInt16BE(0))
    msg.writeUInt16BE(p.clientId, 0)
    this.relay(p, msg)
  }

  /** An answer for an allowed query (with the client's id): learned from, then released, then logged. */
  private relay(p: Pending, msg: Buffer): void {
    const rcode = RCODE_NAMES[msg.readUInt16BE(2) & 0xf] ?? String(msg.readUInt16BE(2) & 0xf)
    const records = this.records
    records.length = 0
    try {
      readAnswers(msg, records)
    } catch (e) {
      if (!(e instanceof DnsWireError)) throw e
      // A client's parser could read it otherwise than the proxy did: nothing is learned from it
      // or relayed; the client gets SERVFAIL for its own question.
      this.opts.logger.warn(
        { qname: p.qname, error: e.message },
        'dns: malformed answer from the server replaced by SERVFAIL',
      )
      return this.release(p, answer(p.question, p.query, RCODE.SERVFAIL), 'SERVFAIL', NO_ANSWERS, null)
    }
    const answers = answersJson(records)
    if (rcode !== 'NOERROR' || records.length === 0 || !this.opts.learn)
      return this.release(p, msg, rcode, answers, null)
    const t0 = this.now()
    let learned: Promise<void> | null = null
    try {
      learned = this.opts.learn(p.qname, records) ?? null
    } catch (e) {
      this.learnFailed(p, e as Error)
    }
    if (!learned) return this.release(p, msg, rcode, answers, 0) // in force already: nothing waited for
    const held = Buffer.from(msg) // msg may be the pump's, reused for the next datagram
    learned.then(
      () => this.release(p, held, rcode, answers, performance.now() - t0),
      (e: Error) => {
        this.learnFailed(p, e)
        this.release(p, held, rcode, answers, performance.now() - t0)
      },
    )
  }

  private learnFailed(p: Pending, e: Error): void {
    this.opts.logger.error({ qname: p.qname, error: e.message }, 'dns: learning from an answer failed')
  }

  private release(p: Pending, msg: Buffer, rcode: string, answers: string, enforceMs: number | null): void {
    p.route.reply(msg)
    this.stats.allowed++
    this.logQuery(p.flows, p.verdict, p.qname, p.qtype, rcode, p.started, answers, enforceMs)
  }

  private sweep(): void {
    const now = performance.now()
    this.rates.prune(now)
    for (const pending of [this.pending, ...this.tcpPending.values()]) {
      for (const [id, p] of pending) {
        if (now - p.started <= this.timeoutMs) continue
        pending.delete(id)
        this.stats.timedOut++
        this.logQuery(p.flows, p.verdict, p.qname, p.qtype, 'TIMEOUT', p.started, NO_ANSWERS)
      }
    }
  }

  /**
   * One line per query; its duration and (for an answer with addresses) its enforcement time
   * counted: 0 when the maps allowed them already.
   */
  private logQuery(
    flows: FlowLog,
    verdict: FlowVerdict,
    qname: string,
    qtype: string,
    rcode: string,
    started: number,
    answers: string,
    enforceMs: number | null = null,
  ): void {
    const ms = this.now() - started
    if (rcode !== 'TIMEOUT') this.latency.observe(ms / 1000)
    if (enforceMs !== null) this.enforce.observe(enforceMs / 1000)
    flows.dns({ verdict, qname, qtype, rcode, answers, ms, enforceMs })
  }

  // ---- TCP ----

  private onTcpClient(c: TcpSocket): void {
    const client = { address: c.remoteAddress!, port: c.remotePort! }
    const server = this.opts.tcpOriginalDestination
      ? this.opts.tcpOriginalDestination(c)
      : { address: c.localAddress!, port: c.localPort! }
    c.on('error', () => undefined)
    if (server === null) {
      this.stats.invalid++
      c.destroy()
      return
    }
    const flow = this.opts.flowOf
      ? this.opts.flowOf(client, server)
      : { sourceAddress: client.address, sourcePort: client.port, destAddress: server.address, destPort: server.port }
    // From the node's connection budget, as the HTTP proxy's clients: given back at its close.
    const o = this.opts.overload
    const release =
      o === undefined
        ? null
        : admitConnection(o, flow.sourceAddress, this.flowEntry(flow, DNS_TCP).policy.sourceIdentity)
    if (o !== undefined && release === null) return void c.resetAndDestroy()
    if (release !== null) c.once('close', release)
    const pending = new Map<number, Pending>()
    this.tcpPending.set(c, pending)
    let up: TcpSocket | null = null
    const reply = (m: Buffer): void => void c.write(frame(m))
    const upstream = this.opts.upstreamOf?.(flow) ?? server
    const route: Route = { reply, upstream, upstreamAddress: 0 }
    c.setTimeout(TCP_IDLE_MS, () => c.destroy())
    c.once('close', () => {
      this.tcpPending.delete(c)
      up?.destroy()
    })
    readFrames(c, (msg) => {
      const allowed = this.judge(msg, route, this.flowEntry(flow, DNS_TCP))
      if (allowed === null) return
      if (pending.has(allowed.clientId)) return reply(answer(msg, allowed.query, RCODE.SERVFAIL)) // an id already in flight here
      pending.set(allowed.clientId, allowed)
      if (up === null) {
        up = connect({ host: upstream.address, port: upstream.port })
        up.on('error', () => undefined)
        // The server went: what is still owed cannot come any more; the client may ask again.
        up.once('close', () => c.end())
        readFrames(up, (a) => {
          const p = a.length >= 12 ? pending.get(a.readUInt16BE(0)) : undefined
          if (!p) return
          pending.delete(p.clientId)
          this.relay(p, a)
        })
      }
      up.write(frame(msg))
    })
  }
}

/** A DNS message with its TCP length prefix. */
function frame(msg: Buffer): Buffer {
  const out = Buffer.allocUnsafe(2 + msg.length)
  out.writeUInt16BE(msg.length, 0)
  msg.copy(out, 2)
  return out
}

/** Calls `onMessage` with each length-prefixed message read from `s`. */
function readFrames(s: TcpSocket, onMessage: (msg: Buffer) => void): void {
  let buf: Buffer = Buffer.alloc(0)
  s.on('data', (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d])
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      const len = buf.readUInt16BE(0)
      onMessage(buf.subarray(2, 2 + len))
      buf = buf.subarray(2 + len)
    }
  })
}
