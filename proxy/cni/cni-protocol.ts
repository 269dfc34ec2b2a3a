// The CNI protocol (containernetworking/cni SPEC.md, version 1.0.0) as the l7proxy-cni plugin
// speaks it: a request read from the environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
// CNI_IFNAME, CNI_ARGS, CNI_PATH) and the network configuration on stdin, checked whole; results
// and errors written as the spec's JSON. Pure: no I/O.

import { isInterfaceName } from '../../lib/interface-name.js'

/** The versions whose configurations and results this plugin reads and writes. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const

/** The spec's error codes this plugin uses (100 and up are its own). */
export const CNI_ERRORS = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodeFailure: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  /** l7proxy: no agent answers on its admin socket. */
  noAgent: 100,
  /** l7proxy: setting up the container's interface failed. */
  interfaceFailed: 101,
} as const

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message)
    this.name = 'CniError'
  }
}

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION'

/** The plugin's network configuration (one entry of a configuration list, as the runtime passes it). */
export interface NetConf {
  cniVersion: string
  name: string
  type: string
  /** The agent's admin socket the endpoint is registered with. */
  agentSocket: string
  /** Handed to the IPAM plugin as it is (host-local). */
  ipam: { type: string; [k: string]: unknown }
  /** The previous result (DEL, CHECK), if the runtime passed one. */
  prevResult?: unknown
}

export interface CniRequest {
  command: CniCommand
  containerId: string
  /** The container's network namespace (a path); '' where the spec lets it be absent (DEL, VERSION). */
  netns: string
  ifname: string
  args: Record<string, string>
  /** Where delegated plugins (host-local) are looked for. */
  path: string[]
  /** Absent for VERSION, whose input has only cniVersion. */
  config: NetConf | null
  /** The version the runtime speaks (the configuration's), for the answer. */
  version: string
}

/** A container id as the spec allows it: an alphanumeric, then alphanumerics, '_', '.' or '-'. */
export const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/
const COMMANDS: readonly string[] = ['ADD', 'DEL', 'CHECK', 'VERSION']

function invalidEnv(name: string, why: string): CniError {
  return new CniError(CNI_ERRORS.invalidEnvironment, `invalid ${name}`, `${name}: ${why}`)
}

