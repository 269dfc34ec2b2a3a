// What the lab benchmarks share: bad arguments as usage errors (exit 2), whole-number options,
// a process's CPU time, the median run, percentiles, peer proxies' processes, rounds in a lab
// of their own with cleanup on every way out, and the exit codes.

import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, release, tmpdir, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { type LabState, labDown, labUp } from '../lab/lab.js'
import { spawnDetachedIn, stopProcess, waitListening } from '../lab/netns.js'
import type { LabNode } from '../lab/node-agent.js'
import { isValidLabName } from '../lab/topology.js'
import { projectRoot } from '../lib/project-root.js'

import { UsageError } from '../proxy/cli/usage-error.js'
import { parseMode, type RedirectMode } from '../redirect-bpf/modes/redirect-mode.js'

// One class for a bad command line, whether a benchmark runs alone or as `l7proxy compare`.
export { UsageError }

/** A process's CPU time in seconds: in user space (utime) and in the kernel on its behalf (stime). */
export function cpuTimes(pid: number): { user: number; system: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 } // USER_HZ
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: number): number {
  const t = cpuTimes(pid)
  return t.user + t.system
}

/**
 * A lab benchmark's command line: every option takes a value, `defaults` names them all; an
 * unknown option, a missing value or a bad --lab name is a usage error.
 */
