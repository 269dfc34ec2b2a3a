// Whether a request head can be judged and forwarded safely, and the one framing header the
// proxy forwards for its body. Pure: reads the fields llhttp (strict) has already checked for
// syntax; this adds what llhttp lets through and a server behind the proxy could read otherwise:
//
// - framing: Transfer-Encoding together with Content-Length (even an empty one), an empty
//   Transfer-Encoding or coding, a Content-Length with leading zeros (octal to some parsers);
//   what is forwarded is one framing line the proxy writes itself (the client's are dropped);
// - field names that servers taking '_' for '-' (CGI, WSGI, PHP) read as another field: a
//   look-alike of a field the proxy acts on (`Transfer_Encoding`, `Content_Length`, `Host`...), or
//   of another field of the same request (`X_Token` next to `X-Token`);
// - Host: exactly one (RFC 9112 3.2; in HTTP/1.0 too, as the request goes on in HTTP/1.1), only a host name, IPv4 address or
//   bracketed IPv6 address with an optional port: no lists, spaces, user info or paths.

import { PROXY_OWNED_FIELDS } from '../../policy/http-fields.js'
import type { HeadFields } from './head-fields.js'
import type { MessageHead } from './http1-parser.js'

/** A host name (labels, an optional trailing dot), an IPv4 address or a bracketed IPv6 address; then an optional port. */
const HOST = /^(?:[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/

/** Why a Host (or :authority) value is not one a rule and a server read alike, or null. '' is allowed (RFC 9112 3.2). */
export function hostProblem(host: string): string | null {
  if (host === '') return null
  if (!HOST.test(host)) return `malformed Host ${JSON.stringify(host.length > 64 ? `${host.slice(0, 64)}...` : host)}`
  const colon = host.lastIndexOf(':')
  const port = colon > host.lastIndexOf(']') ? Number(host.slice(colon + 1)) : -1
  if (port > 65535) return `Host port ${port} is above 65535`
  if ((port < 0 ? host.length : colon) > 255) return 'Host name longer than 255 characters'
  return null
}

/** Whether field i's name has a '_' (looked at in place: most heads have none, and make no string). */
function hasUnderscore(fields: HeadFields, i: number): boolean {
  const b = fields.bytes
  const end = fields.nameAt(i) + fields.nameLength(i)
  for (let k = fields.nameAt(i); k < end; k++) if (b[k] === 0x5f) return true
  return false
}

/** A field named with '_' that servers could read as another one, or null. One pass over the names. */
function lookAlike(fields: HeadFields): string | null {
  let i = 0
  while (i < fields.count && !hasUnderscore(fields, i)) i++
  if (i === fields.count) return null
  // Each name as such a server reads it, to the first field of that reading.
  const readings = new Map<string, number>()
  for (let k = 0; k < fields.count; k++) {
    const name = fields.name(k)
    const reading = name.toLowerCase().replaceAll('_', '-')
    const underscore = name.includes('_')
    if (underscore && PROXY_OWNED_FIELDS.has(reading))
      return `'${name}' reads as ${reading} to servers that take '_' for '-'`
    const first = readings.get(reading)
    if (first === undefined) readings.set(reading, k)
    else if (underscore || fields.name(first).includes('_')) {
      const [odd, other] = underscore ? [name, fields.name(first)] : [fields.name(first), name]
      return `'${odd}' and '${other}' are one field to servers that take '_' for '-'`
    }
  }
  return null
}

/** Why the request's framing could be read two ways, or null. */
function framingProblem(fields: HeadFields, http10: boolean): string | null {
  const te = fields.indexOf('transfer-encoding')
  const cl = fields.indexOf('content-length')
  if (te >= 0) {
    // HTTP/1.0 has no chunked framing: a Transfer-Encoding there is how requests get smuggled.
    if (http10) return 'Transfer-Encoding in an HTTP/1.0 request'
    if (cl >= 0) return 'both Transfer-Encoding and Content-Length'
    for (const coding of fields.get('transfer-encoding')!.split(','))
      if (coding.trim() === '') return 'an empty Transfer-Encoding'
  }
  if (cl >= 0) {
    const n = fields.valueLength(cl)
    if (n > 1 && fields.bytes[fields.valueAt(cl)] === 0x30) return 'a Content-Length with leading zeros'
  }
  return null
}

/** Why the head cannot be judged or forwarded safely, or null. `hostAt`: its first Host field (`host` its value), or -1. */
export function requestHeadProblem(
  head: MessageHead,
  hostAt: number,
  host: string | undefined,
  maxHeaders: number,
): string | null {
  const fields = head.fields
  // llhttp also reads HTTP/0.9 and HTTP/2.0 request lines; neither is an HTTP/1.x message to forward.
  if (head.versionMajor !== 1) return `HTTP/${head.versionMajor}.${head.versionMinor} is not HTTP/1.x`
  if (fields.count > maxHeaders) return `more than ${maxHeaders} header fields`
  if (head.upgrade) return head.method === 'CONNECT' ? 'CONNECT is not proxied' : 'protocol upgrades are not proxied'
  // RFC 9112 3.2: rules and server could read different hosts.
  // HTTP/1.0 may leave Host out, but the request goes on as HTTP/1.1, which must have one.
  if (hostAt < 0) return 'no Host header'
  if (fields.indexOf('host', hostAt + 1) >= 0) return 'more than one Host header'
  const problem = hostProblem(host ?? fields.value(hostAt))
  if (problem !== null) return problem
  return framingProblem(fields, head.versionMinor === 0) ?? lookAlike(fields)
}

/**
 * The framing line forwarded with an allowed request, the client's own framing fields marked
 * not forwarded: its Content-Length (checked digits) or its codings (chunked last); '' for no body.
 */
export function forwardedFraming(fields: HeadFields): string {
  const cl = fields.indexOf('content-length')
  if (cl >= 0) {
    fields.drop(cl)
    return `content-length: ${fields.value(cl)}\r\n`
  }
  const te = fields.get('transfer-encoding')
  return te === undefined ? '' : `transfer-encoding: ${te}\r\n`
}
