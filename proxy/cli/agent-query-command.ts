// `l7proxy status`, `l7proxy endpoint list`, `l7proxy identity list`...: ask a running agent (this
// host's, a lab's, or the one at --socket) over its admin socket; a table for people, `-o json`
// for scripts.

import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { AdminError, adminGet, adminGetText, adminStream, agentSocketPath } from '../agent/admin-socket.js'
import { DEFAULT_LAB, isValidLabName } from '../agent/lab-name.js'
import type { ClusterStatus } from '../kvstore/cluster-node.js'
import type { OverloadStatus } from '../overload/overload-settings.js'
import { renderTable } from './table.js'
import { UsageError } from './usage-error.js'

export const AGENT_QUERY_USAGE = `  status [--lab NAME | --socket PATH] [-o table|json]
                            what the running agent is doing: mode, policy revision and files,
                            proxy threads, connections and requests by outcome, kernel verdicts,
                            overload budgets, what they hold and refused, pressure, memory;
                            in a cluster: the store, its revision, every node and its policy revision
  endpoint list [--remote] [--lab NAME | --socket PATH] [-o table|json]
                            the node's endpoints: identity, addresses, enforcement, rules; with
                            --remote also other nodes' endpoints (a cluster): node, name, identity
  identity list [--lab NAME | --socket PATH] [-o table|json]
                            the identities the agent knows, with labels or CIDR; in a cluster,
                            which nodes use each
  fqdn cache list [--lab NAME | --socket PATH] [-o table|json]
                            what allowed DNS answers taught (toFQDNs): name, IPs, seconds left
  fqdn cache clean [--lab NAME | --socket PATH]
                            forget it all: the addresses leave the maps until names are asked again
  bpf policy get ENDPOINT [--lab NAME | --socket PATH] [-o table|json]
                            what the kernel's policy map holds for an endpoint, decoded
  metrics [--lab NAME | --socket PATH]      the agent's Prometheus metrics, in Prometheus' text format
  flows [--follow] [--last N] [--verdict V] [--endpoint ID] [--protocol http|dns|tls|kernel] [--count N]
        [--lab NAME | --socket PATH] [-o table|json]
                            the proxy's decisions and the kernel's drops: the last N (default 20),
                            then with --follow each one as it happens (until Ctrl-C, or N with --count)`

interface Status {
  mode: string
  pid: number
  uptimeSeconds: number
  policy: { revision: number; files: string[]; directory: string | null }
  endpoints: number
  identities: number
  http: { listening: string; threads: number; connections?: number; requests?: Record<string, number> }
  kernelPackets: Record<string, number>
  overload: Omit<OverloadStatus, 'refused'> & {
    refused: { connections: Record<string, number>; streams: Record<string, number>; dnsQueries: number }
    topSources: Array<{ source: string; connections: number; streams: number }>
  }
  cluster: ClusterStatus | null
}

/** Which running agent a query asks: its admin socket, and how to name it to a person. */
export interface AgentAt {
  socket: string
  /** "on lab 'main'", "on this host", "at /path": how a message names it. */
  where: string
  /** How to start one there. */
  start: string
}

/** --socket, --lab, or neither: this host's agent if its socket is there, else the lab main's. */
function agentAt(what: string, values: { lab?: string; socket?: string }): AgentAt {
  if (values.socket !== undefined && values.lab !== undefined)
    throw new UsageError(`${what}: give --socket or --lab, not both`)
  if (values.socket !== undefined) {
    if (!values.socket.startsWith('/'))
      throw new UsageError(`${what}: --socket must be an absolute path, not '${values.socket}'`)
    return {
      socket: values.socket,
      where: `at ${values.socket}`,
      start: 'l7proxy agent --config FILE, with admin.socket set to it',
    }
  }
  const host = agentSocketPath(null)
  const lab = values.lab ?? (existsSync(host) ? null : DEFAULT_LAB)
  if (lab === null) return { socket: host, where: 'on this host', start: 'l7proxy agent' }
  if (!isValidLabName(lab))
    throw new UsageError(`${what}: invalid --lab '${lab}': use 1-16 characters from a-z and 0-9`)
  return { socket: agentSocketPath(lab), where: `on lab '${lab}'`, start: `l7proxy agent --lab ${lab}` }
}