/** CNI_ARGS: `K=V;K=V` (alphanumeric keys). */
function parseArgs(raw: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const pair of raw.split(';')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    if (eq <= 0) throw invalidEnv('CNI_ARGS', `'${pair}' is not KEY=VALUE`)
    out[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  return out
}

function decode(stdin: string): Record<string, unknown> {
  let v: unknown
  try {
    v = JSON.parse(stdin)
  } catch (e) {
    throw new CniError(CNI_ERRORS.decodeFailure, 'the network configuration is not JSON', (e as Error).message)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new CniError(CNI_ERRORS.decodeFailure, 'the network configuration is not a JSON object')
  return v as Record<string, unknown>
}

function version(conf: Record<string, unknown>): string {
  const v = conf.cniVersion
  if (typeof v !== 'string')
    throw new CniError(CNI_ERRORS.invalidConfig, 'invalid network configuration', 'cniVersion: expected a string')
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(v))
    throw new CniError(
      CNI_ERRORS.incompatibleVersion,
      'incompatible CNI version',
      `cniVersion ${v} is not one of ${SUPPORTED_VERSIONS.join(', ')}`,
    )
  return v
}

function netConf(conf: Record<string, unknown>, cniVersion: string): NetConf {
  const bad = (field: string, why: string): CniError =>
    new CniError(CNI_ERRORS.invalidConfig, 'invalid network configuration', `${field}: ${why}`)
  if (typeof conf.name !== 'string' || conf.name === '') throw bad('name', 'expected a non-empty string')
  if (typeof conf.type !== 'string' || conf.type === '') throw bad('type', 'expected a non-empty string')
  if (typeof conf.agentSocket !== 'string' || !conf.agentSocket.startsWith('/'))
    throw bad('agentSocket', "expected the absolute path of the agent's admin socket")
  const ipam = conf.ipam as NetConf['ipam'] | undefined
  if (ipam === undefined || ipam === null || typeof ipam !== 'object' || typeof ipam.type !== 'string')
    throw bad('ipam', 'expected an object with a type (host-local)')
  if (!/^[A-Za-z0-9_.-]+$/.test(ipam.type)) throw bad('ipam.type', `'${ipam.type}' is not a plugin name`)
  return {
    cniVersion,
    name: conf.name,
    type: conf.type,
    agentSocket: conf.agentSocket,
    ipam,
    ...(conf.prevResult !== undefined ? { prevResult: conf.prevResult } : {}),
  }
}

/** A request from the plugin's environment and stdin; throws CniError saying what is wrong. */
export function parseRequest(env: Record<string, string | undefined>, stdin: string): CniRequest {
  const command = env.CNI_COMMAND ?? ''
  if (!COMMANDS.includes(command)) throw invalidEnv('CNI_COMMAND', `'${command}' is not one of ${COMMANDS.join(', ')}`)
  const conf = decode(stdin)
  const v = version(conf)
  if (command === 'VERSION')
    return { command: 'VERSION', containerId: '', netns: '', ifname: '', args: {}, path: [], config: null, version: v }
  const containerId = env.CNI_CONTAINERID ?? ''
  if (!CONTAINER_ID.test(containerId))
    throw invalidEnv('CNI_CONTAINERID', containerId === '' ? 'missing' : `'${containerId}' is not a container id`)
  const ifname = env.CNI_IFNAME ?? ''
  if (!isInterfaceName(ifname))
    throw invalidEnv('CNI_IFNAME', ifname === '' ? 'missing' : `'${ifname}' is not an interface name`)
  const netns = env.CNI_NETNS ?? ''
  if (command !== 'DEL' && !netns.startsWith('/'))
    throw invalidEnv('CNI_NETNS', netns === '' ? 'missing' : `'${netns}' is not a path`)
  return {
    command: command as CniCommand,
    containerId,
    netns,
    ifname,
    args: parseArgs(env.CNI_ARGS ?? ''),
    path: (env.CNI_PATH ?? '').split(':').filter((p) => p !== ''),
    config: netConf(conf, v),
    version: v,
  }
}

/** The spec's error result, for stdout. */
export function errorResult(version: string, e: CniError): string {
  return JSON.stringify({
    cniVersion: version,
    code: e.code,
    msg: e.message,
    ...(e.details ? { details: e.details } : {}),
  })
}

/** VERSION's result. */
export function versionResult(version: string): string {
  return JSON.stringify({ cniVersion: version, supportedVersions: SUPPORTED_VERSIONS })
}

/** What IPAM (host-local) gave: an address in CIDR notation and the subnet's gateway. */
export interface IpamLease {
  address: string
  gateway: string | undefined
}

/** The first IPv4 lease of an IPAM plugin's result; throws when it gave none. */
export function ipamLease(result: unknown): IpamLease {
  const ips = (result as { ips?: Array<{ address?: unknown; gateway?: unknown }> } | null)?.ips
  const v4 = Array.isArray(ips)
    ? ips.find((ip) => typeof ip.address === 'string' && /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(ip.address))
    : undefined
  if (v4 === undefined)
    throw new CniError(CNI_ERRORS.invalidConfig, 'IPAM gave no IPv4 address', JSON.stringify(result))
  return { address: v4.address as string, gateway: typeof v4.gateway === 'string' ? v4.gateway : undefined }
}

/**
 * ADD's result: the host's end and the container's end of the veth, the container's address
 * (a /32: the host is its only neighbour), and its default route through the gateway.
 */
export function addResult(o: {
  version: string
  hostIf: { name: string; mac: string }
  containerIf: { name: string; mac: string; sandbox: string }
  ip: string
  gateway: string
}): string {
  return JSON.stringify({
    cniVersion: o.version,
    interfaces: [
      { name: o.hostIf.name, mac: o.hostIf.mac },
      { name: o.containerIf.name, mac: o.containerIf.mac, sandbox: o.containerIf.sandbox },
    ],
    // Before 1.0.0 an IP named its family.
    ips: [
      { ...(o.version === '1.0.0' ? {} : { version: '4' }), address: `${o.ip}/32`, gateway: o.gateway, interface: 1 },
    ],
    routes: [{ dst: '0.0.0.0/0', gw: o.gateway }],
  })
}
