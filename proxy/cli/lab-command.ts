// `l7proxy lab up|down|status`: the network-namespace lab shared by tests, demo and benchmarks.

// The lab is a user of the product: its code is loaded only when this command runs.

import { parseArgs } from 'node:util'
import { DEFAULT_LAB, isValidLabName } from '../agent/lab-name.js'
import { renderTable } from './table.js'
import { UsageError } from './usage-error.js'

export const LAB_USAGE = `  lab up [--name NAME] [--nodes N]
                            create the lab's namespaces and start its servers (default name: ${DEFAULT_LAB});
                            harmless when it is already up. --nodes N (1-8, default 1): N node
                            namespaces on an underlay, the demo's pods spread over them, and an
                            etcd server their agents share (a cluster)
  lab down [--name NAME]    remove one lab; without --name, every lab, including leftovers of crashed runs
  lab status [-o table|json]
                            list labs, their namespaces, addresses and server processes`

function parse(sub: string, args: string[], options: { name?: boolean; output?: boolean; nodes?: boolean }) {
  let values: Record<string, unknown>
  try {
    ;({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        ...(options.name ? { name: { type: 'string' as const } } : {}),
        ...(options.output ? { output: { type: 'string' as const, short: 'o' } } : {}),
        ...(options.nodes ? { nodes: { type: 'string' as const } } : {}),
      },
    }))
  } catch (e) {
    throw new UsageError(`lab ${sub}: ${(e as Error).message}`)
  }
  const name = (values as { name?: string }).name
  if (name !== undefined && !isValidLabName(name)) {
    throw new UsageError(`lab ${sub}: invalid --name '${name}': use 1-16 characters from a-z and 0-9`)
  }
  const output = (values as { output?: string }).output ?? 'table'
  if (output !== 'table' && output !== 'json') throw new UsageError(`-o must be 'table' or 'json', got '${output}'`)
  const rawNodes = (values as { nodes?: string }).nodes
  const nodes = rawNodes === undefined ? 1 : Number(rawNodes)
  if (!/^[1-8]$/.test(rawNodes ?? '1'))
    throw new UsageError(`lab ${sub}: --nodes must be a whole number from 1 to 8, not '${rawNodes}'`)
  return { name, output, nodes }
}

/** What a node's or the underlay's namespace has: the pods' gateway, its underlay address. */
function nodeAddresses(host: string, nodes: number): string {
  const k = host === 'node' ? 1 : Number(/^node(\d)$/.exec(host)?.[1] ?? 0)
  if (host === 'underlay') return '198.19.0.254'
  if (k === 0) return '-'
  return nodes > 1 ? `198.18.0.1,198.19.0.${k}` : '198.18.0.1'
}

type LabStatus = Awaited<ReturnType<typeof import('../../lab/lab.js')['labStatus']>>[number]

function statusTable(labs: LabStatus[]): string {
  if (labs.length === 0) return 'no lab is up\n'
  const rows: string[][] = []
  for (const lab of labs) {
    for (const ns of lab.namespaces) {
      const host = lab.state?.hosts.find((h) => h.name === ns.host)
      const procs = lab.state?.processes.filter((p) => p.host === ns.host) ?? []
      rows.push([
        lab.name,
        lab.healthy ? 'up' : 'broken',
        ns.netns,
        host?.addresses.join(',') ?? nodeAddresses(ns.host, lab.state?.nodes ?? 1),
        procs.map((p) => `${p.kind}:${p.port}`).join(',') || '-',
        ns.pids.join(',') || '-',
      ])
    }
    if (lab.namespaces.length === 0) rows.push([lab.name, 'broken', '(state files only)', '-', '-', '-'])
  }
  return renderTable(['LAB', 'STATE', 'NAMESPACE', 'ADDRESSES', 'SERVICES', 'PIDS'], rows)
}

export async function labCommand(args: string[], out: (s: string) => void): Promise<void> {
  const [{ labDown, labStatus, labUp }, { SEARCH_DOMAIN }] = await Promise.all([
    import('../../lab/lab.js'),
    import('../../lab/topology.js'),
  ])
  const [sub, ...rest] = args
  switch (sub) {
    case 'up': {
      const { name = DEFAULT_LAB, nodes } = parse(sub, rest, { name: true, nodes: true })
      const { created } = await labUp(name, { nodes })
      out(created ? `lab '${name}' is up\n` : `lab '${name}' was already up; left as it is\n`)
      out(statusTable((await labStatus()).filter((l) => l.name === name)))
      out(
        `\ntry: ip netns exec l7lab-${name}-tiefighter curl -s -XPOST http://deathstar/v1/request-landing\n` +
          `     ip netns exec l7lab-${name}-tiefighter dig +short cantina.${SEARCH_DOMAIN}\n`,
      )
      return
    }
    case 'down': {
      const { name } = parse(sub, rest, { name: true })
      const r = await labDown(name)
      out(
        r.namespaces.length === 0
          ? 'nothing to remove\n'
          : `removed ${r.namespaces.length} namespaces (${r.namespaces.join(', ')}), ended ${r.killed.length} processes\n`,
      )
      return
    }
    case 'status': {
      const { output } = parse(sub, rest, { output: true })
      const labs = await labStatus()
      out(output === 'json' ? `${JSON.stringify(labs, null, 2)}\n` : statusTable(labs))
      return
    }
    case undefined:
      throw new UsageError("'lab' needs a subcommand: up, down or status")
    default:
      throw new UsageError(`unknown lab subcommand '${sub}' (expected up, down or status)`)
  }
}
