// The agent's configuration: defaults, then a YAML file, then environment variables, then
// command-line flags, each overriding the one before. A file is checked whole: every problem is
// reported with its line, column and field, and a bad file is refused (nothing starts).
//
//   lab: main                      # run on that lab's node; none: on this host, in the namespace
//                                  # the agent is started in (paths below then without -main)
//   labNode: 1                     # which node of a lab of several (lab up --nodes N); paths
//                                  # below then end in -main-node2 and so on, metrics on 9970+N
//   mode: sk-assign                # tproxy | sk-assign | dnat | sockmap
//   policyDirectory: /etc/l7proxy/policies   # a lab's default: the example policies
//   endpointsFile: /etc/l7proxy/endpoints.yaml   # the node's endpoints (watched); a lab's default: its pods
//   interfaces: [eth1]             # host-side interfaces to judge traffic at with no endpoint behind them
//   proxy: { httpPort: 15001, dnsPort: 15053, threads: 0, address: 127.0.0.1 }
//                                  # HTTP threads (0: one per core); address: where the proxies
//                                  # listen (dnat: a host address the endpoints' packets reach)
//   bpffs: /run/l7proxy/agent-bpffs-main
//   stateDirectory: /run/l7proxy/state-main   # the FQDN cache, kept across restarts
//   caDirectory: /var/lib/l7proxy/ca          # the local CA for TLS interception (l7proxy certs init)
//   dns: { rejectCode: REFUSED, minTtlSeconds: 3600, maxIpsPerName: 1000, maxDelayMs: 100, threads: 1,
//          idleConnectionGraceSeconds: 0, maxDeferredConnectionDeletes: 10000 }
//                                  # toFQDNs: an expired address a connection still uses stays while it
//                                  # lives and the grace after; past the maximum, those used longest ago go
//   maps: { ipcacheEntries: 65536, policyEntries: 65536 }   # the node's ipcache and policy map
//                                  # sizes; an entry past them is refused (docs: toFQDNs at scale)
//   cni: { labelsCommand: [podman, container, inspect, --format, '{{json .Config.Labels}}'] }
//                                  # how a CNI-added container's labels are asked (its id last)
//   overload:                      # one source must not starve the others (docs: overload)
//     connections: { perSource: 8192, perIdentity: 32768, perNode: 0 }   # perNode 0: from the file limit
//     streams: { perSource: 4096, perIdentity: 16384 }                     # HTTP/2, over all connections
//     dnsQueries: { perSecondPerSource: 2000, burst: 2000 }                # 0: no limit
//     pressure: { connectionsPercent: 80, memoryMB: 1024, headersTimeoutMs: 2000, idleTimeoutMs: 5000 }
//     fileLimit: 0                 # open files the agent raises its limit to; 0: what the host allows
//   kvstore:                       # a cluster: identities, endpoints and policy shared through etcd
//     endpoints: [http://198.19.0.254:2379]   # etcd's client URLs (https:// with tls)
//     prefix: l7proxy              # every key under it
//     tls: { ca: /etc/l7proxy/etcd/ca.pem, cert: /etc/l7proxy/etcd/node.pem, key: /etc/l7proxy/etcd/node-key.pem,
//            serverName: etcd.example }   # the name etcd's certificate is for, when endpoints are addresses
//     node: node1                  # this node's name (default: the host name)
//     nodeAddress: 198.19.0.1      # where the others reach it (default: its first non-loopback IPv4)
//     leaseTtlSeconds: 15          # a dead node's pods leave the others' view after at most this
//     identityGcSeconds: 60        # how often identities no node uses are collected
//   handover: { drainSeconds: 30 } # an agent taken over from (agent --takeover, SIGHUP) finishes
//                                  # what it has in flight for at most this, then exits
//   logging: { level: info }       # trace | debug | info | warn | error | fatal
//   admin: { socket: /run/l7proxy/agent-main.sock, metrics: 127.0.0.1:9962 }   # metrics: off for none

