// llhttp (undici's WebAssembly build, llhttp-wasm.ts) driven on raw sockets: the proxy pays for
// parsing and nothing else (no IncomingMessage, no streams per request). Strict: no leniency
// flags, so conflicting framing, obs-fold, bare LF and bad characters are errors; a head larger
// than `maxHeaderBytes` is one too (HPE_HEADER_OVERFLOW, as node's parser names it).
// A plain TCP socket is read the way node:net reads one given its own buffer: libuv reads into
// one buffer this thread shares, and the handle's onread runs the parser on it; no Buffer,
// stream push or 'data' event per read. Other sockets (TLS) are read through their 'data' events.
// Header fields stay bytes where llhttp found them (head-fields.ts): a head read in one read is
// handed over as spans of the parser's memory; one cut across reads is copied out as it comes.
// Strings are made of the start line only. Body bytes are copied out of the parser's memory,
// since a write may keep them past the next read.

import { Buffer } from 'node:buffer'
import type { Socket } from 'node:net'
import { type ByteStore, HeadFields, type Latin1Buffer } from './head-fields.js'
import {
  INPUT_BYTES,
  type Llhttp,
  type LlhttpHandler,
  llhttp,
  PAUSED_UPGRADE,
  REQUEST,
  RESPONSE,
} from './llhttp-wasm.js'
import type { RawSocket } from './raw-socket.js'
import { SocketReads } from './socket-reads.js'

/** A request's or response's start line and header fields, as sent. */
export interface MessageHead {
  versionMajor: number
  versionMinor: number
  /** The header fields in wire order, names as sent; valid only during onHead. */
  fields: HeadFields
  /** Requests only. */
  method: string
  url: string
  /** Responses only. */
  status: number
  reason: string
  upgrade: boolean
  /** What the message's version and Connection header say about the connection after it. */
  keepAlive: boolean
}

export interface ParserSink {
  /** At the start of every read of the socket (and of finish()). */
  onReadStart(): void
  /** After every read of the socket: `err` when its bytes were not HTTP (reading stops then). */
  onReadEnd(err: ParseError | null): void
  /** The first byte of a message. */
  onMessageBegin?(): void
  /** Returns true to read no body (a response to HEAD). */
  onHead(head: MessageHead): boolean
  onBody(chunk: Buffer): void
  onMessageComplete(): void
}

/** llhttp's error for bytes that are not valid HTTP/1.x: `code` is llhttp's (HPE_...). */
export interface ParseError extends Error {
  code: string
  reason?: string
}

const HEADER_OVERFLOW = { code: 'HPE_HEADER_OVERFLOW', reason: 'Header overflow' }

function parseError(e: { code: string; reason: string }): ParseError {
  return Object.assign(new Error(`Parse Error: ${e.reason}`), e)
}

/**
 * A closed parser's llhttp state and field table, kept for the next parser of its kind on this
 * thread: making them (llhttp_alloc, two typed arrays with their own memory) and freeing the
 * state later (an immediate per connection, since close() may come from the parser's own callback)
 * cost ~4 µs of a short connection's CPU.
 */
interface SpareParser {
  ptr: number
  fields: HeadFields
}
const spares: Record<'request' | 'response', SpareParser[]> = { request: [], response: [] }
/** Past this many spares of a kind (the most connections this thread had open at once, bounded), a closed parser's state is freed. */
const MAX_SPARES = 1024

/** A head's bytes copied out of the parser's memory, for a head that takes more than one read. */
class HeadCopy implements ByteStore {
  mem: Latin1Buffer = Buffer.allocUnsafeSlow(1024) as Latin1Buffer
  used = 0

  /** Appends `length` bytes of `from` at `at`; where they went. */
  append(from: Buffer, at: number, length: number): number {
    if (this.used + length > this.mem.length) {
      const mem = Buffer.allocUnsafeSlow(Math.max(this.mem.length * 2, this.used + length)) as Latin1Buffer
      this.mem.copy(mem, 0, 0, this.used)
      this.mem = mem
    }
    from.copy(this.mem, this.used, at, at + length)
    this.used += length
    return this.used - length
  }
}

