// Node's own llhttp binding (the parser behind node:http), driven directly on raw sockets: the
// proxy pays for parsing and nothing else (no IncomingMessage, no streams per request). Strict:
// no leniency flags, so conflicting framing, obs-fold, bare LF and bad characters are errors.
// The binding is reached through `node:_http_common`, the module node:http itself uses; this file
// is the only place that knows its calling convention.
// A plain TCP socket is read the way node:http's server reads it: the parser consumes the socket's
// native handle, so each read goes from libuv into llhttp in C++ (into one shared buffer) and JS
// sees only the parser's callbacks; no Buffer, stream push or 'data' event per read. Other
// sockets (TLS) are read through their 'data' events.

import type { Socket } from 'node:net'
import { createRequire } from 'node:module'
import { TLSSocket } from 'node:tls'

/** A request's or response's start line and header fields, as sent (raw name/value pairs). */
export interface MessageHead {
  versionMinor: number
  /** [name, value, name, value...] in wire order, names as sent. */
  raw: string[]
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
  /** Before the first of the callbacks one read of the socket causes. */
  onReadStart(): void
  /** After every read of the socket: `err` when its bytes were not HTTP (reading stops then). */
  onReadEnd(err: ParseError | null): void
  /** The first byte of a message (left out, the parser skips a call per message). */
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

interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void
  execute(data: Buffer): number | ParseError
  finish(): undefined | ParseError
  close(): void
  consume(handle: object): void
  unconsume(): void
  [callback: number]: (...args: never[]) => unknown
}

interface HttpCommon {
  HTTPParser: {
    new (): NativeParser
    REQUEST: number
    RESPONSE: number
    kOnMessageBegin: number
    kOnHeaders: number
    kOnHeadersComplete: number
    kOnBody: number
    kOnMessageComplete: number
    kOnExecute: number
    kLenientNone: number
  }
  methods: string[]
}

const { HTTPParser, methods } = createRequire(import.meta.url)('node:_http_common') as HttpCommon

/** A native stream handle (libuv TCP); `reading` is how node:net tracks it, kept in step here. */
interface StreamHandle {
  reading: boolean
  readStart(): number
  readStop(): number
}

function closeNative(p: NativeParser): void {
  p.unconsume()
  p.close()
}

export class Http1Parser {
  private readonly native: NativeParser
  // llhttp hands over header fields in batches of 32 when there are more; collected here.
  private pendingRaw: string[] = []
  private pendingUrl = ''
  /** Some callback of the current read has run (its sink's onReadStart has been called). */
  private inRead = false
  private socket: Socket | null = null
  /** The socket's native handle while the parser consumes it. */
  private handle: StreamHandle | null = null

  constructor(
    kind: 'request' | 'response',
    maxHeaderBytes: number,
    private readonly sink: ParserSink,
  ) {
    const p = new HTTPParser()
    p.initialize(kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE, {}, maxHeaderBytes, HTTPParser.kLenientNone)
    const begin = sink.onMessageBegin?.bind(sink)
    if (begin !== undefined) {
      p[HTTPParser.kOnMessageBegin] = () => {
        this.readStart()
        begin()
      }
    }
    p[HTTPParser.kOnHeaders] = (raw: string[], url: string) => {
      for (const f of raw) this.pendingRaw.push(f)
      this.pendingUrl += url
    }
    p[HTTPParser.kOnHeadersComplete] = (
      _major: number,
      versionMinor: number,
      raw: string[] | undefined,
      method: number | undefined,
      url: string | undefined,
      status: number | undefined,
      reason: string | undefined,
      upgrade: boolean,
      keepAlive: boolean,
    ): number => {
      this.readStart()
      if (raw === undefined) {
        raw = this.pendingRaw
        this.pendingRaw = []
      }
      if (url === undefined) {
        url = this.pendingUrl
        this.pendingUrl = ''
      }
      const head: MessageHead = {
        versionMinor,
        raw,
        method: method === undefined ? '' : methods[method]!,
        url,
        status: status ?? 0,
        reason: reason ?? '',
        upgrade,
        keepAlive,
      }
      return sink.onHead(head) ? 1 : 0
    }
    p[HTTPParser.kOnBody] = (chunk: Buffer) => {
      this.readStart()
      sink.onBody(chunk)
    }
    p[HTTPParser.kOnMessageComplete] = () => {
      this.readStart()
      sink.onMessageComplete()
    }
    p[HTTPParser.kOnExecute] = this.executed
    this.native = p
  }

  /**
   * Parses what `socket` reads from now on, after `first` (bytes already read from it). An error
   * leaves the parser unusable: it stops reading (the socket's later bytes go nowhere).
   */
  readFrom(socket: Socket, first: Buffer | null = null): void {
    this.socket = socket
    if (first !== null && !this.executed(this.native.execute(first))) return
    const handle = (socket as unknown as { _handle: (StreamHandle & { isStreamBase?: boolean }) | null })._handle
    if (!(socket instanceof TLSSocket) && handle?.isStreamBase === true) {
      this.native.consume(handle)
      this.handle = handle
    } else socket.on('data', this.onData)
  }

  /** Stops reading the socket (back-pressure: the other side cannot take more now). */
  pauseReading(): void {
    const h = this.handle
    if (h === null) return void this.socket?.pause()
    if (!h.reading || this.socket!.destroyed) return
    h.reading = false
    h.readStop()
  }

  resumeReading(): void {
    const h = this.handle
    if (h === null) return void this.socket?.resume()
    if (h.reading || this.socket!.destroyed) return
    h.reading = true
    h.readStart()
  }

  private readStart(): void {
    if (this.inRead) return
    this.inRead = true
    this.sink.onReadStart()
  }

  private readonly onData = (data: Buffer): void => {
    this.executed(this.native.execute(data))
  }

  /** After one read's bytes went through the parser; false when they were not HTTP. */
  private readonly executed = (r: number | ParseError): boolean => {
    this.inRead = false
    const err = typeof r === 'number' ? null : r
    if (err !== null) this.stopReading()
    this.sink.onReadEnd(err)
    return err === null
  }

  private stopReading(): void {
    if (this.handle !== null) this.native.unconsume()
    else this.socket?.off('data', this.onData)
    this.handle = null
  }

  /** The peer closed: completes a body delimited by the connection's end; a cut one is an error (to onReadEnd). */
  finish(): void {
    this.executed(this.native.finish() ?? 0)
  }

  /** Frees the native parser once the current call stack (maybe its own callback) has unwound. */
  close(): void {
    this.socket?.off('data', this.onData)
    setImmediate(closeNative, this.native)
  }
}