import { hostname, networkInterfaces } from 'node:os'
import { DEFAULT_CA_DIR } from '../../certs/local-ca.js'
import { INTERFACE_NAME_RULE, isInterfaceName } from '../../lib/interface-name.js'
import { L7ProxyError } from '../../lib/l7proxy-error.js'
import { projectRoot } from '../../lib/project-root.js'
import { parseIPv4 } from '../../policy/cidr.js'
import { formatIssue, type PolicyIssue } from '../../policy/errors.js'
import { readDocument, type YNode } from '../../policy/yaml-reader.js'
import { DEFAULT_MAP_SIZES, MAP_SIZE_RANGE, type MapSizes } from '../../redirect-bpf/map-sizes.js'
import { REDIRECT_MODES, type RedirectMode } from '../../redirect-bpf/modes/redirect-mode.js'
import type { KvstoreSettings } from '../kvstore/cluster-node.js'
import { isNodeName, NODE_NAME_RULE } from '../kvstore/kvstore-keys.js'
import { DEFAULT_OVERLOAD, type OverloadSettings } from '../overload/overload-settings.js'
import { agentSocketPath } from './admin-socket.js'
import { isValidLabName } from './lab-name.js'
import { PODMAN_LABELS_COMMAND } from './runtime-labels.js'

/** Where the proxies listen unless configured otherwise (the datapath steers there). */
export const DEFAULT_PROXY_PORTS = { http: 15001, dns: 15053 } as const

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

export interface AgentConfig {
  /** The lab whose node the agent runs on; null: this host. */
  lab: string | null
  /** Which node of the lab (1 unless it has several). */
  labNode: number
  mode: RedirectMode
  policyDirectory: string
  /** The node's endpoints from this file (endpoints-file.ts), or null: a lab's pods, or none. */
  endpointsFile: string | null
  /** Host-side interfaces the programs go on with no endpoint behind them. */
  interfaces: string[]
  /** address: where the proxies listen; null: loopback (a lab in dnat mode: its node's address). */
  proxy: { httpPort: number; dnsPort: number; threads: number; address: string | null }
  bpffs: string
  stateDirectory: string
  caDirectory: string
  /**
   * maxDelayMs: how long a DNS thread holds an answer for the maps to allow what it taught;
   * threads: how many serve UDP (1, as dnsdist and unbound default to: one serves over 100k
   * queries/s, and a second costs each query more CPU than it saves unless cores sit idle).
   */
  dns: {
    rejectCode: RejectCode
    minTtlSeconds: number
    maxIpsPerName: number
    maxDelayMs: number
    threads: number
    idleConnectionGraceSeconds: number
    maxDeferredConnectionDeletes: number
  }
  /** labelsCommand: run with a CNI-added container's id last, prints its labels as JSON. */
  cni: { labelsCommand: string[] }
  overload: OverloadSettings
  /** The cluster's store; null: a node on its own. */
  kvstore: KvstoreSettings | null
  /** Entries the node's ipcache and policy map hold (set when the maps are made). */
  maps: MapSizes
  handover: { drainSeconds: number }
  logging: { level: LogLevel }
  /** metrics: where Prometheus scrapes /metrics (address:port, in the namespace the agent is started in), or null. */
  admin: { socket: string; metrics: { address: string; port: number } | null }
}

export const REJECT_CODES = ['REFUSED', 'NXDOMAIN'] as const
export type RejectCode = (typeof REJECT_CODES)[number]

/** What a file, the environment or flags may set; the rest comes from the layer below. */
export interface ConfigLayer {
  lab?: string
  labNode?: number
  mode?: RedirectMode
  policyDirectory?: string
  endpointsFile?: string
  interfaces?: string[]
  proxy?: { httpPort?: number; dnsPort?: number; threads?: number; address?: string }
  bpffs?: string
  stateDirectory?: string
  caDirectory?: string
  dns?: Partial<AgentConfig['dns']>
  cni?: { labelsCommand?: string[] }
  overload?: {
    [K in keyof OverloadSettings]?: OverloadSettings[K] extends number ? number : Partial<OverloadSettings[K]>
  }
  kvstore?: Partial<KvstoreSettings> & Pick<KvstoreSettings, 'endpoints'>
  maps?: Partial<MapSizes>
  handover?: { drainSeconds?: number }
  logging?: { level?: LogLevel }
  admin?: { socket?: string; metrics?: { address: string; port: number } | null }
}

