// Starts and stops the proxies' worker threads (proxy-worker.ts), one per extra socket of the
// HTTP and DNS proxies' groups, writes the log lines they send, and learns from the DNS answers
// they hold (through `learnDns`, on this thread) before telling them to release them.

import { Worker } from 'node:worker_threads'
import type { LearnRequest } from '../dns/learn-relay.js'
import type { NodeEndpoint } from './endpoints-file.js'
import type {
  DnsThreadStats,
  HttpThreadStats,
  MainMessage,
  ProxyWorkerInput,
  RemoteChange,
  WorkerMessage,
} from './proxy-worker.js'

export interface ProxyWorkers {
  /** A policy change the main thread's engine accepted; every worker applies it too. */
  updatePolicy(file: string, text: string | null): void
  /** The node's endpoints as the main thread's engine now has them. */
  updateEndpoints(endpoints: NodeEndpoint[]): void
  /** A name's IPs as the main thread's engine now has them (toFQDNs). */
  updateFqdn(name: string, ips: string[]): void
  /** Other nodes' pods the main thread's engine took (a cluster). */
  updateRemote(changes: RemoteChange[]): void
  /** Another agent has taken over: every worker finishes what it has in flight (at most `timeoutMs`), then ends. */
  drain(timeoutMs: number): Promise<void>
  /** Has every worker collect its garbage now (a flood ended). */
  collectGarbage(): void
  /** The workers' latest counters and durations (at most a second old), one entry per worker. */
  stats(): Array<{ http: HttpThreadStats | null; dns: DnsThreadStats | null; heapBytes: number }>
  stop(): Promise<void>
}

export interface WorkerHooks {
  /** Whole log lines; the chunk's memory is the hook's. */
  writeLog: (chunk: Buffer, lines: number) => void
  /** Learns from the answers (writing the maps) before it returns; never throws (logs what failed). */
  learnDns: (answers: LearnRequest[]) => void
}

export async function startProxyWorkers(inputs: ProxyWorkerInput[], hooks: WorkerHooks): Promise<ProxyWorkers> {
  const workers = inputs.map((workerData) => new Worker(new URL('./proxy-worker.js', import.meta.url), { workerData }))
  const latest = workers.map((): { http: HttpThreadStats | null; dns: DnsThreadStats | null; heapBytes: number } => ({
    http: null,
    dns: null,
    heapBytes: 0,
  }))
  const exited = workers.map((w) => new Promise<void>((resolve) => w.once('exit', () => resolve())))
  const send = (m: MainMessage): void => workers.forEach((w) => w.postMessage(m))
  const end = async (m: MainMessage, graceMs: number): Promise<void> => {
    send(m)
    // A worker's port closes once its proxies have closed and its last lines are sent.
    const timer = setTimeout(() => workers.forEach((w) => void w.terminate()), graceMs)
    await Promise.all(exited)
    clearTimeout(timer)
  }
  const stop = (): Promise<void> => end({ type: 'stop' }, 10_000)
  try {
    await Promise.all(
      workers.map(
        (w, i) =>
          new Promise<void>((resolve, reject) => {
            w.on('message', (m: WorkerMessage) => {
              if (m.type === 'log')
                hooks.writeLog(Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength), m.lines)
              else if (m.type === 'stats') latest[i] = { http: m.http, dns: m.dns, heapBytes: m.heapBytes }
              else if (m.type === 'dns-learn') {
                hooks.learnDns(m.answers)
                w.postMessage({ type: 'dns-learned', batch: m.batch } satisfies MainMessage)
              } else resolve()
            })
            w.once('error', reject)
            w.once('exit', (code) => reject(new Error(`proxy worker exited (${code}) before it listened`)))
          }),
      ),
    )
  } catch (e) {
    await stop()
    throw e
  }
  return {
    stop,
    drain: (timeoutMs) => end({ type: 'drain', timeoutMs }, timeoutMs + 10_000),
    updatePolicy: (file, text) => send({ type: 'policy', file, text }),
    updateFqdn: (name, ips) => send({ type: 'fqdn', name, ips }),
    updateEndpoints: (endpoints) => send({ type: 'endpoints', endpoints }),
    updateRemote: (changes) => send({ type: 'remote', changes }),
    collectGarbage: () => send({ type: 'collect' }),
    stats: () => latest,
  }
}
