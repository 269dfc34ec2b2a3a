// What `l7proxy compare` puts side by side: the baseline (none: L3/L4 only, nothing steered),
// the five redirect modes with l7proxy behind them, and two peers on the same topology in
// place of l7proxy's proxies: HAProxy for the HTTP workloads, steered by TPROXY (its own
// documented transparent setup) and, as haproxy-sockmap, by the sockmap mode (which shortcuts
// whichever proxy's sockets are in its cgroup: the same datapath as l7proxy's best), and dnsdist
// for DNS, steered by DNAT (the only mode where the kernel makes its answers come from the
// original server's address).

import { LAB_PROXY_PORTS, type LabNode, labProxyAddress } from '../../lab/node-agent.js'
import { findHost, nodeNetns } from '../../lab/topology.js'
import type { RedirectMode } from '../../redirect-bpf/modes/redirect-mode.js'
import type { RunningPeer } from '../bench-support.js'
import { startDnsdist } from '../peers/dnsdist.js'
import { startHaproxy } from '../peers/haproxy.js'
import type { Workload } from './workloads.js'

export const COMPARE_MODES = [
  'none',
  'dnat',
  'tproxy',
  'sk-assign',
  'sk-lookup',
  'sockmap',
  'haproxy',
  'haproxy-sockmap',
  'dnsdist',
] as const
export type CompareMode = (typeof COMPARE_MODES)[number]
type Peer = 'haproxy' | 'dnsdist'

export interface Contender {
  /** How the lab node steers (none: the policy has no L7 rule, so nothing is steered). */
  datapath: RedirectMode
  /** The policy carries the workload's L7 rules. */
  l7: boolean
  /** A peer proxy listening where the node's own proxy would (the node leaves it that port). */
  peer: Peer | null
}

export function contender(mode: CompareMode): Contender {
  if (mode === 'none') return { datapath: 'sk-assign', l7: false, peer: null }
  if (mode === 'haproxy') return { datapath: 'tproxy', l7: true, peer: 'haproxy' }
  if (mode === 'haproxy-sockmap') return { datapath: 'sockmap', l7: true, peer: 'haproxy' }
  if (mode === 'dnsdist') return { datapath: 'dnat', l7: true, peer: 'dnsdist' }
  return { datapath: mode, l7: true, peer: null }
}

/** How the report names a mode: a peer with the steering it is measured behind. */
export function modeLabel(mode: CompareMode): string {
  const c = contender(mode)
  return c.peer === null ? mode : `${c.peer} (${c.datapath})`
}

/**
 * Whether `mode` can carry `w`: sockmap redirects TCP only, each peer speaks one protocol. And
 * HAProxy behind sk_assign is not measured on a connection per operation: a client's SYN that
 * meets HAProxy's side of an earlier connection in TIME_WAIT would wait a second, as
 * sk-lookup.bpf.c hands such SYNs only to the listener the node registered (its own).
 */
export function carries(mode: CompareMode, w: Workload): boolean {
  if (mode === 'sockmap') return w.protocol !== 'dns'
  if (mode === 'haproxy-sockmap') return w.httpRules !== undefined && w.connectionPerOp !== true
  if (mode === 'haproxy') return w.httpRules !== undefined
  if (mode === 'dnsdist') return w.protocol === 'dns'
  return true
}

/**
 * Starts the peer of `mode` for workload `w` next to `node`, listening where the datapath steers;
 * in `cgroup` (sockmap's), when given.
 */
export function startPeer(
  mode: CompareMode,
  w: Workload,
  node: LabNode,
  o: { lab: string; dir: string; threads: number; cgroup: string | null },
): Promise<RunningPeer> {
  const { peer, datapath } = contender(mode)
  const listen = labProxyAddress(datapath)
  if (peer === 'haproxy')
    return startHaproxy(
      node,
      nodeNetns(o.lab),
      o.dir,
      { rules: w.httpRules ?? [], listen, port: LAB_PROXY_PORTS.http, threads: o.threads, h2: w.protocol === 'h2c' },
      o.cgroup,
    )
  return startDnsdist(node, nodeNetns(o.lab), o.dir, {
    listen,
    port: LAB_PROXY_PORTS.dns,
    server: `${findHost('dns').addresses[0]!}:53`,
  })
}
