// A query rate budget per source address: a token bucket each (`perSecond` refilled, `burst`
// deep), as dnsdist's MaxQPSIPRule keeps. Per thread: a client's datagrams spread over the DNS
// threads by their source port, so each thread allows its share of the rate (see the agent).
// A bucket that has refilled is as good as none, so full ones are dropped when the table grows
// past `maxSources` (and, if all are busy, the table starts afresh: a bound, not an LRU).

interface Bucket {
  tokens: number
  /** When `tokens` was counted (ms). */
  at: number
}

export class SourceRates {
  private readonly buckets = new Map<number, Bucket>()

  /** `perSecond` 0: no limit. */
  constructor(
    readonly perSecond: number,
    readonly burst: number,
    private readonly maxSources = 65_536,
  ) {}

  /** Whether `source` may send one more at `now` (ms); if so, it is counted. */
  allow(source: number, now: number): boolean {
    if (this.perSecond === 0) return true
    let b = this.buckets.get(source)
    if (b === undefined) {
      if (this.buckets.size >= this.maxSources) this.prune(now)
      b = { tokens: this.burst, at: now }
      this.buckets.set(source, b)
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.perSecond) / 1000)
      b.at = now
    }
    if (b.tokens < 1) return false
    b.tokens--
    return true
  }

  /** Sources with a bucket now. */
  get size(): number {
    return this.buckets.size
  }

  /** Drops the buckets that have refilled by `now` (all of them if none has). */
  prune(now: number): void {
    for (const [source, b] of this.buckets)
      if (b.tokens + ((now - b.at) * this.perSecond) / 1000 >= this.burst) this.buckets.delete(source)
    if (this.buckets.size >= this.maxSources) this.buckets.clear()
  }
}
