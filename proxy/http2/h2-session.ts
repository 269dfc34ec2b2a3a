// One HTTP/2 connection endpoint (RFC 9113), as the server of a client's connection or as the
// client of one to an origin: the preface and SETTINGS exchange, stream states and ids, header
// blocks (HEADERS and CONTINUATION, bounded) through HPACK, DATA with flow control both ways,
// PING, GOAWAY and RST_STREAM. Bytes come in through receive() (frames read in place, see
// h2-frames.ts) and go out through a SocketWriter; what they mean goes to a handler, the proxy's
// connection, which pairs two sessions. Flow control is end to end: the peer is credited only
// for bytes the handler says it passed on (consume()), so a slow reader on one hop slows the
// writer on the other, and what waits in between is bounded by the windows.

import {
  DEFAULT_MAX_FRAME,
  DEFAULT_WINDOW,
  dataFrame,
  ErrorCode,
  Flag,
  FRAME_HEADER,
  FrameReader,
  type FrameSink,
  FrameType,
  goawayFrame,
  Http2Error,
  headerFrames,
  MAX_WINDOW,
  PREFACE,
  pingFrame,
  rstStreamFrame,
  Setting,
  settingsFrame,
  windowUpdateFrame,
} from './h2-frames.js'
import { HpackDecoder } from './hpack-decoder.js'
import { HpackEncoder } from './hpack-encoder.js'

/** Where a session's frames go (a SocketWriter): held during a read, to leave in one write. */
export interface FrameOut {
  hold(): void
  release(): void
  write(frame: Buffer): boolean
  /** Sends what is held, then ends the connection's write side. */
  end(): void
}

export interface SessionLimits {
  /** Streams the peer may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: number
  /** Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE), and the connection's. */
  streamWindow: number
  connectionWindow: number
  /** SETTINGS_MAX_HEADER_LIST_SIZE, and fields in one list: a list past either is kept as `tooBig`. */
  maxHeaderListSize: number
  maxHeaderFields: number
  /** A header block's encoded bytes past this (HEADERS and CONTINUATIONs) end the connection. */
  maxHeaderBlock: number
}

/** A decoded header block: names (lower case on the wire), values, and which were never-indexed. */
export class HeaderList {
  readonly names: string[] = []
  readonly values: string[] = []
  /** Indexes of fields the sender marked never-indexed (rare: a list of its own). */
  never: number[] | null = null
  /** The list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 6.5.2). */
  size = 0
  /** Past the size or field limit: the fields after it were dropped. */
  tooBig = false

  get(name: string): string | undefined {
    const i = this.names.indexOf(name)
    return i < 0 ? undefined : this.values[i]
  }

  add(name: string, value: string, neverIndex = false): this {
    if (neverIndex) (this.never ??= []).push(this.names.length)
    this.names.push(name)
    this.values.push(value)
    return this
  }

  /** A list of [name, value] pairs (or with never-indexed as a third). */
  static of(fields: ReadonlyArray<readonly [string, string, boolean?]>): HeaderList {
    const f = new HeaderList()
    for (const [name, value, never] of fields) f.add(name, value, never ?? false)
    return f
  }
}

/** One stream; its fields past `user` are the session's bookkeeping, read-only to handlers. */
export class H2Stream {
  /** The handler's own state for the stream. */
  user: unknown = null
  /** This side sent END_STREAM (or reset); the peer did. */
  localEnded = false
  remoteEnded = false
  closed = false
  /** Header blocks received on it (the head, 1xx heads, trailers). */
  headerBlocks = 0
  /** What the peer may still send (our receive window); what it sent that was not consumed, and not yet credited back. */
  recvWindow: number
  unconsumed = 0
  uncredited = 0
  sendWindow: number
  /** Bytes waiting for send window, each chunk from `start`, and what follows them. */
  readonly queue: Array<{ buf: Buffer; start: number }> = []
  queuedBytes = 0
  queuedEnd = false
  queuedTrailers: HeaderList | null = null

