// The agent's Prometheus metrics (prom-client), read from their sources when scraped: requests
// by outcome and protocol from every proxy thread and how long they took, DNS queries by outcome
// and how long their answers waited for the maps, learned names, the kernel's per-endpoint
// verdict counters, the policy revision, how long policy changes take to apply (observed as
// they happen), and the overload budgets: their limits, what they hold and refused, the pressure.

import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { PolicyEngine } from '../../policy/engine.js'
import type { Counter as KernelCounter } from '../../redirect-bpf/map-layout.js'
import type { ClusterStatus } from '../kvstore/cluster-node.js'
import { type HistogramSnapshot, LATENCY_BUCKETS } from '../latency-histogram.js'
import type { OverloadStatus } from '../overload/overload-settings.js'

export interface MetricSources {
  httpRequests(): Record<string, number>
  httpConnections(): number
  dnsQueries(): Record<string, number>
  fqdnNames(): number
  kernelCounters(): KernelCounter[]
  policyRevision(): number
  /** Every thread's request durations added up, by protocol (http, dns). */
  requestDurations(): Record<string, HistogramSnapshot>
  /** DNS answers' arrival to the maps written. */
  dnsEnforce(): HistogramSnapshot
  overload(): OverloadStatus
  /** The cluster's store as this node sees it; null: no cluster. */
  cluster(): ClusterStatus | null
  /** How full the ipcache and policy map are, and learned addresses refused for want of room. */
  maps(): ReturnType<PolicyEngine['mapFill']>
}

/**
 * A histogram whose counts are kept elsewhere (each proxy thread counts its own, see
 * latency-histogram.ts) and read when scraped: registered with the registry as prom-client's own
 * metrics are, an object whose get() gives the name, help, type and samples.
 */
function snapshotHistogram(
  registry: Registry,
  name: string,
  help: string,
  label: string,
  read: () => Record<string, HistogramSnapshot>,
): void {
  registry.registerMetric({
    name,
    help,
    type: 'histogram',
    get: () => {
      const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = []
      for (const [key, s] of Object.entries(read())) {
        const labels = label ? { [label]: key } : {}
        let cumulative = 0
        LATENCY_BUCKETS.forEach((le, i) => {
          cumulative += s.counts[i]!
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative })
        })
        values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: s.count })
        values.push({ metricName: `${name}_sum`, labels, value: s.sum })
        values.push({ metricName: `${name}_count`, labels, value: s.count })
      }
      return { name, help, type: 'histogram', values, aggregator: 'sum' }
    },
  } as unknown as Parameters<Registry['registerMetric']>[0])
}

export class AgentMetrics {
  readonly registry = new Registry()
  /** Seconds from a policy file change being read to the maps and threads having it. */
  readonly policyApply: Histogram