export class ConfigError extends L7ProxyError {
  constructor(readonly issues: readonly PolicyIssue[]) {
    super('ECONFIG', issues.map(formatIssue).join('\n'))
  }
}

/** The built-in default: on this host (lab null), or on the lab `lab` with the example policies. */
export function defaultConfig(lab: string | null = null, labNode = 1): AgentConfig {
  const suffix = lab === null ? '' : `-${lab}${labNode > 1 ? `-node${labNode}` : ''}`
  return {
    lab,
    labNode,
    mode: 'sk-assign',
    policyDirectory: lab === null ? '/etc/l7proxy/policies' : `${projectRoot()}/policy/examples`,
    endpointsFile: null,
    interfaces: [],
    proxy: { httpPort: DEFAULT_PROXY_PORTS.http, dnsPort: DEFAULT_PROXY_PORTS.dns, threads: 0, address: null },
    bpffs: `/run/l7proxy/agent-bpffs${suffix}`,
    // Like Cilium's /var/run/cilium: kept across agent restarts, not across reboots.
    stateDirectory: `/run/l7proxy/state${suffix}`,
    caDirectory: DEFAULT_CA_DIR,
    // Cilium's defaults: --tofqdns-min-ttl, --tofqdns-endpoint-max-ip-per-hostname (1000 since
    // 1.17), --tofqdns-proxy-response-max-delay, --tofqdns-idle-connection-grace-period,
    // --tofqdns-max-deferred-connection-deletes.
    dns: {
      rejectCode: 'REFUSED',
      minTtlSeconds: 3600,
      maxIpsPerName: 1000,
      maxDelayMs: 100,
      threads: 1,
      idleConnectionGraceSeconds: 0,
      maxDeferredConnectionDeletes: 10_000,
    },
    maps: { ...DEFAULT_MAP_SIZES },
    cni: { labelsCommand: [...PODMAN_LABELS_COMMAND] },
    overload: structuredClone(DEFAULT_OVERLOAD),
    kvstore: null,
    handover: { drainSeconds: 30 },
    logging: { level: 'info' },
    // Next to Cilium's agent (9962), as Envoy's (9964) is.
    // Another node of a lab scrapes beside the first: 9972 for node 2, and so on.
    admin: {
      socket: agentSocketPath(lab === null ? null : `${lab}${labNode > 1 ? `-node${labNode}` : ''}`),
      metrics: { address: '127.0.0.1', port: labNode > 1 ? 9970 + labNode : 9962 },
    },
  }
}

function oneOf<T extends string>(n: YNode, allowed: readonly T[], what: string): T | null {
  const s = n.string()
  if (s === null) return null
  return (allowed as readonly string[]).includes(s)
    ? (s as T)
    : n.fail(`unknown ${what} '${s}'; expected one of: ${allowed.join(', ')}`)
}

function absolutePath(n: YNode): string | null {
  const s = n.string()
  if (s === null) return null
  return s.startsWith('/') ? s : n.fail(`'${s}' is not an absolute path`)
}

/** `ADDRESS:PORT` (IPv4; port 0: any free one) or `off`. */
function metricsAddress(n: YNode): { address: string; port: number } | null | undefined {
  const s = n.string()
  if (s === null) return undefined
  if (s === 'off') return null
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(s)
  if (!m || parseIPv4(m[1]!) === null || Number(m[2]) > 65535) {
    n.fail(`'${s}' is not ADDRESS:PORT (e.g. 127.0.0.1:9962) or off`)
    return undefined
  }
  return { address: m[1]!, port: Number(m[2]) }
}

