// What `l7proxy compare` puts side by side: the baseline (none: L3/L4 only, nothing steered),
// the four redirect modes with l7proxy behind them, and two peers on the same topology in
// place of l7proxy's proxies: HAProxy for the HTTP workloads, steered by TPROXY (its own
// documented transparent setup), and dnsdist for DNS, steered by DNAT (the only mode where the
// kernel makes its answers come from the original server's address).

import { findHost, nodeNetns } from '../../lab/topology.js'
import { LAB_PROXY_PORTS, labProxyAddress, type LabNode } from '../../proxy/agent/lab-node-process.js'
import type { RedirectMode } from '../../redirect-bpf/modes/redirect-mode.js'
import type { RunningPeer } from '../bench-support.js'
import { startDnsdist } from '../peers/dnsdist.js'
import { startHaproxy } from '../peers/haproxy.js'
import type { Workload } from './workloads.js'

export const COMPARE_MODES = ['none', 'dnat', 'tproxy', 'sk-assign', 'sockmap', 'haproxy', 'dnsdist'] as const
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
  if (mode === 'dnsdist') return { datapath: 'dnat', l7: true, peer: 'dnsdist' }
  return { datapath: mode, l7: true, peer: null }
}

/** How the report names a mode: a peer with the steering it is measured behind. */
export function modeLabel(mode: CompareMode): string {
  const c = contender(mode)
  return c.peer === null ? mode : `${mode} (${c.datapath})`
}

/** Whether `mode` can carry `w`: sockmap redirects TCP only, each peer speaks one protocol. */
export function carries(mode: CompareMode, w: Workload): boolean {
  if (mode === 'sockmap') return w.protocol !== 'dns'
  if (mode === 'haproxy') return w.httpRules !== undefined
  if (mode === 'dnsdist') return w.protocol === 'dns'
  return true
}

/** Starts `peer` for workload `w` next to `node`, listening where the datapath steers. */
export function startPeer(peer: Peer, w: Workload, node: LabNode, o: { lab: string; dir: string; threads: number }): Promise<RunningPeer> {
  const listen = labProxyAddress(contender(peer).datapath)
  if (peer === 'haproxy') return startHaproxy(node, nodeNetns(o.lab), o.dir, { rules: w.httpRules ?? [], listen, port: LAB_PROXY_PORTS.http, threads: o.threads, h2: w.protocol === 'h2c' })
  return startDnsdist(node, nodeNetns(o.lab), o.dir, { listen, port: LAB_PROXY_PORTS.dns, server: `${findHost('dns').addresses[0]!}:53` })
}
