// What makes an HTTP/2 header list malformed (RFC 9113 8.1.1, 8.2, 8.3): such a request or
// response is never passed on; its stream is reset with PROTOCOL_ERROR, as nghttp2 does. Pure.

import type { HeaderList } from './h2-session.js'

/** Fields that belong to an HTTP/1.1 connection and have no meaning in HTTP/2 (8.2.2). */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'])
const REQUEST_PSEUDO = new Set([':method', ':scheme', ':authority', ':path'])

/** A name's bytes: tchar (RFC 9110 5.6.2) in lower case. */
function badName(name: string): boolean {
  if (name.length === 0) return true
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    // ! # $ % & ' * + - . ^ _ ` | ~ digits a-z
    const ok =
      (c >= 0x61 && c <= 0x7a) ||
      (c >= 0x30 && c <= 0x39) ||
      c === 0x2d ||
      c === 0x5f ||
      c === 0x2e ||
      c === 0x21 ||
      (c >= 0x23 && c <= 0x27) ||
      c === 0x2a ||
      c === 0x2b ||
      c === 0x5e ||
      c === 0x60 ||
      c === 0x7c ||
      c === 0x7e
    if (!ok) return true
  }
  return false
}

/** 8.2.1: no NUL, CR or LF, and no whitespace at either end. */
function badValue(value: string): boolean {
  const n = value.length
  if (n > 0) {
    const a = value.charCodeAt(0)
    const z = value.charCodeAt(n - 1)
    if (a === 0x20 || a === 0x09 || z === 0x20 || z === 0x09) return true
  }
  for (let i = 0; i < n; i++) {
    const c = value.charCodeAt(i)
    if (c === 0 || c === 0x0a || c === 0x0d) return true
  }
  return false
}

/** :authority as RFC 3986 allows it (reg-name or IP literal, userinfo and port): no space, no quote. */
const AUTHORITY = /^[A-Za-z0-9\-._~%!$&'()*+,;=:@[\]]*$/

/** The regular fields' problem, from `from` on: bad names or values, pseudo-fields among them, connection-specific ones. */
function regularProblem(f: HeaderList, from: number): string | null {
  for (let i = from; i < f.names.length; i++) {
    const name = f.names[i]!
    if (name[0] === ':') return `pseudo-header ${name} after a regular field`
    if (badName(name)) return `bad field name ${JSON.stringify(name)}`
    if (badValue(f.values[i]!)) return `bad value of ${name}`
    if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field ${name}`
    if (name === 'te' && f.values[i] !== 'trailers') return 'te other than "trailers"'
  }
  return null
}

/** Why a request head is malformed, or null. */
export function requestProblem(f: HeaderList): string | null {
  let i = 0
  let method: string | undefined
  let scheme = false
  let path: string | undefined
  let authority: string | undefined
  for (; i < f.names.length && f.names[i]![0] === ':'; i++) {
    const name = f.names[i]!
    const value = f.values[i]!
    if (!REQUEST_PSEUDO.has(name)) return `pseudo-header ${name} in a request`
    if (name === ':method') {
      if (method !== undefined) return 'two :method'
      if (badName(value.toLowerCase())) return 'bad :method'
      method = value
    } else if (name === ':scheme') {
      if (scheme) return 'two :scheme'
      scheme = true
    } else if (name === ':path') {
      if (path !== undefined) return 'two :path'
      if (badValue(value)) return 'bad :path'
      path = value
    } else {
      if (authority !== undefined) return 'two :authority'
      if (!AUTHORITY.test(value)) return 'bad :authority'
      authority = value
    }
  }
  if (method === undefined) return 'no :method'
  if (method !== 'CONNECT' && (!scheme || path === undefined || path === '')) return 'no :scheme or :path'
  return regularProblem(f, i)
}

/** Why a response head (1xx included) is malformed, or null. */
export function responseProblem(f: HeaderList): string | null {
  if (f.names[0] !== ':status' || !/^[1-9]\d\d$/.test(f.values[0]!)) return 'no valid :status first'
  return regularProblem(f, 1)
}

/** Why trailers are malformed (pseudo-fields among them, bad fields), or null. */
export function trailersProblem(f: HeaderList): string | null {
  return regularProblem(f, 0)
}