  constructor(src: MetricSources) {
    const r = this.registry
    /** A counter set to a total kept elsewhere (the proxies' own counters), at scrape time. */
    const totals = (
      name: string,
      help: string,
      labelNames: string[],
      read: (set: (labels: Record<string, string | number>, v: number) => void) => void,
    ): void => {
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
    totals(
      'l7proxy_requests_total',
      'Requests the proxies answered, by protocol and outcome.',
      ['protocol', 'outcome'],
      (set) => {
        for (const [outcome, v] of Object.entries(src.httpRequests())) set({ protocol: 'http', outcome }, v)
        for (const [outcome, v] of Object.entries(src.dnsQueries())) set({ protocol: 'dns', outcome }, v)
      },
    )
    totals(
      'l7proxy_kernel_packets_total',
      "Packets the kernel's programs decided, by endpoint and verdict.",
      ['endpoint', 'verdict'],
      (set) => {
        for (const k of src.kernelCounters()) set({ endpoint: k.endpointId, verdict: k.verdict }, k.packets)
      },
    )
    totals(
      'l7proxy_kernel_bytes_total',
      "Bytes the kernel's programs decided, by endpoint and verdict.",
      ['endpoint', 'verdict'],
      (set) => {
        for (const k of src.kernelCounters()) set({ endpoint: k.endpointId, verdict: k.verdict }, k.bytes)
      },
    )
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
    totals(
      'l7proxy_overload_refused_total',
      'Connections, HTTP/2 streams and DNS queries refused because a budget was spent, by what and whose budget.',
      ['what', 'budget'],
      (set) => {
        const r = src.overload().refused
        for (const [budget, v] of Object.entries(r.connections)) set({ what: 'connection', budget }, v)
        for (const [budget, v] of Object.entries(r.streams)) set({ what: 'stream', budget }, v)
        set({ what: 'dns_query', budget: 'source' }, r.dnsQueries)
      },
    )
    const limits: Gauge = new Gauge({
      name: 'l7proxy_overload_limit',
      help: 'The overload settings in force: budgets (0: none), the DNS query rate, the pressure lines and timeouts, the open-file limit.',
      labelNames: ['setting'],
      registers: [r],
      collect() {
        const o = src.overload()
        const settings: Record<string, number> = {
          ...o.limits,
          dnsQueriesPerSecondPerSource: o.dnsQueries.perSecondPerSource,
          dnsQueriesBurst: o.dnsQueries.burst,
          fileLimit: o.fileLimit,
        }
        for (const k of ['connectionsPercent', 'memoryMB', 'headersTimeoutMs', 'idleTimeoutMs'] as const)
          settings[`pressure${k[0]!.toUpperCase()}${k.slice(1)}`] = o.pressure[k]
        for (const [setting, v] of Object.entries(settings)) limits.set({ setting }, v)
      },
    })
    gauge(
      'l7proxy_overload_pressure',
      'Whether the proxies are under pressure now (1): shorter timeouts, idle connections closed first.',
      () => Number(src.overload().pressure.now),
    )
    gauge(
      'l7proxy_overload_connections',
      'Client connections the budgets hold now, over every proxy thread (HTTP and DNS over TCP).',
      () => src.overload().open.connections,
    )
    gauge('l7proxy_overload_streams', 'HTTP/2 streams the budgets hold now.', () => src.overload().open.streams)
    gauge('l7proxy_resident_memory_bytes', "The agent's resident memory.", () => src.overload().rssBytes)
    gauge(
      'l7proxy_kvstore_connected',
      "Whether the cluster's store is reachable and the watch of it current (1); -1: no cluster.",
      () => {
        const c = src.cluster()
        return c === null ? -1 : Number(c.connected)
      },
    )
    gauge(
      'l7proxy_kvstore_degraded',
      'Whether this node enforces a stale view of the cluster, or waits for identities or its own keys (1).',
      () => Number(src.cluster()?.degraded ?? false),
    )
    gauge(
      'l7proxy_kvstore_remote_endpoints',
      "Other nodes' endpoints this node knows.",
      () => src.cluster()?.remoteEndpoints ?? 0,
    )
    gauge(
      'l7proxy_kvstore_revision',
      "The store's revision this node's view reflects.",
      () => src.cluster()?.revision ?? 0,
    )
    gauge('l7proxy_http_connections', 'Client connections open in the HTTP proxy threads.', () => src.httpConnections())
    gauge('l7proxy_fqdn_names', 'Names the DNS proxy learned addresses for (toFQDNs).', () => src.fqdnNames())
    gauge('l7proxy_policy_revision', 'The policy revision in force.', () => src.policyRevision())
    const mapGauge = (name: string, help: string, read: (m: { entries: number; capacity: number }) => number): void => {
      const g: Gauge = new Gauge({
        name,
        help,
        labelNames: ['map'],
        registers: [r],
        collect() {
          const m = src.maps()
          g.set({ map: 'ipcache' }, read(m.ipcache))
          g.set({ map: 'policy' }, read(m.policy))
        },
      })
    }
    mapGauge('l7proxy_map_entries', "Entries the node's ipcache and policy map hold.", (m) => m.entries)
    mapGauge(
      'l7proxy_map_capacity',
      "Entries the node's ipcache and policy map may hold (maps.ipcacheEntries, maps.policyEntries).",
      (m) => m.capacity,
    )
    totals(
      'l7proxy_map_refused_total',
      'Learned (toFQDNs) addresses refused because the map they needed was full: connections to them are denied.',
      ['map'],
      (set) => {
        for (const [map, v] of Object.entries(src.maps().refused)) set({ map }, v)
      },
    )
    snapshotHistogram(
      r,
      'l7proxy_request_duration_seconds',
      'How long the proxies took to answer a request, from its head to the end of the answer (refused malformed ones aside).',
      'protocol',
      () => src.requestDurations(),
    )
    snapshotHistogram(
      r,
      'l7proxy_dns_enforce_seconds',
      "From an allowed DNS answer's arrival to the maps allowing the addresses it named being written.",
      '',
      () => ({ '': src.dnsEnforce() }),
    )
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
