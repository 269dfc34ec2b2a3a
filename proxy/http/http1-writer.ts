// What the proxy writes on either hop: message heads built from raw field lists (names and values
// as received, which llhttp has already checked, or policy values checked at load), chunked
// framing, and its own short responses. Header bytes are latin1 both ways, as llhttp reads them.

const CRLF = '\r\n'

/** Transfer-Encoding for a body the proxy chunk-encodes: the sender's codings, chunked last. */
export function chunkedCoding(received: string | undefined): string {
  if (received === undefined) return 'chunked'
  return /(^|[\s,])chunked\s*$/i.test(received) ? received : `${received}, chunked`
}

function fields(raw: readonly string[]): string {
  let s = ''
  for (let i = 0; i < raw.length; i += 2) s += `${raw[i]!}: ${raw[i + 1]!}${CRLF}`
  return s
}

/** A request head; `extra` holds lines the proxy adds (framing), each ending in CRLF. */
export function requestHead(method: string, path: string, raw: readonly string[], extra: string): string {
  return `${method} ${path} HTTP/1.1${CRLF}${fields(raw)}${extra}${CRLF}`
}

/** A response head for the client; `extra` as for requestHead. */
export function responseHead(status: number, reason: string, raw: readonly string[], extra: string): string {
  return `HTTP/1.1 ${status} ${reason}${CRLF}${fields(raw)}${extra}${CRLF}`
}

export const CHUNKED_END = `0${CRLF}${CRLF}`
export const CONTINUE = `HTTP/1.1 100 Continue${CRLF}${CRLF}`

/** Writes one piece of a body, chunk-framed when `chunked`; false when `to` asks for a pause. */
export function writeBodyChunk(to: { write(data: Buffer | string): boolean }, chunk: Buffer, chunked: boolean): boolean {
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