/**
 * --socket or --lab, and -o table|json, the options every query of a running agent takes; with
 * `files`, the arguments that are not options too (otherwise there must be none).
 */
export function options(
  what: string,
  args: string[],
  o: { files?: boolean; flags?: readonly string[] } = {},
): { agent: AgentAt; json: boolean; files: string[]; flags: Set<string> } {
  let values: { lab?: string; socket?: string; output?: string } & Record<string, string | boolean | undefined>
  let positionals: string[]
  const flags = Object.fromEntries((o.flags ?? []).map((f) => [f, { type: 'boolean' as const }]))
  try {
    ;({ values, positionals } = parseArgs({
      args,
      strict: true,
      allowPositionals: o.files === true,
      options: {
        lab: { type: 'string' },
        socket: { type: 'string' },
        output: { type: 'string', short: 'o' },
        ...flags,
      },
    }))
  } catch (e) {
    throw new UsageError(`${what}: ${(e as Error).message}`)
  }
  const output = values.output ?? 'table'
  if (output !== 'table' && output !== 'json') throw new UsageError(`-o must be 'table' or 'json', got '${output}'`)
  return {
    agent: agentAt(what, values),
    json: output === 'json',
    files: positionals,
    flags: new Set((o.flags ?? []).filter((f) => values[f] === true)),
  }
}

const counts = (r: Record<string, number> | undefined): string =>
  Object.entries(r ?? {})
    .map(([k, v]) => `${k} ${v}`)
    .join(', ') || '-'

function statusText(s: Status): string {
  const rows: string[][] = [
    ['mode', s.mode],
    ['agent', `pid ${s.pid}, up ${s.uptimeSeconds} s`],
    [
      'policy',
      `revision ${s.policy.revision}, ${s.policy.files.length} file(s)${s.policy.directory ? ` from ${s.policy.directory}` : ''}`,
    ],
    ['endpoints', String(s.endpoints)],
    ['identities', String(s.identities)],
    ['http proxy', `${s.http.listening}, ${s.http.threads} thread(s), ${s.http.connections ?? 0} connection(s)`],
    ['http requests', counts(s.http.requests)],
    ['kernel packets', counts(s.kernelPackets)],
    ...overloadRows(s.overload),
    ...(s.cluster ? clusterRows(s.cluster) : []),
  ]
  return renderTable(['WHAT', 'STATE'], rows)
}

/** The store as this node sees it, and every node. */
function clusterRows(c: ClusterStatus): string[][] {
  const i = c.identities
  return [
    [
      'cluster',
      `node ${c.node}, ${c.connected ? 'connected' : 'DISCONNECTED'} to ${c.endpoints.join(',')} (prefix ${c.prefix}), revision ${c.revision}`,
    ],
    ['cluster state', c.degraded ? `DEGRADED: ${c.reasons.join('; ')}` : 'current'],
    [
      'cluster identities',
      `${i.held} held here${i.waiting ? ` (${i.waiting} waiting)` : ''}; ${i.allocated} made, ${i.joined} joined, ${i.racesLost} races lost, ${i.collected} collected`,
    ],
    ['remote endpoints', String(c.remoteEndpoints)],
    ...c.nodes.map((n) => [
      `node ${n.name}${n.self ? ' (this)' : ''}`,
      `${n.address}, ${n.endpoints} endpoint(s), policy revision ${n.policyRevision}`,
    ]),
  ]
}

const budget = (n: number): string => (n === 0 ? 'none' : String(n))