/** Reads one layer from YAML text; every problem in it, or the layer. */
export function parseConfigText(text: string, file: string): ConfigLayer {
  const { root, ctx, syntax } = readDocument(text, file)
  if (syntax.length > 0) throw new ConfigError(syntax)
  const out: ConfigLayer = {}
  if (root === null) return out // an empty file: all defaults
  const f = root.fields([
    'lab',
    'labNode',
    'mode',
    'policyDirectory',
    'endpointsFile',
    'interfaces',
    'proxy',
    'bpffs',
    'stateDirectory',
    'caDirectory',
    'dns',
    'maps',
    'cni',
    'overload',
    'kvstore',
    'handover',
    'logging',
    'admin',
  ])
  if (f) {
    if (f.lab) {
      const lab = f.lab.string()
      if (lab !== null) {
        if (isValidLabName(lab)) out.lab = lab
        else f.lab.fail(`'${lab}' is not a lab name (1-16 characters from a-z and 0-9)`)
      }
    }
    if (f.labNode) out.labNode = f.labNode.integer(1, 8) ?? undefined
    if (f.mode) out.mode = oneOf(f.mode, REDIRECT_MODES, 'redirect mode') ?? undefined
    if (f.policyDirectory) out.policyDirectory = absolutePath(f.policyDirectory) ?? undefined
    if (f.endpointsFile) out.endpointsFile = absolutePath(f.endpointsFile) ?? undefined
    if (f.bpffs) out.bpffs = absolutePath(f.bpffs) ?? undefined
    if (f.stateDirectory) out.stateDirectory = absolutePath(f.stateDirectory) ?? undefined
    if (f.caDirectory) out.caDirectory = absolutePath(f.caDirectory) ?? undefined
    if (f.interfaces) {
      const names = f.interfaces.list()?.map((n) => {
        const name = n.string()
        return name === null || isInterfaceName(name)
          ? name
          : n.fail(`'${name}' is not an interface name (${INTERFACE_NAME_RULE})`)
      })
      if (names && !names.includes(null)) out.interfaces = names as string[]
    }
    const proxy = f.proxy?.fields(['httpPort', 'dnsPort', 'threads', 'address'])
    if (proxy) {
      out.proxy = {}
      if (proxy.address) {
        const a = proxy.address.string()
        if (a !== null) {
          if (parseIPv4(a) !== null) out.proxy.address = a
          else proxy.address.fail(`'${a}' is not an IPv4 address`)
        }
      }
      if (proxy.httpPort) out.proxy.httpPort = proxy.httpPort.integer(1, 65535) ?? undefined
      if (proxy.dnsPort) out.proxy.dnsPort = proxy.dnsPort.integer(1, 65535) ?? undefined
      if (proxy.threads) out.proxy.threads = proxy.threads.integer(0, 64) ?? undefined
      if (out.proxy.httpPort !== undefined && out.proxy.httpPort === out.proxy.dnsPort)
        proxy.dnsPort!.fail('the DNS proxy needs a port of its own')
    }
    const dns = f.dns?.fields([
      'rejectCode',
      'minTtlSeconds',
      'maxIpsPerName',
      'maxDelayMs',
      'threads',
      'idleConnectionGraceSeconds',
      'maxDeferredConnectionDeletes',
    ])
    if (dns) {
      out.dns = {}
      if (dns.rejectCode) out.dns.rejectCode = oneOf(dns.rejectCode, REJECT_CODES, 'reject code') ?? undefined
      if (dns.minTtlSeconds) out.dns.minTtlSeconds = dns.minTtlSeconds.integer(0, 604_800) ?? undefined
      if (dns.maxIpsPerName) out.dns.maxIpsPerName = dns.maxIpsPerName.integer(1, 10_000) ?? undefined
      if (dns.maxDelayMs) out.dns.maxDelayMs = dns.maxDelayMs.integer(1, 10_000) ?? undefined
      if (dns.threads) out.dns.threads = dns.threads.integer(1, 64) ?? undefined
      if (dns.idleConnectionGraceSeconds)
        out.dns.idleConnectionGraceSeconds = dns.idleConnectionGraceSeconds.integer(0, 86_400) ?? undefined
      if (dns.maxDeferredConnectionDeletes)
        out.dns.maxDeferredConnectionDeletes = dns.maxDeferredConnectionDeletes.integer(0, 1_000_000) ?? undefined
    }
    const cni = f.cni?.fields(['labelsCommand'])
    if (cni?.labelsCommand) {
      const argv = cni.labelsCommand.list()?.map((n) => n.string())
      if (argv && !argv.includes(null)) {
        if (argv.length === 0) cni.labelsCommand.fail('expected a command and its arguments')
        else out.cni = { labelsCommand: argv as string[] }
      }
    }
    if (f.overload) {
      const o = overloadLayer(f.overload)
      if (o) out.overload = o
    }
    if (f.kvstore) {
      const k = kvstoreLayer(f.kvstore)
      if (k) out.kvstore = k
    }
    const maps = f.maps?.fields(['ipcacheEntries', 'policyEntries'])
    if (maps) {
      out.maps = {}
      for (const k of ['ipcacheEntries', 'policyEntries'] as const)
        if (maps[k]) out.maps[k] = maps[k].integer(MAP_SIZE_RANGE.min, MAP_SIZE_RANGE.max) ?? undefined
    }
    const handover = f.handover?.fields(['drainSeconds'])
    if (handover?.drainSeconds) out.handover = { drainSeconds: handover.drainSeconds.integer(1, 3600) ?? undefined }
    const logging = f.logging?.fields(['level'])
    if (logging?.level) out.logging = { level: oneOf(logging.level, LOG_LEVELS, 'log level') ?? undefined }
    const admin = f.admin?.fields(['socket', 'metrics'])
    if (admin) {
      out.admin = {}
      if (admin.socket) out.admin.socket = absolutePath(admin.socket) ?? undefined
      if (admin.metrics) {
        const m = metricsAddress(admin.metrics)
        if (m !== undefined) out.admin.metrics = m
      }
    }
  }
  if (ctx.issues.length > 0) throw new ConfigError(ctx.issues)
  return out
}