/** Which part of the head the last span belonged to (a part may come in several spans). */
const enum Part {
  None,
  Field,
  Value,
}

export class Http1Parser implements LlhttpHandler {
  private readonly wasm: Llhttp
  private readonly ptr: number
  private readonly kind: 'request' | 'response'
  private readonly fields: HeadFields
  /** How deep llhttp is running this parser now: close() leaves its state to be recycled after. */
  private running = 0
  /** Where a head that outlasts a read is copied (made at the first such head, then kept). */
  private headCopy: HeadCopy | null = null
  /** The head being read is in headCopy (not in the parser's memory). */
  private copying = false
  /** Between a message's first byte and the end of its head. */
  private inHead = false
  private url = ''
  private reason = ''
  private part = Part.None
  private headBytes = 0
  /** An error a callback found (llhttp reports only that a callback failed). */
  private failure: { code: string; reason: string } | null = null
  /** Unusable (an error, or closed): reads are dropped. */
  private dead = false
  private freed = false
  /** Its llhttp state has gone to the spares (or been freed). */
  private recycled = false
  private readonly reads = new SocketReads((data, length) => this.parse(data, length))

  constructor(
    kind: 'request' | 'response',
    private readonly maxHeaderBytes: number,
    private readonly sink: ParserSink,
  ) {
    this.kind = kind
    this.wasm = llhttp()
    const spare = spares[kind].pop()
    if (spare !== undefined) {
      this.wasm.fn.llhttp_reset(spare.ptr)
      this.ptr = spare.ptr
      this.fields = spare.fields
    } else {
      this.ptr = this.wasm.alloc(kind === 'request' ? REQUEST : RESPONSE)
      this.fields = new HeadFields(this.wasm)
    }
  }

  /**
   * Parses what `socket` reads from now on, after `first` (bytes already read from it). An error
   * leaves the parser unusable: it stops reading (the socket's later bytes go nowhere).
   */
  readFrom(socket: Socket | RawSocket, first: Buffer | null = null): void {
    this.reads.start(socket)
    if (first !== null) this.parse(first, first.length)
  }

  /** Stops reading the socket (back-pressure: the other side cannot take more now). */
  pauseReading(): void {
    this.reads.pause()
  }

  resumeReading(): void {
    this.reads.resume()
  }

  /**
   * One read's bytes, then the sink's onReadEnd. Never from inside another parser's callback: the
   * thread's parsers share llhttp's input, which the outer one is still reading (the proxy feeds
   * parsers only from reads, and a new connection's first bytes from the listener's).
   */
  private parse(data: Uint8Array, length: number): void {
    if (this.dead) return
    this.sink.onReadStart()
    let err: ParseError | null = null
    for (let at = 0; at < length && err === null; at += INPUT_BYTES) {
      const n = Math.min(length - at, INPUT_BYTES)
      this.wasm.mem.set(at === 0 && n === data.length ? data : data.subarray(at, at + n), this.wasm.input)
      err = this.run(this.wasm.fn.llhttp_execute, n)
    }
    this.sink.onReadEnd(err)
  }

  /** Runs llhttp (execute, or finish) with this parser's callbacks; the error it ended with, if any. */
  private run(step: (p: number, data: number, len: number) => number, n: number): ParseError | null {
    const w = this.wasm
    const outer = w.current
    w.current = this
    this.running++
    try {
      const ret = step(this.ptr, w.input, n)
      // The input is overwritten by the next read: a head still being read keeps its bytes.
      if (this.inHead && !this.copying && !this.freed) {
        const copy = (this.headCopy ??= new HeadCopy())
        copy.used = 0
        this.fields.moveTo(copy)
        this.copying = true
      }
      if (ret === 0 || ret === PAUSED_UPGRADE) return null
      this.dead = true
      return parseError(this.failure ?? w.error(this.ptr, ret))
    } finally {
      w.current = outer
      if (--this.running === 0 && this.freed) this.recycle()
    }
  }

