// The TypeScript mirror of include/l7proxy-maps.h: map names, key and value encodings, verdict
// numbers. checkLayout compares every size with what the loaded object declares, so a header
// changed without this file (or the reverse) fails at load time, not in the datapath.

import { formatIPv4, parseIPv4, parsePrefix } from '../policy/cidr.js'
import type { Direction } from '../policy/model.js'
import type { BpfObject } from './bpf-object.js'
import { BpfError, check, libbpf } from './libbpf.js'

export const MAP_LAYOUT = {
  l7_ipcache: { key: 8, value: 4 },
  l7_endpoints: { key: 4, value: 12 },
  l7_policy: { key: 16, value: 4 },
  l7_counters: { key: 8, value: 16 },
  l7_config: { key: 4, value: 8 },
  l7_endpoint_ips: { key: 4, value: 12 },
  l7_ct: { key: 16, value: 16 },
  l7_proxymap: { key: 8, value: 8 },
  l7_sockhash: { key: 16, value: 8 },
  l7_sockmap_stats: { key: 4, value: 16 },
  l7_proxy_sockets: { key: 4, value: 8 },
  l7_http_threads: { key: 4, value: 8 },
  l7_spread: { key: 4, value: 8 },
} as const

export type MapName = keyof typeof MAP_LAYOUT

export const EP_ENFORCE_INGRESS = 1
export const EP_ENFORCE_EGRESS = 2
export const POLICY_DENY = 1

export const VERDICTS = ['not-enforced', 'allowed', 'denied-by-rule', 'denied-default', 'to-proxy', 'no-proxy'] as const
export type VerdictName = (typeof VERDICTS)[number]

export function checkLayout(obj: BpfObject, names: readonly MapName[] = Object.keys(MAP_LAYOUT) as MapName[]): void {
  for (const name of names) {
    const map = obj.map(name)
    const want = MAP_LAYOUT[name]
    if (map.keySize !== want.key || map.valueSize !== want.value) {
      throw new BpfError(
        'ELAYOUT',
        `map ${name} in ${obj.path} has key/value ${map.keySize}/${map.valueSize} bytes, redirect-bpf/map-layout.ts expects ${want.key}/${want.value}: the C header and its TS mirror disagree`,
      )
    }
  }
}

export function ipcacheKey(prefix: string): Buffer {
  const p = parsePrefix(prefix)
  if (typeof p === 'string') throw new BpfError('EMAP', `ipcache: ${p}`)
  const b = Buffer.alloc(8)
  b.writeUInt32LE(p.len, 0)
  b.writeUInt32BE(p.addr, 4) // network order, as in the packet
  return b
}

/** An IPv4 address as the 4 bytes of the packet (network order). */
export function ipv4Key(ip: string): Buffer {
  return ipcacheKey(`${ip}/32`).subarray(4, 8)
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(n >>> 0, 0)
  return b
}

export function endpointValue(endpointId: number, identity: number, enforce: Record<Direction, boolean>): Buffer {
  const b = Buffer.alloc(12)
  b.writeUInt32LE(endpointId, 0)
  b.writeUInt32LE(identity, 4)
  b.writeUInt32LE((enforce.ingress ? EP_ENFORCE_INGRESS : 0) | (enforce.egress ? EP_ENFORCE_EGRESS : 0), 8)
  return b
}

export interface PolicyMapKey {
  endpointId: number
  identity: number
  direction: Direction
  /** 0: every protocol (then with the whole port range). */
  protocol: number
  port: number
  /** Bits of `port` that count: 16 one port, 0 every port. */
  portPrefixLen: number
}

/** Key bits before the port (endpoint, identity, direction, protocol): L7_POLICY_PREFIX_FIXED. */
const POLICY_PREFIX_FIXED = 80

export function policyKey(k: PolicyMapKey): Buffer {
  const b = Buffer.alloc(16)
  b.writeUInt32LE(POLICY_PREFIX_FIXED + k.portPrefixLen, 0)
  // Host order, as the C struct holds them: these fields are always matched whole, so only the
  // port (a prefix) must be in network order, high bits first.
  b.writeUInt32LE(k.endpointId, 4)
  b.writeUInt32LE(k.identity, 8)
  b.writeUInt8(k.direction === 'ingress' ? 0 : 1, 12)
  b.writeUInt8(k.protocol, 13)
  b.writeUInt16BE(k.port, 14)
  return b
}

export function decodePolicyKey(b: Buffer): PolicyMapKey {
  return {
    endpointId: b.readUInt32LE(4),
    identity: b.readUInt32LE(8),
    direction: b.readUInt8(12) === 0 ? 'ingress' : 'egress',
    protocol: b.readUInt8(13),
    port: b.readUInt16BE(14),
    portPrefixLen: b.readUInt32LE(0) - POLICY_PREFIX_FIXED,
  }
}

export function policyValue(deny: boolean, proxyPort: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt16LE(proxyPort, 0)
  b.writeUInt8(deny ? POLICY_DENY : 0, 2)
  return b
}

export function decodePolicyValue(b: Buffer): { deny: boolean; proxyPort: number } {
  return { deny: (b.readUInt8(2) & POLICY_DENY) !== 0, proxyPort: b.readUInt16LE(0) }
}

/** enum l7_redirect_mode */
export const MODE_NUMBERS = { none: 0, tproxy: 1, 'sk-assign': 2, dnat: 3, sockmap: 4, 'sk-lookup': 5 } as const

