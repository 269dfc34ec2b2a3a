// The agent's Prometheus metrics (prom-client), read from their sources when scraped: requests
// by outcome and protocol from every proxy thread, DNS queries by outcome, learned names, the
// kernel's per-endpoint verdict counters, the policy revision, and how long policy changes take
// to apply (observed as they happen).

import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { Counter as KernelCounter } from '../../redirect-bpf/map-layout.js'

export interface MetricSources {
  httpRequests(): Record<string, number>
  httpConnections(): number
  dnsQueries(): Record<string, number>
  fqdnNames(): number
  kernelCounters(): KernelCounter[]
  policyRevision(): number
}

export class AgentMetrics {
  readonly registry = new Registry()
  /** Seconds from a policy file change being read to the maps and threads having it. */
  readonly policyApply: Histogram

  constructor(src: MetricSources) {
    const r = this.registry
    /** A counter set to a total kept elsewhere (the proxies' own counters), at scrape time. */
    const totals = (name: string, help: string, labelNames: string[], read: (set: (labels: Record<string, string | number>, v: number) => void) => void): void => {
      const c: Counter = new Counter({
        name,
        help,
        labelNames,
        registers: [r],
        collect() {
          c.reset()
          read((labels, v) => c.inc(labels, v))
        },
      })
    }
    totals('l7proxy_requests_total', 'Requests the proxies answered, by protocol and outcome.', ['protocol', 'outcome'], (set) => {
      for (const [outcome, v] of Object.entries(src.httpRequests())) set({ protocol: 'http', outcome }, v)
      for (const [outcome, v] of Object.entries(src.dnsQueries())) set({ protocol: 'dns', outcome }, v)
    })
    totals('l7proxy_kernel_packets_total', "Packets the kernel's programs decided, by endpoint and verdict.", ['endpoint', 'verdict'], (set) => {
      for (const k of src.kernelCounters()) set({ endpoint: k.endpointId, verdict: k.verdict }, k.packets)
    })
    totals('l7proxy_kernel_bytes_total', "Bytes the kernel's programs decided, by endpoint and verdict.", ['endpoint', 'verdict'], (set) => {
      for (const k of src.kernelCounters()) set({ endpoint: k.endpointId, verdict: k.verdict }, k.bytes)
    })
    const gauge = (name: string, help: string, read: () => number): void => {
      const g: Gauge = new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          g.set(read())
        },
      })
    }
    gauge('l7proxy_http_connections', 'Client connections open in the HTTP proxy threads.', () => src.httpConnections())
    gauge('l7proxy_fqdn_names', 'Names the DNS proxy learned addresses for (toFQDNs).', () => src.fqdnNames())
    gauge('l7proxy_policy_revision', 'The policy revision in force.', () => src.policyRevision())
    this.policyApply = new Histogram({
      name: 'l7proxy_policy_apply_seconds',
      help: 'From a policy file change being read to the engine, the maps and every thread having it.',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers: [r],
    })
  }

  text(): Promise<string> {
    return this.registry.metrics()
  }
}
