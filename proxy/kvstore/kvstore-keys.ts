// Where a cluster's state lives in etcd, after Cilium's kvstore layout, under one prefix:
//
//   <prefix>/state/identities/v1/id/<id>              the identity's labels (canonical); create-only
//   <prefix>/state/identities/v1/labels/<labels>      its id; create-only: two nodes asking for new
//                                                     labels at once get one number (where Cilium
//                                                     takes a lock on the labels' key)
//   <prefix>/state/identities/v1/value/<labels>/<node>  the id, under the node's lease: in use there
//   <prefix>/state/ip/v1/default/<ip>                 an endpoint's address: JSON, under its node's lease
//   <prefix>/state/nodes/v1/default/<node>            a node: JSON, under its lease
//   <prefix>/policy/v1/<name>                         a policy document (YAML), cluster-wide
//
// Pure: names and values in and out, every value checked (a bad one is reported, never used).

import { isIPv4 } from 'node:net'
import { FIRST_CLUSTER_IDENTITY, LAST_CLUSTER_IDENTITY } from '../../policy/identity.js'
import { LabelSet } from '../../policy/labels.js'

const NODE_NAME = /^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/
const POLICY_NAME = /^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,251}[a-zA-Z0-9])?$/

export const NODE_NAME_RULE = '1-63 characters from a-z, 0-9, dot and dash, starting and ending with a letter or digit'
export const POLICY_NAME_RULE = '1-253 characters from letters, digits, dot, dash and underscore'

export function isNodeName(s: string): boolean {
  return NODE_NAME.test(s)
}

export function isPolicyName(s: string): boolean {
  return POLICY_NAME.test(s)
}

/** What a key under the prefix stands for (null: not ours to read). */
export type ClusterKey =
  | { kind: 'identity'; id: number }
  | { kind: 'labels'; labels: string }
  | { kind: 'user'; labels: string; node: string }
  | { kind: 'ip'; ip: string }
  | { kind: 'node'; node: string }
  | { kind: 'policy'; name: string }

/** An endpoint's address as a node publishes it (Cilium's ipcache entry, with the node's name). */
export interface IpEntry {
  IP: string
  ID: number
  HostIP: string
  Node: string
  /** The endpoint's name on its node (what `endpoint list` shows). */
  Name: string
}

/** A node as it publishes itself. */
export interface NodeEntry {
  Name: string
  IPAddresses: Array<{ Type: 'InternalIP'; IP: string }>
  /** The revision of the cluster's policy documents this node enforces (0: none yet). */
  PolicyRevision: number
  Endpoints: number
  /** When this agent started (ISO time): a restart shows as a new value. */
  StartedAt: string
}

export function isClusterIdentity(n: number): boolean {
  return Number.isInteger(n) && n >= FIRST_CLUSTER_IDENTITY && n <= LAST_CLUSTER_IDENTITY
}

export class KvstoreKeys {
  readonly identities: string
  readonly ids: string
  readonly labelKeys: string
  readonly users: string
  readonly ips: string
  readonly nodes: string
  readonly policies: string

  constructor(readonly prefix: string) {
    const state = `${prefix}/state`
    this.identities = `${state}/identities/v1/`
    this.ids = `${this.identities}id/`
    this.labelKeys = `${this.identities}labels/`
    this.users = `${this.identities}value/`
    this.ips = `${state}/ip/v1/default/`
    this.nodes = `${state}/nodes/v1/default/`
    this.policies = `${prefix}/policy/v1/`
  }

  /** Everything the agents watch: one prefix, so one revision orders all of it. */
  get all(): string {
    return `${this.prefix}/`
  }

  id(id: number): string {
    return `${this.ids}${id}`
  }

  labels(canonical: string): string {
    return `${this.labelKeys}${canonical}`
  }

  /** The keys of the nodes that use these labels' identity. */
  usersOf(canonical: string): string {
    return `${this.users}${canonical}/`
  }

  user(canonical: string, node: string): string {
    return `${this.usersOf(canonical)}${node}`
  }

  ip(ip: string): string {
    return `${this.ips}${ip}`
  }

  node(name: string): string {
    return `${this.nodes}${name}`
  }

  policy(name: string): string {
    return `${this.policies}${name}`
  }

