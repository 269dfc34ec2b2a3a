// What the agent does when one source asks for more than its share: the budgets (shared-budget.ts),
// the DNS query rate per source (source-rates.ts), and what changes under pressure
// (pressure-monitor.ts). Data, with the defaults a node starts with and the numbers derived from
// the open-file limit the agent got.

import type { BudgetLimits, RefusalCounts } from './shared-budget.js'

export interface OverloadSettings {
  /** Concurrent client connections; 0 per source or identity: no limit; perNode 0: from the open-file limit. */
  connections: { perSource: number; perIdentity: number; perNode: number }
  /** Concurrent HTTP/2 streams over all of a source's (an identity's) connections; 0: no limit. */
  streams: { perSource: number; perIdentity: number }
  /** DNS queries a second from one source address (0: no limit), and how many may come at once. */
  dnsQueries: { perSecondPerSource: number; burst: number }
  /**
   * Pressure: open connections past this share of the node's budget, or the agent's resident
   * memory past memoryMB. Then these header and idle timeouts hold, and idle connections are
   * closed oldest first until the connections are back under the line.
   */
  pressure: { connectionsPercent: number; memoryMB: number; headersTimeoutMs: number; idleTimeoutMs: number }
  /** Open files the agent raises its limit to at start; 0: as many as the host allows (fs.nr_open). */
  fileLimit: number
}

export const DEFAULT_OVERLOAD: OverloadSettings = {
  // A busy client pod keeps hundreds of connections through the proxy, not thousands; a flood
  // from one pod stops at a small part of what the node can hold.
  connections: { perSource: 8_192, perIdentity: 32_768, perNode: 0 },
  // nghttp2's default is 100 concurrent streams a connection; these are over all of them.
  streams: { perSource: 4_096, perIdentity: 16_384 },
  dnsQueries: { perSecondPerSource: 2_000, burst: 2_000 },
  // Envoy's overload manager scales timeouts down the same way (reduce_timeouts).
  pressure: { connectionsPercent: 80, memoryMB: 1_024, headersTimeoutMs: 2_000, idleTimeoutMs: 5_000 },
  fileLimit: 0,
}

/**
 * Files kept out of the connection budget: the upstream pool's idle connections (1024 a thread
 * at most), DNS sockets, the admin socket, logs. A proxied connection holds two files (the
 * client's and its upstream's), so the node takes half of the rest.
 */
const RESERVED_FILES = 4_096

export function connectionsForFileLimit(files: number): number {
  const reserved = Math.min(RESERVED_FILES, Math.floor(files / 4))
  return Math.max(1, Math.floor((files - reserved) / 2))
}

/** The budgets for the open-file limit the agent has: the node's as configured, but never above what the files allow. */
export function budgetLimits(o: OverloadSettings, files: number): BudgetLimits {
  const most = connectionsForFileLimit(files)
  return {
    connectionsPerSource: o.connections.perSource,
    connectionsPerIdentity: o.connections.perIdentity,
    connectionsPerNode: Math.min(o.connections.perNode || most, most),
    streamsPerSource: o.streams.perSource,
    streamsPerIdentity: o.streams.perIdentity,
  }
}

/** Open connections past which the node is under pressure. */
export function pressureConnections(o: OverloadSettings, limits: BudgetLimits): number {
  return Math.max(1, Math.floor((limits.connectionsPerNode * o.pressure.connectionsPercent) / 100))
}

/** What status and metrics tell of the budgets: their limits, what they hold, what they refused. */
export interface OverloadStatus {
  fileLimit: number
  limits: BudgetLimits
  open: { connections: number; streams: number }
  refused: RefusalCounts & { dnsQueries: number }
  dnsQueries: OverloadSettings['dnsQueries']
  pressure: OverloadSettings['pressure'] & { now: boolean; episodes: number }
  rssBytes: number
  /** Each thread's V8 heap (committed), this one first; the others' at most a second old. */
  heapBytesByThread: number[]
}