/** What the budgets allow and hold, what they refused, the pressure, who holds the most. */
function overloadRows(o: Status['overload']): string[][] {
  const l = o.limits
  const p = o.pressure
  return [
    [
      'connections',
      `${o.open.connections} open of ${l.connectionsPerNode} (file limit ${o.fileLimit}); per source ${budget(l.connectionsPerSource)}, per identity ${budget(l.connectionsPerIdentity)}`,
    ],
    [
      'http/2 streams',
      `${o.open.streams} open; per source ${budget(l.streamsPerSource)}, per identity ${budget(l.streamsPerIdentity)}`,
    ],
    ['dns queries', `per source ${budget(o.dnsQueries.perSecondPerSource)}/s (burst ${o.dnsQueries.burst})`],
    [
      'refused',
      `connections: ${counts(o.refused.connections)}; streams: ${counts(o.refused.streams)}; dns queries ${o.refused.dnsQueries}`,
    ],
    [
      'pressure',
      `${p.now ? 'ON' : 'off'} (${p.episodes} so far), past ${p.connectionsPercent}% of connections or ${p.memoryMB} MB; then headers ${p.headersTimeoutMs} ms, idle ${p.idleTimeoutMs} ms`,
    ],
    ['memory', `${Math.round(o.rssBytes / 2 ** 20)} MB resident`],
    ['top sources', o.topSources.map((t) => `${t.source} ${t.connections}c/${t.streams}s`).join(', ') || '-'],
  ]
}

/** Rethrows "no agent there" as "no agent there, and how to start one". */
export function noAgentOn(agent: AgentAt): (e: unknown) => never {
  return (e) => {
    if (e instanceof AdminError && e.code === 'ENOAGENT')
      throw new AdminError('ENOAGENT', `no agent is running ${agent.where} (start one: ${agent.start})`)
    throw e
  }
}

function time(ms: number): string {
  return new Date(ms).toISOString().slice(11, 23)
}

/** One flow event as a line for people. */
export function flowLine(e: Record<string, unknown>): string {
  if (e.protocol === 'kernel')
    return `${time(Number(e.time))}  kernel  ${String(e.verdict).padEnd(8)}  endpoint ${e.endpoint}: ${e.packets} packet(s) dropped`
  if (e.protocol === 'dns') {
    const why = e.verdict === 'allowed' ? (e.rules as string[] | undefined)?.join(',') : e.reason
    return `${time(Number(e.time))}  dns     ${String(e.verdict).padEnd(8)}  ${e.source} -> ${e.destination}  ${e.qname ?? ''} ${e.qtype ?? ''}  ${e.rcode ?? '-'}  ${why ?? ''}`.trimEnd()
  }
  const what = e.method === undefined ? `${e.reason ?? ''}` : `${e.method} ${e.path}`
  const why = e.verdict === 'allowed' ? (e.rules as string[] | undefined)?.join(',') : e.reason
  return `${time(Number(e.time))}  http    ${String(e.verdict).padEnd(8)}  ${e.source} -> ${e.destination}  ${what}  ${e.status ?? '-'}  ${why ?? ''}`.trimEnd()
}