  constructor(
    readonly id: number,
    recvWindow: number,
    sendWindow: number,
  ) {
    this.recvWindow = recvWindow
    this.sendWindow = sendWindow
  }
}

export interface SessionHandler {
  /** Around one read's frames: what they make the handler write can leave in one write per socket. */
  onReadStart(): void
  onReadEnd(): void
  /** A server's new stream from the peer (false: refuse it with REFUSED_STREAM, not counted as open). */
  onStreamOpen?(s: H2Stream): boolean
  /** A new stream was refused (over the concurrency limit, or by onStreamOpen). */
  onStreamRefused?(): void
  /** A header block on `s`: a request or response head (1xx too), or trailers. */
  onHeaders(s: H2Stream, fields: HeaderList, endStream: boolean): void
  /** Body bytes, `src[start, end)` valid only during the call: pass them on, then consume(). */
  onData(s: H2Stream, src: Buffer, start: number, end: number, endStream: boolean): void
  /** Bytes sendData() queued for want of window went out: the source may be credited. */
  onSent(s: H2Stream, n: number): void
  /** The peer reset the stream (or the session ended under it, or GOAWAY refused it). */
  onReset(s: H2Stream, code: number): void
  /** The stream is done both ways (its last event). */
  onStreamClosed(s: H2Stream): void
  onGoaway(lastStream: number, code: number): void
  /** The connection failed (a protocol error, either way) or the peer ended it; the socket is being closed. */
  onSessionEnd(error: Http2Error | null): void
}

const EMPTY = Buffer.alloc(0)
/** CONTINUATION frames one header block may take (nghttp2's bound): a flood of tiny ones ends the connection. */
const MAX_CONTINUATIONS = 8

export class H2Session implements FrameSink {
  readonly streams = new Map<number, H2Stream>()
  /** Streams the peer opened that are open now (its count against our concurrency limit). */
  private peerOpen = 0
  private readonly reader: FrameReader
  private readonly decoder: HpackDecoder
  private readonly encoder = new HpackEncoder()
  /** The highest stream id the peer opened, and the next one this side opens. */
  lastPeerStream = 0
  private nextStream: number
  private sendWindow = DEFAULT_WINDOW
  private recvWindow = DEFAULT_WINDOW
  private unacked = 0
  private peerInitialWindow = DEFAULT_WINDOW
  private peerMaxFrame = DEFAULT_MAX_FRAME
  /** Streams this side may open at once (the peer's SETTINGS_MAX_CONCURRENT_STREAMS). */
  peerMaxStreams = 100
  private settingsSeen = false
  /** A header block being gathered: its stream, first frame's flags, and bytes so far. */
  private block: { stream: number; endStream: boolean; bytes: Buffer[]; length: number } | null = null
  /** GOAWAY sent (its last stream id) and received. */
  goawaySent = -1
  goawayReceived = false
  ended = false
  /** Streams with bytes waiting for send window, in the order they began to wait. */
  private readonly blocked = new Set<H2Stream>()
  private pings: Array<() => void> = []

  constructor(
    readonly role: 'server' | 'client',
    readonly out: FrameOut,
    private readonly handler: SessionHandler,
    readonly limits: SessionLimits,
  ) {
    this.reader = new FrameReader(this, role === 'server')
    this.decoder = new HpackDecoder(4096)
    this.nextStream = role === 'client' ? 1 : 2
  }