/** Each overload field: its section, and the integers it may be. */
const OVERLOAD_FIELDS = {
  connections: { perSource: [0, 1 << 30], perIdentity: [0, 1 << 30], perNode: [0, 1 << 30] },
  streams: { perSource: [0, 1 << 30], perIdentity: [0, 1 << 30] },
  dnsQueries: { perSecondPerSource: [0, 10_000_000], burst: [1, 10_000_000] },
  pressure: {
    connectionsPercent: [1, 100],
    memoryMB: [16, 1 << 24],
    headersTimeoutMs: [10, 3_600_000],
    idleTimeoutMs: [10, 3_600_000],
  },
} as const

function overloadLayer(n: YNode): ConfigLayer['overload'] | null {
  const f = n.fields([...Object.keys(OVERLOAD_FIELDS), 'fileLimit'])
  if (!f) return null
  const out: Record<string, unknown> = {}
  for (const [section, ranges] of Object.entries(OVERLOAD_FIELDS)) {
    const s = f[section]?.fields(Object.keys(ranges))
    if (!s) continue
    const values: Record<string, number> = {}
    for (const [name, [min, max]] of Object.entries(ranges) as Array<[string, readonly [number, number]]>) {
      const v = s[name]?.integer(min, max)
      if (v !== undefined && v !== null) values[name] = v
    }
    out[section] = values
  }
  if (f.fileLimit) {
    const v = f.fileLimit.integer(0, 1 << 30)
    if (v !== null) out.fileLimit = v
  }
  return out as ConfigLayer['overload']
}

const KVSTORE_PREFIX = /^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/

