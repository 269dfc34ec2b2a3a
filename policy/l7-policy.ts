// The L7 rule tables the proxies consult, per endpoint: for each port with L7 rules, which peers
// (live selectors) may make which requests. A table is immutable and replaced whole when policy
// changes; the identities a selector holds change in place as identities come and go.

import { compileMatchName, compileMatchPattern, compileServerName, type DnsNameMatcher } from './dns-pattern.js'
import type { L7Parser } from './endpoint-policy.js'
import { compileHttpRule, type HeaderAction, type HttpMatcher, type HttpRequestView } from './http-matcher.js'
import type { Direction, DnsRuleSpec, HttpRuleSpec, TlsInterceptSpec, TlsRuleSpec } from './model.js'
import type { CachedSelector } from './selector-cache.js'

export interface L7Entry {
  readonly selector: CachedSelector
  readonly allowAllBy: string | null
  readonly http: ReadonlyArray<{ ruleId: string; matcher: HttpMatcher }>
  /** Name rules: DNS question names (dns parser), or TLS server names (tls parser). */
  readonly names: ReadonlyArray<{ ruleId: string; matcher: DnsNameMatcher }>
}

export interface L7Filter {
  readonly direction: Direction
  readonly protocol: 'TCP' | 'UDP'
  readonly port: number
  readonly endPort: number
  readonly parser: L7Parser
  readonly entries: readonly L7Entry[]
  /** Set when TLS on this port is terminated and these HTTP rules applied inside it. */
  readonly intercept: TlsInterceptSpec | null
}

export interface L7Verdict {
  allowed: boolean
  /** The policy whose rule decided; null when nothing allowed it. */
  ruleId: string | null
  reason: string
  /** Header changes an allowing headerMatches rule asks for. */
  actions: HeaderAction[]
}

const MEMO_LIMIT = 10_000
const httpMemo = new Map<string, HttpMatcher>()
const nameMemo = new Map<string, DnsNameMatcher>()

function memo<T>(cache: Map<string, T>, key: string, make: () => T): T {
  let v = cache.get(key)
  if (v === undefined) {
    if (cache.size >= MEMO_LIMIT) cache.clear()
    cache.set(key, (v = make()))
  }
  return v
}

/** Compiles a rule once, however many endpoints and policies use it. */
export function httpMatcher(rule: HttpRuleSpec): HttpMatcher {
  return memo(httpMemo, JSON.stringify(rule), () => compileHttpRule(rule))
}

/** A dns rule's matcher, or a serverNames entry's. */
export function nameMatcher(rule: DnsRuleSpec | TlsRuleSpec): DnsNameMatcher {
  return memo(nameMemo, JSON.stringify(rule), () =>
    'serverName' in rule
      ? compileServerName(rule.serverName)
      : rule.matchName !== undefined
        ? compileMatchName(rule.matchName)
        : compileMatchPattern(rule.matchPattern!),
  )
}

export class EndpointL7Policy {
  constructor(
    readonly endpointId: number,
    readonly revision: number,
    readonly filters: readonly L7Filter[],
  ) {}

  /** The filter for a destination port: an exact port before a range. */
  find(direction: Direction, protocol: 'TCP' | 'UDP', port: number): L7Filter | undefined {
    let best: L7Filter | undefined
    for (const f of this.filters) {
      if (f.direction !== direction || f.protocol !== protocol || port < f.port || port > f.endPort) continue
      if (!best || f.endPort - f.port < best.endPort - best.port) best = f
    }
    return best
  }
}

/** A denial's reason: why, where, and which policies had rules for this peer there (none allowed it). */
function denied(filter: L7Filter, why: string, consulted: readonly L7Entry[] = []): L7Verdict {
  let reason = `${why} on ${filter.direction} ${filter.protocol}/${filter.port}${filter.endPort !== filter.port ? `-${filter.endPort}` : ''}`
  const policies = new Set<string>()
  for (const e of consulted) for (const r of e.http.length > 0 ? e.http : e.names) policies.add(r.ruleId)
  if (policies.size > 0) reason += ` (policies: ${[...policies].join(', ')})`
  return { allowed: false, ruleId: null, reason, actions: [] }
}

function selecting(filter: L7Filter, identity: number): L7Entry[] {
  return filter.entries.filter((e) => e.selector.selects(identity))
}

export function evaluateHttp(filter: L7Filter, remoteIdentity: number, req: HttpRequestView): L7Verdict {
  const actions: HeaderAction[] = []
  let peerKnown = false
  for (const e of filter.entries) {
    if (!e.selector.selects(remoteIdentity)) continue
    peerKnown = true
    if (e.allowAllBy) return { allowed: true, ruleId: e.allowAllBy, reason: 'peer allowed every request', actions }
    for (const { ruleId, matcher } of e.http) {
      if (matcher.matches(req, actions))
        return { allowed: true, ruleId, reason: 'request matched an http rule', actions }
    }
  }
  return peerKnown
    ? denied(filter, 'no http rule matched', selecting(filter, remoteIdentity))
    : denied(filter, `identity ${remoteIdentity} is not allowed`)
}

/**
 * A name against the filter's name rules: a DNS question's name (dns), or the server name a TLS
 * ClientHello asked for (tls; null when it named none, which no rule matches).
 */
export function evaluateName(filter: L7Filter, remoteIdentity: number, name: string | null): L7Verdict {
  let peerKnown = false
  for (const e of filter.entries) {
    if (!e.selector.selects(remoteIdentity)) continue
    peerKnown = true
    if (e.allowAllBy)
      return {
        allowed: true,
        ruleId: e.allowAllBy,
        reason: `peer allowed every ${filter.parser === 'dns' ? 'name' : 'server name'}`,
        actions: [],
      }
    if (name === null) continue
    for (const { ruleId, matcher } of e.names) {
      if (matcher.test(name)) return { allowed: true, ruleId, reason: `name matched ${matcher.source}`, actions: [] }
    }
  }
  if (!peerKnown) return denied(filter, `identity ${remoteIdentity} is not allowed`)
  const why =
    filter.parser === 'dns'
      ? `no dns rule matched '${name}'`
      : name === null
        ? 'the ClientHello names no server'
        : `no serverNames entry matched '${name}'`
  return denied(filter, why, selecting(filter, remoteIdentity))
}
