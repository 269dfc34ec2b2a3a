// The lab's shape as data: which hosts exist, their addresses, labels and services, and how
// namespaces and interfaces are named. Pure: lab.ts turns it into namespaces and veths.
//
// Every host hangs off the "node" namespace by one veth pair, Cilium style: the host has /32
// addresses and a default route via the node's gateway address, which sits on every node-side
// veth. So pods reach servers only by being forwarded through the node, where the agent's BPF
// programs and proxy live.

import { isValidLabName } from '../proxy/agent/lab-name.js'
import { LabError } from './errors.js'

/** Namespaces of every lab start with this; `lab down` finds leftovers by it. */
export const NETNS_PREFIX = 'l7lab-'

/** The node's address on every host-facing veth; each host's default gateway. */
export const GATEWAY_IP = '198.18.0.1'

/** Interface name of a host's end of its veth. */
export const HOST_IFNAME = 'eth0'

export type HostRole = 'pod' | 'server' | 'external'

export type ServiceKind = 'http' | 'grpc' | 'dns'

export interface LabService {
  kind: ServiceKind
  port: number
}

export interface LabHost {
  /** Short name, [a-z0-9]+, also the DNS label under the `empire` zone for endpoints. */
  name: string
  /**
   * `pod` and `server` are endpoints of the node (they get identities from their labels);
   * `external` stands for the world outside the cluster (addresses that DNS names resolve to).
   */
  role: HostRole
  /** The first one is the host's primary address. All are /32. */
  addresses: string[]
  /** Prefixes routed to the host whole, every address of them its own (a local route). */
  ranges?: string[]
  labels: Record<string, string>
  services: LabService[]
}

export interface DnsRecord {
  name: string
  type: 'A' | 'CNAME'
  ttl: number
  data: string
}

export const LAB_HOSTS: readonly LabHost[] = Object.freeze<LabHost[]>([
  {
    name: 'tiefighter',
    role: 'pod',
    addresses: ['198.18.1.10'],
    labels: { org: 'empire', class: 'tiefighter', 'io.kubernetes.pod.namespace': 'default' },
    services: [],
  },
  {
    name: 'xwing',
    role: 'pod',
    addresses: ['198.18.1.20'],
    labels: { org: 'alliance', class: 'xwing', 'io.kubernetes.pod.namespace': 'default' },
    services: [],
  },
  {
    name: 'deathstar',
    role: 'server',
    addresses: ['198.18.2.10'],
    labels: { org: 'empire', class: 'deathstar', 'io.kubernetes.pod.namespace': 'default' },
    services: [{ kind: 'http', port: 80 }],
  },
  {
    name: 'grpc',
    role: 'server',
    addresses: ['198.18.2.20'],
    labels: { org: 'empire', class: 'grpc', 'io.kubernetes.pod.namespace': 'default' },
    services: [{ kind: 'grpc', port: 50051 }],
  },
  {
    name: 'dns',
    role: 'server',
    addresses: ['198.18.2.53'],
    labels: { 'k8s-app': 'kube-dns', 'io.kubernetes.pod.namespace': 'kube-system' },
    services: [{ kind: 'dns', port: 53 }],
  },
  {
    name: 'world',
    role: 'external',
    addresses: ['192.0.2.3', '192.0.2.4', '192.0.2.5', '203.0.113.7'],
    ranges: ['198.19.64.0/18'],
    labels: {},
    services: [{ kind: 'http', port: 80 }],
  },
])

/**
 * Where generated names point (lab/servers/name-generator.ts): the world's range, 16384
 * addresses, each answering as the world does.
 */
export const GENERATED_NAMES = { zone: 'scale', range: '198.19.64.0/18', port: 5353 } as const

/** Search domain of every host's resolver: `deathstar` means `deathstar.empire`. */
export const SEARCH_DOMAIN = 'empire'

/**
 * What the lab DNS server answers. TTLs are real: `speeder.empire` is short on purpose so that
 * FQDN expiry can be watched in seconds. Every other name gets REFUSED; nothing is recursed.
 */
export const DNS_RECORDS: readonly DnsRecord[] = Object.freeze<DnsRecord[]>([
  { name: 'deathstar.empire', type: 'A', ttl: 300, data: '198.18.2.10' },
  { name: 'grpc.empire', type: 'A', ttl: 300, data: '198.18.2.20' },
  { name: 'dns.empire', type: 'A', ttl: 300, data: '198.18.2.53' },
  { name: 'cantina.empire', type: 'A', ttl: 60, data: '192.0.2.3' },
  { name: 'cantina.empire', type: 'A', ttl: 60, data: '192.0.2.4' },
  { name: 'www.cantina.empire', type: 'CNAME', ttl: 60, data: 'cantina.empire' },
  { name: 'speeder.empire', type: 'A', ttl: 3, data: '192.0.2.5' },
  { name: 'hoth.alliance', type: 'A', ttl: 60, data: '203.0.113.7' },
])

/** Zones the DNS server is authoritative for (static: unknown names inside get NXDOMAIN). */
export const DNS_ZONES: readonly string[] = Object.freeze(['empire', 'alliance'])

export { isValidLabName }

export function nodeNetns(lab: string): string {
  return `${NETNS_PREFIX}${lab}-node`
}

