// Starts and stops the HTTP proxy's worker threads (http-worker.ts), one per extra listening
// socket, and writes the log lines they send.

import { Worker } from 'node:worker_threads'
import type { ProxyStats } from '../http/http-proxy.js'
import type { HttpWorkerInput, MainMessage, WorkerMessage } from './http-worker.js'
import type { NodeEndpoint } from './endpoints-file.js'
import { emptySnapshot, type HistogramSnapshot } from '../latency-histogram.js'

export interface HttpWorkers {
  /** A policy change the main thread's engine accepted; every worker applies it too. */
  updatePolicy(file: string, text: string | null): void
  /** The node's endpoints as the main thread's engine now has them. */
  updateEndpoints(endpoints: NodeEndpoint[]): void
  /** A name's IPs as the main thread's engine now has them (toFQDNs). */
  updateFqdn(name: string, ips: string[]): void
  /** The workers' latest counters and request durations (at most a second old), one entry per worker. */
  stats(): Array<{ stats: ProxyStats; connections: number; latency: HistogramSnapshot }>
  stop(): Promise<void>
}

export async function startHttpWorkers(inputs: HttpWorkerInput[], writeLog: (text: string) => void): Promise<HttpWorkers> {
  const workers = inputs.map((workerData) => new Worker(new URL('./http-worker.js', import.meta.url), { workerData }))
  const latest = workers.map(() => ({ stats: { allowed: 0, denied: 0, invalid: 0, upstreamFailed: 0 }, connections: 0, latency: emptySnapshot() }))
  const exited = workers.map((w) => new Promise<void>((resolve) => w.once('exit', () => resolve())))
  const send = (m: MainMessage): void => workers.forEach((w) => w.postMessage(m))
  const stop = async (): Promise<void> => {
    send({ type: 'stop' })
    // A worker's port closes once its proxy has closed and its last lines are sent.
    const timer = setTimeout(() => workers.forEach((w) => void w.terminate()), 10_000)
    await Promise.all(exited)
    clearTimeout(timer)
  }
  try {
    await Promise.all(
      workers.map(
        (w, i) =>
          new Promise<void>((resolve, reject) => {
            w.on('message', (m: WorkerMessage) => {
              if (m.type === 'log') writeLog(m.text)
              else if (m.type === 'stats') latest[i] = { stats: m.stats, connections: m.connections, latency: m.latency }
              else resolve()
            })
            w.once('error', reject)
            w.once('exit', (code) => reject(new Error(`HTTP proxy worker exited (${code}) before it listened`)))
          }),
      ),
    )
  } catch (e) {
    await stop()
    throw e
  }
  return { stop, updatePolicy: (file, text) => send({ type: 'policy', file, text }), updateFqdn: (name, ips) => send({ type: 'fqdn', name, ips }), updateEndpoints: (endpoints) => send({ type: 'endpoints', endpoints }), stats: () => latest }
}
