// One agent taking over from another on the same node without a gap (a changed configuration,
// a new release, a restart): no listening socket closes, no map is emptied, no rule removed.
//
//   1. the new agent asks the running one for an offer (its admin socket): the running one stops
//      writing the maps, saves its FQDN cache, and answers with its pid, its proxies' socket
//      numbers, its mode and pins, and the identity numbers it wrote;
//   2. the new one copies those sockets out of it (pidfd_getfd: the same kernel sockets, with
//      whatever is queued on them), numbers identities as the running one did, starts its
//      datapath on the same pinned maps (programs replaced where attached, node state kept),
//      writes its state, starts its proxies on the sockets, and prunes what only the other had;
//   3. it asks the running one to drain: that one stops reading the sockets, finishes what it
//      has in flight (HTTP/1 answers say `connection: close`, HTTP/2 clients get GOAWAY, DNS
//      queries are answered), bounded by its drain timeout, and exits.

import { takeFds } from '../../lib/libc.js'
import type { RedirectMode } from '../../redirect-bpf/modes/redirect-mode.js'
import { adminGet } from './admin-socket.js'

/** What a running agent hands to the one taking over. */
export interface HandoverOffer {
  pid: number
  mode: RedirectMode
  pin: string
  proxyAddress: string
  proxyPorts: { http: number; dns: number }
  /** Its proxies' sockets, as numbers in its process. */
  fds: HandoverSockets
  /** tcp_early_demux before the first agent's datapath changed it (null: unchanged). */
  earlyDemux: string | null
  /** The identity numbers in its maps: labels (canonical) -> number. */
  identities: Array<{ labels: string; id: number }>
}

export interface HandoverSockets {
  http: number[]
  dns: number[]
  dnsTcp: number | null
  /** Prometheus' listener, when the agent made it (a lab's is its starter's, passed to each agent). */
  metrics: number | null
}

/** An agent as one taking over from it calls it (its admin routes). */
export interface HandoverParty {
  handoverInfo(): Omit<HandoverOffer, 'fds' | 'identities' | 'earlyDemux'>
  offerHandover(): HandoverOffer
  cancelHandover(): void
  drainAfterHandover(): void
}

/** What the new agent must match to take over: the same datapath, on the same sockets. */
export interface TakeoverTarget {
  mode: RedirectMode
  pin: string
  proxyAddress: string
  proxyPorts: { http: number; dns: number }
}

/** Why `offer` cannot be taken over by an agent like `want` (a hitless takeover needs the same datapath), or null. */
export function takeoverMismatch(offer: HandoverOffer, want: TakeoverTarget): string | null {
  const differs: string[] = []
  if (offer.mode !== want.mode) differs.push(`mode ${offer.mode} there, ${want.mode} here`)
  if (offer.pin !== want.pin) differs.push(`bpffs ${offer.pin} there, ${want.pin} here`)
  if (offer.proxyAddress !== want.proxyAddress)
    differs.push(`proxy address ${offer.proxyAddress} there, ${want.proxyAddress} here`)
  if (offer.proxyPorts.http !== want.proxyPorts.http || offer.proxyPorts.dns !== want.proxyPorts.dns)
    differs.push(
      `proxy ports ${offer.proxyPorts.http}/${offer.proxyPorts.dns} there, ${want.proxyPorts.http}/${want.proxyPorts.dns} here`,
    )
  return differs.length === 0
    ? null
    : `${differs.join('; ')} (stop that agent, then start this one: a takeover keeps the datapath as it is)`
}

/** Asks the agent at `socket` for its offer (it stops writing the maps from now on). */
export async function requestOffer(socket: string): Promise<HandoverOffer> {
  return (await adminGet(socket, '/v1/handover/offer', 10_000, 'POST')) as HandoverOffer
}

/** Copies of the offering agent's sockets into this process. */
export function takeSockets(offer: HandoverOffer): HandoverSockets {
  const { http, dns, dnsTcp, metrics } = offer.fds
  const taken = takeFds(
    offer.pid,
    [...http, ...dns, dnsTcp ?? -1, metrics ?? -1].filter((fd) => fd >= 0),
  )
  const next = (): number => taken.shift()!
  return {
    http: http.map(next),
    dns: dns.map(next),
    dnsTcp: dnsTcp === null ? null : next(),
    metrics: metrics === null ? null : next(),
  }
}

/** Tells the agent that offered to drain and exit (it closes its admin socket first). */
export async function requestDrain(socket: string): Promise<void> {
  await adminGet(socket, '/v1/handover/drain', 10_000, 'POST')
}
