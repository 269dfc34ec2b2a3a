// One JSON line per HTTP exchange or DNS query: pino's line format (level, time, the flow's
// bindings, the fields, msg), written to the pino logger's own destination, but through a fixed
// template. pino's generic serializer measured ~6 µs a line here, a tenth of a proxied request's
// whole cost (and a quarter of a DNS query's); the template is a few string joins. Other log
// lines go through pino as usual.

import pino, { type Logger } from 'pino'
import type { AnswerRecord } from './dns/fqdn-cache.js'
import type { FlowVerdict } from './flow-verdict.js'

const INFO = 30
const str = JSON.stringify

/** An HTTP exchange. */
export interface FlowLine {
  verdict: FlowVerdict
  method: string
  path: string
  host: string | undefined
  status: number
  ms: number
  /** '2' for HTTP/2 streams; HTTP/1.x lines carry no such field. */
  httpVersion?: '2'
  /** A gRPC call's service and method, and the grpc-status it ended with (when it ended with one). */
  grpc?: { service: string; method: string; status: string | undefined } | null
}

/** A DNS query, answered by the server or by the proxy. */
export interface DnsFlowLine {
  verdict: FlowVerdict
  qname: string
  /** As typeName gives it (`A`, `TYPE65`): JSON-safe as it is. */
  qtype: string
  /** An RCODE's name, its number, or TIMEOUT: JSON-safe as it is. */
  rcode: string
  /** The answer's records as a JSON array (answersJson). */
  answers: string
  ms: number
  /**
   * From the answer's arrival to the maps allowing the addresses it named (0: they did already);
   * null for an answer with none (the line leaves it out).
   */
  enforceMs: number | null
}

/**
 * A duration in ms as JSON with at most 3 decimals (what Math.round(ms * 1000) / 1000 prints),
 * made from whole numbers: printing a fraction cost more than the rest of a line's numbers.
 */
export function msJson(ms: number): string {
  const us = Math.round(ms * 1000)
  if (!(us >= 0 && us < 1e9)) return String(us / 1000)
  const whole = Math.floor(us / 1000)
  let frac = us - whole * 1000
  if (frac === 0) return `${whole}`
  let digits = 3
  while (frac % 10 === 0) {
    frac /= 10
    digits--
  }
  const pad = frac < 10 ? digits - 1 : frac < 100 ? digits - 2 : 0
  return `${whole}.${pad === 2 ? '00' : pad === 1 ? '0' : ''}${frac}`
}

/** A line's start, `{"level":30,"time":<ms>`: made again only when the millisecond changes (many lines share one). */
let headMs = 0
let headText = ''
function lineHead(): string {
  const now = Date.now()
  if (now !== headMs) {
    headMs = now
    headText = `{"level":${INFO},"time":${now}`
  }
  return headText
}

export const NO_ANSWERS = '[]'

/**
 * A DNS answer's records for its line, `["A 192.0.2.3","CNAME b.empire"]`: built once when the
 * answer is read (its records are reused for the next). Addresses and type names need no
 * escaping; names may (a label can hold any byte).
 */
export function answersJson(records: readonly AnswerRecord[]): string {
  if (records.length === 0) return NO_ANSWERS
  let s = '['
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!
    if (i > 0) s += ','
    if (r.data === undefined) s += `"${r.type}"`
    else if (r.type === 'A' || r.type === 'AAAA') s += `"${r.type} ${r.data as string}"`
    else s += str(`${r.type} ${r.data as string}`)
  }
  return s + ']'
}

export class FlowLog {
  private readonly stream: { write(line: string): unknown }
  /** `,"source":...,"destination":...`, serialized once per connection. */
  private readonly bindings: string
  // The verdict part of the last line (rules, reason, identities): a connection's requests mostly
  // hit the same rule, whose strings are the same objects each time.
  private lastRule: string | undefined = undefined
  private lastReason = ''
  private lastSource = 0
  private lastDest = 0
  private lastVerdict = ''

  constructor(
    private readonly logger: Logger,
    bindings: Record<string, string>,
  ) {
    this.stream = (logger as unknown as Record<symbol, { write(line: string): unknown }>)[pino.symbols.streamSym]!
    let b = ''
    for (const [k, v] of Object.entries(bindings)) b += `,${str(k)}:${str(v)}`
    this.bindings = b
  }

  http(l: FlowLine): void {
    if (!this.logger.isLevelEnabled('info')) return
    let extra = l.host === undefined ? '' : `,"host":${str(l.host)}`
    if (l.httpVersion !== undefined) extra += `,"httpVersion":"${l.httpVersion}"`
    if (l.grpc) {
      extra += `,"grpcService":${str(l.grpc.service)},"grpcMethod":${str(l.grpc.method)}`
      if (l.grpc.status !== undefined) extra += `,"grpcStatus":${Number(l.grpc.status) || 0}`
    }
    this.line(l.verdict, `,"method":${str(l.method)},"path":${str(l.path)}${extra},"status":${l.status},"ms":${msJson(l.ms)}`, l.verdict.allowed ? 'http allowed' : 'http denied')
  }

  dns(l: DnsFlowLine): void {
    if (!this.logger.isLevelEnabled('info')) return
    const enforce = l.enforceMs === null ? '' : `,"enforceMs":${msJson(l.enforceMs)}`
    this.line(l.verdict, `,"qname":${str(l.qname)},"qtype":"${l.qtype}","rcode":"${l.rcode}","answers":${l.answers},"ms":${msJson(l.ms)}${enforce}`, l.verdict.allowed ? 'dns allowed' : 'dns denied')
  }

  /** `fields`: serialized, each with its leading comma. */
  private line(verdict: FlowVerdict, fields: string, msg: string): void {
    this.stream.write(`${lineHead()}${this.bindings}${this.verdictPart(verdict)}${fields},"msg":"${msg}"}\n`)
  }

  private verdictPart(v: FlowVerdict): string {
    const rule = v.rules.length === 1 ? v.rules[0] : undefined
    if (rule === undefined || rule !== this.lastRule || v.reason !== this.lastReason || v.sourceIdentity !== this.lastSource || v.destIdentity !== this.lastDest) {
      const part =
        `,"verdict":"${v.allowed ? 'allowed' : 'denied'}","rules":${str(v.rules)},"reason":${str(v.reason)},` +
        `"sourceIdentity":${v.sourceIdentity},"destIdentity":${v.destIdentity}`
      if (rule === undefined) return part
      this.lastRule = rule
      this.lastReason = v.reason
      this.lastSource = v.sourceIdentity
      this.lastDest = v.destIdentity
      this.lastVerdict = part
    }
    return this.lastVerdict
  }
}
