// What the proxy writes on either hop: message heads built from a head's fields (the bytes
// received, which llhttp has already checked, or policy values checked at load), less those not
// forwarded; chunked framing; and its own short responses. Header bytes are latin1 both ways,
// as llhttp reads them.

import { Buffer } from 'node:buffer'
import { putAscii } from '../json-bytes.js'
import type { HeadFields } from './head-fields.js'

const CRLF = '\r\n'

/** Transfer-Encoding for a body the proxy chunk-encodes: the sender's codings (empty ones left out), chunked last. */
export function chunkedCoding(received: string | undefined): string {
  if (received === undefined) return 'chunked'
  const codings = received
    .split(',')
    .map((c) => c.trim())
    .filter((c) => c !== '')
  if (codings.at(-1)?.toLowerCase() !== 'chunked') codings.push('chunked')
  return codings.join(', ')
}

/** Bytes the forwarded fields take as lines. */
function fieldsRoom(fields: HeadFields): number {
  let size = 0
  for (let i = 0; i < fields.count; i++)
    if (!fields.isDropped(i)) size += fields.nameLength(i) + fields.valueLength(i) + 4
  return size
}

/** The forwarded fields as `name: value` lines, then `extra` and the blank line; out must be exactly that long from `at`. */
function putFields(out: Buffer, at: number, fields: HeadFields, extra: string): Buffer {
  const from = fields.bytes
  for (let i = 0; i < fields.count; i++) {
    if (fields.isDropped(i)) continue
    at = copyBytes(from, fields.nameAt(i), fields.nameLength(i), out, at)
    out[at++] = 0x3a // ':'
    out[at++] = 0x20
    at = copyBytes(from, fields.valueAt(i), fields.valueLength(i), out, at)
    out[at++] = 0x0d
    out[at++] = 0x0a
  }
  at = putAscii(out, at, extra)
  out[at++] = 0x0d
  out[at] = 0x0a
  return out
}

/** A field's few bytes: a loop, where Buffer.copy would make a view of its source first. */
function copyBytes(from: Buffer, at: number, length: number, to: Buffer, into: number): number {
  if (length > 64) return into + from.copy(to, into, at, at + length)
  for (let k = 0; k < length; k++) to[into + k] = from[at + k]!
  return into + length
}

// Heads are written byte by byte: a start line joined as a string and then written into the
// buffer cost more (flattening, and a C++ call per string) than all of its fields.
const HTTP11 = ' HTTP/1.1\r\n'

/** A request head; `extra` holds lines the proxy adds (framing), each ending in CRLF. */
export function requestHead(method: string, path: string, fields: HeadFields, extra: string): Buffer {
  const out = Buffer.allocUnsafe(
    method.length + 1 + path.length + HTTP11.length + fieldsRoom(fields) + extra.length + 2,
  )
  let at = putAscii(out, 0, method)
  out[at++] = 0x20
  at = putAscii(out, putAscii(out, at, path), HTTP11)
  return putFields(out, at, fields, extra)
}

/** A response head for the client; `extra` as for requestHead. */
export function responseHead(status: number, reason: string, fields: HeadFields, extra: string): Buffer {
  const code = String(status)
  const out = Buffer.allocUnsafe(9 + code.length + 1 + reason.length + 2 + fieldsRoom(fields) + extra.length + 2)
  let at = putAscii(out, putAscii(out, 0, 'HTTP/1.1 '), code)
  out[at++] = 0x20
  at = putAscii(out, putAscii(out, at, reason), CRLF)
  return putFields(out, at, fields, extra)
}

export const CHUNKED_END = `0${CRLF}${CRLF}`
export const CONTINUE = `HTTP/1.1 100 Continue${CRLF}${CRLF}`

/** Writes one piece of a body, chunk-framed when `chunked`; false when `to` asks for a pause. */
export function writeBodyChunk(
  to: { write(data: Buffer | string): boolean },
  chunk: Buffer,
  chunked: boolean,
): boolean {
  if (!chunked) return to.write(chunk)
  to.write(`${chunk.length.toString(16)}${CRLF}`)
  to.write(chunk)
  return to.write(CRLF)
}
export { CRLF }

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  408: 'Request Timeout',
  502: 'Bad Gateway',
  504: 'Gateway Timeout',
}

/** A whole short text response of the proxy's own; no body for a HEAD request. */
export function localResponse(status: number, body: string, close: boolean, head: boolean): string {
  const connection = close ? `connection: close${CRLF}` : ''
  const start = `HTTP/1.1 ${status} ${REASONS[status] ?? ''}${CRLF}content-type: text/plain${CRLF}content-length: ${Buffer.byteLength(body)}${CRLF}${connection}${CRLF}`
  return head ? start : start + body
}