  /** The peer closed: completes a body delimited by the connection's end; a cut one is an error (to onReadEnd). */
  finish(): void {
    if (this.dead) return
    this.sink.onReadStart()
    this.sink.onReadEnd(this.run((p) => this.wasm.fn.llhttp_finish(p), 0))
  }

  /** Done with the parser: its state goes to the next parser of its kind once llhttp is no longer running it (close() may come from its own callback). */
  close(): void {
    this.reads.stop()
    if (this.freed) return
    this.freed = this.dead = true
    if (this.running === 0) this.recycle()
  }

  private recycle(): void {
    if (this.recycled) return
    this.recycled = true
    const kept = spares[this.kind]
    if (kept.length < MAX_SPARES) kept.push({ ptr: this.ptr, fields: this.fields })
    else this.wasm.fn.llhttp_free(this.ptr)
  }

  // ---- llhttp's callbacks ----

  onMessageBegin(): number {
    this.fields.reset(this.wasm)
    this.inHead = true
    this.url = this.reason = ''
    this.part = Part.None
    this.headBytes = 0
    this.sink.onMessageBegin?.()
    return 0
  }

  /** Counts a span of the head against the limit; false past it. */
  private counted(len: number): boolean {
    this.headBytes += len
    if (this.headBytes <= this.maxHeaderBytes) return true
    this.failure = HEADER_OVERFLOW
    return false
  }

  onUrl(at: number, len: number): number {
    if (!this.counted(len)) return -1
    this.url += this.wasm.latin1(at, len)
    return 0
  }

  onStatus(at: number, len: number): number {
    if (!this.counted(len)) return -1
    this.reason += this.wasm.latin1(at, len)
    return 0
  }

  onHeaderField(at: number, len: number): number {
    return this.span(Part.Field, at, len)
  }

  onHeaderValue(at: number, len: number): number {
    return this.span(Part.Value, at, len)
  }

  /**
   * A span of a header name or value. llhttp calls back for every value, an empty one too (with
   * no bytes), so a span of the same part as the last one is its continuation, cut by a read.
   */
  private span(part: Part, at: number, len: number): number {
    if (!this.counted(len)) return -1
    const f = this.fields
    // A head being copied out gets each span appended: a continuation lands right after its start.
    if (this.copying) at = this.headCopy!.append(this.wasm.mem, at, len)
    if (this.part === part) f.extendLast(part === Part.Field ? 'name' : 'value', len)
    else if (part === Part.Field) f.addName(at, len)
    else f.setValue(f.count - 1, at, len)
    this.part = part
    return 0
  }

  onHeadersComplete(status: number, upgrade: number, keepAlive: number): number {
    const fields = this.fields
    // A value's span ends where its line does: trailing whitespace (OWS) is not part of it.
    for (let i = 0; i < fields.count; i++) fields.trimValue(i)
    this.inHead = false
    const w = this.wasm
    const request = this.kind === 'request'
    const head: MessageHead = {
      versionMajor: w.fn.llhttp_get_http_major(this.ptr),
      versionMinor: w.fn.llhttp_get_http_minor(this.ptr),
      fields,
      method: request ? w.method(this.ptr) : '',
      url: this.url,
      status: request ? 0 : status,
      reason: this.reason,
      upgrade: upgrade === 1,
      keepAlive: keepAlive === 1,
    }
    const noBody = this.sink.onHead(head)
    this.copying = false
    return noBody ? 1 : 0
  }

  onBody(at: number, len: number): number {
    // Copied out through a view: Buffer.copyBytesFrom measured 10x slower for a short body.
    const chunk = Buffer.allocUnsafe(len)
    chunk.set(new Uint8Array(this.wasm.mem.buffer, at, len))
    this.sink.onBody(chunk)
    return 0
  }

  onMessageComplete(): number {
    this.sink.onMessageComplete()
    return 0
  }
}