// ---- a lab of several nodes (lab up --nodes N) ------------------------------------------------
//
// Node k has its own namespace (the first keeps the single node's name), its pods' CIDR
// 198.18.k.0/24, and 198.19.0.k on the underlay: a bridge in a namespace of its own, where the
// lab's etcd listens too. Routes between nodes are native (a pod's address is its source across
// nodes). The demo's pods are spread so that every flow crosses a node: the pods on node 1
// (xwing on node 3 when there is one), the servers on node 2, the outside world off node 1.

export const MAX_LAB_NODES = 8

/** The underlay's namespace (as a host name: `l7lab-<lab>-underlay`). */
export const UNDERLAY_HOST = 'underlay'

/** A node's interface on the underlay. */
export const UNDERLAY_IFNAME = 'ul0'

export const UNDERLAY_PREFIX_LEN = 24

export const ETCD_ADDRESS = '198.19.0.254'
export const ETCD_CLIENT_PORT = 2379
export const ETCD_PEER_PORT = 2380

export function etcdClientUrl(): string {
  return `http://${ETCD_ADDRESS}:${ETCD_CLIENT_PORT}`
}

/** Node k's address on the underlay. */
export function nodeUnderlayAddress(k: number): string {
  return `198.19.0.${k}`
}

/** The pods' CIDR of node k (routed to it from the others). */
export function podCidr(k: number): string {
  return `198.18.${k}.0/24`
}

/** Node k's name in the cluster (its agent's kvstore node name). */
export function clusterNodeName(k: number): string {
  return `node${k}`
}

/** Node k's namespace; the first is the single node's. */
export function nodeNetnsOf(lab: string, k: number): string {
  return k === 1 ? nodeNetns(lab) : `${NETNS_PREFIX}${lab}-node${k}`
}

export function underlayNetns(lab: string): string {
  return hostNetns(lab, UNDERLAY_HOST)
}

/** A lab host and the node it hangs off. */
export interface PlacedHost extends LabHost {
  node: number
}

/** The lab's hosts on `nodes` nodes, each with its node (and, moved to another node, its address there). */
export function labHosts(nodes = 1): PlacedHost[] {
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_LAB_NODES)
    throw new LabError('EBADNAME', `a lab has 1 to ${MAX_LAB_NODES} nodes, not ${nodes}`)
  return LAB_HOSTS.map((h): PlacedHost => {
    if (nodes === 1 || h.role === 'external') return { ...h, node: 1 }
    if (h.role === 'server') return { ...h, node: 2 }
    if (h.name === 'xwing' && nodes >= 3) return { ...h, node: 3, addresses: ['198.18.3.20'] }
    return { ...h, node: 1 }
  })
}

/** The endpoints on node `k` of a lab of `nodes` nodes (ids as labEndpoints() numbers them). */
export function labEndpointsOn(nodes: number, k: number): LabEndpoint[] {
  const placed = labHosts(nodes)
  return labEndpoints()
    .map((e) => ({ e, h: placed.find((h) => h.name === e.host)! }))
    .filter(({ h }) => h.node === k)
    .map(({ e, h }) => ({ ...e, ips: h.addresses }))
}

/**
 * The lab's cgroup2 group (a directory under the cgroup2 root): its servers run in it, and in
 * sockmap mode the node's agent and the benchmarks' clients join it, as a node's pods and agent
 * share the cgroup sock_ops watches.
 */
export function labCgroupName(lab: string): string {
  return `${NETNS_PREFIX}${lab}`
}

export function hostNetns(lab: string, host: string): string {
  return `${NETNS_PREFIX}${lab}-${host}`
}

/** Node-side interface of a host's veth; at most 15 characters (IFNAMSIZ - 1). */
export function nodeIfname(host: string): string {
  return `lxc-${host}`
}

/** Splits a namespace name made by nodeNetns/hostNetns; null for anything else. */
export function parseNetns(ns: string): { lab: string; host: string } | null {
  if (!ns.startsWith(NETNS_PREFIX)) return null
  const rest = ns.slice(NETNS_PREFIX.length).split('-')
  if (rest.length !== 2 || !isValidLabName(rest[0]!) || !/^[a-z0-9]+$/.test(rest[1]!)) return null
  return { lab: rest[0]!, host: rest[1]! }
}

export function findHost(name: string): LabHost {
  const host = LAB_HOSTS.find((h) => h.name === name)
  if (!host)
    throw new LabError('EHOST', `no lab host named '${name}' (hosts: ${LAB_HOSTS.map((h) => h.name).join(', ')})`)
  return host
}

/** Text of /etc/resolv.conf for every lab host (ip netns exec bind-mounts /etc/netns/NS/). */
export function resolvConf(): string {
  const dns = findHost('dns')
  return `search ${SEARCH_DOMAIN}\nnameserver ${dns.addresses[0]}\noptions ndots:1 timeout:1 attempts:2\n`
}

export interface LabEndpoint {
  /** Stable endpoint id: the host's position among the lab's endpoints, from 1. */
  id: number
  host: string
  labels: Record<string, string>
  ips: string[]
}

/** The lab's endpoints (pods and servers, not the outside world) as the agent registers them. */
export function labEndpoints(): LabEndpoint[] {
  return LAB_HOSTS.filter((h) => h.role !== 'external').map((h, i) => ({
    id: i + 1,
    host: h.name,
    labels: h.labels,
    ips: h.addresses,
  }))
}

export function labEndpointId(host: string): number {
  const ep = labEndpoints().find((e) => e.host === host)
  if (!ep) throw new LabError('EHOST', `lab host '${host}' is not an endpoint`)
  return ep.id
}
