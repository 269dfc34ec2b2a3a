// How fast a change on one node is enforced on the others, in a cluster of three lab nodes:
//   npm run bench:cluster [-- --sizes 100,1000 --rate 100 --seconds 10 --mode sk-assign --lab NAME --out FILE]
//
// Nodes 2 and 3 run real agents (the example policy, whose deathstar selects empire peers by
// identity). Node 1 is the cluster part of an agent driven by the benchmark (cluster-driver.ts):
// for each population size, its endpoints (ten per identity) are published, then one is removed
// or added in turn at --rate changes per second for --seconds. A change's propagation is from
// when node 1 made it to when the last other node wrote it to its kernel maps (the agents log
// that moment); p50 and p99 over all changes, and per kind (first allowed packet: an address
// added; first drop: one removed). An address removed before its addition was written is never
// seen by any node (coalesced), and is counted apart from changes a node missed (lost). Also etcd's keys and bytes per endpoint, and how many new
// identities one node allocates per second, one at a time and all at once.

import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { netnsArgv } from '../lab/netns.js'
import { type LabNode, startLabNode } from '../lab/node-agent.js'
import { clusterNodeName, etcdClientUrl, nodeNetnsOf, nodeUnderlayAddress } from '../lab/topology.js'
import { distPath, projectRoot } from '../lib/project-root.js'
import { renderTable } from '../proxy/cli/table.js'
import {
  benchOptions,
  benchPin,
  inLabRounds,
  modeOption,
  percentile,
  runBench,
  UsageError,
  wholeOption,
  writeResult,
} from './bench-support.js'
import type { DriverInput, DriverLine } from './cluster-driver.js'

const USAGE =
  'usage: npm run bench:cluster [-- --sizes 100,1000 --rate 100 --seconds 10 --mode sk-assign --lab NAME --out FILE]'
const NODES = 3

interface Applied {
  added: Set<string>
  removed: Set<string>
  at: number
}

interface Propagation {
  size: number
  changes: number
  /** Changes some other node never applied: `coalesced` when the address was added and removed before it was written (node 1 wrote neither), `lost` otherwise. */
  coalesced: number
  lost: number
  ms: { p50: number; p99: number; max: number }
  addMs: { p50: number; p99: number }
  removeMs: { p50: number; p99: number }
  /** The slower node each time, by node: p99. */
  byNodeP99: Record<string, number>
  keysPerEndpoint: number
  bytesPerEndpoint: number
  identities: number
  /** From publishing the whole population to every other node having it. */
  filledMs: number
}

const round = (n: number): number => Math.round(n * 100) / 100

/** What an agent logged applying other nodes' endpoints. */
function appliedLines(logFile: string): Applied[] {
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"msg":"kvstore: remote endpoints applied"'))
    .map((l) => JSON.parse(l) as { added: string[]; removed: string[]; at: number })
    .map((l) => ({ added: new Set(l.added), removed: new Set(l.removed), at: l.at }))
}

/** When a node applied a change: the first line after it was made that has it. */
function appliedAt(lines: readonly Applied[], c: Extract<DriverLine, { type: 'change' }>): number | null {
  for (const l of lines) if (l.at >= c.at - 1 && (c.kind === 'add' ? l.added : l.removed).has(c.ip)) return l.at
  return null
}

function stats(values: number[]): { p50: number; p99: number } {
  return { p50: round(percentile(values, 50)), p99: round(percentile(values, 99)) }
}

async function runDriver(lab: string, input: DriverInput): Promise<DriverLine[]> {
  const [cmd, ...args] = netnsArgv(nodeNetnsOf(lab, 1), [
    process.execPath,
    distPath('bench/cluster-driver.js'),
    JSON.stringify(input),
  ])
  const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  const lines: DriverLine[] = []
  createInterface({ input: child.stdout! }).on('line', (l) => {
    const line = JSON.parse(l) as DriverLine
    lines.push(line)
    if (line.type === 'population')
      process.stderr.write(
        `${line.size} endpoints on node 1 known to the others after ${Math.round(line.filledMs)} ms; changing them at ${input.rate}/s for ${input.seconds} s\n`,
      )
  })
  const code = await new Promise<number | null>((r) => child.once('exit', r))
  if (code !== 0) throw new Error(`the node 1 driver exited with ${code}`)
  return lines
}

