// CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (cilium.io/v2) into the normalized model.
//
// As in Cilium, a namespaced policy applies only to endpoints of its namespace (metadata.namespace,
// `default` when absent, as kubectl would), and its endpoint peers are limited to that namespace
// unless a peer selector names the namespace label itself or a reserved label.

import {
  type Direction,
  type L7Spec,
  type LabelRequirement,
  NAMESPACE_LABEL,
  type PeerRuleSpec,
  type PortRuleSpec,
  type PortSpec,
  type RuleSpec,
  type SelectorSpec,
} from './model.js'
import {
  readCidrList,
  readCidrSet,
  readDnsRule,
  readEntities,
  readFqdnSelectors,
  readGrpcRule,
  readHttpRule,
  readInterception,
  readLabelSelector,
  readPort,
  readServerNames,
} from './parse-fields.js'
import type { YNode } from './yaml-reader.js'

const PEER_FIELDS: Record<Direction, Record<string, 'endpoints' | 'cidr' | 'cidrset' | 'entities' | 'fqdn'>> = {
  ingress: { fromEndpoints: 'endpoints', fromCIDR: 'cidr', fromCIDRSet: 'cidrset', fromEntities: 'entities' },
  egress: { toEndpoints: 'endpoints', toCIDR: 'cidr', toCIDRSet: 'cidrset', toEntities: 'entities', toFQDNs: 'fqdn' },
}

/** Fields Cilium has that l7proxy does not implement: named so the error says so. */
const UNSUPPORTED: Record<string, string> = {
  fromRequires: 'fromRequires is deprecated in Cilium and not supported',
  toRequires: 'toRequires is deprecated in Cilium and not supported',
  fromGroups: 'fromGroups (cloud provider groups) is not supported',
  toGroups: 'toGroups (cloud provider groups) is not supported',
  fromNodes: 'fromNodes is not supported',
  toNodes: 'toNodes is not supported',
  toServices: 'toServices is not supported; select the service endpoints with toEndpoints',
  icmps: 'ICMP rules are not supported',
  authentication: 'mutual authentication is not supported',
}

export function restrictToNamespace(reqs: readonly LabelRequirement[], ns: string | null): LabelRequirement[] {
  if (ns === null || reqs.some((r) => r.key === NAMESPACE_LABEL || r.source === 'reserved')) return [...reqs]
  return [...reqs, { source: 'k8s', key: NAMESPACE_LABEL, op: 'In', values: [ns] }]
}

/** The `rules` of a port rule; null after reporting a problem. */
function readL7(n: YNode, dir: Direction): L7Spec | null {
  const f = n.fields(['http', 'grpc', 'dns', 'kafka', 'l7proto', 'l7'])
  if (!f) return null
  for (const k of ['kafka', 'l7proto', 'l7'] as const) {
    if (f[k]) return f[k]!.fail(`${k} rules are not supported by l7proxy (http, grpc and dns are)`)
  }
  if (f.dns && (f.http || f.grpc))
    return n.fail(`a port rule takes either ${f.http ? 'http' : 'grpc'} or dns rules, not both`)
  if (f.dns && dir === 'ingress') return f.dns.fail('dns rules apply only at egress')
  if (!f.http && !f.grpc && !f.dns) return n.fail('rules needs http, grpc or dns')
  const lists: Array<[YNode, YNode[]]> = []
  for (const key of ['http', 'grpc', 'dns'] as const) {
    if (!f[key]) continue
    const items = f[key]!.list()
    if (!items) return null
    if (items.length === 0)
      return f[key]!.fail(
        `expected at least one ${key} rule${key === 'dns' ? '' : ' (use http: [{}] to allow every request)'}`,
      )
    lists.push([f[key]!, items])
  }
  if (f.dns) {
    const rules = lists[0]![1].map((i) => readDnsRule(i, 'dns rule'))
    return rules.includes(null) ? null : { kind: 'dns', rules: rules as NonNullable<(typeof rules)[number]>[] }
  }
  // gRPC rules are HTTP rules on the call's path: one matcher serves both.
  const rules = lists.flatMap(([node, items]) => items.map(node === f.grpc ? readGrpcRule : readHttpRule))
  return rules.includes(null) ? null : { kind: 'http', rules: rules as NonNullable<(typeof rules)[number]>[] }
}

