// What the rules mean for one endpoint, before identities come in: per direction whether default
// deny applies, the map contributions (selector x protocol x port range -> allow/deny, proxy
// port), and the L7 filters the proxy consults. Pure; the engine feeds it live selectors.
//
// Cilium's semantics: a direction is default-deny once a selecting rule has rules in it (or says
// so with enableDefaultDeny); rules are OR'ed; if any rule on a port has L7 rules, every allowed
// peer on that port goes through the proxy, and peers allowed by rules without L7 rules (on that
// port, or on every port) are allowed every request there.

import type { LabelSet } from './labels.js'
import {
  DIRECTIONS,
  type Direction,
  type DnsRuleSpec,
  type HttpRuleSpec,
  IPPROTO,
  type L7Spec,
  type RuleSpec,
  type SelectorSpec,
  type TlsInterceptSpec,
  type TlsRuleSpec,
} from './model.js'
import { requirementsMatch, selectorKey } from './selector-cache.js'

export interface ProxyPorts {
  http: number
  dns: number
}

export interface ContributionSpec {
  direction: Direction
  deny: boolean
  /** 0 with ports 0-65535: every protocol and port (an L3 rule). */
  protocol: number
  port: number
  endPort: number
  proxyPort: number
  selector: SelectorSpec
  ruleId: string
}

export type L7Parser = L7Spec['kind']

export interface L7EntrySpec {
  selector: SelectorSpec
  /** Set when a rule without L7 rules allows this peer every request: that rule's id. */
  allowAllBy: string | null
  /** The L7 rules (of the filter's parser) for this peer, each with the policy it came from. */
  rules: Array<{ ruleId: string; rule: HttpRuleSpec | DnsRuleSpec | TlsRuleSpec }>
}

export interface L7FilterSpec {
  direction: Direction
  protocol: 'TCP' | 'UDP'
  port: number
  endPort: number
  parser: L7Parser
  entries: L7EntrySpec[]
  /** TLS on this port is terminated and HTTP rules applied inside (when any rule here asks). */
  intercept: TlsInterceptSpec | null
}

export interface ResolvedPolicy {
  enforce: Record<Direction, boolean>
  contributions: ContributionSpec[]
  l7: L7FilterSpec[]
  /** Rules that select the endpoint. */
  ruleIds: string[]
  warnings: string[]
}

const ALL: SelectorSpec = { kind: 'entity', entity: 'all' }

interface FilterEntry {
  selector: SelectorSpec
  ruleId: string
  l7: L7Spec | null
}

interface Filter {
  protocol: 'TCP' | 'UDP'
  port: number
  endPort: number
  entries: FilterEntry[]
}

export function selectsEndpoint(rule: RuleSpec, labels: LabelSet): boolean {
  return requirementsMatch(rule.subject, labels)
}

