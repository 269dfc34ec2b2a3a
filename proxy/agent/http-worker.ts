// A worker thread of the HTTP proxy: one more event loop, with its own HttpProxy on its own
// listening socket of the proxy's SO_REUSEPORT group, so connections are spread over the cores.
// Its policy engine is built from the same inputs as the main thread's (endpoints, policy
// files), so it judges exactly as the main thread would. Log lines are batched to the main
// thread, which writes every thread's lines to one destination (lines never interleave).

import { parentPort, workerData } from 'node:worker_threads'
import pino from 'pino'
import { PolicyEngine } from '../../policy/engine.js'
import { diffEndpoints, type NodeEndpoint } from './endpoints-file.js'
import { HttpProxy, type ProxyStats } from '../http/http-proxy.js'
import { LineBatcher } from './line-batcher.js'
import type { HistogramSnapshot } from '../latency-histogram.js'

export interface HttpWorkerInput {
  /** A listening socket (made by the main thread, which owns the process's cgroup and netns). */
  fd: number
  proxyPorts: { http: number; dns: number }
  logLevel: string
  /** The local CA for TLS interception (null: none). */
  caDir: string | null
  endpoints: NodeEndpoint[]
  policies: Array<{ name: string; text: string }>
  /** Names' IPs the main thread's engine has (toFQDNs), as this worker starts. */
  fqdns: Array<{ name: string; ips: string[] }>
}

/** Worker to main thread. */
export type WorkerMessage = { type: 'ready' } | { type: 'log'; text: string } | { type: 'stats'; stats: ProxyStats; connections: number; latency: HistogramSnapshot }
/** Main thread to worker: stop, or a policy file the main thread has accepted (null: removed). */
export type MainMessage = { type: 'stop' } | { type: 'policy'; file: string; text: string | null } | { type: 'fqdn'; name: string; ips: string[] } | { type: 'endpoints'; endpoints: NodeEndpoint[] }

const input = workerData as HttpWorkerInput
const port = parentPort!
const lines = new LineBatcher((text) => port.postMessage({ type: 'log', text } satisfies WorkerMessage))

const engine = new PolicyEngine({ proxyPorts: input.proxyPorts })
for (const ep of input.endpoints) engine.upsertEndpoint(ep)
for (const p of input.policies) engine.loadFile(p.name, p.text)
for (const f of input.fqdns) engine.setFqdnIps(f.name, f.ips)
const proxy = new HttpProxy({ engine, logger: pino({ base: null, level: input.logLevel }, lines), ...(input.caDir ? { caDir: input.caDir } : {}) })
await proxy.listen({ fd: input.fd })
/** Counters go to the main thread (for status and metrics) every STATS_MS and at the end. */
const STATS_MS = 1_000
const sendStats = (): void => port.postMessage({ type: 'stats', stats: proxy.stats, connections: proxy.connectionCount, latency: proxy.latency.snapshot() } satisfies WorkerMessage)
setInterval(sendStats, STATS_MS).unref()
let endpoints = input.endpoints
port.on('message', (m: MainMessage) => {
  if (m.type === 'endpoints') {
    // The main thread's engine took this change: the same steps here.
    const { upserts, removes } = diffEndpoints(endpoints, m.endpoints)
    for (const id of removes) engine.removeEndpoint(id)
    for (const ep of upserts) engine.upsertEndpoint(ep)
    endpoints = m.endpoints
    return
  }
  if (m.type === 'fqdn') {
    engine.setFqdnIps(m.name, m.ips)
    return
  }
  if (m.type === 'policy') {
    // Accepted by the main thread's engine from the same state: this one accepts it too.
    if (m.text === null) engine.removeFile(m.file)
    else engine.loadFile(m.file, m.text)
    return
  }
  void proxy.close().finally(() => {
    lines.flush()
    sendStats()
    port.close()
  })
})
port.postMessage({ type: 'ready' } satisfies WorkerMessage)
