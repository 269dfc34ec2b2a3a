// The normalized policy model every document kind (CiliumNetworkPolicy, its clusterwide form,
// Kubernetes NetworkPolicy) is read into. Selectors here are plain data; the selector cache
// turns them into live identity sets.

export type Direction = 'ingress' | 'egress'
export const DIRECTIONS: readonly Direction[] = ['ingress', 'egress']

export type Protocol = 'TCP' | 'UDP'
export const IPPROTO: Record<Protocol, number> = { TCP: 6, UDP: 17 }

export type LabelOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'

export interface LabelRequirement {
  /** Label source (`k8s`, `reserved`, ...) or `any`. */
  source: string
  key: string
  op: LabelOperator
  values: readonly string[]
}

export const ENTITIES = [
  'all',
  'world',
  'cluster',
  'host',
  'remote-node',
  'health',
  'init',
  'unmanaged',
  'kube-apiserver',
] as const
export type Entity = (typeof ENTITIES)[number]

export type SelectorSpec =
  /** Endpoints whose labels meet every requirement; no requirement: every cluster identity. */
  | { kind: 'labels'; requirements: readonly LabelRequirement[] }
  /** Addresses inside `cidr` and outside every `except`. */
  | { kind: 'cidr'; cidr: string; except: readonly string[] }
  | { kind: 'fqdn'; matchName?: string; matchPattern?: string }
  | { kind: 'entity'; entity: Entity }

export interface PortSpec {
  /** 0 with endPort 65535: every port. */
  port: number
  endPort: number
  protocols: readonly Protocol[]
}

export type HeaderMismatchAction = 'LOG' | 'ADD' | 'DELETE' | 'REPLACE'

export interface HeaderMatchSpec {
  name: string
  /** Absent: the header must be present, any value. */
  value?: string
  mismatch?: HeaderMismatchAction
}

export interface HttpRuleSpec {
  method?: string
  path?: string
  host?: string
  headers: readonly HeaderMatchSpec[]
  headerMatches: readonly HeaderMatchSpec[]
}

export interface DnsRuleSpec {
  matchName?: string
  matchPattern?: string
}

/** One `serverNames` entry: a TLS server name or pattern (cilium-envoy's: `*` within a label, `**` for labels). */
export interface TlsRuleSpec {
  serverName: string
}

/**
 * TLS interception on a port (Cilium's terminatingTLS with originatingTLS): the proxy terminates
 * TLS with a leaf from its local CA, applies the HTTP rules, and opens TLS to the server, verified
 * against `trustedCA` (a PEM bundle file) or the system's trust store when null.
 */
export interface TlsInterceptSpec {
  trustedCA: string | null
}

export type L7Spec =
  | { kind: 'http'; rules: readonly HttpRuleSpec[]; intercept?: TlsInterceptSpec }
  | { kind: 'dns'; rules: readonly DnsRuleSpec[] }
  | { kind: 'tls'; rules: readonly TlsRuleSpec[] }

export interface PortRuleSpec {
  ports: readonly PortSpec[]
  /** null: every request on these ports (L4 only). */
  l7: L7Spec | null
}

export interface PeerRuleSpec {
  /** null: every peer. */
  peers: readonly SelectorSpec[] | null
  /** null: every port and protocol (L3 only). */
  toPorts: readonly PortRuleSpec[] | null
}

export interface RuleSpec {
  /** `namespace/name` (or `name` for clusterwide), plus `#n` when a document has several specs. */
  id: string
  file: string
  line: number
  /** Which endpoints the rule applies to. */
  subject: readonly LabelRequirement[]
  ingress: readonly PeerRuleSpec[]
  ingressDeny: readonly PeerRuleSpec[]
  egress: readonly PeerRuleSpec[]
  egressDeny: readonly PeerRuleSpec[]
  /** Explicit default-deny per direction; undefined: on when the rule has rules in that direction. */
  defaultDeny: { ingress?: boolean; egress?: boolean }
}

/** Label key that carries a pod's namespace, as Cilium names it. */
export const NAMESPACE_LABEL = 'io.kubernetes.pod.namespace'