async function main(): Promise<void> {
  const values = benchOptions({
    sizes: '100,1000',
    rate: '100',
    seconds: '10',
    mode: 'sk-assign',
    allocations: '200',
    lab: 'bclu',
    out: 'bench-results/cluster.json',
  })
  const sizes = values.sizes.split(',').map(Number)
  if (sizes.some((s) => !Number.isInteger(s) || s < 2 || s > 10_000))
    throw new UsageError(`--sizes: whole numbers from 2 to 10000, got '${values.sizes}'`)
  const rate = wholeOption(values, 'rate', 1, 1000)
  const seconds = wholeOption(values, 'seconds', 1, 600)
  const allocations = wholeOption(values, 'allocations', 1, 10_000)
  const mode = modeOption(values.mode)
  const lab = values.lab
  const pins = [2, 3].map((k) => benchPin(lab, `cluster-node${k}`))
  const results = await inLabRounds({
    lab,
    nodes: NODES,
    tmpPrefix: 'l7-bench-cluster-',
    scenarios: ['cluster'],
    rounds: 1,
    pins,
    describe: (r: { propagation: Propagation[] }) =>
      r.propagation.map((p) => `${p.size}: p99 ${p.ms.p99} ms`).join(', '),
    measure: async (_s, dir, hold) => {
      const policyFile = join(dir, 'star-wars.yaml')
      writeFileSync(policyFile, readFileSync(join(projectRoot(), 'policy/examples/star-wars.yaml')))
      const agents: LabNode[] = []
      hold(async () => void (await Promise.all(agents.map((a) => a.stop()))))
      for (const k of [2, 3]) {
        agents.push(
          await startLabNode({
            lab,
            node: k,
            mode,
            policyFile,
            pin: pins[k - 2]!,
            admin: join(dir, `node${k}.sock`),
            logFile: join(dir, `node${k}.log`),
            threads: 1,
          }),
        )
      }
      const lines = await runDriver(lab, {
        etcd: etcdClientUrl(),
        node: clusterNodeName(1),
        nodeAddress: nodeUnderlayAddress(1),
        peers: [2, 3].map((k) => join(dir, `node${k}.sock`)),
        sizes,
        rate,
        seconds,
        allocations,
      })
      for (const a of agents) await a.stop()
      hold(null)
      const applied = [2, 3].map((k) => appliedLines(join(dir, `node${k}.log`)))
      const propagation = sizes.map((size): Propagation => {
        const changes = lines.filter(
          (l): l is Extract<DriverLine, { type: 'change' }> => l.type === 'change' && l.size === size,
        )
        const pop = lines.find(
          (l): l is Extract<DriverLine, { type: 'population' }> => l.type === 'population' && l.size === size,
        )!
        const per = changes.map((c) => ({ c, at: applied.map((a) => appliedAt(a, c)) }))
        const whole = per.filter((p) => p.at.every((x) => x !== null))
        // An address removed right after it was added: node 1 wrote neither, no node saw either.
        const unseen = (ip: string): boolean =>
          per.filter((p) => p.c.ip === ip).length === 2 &&
          per.filter((p) => p.c.ip === ip).every((p) => p.at.every((x) => x === null))
        const coalesced = per.filter((p) => !whole.includes(p) && unseen(p.c.ip)).length
        const delay = (p: (typeof per)[number]): number => Math.max(...p.at.map((x) => x! - p.c.at))
        const all = whole.map(delay)
        return {
          size,
          changes: changes.length,
          coalesced,
          lost: per.length - whole.length - coalesced,
          ms: { ...stats(all), max: round(Math.max(...all)) },
          addMs: stats(whole.filter((p) => p.c.kind === 'add').map(delay)),
          removeMs: stats(whole.filter((p) => p.c.kind === 'remove').map(delay)),
          byNodeP99: Object.fromEntries(
            [2, 3].map((k, i) => [
              clusterNodeName(k),
              round(
                percentile(
                  whole.map((p) => p.at[i]! - p.c.at),
                  99,
                ),
              ),
            ]),
          ),
          keysPerEndpoint: round(pop.keys),
          bytesPerEndpoint: Math.round(pop.bytes),
          identities: pop.identities,
          filledMs: Math.round(pop.filledMs),
        }
      })
      const allocation = lines.find((l): l is Extract<DriverLine, { type: 'allocation' }> => l.type === 'allocation')!
      return { propagation, allocation }
    },
  })
  const r = results.cluster[0]!
  const out = writeResult(values.out, { benchmark: 'cluster', mode, nodes: NODES, rate, seconds, ...r })
  process.stdout.write(
    renderTable(
      [
        'endpoints',
        'identities',
        'changes',
        'p50 ms',
        'p99 ms',
        'max ms',
        'add p50/p99',
        'remove p50/p99',
        'coalesced',
        'lost',
        'keys/endpoint',
        'bytes/endpoint',
      ],
      r.propagation.map((p) => [
        String(p.size),
        String(p.identities),
        String(p.changes),
        String(p.ms.p50),
        String(p.ms.p99),
        String(p.ms.max),
        `${p.addMs.p50}/${p.addMs.p99}`,
        `${p.removeMs.p50}/${p.removeMs.p99}`,
        String(p.coalesced),
        String(p.lost),
        String(p.keysPerEndpoint),
        String(p.bytesPerEndpoint),
      ]),
    ),
  )
  const a = r.allocation
  process.stdout.write(
    `identities allocated by one node: ${Math.round(a.sequentialPerSecond)}/s one at a time, ${Math.round(a.concurrentPerSecond)}/s ${a.allocations} at once\n`,
  )
  process.stdout.write(
    `${mode}, ${NODES} nodes, ${rate} changes/s for ${seconds} s per size; propagation: node 1's change to the last other node's kernel maps; wrote ${out}\n`,
  )
}

runBench('bench:cluster', USAGE, main)
