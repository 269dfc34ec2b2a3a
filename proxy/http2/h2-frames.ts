// HTTP/2 framing (RFC 9113 4, 6): the frame types, flags, error codes and settings, a reader
// that cuts a connection's bytes into frames (in place when a frame lies whole in one read,
// otherwise gathered into a buffer of its exact size), and writers for the frames a proxy sends.
// The reader never throws on bytes: a frame too big, or a bad preface, is a returned Http2Error.

export const FrameType = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const
export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const
export const ErrorCode = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  SETTINGS_TIMEOUT: 4,
  STREAM_CLOSED: 5,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  CONNECT_ERROR: 10,
  ENHANCE_YOUR_CALM: 11,
  INADEQUATE_SECURITY: 12,
  HTTP_1_1_REQUIRED: 13,
} as const
export const Setting = {
  HEADER_TABLE_SIZE: 1,
  ENABLE_PUSH: 2,
  MAX_CONCURRENT_STREAMS: 3,
  INITIAL_WINDOW_SIZE: 4,
  MAX_FRAME_SIZE: 5,
  MAX_HEADER_LIST_SIZE: 6,
} as const

export const FRAME_HEADER = 9
/** SETTINGS_MAX_FRAME_SIZE's initial value, and the least it may be. */
export const DEFAULT_MAX_FRAME = 16_384
/** A flow-control window's initial size, and the most any may grow to. */
export const DEFAULT_WINDOW = 65_535
export const MAX_WINDOW = 2 ** 31 - 1
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

/** A connection error (stream 0) or a stream error, with its RFC 9113 code and why. */
export class Http2Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    readonly stream = 0,
  ) {}
}

export interface FrameSink {
  /** A whole frame, its payload `src[start, end)` (valid only during the call); an error stops reading. */
  onFrame(type: number, flags: number, stream: number, src: Buffer, start: number, end: number): Http2Error | null
}

export class FrameReader {
  /** Frames above this are refused (the SETTINGS_MAX_FRAME_SIZE this side advertised). */
  maxFrameSize = DEFAULT_MAX_FRAME
  /** Preface bytes still expected (a server reads the client's first). */
  private prefaceLeft: number
  /** A frame (or frame header) cut by the end of a read, and how much of it is there. */
  private held: Buffer | null = null
  private heldLength = 0

  constructor(
    private readonly sink: FrameSink,
    expectPreface: boolean,
  ) {
    this.prefaceLeft = expectPreface ? PREFACE.length : 0
  }

  /** One read's bytes; null, or the error that ends the connection (nothing more is read then). */
  push(src: Buffer, start: number, end: number): Http2Error | null {
    let at = start
    if (this.prefaceLeft > 0) {
      const n = Math.min(this.prefaceLeft, end - at)
      const from = PREFACE.length - this.prefaceLeft
      if (src.compare(PREFACE, from, from + n, at, at + n) !== 0)
        return new Http2Error(ErrorCode.PROTOCOL_ERROR, 'not the HTTP/2 client preface')
      this.prefaceLeft -= n
      at += n
    }
    if (this.held !== null) {
      const r = this.fill(src, at, end)
      if (r === null) return this.tooBig()
      at = r
      if (this.held === null || this.heldLength < this.held.length) return null
      const held = this.held
      this.held = null
      const e = this.emit(held, 0)
      if (e !== null) return e
    }
    while (end - at >= FRAME_HEADER) {
      const length = src.readUIntBE(at, 3)
      if (length > this.maxFrameSize) return this.tooBig()
      if (end - at < FRAME_HEADER + length) break
      const e = this.emit(src, at)
      if (e !== null) return e
      at += FRAME_HEADER + length
    }
    if (at < end) this.keep(src, at, end)
    return null
  }

  private tooBig(): Http2Error {
    return new Http2Error(ErrorCode.FRAME_SIZE_ERROR, `frame above ${this.maxFrameSize} bytes`)
  }

  private emit(src: Buffer, at: number): Http2Error | null {
    const length = src.readUIntBE(at, 3)
    const stream = src.readUInt32BE(at + 5) & 0x7fffffff
    return this.sink.onFrame(src[at + 3]!, src[at + 4]!, stream, src, at + FRAME_HEADER, at + FRAME_HEADER + length)
  }

  /** Starts holding a cut frame: its header alone until its length is known, then all of it. */
  private keep(src: Buffer, at: number, end: number): void {
    const n = end - at
    this.held = Buffer.allocUnsafe(n >= FRAME_HEADER ? FRAME_HEADER + src.readUIntBE(at, 3) : FRAME_HEADER)
    src.copy(this.held, 0, at, end)
    this.heldLength = n
  }

