// `l7proxy status`, `l7proxy endpoint list`, `l7proxy identity list`: ask a lab's running agent
// over its admin socket; a table for people, `-o json` for scripts.

import { parseArgs } from 'node:util'
import { DEFAULT_LAB } from '../../lab/lab.js'
import { isValidLabName } from '../../lab/topology.js'
import { AdminError, adminGet, agentSocketPath } from '../agent/admin-socket.js'
import { renderTable } from './table.js'
import { UsageError } from './usage-error.js'

export const AGENT_QUERY_USAGE = `  status [--lab NAME] [-o table|json]
                            what the lab's running agent is doing: mode, policy revision and files,
                            proxy threads, connections and requests by outcome, kernel verdicts
  endpoint list [--lab NAME] [-o table|json]
                            the node's endpoints: identity, addresses, enforcement, rules
  identity list [--lab NAME] [-o table|json]
                            the identities the agent knows, with labels or CIDR`

interface Status {
  mode: string
  pid: number
  uptimeSeconds: number
  policy: { revision: number; files: string[]; directory: string | null }
  endpoints: number
  identities: number
  http: { listening: string; threads: number; connections?: number; requests?: Record<string, number> }
  kernelPackets: Record<string, number>
}

function options(what: string, args: string[]): { lab: string; json: boolean } {
  let values: { lab?: string; output?: string }
  try {
    ;({ values } = parseArgs({ args, strict: true, allowPositionals: false, options: { lab: { type: 'string' }, output: { type: 'string', short: 'o' } } }))
  } catch (e) {
    throw new UsageError(`${what}: ${(e as Error).message}`)
  }
  const lab = values.lab ?? DEFAULT_LAB
  if (!isValidLabName(lab)) throw new UsageError(`${what}: invalid --lab '${lab}': use 1-16 characters from a-z and 0-9`)
  const output = values.output ?? 'table'
  if (output !== 'table' && output !== 'json') throw new UsageError(`-o must be 'table' or 'json', got '${output}'`)
  return { lab, json: output === 'json' }
}

const counts = (r: Record<string, number> | undefined): string =>
  Object.entries(r ?? {})
    .map(([k, v]) => `${k} ${v}`)
    .join(', ') || '-'

function statusText(s: Status): string {
  const rows: string[][] = [
    ['mode', s.mode],
    ['agent', `pid ${s.pid}, up ${s.uptimeSeconds} s`],
    ['policy', `revision ${s.policy.revision}, ${s.policy.files.length} file(s)${s.policy.directory ? ` from ${s.policy.directory}` : ''}`],
    ['endpoints', String(s.endpoints)],
    ['identities', String(s.identities)],
    ['http proxy', `${s.http.listening}, ${s.http.threads} thread(s), ${s.http.connections ?? 0} connection(s)`],
    ['http requests', counts(s.http.requests)],
    ['kernel packets', counts(s.kernelPackets)],
  ]
  return renderTable(['WHAT', 'STATE'], rows)
}

/** `status`, `endpoint list`, `identity list`; returns the exit code. */
export async function agentQueryCommand(cmd: 'status' | 'endpoint' | 'identity', args: string[], out: (s: string) => void): Promise<number> {
  let rest = args
  if (cmd !== 'status') {
    const [sub, ...more] = args
    if (sub !== 'list') throw new UsageError(`'${cmd}' needs the subcommand list${sub === undefined ? '' : `, not '${sub}'`}`)
    rest = more
  }
  const what = cmd === 'status' ? 'status' : `${cmd} list`
  const { lab, json } = options(what, rest)
  const path = cmd === 'status' ? '/v1/status' : cmd === 'endpoint' ? '/v1/endpoints' : '/v1/identities'
  const body = await adminGet(agentSocketPath(lab), path).catch((e: unknown) => {
    if (e instanceof AdminError && e.code === 'ENOAGENT') throw new AdminError('ENOAGENT', `no agent is running on lab '${lab}' (start one: l7proxy agent --lab ${lab})`)
    throw e
  })
  if (json) {
    out(JSON.stringify(body, null, 2) + '\n')
    return 0
  }
  if (cmd === 'status') out(statusText(body as Status))
  else if (cmd === 'endpoint') {
    const eps = body as Array<{ id: number; host: string; identity: number | null; ips: string[]; enforce: { ingress: boolean; egress: boolean } | null; rules: string[] }>
    out(renderTable(['ID', 'HOST', 'IDENTITY', 'ADDRESSES', 'INGRESS', 'EGRESS', 'RULES'], eps.map((e) => [String(e.id), e.host, String(e.identity ?? '-'), e.ips.join(','), e.enforce?.ingress ? 'enforced' : 'open', e.enforce?.egress ? 'enforced' : 'open', e.rules.join(',') || '-'])))
  } else {
    const ids = body as Array<{ id: number; kind: string; labels: string[]; prefix?: string }>
    out(renderTable(['ID', 'KIND', 'LABELS / CIDR'], ids.map((i) => [String(i.id), i.kind, i.prefix ?? i.labels.join(' ')])))
  }
  return 0
}