function readPortRules(n: YNode, dir: Direction, deny: boolean): PortRuleSpec[] | null {
  const out: PortRuleSpec[] = []
  let ok = true
  for (const item of n.list() ?? []) {
    const f = item.fields(['ports', 'rules', 'serverNames', 'terminatingTLS', 'originatingTLS', 'listener'], ['ports'])
    if (!f) {
      ok = false
      continue
    }
    for (const k of ['listener'] as const) {
      if (f[k]) {
        f[k]!.fail(`${k} is not supported yet`)
        ok = false
      }
    }
    const portNodes = f.ports?.list()
    if (!portNodes) {
      ok = false
      continue
    }
    if (portNodes.length === 0) {
      f.ports!.fail('expected at least one port')
      ok = false
      continue
    }
    const ports = portNodes.map((p) => readPort(p, 'ANY'))
    let l7: L7Spec | null = null
    if (f.rules && !f.rules.isNull()) {
      if (deny) {
        f.rules.fail('deny rules cannot have L7 rules: a deny applies to whole ports')
        ok = false
        continue
      }
      const r = readL7(f.rules, dir)
      if (r === null) {
        ok = false
        continue
      }
      l7 = r
      if (l7.kind === 'dns' && ports.some((p) => p && p.port === 0)) {
        f.ports!.fail('dns rules need explicit ports (usually 53)')
        ok = false
      }
    }
    if (f.terminatingTLS || f.originatingTLS) {
      const intercept = readInterception(f.terminatingTLS, f.originatingTLS, f.rules)
      if (intercept === null) {
        ok = false
        continue
      }
      if (f.serverNames) {
        f.serverNames.fail(
          'serverNames together with terminatingTLS is not supported yet; match the name with an http host rule',
        )
        ok = false
        continue
      }
      if (deny || l7 === null || l7.kind !== 'http') {
        ;(f.terminatingTLS ?? f.originatingTLS)!.fail(
          'TLS interception needs http rules on the port (rules: { http: [...] })',
        )
        ok = false
        continue
      }
      l7 = { ...l7, intercept }
    }
    if (f.serverNames) {
      if (deny) {
        f.serverNames.fail('deny rules cannot have serverNames: a deny applies to whole ports')
        ok = false
        continue
      }
      if (l7 !== null) {
        f.serverNames.fail(
          `serverNames and ${l7.kind} rules on one port need TLS interception (terminatingTLS), which is not supported yet`,
        )
        ok = false
        continue
      }
      l7 = readServerNames(f.serverNames)
      if (l7 === null) {
        ok = false
        continue
      }
    }
    if (ports.includes(null)) {
      ok = false
      continue
    }
    out.push({ ports: ports as PortSpec[], l7 })
  }
  return ok ? out : null
}

function readPeerRule(n: YNode, dir: Direction, deny: boolean, ns: string | null): PeerRuleSpec | null {
  const peerFields = PEER_FIELDS[dir]
  const denyHasFqdn = deny && dir === 'egress'
  const side = dir === 'ingress' ? 'from' : 'to'
  const unsupported = Object.keys(UNSUPPORTED).filter((k) => k.startsWith(side) || !/^(from|to)[A-Z]/.test(k))
  const allowed = [...Object.keys(peerFields), 'toPorts', ...unsupported]
  const f = n.fields(allowed)
  if (!f) return null
  let ok = true
  let peers: SelectorSpec[] | null = null
  for (const [key, node] of Object.entries(f)) {
    if (key in UNSUPPORTED) {
      node.fail(UNSUPPORTED[key]!)
      ok = false
      continue
    }
    const kind = peerFields[key]
    if (!kind) continue
    if (kind === 'fqdn' && denyHasFqdn) {
      node.fail('toFQDNs is not allowed in egressDeny')
      ok = false
      continue
    }
    let got: SelectorSpec[] | null
    if (kind === 'endpoints') {
      got = []
      for (const sel of node.list() ?? ((ok = false), [])) {
        const reqs = readLabelSelector(sel)
        if (reqs === null) ok = false
        else got.push({ kind: 'labels', requirements: restrictToNamespace(reqs, ns) })
      }
    } else if (kind === 'cidr') got = readCidrList(node)
    else if (kind === 'cidrset') got = readCidrSet(node)
    else if (kind === 'entities') got = readEntities(node)
    else got = readFqdnSelectors(node)
    if (got === null) ok = false
    else peers = [...(peers ?? []), ...got]
  }
  let toPorts: PortRuleSpec[] | null = null
  if (f.toPorts && !f.toPorts.isNull()) {
    toPorts = readPortRules(f.toPorts, dir, deny)
    if (toPorts === null) ok = false
  }
  return ok ? { peers, toPorts } : null
}

