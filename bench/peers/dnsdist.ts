// dnsdist (Debian's) as the benchmarks' DNS peer: listening on the port the datapath steers to,
// forwarding to the lab server what is under `empire.` and answering REFUSED otherwise (the same
// rule as the l7proxy policy's `*.empire`); started next to a lab node, and asked how many
// answers it relayed (its webserver's statistics, on the node's loopback).

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { execIn } from '../../lab/netns.js'
import type { LabNode } from '../../lab/node-agent.js'
import { type RunningPeer, withPeer } from '../bench-support.js'

export interface DnsdistOptions {
  listen: string
  port: number
  /** The server it forwards to, `address:port`. */
  server: string
  /** Serve statistics on 127.0.0.1:statsPort (read with dnsdistResponses). */
  statsPort?: number
}

/** Starts dnsdist in `ns` next to `node`, its config and log in `dir`; waits until it listens. */
export async function startDnsdist(
  node: LabNode,
  ns: string,
  dir: string,
  o: Omit<DnsdistOptions, 'statsPort'>,
): Promise<RunningPeer> {
  const cfg = join(dir, 'dnsdist.conf')
  const statsPort = o.port + 1
  writeFileSync(cfg, dnsdistConfig({ ...o, statsPort }))
  // --supervised: stay in the foreground without a console, so its PID is ours to stop.
  const running = await withPeer(node, {
    ns,
    argv: ['dnsdist', '--supervised', '--disable-syslog', '-C', cfg],
    log: join(dir, 'dnsdist.log'),
    port: o.port,
    proto: 'udp',
    what: 'dnsdist',
  })
  return { ...running, handled: () => dnsdistResponses(ns, statsPort) }
}

/** Not a secret: the webserver listens on the lab node's loopback only. */
const STATS_KEY = 'l7proxy-bench'

export function dnsdistConfig(o: DnsdistOptions): string {
  return [
    `setLocal('${o.listen}:${o.port}')`,
    // Its default ACL admits private ranges only; the lab's pods live in 198.18.0.0/15.
    `setACL({ '198.18.0.0/15', '127.0.0.0/8' })`,
    `newServer({ address = '${o.server}' })`,
    // Nothing leaves the lab: no security polling of the dnsdist version.
    `setSecurityPollSuffix('')`,
    `local empire = newSuffixMatchNode()`,
    `empire:add(newDNSName('empire.'))`,
    `addAction(NotRule(SuffixMatchNodeRule(empire, true)), RCodeAction(DNSRCode.REFUSED))`,
    ...(o.statsPort === undefined
      ? []
      : [
          `webserver('127.0.0.1:${o.statsPort}')`,
          `setWebserverConfig({ apiKey = '${STATS_KEY}', acl = '127.0.0.0/8' })`,
        ]),
    '',
  ].join('\n')
}

/** Answers relayed from the server so far (its `responses` counter), asked from inside `ns`. */
export async function dnsdistResponses(ns: string, statsPort: number): Promise<number> {
  const r = await execIn(
    ns,
    [
      'curl',
      '-sS',
      '--max-time',
      '5',
      '-H',
      `X-API-Key: ${STATS_KEY}`,
      `http://127.0.0.1:${statsPort}/jsonstat?command=stats`,
    ],
    { timeoutMs: 10_000 },
  )
  let v: unknown
  try {
    v = (JSON.parse(r.stdout) as Record<string, unknown>).responses
  } catch {
    v = undefined
  }
  if (typeof v !== 'number')
    throw new Error(
      `dnsdist stats: no 'responses' counter (curl exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 200)})`,
    )
  return v
}
