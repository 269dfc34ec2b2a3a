// What every proxy thread counted, for status and metrics: this thread's HTTP and DNS proxies
// (read now) and the other threads' latest reports (at most a second old), per thread or summed.

import type { DnsProxy, DnsStats } from '../dns/dns-proxy.js'
import type { HttpProxy, ProxyStats } from '../http/http-proxy.js'
import { addSnapshots, type HistogramSnapshot } from '../latency-histogram.js'
import type { ProxyWorkers } from './proxy-workers.js'

/** The proxies as they are now (the HTTP proxy and the workers come up after the DNS proxy). */
export interface ProxyThreads {
  http: () => HttpProxy | null
  /** Null when the DNS port is left to another proxy. */
  dns: () => DnsProxy | null
  workers: () => ProxyWorkers | null
}

function sum<K extends string>(keys: Record<K, number>, all: ReadonlyArray<Record<K, number>>): Record<K, number> {
  for (const t of all) for (const k of Object.keys(keys) as K[]) keys[k] += t[k]
  return keys
}

export class ProxyTotals {
  constructor(private readonly threads: ProxyThreads) {}

  private others(): ReturnType<ProxyWorkers['stats']> {
    return this.threads.workers()?.stats() ?? []
  }

  /** Every HTTP proxy thread's requests by outcome, and their open client connections. */
  http(): { requests: ProxyStats; connections: number } {
    const own = this.threads.http()
    const all = [
      ...(own ? [{ stats: own.stats, connections: own.connectionCount }] : []),
      ...this.others().flatMap((w) => (w.http ? [w.http] : [])),
    ]
    return {
      requests: sum(
        { allowed: 0, denied: 0, invalid: 0, upstreamFailed: 0 },
        all.map((t) => t.stats),
      ),
      connections: all.reduce((n, t) => n + t.connections, 0),
    }
  }

  /** Each DNS proxy thread's counters, this one first. */
  dnsByThread(): DnsStats[] {
    const own = this.threads.dns()
    return own ? [{ ...own.stats }, ...this.others().flatMap((w) => (w.dns ? [w.dns.stats] : []))] : []
  }

  dns(): DnsStats {
    return sum({ allowed: 0, denied: 0, invalid: 0, timedOut: 0, rateLimited: 0 }, this.dnsByThread())
  }

  httpDurations(): HistogramSnapshot {
    const own = this.threads.http()
    return addSnapshots([
      ...(own ? [own.latency.snapshot()] : []),
      ...this.others().flatMap((w) => (w.http ? [w.http.latency] : [])),
    ])
  }

  dnsDurations(): HistogramSnapshot {
    const own = this.threads.dns()
    return addSnapshots([
      ...(own ? [own.latency.snapshot()] : []),
      ...this.others().flatMap((w) => (w.dns ? [w.dns.latency] : [])),
    ])
  }

  /** From an answer's arrival to its addresses allowed in the maps, on every DNS thread. */
  dnsEnforce(): HistogramSnapshot {
    const own = this.threads.dns()
    return addSnapshots([
      ...(own ? [own.enforce.snapshot()] : []),
      ...this.others().flatMap((w) => (w.dns ? [w.dns.enforce] : [])),
    ])
  }
}
