// Kubernetes NetworkPolicy (networking.k8s.io/v1) into the normalized model, with Kubernetes'
// meaning: policyTypes decides which directions are default-deny (Ingress always, Egress when
// listed or when egress rules exist); an absent or empty `from`/`to` allows every peer and an
// absent or empty `ports` every port; podSelector alone means pods of the policy's namespace;
// namespaceSelector matches namespace labels (kubernetes.io/metadata.name is the namespace name).

import { ANY_SOURCE } from './labels.js'
import {
  type Direction,
  type LabelRequirement,
  NAMESPACE_LABEL,
  type PeerRuleSpec,
  type RuleSpec,
  type SelectorSpec,
} from './model.js'
import { type DocumentHeader, restrictToNamespace } from './parse-cilium.js'
import { readCidr, readLabelSelector, readPort } from './parse-fields.js'
import type { YNode } from './yaml-reader.js'

/** Cilium's label for namespace labels: namespaceSelector `team: x` is `io.cilium.k8s.namespace.labels.team=x`. */
function namespaceRequirement(r: LabelRequirement): LabelRequirement {
  const key = r.key === 'kubernetes.io/metadata.name' ? NAMESPACE_LABEL : `io.cilium.k8s.namespace.labels.${r.key}`
  return { ...r, source: ANY_SOURCE, key }
}

function readPeer(n: YNode, ns: string): SelectorSpec | null {
  const f = n.fields(['podSelector', 'namespaceSelector', 'ipBlock'])
  if (!f) return null
  if (f.ipBlock) {
    if (f.podSelector || f.namespaceSelector)
      return n.fail('ipBlock cannot be combined with podSelector or namespaceSelector')
    const b = f.ipBlock.fields(['cidr', 'except'], ['cidr'])
    if (!b?.cidr) return null
    const cidr = readCidr(b.cidr)
    const except = b.except ? (b.except.list() ?? []).map(readCidr) : []
    return cidr === null || except.includes(null) ? null : { kind: 'cidr', cidr, except: except as string[] }
  }
  if (!f.podSelector && !f.namespaceSelector) return n.fail('a peer needs podSelector, namespaceSelector or ipBlock')
  const pods = f.podSelector ? readLabelSelector(f.podSelector) : []
  const namespaces = f.namespaceSelector ? readLabelSelector(f.namespaceSelector) : null
  if (pods === null || (f.namespaceSelector && namespaces === null)) return null
  // No namespaceSelector: the policy's own namespace. An empty one: every namespace.
  const requirements =
    namespaces === null ? restrictToNamespace(pods, ns) : [...pods, ...namespaces.map(namespaceRequirement)]
  return { kind: 'labels', requirements }
}

function readSection(n: YNode, dir: Direction, ns: string): PeerRuleSpec | null {
  const peerKey = dir === 'ingress' ? 'from' : 'to'
  const f = n.fields([peerKey, 'ports'])
  if (!f) return null
  let peers: SelectorSpec[] | null = null
  const peerNodes = f[peerKey]?.optionalList()
  if (peerNodes === null) return null
  if (peerNodes && peerNodes.length > 0) {
    const read = peerNodes.map((p) => readPeer(p, ns))
    if (read.includes(null)) return null
    peers = read as SelectorSpec[]
  }
  let toPorts: PeerRuleSpec['toPorts'] = null
  const portNodes = f.ports?.optionalList()
  if (portNodes === null) return null
  if (portNodes && portNodes.length > 0) {
    const ports = portNodes.map((p) => readPort(p, 'TCP'))
    if (ports.includes(null)) return null
    toPorts = [{ ports: ports as NonNullable<(typeof ports)[number]>[], l7: null }]
  }
  return { peers, toPorts }
}

export function readK8sRules(
  f: Record<string, YNode>,
  doc: YNode,
  header: DocumentHeader,
  file: string,
): RuleSpec[] | null {
  const ns = header.namespace ?? 'default'
  if (!f.spec) return doc.fail("missing required field 'spec'")
  const s = f.spec.fields(['podSelector', 'policyTypes', 'ingress', 'egress'], ['podSelector'])
  if (!s?.podSelector) return null
  const subject = readLabelSelector(s.podSelector)
  let ok = subject !== null
  let types: string[] = ['Ingress', ...(s.egress ? ['Egress'] : [])]
  if (s.policyTypes) {
    const list = (s.policyTypes.list() ?? []).map((t) => {
      const v = t.string()
      if (v !== null && v !== 'Ingress' && v !== 'Egress')
        return t.fail(`unknown policy type '${v}'; expected Ingress or Egress`)
      return v
    })
    if (list.includes(null)) ok = false
    else types = list as string[]
  }
  const sections: Record<Direction, PeerRuleSpec[]> = { ingress: [], egress: [] }
  for (const dir of ['ingress', 'egress'] as const) {
    const items = s[dir] ? s[dir]!.optionalList() : []
    if (items === null) ok = false
    for (const item of items ?? []) {
      const r = readSection(item, dir, ns)
      if (r === null) ok = false
      else sections[dir].push(r)
    }
  }
  if (!ok) return null
  return [
    {
      id: `NetworkPolicy/${ns}/${header.name}`,
      file,
      line: doc.line,
      subject: restrictToNamespace(subject!, ns),
      ingress: sections.ingress,
      ingressDeny: [],
      egress: sections.egress,
      egressDeny: [],
      defaultDeny: { ingress: types.includes('Ingress'), egress: types.includes('Egress') },
    },
  ]
}
