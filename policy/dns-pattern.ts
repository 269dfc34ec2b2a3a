// DNS name rules with Cilium's meaning: names compare lowercased and fully qualified (the
// trailing dot is optional on both sides); in matchPattern, `*` matches zero or more DNS
// characters within one label, `*` alone matches every name (including the root), and a
// leading `**.` matches one or more whole labels (subdomains at any depth, not the name itself).

export class DnsPatternError extends Error {
  readonly code = 'EDNSPATTERN'
}

export interface DnsNameMatcher {
  readonly source: string
  test(name: string): boolean
}

const NAME_CHARS = /^[-a-zA-Z0-9_.]+$/
const PATTERN_CHARS = /^[-a-zA-Z0-9_.*]+$/
const LABEL = '[-a-z0-9_]'

/** Lowercased with exactly one trailing dot (the root is "."). */
export function fqdn(name: string): string {
  const lower = name.trim().toLowerCase()
  return lower.endsWith('.') ? lower : `${lower}.`
}

function checkLength(s: string, what: string): void {
  if (s.length === 0) throw new DnsPatternError(`${what} is empty`)
  if (s.length > 255) throw new DnsPatternError(`${what} is longer than 255 characters`)
}

export function compileMatchName(name: string): DnsNameMatcher {
  checkLength(name, 'matchName')
  if (!NAME_CHARS.test(name)) {
    throw new DnsPatternError(`matchName '${name}' may only contain letters, digits, '-', '_' and '.'`)
  }
  const want = fqdn(name)
  return { source: name, test: (n) => fqdn(n) === want }
}

export function compileMatchPattern(pattern: string): DnsNameMatcher {
  checkLength(pattern, 'matchPattern')
  const p = pattern.trim().toLowerCase()
  if (!PATTERN_CHARS.test(p)) {
    throw new DnsPatternError(`matchPattern '${pattern}' may only contain letters, digits, '-', '_', '.' and '*'`)
  }
  if (p === '*') return { source: pattern, test: () => true }
  let body = fqdn(p)
  let prefix = ''
  if (body.startsWith('**.')) {
    prefix = `(?:${LABEL}+\\.)+`
    body = body.slice(3)
  }
  if (body.includes('**')) throw new DnsPatternError(`matchPattern '${pattern}': '**' is only allowed as a leading '**.'`)
  // Each `*` stays inside one label and dots are literal, so matching is linear.
  const re = new RegExp(`^${prefix}${body.replace(/\./g, '\\.').replace(/\*/g, `${LABEL}*`)}$`)
  return { source: pattern, test: (n) => re.test(fqdn(n)) }
}
