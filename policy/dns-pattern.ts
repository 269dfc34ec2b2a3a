// DNS name rules and TLS server-name patterns with Cilium's meaning. Names compare lowercased; a
// label is one or more of letters, digits, '-' and '_'; a name with an empty label
// (`example..com`) is refused.
//
// DNS (matchName, matchPattern; Cilium's agent since PR 43420): fully qualified, the trailing dot
// optional on both sides. In matchPattern `*` matches zero or more label characters within one
// label; `*`, `**`, `**.` and `***` alone match every name (the root too); a leading `**.` matches
// one or more whole labels (subdomains at any depth, not the name itself); `**` anywhere else is
// a one-label `*`.
//
// TLS serverNames (cilium-envoy's SNI matcher): no trailing dot; `*` as in matchPattern, `*` alone
// every name; a label `**` anywhere matches one or more whole labels (`sub.**.example.com`); a label
// may hold single `*`s between characters, and no run of three.

import { L7ProxyError } from '../lib/l7proxy-error.js'
import { compileAnchored } from './regex.js'

export class DnsPatternError extends L7ProxyError {
  constructor(message: string) {
    super('EDNSPATTERN', message)
  }
}

export interface DnsNameMatcher {
  readonly source: string
  test(name: string): boolean
}

const NAME_CHARS = /^[-a-zA-Z0-9_.]+$/
const PATTERN_CHARS = /^[-a-zA-Z0-9_.*]+$/
const LABEL = '[-a-z0-9_]'
/** One label of a serverNames pattern: `*`, `**`, or characters with single `*`s among them. */
const SNI_LABEL = /^(?:\*\*?|\*?[-a-z0-9_]+(?:\*[-a-z0-9_]+)*\*?)$/
const EVERY_NAME: DnsNameMatcher['test'] = () => true

/** Lowercased with exactly one trailing dot (the root is "."). */
export function fqdn(name: string): string {
  const lower = name.trim().toLowerCase()
  return lower.endsWith('.') ? lower : `${lower}.`
}

function checkLength(s: string, what: string): void {
  if (s.length === 0) throw new DnsPatternError(`${what} is empty`)
  if (s.length > 255) throw new DnsPatternError(`${what} is longer than 255 characters`)
}

/** A name's labels (one trailing dot allowed); throws on an empty one. */
function labels(name: string, what: string): string[] {
  const parts = (name.endsWith('.') ? name.slice(0, -1) : name).split('.')
  if (parts.some((l) => l === '')) throw new DnsPatternError(`${what} '${name}' has an empty label`)
  return parts
}

/** A label's `*` runs as the one-label wildcard; the rest literal. */
function labelSource(label: string): string {
  return label.replace(/\*+/g, '*').replace(/\*/g, `${LABEL}*`)
}

/** An anchored matcher for a generated source: linear-time where its shape needs it. */
function matcher(source: string, pattern: string, normalize: (n: string) => string): DnsNameMatcher {
  const re = compileAnchored(source)
  return { source: pattern, test: (n) => re.test(normalize(n)) }
}

export function compileMatchName(name: string): DnsNameMatcher {
  checkLength(name, 'matchName')
  if (!NAME_CHARS.test(name)) {
    throw new DnsPatternError(`matchName '${name}' may only contain letters, digits, '-', '_' and '.'`)
  }
  labels(name.trim(), 'matchName')
  const want = fqdn(name)
  return { source: name, test: (n) => fqdn(n) === want }
}

export function compileMatchPattern(pattern: string): DnsNameMatcher {
  checkLength(pattern, 'matchPattern')
  const p = pattern.trim().toLowerCase()
  if (!PATTERN_CHARS.test(p)) {
    throw new DnsPatternError(`matchPattern '${pattern}' may only contain letters, digits, '-', '_', '.' and '*'`)
  }
  if (p === '*' || p === '**' || p === '**.' || p === '***') return { source: pattern, test: EVERY_NAME }
  const subdomains = p.startsWith('**.')
  const parts = labels(subdomains ? p.slice(3) : p, 'matchPattern')
  const body = parts.map(labelSource).join('\\.')
  return matcher(`${subdomains ? `(?:${LABEL}+\\.)+` : ''}${body}\\.`, pattern, fqdn)
}

/** A TLS server name pattern (serverNames), as cilium-envoy matches the ClientHello's name. */
export function compileServerName(pattern: string): DnsNameMatcher {
  checkLength(pattern, 'server name')
  const p = pattern.toLowerCase()
  if (!PATTERN_CHARS.test(p)) {
    throw new DnsPatternError(`server name '${pattern}' may only contain letters, digits, '-', '_', '.' and '*'`)
  }
  if (p.endsWith('.')) throw new DnsPatternError(`server name '${pattern}' must not end with a dot`)
  const parts = labels(p, 'server name')
  const bad = parts.find((l) => !SNI_LABEL.test(l))
  if (bad !== undefined)
    throw new DnsPatternError(`server name '${pattern}': label '${bad}' may hold '**' alone or single '*'s`)
  const lower = (n: string): string => n.toLowerCase()
  if (!p.includes('*')) return { source: pattern, test: (n) => lower(n) === p }
  if (p === '*') return matcher(`${LABEL}+(?:\\.${LABEL}+)*`, pattern, lower)
  const body = parts.map((l) => (l === '**' ? `${LABEL}+(?:\\.${LABEL}+)*` : labelSource(l))).join('\\.')
  return matcher(body, pattern, lower)
}