  /** Adds to the held frame from `src[at, end)`; where it stopped reading, or null for a frame too big. */
  private fill(src: Buffer, at: number, end: number): number | null {
    let held = this.held!
    if (this.heldLength < FRAME_HEADER) {
      const n = Math.min(FRAME_HEADER - this.heldLength, end - at)
      src.copy(held, this.heldLength, at, at + n)
      this.heldLength += n
      at += n
      if (this.heldLength < FRAME_HEADER) return at
      const length = held.readUIntBE(0, 3)
      if (length > this.maxFrameSize) return null
      const whole = Buffer.allocUnsafe(FRAME_HEADER + length)
      held.copy(whole, 0, 0, FRAME_HEADER)
      this.held = held = whole
    }
    const n = Math.min(held.length - this.heldLength, end - at)
    src.copy(held, this.heldLength, at, at + n)
    this.heldLength += n
    return at + n
  }
}

/** Writes a frame header at `out[at]`; returns where its payload goes. */
export function frameHeader(
  out: Buffer,
  at: number,
  length: number,
  type: number,
  flags: number,
  stream: number,
): number {
  out.writeUIntBE(length, at, 3)
  out[at + 3] = type
  out[at + 4] = flags
  out.writeUInt32BE(stream, at + 5)
  return at + FRAME_HEADER
}

/** A SETTINGS frame of [id, value] pairs (none with ACK). */
export function settingsFrame(settings: ReadonlyArray<readonly [number, number]>, ack = false): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + settings.length * 6)
  let at = frameHeader(out, 0, settings.length * 6, FrameType.SETTINGS, ack ? Flag.ACK : 0, 0)
  for (const [id, value] of settings) {
    out.writeUInt16BE(id, at)
    out.writeUInt32BE(value, at + 2)
    at += 6
  }
  return out
}

export function pingFrame(opaque: Buffer, opaqueAt: number, ack: boolean): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 8)
  frameHeader(out, 0, 8, FrameType.PING, ack ? Flag.ACK : 0, 0)
  opaque.copy(out, FRAME_HEADER, opaqueAt, opaqueAt + 8)
  return out
}

export function goawayFrame(lastStream: number, code: number, debug = ''): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 8 + Buffer.byteLength(debug))
  frameHeader(out, 0, out.length - FRAME_HEADER, FrameType.GOAWAY, 0, 0)
  out.writeUInt32BE(lastStream, FRAME_HEADER)
  out.writeUInt32BE(code, FRAME_HEADER + 4)
  out.write(debug, FRAME_HEADER + 8)
  return out
}

export function rstStreamFrame(stream: number, code: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 4)
  frameHeader(out, 0, 4, FrameType.RST_STREAM, 0, stream)
  out.writeUInt32BE(code, FRAME_HEADER)
  return out
}

export function windowUpdateFrame(stream: number, increment: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 4)
  frameHeader(out, 0, 4, FrameType.WINDOW_UPDATE, 0, stream)
  out.writeUInt32BE(increment, FRAME_HEADER)
  return out
}

/** A DATA frame carrying a copy of `src[start, end)`. */
export function dataFrame(stream: number, src: Buffer, start: number, end: number, endStream: boolean): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + end - start)
  frameHeader(out, 0, end - start, FrameType.DATA, endStream ? Flag.END_STREAM : 0, stream)
  src.copy(out, FRAME_HEADER, start, end)
  return out
}

/**
 * A header block as HEADERS and as many CONTINUATION frames as `maxFrame` needs, written in
 * place: `out` holds the block at [FRAME_HEADER, blockEnd) with room for the frame headers
 * it returns the frames in (a block of n bytes takes 9 more per frame beyond the first).
 */
export function headerFrames(
  out: Buffer,
  blockEnd: number,
  stream: number,
  endStream: boolean,
  maxFrame: number,
): Buffer {
  const block = blockEnd - FRAME_HEADER
  if (block <= maxFrame) {
    frameHeader(out, 0, block, FrameType.HEADERS, Flag.END_HEADERS | (endStream ? Flag.END_STREAM : 0), stream)
    return out.subarray(0, blockEnd)
  }
  // Rare (a block above 16 KiB): each further frame's header is made room for by moving the rest.
  const frames = Math.ceil(block / maxFrame)
  const whole = Buffer.allocUnsafe(block + frames * FRAME_HEADER)
  let from = FRAME_HEADER
  let at = 0
  for (let i = 0; i < frames; i++) {
    const n = Math.min(maxFrame, blockEnd - from)
    const last = i === frames - 1
    const type = i === 0 ? FrameType.HEADERS : FrameType.CONTINUATION
    const flags = (last ? Flag.END_HEADERS : 0) | (i === 0 && endStream ? Flag.END_STREAM : 0)
    at = frameHeader(whole, at, n, type, flags, stream)
    out.copy(whole, at, from, from + n)
    at += n
    from += n
  }
  return whole
}
