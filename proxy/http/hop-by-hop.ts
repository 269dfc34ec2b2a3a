// Hop-by-hop fields (RFC 9110 7.6.1) are never forwarded in either direction: the fixed list,
// plus any field the Connection header names. Expect is dropped too (the proxy answers a
// client's 100-continue itself), and Transfer-Encoding is the proxy's to write: bodies are
// re-framed on each hop (http1-writer.ts).

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect'])
/** Which name lengths the fixed list has: a field of another length is end-to-end without being lower-cased. */
const HOP_LENGTHS = new Uint8Array(32)
for (const name of HOP_BY_HOP) HOP_LENGTHS[name.length] = 1

function isHopByHop(name: string): boolean {
  return name.length < 32 && HOP_LENGTHS[name.length] === 1 && HOP_BY_HOP.has(name.toLowerCase())
}

/** Index of the first field called `name` (lower case) in a raw [name, value...] list, or -1. */
export function indexOfHeader(raw: readonly string[], name: string, from = 0): number {
  for (let i = from; i < raw.length; i += 2) if (raw[i]!.length === name.length && raw[i]!.toLowerCase() === name) return i
  return -1
}

/** Every value of the fields called `name` (lower case), joined as RFC 9110 5.3 allows; or undefined. */
export function headerValue(raw: readonly string[], name: string): string | undefined {
  let i = indexOfHeader(raw, name)
  if (i < 0) return undefined
  let v = raw[i + 1]!
  while ((i = indexOfHeader(raw, name, i + 2)) >= 0) v += `, ${raw[i + 1]!}`
  return v
}

/** Field names the Connection header lists beyond the fixed set; null when none (the usual case). */
function connectionNamed(raw: readonly string[]): Set<string> | null {
  let named: Set<string> | null = null
  for (let i = indexOfHeader(raw, 'connection'); i >= 0; i = indexOfHeader(raw, 'connection', i + 2)) {
    const v = raw[i + 1]!
    if (v === 'keep-alive' || v === 'close') continue
    for (const token of v.split(',')) {
      const t = token.trim().toLowerCase()
      if (t && !HOP_BY_HOP.has(t)) (named ??= new Set()).add(t)
    }
  }
  return named
}

/** The end-to-end fields of a raw [name, value, name, value...] list, as a new list. */
export function endToEndRaw(raw: readonly string[]): string[] {
  const named = connectionNamed(raw)
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (isHopByHop(name) || (named !== null && named.has(name.toLowerCase()))) continue
    out.push(name, raw[i + 1]!)
  }
  return out
}
