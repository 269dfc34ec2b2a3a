// Durations counted into fixed buckets, for hot paths: observe() allocates nothing and costs a
// few comparisons. A snapshot is plain numbers, so it crosses threads in a message, and
// snapshots add up: every proxy thread's into one Prometheus histogram.

/** Upper bounds in seconds, from 100 µs (a denied request) to 10 s (a slow upstream). */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]

export interface HistogramSnapshot {
  /** Observations per bucket (not cumulative); the last one is above the highest bound. */
  counts: number[]
  sum: number
  count: number
}

export class LatencyHistogram {
  private readonly counts = new Float64Array(LATENCY_BUCKETS.length + 1)
  private sum = 0
  private count = 0

  observe(seconds: number): void {
    let i = 0
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]!) i++
    this.counts[i]!++
    this.sum += seconds
    this.count++
  }

  snapshot(): HistogramSnapshot {
    return { counts: Array.from(this.counts), sum: this.sum, count: this.count }
  }
}

export function emptySnapshot(): HistogramSnapshot {
  return { counts: new Array<number>(LATENCY_BUCKETS.length + 1).fill(0), sum: 0, count: 0 }
}

/** The snapshots added up, as one histogram would have counted them all. */
export function addSnapshots(all: readonly HistogramSnapshot[]): HistogramSnapshot {
  const total = emptySnapshot()
  for (const s of all) {
    s.counts.forEach((c, i) => (total.counts[i]! += c))
    total.sum += s.sum
    total.count += s.count
  }
  return total
}