  /** Sends this side's preface: (a client's magic), SETTINGS, and the connection window's growth. */
  start(): void {
    const l = this.limits
    const settings: Array<[number, number]> = [
      [Setting.MAX_CONCURRENT_STREAMS, l.maxConcurrentStreams],
      [Setting.INITIAL_WINDOW_SIZE, l.streamWindow],
      [Setting.MAX_HEADER_LIST_SIZE, l.maxHeaderListSize],
    ]
    if (this.role === 'client') settings.unshift([Setting.ENABLE_PUSH, 0])
    this.out.hold()
    if (this.role === 'client') this.out.write(PREFACE)
    this.out.write(settingsFrame(settings))
    if (l.connectionWindow > DEFAULT_WINDOW) this.out.write(windowUpdateFrame(0, l.connectionWindow - DEFAULT_WINDOW))
    this.recvWindow = Math.max(l.connectionWindow, DEFAULT_WINDOW)
    this.out.release()
  }

  /** One read's bytes. */
  receive(src: Buffer, start: number, end: number): void {
    if (this.ended) return
    this.handler.onReadStart()
    this.out.hold()
    const e = this.reader.push(src, start, end)
    if (e !== null && !this.ended) this.fail(e)
    this.out.release()
    this.handler.onReadEnd()
  }

  // ---- sending ----

  /** Opens a stream (client role) with its request head; null when GOAWAY or the peer's limit forbids. */
  request(fields: HeaderList, endStream: boolean): H2Stream | null {
    if (this.ended || this.goawayReceived || this.localOpen() >= this.peerMaxStreams || this.nextStream > MAX_WINDOW)
      return null
    const s = new H2Stream(this.nextStream, this.limits.streamWindow, this.peerInitialWindow)
    this.nextStream += 2
    this.streams.set(s.id, s)
    this.sendHeaders(s, fields, endStream)
    return s
  }

  /** A header block on `s`: a response head, or trailers (then endStream) after what is queued. */
  sendHeaders(s: H2Stream, fields: HeaderList, endStream: boolean): void {
    if (s.localEnded || this.ended) return
    if (endStream && s.queuedBytes > 0) {
      s.queuedTrailers = fields
      return
    }
    const { names, values, never } = fields
    let bytes = 0
    for (let i = 0; i < names.length; i++) bytes += names[i]!.length + values[i]!.length
    const buf = Buffer.allocUnsafe(FRAME_HEADER + HpackEncoder.bound(names.length, bytes))
    let at = this.encoder.begin(buf, FRAME_HEADER)
    for (let i = 0; i < names.length; i++) at = this.encoder.field(buf, at, names[i]!, values[i]!, never?.includes(i))
    this.out.write(headerFrames(buf, at, s.id, endStream, this.peerMaxFrame))
    if (endStream) this.localEnd(s)
  }

  /**
   * Body bytes on `s` (copied): as much as the send windows allow goes now, the rest waits for
   * WINDOW_UPDATE (onSent tells when it went). Returns the bytes sent now.
   */
  sendData(s: H2Stream, src: Buffer, start: number, end: number, endStream: boolean): number {
    if (s.localEnded || this.ended) return 0
    if (s.queuedBytes > 0 || s.queuedEnd) {
      this.enqueue(s, src, start, end)
      s.queuedEnd ||= endStream
      return 0
    }
    const n = Math.min(end - start, this.sendable(s))
    this.writeData(s, src, start, start + n, endStream && n === end - start)
    if (n < end - start) {
      this.enqueue(s, src, start + n, end)
      s.queuedEnd = endStream
    }
    return n
  }

  /** END_STREAM with no more bytes (after what is queued). */
  endStream(s: H2Stream): void {
    this.sendData(s, EMPTY, 0, 0, true)
  }

  /** RST_STREAM: the stream ends now both ways, what waits for window dropped. */
  reset(s: H2Stream, code: number): void {
    if (s.closed || this.ended) return
    this.out.write(rstStreamFrame(s.id, code))
    this.dropQueue(s)
    s.localEnded = s.remoteEnded = true
    this.close(s)
  }

