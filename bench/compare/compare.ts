// `l7proxy compare`: the same workloads once per redirect mode, once with no redirect at all
// (mode none: the datapath enforces L3/L4, no L7 rule, nothing reaches the proxy) and once per
// peer proxy that applies (contenders.ts), in a lab of its own. Runs are interleaved (every mode
// of a workload in turn, R rounds) so machine drift does not favour one; each run starts its
// node (and peer) afresh, warms up, measures, and stops it, and the counters (kernel verdicts,
// proxy requests, sk_msg messages, the peer's own statistics) must confirm the path the mode
// promises, or the run is marked invalid and left out. Prints a table and writes JSON and a
// self-contained HTML report.

import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, release } from 'node:os'
import { join } from 'node:path'
import { startLabNode } from '../../lab/node-agent.js'
import { hostNetns, labCgroupName } from '../../lab/topology.js'
import { renderTable } from '../../proxy/cli/table.js'
import { UsageError } from '../../proxy/cli/usage-error.js'
import { cgroup2Root } from '../../redirect-bpf/cgroup.js'
import { enableRunStats } from '../../redirect-bpf/program-stats.js'
import {
  benchOptions,
  benchPin,
  cpuSeconds,
  inLabRounds,
  medianRun,
  ONE_CLIENT,
  stopScenario,
  wholeOption,
  writeResult,
} from '../bench-support.js'
import type { LoadResult } from '../load-generators.js'
import { COMPARE_MODES, type CompareMode, carries, contender, modeLabel, startPeer } from './contenders.js'
import { type ReportCell, renderReport } from './report-html.js'
import { type ProxyTotals, WORKLOAD_DEFS, WORKLOADS, type Workload, type WorkloadName } from './workloads.js'

interface Run extends LoadResult {
  valid: boolean
  /** Why the counters do not confirm the path (null when they do). */
  reason: string | null
  proxyCpuSeconds: number
  softirqSeconds: number
  /** Proxy CPU plus softirq, per operation. */
  cpuUsPerOp: number | null
}

/** The machine's softirq time so far, in seconds (all CPUs). */
function softirqSeconds(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/)
  return Number(cpu[7]) / 100 // USER_HZ
}

function listOption<T extends string>(raw: string, all: readonly T[], what: string): T[] {
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  const bad = items.find((i) => !(all as readonly string[]).includes(i))
  if (bad !== undefined || items.length === 0)
    throw new UsageError(`--${what}: '${bad ?? raw}' is not one of ${all.join(', ')}`)
  return [...new Set(items)] as T[]
}

/**
 * Why a run's counters do not show the path its mode promises, or null. `peerHandled`: the
 * operations a peer proxy counted over the measured run (null without a peer).
 */
export function pathProblem(
  mode: CompareMode,
  w: Workload,
  totals: ProxyTotals,
  load: LoadResult,
  peerHandled: number | null = null,
): string | null {
  const proxied = w.proxied(totals)
  const steered = totals.kernelPackets['to-proxy'] ?? 0
  if (load.ops === 0) return 'no operation completed'
  if (mode === 'none')
    return proxied > 0 || steered > 0
      ? `with no L7 rule the proxy still saw ${proxied} operations (${steered} packets steered)`
      : null
  if (contender(mode).peer !== null) {
    if (proxied > 0) return `l7proxy saw ${proxied} operations meant for ${mode}`
    if ((peerHandled ?? 0) < load.ops) return `${mode} handled ${peerHandled ?? 0} of the ${load.ops} operations`
  } else if (proxied < load.ops) return `the proxy saw ${proxied} of the ${load.ops} operations`
  if (contender(mode).datapath === 'sockmap')
    return (totals.sockmap?.messages ?? 0) === 0 ? 'sk_msg redirected no message' : null
  return steered === 0 ? 'the kernel counted no packet steered to the proxy' : null
}

