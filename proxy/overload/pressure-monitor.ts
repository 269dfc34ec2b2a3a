// Watches the node's open connections and the agent's resident memory, and raises the shared
// pressure flag the proxy threads read in their sweeps (shorter timeouts, idle connections closed
// oldest first). It drops the flag only once both are back under 90% of their lines, so it does
// not flap. When the open connections fall to half of a peak of at least FLOOD_PEAK (a flood
// ended, with or without pressure), the memory the flood took is given back (AFTER_FLOOD): every
// thread collects its garbage at once (collect-garbage.ts; an idle proxy may not run a major GC
// for minutes, and V8's own memory reducer may not run again at all), and again once the
// allocation rate has been low for V8's 5 s window, when a full GC also shrinks the young
// generation the flood grew (2 x 16 MB a thread); after each, malloc gives back what was freed
// (glibc keeps it in its arenas otherwise, and RSS would stay at the flood's height).

import type { Logger } from 'pino'
import { releaseFreeMemory } from '../../lib/libc.js'
import { collectGarbage } from './collect-garbage.js'
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
  /** Has every proxy thread collect its garbage (by default this thread's only). */
  collect?: () => void
  /** Gives freed memory back to the system. */
  trim?: () => void
  intervalMs?: number
  /** The clock (ms). */
  now?: () => number
}

/** The share of a line under which pressure ends. */
const RELEASE = 0.9
/** Connections open at a peak worth giving memory back after. */
const FLOOD_PEAK = 1_000
/** What is done after a flood, and when (ms after it ended): each trim after the threads' collections are done. */
const AFTER_FLOOD: ReadonlyArray<readonly [number, 'collect' | 'trim']> = [
  [0, 'collect'],
  [2_000, 'trim'],
  [8_000, 'collect'],
  [10_000, 'trim'],
]

export class PressureMonitor {
  /** Times pressure began. */
  episodes = 0
  private timer: NodeJS.Timeout | null = null
  /** The most connections open since memory was last given back. */
  private peak = 0
  /** When the flood being given back ended (-1: none is). */
  private floodEnded = -1
  /** The next step of AFTER_FLOOD. */
  private step = 0
  private readonly collect: () => void
  private readonly now: () => number
  private readonly rss: () => number
  private readonly trim: () => void

  constructor(private readonly o: PressureOptions) {
    this.rss = o.rss ?? (() => process.memoryUsage.rss())
    this.trim = o.trim ?? (() => void releaseFreeMemory())
    this.collect = o.collect ?? (() => void collectGarbage())
    this.now = o.now ?? (() => performance.now())
  }

  start(): void {
    this.timer = setInterval(() => this.check(), this.o.intervalMs ?? 250)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  /** The steps of AFTER_FLOOD that are due. */
  private afterFlood(now: number): void {
    while (
      this.floodEnded >= 0 &&
      this.step < AFTER_FLOOD.length &&
      now >= this.floodEnded + AFTER_FLOOD[this.step]![0]
    ) {
      const what = AFTER_FLOOD[this.step++]![1]
      if (what === 'collect') this.collect()
      else {
        this.trim()
        this.o.logger.info({ rssMB: Math.round(this.rss() / 2 ** 20) }, 'overload: memory given back')
      }
    }
  }

  /** Reads the connections and memory once and sets the flag from them. */
  check(): void {
    const { budget, logger } = this.o
    const connections = budget.connections
    const rss = this.rss()
    const now = this.now()
    if (connections > this.peak) this.peak = connections
    else if (this.peak >= FLOOD_PEAK && connections <= this.peak / 2) {
      logger.info(
        { connections, peak: this.peak, rssMB: Math.round(rss / 2 ** 20) },
        'overload: the connections fell to half their peak; giving back what they took',
      )
      this.peak = connections
      this.floodEnded = now
      this.step = 0
    }
    this.afterFlood(now)
    const was = budget.underPressure
    const over = connections >= this.o.connections || rss >= this.o.memoryBytes
    const under = connections < this.o.connections * RELEASE && rss < this.o.memoryBytes * RELEASE
    if (!was && over) {
      budget.underPressure = true
      this.episodes++
      logger.warn(
        {
          connections,
          rssMB: Math.round(rss / 2 ** 20),
          connectionsLine: this.o.connections,
          memoryLineMB: Math.round(this.o.memoryBytes / 2 ** 20),
        },
        'overload: under pressure (shorter timeouts, idle connections closed first)',
      )
    } else if (was && under) {
      budget.underPressure = false
      logger.info({ connections, rssMB: Math.round(rss / 2 ** 20) }, 'overload: pressure over')
    }
  }
}