  /**
   * Credits the peer for `n` bytes of `s` passed on: WINDOW_UPDATEs once half a window is owed.
   * A closed stream's bytes were credited to the connection when it closed.
   */
  consume(s: H2Stream, n: number): void {
    if (n <= 0 || this.ended || s.closed) return
    s.unconsumed -= n
    this.credit(n)
    if (s.remoteEnded) return
    s.uncredited += n
    if (s.uncredited >= this.limits.streamWindow / 2) {
      this.out.write(windowUpdateFrame(s.id, s.uncredited))
      s.recvWindow += s.uncredited
      s.uncredited = 0
    }
  }

  /** The connection's share of a credit. */
  private credit(n: number): void {
    this.unacked += n
    if (this.unacked >= this.limits.connectionWindow / 2) {
      this.out.write(windowUpdateFrame(0, this.unacked))
      this.recvWindow += this.unacked
      this.unacked = 0
    }
  }

  /** GOAWAY: no stream after the last the peer opened will be taken (the session ends once the rest do). */
  goaway(code: number, debug = ''): void {
    if (this.ended) return
    if (this.goawaySent < 0 || code !== ErrorCode.NO_ERROR)
      this.out.write(goawayFrame(this.lastPeerStream, code, debug))
    this.goawaySent = this.lastPeerStream
    if (code !== ErrorCode.NO_ERROR) this.end(new Http2Error(code, debug || 'GOAWAY sent'))
    else this.endIfIdle()
  }

  /** A PING; `answered` runs when its ACK comes back. */
  ping(answered: () => void): void {
    if (this.ended) return
    this.pings.push(answered)
    this.out.write(pingFrame(Buffer.alloc(8), 0, false))
  }

  /** Ends the session now: every open stream is told it was reset (CANCEL), then the socket goes. */
  destroy(error: Http2Error | null = null): void {
    this.end(error)
  }

  /** Streams open now (either side's). */
  get openStreams(): number {
    return this.streams.size
  }

  private localOpen(): number {
    return this.streams.size - this.peerOpen
  }

  private sendable(s: H2Stream): number {
    return Math.max(0, Math.min(s.sendWindow, this.sendWindow))
  }

  private writeData(s: H2Stream, src: Buffer, start: number, end: number, endStream: boolean): void {
    if (start === end && !endStream) return
    const max = this.peerMaxFrame
    let at = start
    do {
      const n = Math.min(max, end - at)
      const last = at + n === end
      this.out.write(dataFrame(s.id, src, at, at + n, endStream && last))
      at += n
    } while (at < end)
    s.sendWindow -= end - start
    this.sendWindow -= end - start
    if (endStream) this.localEnd(s)
  }

  private enqueue(s: H2Stream, src: Buffer, start: number, end: number): void {
    if (end > start) {
      const copy = Buffer.allocUnsafe(end - start)
      src.copy(copy, 0, start, end)
      s.queue.push({ buf: copy, start: 0 })
      s.queuedBytes += end - start
    }
    this.blocked.add(s)
  }

  private dropQueue(s: H2Stream): void {
    s.queue.length = 0
    s.queuedBytes = 0
    s.queuedEnd = false
    s.queuedTrailers = null
    this.blocked.delete(s)
  }

  /** Window opened: queued bytes go, stream by stream, in the order they began to wait. */
  private flush(only: H2Stream | null): void {
    for (const s of only !== null ? [only] : this.blocked) {
      if (!this.blocked.has(s)) continue
      const q = s.queue
      let sent = 0
      while (q.length > 0) {
        const c = q[0]!
        const n = Math.min(c.buf.length - c.start, this.sendable(s))
        if (n === 0) break
        const all = n === c.buf.length - c.start
        this.writeData(
          s,
          c.buf,
          c.start,
          c.start + n,
          all && q.length === 1 && s.queuedEnd && s.queuedTrailers === null,
        )
        sent += n
        c.start += n
        if (all) q.shift()
      }
      s.queuedBytes -= sent
      if (q.length === 0) {
        this.blocked.delete(s)
        const trailers = s.queuedTrailers
        s.queuedTrailers = null
        if (trailers !== null) this.sendHeaders(s, trailers, true)
        else if (s.queuedEnd && !s.localEnded) this.writeData(s, EMPTY, 0, 0, true)
      }
      if (sent > 0) this.handler.onSent(s, sent)
      if (this.sendWindow <= 0) break
    }
  }