/** struct proxy_socket_key: a proxy's port (host order) and protocol. */
export function proxySocketKey(port: number, protocol: 'tcp' | 'udp'): Buffer {
  const b = Buffer.alloc(MAP_LAYOUT.l7_proxy_sockets.key)
  b.writeUInt16LE(port, 0)
  b.writeUInt8(protocol === 'tcp' ? 6 : 17, 2)
  return b
}

/** The one l7_config entry: redirect mode and the proxy's listening address. */
export function writeConfig(obj: BpfObject, mode: keyof typeof MODE_NUMBERS, proxyAddr: string): void {
  const v = Buffer.alloc(8)
  v.writeUInt32LE(MODE_NUMBERS[mode], 0)
  ipv4Key(proxyAddr).copy(v, 4)
  obj.map('l7_config').update(u32(0), v)
}

export interface Counter {
  endpointId: number
  verdict: VerdictName
  packets: number
  bytes: number
}

/** Sums the per-CPU counters. */
export function readCounters(obj: BpfObject): Counter[] {
  const map = obj.map('l7_counters')
  const out: Counter[] = []
  for (const key of map.keys()) {
    const v = map.lookup(key)
    if (!v) continue
    let packets = 0n
    let bytes = 0n
    for (let off = 0; off + 16 <= v.length; off += 16) {
      packets += v.readBigUInt64LE(off)
      bytes += v.readBigUInt64LE(off + 8)
    }
    out.push({
      endpointId: key.readUInt32LE(0),
      verdict: VERDICTS[key.readUInt32LE(4)] ?? 'not-enforced',
      packets: Number(packets),
      bytes: Number(bytes),
    })
  }
  return out
}

/**
 * Where a steered flow from client address:port was going (the proxymap), or null: for
 * datagrams in every mode, and for connections in dnat mode.
 */
/** The proxymap key and value, filled for each lookup (the DNS proxy asks once per datagram). */
const proxymapKey = Buffer.alloc(MAP_LAYOUT.l7_proxymap.key)
const proxymapValue = Buffer.alloc(MAP_LAYOUT.l7_proxymap.value)

/** An IPv4 address (as a number) and port. */
export interface Destination {
  address: number
  port: number
}

/**
 * Where a steered client's flow was going, from the proxymap (by its fd: any thread of the
 * process may ask), written into `out`; false if the datapath recorded none.
 */
export function proxymapLookup(
  proxymapFd: number,
  clientAddress: number,
  clientPort: number,
  protocol: 'tcp' | 'udp',
  out: Destination,
): boolean {
  proxymapKey.writeUInt32BE(clientAddress, 0) // network order, as in the packet
  proxymapKey.writeUInt16BE(clientPort, 4)
  proxymapKey.writeUInt8(protocol === 'tcp' ? 6 : 17, 6)
  const rc = libbpf().bpf_map_lookup_elem(proxymapFd, proxymapKey, proxymapValue) as number
  if (rc === -2) return false
  check(rc, 'EMAP', 'lookup in map l7_proxymap')
  out.address = proxymapValue.readUInt32BE(0)
  out.port = proxymapValue.readUInt16BE(4)
  return true
}

/** proxymapLookup with addresses as text. */
export function originalDestination(
  proxymapFd: number,
  clientAddress: string,
  clientPort: number,
  protocol: 'tcp' | 'udp',
): { address: string; port: number } | null {
  const addr = parseIPv4(clientAddress)
  const out = { address: 0, port: 0 }
  if (addr === null || !proxymapLookup(proxymapFd, addr, clientPort, protocol, out)) return null
  return { address: formatIPv4(out.address), port: out.port }
}

/** Messages and bytes the sk_msg program moved socket to socket (sockmap mode). */
export function readSockmapStats(obj: BpfObject): { messages: number; bytes: number } {
  const v = obj.map('l7_sockmap_stats').lookup(u32(0))
  let messages = 0n
  let bytes = 0n
  for (let off = 0; v && off + 16 <= v.length; off += 16) {
    messages += v.readBigUInt64LE(off)
    bytes += v.readBigUInt64LE(off + 8)
  }
  return { messages: Number(messages), bytes: Number(bytes) }
}

/** Mirrors of l7proxy-maps.h: how long a conntrack entry lives after its last packet. */
const CT_LIFETIME_NS = { tcp: 3600n * 1_000_000_000n, udp: 60n * 1_000_000_000n, closing: 10n * 1_000_000_000n }
const CT_CLOSING = 1

/**
 * The destinations of the connections conntrack holds alive at `nowNs` (CLOCK_MONOTONIC, as
 * bpf_ktime_get_ns; Node's process.hrtime reads the same clock): not lapsed, and a TCP one that
 * sent FIN or RST for 10 s at most. An FQDN address in this set is in use.
 */
export function liveCtDestinations(obj: BpfObject, nowNs: bigint): Set<string> {
  const map = obj.map('l7_ct')
  const live = new Set<string>()
  for (const k of map.keys()) {
    const v = map.lookup(k)
    if (!v) continue
    const tcp = k[12] === 6
    const lifetime = !tcp
      ? CT_LIFETIME_NS.udp
      : v.readUInt16LE(10) & CT_CLOSING
        ? CT_LIFETIME_NS.closing
        : CT_LIFETIME_NS.tcp
    if (nowNs - v.readBigUInt64LE(0) <= lifetime) live.add(`${k[4]}.${k[5]}.${k[6]}.${k[7]}`)
  }
  return live
}
