// What `l7proxy flows` shows: the proxy's decisions (the flow lines every thread logs) and the
// kernel's drops (per-endpoint counter increases, read every second), kept as the last RECENT
// events and passed to followers as they happen, each follower with its filter. Log lines are
// kept as the chunks of bytes they were written in and read only when someone asks, or as they
// come while someone follows: the proxy's hot path pays nothing per line.

import type { Counter } from '../../redirect-bpf/map-layout.js'

export interface FlowEvent {
  /** ms since the epoch */
  time: number
  protocol: FlowProtocol
  /** http, dns, tls: allowed, denied or invalid; kernel: the drop's reason. */
  verdict: string
  [field: string]: unknown
}

export interface FlowFilter {
  verdict?: string
  endpoint?: number
  protocol?: FlowProtocol
}

const PROTOCOLS = ['http', 'dns', 'tls', 'kernel'] as const
export type FlowProtocol = (typeof PROTOCOLS)[number]

const RECENT = 1_000
/** Lines (and kernel events) kept: a few lines are not flow lines, so more than RECENT. */
const KEEP = 2 * RECENT
/** And no more log bytes than this, whatever the lines' length. */
const KEEP_BYTES = 4 * 1024 * 1024
const FLOW_MSG = /^"msg":"(http|dns|tls)( allowed| denied|: )/
const VERDICTS = ['allowed', 'denied', 'invalid', 'denied-by-rule', 'denied-default', 'no-proxy']

export class FlowFilterError extends Error {}

/** A filter from query parameters (verdict, endpoint, protocol), and how many recent events to start with (last). */
export function parseFlowQuery(q: URLSearchParams): { filter: FlowFilter; last: number } {
  const filter: FlowFilter = {}
  const verdict = q.get('verdict')
  if (verdict !== null) {
    if (!VERDICTS.includes(verdict))
      throw new FlowFilterError(`unknown verdict '${verdict}'; expected one of: ${VERDICTS.join(', ')}`)
    filter.verdict = verdict
  }
  const endpoint = q.get('endpoint')
  if (endpoint !== null) {
    if (!/^\d{1,5}$/.test(endpoint)) throw new FlowFilterError(`endpoint must be an endpoint id, not '${endpoint}'`)
    filter.endpoint = Number(endpoint)
  }
  const protocol = q.get('protocol')
  if (protocol !== null) {
    if (!(PROTOCOLS as readonly string[]).includes(protocol))
      throw new FlowFilterError(`unknown protocol '${protocol}'; expected ${PROTOCOLS.join(', ')}`)
    filter.protocol = protocol as FlowProtocol
  }
  const lastText = q.get('last') ?? '0'
  const last = Number(lastText)
  if (!Number.isInteger(last) || last < 0 || last > RECENT)
    throw new FlowFilterError(`last must be a whole number from 0 to ${RECENT}, not '${lastText}'`)
  return { filter, last }
}
const KERNEL_DROPS = new Set(['denied-by-rule', 'denied-default', 'no-proxy'])

/** A proxy's flow line as an event: its fields without pino's level and msg. */
function lineEvent(line: string): FlowEvent {
  const { level: _level, msg, ...fields } = JSON.parse(line) as Record<string, unknown>
  return {
    ...fields,
    time: Number(fields.time),
    protocol: String(msg).startsWith('dns') ? 'dns' : String(msg).startsWith('tls') ? 'tls' : 'http',
    verdict: String(fields.verdict),
  }
}

/** The flow lines among whole log lines, as events. */
function flowEvents(bytes: Buffer): FlowEvent[] {
  const events: FlowEvent[] = []
  for (const line of bytes.toString().split('\n')) {
    // pino writes msg last: only the line's end is read to tell a flow line from the rest.
    if (FLOW_MSG.test(line.slice(line.lastIndexOf('"msg":"'))) && line.includes('"verdict":'))
      events.push(lineEvent(line))
  }
  return events
}

/** Log lines as written, and how many. */
class LineChunk {
  constructor(
    readonly bytes: Buffer,
    readonly lines: number,
  ) {}
}