  private localEnd(s: H2Stream): void {
    s.localEnded = true
    if (s.remoteEnded) this.close(s)
  }

  private remoteEnd(s: H2Stream): void {
    s.remoteEnded = true
    if (s.localEnded) this.close(s)
  }

  private close(s: H2Stream): void {
    if (s.closed) return
    s.closed = true
    this.streams.delete(s.id)
    if ((s.id & 1) === (this.role === 'server' ? 1 : 0)) this.peerOpen--
    this.dropQueue(s)
    // What the peer sent on it that was never passed on is the connection's to credit back.
    this.credit(s.unconsumed)
    s.unconsumed = 0
    this.handler.onStreamClosed(s)
    this.endIfIdle()
  }

  private endIfIdle(): void {
    if (this.goawaySent >= 0 && this.streams.size === 0) this.end(null)
  }

  private end(error: Http2Error | null): void {
    if (this.ended) return
    this.ended = true
    for (const s of [...this.streams.values()]) {
      s.localEnded = s.remoteEnded = true
      this.handler.onReset(s, ErrorCode.CANCEL)
      this.close(s)
    }
    this.pings = []
    this.handler.onSessionEnd(error)
  }

  private fail(e: Http2Error): void {
    if (e.stream !== 0) {
      const s = this.streams.get(e.stream)
      this.out.write(rstStreamFrame(e.stream, e.code))
      if (s === undefined) return
      this.dropQueue(s)
      s.localEnded = s.remoteEnded = true
      this.handler.onReset(s, e.code)
      this.close(s)
      return
    }
    this.out.write(goawayFrame(this.lastPeerStream, e.code, e.reason))
    this.goawaySent = this.lastPeerStream
    this.end(e)
  }

  // ---- receiving ----

  onFrame(type: number, flags: number, stream: number, src: Buffer, start: number, end: number): Http2Error | null {
    if (this.ended) return new Http2Error(ErrorCode.NO_ERROR, 'ended')
    if (this.block !== null && type !== FrameType.CONTINUATION) return protocolError('a frame inside a header block')
    if (!this.settingsSeen && type !== FrameType.SETTINGS) return protocolError('the first frame is not SETTINGS')
    switch (type) {
      case FrameType.DATA:
        return this.onDataFrame(flags, stream, src, start, end)
      case FrameType.HEADERS:
        return this.onHeadersFrame(flags, stream, src, start, end)
      case FrameType.CONTINUATION:
        return this.onContinuation(flags, stream, src, start, end)
      case FrameType.PRIORITY:
        if (stream === 0) return protocolError('PRIORITY on stream 0')
        return end - start === 5
          ? null
          : this.streamError(stream, ErrorCode.FRAME_SIZE_ERROR, 'PRIORITY of the wrong size')
      case FrameType.RST_STREAM:
        return this.onRstStream(stream, src, start, end)
      case FrameType.SETTINGS:
        return this.onSettings(flags, stream, src, start, end)
      case FrameType.PUSH_PROMISE:
        return protocolError('PUSH_PROMISE (push is disabled)')
      case FrameType.PING:
        if (stream !== 0) return protocolError('PING on a stream')
        if (end - start !== 8) return new Http2Error(ErrorCode.FRAME_SIZE_ERROR, 'PING of the wrong size')
        if ((flags & Flag.ACK) === 0) this.out.write(pingFrame(src, start, true))
        else this.pings.shift()?.()
        return null
      case FrameType.GOAWAY:
        return this.onGoawayFrame(stream, src, start, end)
      case FrameType.WINDOW_UPDATE:
        return this.onWindowUpdate(stream, src, start, end)
      default:
        return null // unknown types are ignored (RFC 9113 4.1)
    }
  }