function kvstoreLayer(n: YNode): ConfigLayer['kvstore'] | null {
  const f = n.fields(
    ['endpoints', 'prefix', 'tls', 'node', 'nodeAddress', 'leaseTtlSeconds', 'identityGcSeconds'],
    ['endpoints'],
  )
  if (!f?.endpoints) return null
  const tlsFields = f.tls?.fields(['ca', 'cert', 'key', 'serverName'], ['ca', 'cert', 'key'])
  const tls =
    tlsFields?.ca && tlsFields.cert && tlsFields.key
      ? { ca: absolutePath(tlsFields.ca), cert: absolutePath(tlsFields.cert), key: absolutePath(tlsFields.key) }
      : null
  const scheme = tls ? 'https' : 'http'
  const endpoints = f.endpoints.list()?.map((e) => {
    const url = e.string()
    if (url === null) return null
    let u: URL | null = null
    try {
      u = new URL(url)
    } catch {
      // reported below
    }
    if (u === null || !/^https?:$/.test(u.protocol) || u.port === '' || u.pathname !== '/' || url.endsWith('/'))
      return e.fail(`'${url}' is not an etcd client URL (${scheme}://ADDRESS:PORT)`)
    if (u.protocol !== `${scheme}:`)
      return e.fail(
        tls ? `'${url}': with tls, etcd is reached over https://` : `'${url}': https:// needs tls (ca, cert, key)`,
      )
    return url
  })
  if (endpoints?.length === 0) f.endpoints.fail('expected at least one etcd client URL')
  const out: NonNullable<ConfigLayer['kvstore']> = {
    endpoints: (endpoints ?? []).filter((e): e is string => e !== null),
  }
  if (f.prefix) {
    const p = f.prefix.string()
    if (p !== null) {
      if (KVSTORE_PREFIX.test(p)) out.prefix = p
      else f.prefix.fail(`'${p}' is not a key prefix (parts of letters, digits, '_' and '-' joined by '/')`)
    }
  }
  const serverName = tlsFields?.serverName?.string() ?? null
  if (tls?.ca && tls.cert && tls.key)
    out.tls = { ca: tls.ca, cert: tls.cert, key: tls.key, ...(serverName !== null ? { serverName } : {}) }
  if (f.node) {
    const name = f.node.string()
    if (name !== null) {
      if (isNodeName(name)) out.node = name
      else f.node.fail(`'${name}' is not a node name (${NODE_NAME_RULE})`)
    }
  }
  if (f.nodeAddress) {
    const a = f.nodeAddress.string()
    if (a !== null) {
      if (parseIPv4(a) !== null) out.nodeAddress = a
      else f.nodeAddress.fail(`'${a}' is not an IPv4 address`)
    }
  }
  if (f.leaseTtlSeconds) out.leaseTtlSeconds = f.leaseTtlSeconds.integer(2, 3600) ?? undefined
  if (f.identityGcSeconds) out.identityGcSeconds = f.identityGcSeconds.integer(1, 86_400) ?? undefined
  return out
}

/** This host's name as a node name, if it is one (else 'node'). */
function defaultNodeName(): string {
  const h = hostname().toLowerCase().split('.')[0] ?? ''
  return isNodeName(h) ? h : 'node'
}

/** The first non-loopback IPv4 address of the namespace the agent runs in (127.0.0.1 if none). */
function defaultNodeAddress(): string {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address
  return '127.0.0.1'
}

const ENVIRONMENT: Array<[string, (v: string) => string]> = [
  ['L7PROXY_LAB', (v) => `lab: ${v}`],
  ['L7PROXY_MODE', (v) => `mode: ${v}`],
  ['L7PROXY_POLICY_DIR', (v) => `policyDirectory: ${v}`],
  ['L7PROXY_THREADS', (v) => `proxy: { threads: ${v} }`],
  ['L7PROXY_DNS_THREADS', (v) => `dns: { threads: ${v} }`],
  ['L7PROXY_LOG_LEVEL', (v) => `logging: { level: ${v} }`],
  ['L7PROXY_CA_DIR', (v) => `caDirectory: ${v}`],
  ['L7PROXY_METRICS', (v) => `admin: { metrics: ${v} }`],
]

/**
 * The layers the environment gives, one per variable set (L7PROXY_LAB, _MODE, _POLICY_DIR,
 * _THREADS, _DNS_THREADS, _LOG_LEVEL, _CA_DIR, _METRICS), each checked as the file's field would be and named by its variable.
 */
export function environmentLayers(env: NodeJS.ProcessEnv): ConfigLayer[] {
  return ENVIRONMENT.filter(([name]) => env[name] !== undefined).map(([name, field]) =>
    parseConfigText(field(JSON.stringify(env[name])), `$${name}`),
  )
}

