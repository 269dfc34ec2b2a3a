// A worker thread of the proxies: one more event loop, with its own HttpProxy and/or DnsProxy
// (UDP) on its own sockets of the proxies' SO_REUSEPORT groups, so connections and DNS clients
// are spread over the cores. Its policy engine is built from the same inputs as the main thread's
// (endpoints, policy files), so it judges exactly as the main thread would. Log lines go to the
// main thread in chunks, which writes every thread's lines to one destination (lines never
// interleave).
// What DNS answers teach is learned by the main thread (one FQDN cache, one writer of the maps),
// through a LearnRelay (learn-relay.ts: batches, and answers held until their maps are written).

import { parentPort, workerData } from 'node:worker_threads'
import pino from 'pino'
import { PolicyEngine } from '../../policy/engine.js'
import { LabelSet } from '../../policy/labels.js'
import type { DnsStats } from '../dns/dns-proxy.js'
import { LearnRelay, type LearnRequest, warnLate } from '../dns/learn-relay.js'
import type { ProxyStats } from '../http/http-proxy.js'
import type { HistogramSnapshot } from '../latency-histogram.js'
import { collectGarbage } from '../overload/collect-garbage.js'
import type { OverloadInput } from '../overload/thread-overload.js'
import { diffEndpoints, type NodeEndpoint } from './endpoints-file.js'
import { LineChunks } from './line-chunks.js'
import { type DnsLaneInput, startThreadProxies } from './thread-proxies.js'

export interface ProxyWorkerInput {
  /** A listening socket of the HTTP proxy (made by the main thread, which owns the process's cgroup and netns), or none. */
  http: { fd: number } | null
  dns: DnsLaneInput | null
  proxyPorts: { http: number; dns: number }
  logLevel: string
  /** The local CA for TLS interception (null: none). */
  caDir: string | null
  overload: OverloadInput
  endpoints: NodeEndpoint[]
  policies: Array<{ name: string; text: string }>
  /** Names' IPs the main thread's engine has (toFQDNs), as this worker starts. */
  fqdns: Array<{ name: string; ips: string[] }>
  /** Other nodes' pods the main thread's engine has (a cluster), as this worker starts. */
  remote: RemoteChange[]
}

/** Another node's pod at an address: its identity and that identity's labels (canonical); null: gone. */
export type RemoteChange = [string, { identity: number; labels: string } | null]

/** Applies other nodes' pods to an engine as the main thread's took them. */
function applyRemote(changes: readonly RemoteChange[]): void {
  for (const [ip, peer] of changes)
    engine.setRemoteEndpoint(ip, peer && { identity: peer.identity, labels: LabelSet.fromCanonical(peer.labels)! })
}

export interface HttpThreadStats {
  stats: ProxyStats
  connections: number
  latency: HistogramSnapshot
}

export interface DnsThreadStats {
  stats: DnsStats
  latency: HistogramSnapshot
  enforce: HistogramSnapshot
}

/** Worker to main thread. */
export type WorkerMessage =
  | { type: 'ready' }
  /** Whole log lines (a chunk's memory, transferred). */
  | { type: 'log'; chunk: Uint8Array; lines: number }
  /** heapBytes: the thread's V8 heap, committed. */
  | { type: 'stats'; http: HttpThreadStats | null; dns: DnsThreadStats | null; heapBytes: number }
  | { type: 'dns-learn'; batch: number; answers: LearnRequest[] }
/** Main thread to worker: stop (drain: finish what is in flight first), a change the main thread's engine has taken, or a DNS batch learned. */
export type MainMessage =
  | { type: 'stop' }
  | { type: 'drain'; timeoutMs: number }
  | { type: 'policy'; file: string; text: string | null }
  | { type: 'fqdn'; name: string; ips: string[] }
  | { type: 'endpoints'; endpoints: NodeEndpoint[] }
  | { type: 'remote'; changes: RemoteChange[] }
  | { type: 'dns-learned'; batch: number }
  /** A flood ended: collect the garbage it left now. */
  | { type: 'collect' }

const input = workerData as ProxyWorkerInput
const port = parentPort!
const lines = new LineChunks((chunk, count) =>
  port.postMessage({ type: 'log', chunk, lines: count } satisfies WorkerMessage, [chunk.buffer]),
)
const logger = pino({ base: null, level: input.logLevel }, lines)

const engine = new PolicyEngine({ proxyPorts: input.proxyPorts })
for (const ep of input.endpoints) engine.upsertEndpoint(ep)
for (const p of input.policies) engine.loadFile(p.name, p.text)
for (const f of input.fqdns) engine.setFqdnIps(f.name, f.ips)
applyRemote(input.remote)

const lane = input.dns
const relay = lane
  ? new LearnRelay({
      maxDelayMs: lane.maxDelayMs,
      send: (batch, answers) => port.postMessage({ type: 'dns-learn', batch, answers } satisfies WorkerMessage),
      onLate: warnLate(logger, lane.maxDelayMs),
    })
  : null
for (const f of input.fqdns) relay?.setKnown(f.name, f.ips)
const { http, dns, close, drain } = await startThreadProxies({
  engine,
  logger,
  caDir: input.caDir,
  overload: input.overload,
  http: input.http,
  dns: lane,
  learn: (qname, records) => relay!.learn(qname, records),
})

/** Counters go to the main thread (for status and metrics) every STATS_MS and at the end. */
const STATS_MS = 1_000
const sendStats = (): void =>
  port.postMessage({
    type: 'stats',
    http: http ? { stats: http.stats, connections: http.connectionCount, latency: http.latency.snapshot() } : null,
    dns: dns ? { stats: dns.stats, latency: dns.latency.snapshot(), enforce: dns.enforce.snapshot() } : null,
    heapBytes: process.memoryUsage().heapTotal,
  } satisfies WorkerMessage)
setInterval(sendStats, STATS_MS).unref()
let endpoints = input.endpoints
port.on('message', (m: MainMessage) => {
  if (m.type === 'dns-learned') return relay?.learned(m.batch)
  if (m.type === 'collect') return void collectGarbage()
  if (m.type === 'endpoints') {
    // The main thread's engine took this change: the same steps here.
    const { upserts, removes } = diffEndpoints(endpoints, m.endpoints)
    for (const id of removes) engine.removeEndpoint(id)
    for (const ep of upserts) engine.upsertEndpoint(ep)
    endpoints = m.endpoints
    return
  }
  if (m.type === 'remote') return applyRemote(m.changes)
  if (m.type === 'fqdn') {
    engine.setFqdnIps(m.name, m.ips)
    relay?.setKnown(m.name, m.ips)
    return
  }
  if (m.type === 'policy') {
    // Accepted by the main thread's engine from the same state: this one accepts it too.
    if (m.text === null) engine.removeFile(m.file)
    else engine.loadFile(m.file, m.text)
    return
  }
  relay?.close()
  void (m.type === 'drain' ? drain(m.timeoutMs) : close()).finally(() => {
    lines.flush()
    sendStats()
    port.close()
  })
})
port.postMessage({ type: 'ready' } satisfies WorkerMessage)