  private streamError(stream: number, code: number, reason: string): Http2Error | null {
    this.fail(new Http2Error(code, reason, stream))
    return null
  }

  private onDataFrame(flags: number, id: number, src: Buffer, start: number, end: number): Http2Error | null {
    if (id === 0) return protocolError('DATA on stream 0')
    const length = end - start
    if (length > this.recvWindow)
      return new Http2Error(ErrorCode.FLOW_CONTROL_ERROR, 'DATA beyond the connection window')
    this.recvWindow -= length
    let padding = 0
    if ((flags & Flag.PADDED) !== 0) {
      if (length < 1 || src[start]! >= length) return protocolError('padding longer than the frame')
      padding = src[start]! + 1
    }
    const s = this.streams.get(id)
    if (s === undefined || s.remoteEnded || length > s.recvWindow) {
      this.credit(length)
      if (s === undefined && id > this.lastPeerStream && id >= this.nextStream)
        return protocolError('DATA on an idle stream')
      return this.streamError(
        id,
        s !== undefined && !s.remoteEnded ? ErrorCode.FLOW_CONTROL_ERROR : ErrorCode.STREAM_CLOSED,
        'DATA beyond the stream window, or after its end',
      )
    }
    s.recvWindow -= length
    s.unconsumed += length
    if (padding > 0) this.consume(s, padding)
    const endStream = (flags & Flag.END_STREAM) !== 0
    // Ended before the handler hears of it: what it consumes then earns no stream credit.
    if (endStream) s.remoteEnded = true
    this.handler.onData(s, src, start + (padding > 0 ? 1 : 0), end - (padding > 0 ? padding - 1 : 0), endStream)
    if (endStream && !s.closed) {
      s.remoteEnded = false
      this.remoteEnd(s)
    }
    return null
  }

  private onHeadersFrame(flags: number, id: number, src: Buffer, start: number, end: number): Http2Error | null {
    if (id === 0) return protocolError('HEADERS on stream 0')
    let from = start
    let to = end
    if ((flags & Flag.PADDED) !== 0) {
      if (to - from < 1 || src[from]! >= to - from) return protocolError('padding longer than the frame')
      to -= src[from]!
      from++
    }
    if ((flags & Flag.PRIORITY) !== 0) {
      if (to - from < 5) return new Http2Error(ErrorCode.FRAME_SIZE_ERROR, 'HEADERS too short for its priority')
      if ((src.readUInt32BE(from) & 0x7fffffff) === id)
        return this.streamError(id, ErrorCode.PROTOCOL_ERROR, 'a stream depending on itself')
      from += 5
    }
    const endStream = (flags & Flag.END_STREAM) !== 0
    if ((flags & Flag.END_HEADERS) !== 0) return this.onHeaderBlock(id, endStream, src, from, to)
    if (to - from > this.limits.maxHeaderBlock)
      return new Http2Error(ErrorCode.ENHANCE_YOUR_CALM, 'header block too large')
    const first = Buffer.allocUnsafe(to - from)
    src.copy(first, 0, from, to)
    this.block = { stream: id, endStream, bytes: [first], length: first.length }
    return null
  }

  private onContinuation(flags: number, id: number, src: Buffer, start: number, end: number): Http2Error | null {
    const b = this.block
    if (b === null || b.stream !== id) return protocolError('CONTINUATION without its HEADERS')
    b.length += end - start
    if (b.bytes.length > MAX_CONTINUATIONS)
      return new Http2Error(ErrorCode.ENHANCE_YOUR_CALM, `more than ${MAX_CONTINUATIONS} CONTINUATION frames`)
    if (b.length > this.limits.maxHeaderBlock)
      return new Http2Error(ErrorCode.ENHANCE_YOUR_CALM, `header block above ${this.limits.maxHeaderBlock} bytes`)
    const part = Buffer.allocUnsafe(end - start)
    src.copy(part, 0, start, end)
    b.bytes.push(part)
    if ((flags & Flag.END_HEADERS) === 0) return null
    this.block = null
    const whole = Buffer.concat(b.bytes, b.length)
    return this.onHeaderBlock(id, b.endStream, whole, 0, whole.length)
  }

