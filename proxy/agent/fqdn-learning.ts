// What allowed DNS answers teach (toFQDNs), owned by the agent's main thread: the FQDN cache,
// restored from the state directory at start (so a restart cuts no allowed name) and saved there
// within a second of every change (after the answers waiting on it are released, and at most
// once a second: 10,000 names take 14 ms to write, which at a thousand new names a second must
// not happen per answer; the file is for the next start, the maps are what enforce, and an agent
// taking over gets the cache itself). Names whose addresses changed (learned, expired, forgotten) reach the policy
// engine, the kernel maps and every other proxy thread before the call that changed them returns.
// Expired addresses a connection still uses stay until it is gone (conntrack is read only when
// something is due to expire).

import type { Logger } from 'pino'
import type { PolicyEngine } from '../../policy/engine.js'
import { type CacheEntry, FqdnCache, type FqdnCacheOptions } from '../dns/fqdn-cache.js'
import { FqdnStore } from '../dns/fqdn-store.js'
import type { LearnRequest } from '../dns/learn-relay.js'

export interface FqdnLearningOptions {
  engine: PolicyEngine
  logger: Logger
  cache: FqdnCacheOptions
  /** Where the cache is kept across restarts; null: not kept. */
  stateDir: string | null
  /** Writes the engine's pending changes to the kernel maps. */
  writeMaps: () => void
  /** Destinations of connections the datapath still tracks. */
  liveDestinations: () => Set<string>
  /** Tells the other proxy threads a name's addresses. */
  tellThreads: (name: string, ips: string[]) => void
}

const EXPIRY_CHECK_MS = 1_000
const SAVE_INTERVAL_MS = 1_000

export class FqdnLearning {
  private readonly cache: FqdnCache
  private readonly store: FqdnStore | null
  private readonly timer: NodeJS.Timeout
  private saving: NodeJS.Timeout | null = null
  private savedAt = -Infinity

  /** Restores the saved cache into the engine (the maps get it with the engine's next write). */
  constructor(private readonly opts: FqdnLearningOptions) {
    this.cache = new FqdnCache(opts.cache)
    this.store = opts.stateDir ? new FqdnStore(opts.stateDir) : null
    if (this.store) {
      const saved = this.store.load()
      if (saved.problem) opts.logger.warn({ problem: saved.problem }, 'fqdn cache not restored')
      const names = this.cache.restore(saved.entries, Date.now())
      for (const name of names) opts.engine.setFqdnIps(name, this.cache.ips(name))
      if (names.length > 0) opts.logger.info({ names: names.length, file: this.store.file }, 'fqdn cache restored')
    }
    this.timer = setInterval(() => {
      let live: Set<string> | null = null
      this.apply(this.cache.expire(Date.now(), (ip) => (live ??= opts.liveDestinations()).has(ip)))
    }, EXPIRY_CHECK_MS)
    this.timer.unref()
  }

  /** Answers a thread holds (learn-relay.ts): all learned, then the maps written once. Never throws (logs what failed). */
  learnAll(answers: readonly LearnRequest[]): void {
    const now = Date.now()
    const changed = new Set<string>()
    try {
      for (const a of answers) for (const name of this.cache.learn(a.qname, a.records, now)) changed.add(name)
      this.apply([...changed])
    } catch (e) {
      this.opts.logger.error(
        { answers: answers.length, error: (e as Error).message },
        'dns: learning from answers failed',
      )
    }
  }

  /** Another agent's entries (the one taken over from), merged in and enforced; the names that grew. */
  merge(entries: readonly CacheEntry[]): string[] {
    const grew = this.cache.merge(entries, Date.now())
    this.apply(grew)
    return grew
  }

  /** Forgets every name, taking their addresses out of the maps; returns the names. */
  clean(): string[] {
    const removed = this.cache.clear()
    this.apply(removed)
    return removed
  }

  entries(): CacheEntry[] {
    return this.cache.entries()
  }

  /** Each name's addresses, as a new proxy thread starts with them. */
  names(): Array<{ name: string; ips: string[] }> {
    return this.cache.entries().map((e) => ({ name: e.name, ips: e.ips.map((i) => i.ip) }))
  }

  /** Stops expiring; what is not saved yet is saved now. */
  close(): void {
    clearInterval(this.timer)
    if (this.saving) this.saveNow()
  }

  /** Saves the cache now (an agent taking over restores it). */
  saveNow(): void {
    if (this.saving) clearTimeout(this.saving)
    this.save()
  }

  private save(): void {
    this.saving = null
    this.savedAt = performance.now()
    this.store?.save(this.cache.entries())
  }

  private apply(names: readonly string[]): void {
    if (names.length === 0) return
    for (const name of names) this.opts.engine.setFqdnIps(name, this.cache.ips(name))
    this.opts.writeMaps()
    for (const name of names) this.opts.tellThreads(name, this.cache.ips(name))
    if (this.store)
      this.saving ??= setTimeout(() => this.save(), Math.max(0, this.savedAt + SAVE_INTERVAL_MS - performance.now()))
  }
}
