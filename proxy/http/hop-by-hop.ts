// Hop-by-hop fields (RFC 9110 7.6.1) are never forwarded in either direction: the fixed list,
// plus any field the Connection header names. Expect is dropped too: Node already answered the
// client's 100-continue, and the upstream request is a new one.

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect'])

function connectionNamed(value: string | string[] | undefined): Set<string> | null {
  // The usual values name nothing beyond the fixed list: no set to build.
  if (value === undefined || value === 'keep-alive' || value === 'close') return null
  const named = new Set<string>()
  for (const v of Array.isArray(value) ? value : [value]) {
    for (const token of v.split(',')) {
      const t = token.trim().toLowerCase()
      if (t) named.add(t)
    }
  }
  return named
}

/**
 * The end-to-end fields of a raw [name, value, name, value...] list (a request's rawHeaders, or
 * a response's as undici gives them, in Buffers), as a new list of strings.
 */
export function endToEndRaw(raw: ReadonlyArray<string | Buffer>, connection: string | string[] | undefined): string[] {
  const named = connectionNamed(connection)
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1')
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || named?.has(lower)) continue
    out.push(name, raw[i + 1]!.toString('latin1'))
  }
  return out
}