  /** A whole header block: always decoded (the HPACK state is the connection's), then given to its stream. */
  private onHeaderBlock(id: number, endStream: boolean, src: Buffer, start: number, end: number): Http2Error | null {
    const fields = new HeaderList()
    const limits = this.limits
    const reason = this.decoder.decode(src, start, end, (name, value, never) => {
      fields.size += name.length + value.length + 32
      if (fields.tooBig || fields.size > limits.maxHeaderListSize || fields.names.length >= limits.maxHeaderFields)
        return void (fields.tooBig = true)
      if (never) (fields.never ??= []).push(fields.names.length)
      fields.names.push(name)
      fields.values.push(value)
    })
    if (reason !== null) return new Http2Error(ErrorCode.COMPRESSION_ERROR, `HPACK: ${reason}`)
    let s = this.streams.get(id)
    if (s === undefined) {
      const peerStream = (id & 1) === (this.role === 'server' ? 1 : 0)
      if (!peerStream || id <= this.lastPeerStream) {
        // A stream already closed (reset by one side, its frames still arriving): dropped.
        return id <= this.lastPeerStream || id < this.nextStream
          ? null
          : protocolError('HEADERS on a stream this side did not open')
      }
      this.lastPeerStream = id
      if (this.goawaySent >= 0) return null // past the GOAWAY's last stream: ignored (RFC 9113 6.8)
      s = new H2Stream(id, this.limits.streamWindow, this.peerInitialWindow)
      if (this.peerOpen >= this.limits.maxConcurrentStreams || (this.handler.onStreamOpen?.(s) ?? true) === false) {
        this.out.write(rstStreamFrame(id, ErrorCode.REFUSED_STREAM))
        this.handler.onStreamRefused?.()
        return null
      }
      this.streams.set(id, s)
      this.peerOpen++
    } else if (s.remoteEnded)
      return this.streamError(id, ErrorCode.STREAM_CLOSED, 'HEADERS after the end of the stream')
    else if (s.headerBlocks > 0 && !endStream && !isInformational(fields))
      return this.streamError(id, ErrorCode.PROTOCOL_ERROR, 'trailers without END_STREAM')
    s.headerBlocks++
    if (endStream) s.remoteEnded = true
    this.handler.onHeaders(s, fields, endStream)
    if (endStream && !s.closed) {
      s.remoteEnded = false
      this.remoteEnd(s)
    }
    return null
  }

  private onRstStream(id: number, src: Buffer, start: number, end: number): Http2Error | null {
    if (id === 0) return protocolError('RST_STREAM on stream 0')
    if (end - start !== 4) return new Http2Error(ErrorCode.FRAME_SIZE_ERROR, 'RST_STREAM of the wrong size')
    const s = this.streams.get(id)
    if (s === undefined)
      return id > this.lastPeerStream && id >= this.nextStream ? protocolError('RST_STREAM on an idle stream') : null
    this.dropQueue(s)
    s.localEnded = s.remoteEnded = true
    this.handler.onReset(s, src.readUInt32BE(start))
    this.close(s)
    return null
  }