export function benchOptions<K extends string>(defaults: Record<K, string>, args?: string[]): Record<K, string> {
  const options: Record<string, { type: 'string'; default: string }> = {}
  for (const [k, v] of Object.entries<string>(defaults)) options[k] = { type: 'string', default: v }
  let values: Record<string, unknown>
  try {
    values = parseArgs({ options, ...(args ? { args } : {}) }).values
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
  if ('lab' in values && !isValidLabName(String(values.lab)))
    throw new UsageError(`--lab '${values.lab}' is not a valid lab name`)
  return values as Record<K, string>
}

/**
 * What a result was measured with: the commit (and whether the tree had changes), Node, the
 * kernel, the machine, and the command's arguments (its defaults aside, every option it ran with).
 */
export function buildInfo(): {
  commit: string | null
  dirty: boolean | null
  node: string
  kernel: string
  cpus: number
  memoryGiB: number
  cpuModel: string
  args: string[]
  date: string
} {
  const git = (...args: string[]): string | null => {
    try {
      return execFileSync('git', ['-C', projectRoot(), ...args], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim()
    } catch {
      return null
    }
  }
  const status = git('status', '--porcelain')
  return {
    commit: git('rev-parse', 'HEAD'),
    dirty: status === null ? null : status !== '',
    node: process.version,
    kernel: release(),
    cpus: availableParallelism(),
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    args: process.argv.slice(2),
    date: new Date().toISOString(),
  }
}

/** Writes a benchmark's result as JSON, with what it was measured with (making its directory); returns where. */
export function writeResult(out: string, result: unknown): string {
  const path = resolve(out)
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(path, `${JSON.stringify({ build: buildInfo(), ...(result as object) }, null, 2)}\n`)
  return path
}

/**
 * Runs `measure` and adds the CPU `pid` used meanwhile, in cores, and the part of it spent in
 * the kernel (system calls: for a proxy mostly TCP); both null when there is no pid.
 */
export async function withProxyCpu<T extends object>(
  pid: number | null,
  measure: () => Promise<T>,
): Promise<T & { proxyCpuCores: number | null; proxySystemCores: number | null }> {
  const cpu0 = pid === null ? null : cpuTimes(pid)
  const t0 = process.hrtime.bigint()
  const r = await measure()
  const wall = Number(process.hrtime.bigint() - t0) / 1e9
  if (cpu0 === null) return { ...r, proxyCpuCores: null, proxySystemCores: null }
  const cpu1 = cpuTimes(pid!)
  return {
    ...r,
    proxyCpuCores: (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall,
    proxySystemCores: (cpu1.system - cpu0.system) / wall,
  }
}

/** The option `name` as a whole number in [min, max], or a usage error saying so. */
export function wholeOption(values: Record<string, unknown>, name: string, min: number, max: number): number {
  const v = Number(values[name])
  if (!Number.isInteger(v) || v < min || v > max)
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, not '${values[name]}'`)
  return v
}

/** The run whose `key` is the median of the runs'. */
export function medianRun<T>(runs: readonly T[], key: (r: T) => number): T {
  return [...runs].sort((a, b) => key(a) - key(b))[Math.floor(runs.length / 2)]!
}

/** The p-th percentile (0-100) of `values` (nearest rank); NaN for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

/** Runs a benchmark's main: a usage error exits 2 with the usage, any other error 1. */
export function runBench(name: string, usage: string, main: () => Promise<void>): void {
  main().catch((e: Error) => {
    process.stderr.write(`${name}: ${e.message}\n${e instanceof UsageError ? `${usage}\n` : ''}`)
    process.exit(e instanceof UsageError ? 2 : 1)
  })
}

/** --mode as a redirect mode, or a usage error saying which modes there are. */
export function modeOption(value: string): RedirectMode {
  try {
    return parseMode(value)
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
}

/** Where a benchmark scenario's lab node pins its maps. */
export function benchPin(lab: string, scenario: string): string {
  return `/run/l7proxy/bench-bpffs-${lab}-${scenario}`
}

/** A scenario's processes: its lab node, and a peer proxy (HAProxy, dnsdist) when it has one. */
export interface RunningScenario {
  node: LabNode
  /** The process whose CPU is the proxy's (null: no proxy). */
  proxyPid: number | null
  peerPid: number | null
}

/** A scenario with a peer proxy, which can say how many operations it has handled so far. */
export interface RunningPeer extends RunningScenario {
  handled(): Promise<number>
}

export interface PeerOptions {
  ns: string
  argv: readonly string[]
  log: string
  port: number
  proto: 'tcp' | 'udp'
  what: string
  /** A cgroup2 directory to start it in (sockmap's), or none. */
  cgroup?: string | null
}

/**
 * Starts a peer proxy next to `node`, in the foreground inside `ns`, detached so its PID is
 * ours to stop, and waits until it listens on `port`; stops it, and the node, if it does not.
 */
export async function withPeer(node: LabNode, o: PeerOptions): Promise<RunningScenario> {
  let pid: number | null = null
  try {
    pid = await spawnDetachedIn(o.ns, o.argv, o.log, o.cgroup ?? null)
    await waitListening({
      ns: o.ns,
      port: o.port,
      proto: o.proto,
      pid,
      logFile: o.log,
      what: o.what,
      timeoutMs: 10_000,
    })
  } catch (e) {
    await stopScenario({ node, proxyPid: pid, peerPid: pid })
    throw e
  }
  return { node, proxyPid: pid, peerPid: pid }
}

export async function stopScenario(r: RunningScenario): Promise<void> {
  if (r.peerPid !== null) await stopProcess(r.peerPid)
  await r.node.stop()
}

/**
 * Runs `measure` for each scenario in turn, `rounds` times (interleaved, so machine drift does
 * not favour one), in a lab of its own and a scratch directory. `measure` starts and stops its
 * scenario, and hands its stop to `hold` meanwhile, so an error or a signal still stops it; the
 * lab, the directory and the pin directories are removed at the end in every case.
 */
export async function inLabRounds<S extends string, R>(o: {
  lab: string
  /** Nodes of the lab (default 1). */
  nodes?: number
  tmpPrefix: string
  scenarios: readonly S[]
  rounds: number
  pins: readonly string[]
  measure: (s: S, dir: string, hold: (stop: (() => Promise<void>) | null) => void) => Promise<R>
  describe: (r: R) => string
  /** Once the lab is up, before the first round. */
  prepare?: (lab: LabState) => void
}): Promise<Record<S, R[]>> {
  const dir = mkdtempSync(join(tmpdir(), o.tmpPrefix))
  let stop: (() => Promise<void>) | null = null
  const cleanup = async (): Promise<void> => {
    if (stop) await stop().catch(() => undefined)
    stop = null
    await labDown(o.lab).catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
    for (const pin of o.pins) rmSync(pin, { recursive: true, force: true })
  }
  const onSignal = (): void => void cleanup().finally(() => process.exit(130))
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const results = Object.fromEntries(o.scenarios.map((s) => [s, [] as R[]])) as Record<S, R[]>
  try {
    const { state } = await labUp(o.lab, { nodes: o.nodes ?? 1 })
    o.prepare?.(state)
    for (let round = 0; round < o.rounds; round++) {
      for (const s of o.scenarios) {
        const r = await o.measure(s, dir, (fn) => (stop = fn))
        stop = null
        results[s].push(r)
        process.stderr.write(`round ${round + 1}/${o.rounds} ${s}: ${o.describe(r)}\n`)
      }
    }
  } finally {
    await cleanup()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  return results
}

/**
 * Where a benchmark's processes run. `shared`: wherever the scheduler puts them (the proxy, the
 * load generator and the lab's servers share every CPU). `split`: the proxy alone on the last
 * CPU, the load generator and the servers on the others, so the proxy's CPU per operation is
 * measured without them (runs agree within a few percent; shared ones within 10-15%).
 */
export interface CpuLayout {
  name: 'shared' | 'split'
  /** taskset CPU lists; null for `shared`. */
  proxy: string | null
  rest: string | null
}

export function cpuLayoutOption(value: string): CpuLayout {
  if (value === 'shared') return { name: 'shared', proxy: null, rest: null }
  if (value !== 'split') throw new UsageError(`--cpus must be shared or split, not '${value}'`)
  const n = availableParallelism()
  if (n < 2) throw new UsageError('--cpus split needs at least 2 CPUs')
  return { name: 'split', proxy: String(n - 1), rest: n === 2 ? '0' : `0-${n - 2}` }
}

/** Binds every thread of process `pid` (those it starts later follow theirs) to `cpus` (a taskset list). */
export function pinProcess(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' })
}

/** In the `split` layout, binds the lab's servers to the CPUs the proxy does not have. */
export function pinLabServers(layout: CpuLayout, lab: LabState): void {
  if (layout.rest !== null) for (const p of lab.processes) pinProcess(p.pid, layout.rest)
}

/**
 * A benchmark's load comes from one client pod: the per-source DNS query rate is lifted (its peers,
 * dnsdist and HAProxy, have none by default), the connection and stream budgets stay as a node has them.
 */
export const ONE_CLIENT = { dnsQueries: { perSecondPerSource: 0 } } as const
