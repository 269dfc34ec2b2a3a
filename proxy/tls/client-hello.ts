// Reads a TLS ClientHello from the first bytes of a connection without terminating TLS: the
// server name (SNI) a policy may judge and the ALPN protocols offered. Pure and bounded: the
// caller hands it everything read so far (records may be split across reads, and one handshake
// message across records); it answers "need more", the hello, or why the bytes are not one.

/** The largest ClientHello read (handshake message body); real ones are well under 4 KiB. */
export const MAX_HELLO_BYTES = 16 * 1024
const RECORD_HEADER = 5
const HANDSHAKE = 22
const CLIENT_HELLO = 1
const EXT_SERVER_NAME = 0
const EXT_ALPN = 16

export interface ClientHello {
  /** The host_name the client asked for, lower case; null when it sent none. */
  serverName: string | null
  alpn: string[]
}

export type HelloResult =
  | { state: 'incomplete' }
  | { state: 'invalid'; reason: string }
  | { state: 'complete'; hello: ClientHello }

class Malformed extends Error {}

/** A bounds-checked reader over one handshake message. */
class Reader {
  constructor(
    private readonly b: Buffer,
    public at: number,
    private readonly end: number,
  ) {}

  private need(n: number, what: string): void {
    if (this.at + n > this.end) throw new Malformed(`${what} runs past its end`)
  }

  u8(what: string): number {
    this.need(1, what)
    return this.b[this.at++]!
  }

  u16(what: string): number {
    this.need(2, what)
    const v = this.b.readUInt16BE(this.at)
    this.at += 2
    return v
  }

  /** A length-prefixed block (prefix of `width` bytes) as a reader of its own. */
  block(width: 1 | 2, what: string): Reader {
    const len = width === 1 ? this.u8(what) : this.u16(what)
    this.need(len, what)
    const r = new Reader(this.b, this.at, this.at + len)
    this.at += len
    return r
  }

  bytes(n: number, what: string): Buffer {
    this.need(n, what)
    const out = this.b.subarray(this.at, this.at + n)
    this.at += n
    return out
  }

  get left(): number {
    return this.end - this.at
  }
}

// RFC 6066 3: a host_name is an ASCII DNS name, no trailing dot; IP literals are not allowed.
const HOST_NAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/

const invalid = (reason: string): HelloResult => ({ state: 'invalid', reason })

/** The ClientHello message (header included) carried by the leading handshake records of `data`, or a verdict. */
function helloMessage(data: Buffer): Buffer | HelloResult {
  const parts: Buffer[] = []
  let have = 0
  let at = 0
  let want = -1
  for (;;) {
    if (want < 0 && have >= 4) {
      const head = parts.length === 1 ? parts[0]! : Buffer.concat(parts)
      if (head[0] !== CLIENT_HELLO) return invalid(`handshake message type ${head[0]} is not a ClientHello`)
      const body = head.readUIntBE(1, 3)
      if (body > MAX_HELLO_BYTES) return invalid(`ClientHello of ${body} bytes is above ${MAX_HELLO_BYTES}`)
      want = 4 + body
    }
    if (want >= 0 && have >= want) return Buffer.concat(parts).subarray(0, want)
    if (data.length - at < RECORD_HEADER) return { state: 'incomplete' }
    if (data[at] !== HANDSHAKE) return invalid(`record type ${data[at]} where a handshake record was expected`)
    if (data[at + 1] !== 3) return invalid(`record version ${data[at + 1]}.${data[at + 2]} is not TLS`)
    const len = data.readUInt16BE(at + 3)
    if (len === 0 || len > 16384) return invalid(`handshake record of ${len} bytes`)
    if (data.length - at - RECORD_HEADER < len) return { state: 'incomplete' }
    parts.push(data.subarray(at + RECORD_HEADER, at + RECORD_HEADER + len))
    have += len
    at += RECORD_HEADER + len
  }
}

function readHello(msg: Buffer): ClientHello {
  const r = new Reader(msg, 4, msg.length)
  const version = r.u16('legacy_version')
  if (version >> 8 !== 3) throw new Malformed(`client version ${version >> 8}.${version & 0xff} is not TLS`)
  r.bytes(32, 'random')
  if (r.block(1, 'session_id').left > 32) throw new Malformed('session_id longer than 32 bytes')
  const suites = r.block(2, 'cipher_suites').left
  if (suites === 0 || suites % 2 !== 0) throw new Malformed(`cipher_suites of ${suites} bytes`)
  if (r.block(1, 'compression_methods').left === 0) throw new Malformed('no compression method')
  const hello: ClientHello = { serverName: null, alpn: [] }
  if (r.left === 0) return hello // no extensions at all
  const exts = r.block(2, 'extensions')
  if (r.left !== 0) throw new Malformed('bytes after the extensions')
  const seen = new Set<number>()
  while (exts.left > 0) {
    const type = exts.u16('extension type')
    const body = exts.block(2, `extension ${type}`)
    if (seen.has(type)) throw new Malformed(`extension ${type} appears twice`)
    seen.add(type)
    if (type === EXT_SERVER_NAME) hello.serverName = readServerName(body)
    else if (type === EXT_ALPN) hello.alpn = readAlpn(body)
  }
  return hello
}

function readServerName(body: Reader): string | null {
  if (body.left === 0) return null // a server's echo form; from a client, no name
  const list = body.block(2, 'server_name_list')
  if (body.left !== 0) throw new Malformed('bytes after server_name_list')
  let name: string | null = null
  while (list.left > 0) {
    const kind = list.u8('server name type')
    const raw = list.block(2, 'server name')
    if (kind !== 0) continue // only host_name is defined
    if (name !== null) throw new Malformed('more than one host_name')
    const bytes = raw.bytes(raw.left, 'server name')
    const text = bytes.toString('latin1').toLowerCase()
    if (!HOST_NAME.test(text))
      throw new Malformed(`server name '${bytes.toString('latin1').replace(/[^\x20-\x7e]/g, '?')}' is not a host name`)
    name = text
  }
  return name
}

function readAlpn(body: Reader): string[] {
  const list = body.block(2, 'protocol_name_list')
  if (body.left !== 0) throw new Malformed('bytes after protocol_name_list')
  const out: string[] = []
  while (list.left > 0) {
    const p = list.block(1, 'protocol name')
    if (p.left === 0) throw new Malformed('empty ALPN protocol name')
    out.push(p.bytes(p.left, 'protocol name').toString('latin1'))
  }
  if (out.length === 0) throw new Malformed('empty ALPN list')
  return out
}

/** Parses what a connection sent so far. Never throws. */
export function parseClientHello(data: Buffer): HelloResult {
  const msg = helloMessage(data)
  if (!Buffer.isBuffer(msg)) return msg
  try {
    return { state: 'complete', hello: readHello(msg) }
  } catch (e) {
    if (e instanceof Malformed) return invalid(e.message)
    throw e
  }
}