  private onSettings(flags: number, id: number, src: Buffer, start: number, end: number): Http2Error | null {
    if (id !== 0) return protocolError('SETTINGS on a stream')
    if ((flags & Flag.ACK) !== 0)
      return end === start ? null : new Http2Error(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload')
    if ((end - start) % 6 !== 0) return new Http2Error(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS of the wrong size')
    this.settingsSeen = true
    for (let at = start; at < end; at += 6) {
      const value = src.readUInt32BE(at + 2)
      switch (src.readUInt16BE(at)) {
        case Setting.HEADER_TABLE_SIZE:
          this.encoder.setMaxSize(value)
          break
        case Setting.ENABLE_PUSH:
          if (value > 1) return protocolError('ENABLE_PUSH above 1')
          break
        case Setting.MAX_CONCURRENT_STREAMS:
          this.peerMaxStreams = value
          break
        case Setting.INITIAL_WINDOW_SIZE: {
          if (value > MAX_WINDOW)
            return new Http2Error(ErrorCode.FLOW_CONTROL_ERROR, 'INITIAL_WINDOW_SIZE above 2^31-1')
          const delta = value - this.peerInitialWindow
          this.peerInitialWindow = value
          for (const s of this.streams.values()) {
            s.sendWindow += delta
            if (s.sendWindow > MAX_WINDOW)
              return new Http2Error(ErrorCode.FLOW_CONTROL_ERROR, 'a stream window above 2^31-1')
          }
          break
        }
        case Setting.MAX_FRAME_SIZE:
          if (value < DEFAULT_MAX_FRAME || value > 16_777_215) return protocolError('MAX_FRAME_SIZE out of range')
          this.peerMaxFrame = value
          break
        default:
          break // unknown settings are ignored; MAX_HEADER_LIST_SIZE is advisory
      }
    }
    this.out.write(settingsFrame([], true))
    this.flush(null)
    return null
  }

  private onGoawayFrame(id: number, src: Buffer, start: number, end: number): Http2Error | null {
    if (id !== 0) return protocolError('GOAWAY on a stream')
    if (end - start < 8) return new Http2Error(ErrorCode.FRAME_SIZE_ERROR, 'GOAWAY too short')
    const last = src.readUInt32BE(start) & 0x7fffffff
    const code = src.readUInt32BE(start + 4)
    this.goawayReceived = true
    this.handler.onGoaway(last, code)
    // Streams this side opened past `last` were never processed: refused, so retryable.
    for (const s of [...this.streams.values()]) {
      if ((s.id & 1) === (this.role === 'client' ? 1 : 0) && s.id > last && !s.closed) {
        this.dropQueue(s)
        s.localEnded = s.remoteEnded = true
        this.handler.onReset(s, ErrorCode.REFUSED_STREAM)
        this.close(s)
      }
    }
    if (this.streams.size === 0 && !this.ended)
      this.end(code === ErrorCode.NO_ERROR ? null : new Http2Error(code, 'GOAWAY received'))
    return null
  }

  private onWindowUpdate(id: number, src: Buffer, start: number, end: number): Http2Error | null {
    if (end - start !== 4) return new Http2Error(ErrorCode.FRAME_SIZE_ERROR, 'WINDOW_UPDATE of the wrong size')
    const increment = src.readUInt32BE(start) & 0x7fffffff
    if (id === 0) {
      if (increment === 0) return protocolError('WINDOW_UPDATE of 0')
      this.sendWindow += increment
      if (this.sendWindow > MAX_WINDOW)
        return new Http2Error(ErrorCode.FLOW_CONTROL_ERROR, 'connection window above 2^31-1')
      this.flush(null)
      return null
    }
    const s = this.streams.get(id)
    if (increment === 0) return this.streamError(id, ErrorCode.PROTOCOL_ERROR, 'WINDOW_UPDATE of 0')
    if (s === undefined) return null
    s.sendWindow += increment
    if (s.sendWindow > MAX_WINDOW)
      return this.streamError(id, ErrorCode.FLOW_CONTROL_ERROR, 'stream window above 2^31-1')
    this.flush(s)
    return null
  }
}

function protocolError(reason: string): Http2Error {
  return new Http2Error(ErrorCode.PROTOCOL_ERROR, reason)
}

function isInformational(fields: HeaderList): boolean {
  const status = fields.get(':status')
  return status !== undefined && status.length === 3 && status[0] === '1'
}
