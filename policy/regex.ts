// Anchored regular expressions for HTTP method, path and host rules, with Cilium's meaning (Go's
// RE2 syntax, whole-string match) and no catastrophic backtracking:
//
// - a pattern whose shape cannot backtrack badly runs on V8's ordinary engine (fast): no
//   quantified group that contains a quantifier or an alternation, and at most one unbounded
//   quantifier (`*`, `+`, `{n,}`) in the whole pattern;
// - any other pattern runs on V8's linear-time engine (the `l` flag; a case-insensitive one with
//   its letters' cases spelled out, case-fold.ts, since that engine takes no `i`);
// - a pattern neither can run safely (e.g. a large counted repetition of a group) is refused.
//
// RE2 has no backreferences or lookaround, so they are refused too, as Cilium would.

import { setFlagsFromString } from 'node:v8'
import { L7ProxyError } from '../lib/l7proxy-error.js'
import { foldCase } from './case-fold.js'

setFlagsFromString('--enable-experimental-regexp-engine')

export class RegexError extends L7ProxyError {
  constructor(message: string) {
    super('EREGEX', message)
  }
}

export interface SafeRegex {
  readonly source: string
  readonly engine: 'backtracking' | 'linear'
  test(s: string): boolean
}

interface Shape {
  nestedQuantifier: boolean
  unbounded: number
}

/** RE2 spellings JS lacks, rewritten; JS-only constructs refused. */
function translate(pattern: string): { source: string; flags: string } {
  let flags = ''
  let src = pattern
  const lead = /^\(\?([imsU]+)\)/.exec(src)
  if (lead) {
    for (const f of lead[1]!) {
      if (f === 'i' || f === 's' || f === 'm') flags += f
      else throw new RegexError(`flag '${f}' is not supported`)
    }
    src = src.slice(lead[0].length)
  }
  if (/\(\?[=!]|\(\?<[=!]/.test(src)) throw new RegexError('lookahead and lookbehind are not RE2 syntax')
  if (/\\[1-9]|\\k</.test(src)) throw new RegexError('backreferences are not RE2 syntax')
  if (/\(\?[a-zA-Z]/.test(src.replace(/\(\?P</g, '')))
    throw new RegexError('inline flags are only supported at the start, e.g. (?i)')
  src = src
    .replace(/\(\?P</g, '(?<')
    .replace(/\\A/g, '^')
    .replace(/\\z/g, '$')
  return { source: src, flags }
}

/** Walks the pattern's structure: groups, classes, escapes and quantifiers. */
function shapeOf(src: string): Shape {
  const stack: Array<{ quantified: boolean; alternation: boolean }> = [{ quantified: false, alternation: false }]
  const shape: Shape = { nestedQuantifier: false, unbounded: 0 }
  let lastGroup: { quantified: boolean; alternation: boolean } | null = null
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!
    let quantifier: string | null = null
    if (c === '\\') {
      i++
      lastGroup = null
      continue
    }
    if (c === '[') {
      i++
      if (src[i] === '^') i++
      if (src[i] === ']') i++
      while (i < src.length && src[i] !== ']') i += src[i] === '\\' ? 2 : 1
      lastGroup = null
      continue
    }
    if (c === '(') {
      stack.push({ quantified: false, alternation: false })
      lastGroup = null
      continue
    }
    if (c === ')') {
      const g = stack.length > 1 ? stack.pop()! : null
      lastGroup = g
      if (g) {
        // What a group contains counts for its parent too.
        const parent = stack[stack.length - 1]!
        parent.quantified ||= g.quantified
        parent.alternation ||= g.alternation
      }
      continue
    }
    if (c === '|') {
      stack[stack.length - 1]!.alternation = true
      lastGroup = null
      continue
    }
    if (c === '*' || c === '+' || c === '?') quantifier = c
    else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(src.slice(i))
      if (m) {
        quantifier = m[2] !== undefined && m[3] === '' ? '+' : '?'
        i += m[0].length - 1
      }
    }
    if (quantifier) {
      if (src[i + 1] === '?') i++ // lazy
      if (quantifier !== '?') shape.unbounded++
      if (lastGroup && (lastGroup.quantified || lastGroup.alternation)) shape.nestedQuantifier = true
      stack[stack.length - 1]!.quantified = true
      lastGroup = null
      continue
    }
    lastGroup = null
  }
  return shape
}

/** Compiles `pattern` to match whole strings. Throws RegexError with the reason. */
export function compileAnchored(pattern: string, extraFlags = ''): SafeRegex {
  const { source, flags } = translate(pattern)
  const anchored = `^(?:${source})$`
  const allFlags = [...new Set(flags + extraFlags)].join('')
  let native: RegExp
  try {
    native = new RegExp(anchored, allFlags)
  } catch (e) {
    throw new RegexError(
      `invalid regular expression: ${(e as Error).message.replace(/^Invalid regular expression: /, '')}`,
    )
  }
  const shape = shapeOf(source)
  if (!shape.nestedQuantifier && shape.unbounded <= 1) {
    return { source: pattern, engine: 'backtracking', test: (s) => native.test(s) }
  }
  let linear: RegExp
  try {
    // The linear engine takes no `i`: the pattern spells its letters' cases out instead.
    linear = allFlags.includes('i')
      ? new RegExp(foldCase(anchored), `${allFlags.replace('i', '')}l`)
      : new RegExp(anchored, `${allFlags}l`)
  } catch {
    throw new RegexError(
      'pattern could backtrack catastrophically (nested or repeated quantifiers) and cannot run in linear time; simplify it',
    )
  }
  return { source: pattern, engine: 'linear', test: (s) => linear.test(s) }
}