async function flowsCommand(args: string[], out: (s: string) => void): Promise<number> {
  let v: Record<string, string | boolean | undefined>
  try {
    ;({ values: v } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        follow: { type: 'boolean', short: 'f' },
        last: { type: 'string' },
        verdict: { type: 'string' },
        endpoint: { type: 'string' },
        protocol: { type: 'string' },
        count: { type: 'string' },
        lab: { type: 'string' },
        socket: { type: 'string' },
        output: { type: 'string', short: 'o' },
      },
    }))
  } catch (e) {
    throw new UsageError(`flows: ${(e as Error).message}`)
  }
  const { agent, json } = options('flows', [
    ...(v.lab ? ['--lab', String(v.lab)] : []),
    ...(v.socket ? ['--socket', String(v.socket)] : []),
    ...(v.output ? ['-o', String(v.output)] : []),
  ])
  const whole = (name: string, max: number): number | undefined => {
    const raw = v[name]
    if (raw === undefined) return undefined
    const n = Number(raw)
    if (!Number.isInteger(n) || n < 0 || n > max)
      throw new UsageError(`flows: --${name} must be a whole number from 0 to ${max}, not '${raw}'`)
    return n
  }
  const count = whole('count', 1_000_000)
  if (count === 0) throw new UsageError('flows: --count must be at least 1')
  const q = new URLSearchParams()
  q.set('last', String(whole('last', 1000) ?? (v.follow ? 0 : 20)))
  for (const k of ['verdict', 'endpoint', 'protocol'] as const) if (v[k] !== undefined) q.set(k, String(v[k]))
  const socket = agent.socket
  const show = (e: unknown): void =>
    out(json ? `${JSON.stringify(e)}\n` : `${flowLine(e as Record<string, unknown>)}\n`)
  const noAgent = noAgentOn(agent)
  if (!v.follow) {
    const events = (await adminGet(socket, `/v1/flows?${q}`).catch(noAgent)) as unknown[]
    for (const e of count === undefined ? events : events.slice(-count)) show(e)
    return 0
  }
  let seen = 0
  await adminStream(socket, `/v1/flows/follow?${q}`, (e) => {
    show(e)
    return count === undefined || ++seen < count
  }).catch(noAgent)
  return 0
}

/** `status`, `endpoint list`, `identity list`, `flows`; returns the exit code. */
/** `bpf policy get ENDPOINT`: the kernel map's entries for it, as they are. */
async function bpfPolicyCommand(args: string[], out: (s: string) => void): Promise<number> {
  const [sub, verb, endpoint, ...rest] = args
  if (sub !== 'policy' || verb !== 'get') throw new UsageError(`'bpf' needs the subcommand 'policy get ENDPOINT'`)
  if (endpoint === undefined || !/^\d{1,5}$/.test(endpoint))
    throw new UsageError(`bpf policy get: give an endpoint id (see l7proxy endpoint list), not '${endpoint ?? ''}'`)
  const { agent, json } = options('bpf policy get', rest)
  const entries = (await adminGet(agent.socket, `/v1/bpf/policy?endpoint=${endpoint}`).catch(
    noAgentOn(agent),
  )) as Array<{
    direction: string
    identity: number
    labels: string[]
    protocol: number
    port: number
    portPrefixLen: number
    deny: boolean
    proxyPort: number
  }>
  if (json) {
    out(`${JSON.stringify(entries, null, 2)}\n`)
    return 0
  }
  const proto = (p: number): string => ({ 0: 'ANY', 6: 'TCP', 17: 'UDP' })[p] ?? String(p)
  const port = (e: { port: number; portPrefixLen: number }): string =>
    e.portPrefixLen === 0 ? 'ANY' : e.portPrefixLen === 16 ? String(e.port) : `${e.port}/${e.portPrefixLen}`
  const rows = entries
    .sort((a, b) => a.direction.localeCompare(b.direction) || a.identity - b.identity || a.port - b.port)
    .map((e) => [
      e.direction,
      String(e.identity),
      e.labels.join(' ') || '-',
      proto(e.protocol),
      port(e),
      e.deny ? 'deny' : e.proxyPort ? `redirect to ${e.proxyPort}` : 'allow',
    ])
  out(renderTable(['DIRECTION', 'IDENTITY', 'LABELS', 'PROTO', 'PORT', 'VERDICT'], rows))
  return 0
}

