// The sk_lookup program (progs/sk-lookup.bpf.c) on the node's network namespace: attached by a
// BPF link that lasts while its fd is open (so it goes with the agent, and a restart attaches
// anew), and the proxy sockets it may select, by port and protocol.

import { libc } from '../lib/libc.js'
import type { BpfMap } from './bpf-object.js'
import { check, libbpf } from './libbpf.js'
import { proxySocketKey } from './map-layout.js'
import { openNetns } from './netns.js'

const BPF_SK_LOOKUP = 36

/** Attaches `progFd` to the named namespace (or this thread's); returns the link's fd. */
export function attachSkLookup(progFd: number, netns?: string): number {
  const nsFd = openNetns(netns)
  try {
    return check(
      libbpf().bpf_link_create(progFd, nsFd, BPF_SK_LOOKUP, null) as number,
      'EATTACH',
      `attaching sk_lookup to network namespace ${netns ?? '(current)'}`,
    )
  } finally {
    libc().close(nsFd)
  }
}

/** Detaches: closing the link's last fd ends it. */
export function detachSkLookup(linkFd: number): void {
  libc().close(linkFd)
}

/** Makes a socket the one sk_lookup selects for `port` and `protocol` (l7_proxy_sockets). */
export function addProxySocket(sockets: BpfMap, port: number, protocol: 'tcp' | 'udp', socketFd: number): void {
  const value = Buffer.alloc(8)
  value.writeBigUInt64LE(BigInt(socketFd))
  sockets.update(proxySocketKey(port, protocol), value)
}
