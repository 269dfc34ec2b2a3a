// Node's own llhttp binding (the parser behind node:http), driven directly on raw sockets: the
// proxy pays for parsing and nothing else (no IncomingMessage, no streams per request). Strict:
// no leniency flags, so conflicting framing, obs-fold, bare LF and bad characters are errors.
// The binding is reached through `node:_http_common`, the module node:http itself uses; this file
// is the only place that knows its calling convention.

import { createRequire } from 'node:module'

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
  onMessageBegin(): void
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
    kLenientNone: number
  }
  methods: string[]
}

const { HTTPParser, methods } = createRequire(import.meta.url)('node:_http_common') as HttpCommon

function closeNative(p: NativeParser): void {
  p.close()
}

export class Http1Parser {
  private readonly native: NativeParser
  // llhttp hands over header fields in batches of 32 when there are more; collected here.
  private pendingRaw: string[] = []
  private pendingUrl = ''

  constructor(kind: 'request' | 'response', maxHeaderBytes: number, sink: ParserSink) {
    const p = new HTTPParser()
    p.initialize(kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE, {}, maxHeaderBytes, HTTPParser.kLenientNone)
    p[HTTPParser.kOnMessageBegin] = () => sink.onMessageBegin()
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
    p[HTTPParser.kOnBody] = (chunk: Buffer) => sink.onBody(chunk)
    p[HTTPParser.kOnMessageComplete] = () => sink.onMessageComplete()
    this.native = p
  }

  /** Parses `data`, calling the sink for what it completes; an error leaves the parser unusable. */
  execute(data: Buffer): ParseError | null {
    const r = this.native.execute(data)
    return typeof r === 'number' ? null : r
  }

  /** The peer closed: completes a body delimited by the connection's end, or reports a cut one. */
  finish(): ParseError | null {
    return this.native.finish() ?? null
  }

  /** Frees the native parser once the current call stack (maybe its own callback) has unwound. */
  close(): void {
    setImmediate(closeNative, this.native)
  }
}