export async function agentQueryCommand(
  cmd: 'status' | 'endpoint' | 'identity' | 'fqdn' | 'flows' | 'bpf' | 'metrics',
  args: string[],
  out: (s: string) => void,
): Promise<number> {
  if (cmd === 'flows') return flowsCommand(args, out)
  if (cmd === 'metrics') {
    const { agent } = options('metrics', args)
    out(await adminGetText(agent.socket, '/metrics').catch(noAgentOn(agent)))
    return 0
  }
  if (cmd === 'bpf') return bpfPolicyCommand(args, out)
  let rest = args
  if (cmd === 'fqdn') {
    const [sub, sub2, ...more] = args
    if (sub !== 'cache' || (sub2 !== 'list' && sub2 !== 'clean'))
      throw new UsageError(`'fqdn' needs the subcommand 'cache list' or 'cache clean'`)
    if (sub2 === 'clean') {
      const { agent } = options('fqdn cache clean', more)
      const r = (await adminGet(agent.socket, '/v1/fqdn/clean', 5_000, 'POST').catch(noAgentOn(agent))) as {
        removed: string[]
      }
      out(`forgot ${r.removed.length} name(s)${r.removed.length ? `: ${r.removed.join(', ')}` : ''}\n`)
      return 0
    }
    rest = more
  } else if (cmd !== 'status') {
    const [sub, ...more] = args
    if (sub !== 'list')
      throw new UsageError(`'${cmd}' needs the subcommand list${sub === undefined ? '' : `, not '${sub}'`}`)
    rest = more
  }
  const what = cmd === 'status' ? 'status' : cmd === 'fqdn' ? 'fqdn cache list' : `${cmd} list`
  const { agent, json, flags } = options(what, rest, cmd === 'endpoint' ? { flags: ['remote'] } : {})
  const path = {
    status: '/v1/status',
    endpoint: flags.has('remote') ? '/v1/endpoints?remote=1' : '/v1/endpoints',
    identity: '/v1/identities',
    fqdn: '/v1/fqdn',
  }[cmd as 'status' | 'endpoint' | 'identity' | 'fqdn']
  const body = await adminGet(agent.socket, path).catch(noAgentOn(agent))
  if (json) {
    out(`${JSON.stringify(body, null, 2)}\n`)
    return 0
  }
  if (cmd === 'status') out(statusText(body as Status))
  else if (cmd === 'endpoint') {
    const eps = body as Array<{
      id: number | null
      host: string
      node?: string
      identity: number | null
      ips: string[]
      enforce: { ingress: boolean; egress: boolean } | null
      rules: string[]
    }>
    const remote = flags.has('remote')
    const enforced = (on: boolean | undefined, e: (typeof eps)[number]): string =>
      e.enforce === null && e.node !== undefined ? '-' : on ? 'enforced' : 'open'
    const rows = eps.map((e) => [
      ...(remote ? [e.node ?? '(this)'] : []),
      e.id === null ? '-' : String(e.id),
      e.host,
      String(e.identity ?? '-'),
      e.ips.join(','),
      enforced(e.enforce?.ingress, e),
      enforced(e.enforce?.egress, e),
      e.rules.join(',') || '-',
    ])
    out(
      renderTable(
        [...(remote ? ['NODE'] : []), 'ID', 'HOST', 'IDENTITY', 'ADDRESSES', 'INGRESS', 'EGRESS', 'RULES'],
        rows,
      ),
    )
  } else if (cmd === 'fqdn') {
    const names = body as Array<{ name: string; ips: Array<{ ip: string; expiresAt: number }> }>
    const left = (at: number): string => String(Math.max(0, Math.round((at - Date.now()) / 1000)))
    out(
      renderTable(
        ['NAME', 'IPS', 'SECONDS LEFT'],
        names.map((n) => [n.name, n.ips.map((i) => i.ip).join(','), n.ips.map((i) => left(i.expiresAt)).join(',')]),
      ),
    )
  } else {
    const ids = body as Array<{ id: number; kind: string; labels: string[]; prefix?: string; nodes?: string[] }>
    const cluster = ids.some((i) => i.nodes !== undefined)
    out(
      renderTable(
        ['ID', 'KIND', 'LABELS / CIDR', ...(cluster ? ['NODES'] : [])],
        ids.map((i) => [
          String(i.id),
          i.kind,
          i.prefix ?? i.labels.join(' '),
          ...(cluster ? [i.nodes?.join(',') || '-'] : []),
        ]),
      ),
    )
  }
  return 0
}