function resolveDirection(
  dir: Direction,
  rules: RuleSpec[],
  proxyPorts: ProxyPorts,
  out: ResolvedPolicy,
  init: boolean,
): void {
  const denyKey = dir === 'ingress' ? 'ingressDeny' : 'egressDeny'
  const hasRules = rules.some((r) => r[dir].length > 0 || r[denyKey].length > 0)
  out.enforce[dir] = init || rules.some((r) => r.defaultDeny[dir] ?? (r[dir].length > 0 || r[denyKey].length > 0))
  const l3: FilterEntry[] = []
  const filters = new Map<string, Filter>()
  if (hasRules && !out.enforce[dir]) l3.push({ selector: ALL, ruleId: 'enableDefaultDeny=false', l7: null })
  for (const rule of rules) {
    for (const pr of rule[dir]) {
      for (const selector of pr.peers ?? [ALL]) {
        if (pr.toPorts === null) {
          l3.push({ selector, ruleId: rule.id, l7: null })
          continue
        }
        for (const portRule of pr.toPorts) {
          for (const p of portRule.ports) {
            for (const protocol of p.protocols) {
              const fk = `${protocol}/${p.port}-${p.endPort}`
              let f = filters.get(fk)
              if (!f) filters.set(fk, (f = { protocol, port: p.port, endPort: p.endPort, entries: [] }))
              f.entries.push({ selector, ruleId: rule.id, l7: portRule.l7 })
            }
          }
        }
      }
    }
    for (const pr of rule[denyKey]) {
      for (const selector of pr.peers ?? [ALL]) {
        const ranges =
          pr.toPorts === null
            ? [{ protocol: 0, port: 0, endPort: 65535 }]
            : pr.toPorts.flatMap((r) =>
                r.ports.flatMap((p) =>
                  p.protocols.map((proto) => ({ protocol: IPPROTO[proto], port: p.port, endPort: p.endPort })),
                ),
              )
        for (const r of ranges)
          out.contributions.push({ direction: dir, deny: true, ...r, proxyPort: 0, selector, ruleId: rule.id })
      }
    }
  }
  for (const e of l3)
    out.contributions.push({
      direction: dir,
      deny: false,
      protocol: 0,
      port: 0,
      endPort: 65535,
      proxyPort: 0,
      selector: e.selector,
      ruleId: e.ruleId,
    })
  for (const f of filters.values()) {
    const parsers = [...new Set(f.entries.flatMap((e) => (e.l7 ? [e.l7.kind] : [])))]
    if (parsers.length > 1)
      out.warnings.push(
        `${dir} ${f.protocol}/${f.port}: both ${parsers.join(' and ')} rules on one port; ${parsers[0]} applies`,
      )
    const parser = parsers[0] ?? null
    // TLS (serverNames) is the HTTP proxy's too: it tells the protocols apart by their first bytes.
    const proxyPort = parser ? proxyPorts[parser === 'dns' ? 'dns' : 'http'] : 0
    for (const e of f.entries) {
      out.contributions.push({
        direction: dir,
        deny: false,
        protocol: IPPROTO[f.protocol],
        port: f.port,
        endPort: f.endPort,
        proxyPort,
        selector: e.selector,
        ruleId: e.ruleId,
      })
    }
    if (!parser) continue
    // One entry per distinct selector: rules OR'ed, and a rule without L7 rules allows every
    // request. A rule of the other parser on this port allows nothing here (fail closed).
    const merged = new Map<string, L7EntrySpec>()
    for (const e of [...f.entries, ...l3]) {
      const key = selectorKey(e.selector)
      let entry = merged.get(key)
      if (!entry) merged.set(key, (entry = { selector: e.selector, allowAllBy: null, rules: [] }))
      if (e.l7 === null) entry.allowAllBy ??= e.ruleId
      else if (e.l7.kind === parser) for (const rule of e.l7.rules) entry.rules.push({ ruleId: e.ruleId, rule })
    }
    const intercepts = f.entries.flatMap((e) => (e.l7?.kind === 'http' && e.l7.intercept ? [e.l7.intercept] : []))
    if (new Set(intercepts.map((i) => i.trustedCA)).size > 1)
      out.warnings.push(
        `${dir} ${f.protocol}/${f.port}: rules name different originatingTLS trustedCA files; ${intercepts[0]!.trustedCA ?? 'the system trust store'} applies`,
      )
    out.l7.push({
      direction: dir,
      protocol: f.protocol,
      port: f.port,
      endPort: f.endPort,
      parser,
      entries: [...merged.values()],
      intercept: intercepts[0] ?? null,
    })
  }
}

export function resolveEndpointPolicy(
  rules: Iterable<RuleSpec>,
  labels: LabelSet,
  proxyPorts: ProxyPorts,
): ResolvedPolicy {
  const selecting = [...rules].filter((r) => selectsEndpoint(r, labels))
  const out: ResolvedPolicy = {
    enforce: { ingress: false, egress: false },
    contributions: [],
    l7: [],
    ruleIds: selecting.map((r) => r.id),
    warnings: [],
  }
  // An endpoint still without its identity (reserved:init) is enforced both ways, as in Cilium:
  // it is allowed only what policy for init allows.
  const init = labels.has('reserved', 'init')
  for (const dir of DIRECTIONS) resolveDirection(dir, selecting, proxyPorts, out, init)
  return out
}
