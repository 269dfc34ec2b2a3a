// The request path the proxy matches rules against and forwards: one normalized form, so the
// rule decision and the server's reading of the path cannot differ. Pure.
//
// Normalization (the README states these rules):
//   - origin-form only ("/..."), or "*" for OPTIONS; the query is kept as it is;
//   - percent-encoded unreserved characters (A-Z a-z 0-9 - . _ ~) are decoded, and the hex digits
//     of the other escapes are uppercased;
//   - runs of "/" are merged;
//   - "." and ".." segments are removed (RFC 3986 5.2.4), never climbing above "/".
// Refused as ambiguous (400): encoded "/" or "\" (%2F, %5C), a raw "\", NUL (raw or %00),
// invalid escapes, an encoded dot in a dot segment ("%2e", "%2e%2e", ".%2E", ...), and control
// characters or raw bytes outside printable ASCII.

export type PathResult = { ok: true; path: string } | { ok: false; reason: string }

const UNRESERVED = /[A-Za-z0-9\-._~]/

function removeDotSegments(segments: string[]): string[] {
  const out: string[] = []
  for (const s of segments) {
    if (s === '.') continue
    if (s === '..') out.pop()
    else out.push(s)
  }
  return out
}

export function normalizePath(target: string, method: string): PathResult {
  if (target === '*') return method === 'OPTIONS' ? { ok: true, path: '*' } : { ok: false, reason: "'*' is only for OPTIONS" }
  if (!target.startsWith('/')) return { ok: false, reason: 'only origin-form targets ("/...") are accepted' }
  const q = target.indexOf('?')
  const pathEnd = q < 0 ? target.length : q
  // Most paths are normal already: no escape, backslash, "//" or segment starting with a dot.
  let normal = true
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i)
    if (c <= 0x20 || c >= 0x7f) return { ok: false, reason: `raw byte 0x${c.toString(16).padStart(2, '0')} in the target` }
    if (i < pathEnd && (c === 0x25 || c === 0x5c || (c === 0x2f && i + 1 < pathEnd && (target.charCodeAt(i + 1) === 0x2f || target.charCodeAt(i + 1) === 0x2e)))) normal = false
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
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return { ok: false, reason: `invalid escape '%${hex}'` }
    const byte = parseInt(hex, 16)
    if (byte === 0) return { ok: false, reason: 'NUL (%00) in the path' }
    if (byte === 0x2f || byte === 0x5c) return { ok: false, reason: `encoded ${byte === 0x2f ? 'slash' : 'backslash'} (%${hex}) in the path` }
    const decodedChar = String.fromCharCode(byte)
    if (UNRESERVED.test(decodedChar)) {
      if (decodedChar === '.') encodedDotAt.add(decoded.length)
      decoded += decodedChar
    } else decoded += `%${hex.toUpperCase()}`
    i += 2
  }
  const segments: string[] = []
  let start = 1
  for (let i = 1; i <= decoded.length; i++) {
    if (i < decoded.length && decoded[i] !== '/') continue
    const seg = decoded.slice(start, i)
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
