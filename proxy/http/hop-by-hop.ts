// Hop-by-hop fields (RFC 9110 7.6.1) are never forwarded in either direction: the fixed list,
// plus any field the Connection header names. Expect is dropped too: Node already answered the
// client's 100-continue, and the upstream request is a new one.

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect'])

function connectionNamed(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null
  const named = new Set<string>()
  for (const v of Array.isArray(value) ? value : [value]) {
    for (const token of v.split(',')) {
      const t = token.trim().toLowerCase()
      if (t) named.add(t)
    }
  }
  return named
}

/** Removes hop-by-hop fields from a parsed (lower-case keyed) header object, in place. */
export function dropHopByHop(headers: Record<string, string | string[] | undefined>): void {
  const named = connectionNamed(headers.connection)
  for (const name of Object.keys(headers)) {
    if (HOP_BY_HOP.has(name) || named?.has(name)) delete headers[name]
  }
}

/** The end-to-end fields of a request's raw [name, value, name, value...] list, as a new list. */
export function endToEndRaw(raw: readonly string[], connection: string | string[] | undefined): string[] {
  const named = connectionNamed(connection)
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase()
    if (HOP_BY_HOP.has(name) || named?.has(name)) continue
    out.push(raw[i]!, raw[i + 1]!)
  }
  return out
}
