// Case-insensitive matching spelled out in a pattern, for V8's linear-time engine, which does
// not take the `i` flag: every letter becomes the class of the characters it matches without
// case (`a` -> `[Aa]`), and every class is closed under case (`[a-f]` -> `[A-Fa-f]`). Which
// characters match without case is what V8's `i` decides for a pattern without `u`: two UTF-16
// units match when their upper-case forms are the same one unit, except that a unit outside
// ASCII never matches one inside it (ECMAScript's Canonicalize). Pure.

/** Every unit's canonical unit, and the units of each canonical unit shared by more than one; made at first use. */
let canon: Uint16Array | null = null
const shared = new Map<number, number[]>()

function canonical(u: number): number {
  const upper = String.fromCharCode(u).toUpperCase()
  if (upper.length !== 1) return u
  const c = upper.charCodeAt(0)
  return u >= 0x80 && c < 0x80 ? u : c
}

/** The units that match `u` without case (u among them). */
function caseClass(u: number): readonly number[] {
  if (canon === null) {
    canon = new Uint16Array(0x10000)
    const count = new Uint16Array(0x10000)
    for (let v = 0; v <= 0xffff; v++) count[(canon[v] = canonical(v))]!++
    for (let v = 0; v <= 0xffff; v++) {
      const c = canon[v]!
      if (count[c]! < 2) continue
      let members = shared.get(c)
      if (members === undefined) shared.set(c, (members = []))
      members.push(v)
    }
  }
  return shared.get(canon[u]!) ?? [u]
}

const hex4 = (u: number): string => `\\u${u.toString(16).padStart(4, '0')}`

/** A class's units as ranges, written with \u escapes. */
function classBody(units: Set<number>): string {
  const sorted = [...units].sort((a, b) => a - b)
  let out = ''
  for (let i = 0; i < sorted.length; ) {
    let j = i
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++
    out += j === i ? hex4(sorted[i]!) : `${hex4(sorted[i]!)}-${hex4(sorted[j]!)}`
    i = j + 1
  }
  return out
}

/** One literal unit, as the class of what it matches without case (or itself, if only itself). */
function foldUnit(u: number, spelled: string): string {
  const members = caseClass(u)
  return members.length === 1 ? spelled : `[${classBody(new Set(members))}]`
}

const ESCAPED_UNIT = /^\\(?:x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4}))/
const CONTROL_ESCAPES: Record<string, number> = { n: 10, r: 13, t: 9, f: 12, v: 11, '0': 0 }

/** The unit an escape at `at` stands for (and how long it is), or null for a class escape (\d, \w...). */
function escapedUnit(src: string, at: number): { unit: number; length: number } | null {
  const m = ESCAPED_UNIT.exec(src.slice(at, at + 6))
  if (m !== null) return { unit: parseInt(m[1] ?? m[2]!, 16), length: m[0].length }
  const c = src[at + 1]
  if (c === undefined) return { unit: 0x5c, length: 1 }
  if (c === 'c' && /[A-Za-z]/.test(src[at + 2] ?? '')) return { unit: src.charCodeAt(at + 2) % 32, length: 3 }
  if (c in CONTROL_ESCAPES) return { unit: CONTROL_ESCAPES[c]!, length: 2 }
  if (/[dDwWsSbB1-9]/.test(c)) return null
  return { unit: c.charCodeAt(0), length: 2 }
}

/** `[...]` starting at `at`, closed under case; and where it ends (its `]`). */
function foldClass(src: string, at: number): { text: string; end: number } {
  let i = at + 1
  const negated = src[i] === '^'
  if (negated) i++
  const kept: string[] = [] // class escapes, closed under case already
  const units = new Set<number>()
  let first = true
  const item = (): number | null => {
    if (src[i] === '\\') {
      const e = escapedUnit(src, i)
      if (e === null) {
        kept.push(src.slice(i, i + 2))
        i += 2
        return null
      }
      i += e.length
      return e.unit
    }
    return src.charCodeAt(i++)
  }
  while (i < src.length && (src[i] !== ']' || first)) {
    first = false
    const lo = item()
    if (lo !== null && src[i] === '-' && src[i + 1] !== ']' && i + 1 < src.length) {
      i++
      const hi = item()
      if (hi === null) {
        units.add(lo).add(0x2d) // `a-\d`: a, '-' and the class, as JS reads it
        continue
      }
      for (let u = lo; u <= hi; u++) for (const v of caseClass(u)) units.add(v)
    } else if (lo !== null) for (const v of caseClass(lo)) units.add(v)
  }
  return { text: `[${negated ? '^' : ''}${kept.join('')}${classBody(units)}]`, end: i }
}

/** `source` (JS syntax, no `u` flag) rewritten to match without case when run without the `i` flag. */
export function foldCase(source: string): string {
  let out = ''
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!
    if (c === '\\') {
      const e = escapedUnit(source, i)
      const length = e === null ? 2 : e.length
      out += e === null ? source.slice(i, i + 2) : foldUnit(e.unit, source.slice(i, i + length))
      i += length - 1
    } else if (c === '[') {
      const cls = foldClass(source, i)
      out += cls.text
      i = cls.end
    } else if (c === '(' && source.startsWith('(?<', i) && source[i + 3] !== '=' && source[i + 3] !== '!') {
      const close = source.indexOf('>', i) // a group's name is not matched: as it is
      out += source.slice(i, close + 1)
      i = close
    } else out += foldUnit(c.charCodeAt(0), c)
  }
  return out
}