  parse(key: string): ClusterKey | null {
    if (key.startsWith(this.ids)) {
      const id = Number(key.slice(this.ids.length))
      return isClusterIdentity(id) ? { kind: 'identity', id } : null
    }
    if (key.startsWith(this.labelKeys)) return { kind: 'labels', labels: key.slice(this.labelKeys.length) }
    if (key.startsWith(this.users)) {
      // Labels may hold '/', a node name never does: the node is the last part.
      const rest = key.slice(this.users.length)
      const slash = rest.lastIndexOf('/')
      const node = rest.slice(slash + 1)
      return slash > 0 && isNodeName(node) ? { kind: 'user', labels: rest.slice(0, slash), node } : null
    }
    if (key.startsWith(this.ips)) {
      const ip = key.slice(this.ips.length)
      return isIPv4(ip) ? { kind: 'ip', ip } : null
    }
    if (key.startsWith(this.nodes)) {
      const node = key.slice(this.nodes.length)
      return isNodeName(node) ? { kind: 'node', node } : null
    }
    if (key.startsWith(this.policies)) {
      const name = key.slice(this.policies.length)
      return isPolicyName(name) ? { kind: 'policy', name } : null
    }
    return null
  }
}

/** An identity's labels from its `id/` key's value; a string saying what is wrong, if it is. */
export function decodeLabels(value: string): LabelSet | string {
  const set = LabelSet.fromCanonical(value)
  if (set === null) return `'${value}' is not a list of labels`
  if (set.canonical !== value) return `'${value}' is not in canonical order`
  return set
}

function object(value: string): Record<string, unknown> | string {
  try {
    const v = JSON.parse(value) as unknown
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : 'not a JSON object'
  } catch (e) {
    return `not JSON (${(e as Error).message})`
  }
}

export function decodeIpEntry(value: string, ip: string): IpEntry | string {
  const o = object(value)
  if (typeof o === 'string') return o
  if (o.IP !== ip) return `IP ${JSON.stringify(o.IP)} is not the key's ${ip}`
  if (typeof o.ID !== 'number' || !isClusterIdentity(o.ID))
    return `ID ${JSON.stringify(o.ID)} is not a cluster identity (${FIRST_CLUSTER_IDENTITY}-${LAST_CLUSTER_IDENTITY})`
  if (typeof o.HostIP !== 'string' || !isIPv4(o.HostIP))
    return `HostIP ${JSON.stringify(o.HostIP)} is not an IPv4 address`
  if (typeof o.Node !== 'string' || !isNodeName(o.Node)) return `Node ${JSON.stringify(o.Node)} is not a node name`
  if (typeof o.Name !== 'string') return `Name ${JSON.stringify(o.Name)} is not a string`
  return { IP: ip, ID: o.ID, HostIP: o.HostIP, Node: o.Node, Name: o.Name }
}

export function decodeNodeEntry(value: string, node: string): NodeEntry | string {
  const o = object(value)
  if (typeof o === 'string') return o
  if (o.Name !== node) return `Name ${JSON.stringify(o.Name)} is not the key's ${node}`
  const addrs = o.IPAddresses
  if (
    !Array.isArray(addrs) ||
    !addrs.every(
      (a) =>
        typeof a === 'object' &&
        a !== null &&
        (a as { Type?: unknown }).Type === 'InternalIP' &&
        isIPv4(String((a as { IP?: unknown }).IP)),
    )
  ) {
    return 'IPAddresses is not a list of {Type: InternalIP, IP}'
  }
  if (typeof o.PolicyRevision !== 'number' || !Number.isInteger(o.PolicyRevision) || o.PolicyRevision < 0)
    return 'PolicyRevision is not a revision'
  if (typeof o.Endpoints !== 'number' || !Number.isInteger(o.Endpoints) || o.Endpoints < 0)
    return 'Endpoints is not a count'
  if (typeof o.StartedAt !== 'string') return 'StartedAt is not a time'
  return {
    Name: node,
    IPAddresses: addrs as NodeEntry['IPAddresses'],
    PolicyRevision: o.PolicyRevision,
    Endpoints: o.Endpoints,
    StartedAt: o.StartedAt,
  }
}
