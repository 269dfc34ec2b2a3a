// The request path the proxy matches rules against and forwards: one normalized form, so the
// rule decision and the server's reading of the path cannot differ. Pure.
//
// Normalization (the README states these rules):
//   - origin-form only ("/..."), or "*" for OPTIONS; the query is kept as it is;
//   - percent-encoded unreserved characters (A-Z a-z 0-9 - . _ ~) are decoded, and the hex digits
//     of the other escapes are uppercased;
//   - path parameters (";" and what follows it in a segment, RFC 3986 3.3) are removed, as
//     Tomcat, Jetty and Spring remove them before routing: "/a;v=1/b" is "/a/b", "/p/..;x/q" is
//     "/q", for the rule and the server alike;
//   - runs of "/" are merged;
//   - "." and ".." segments are removed (RFC 3986 5.2.4), never climbing above "/".
// Refused as ambiguous (400): a fragment ("#": RFC 9112 3.2 has none in a request target),
// encoded "/", "\" or ";" (%2F, %5C, %3B: servers disagree on whether they separate), a raw "\",
// NUL and other control characters (raw, or encoded in the path: %00-%1F, %7F), invalid escapes,
// an encoded dot in a dot segment ("%2e", "%2e%2e", ".%2E", ...), and raw bytes outside
// printable ASCII.

export type PathResult = { ok: true; path: string } | { ok: false; reason: string }

const UNRESERVED = /[A-Za-z0-9\-._~]/
const HEX2 = /^[0-9A-Fa-f]{2}$/

function removeDotSegments(segments: string[]): string[] {
  const out: string[] = []
  for (const s of segments) {
    if (s === '.') continue
    if (s === '..') out.pop()
    else out.push(s)
  }
  return out
}

/** Why the escape at `hex` (its two digits) cannot stand in a path, or null. */
function badEscape(hex: string): string | null {
  if (!HEX2.test(hex)) return `invalid escape '%${hex}'`
  const byte = parseInt(hex, 16)
  if (byte === 0) return 'NUL (%00) in the path'
  if (byte < 0x20 || byte === 0x7f) return `encoded control character (%${hex.toUpperCase()}) in the path`
  if (byte === 0x2f || byte === 0x5c) return `encoded ${byte === 0x2f ? 'slash' : 'backslash'} (%${hex}) in the path`
  if (byte === 0x3b) return `encoded ';' (%${hex}) in the path`
  return null
}

export function normalizePath(target: string, method: string): PathResult {
  if (target === '*')
    return method === 'OPTIONS' ? { ok: true, path: '*' } : { ok: false, reason: "'*' is only for OPTIONS" }
  if (!target.startsWith('/')) return { ok: false, reason: 'only origin-form targets ("/...") are accepted' }
  const q = target.indexOf('?')
  const pathEnd = q < 0 ? target.length : q
  // Most paths are normal already: no escape, backslash, parameter, "//" or segment starting with a dot.
  let normal = true
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i)
    if (c <= 0x20 || c >= 0x7f)
      return { ok: false, reason: `raw byte 0x${c.toString(16).padStart(2, '0')} in the target` }
    if (c === 0x23) return { ok: false, reason: "a fragment ('#') in the target" }
    if (
      i < pathEnd &&
      (c === 0x25 ||
        c === 0x5c ||
        c === 0x3b ||
        (c === 0x2f && i + 1 < pathEnd && (target.charCodeAt(i + 1) === 0x2f || target.charCodeAt(i + 1) === 0x2e)))
    )
      normal = false
  }
  if (normal) return { ok: true, path: target }
  const rawPath = target.slice(0, pathEnd)
  const query = target.slice(pathEnd)
  if (rawPath.includes('\\')) return { ok: false, reason: 'backslash in the path' }
  let decoded = ''
  const encodedDotAt = new Set<number>() // positions in `decoded` of dots that were %2E
  for (let i = 0; i < rawPath.length; i++) {
    const ch = rawPath[i]!
    if (ch !== '%') {
      decoded += ch
      continue
    }
    const hex = rawPath.slice(i + 1, i + 3)
    const bad = badEscape(hex)
    if (bad !== null) return { ok: false, reason: bad }
    const decodedChar = String.fromCharCode(parseInt(hex, 16))
    if (UNRESERVED.test(decodedChar)) {
      if (decodedChar === '.') encodedDotAt.add(decoded.length)
      decoded += decodedChar
    } else decoded += `%${hex.toUpperCase()}`
    i += 2
  }
  const segments: string[] = []
  let start = 1
  let params = -1 // where the current segment's parameters start
  for (let i = 1; i <= decoded.length; i++) {
    if (i < decoded.length && decoded[i] !== '/') {
      if (params < 0 && decoded[i] === ';') params = i
      continue
    }
    const seg = decoded.slice(start, params < 0 ? i : params)
    params = -1
    if ((seg === '.' || seg === '..') && [...seg].some((_, k) => encodedDotAt.has(start + k))) {
      return { ok: false, reason: `encoded dot segment in the path` }
    }
    if (seg !== '' || i === decoded.length) segments.push(seg) // merges "//"; keeps a trailing "/"
    start = i + 1
  }
  const trailingSlash = segments.at(-1) === '' || segments.at(-1) === '.' || segments.at(-1) === '..'
  const kept = removeDotSegments(segments.filter((s, i) => s !== '' || i !== segments.length - 1))
  const path = `/${kept.join('/')}${trailingSlash && kept.length > 0 ? '/' : ''}`
  return { ok: true, path: path + query }
}
