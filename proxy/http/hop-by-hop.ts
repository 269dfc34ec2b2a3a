// Hop-by-hop fields (RFC 9110 7.6.1) are never forwarded in either direction: the fixed list,
// plus any field the Connection header names. Expect is dropped too (the proxy answers a
// client's 100-continue itself), and Transfer-Encoding is the proxy's to write: bodies are
// re-framed on each hop (http1-writer.ts).

import { HOP_BY_HOP_FIELDS as HOP_BY_HOP } from '../../policy/http-fields.js'
import type { HeadFields } from './head-fields.js'

/** The fixed list by name length: a field of another length is end-to-end without looking at its bytes. */
const BY_LENGTH: string[][] = []
for (const name of HOP_BY_HOP) (BY_LENGTH[name.length] ??= []).push(name)

/** Which name of the fixed list field i has, or null: a field of another length is not compared at all. */
function fixedName(fields: HeadFields, i: number): string | null {
  const names = BY_LENGTH[fields.nameLength(i)]
  if (names === undefined) return null
  for (let k = 0; k < names.length; k++) if (fields.nameIs(i, names[k]!)) return names[k]!
  return null
}

/** Adds the field names a Connection header lists beyond the fixed set to `named`; returns it (or null if none). */
function connectionNames(fields: HeadFields, i: number, named: Set<string> | null): Set<string> | null {
  if (fields.valueIs(i, 'keep-alive') || fields.valueIs(i, 'close')) return named
  for (const token of fields.value(i).split(',')) {
    const t = token.trim().toLowerCase()
    if (t && !HOP_BY_HOP.includes(t)) (named ??= new Set()).add(t)
  }
  return named
}

/** Marks the hop-by-hop fields of a head as not forwarded. */
export function dropHopByHop(fields: HeadFields): void {
  let named: Set<string> | null = null
  for (let i = 0; i < fields.count; i++) {
    const name = fixedName(fields, i)
    if (name === null) continue
    fields.drop(i)
    if (name === 'connection') named = connectionNames(fields, i, named)
  }
  // Rare: fields a Connection header names, wherever they stand.
  if (named !== null) for (let i = 0; i < fields.count; i++) if (named.has(fields.name(i).toLowerCase())) fields.drop(i)
}