function readRule(n: YNode, id: string, file: string, ns: string | null): RuleSpec | null {
  const f = n.fields(
    [
      'description',
      'endpointSelector',
      'nodeSelector',
      'ingress',
      'ingressDeny',
      'egress',
      'egressDeny',
      'labels',
      'enableDefaultDeny',
      'log',
    ],
    [],
  )
  if (!f) return null
  let ok = true
  if (f.nodeSelector) {
    f.nodeSelector.fail('nodeSelector (host policies) is not supported; use endpointSelector')
    ok = false
  }
  if (f.log) {
    f.log.fail('log is not supported: l7proxy logs every L7 verdict')
    ok = false
  }
  if (!f.endpointSelector) {
    n.fail("missing required field 'endpointSelector'")
    ok = false
  }
  if (f.description) ok = f.description.string() !== null && ok
  if (f.labels && f.labels.list() === null) ok = false
  const subject = f.endpointSelector ? readLabelSelector(f.endpointSelector) : null
  const sections = {
    ingress: [] as PeerRuleSpec[],
    ingressDeny: [] as PeerRuleSpec[],
    egress: [] as PeerRuleSpec[],
    egressDeny: [] as PeerRuleSpec[],
  }
  for (const key of ['ingress', 'ingressDeny', 'egress', 'egressDeny'] as const) {
    if (!f[key] || f[key]!.isNull()) continue
    const dir: Direction = key.startsWith('ingress') ? 'ingress' : 'egress'
    for (const item of f[key]!.list() ?? ((ok = false), [])) {
      const r = readPeerRule(item, dir, key.endsWith('Deny'), ns)
      if (r === null) ok = false
      else sections[key].push(r)
    }
  }
  const defaultDeny: RuleSpec['defaultDeny'] = {}
  if (f.enableDefaultDeny && !f.enableDefaultDeny.isNull()) {
    const d = f.enableDefaultDeny.fields(['ingress', 'egress'])
    if (!d) ok = false
    for (const dir of ['ingress', 'egress'] as const) {
      if (!d?.[dir]) continue
      const b = d[dir]!.boolean()
      if (b === null) ok = false
      else defaultDeny[dir] = b
    }
  }
  if (!ok || subject === null) return null
  return { id, file, line: n.line, subject: restrictToNamespace(subject, ns), ...sections, defaultDeny }
}

export interface DocumentHeader {
  kind: string
  name: string
  namespace: string | null
}

/** The rules of one CNP/CCNP document (its `spec`, or each of its `specs`). */
export function readCiliumRules(
  f: Record<string, YNode>,
  doc: YNode,
  header: DocumentHeader,
  file: string,
): RuleSpec[] | null {
  const clusterwide = header.kind === 'CiliumClusterwideNetworkPolicy'
  const ns = clusterwide ? null : (header.namespace ?? 'default')
  const base = clusterwide ? `${header.kind}/${header.name}` : `${header.kind}/${ns}/${header.name}`
  if (!f.spec === !f.specs) {
    doc.fail("a policy needs exactly one of 'spec' or 'specs'")
    return null
  }
  if (f.spec) {
    const r = readRule(f.spec, base, file, ns)
    return r ? [r] : null
  }
  const items = f.specs!.list()
  if (!items) return null
  if (items.length === 0) return f.specs!.fail('expected at least one spec')
  const rules = items.map((item, i) => readRule(item, `${base}#${i}`, file, ns))
  return rules.includes(null) ? null : (rules as RuleSpec[])
}
