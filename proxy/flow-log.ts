// One JSON line per HTTP exchange or DNS query: pino's line format (level, time, the flow's
// bindings, the fields, msg), written to the pino logger's own destination, but through a fixed
// template written straight into the destination's bytes (json-bytes.ts; LineChunks's chunk).
// pino's generic serializer measured ~6 µs a line here, a tenth of a proxied request's whole
// cost; a template of joined strings ~1.1 µs (half of it making and encoding the joined string).
// Other log lines go through pino as usual.

import { Buffer } from 'node:buffer'
import pino, { type Logger } from 'pino'
import type { AnswerRecord } from './dns/fqdn-cache.js'
import type { FlowEnds, FlowVerdict } from './flow-verdict.js'
import { NUMBER_ROOM, putAscii, putInt, putMs, putString, stringRoom } from './json-bytes.js'

const INFO = 30
const str = JSON.stringify

/** An HTTP exchange. */
export interface FlowLine {
  verdict: FlowVerdict
  method: string
  /** The path the rules judged and the server got (normalized). */
  path: string
  /** The request target as the client sent it, when it is not `path`. */
  target?: string
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

/** Where a FlowLog writes a line's bytes (LineChunks): room for at most `max`, written from `lineStart`, then commit(end). */
export interface LineSink {
  reserve(max: number): Buffer
  readonly lineStart: number
  commit(end: number): void
}

/** A LineSink for a destination that takes lines as strings (pino's default destinations; tests). */
class StringLines implements LineSink {
  private buf = Buffer.allocUnsafe(1024)
  readonly lineStart = 0

  constructor(private readonly stream: { write(line: string): unknown }) {}

  reserve(max: number): Buffer {
    if (max > this.buf.length) this.buf = Buffer.allocUnsafe(max)
    return this.buf
  }

  commit(end: number): void {
    this.stream.write(this.buf.toString('utf8', 0, end))
  }
}

const LINE_START = `{"level":${INFO},"time":`
const ascii = (s: string): Buffer => Buffer.from(s, 'latin1')
const MSG = {
  http: { allowed: ascii(',"msg":"http allowed"}\n'), denied: ascii(',"msg":"http denied"}\n') },
  dns: { allowed: ascii(',"msg":"dns allowed"}\n'), denied: ascii(',"msg":"dns denied"}\n') },
}
/** `{"level":30,"time":<ms>` for the ms it was made in: the lines of one ms (dozens, under load) share it. */
let startMs = -1
let start = Buffer.alloc(0)

function lineStart(now: number): Buffer {
  if (now === startMs) return start
  const b = Buffer.allocUnsafe(LINE_START.length + NUMBER_ROOM)
  start = b.subarray(0, putInt(b, putAscii(b, 0, LINE_START), now))
  startMs = now
  return start
}

/** Room for a line's fixed parts: its start and time, keys, numbers, msg. */
const FIXED_ROOM = 320

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
  return `${s}]`
}

// The verdict part of the last line this thread wrote (rules, reason, identities): requests
// mostly hit the rule the one before hit (on the same connection or another), whose strings are
// the same objects each time.
const last = { rule: undefined as string | undefined, reason: '', source: 0, dest: 0, part: Buffer.alloc(0) }

function verdictPart(v: FlowVerdict): Buffer {
  const rule = v.rules.length === 1 ? v.rules[0] : undefined
  if (
    rule !== undefined &&
    rule === last.rule &&
    v.reason === last.reason &&
    v.sourceIdentity === last.source &&
    v.destIdentity === last.dest
  )
    return last.part
  const part = Buffer.from(
    `,"verdict":"${v.allowed ? 'allowed' : 'denied'}","rules":${str(v.rules)},"reason":${str(v.reason)},` +
      `"sourceIdentity":${v.sourceIdentity},"destIdentity":${v.destIdentity}`,
  )
  if (rule !== undefined)
    Object.assign(last, { rule, reason: v.reason, source: v.sourceIdentity, dest: v.destIdentity, part })
  return part
}

export class FlowLog {
  private readonly out: LineSink
  /** `,"source":...,"destination":...`, written out at the first line and copied from then on. */
  private endsBytes: Buffer | null = null
  /** The line being written. */
  private buf: Buffer = Buffer.alloc(0)

