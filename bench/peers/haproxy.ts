// HAProxy (Debian's) as the benchmarks' HTTP peer: a transparent listener on the port the
// datapath steers to, the same method/path rules as the l7proxy policy (anchored, matched on the
// path with its query, as l7proxy and Envoy match), each request forwarded to its original
// destination; started next to a lab node, and asked how many requests it handled (its stats
// socket).

import { writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import type { LabNode } from '../../lab/node-agent.js'
import { type RunningPeer, withPeer } from '../bench-support.js'

export interface BenchRule {
  method: string
  path: string
}

export interface HaproxyOptions {
  rules: readonly BenchRule[]
  listen: string
  port: number
  threads: number
  /** HTTP/2 without TLS on both sides (gRPC); HTTP/1.1 otherwise. */
  h2?: boolean
  /** A stats socket to read the request count from. */
  statsSocket?: string
}

export function haproxyConfig(o: HaproxyOptions): string {
  const allow = o.rules.map(
    (r) => `  http-request allow if { method -m reg ^(?:${r.method})$ } { pathq -m reg ^(?:${r.path})$ }`,
  )
  const proto = o.h2 ? ' proto h2' : ''
  return [
    'global',
    `  nbthread ${o.threads}`,
    '  maxconn 4000',
    ...(o.statsSocket ? [`  stats socket ${o.statsSocket} mode 600 level user`] : []),
    'defaults',
    '  mode http',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
    '  option http-keep-alive',
    'frontend steered',
    `  bind ${o.listen}:${o.port} transparent${proto}`,
    ...allow,
    '  http-request deny deny_status 403',
    '  default_backend original_destination',
    'backend original_destination',
    '  http-reuse always',
    // 0.0.0.0 with no port: connect to the address and port the client connected to.
    `  server original 0.0.0.0:0${proto}`,
    '',
  ].join('\n')
}

/** Starts HAProxy in `ns` (and `cgroup`) next to `node`, its config, socket and log in `dir`; waits until it listens. */
export async function startHaproxy(
  node: LabNode,
  ns: string,
  dir: string,
  o: Omit<HaproxyOptions, 'statsSocket'>,
  cgroup: string | null = null,
): Promise<RunningPeer> {
  const cfg = join(dir, 'haproxy.cfg')
  const statsSocket = join(dir, 'haproxy.sock')
  writeFileSync(cfg, haproxyConfig({ ...o, statsSocket }))
  // -db: stay in the foreground, so its PID is ours to stop.
  const running = await withPeer(node, {
    ns,
    argv: ['haproxy', '-db', '-f', cfg],
    log: join(dir, 'haproxy.log'),
    port: o.port,
    proto: 'tcp',
    what: 'haproxy',
    cgroup,
  })
  return { ...running, handled: () => haproxyRequests(statsSocket) }
}

/** The requests the `steered` frontend has received so far (its req_tot), from `show stat`. */
export async function haproxyRequests(statsSocket: string, timeoutMs = 5000): Promise<number> {
  const csv = await new Promise<string>((resolve, reject) => {
    let text = ''
    const s = connect(statsSocket)
    s.setTimeout(timeoutMs, () =>
      s.destroy(new Error(`haproxy stats socket ${statsSocket}: no answer within ${timeoutMs} ms`)),
    )
    s.on('connect', () => s.end('show stat\n'))
    s.on('data', (d: Buffer) => (text += d.toString()))
    s.on('end', () => resolve(text))
    s.on('error', reject)
  })
  return frontendRequests(csv)
}

/** req_tot of the `steered` frontend in `show stat` CSV. */
export function frontendRequests(csv: string): number {
  const lines = csv.split('\n')
  const header = lines[0]?.replace(/^# /, '').split(',') ?? []
  const col = header.indexOf('req_tot')
  const row = lines.find((l) => l.startsWith('steered,FRONTEND,'))?.split(',')
  const v = row && col >= 0 ? Number(row[col]) : NaN
  if (!Number.isInteger(v))
    throw new Error(`haproxy stats: no req_tot for frontend 'steered' in ${JSON.stringify(csv.slice(0, 200))}`)
  return v
}
