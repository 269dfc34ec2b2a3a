// The workloads `l7proxy compare` runs in every redirect mode: what policy puts the traffic on
// the proxy's path (or, for the baseline, only allows it), which load generator drives it from
// the tiefighter, and which proxy counter must have seen every operation.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { findHost } from '../../lab/topology.js'
import type { ProgramStats } from '../../redirect-bpf/program-stats.js'
import { bulk, type Client, dnsperf, h2load, type LoadResult, wrk } from '../load-generators.js'
import type { BenchRule } from '../peers/haproxy.js'

export const WORKLOADS = ['http-keepalive', 'http-connect', 'bulk', 'grpc', 'dns'] as const
export type WorkloadName = (typeof WORKLOADS)[number]

export interface Workload {
  name: WorkloadName
  what: string
  unit: string
  /** What the proxy speaks: sockmap redirects TCP, so DNS (UDP) is not measured there. */
  protocol: 'http1' | 'h2c' | 'dns'
  /** The policy's L7 rules as method and path, for an HTTP peer (HAProxy). */
  httpRules?: readonly BenchRule[]
  /** Each operation is a new connection, the proxy closing it first (its side stays in TIME_WAIT while the client reuses ports). */
  connectionPerOp?: true
  /** The policy: with `l7` the traffic is steered to the proxy, without it only allowed. */
  policy(l7: boolean): string
  run(client: Client, o: { seconds: number; dir: string }): Promise<LoadResult>
  /** The proxy's count of this workload's operations, from its final counters. */
  proxied(totals: ProxyTotals): number
}

/** What a lab node counted over its life (its 'datapath stopped' line). */
export interface ProxyTotals {
  httpRequests: { allowed: number; denied: number; invalid: number; upstreamFailed: number }
  dnsQueries: { allowed: number; denied: number }
  kernelPackets: Record<string, number>
  sockmap?: { messages: number; bytes: number }
  /** Each of the datapath's programs: runs and run time (redirect-bpf/program-stats.ts). */
  programs?: Record<string, ProgramStats>
}

const DEATHSTAR = findHost('deathstar').addresses[0]!
const GRPC = findHost('grpc').addresses[0]!
const DNS = findHost('dns').addresses[0]!
export const BULK_BYTES = 100 * 1024 * 1024
/** Names the lab server answers that `*.empire` allows (one label before empire: not www.cantina.empire). */
export const DNS_QUERY_NAMES = ['cantina.empire', 'deathstar.empire', 'grpc.empire', 'speeder.empire']

function ingress(name: string, selector: string, port: number, rules: string | null): string {
  return `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: ${name} }
spec:
  endpointSelector: { matchLabels: ${selector} }
  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "${port}", protocol: TCP } ]${rules === null ? '' : `\n      rules: ${rules}`}
`
}

const HTTP_RULES: readonly BenchRule[] = [{ method: 'GET', path: '/v1/.*' }]
const httpPolicy = (l7: boolean): string =>
  ingress(
    'compare-http',
    '{ class: deathstar }',
    80,
    l7 ? `{ http: [ ${HTTP_RULES.map((r) => `{ method: ${r.method}, path: "${r.path}" }`).join(', ')} ] }` : null,
  )
const httpProxied = (t: ProxyTotals): number => t.httpRequests.allowed

/** A gRPC LandingRequest{ship} in its 5-byte length-prefixed frame. */
function grpcBody(ship: string): Buffer {
  const name = Buffer.from(ship)
  const message = Buffer.concat([Buffer.from([0x0a, name.length]), name])
  const prefix = Buffer.alloc(5)
  prefix.writeUInt32BE(message.length, 1)
  return Buffer.concat([prefix, message])
}

export const WORKLOAD_DEFS: Record<WorkloadName, Workload> = {
  'http-keepalive': {
    name: 'http-keepalive',
    what: 'GET /v1/ on 32 kept-alive connections (wrk)',
    unit: 'req/s',
    protocol: 'http1',
    httpRules: HTTP_RULES,
    policy: httpPolicy,
    run: (c, o) => wrk(c, { url: `http://${DEATHSTAR}/v1/`, seconds: o.seconds, connections: 32 }),
    proxied: httpProxied,
  },
  'http-connect': {
    name: 'http-connect',
    what: 'GET /v1/ on a new connection each (wrk, Connection: close, 8 at a time)',
    unit: 'conn/s',
    protocol: 'http1',
    httpRules: HTTP_RULES,
    connectionPerOp: true,
    policy: httpPolicy,
    run: (c, o) => wrk(c, { url: `http://${DEATHSTAR}/v1/`, seconds: o.seconds, connections: 8, closeEach: true }),
    proxied: httpProxied,
  },
  bulk: {
    name: 'bulk',
    what: `a ${BULK_BYTES / 1024 / 1024} MB response body, one transfer at a time (curl)`,
    unit: 'transfers/s',
    protocol: 'http1',
    httpRules: HTTP_RULES,
    policy: httpPolicy,
    run: (c, o) => bulk(c, { url: `http://${DEATHSTAR}/v1/bytes?n=${BULK_BYTES}`, seconds: o.seconds }),
    proxied: httpProxied,
  },
  grpc: {
    name: 'grpc',
    what: 'unary RequestLanding calls, 4 connections x 8 streams (h2load)',
    unit: 'calls/s',
    protocol: 'h2c',
    // gRPC's service and method rule, as HTTP/2 carries it.
    httpRules: [{ method: 'POST', path: '/empire\\.Deathstar/RequestLanding' }],
    policy: (l7) =>
      ingress(
        'compare-grpc',
        '{ class: grpc }',
        50051,
        l7 ? '{ grpc: [ { service: empire.Deathstar, method: RequestLanding } ] }' : null,
      ),
    run: (c, o) =>
      h2load(c, {
        url: `http://${GRPC}:50051/empire.Deathstar/RequestLanding`,
        seconds: o.seconds,
        warmup: 0,
        connections: 4,
        streams: 8,
        body: grpcBody('tiefighter'),
        headers: ['content-type: application/grpc', 'te: trailers'],
        dir: o.dir,
      }),
    proxied: httpProxied,
  },
  dns: {
    name: 'dns',
    what: 'A queries for names under empire, 4 clients x 50 outstanding (dnsperf)',
    unit: 'queries/s',
    protocol: 'dns',
    policy: (l7) => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: compare-dns }
spec:
  endpointSelector: { matchLabels: { class: tiefighter } }
  egress:
  - toEndpoints: [ { matchLabels: { "k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns } } ]
    toPorts:
    - ports: [ { port: "53", protocol: ANY } ]${l7 ? '\n      rules: { dns: [ { matchPattern: "*.empire" } ] }' : ''}
`,
    run: (c, o) => {
      const queryFile = join(o.dir, 'queries.txt')
      writeFileSync(queryFile, DNS_QUERY_NAMES.map((n) => `${n} A\n`).join(''))
      return dnsperf(c, { server: DNS, seconds: o.seconds, clients: 4, outstanding: 50, queryFile })
    },
    proxied: (t) => t.dnsQueries.allowed,
  },
}