const weight = (e: FlowEvent | LineChunk): number => (e instanceof LineChunk ? e.lines : 1)
const bytesOf = (e: FlowEvent | LineChunk): number => (e instanceof LineChunk ? e.bytes.length : 0)

export class FlowFeed {
  /** Kernel events and chunks of log lines, oldest first: the last KEEP lines' and events' worth. */
  private readonly recent: Array<FlowEvent | LineChunk> = []
  private held = 0
  /** The log bytes kept (line-chunks.ts keeps a chunk's memory within twice its bytes). */
  heldBytes = 0
  private readonly followers = new Set<{ filter: FlowFilter; send: (e: FlowEvent) => void }>()
  private lastCounters = new Map<string, number>()
  private primed = false

  /** `endpointIps(id)`: the addresses of endpoint `id`, to match HTTP flows by either end. */
  constructor(private readonly endpointIps: (id: number) => readonly string[]) {}

  /** Whether an event passes a filter. */
  matches(e: FlowEvent, f: FlowFilter): boolean {
    if (f.protocol !== undefined && e.protocol !== f.protocol) return false
    if (f.verdict !== undefined && !(e.verdict === f.verdict || (f.verdict === 'denied' && e.protocol === 'kernel')))
      return false
    if (f.endpoint !== undefined) {
      if (e.protocol === 'kernel') return e.endpoint === f.endpoint
      const ips = this.endpointIps(f.endpoint)
      const ip = (a: unknown): string => String(a).split(':')[0]!
      return ips.includes(ip(e.source)) || ips.includes(ip(e.destination))
    }
    return true
  }

  /** The last RECENT events that pass `filter`, oldest first. */
  recentEvents(filter: FlowFilter): FlowEvent[] {
    const events: FlowEvent[] = []
    for (const e of this.recent) {
      if (e instanceof LineChunk) for (const f of flowEvents(e.bytes)) events.push(f)
      else events.push(e)
    }
    return events.slice(-RECENT).filter((e) => this.matches(e, filter))
  }

  /** Calls `send` with each new event that passes `filter`, until the returned function is called. */
  follow(filter: FlowFilter, send: (e: FlowEvent) => void): () => void {
    const f = { filter, send }
    this.followers.add(f)
    return () => this.followers.delete(f)
  }

  /** Whole JSON log lines, `lines` of them; the flow lines among them are events. The bytes are kept as they are. */
  publishLines(bytes: Buffer, lines: number): void {
    this.keep(new LineChunk(bytes, lines))
    if (this.followers.size > 0) for (const e of flowEvents(bytes)) this.tell(e)
  }

  /** The kernel's counters now: each drop counter that grew since the last call becomes an event. */
  publishKernel(counters: readonly Counter[], now = Date.now()): void {
    const next = new Map<string, number>()
    for (const c of counters) {
      if (!KERNEL_DROPS.has(c.verdict)) continue
      const key = `${c.endpointId}/${c.verdict}`
      next.set(key, c.packets)
      const grew = c.packets - (this.lastCounters.get(key) ?? 0)
      if (this.primed && grew > 0) {
        const e: FlowEvent = {
          time: now,
          protocol: 'kernel',
          verdict: c.verdict,
          endpoint: c.endpointId,
          packets: grew,
        }
        this.keep(e)
        this.tell(e)
      }
    }
    this.lastCounters = next
    this.primed = true // what was counted before the agent started is not news
  }

  private keep(e: FlowEvent | LineChunk): void {
    this.recent.push(e)
    this.held += weight(e)
    this.heldBytes += bytesOf(e)
    while (this.recent.length > 1 && (this.held - weight(this.recent[0]!) >= KEEP || this.heldBytes > KEEP_BYTES)) {
      const gone = this.recent.shift()!
      this.held -= weight(gone)
      this.heldBytes -= bytesOf(gone)
    }
  }

  private tell(e: FlowEvent): void {
    for (const f of this.followers) if (this.matches(e, f.filter)) f.send(e)
  }
}
