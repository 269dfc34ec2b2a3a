// Watches the node's open connections and the agent's resident memory, and raises the shared
// pressure flag the proxy threads read in their sweeps (shorter timeouts, idle connections closed
// oldest first). It drops the flag only once both are back under 90% of their lines, so it does
// not flap. When the open connections fall to half of a peak of at least TRIM_PEAK (a flood
// ended, with or without pressure), malloc is asked to give back what they freed: glibc keeps
// freed memory in its arenas otherwise, and RSS would stay at the flood's height.

import type { Logger } from 'pino'
import { releaseFreeMemory } from '../../lib/libc.js'
import type { SharedBudget } from './shared-budget.js'

export interface PressureOptions {
  budget: SharedBudget
  /** Open connections past which the node is under pressure. */
  connections: number
  /** Resident memory past which it is (bytes). */
  memoryBytes: number
  logger: Logger
  /** The process's resident memory now (bytes). */
  rss?: () => number
  /** Gives freed memory back to the system. */
  trim?: () => void
  intervalMs?: number
}

/** The share of a line under which pressure ends. */
const RELEASE = 0.9
/** Connections open at a peak worth giving memory back after. */
const TRIM_PEAK = 1_000

export class PressureMonitor {
  /** Times pressure began. */
  episodes = 0
  private timer: NodeJS.Timeout | null = null
  /** The most connections open since memory was last given back. */
  private peak = 0
  private readonly rss: () => number
  private readonly trim: () => void

  constructor(private readonly o: PressureOptions) {
    this.rss = o.rss ?? (() => process.memoryUsage.rss())
    this.trim = o.trim ?? (() => void releaseFreeMemory())
  }

  start(): void {
    this.timer = setInterval(() => this.check(), this.o.intervalMs ?? 250)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  /** Reads the connections and memory once and sets the flag from them. */
  check(): void {
    const { budget, logger } = this.o
    const connections = budget.connections
    const rss = this.rss()
    if (connections > this.peak) this.peak = connections
    else if (this.peak >= TRIM_PEAK && connections <= this.peak / 2) {
      this.trim()
      this.peak = connections
    }
    const was = budget.underPressure
    const over = connections >= this.o.connections || rss >= this.o.memoryBytes
    const under = connections < this.o.connections * RELEASE && rss < this.o.memoryBytes * RELEASE
    if (!was && over) {
      budget.underPressure = true
      this.episodes++
      logger.warn({ connections, rssMB: Math.round(rss / 2 ** 20), connectionsLine: this.o.connections, memoryLineMB: Math.round(this.o.memoryBytes / 2 ** 20) }, 'overload: under pressure (shorter timeouts, idle connections closed first)')
    } else if (was && under) {
      budget.underPressure = false
      logger.info({ connections, rssMB: Math.round(rss / 2 ** 20) }, 'overload: pressure over')
    }
  }
}