export async function runCompare(args: string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const values = benchOptions(
    {
      duration: '5',
      runs: '3',
      warmup: '1',
      modes: COMPARE_MODES.join(','),
      workloads: WORKLOADS.join(','),
      threads: String(availableParallelism()),
      lab: 'compare',
      out: 'bench-results/compare.json',
    },
    args,
  )
  const duration = wholeOption(values, 'duration', 1, 300)
  const runs = wholeOption(values, 'runs', 1, 9)
  const warmup = wholeOption(values, 'warmup', 0, 60)
  const threads = wholeOption(values, 'threads', 1, 64)
  const modes = listOption(values.modes, COMPARE_MODES, 'modes')
  const workloads = listOption(values.workloads, WORKLOADS, 'workloads')
  if (!values.out.endsWith('.json'))
    throw new UsageError(`--out must name a .json file (the HTML report goes next to it), not '${values.out}'`)
  const lab = values.lab
  const pin = benchPin(lab, 'compare')
  const pairs = workloads.flatMap((w) =>
    modes.filter((m) => carries(m, WORKLOAD_DEFS[w])).map((m) => `${w}/${m}` as const),
  )
  const total = pairs.length * runs
  let done = 0
  const started = Date.now()
  // What the datapath's programs cost per operation, in every mode: the kernel counts while on.
  // (A kernel before 5.8 has no such switch: the column is then left empty, the rest measured.)
  let statsOff = (): void => {}
  try {
    statsOff = enableRunStats()
  } catch (e) {
    err(`compare: BPF ns/op left out: ${(e as Error).message}\n`)
  }
  const measured = await inLabRounds({
    lab,
    tmpPrefix: 'l7-compare-',
    scenarios: pairs,
    rounds: runs,
    pins: [pin],
    describe: (r: Run) => {
      done++
      const left = Math.round((((Date.now() - started) / done) * (total - done)) / 1000)
      return `${Math.round(r.opsPerSec)} ops/s${r.valid ? '' : ` INVALID (${r.reason})`} [${done}/${total}, about ${Math.floor(left / 60)}m${String(left % 60).padStart(2, '0')}s left]`
    },
    measure: async (pair, dir, hold) => {
      const [name, mode] = pair.split('/') as [WorkloadName, CompareMode]
      const w = WORKLOAD_DEFS[name]
      const how = contender(mode)
      const policyFile = join(dir, 'policy.yaml')
      writeFileSync(policyFile, w.policy(how.l7))
      const logFile = join(dir, 'node.log')
      // sockmap: the node, the peer (if any) and the client are in the lab's cgroup, as its servers are.
      const cgroup = how.datapath === 'sockmap' ? join(cgroup2Root(), labCgroupName(lab)) : null
      const node = await startLabNode({
        lab,
        mode: how.datapath,
        policyFile,
        pin,
        threads,
        logFile,
        overload: ONE_CLIENT,
        ...(cgroup ? { sockmapCgroup: labCgroupName(lab) } : {}),
        ...(how.peer === 'haproxy' ? { http: 'external' } : how.peer === 'dnsdist' ? { dns: 'external' } : {}),
      })
      hold(async () => void (await node.stop()))
      const peer = how.peer === null ? null : await startPeer(mode, w, node, { lab, dir, threads, cgroup })
      // The peer (if any) and the node; stopping again is a no-op.
      const stop = async (): Promise<void> => void (await (peer ? stopScenario(peer) : node.stop()))
      hold(stop)
      const proxyPid = peer?.peerPid ?? node.pid
      try {
        const client = { ns: hostNetns(lab, 'tiefighter'), cgroup }
        const warm = warmup > 0 ? await w.run(client, { seconds: warmup, dir }) : null
        const handled0 = peer ? await peer.handled() : 0
        const cpu0 = cpuSeconds(proxyPid)
        const soft0 = softirqSeconds()
        const load = await w.run(client, { seconds: duration, dir })
        const proxyCpuSeconds = cpuSeconds(proxyPid) - cpu0
        const soft = softirqSeconds() - soft0
        const peerHandled = peer ? (await peer.handled()) - handled0 : null
        await stop()
        const totals = node.lines().find((l) => l.msg === 'datapath stopped') as unknown as ProxyTotals | undefined
        const reason =
          totals === undefined
            ? 'the node did not report its counters'
            : pathProblem(mode, w, totals, load, peerHandled)
        const cpuSecondsUsed = (mode === 'none' ? 0 : proxyCpuSeconds) + soft
        // The node's programs ran over its whole life: warm-up and measured operations alike.
        const programs = totals?.programs ?? {}
        const programNs = Object.values(programs).reduce((sum, p) => sum + p.ns, 0)
        const lifeOps = (warm?.ops ?? 0) + load.ops
        return {
          ...load,
          valid: reason === null,
          reason,
          proxyCpuSeconds,
          softirqSeconds: soft,
          cpuUsPerOp: load.ops > 0 ? (cpuSecondsUsed / load.ops) * 1e6 : null,
          programs,
          bpfNsPerOp: programNs > 0 && lifeOps > 0 ? programNs / lifeOps : null,
        }
      } finally {
        await stop()
        rmSync(logFile, { force: true })
      }
    },
  }).finally(statsOff)

  const results = workloads.map((name) => {
    const w = WORKLOAD_DEFS[name]
    const cells = modes
      .filter((m) => carries(m, w))
      .map((mode) => {
        const all = measured[`${name}/${mode}`]
        const valid = all.filter((r) => r.valid)
        const median = valid.length > 0 ? medianRun(valid, (r) => r.opsPerSec) : null
        const rates = valid.map((r) => r.opsPerSec)
        return {
          mode,
          valid: median !== null,
          reason: median === null ? (all.find((r) => !r.valid)?.reason ?? 'no run') : null,
          median,
          spread: rates.length > 0 ? { min: Math.min(...rates), max: Math.max(...rates) } : null,
          runs: all,
        }
      })
    return { name, what: w.what, unit: w.unit, cells }
  })
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Linux ${release()}, Node ${process.version}`
  const settings = `${runs} interleaved run(s) x ${duration} s after ${warmup} s warm-up, ${threads} HTTP proxy thread(s), one DNS thread`
  const json = {
    benchmark: 'compare',
    date: new Date().toISOString(),
    machine,
    settings,
    duration,
    runs,
    warmup,
    threads,
    modes,
    workloads: results,
  }
  const jsonPath = writeResult(values.out, json)
  const htmlPath = jsonPath.replace(/\.json$/, '.html')
  writeFileSync(
    htmlPath,
    renderReport({
      title: 'l7proxy: redirect modes compared',
      date: json.date,
      machine,
      settings,
      workloads: results.map((r) => ({
        name: r.name,
        what: r.what,
        unit: r.unit,
        cells: r.cells.map(
          (c): ReportCell => ({
            mode: modeLabel(c.mode),
            valid: c.valid,
            reason: c.reason,
            opsPerSec: c.median?.opsPerSec ?? null,
            spread: c.spread,
            p50Ms: c.median?.latencyMs.p50 ?? null,
            p99Ms: c.median?.latencyMs.p99 ?? null,
            cpuUsPerOp: c.median?.cpuUsPerOp ?? null,
            runs: c.runs.length,
          }),
        ),
      })),
    }),
  )
  const f = (n: number | null | undefined, d = 2): string =>
    n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(d)
  out(
    renderTable(
      ['workload', 'mode', 'ops/s', 'spread', 'p50 ms', 'p99 ms', 'CPU us/op', 'BPF ns/op', 'path'],
      results.flatMap((r) =>
        r.cells.map((c) => [
          r.name,
          modeLabel(c.mode),
          c.median ? `${Math.round(c.median.opsPerSec)} ${r.unit}` : '-',
          c.spread ? `${Math.round(c.spread.min)}-${Math.round(c.spread.max)}` : '-',
          f(c.median?.latencyMs.p50),
          f(c.median?.latencyMs.p99),
          f(c.median?.cpuUsPerOp, 1),
          f(c.median?.bpfNsPerOp, 0),
          c.valid ? 'confirmed' : `INVALID: ${c.reason}`,
        ]),
      ),
    ),
  )
  out(`${settings}; wrote ${jsonPath} and ${htmlPath}\n`)
  const invalid = results.flatMap((r) => r.cells.filter((c) => !c.valid).map((c) => `${r.name}/${c.mode}`))
  if (invalid.length > 0) err(`compare: no run confirmed its path for ${invalid.join(', ')}\n`)
  return invalid.length > 0 ? 1 : 0
}
