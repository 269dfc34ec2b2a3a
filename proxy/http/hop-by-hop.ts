// Hop-by-hop fields (RFC 9110 7.6.1) are never forwarded in either direction: the fixed list,
// plus any field the Connection header names. Expect is dropped too (the proxy answers a
// client's 100-continue itself), and Transfer-Encoding is the proxy's to write: bodies are
// re-framed on each hop (http1-writer.ts).

import type { HeadFields } from './head-fields.js'

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']
/** The fixed list by name length: a field of another length is end-to-end without looking at its bytes. */
const BY_LENGTH: string[][] = []
for (const name of HOP_BY_HOP) (BY_LENGTH[name.length] ??= []).push(name)

function inFixedList(fields: HeadFields, i: number): boolean {
  const names = BY_LENGTH[fields.nameLength(i)]
  if (names === undefined) return false
  for (const name of names) if (fields.nameIs(i, name)) return true
  return false
}

/** Field names the Connection header lists beyond the fixed set; null when none (the usual case). */
function connectionNamed(fields: HeadFields): Set<string> | null {
  let named: Set<string> | null = null
  for (let i = fields.indexOf('connection'); i >= 0; i = fields.indexOf('connection', i + 1)) {
    if (fields.valueIs(i, 'keep-alive') || fields.valueIs(i, 'close')) continue
    for (const token of fields.value(i).split(',')) {
      const t = token.trim().toLowerCase()
      if (t && !HOP_BY_HOP.includes(t)) (named ??= new Set()).add(t)
    }
  }
  return named
}

/** Marks the hop-by-hop fields of a head as not forwarded. */
export function dropHopByHop(fields: HeadFields): void {
  const named = connectionNamed(fields)
  for (let i = 0; i < fields.count; i++) {
    if (inFixedList(fields, i) || (named !== null && named.has(fields.name(i).toLowerCase()))) fields.drop(i)
  }
}