/**
 * Defaults < each layer in order. Paths that name the lab (bpffs, admin socket) follow a lab set
 * by a later layer unless a layer set them explicitly.
 */
export function resolveConfig(layers: readonly ConfigLayer[]): AgentConfig {
  const lab = layers.reduce<string | null>((l, layer) => layer.lab ?? l, null)
  const c = defaultConfig(
    lab,
    layers.reduce((n, layer) => layer.labNode ?? n, 1),
  )
  for (const layer of layers) {
    c.mode = layer.mode ?? c.mode
    c.policyDirectory = layer.policyDirectory ?? c.policyDirectory
    c.endpointsFile = layer.endpointsFile ?? c.endpointsFile
    c.interfaces = layer.interfaces ?? c.interfaces
    c.bpffs = layer.bpffs ?? c.bpffs
    c.stateDirectory = layer.stateDirectory ?? c.stateDirectory
    c.caDirectory = layer.caDirectory ?? c.caDirectory
    c.proxy = {
      httpPort: layer.proxy?.httpPort ?? c.proxy.httpPort,
      dnsPort: layer.proxy?.dnsPort ?? c.proxy.dnsPort,
      threads: layer.proxy?.threads ?? c.proxy.threads,
      address: layer.proxy?.address ?? c.proxy.address,
    }
    c.dns = {
      rejectCode: layer.dns?.rejectCode ?? c.dns.rejectCode,
      minTtlSeconds: layer.dns?.minTtlSeconds ?? c.dns.minTtlSeconds,
      maxIpsPerName: layer.dns?.maxIpsPerName ?? c.dns.maxIpsPerName,
      maxDelayMs: layer.dns?.maxDelayMs ?? c.dns.maxDelayMs,
      threads: layer.dns?.threads ?? c.dns.threads,
      idleConnectionGraceSeconds: layer.dns?.idleConnectionGraceSeconds ?? c.dns.idleConnectionGraceSeconds,
      maxDeferredConnectionDeletes: layer.dns?.maxDeferredConnectionDeletes ?? c.dns.maxDeferredConnectionDeletes,
    }
    c.cni = { labelsCommand: layer.cni?.labelsCommand ?? c.cni.labelsCommand }
    const o = layer.overload
    c.overload = {
      connections: { ...c.overload.connections, ...o?.connections },
      streams: { ...c.overload.streams, ...o?.streams },
      dnsQueries: { ...c.overload.dnsQueries, ...o?.dnsQueries },
      pressure: { ...c.overload.pressure, ...o?.pressure },
      fileLimit: o?.fileLimit ?? c.overload.fileLimit,
    }
    const k = layer.kvstore
    if (k) {
      c.kvstore = {
        endpoints: k.endpoints,
        prefix: k.prefix ?? c.kvstore?.prefix ?? 'l7proxy',
        tls: k.tls ?? c.kvstore?.tls ?? null,
        node: k.node ?? c.kvstore?.node ?? defaultNodeName(),
        nodeAddress: k.nodeAddress ?? c.kvstore?.nodeAddress ?? defaultNodeAddress(),
        leaseTtlSeconds: k.leaseTtlSeconds ?? c.kvstore?.leaseTtlSeconds ?? 15,
        identityGcSeconds: k.identityGcSeconds ?? c.kvstore?.identityGcSeconds ?? 60,
      }
    }
    c.maps = {
      ipcacheEntries: layer.maps?.ipcacheEntries ?? c.maps.ipcacheEntries,
      policyEntries: layer.maps?.policyEntries ?? c.maps.policyEntries,
    }
    c.handover = { drainSeconds: layer.handover?.drainSeconds ?? c.handover.drainSeconds }
    c.logging = { level: layer.logging?.level ?? c.logging.level }
    c.admin = {
      socket: layer.admin?.socket ?? c.admin.socket,
      metrics: layer.admin?.metrics !== undefined ? layer.admin.metrics : c.admin.metrics,
    }
  }
  return c
}