  constructor(
    private readonly logger: Logger,
    private readonly ends: FlowEnds,
  ) {
    const stream = (logger as unknown as Record<symbol, { write(line: string): unknown } & Partial<LineSink>>)[
      pino.symbols.streamSym
    ]!
    this.out = typeof stream.reserve === 'function' ? (stream as LineSink) : new StringLines(stream)
  }

  /** Room for the ends' part of a line. */
  private get endsRoom(): number {
    return this.endsBytes?.length ?? stringRoom(this.ends.source) + stringRoom(this.ends.destination) + 32
  }

  http(l: FlowLine): void {
    if (this.logger.levelVal > INFO) return
    const verdict = verdictPart(l.verdict)
    const grpc = l.grpc
    const room =
      FIXED_ROOM +
      this.endsRoom +
      verdict.length +
      stringRoom(l.method) +
      stringRoom(l.path) +
      (l.target === undefined ? 0 : stringRoom(l.target)) +
      (l.host === undefined ? 0 : stringRoom(l.host)) +
      (grpc ? stringRoom(grpc.service) + stringRoom(grpc.method) : 0)
    let at = this.begin(room, verdict)
    const buf = this.buf
    at = putAscii(buf, at, ',"method":')
    at = putString(buf, at, l.method)
    at = putAscii(buf, at, ',"path":')
    at = putString(buf, at, l.path)
    if (l.target !== undefined) at = putString(buf, putAscii(buf, at, ',"target":'), l.target)
    if (l.host !== undefined) {
      at = putAscii(buf, at, ',"host":')
      at = putString(buf, at, l.host)
    }
    if (l.httpVersion !== undefined) at = putAscii(buf, at, `,"httpVersion":"${l.httpVersion}"`)
    if (grpc) {
      at = putAscii(buf, at, ',"grpcService":')
      at = putString(buf, at, grpc.service)
      at = putAscii(buf, at, ',"grpcMethod":')
      at = putString(buf, at, grpc.method)
      if (grpc.status !== undefined) at = putInt(buf, putAscii(buf, at, ',"grpcStatus":'), Number(grpc.status) || 0)
    }
    at = putInt(buf, putAscii(buf, at, ',"status":'), l.status)
    at = putMs(buf, putAscii(buf, at, ',"ms":'), l.ms)
    this.end(at, l.verdict.allowed ? MSG.http.allowed : MSG.http.denied)
  }

  dns(l: DnsFlowLine): void {
    if (this.logger.levelVal > INFO) return
    const verdict = verdictPart(l.verdict)
    const room =
      FIXED_ROOM +
      this.endsRoom +
      verdict.length +
      stringRoom(l.qname) +
      l.qtype.length +
      l.rcode.length +
      l.answers.length * 3
    let at = this.begin(room, verdict)
    const buf = this.buf
    at = putString(buf, putAscii(buf, at, ',"qname":'), l.qname)
    at = putAscii(buf, at, ',"qtype":"')
    at = putAscii(buf, at, l.qtype)
    at = putAscii(buf, at, '","rcode":"')
    at = putAscii(buf, at, l.rcode)
    at = putAscii(buf, at, '","answers":')
    // Built once per answer, and JSON already; names in it may be UTF-8.
    at += buf.write(l.answers, at)
    at = putMs(buf, putAscii(buf, at, ',"ms":'), l.ms)
    if (l.enforceMs !== null) at = putMs(buf, putAscii(buf, at, ',"enforceMs":'), l.enforceMs)
    this.end(at, l.verdict.allowed ? MSG.dns.allowed : MSG.dns.denied)
  }

  /** Starts a line in `buf` (at most `room` bytes): `{"level":30,"time":<ms>`, the ends and the verdict part. */
  private begin(room: number, verdict: Buffer): number {
    const buf = (this.buf = this.out.reserve(room))
    const first = lineStart(Date.now())
    let at = this.out.lineStart
    buf.set(first, at)
    at += first.length
    if (this.endsBytes === null) {
      const from = at
      at = putString(buf, putAscii(buf, at, ',"source":'), this.ends.source)
      at = putString(buf, putAscii(buf, at, ',"destination":'), this.ends.destination)
      // A copy: the line's bytes leave with their chunk.
      this.endsBytes = Buffer.from(buf.subarray(from, at))
    } else {
      buf.set(this.endsBytes, at)
      at += this.endsBytes.length
    }
    buf.set(verdict, at)
    return at + verdict.length
  }

  private end(at: number, msg: Buffer): void {
    this.buf.set(msg, at)
    this.out.commit(at + msg.length)
  }
}
