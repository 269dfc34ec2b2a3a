// What every connection of one HTTP proxy shares, HTTP/1.1 and HTTP/2 alike: the policy engine,
// the logger, where a flow's requests go (its origin), limits, and the request counters and
// durations.

import type { Logger } from 'pino'
import type { LeafCache } from '../../certs/leaf-cache.js'
import type { PolicyEngine } from '../../policy/engine.js'
import type { Flow, FlowVerdict } from '../flow-verdict.js'
import type { LatencyHistogram } from '../latency-histogram.js'
import type { ThreadOverload } from '../overload/thread-overload.js'
import type { Origin } from '../tls/origin-socket.js'
import type { UpstreamTimeouts } from './upstream-connection.js'
import type { UpstreamPool } from './upstream-pool.js'

export type { Origin } from '../tls/origin-socket.js'

/** Requests (HTTP/2 streams) a proxy answered, by outcome (for status and metrics). */
export interface ProxyStats {
  allowed: number
  denied: number
  /** Refused before any rule saw them (malformed, ambiguous, too slow). */
  invalid: number
  /** Allowed ones the upstream failed (502/504). */
  upstreamFailed: number
}

export interface ProxyContext {
  stats: ProxyStats
  /** How long answered requests took, from their head to the end of the answer (refused ones aside). */
  latency: LatencyHistogram
  engine: PolicyEngine
  logger: Logger
  originOf: (flow: Flow) => Origin
  maxHeaders: number
  maxHeaderBytes: number
  upstream: UpstreamTimeouts
  /** Idle upstream HTTP/1.1 connections, for the next client connection from the same source. */
  pool: UpstreamPool
  idleMs: number
  /** Leaf certificates for intercepted TLS; null when no CA is configured (interception refused). */
  leaves: LeafCache | null
  /** The node's connection and stream budgets (null: none, as in tests of other things). */
  overload: ThreadOverload | null
  /**
   * Another agent has taken over (handover.ts): every answer from now on says
   * `connection: close` and its connection ends with it.
   */
  draining: boolean
}

/** Counts one answered request: `verdict` null when it was refused before any rule saw it. */
export function countOutcome(stats: ProxyStats, verdict: FlowVerdict | null, upstreamFailed: boolean): void {
  if (verdict === null) stats.invalid++
  else if (!verdict.allowed) stats.denied++
  else if (upstreamFailed) stats.upstreamFailed++
  else stats.allowed++
}
