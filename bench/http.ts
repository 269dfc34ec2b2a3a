// HTTP proxy benchmark in the lab:
//   npm run bench:http [-- --duration S --runs R --warmup S --connections C --threads T --mode M --cpus shared|split --lab NAME --out FILE]
//
// Keep-alive `GET /v1/` from the tiefighter pod to the deathstar with wrk, three ways on one lab,
// the same cores and the same client:
//   direct   an L3/L4 allow on port 80 and no L7 rule: the kernel passes it, no proxy
//   l7proxy  the same allow with HTTP rules: steered (--mode) to l7proxy's HTTP proxy
//   haproxy  the same steering, to HAProxy (Debian's) as a transparent proxy on the node with the
//            same method/path rules, forwarding to the original destination
// In sockmap mode wrk, the node's agent and HAProxy run in the lab's cgroup (its servers' too), so
// both proxies have both hops shortcut.
// Both proxies get T threads (default: one per core; with --cpus split, one). --cpus split puts
// the proxy alone on the last CPU and wrk and the servers on the others (bench-support.ts). R rounds, each running the three ways in
// turn (so machine drift does not favour one), each way started afresh, checked (a denied
// request gets 403 through a proxy, and reaches the server directly), warmed up, measured; the
// run with the median requests/s is reported, with the CPU the proxy process used. l7proxy's flow
// log (written to a file, as a node's would be) must hold a line for every request wrk counted.
// Prints a table, writes JSON.

import { rmSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { execCommand, netnsArgv } from '../lab/netns.js'
import { LAB_PROXY_PORTS, labProxyAddress, startLabNode } from '../lab/node-agent.js'
import { findHost, hostNetns, labCgroupName, nodeNetns } from '../lab/topology.js'
import { renderTable } from '../proxy/cli/table.js'
import { cgroup2Root } from '../redirect-bpf/cgroup.js'
import type { RedirectMode } from '../redirect-bpf/modes/redirect-mode.js'
import {
  benchOptions,
  benchPin,
  type CpuLayout,
  cpuLayoutOption,
  inLabRounds,
  medianRun,
  modeOption,
  pinLabServers,
  pinProcess,
  type RunningScenario,
  runBench,
  stopScenario,
  wholeOption,
  withProxyCpu,
  writeResult,
} from './bench-support.js'
import { type LoadResult, wrk } from './load-generators.js'
import { type BenchRule, startHaproxy } from './peers/haproxy.js'

const USAGE =
  'usage: npm run bench:http [-- --duration S --runs R --warmup S --connections C --threads T --mode M --cpus shared|split --lab NAME --out FILE]'
const DEATHSTAR = findHost('deathstar').addresses[0]!
const TARGET = `http://${DEATHSTAR}/v1/`
const RULES: BenchRule[] = [
  { method: 'GET', path: '/v1/.*' },
  { method: 'POST', path: '/v1/request-landing' },
]
const SCENARIOS = ['direct', 'l7proxy', 'haproxy'] as const
type Scenario = (typeof SCENARIOS)[number]

interface Run extends LoadResult {
  /** CPU the proxy process used during the run, in cores (null: no proxy). */
  proxyCpuCores: number | null
  /** The part of it in the kernel, in cores. */
  proxySystemCores: number | null
  /** l7proxy: flow lines it logged while started for this run (checks, warm-up and run). */
  flowLines?: number
  /** sockmap, through a proxy: messages sk_msg moved socket to socket over the node's life. */
  sockmapMessages?: number
}

function policy(withRules: boolean): string {
  const rules = withRules
    ? `\n      rules:\n        http:\n${RULES.map((r) => `        - { method: ${r.method}, path: "${r.path}" }`).join('\n')}`
    : ''
  return `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: bench-${withRules ? 'l7' : 'l4'} }
spec:
  endpointSelector: { matchLabels: { class: deathstar } }
  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]${rules}
`
}

/** In sockmap mode the client, the node's agent and HAProxy are in the lab's cgroup (as its servers are); else null. */
function sockmapCgroup(mode: RedirectMode): string | null {
  return mode === 'sockmap' ? join(cgroup2Root(), labCgroupName(LAB)) : null
}

async function wrkRun(
  seconds: number,
  connections: number,
  proxyPid: number | null,
  cpus: string | null,
  cgroup: string | null,
): Promise<Run> {
  return withProxyCpu(proxyPid, () =>
    wrk({ ns: hostNetns(LAB, 'tiefighter'), cgroup }, { url: TARGET, seconds, connections, cpus }),
  )
}

async function curlStatus(method: string, path: string, cgroup: string | null): Promise<number> {
  const r = await execCommand(
    netnsArgv(
      hostNetns(LAB, 'tiefighter'),
      [
        'curl',
        '-s',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        '--max-time',
        '5',
        '-X',
        method,
        `http://${DEATHSTAR}${path}`,
      ],
      cgroup,
    ),
    { timeoutMs: 15_000 },
  )
  return Number(r.stdout)
}

async function startScenario(
  s: Scenario,
  mode: RedirectMode,
  dir: string,
  threads: number,
  cgroup: string | null,
): Promise<RunningScenario> {
  const policyFile = join(dir, `${s}.yaml`)
  writeFileSync(policyFile, policy(s !== 'direct'))
  const node = await startLabNode({
    lab: LAB,
    mode,
    policyFile,
    pin: pinOf(s),
    http: s === 'haproxy' ? 'external' : 'builtin',
    threads,
    logFile: join(dir, `${s}-flows.log`),
    ...(cgroup ? { sockmapCgroup: labCgroupName(LAB) } : {}),
  })
  if (s !== 'haproxy') return { node, proxyPid: s === 'l7proxy' ? node.pid : null, peerPid: null }
  return startHaproxy(
    node,
    nodeNetns(LAB),
    dir,
    { rules: RULES, listen: labProxyAddress(mode), port: LAB_PROXY_PORTS.http, threads },
    cgroup,
  )
}

function pinOf(s: Scenario): string {
  return benchPin(LAB, s)
}

let LAB = 'bench'

async function main(): Promise<void> {
  const values = benchOptions({
    duration: '10',
    runs: '3',
    warmup: '3',
    connections: '32',
    threads: '',
    mode: 'sk-assign',
    cpus: 'shared',
    lab: 'bench',
    out: 'bench-results/http.json',
  })
  const num = (name: 'duration' | 'runs' | 'warmup' | 'connections' | 'threads', min: number, max: number): number =>
    wholeOption(values, name, min, max)
  LAB = values.lab
  const duration = num('duration', 1, 300)
  const runs = num('runs', 1, 9)
  const warmup = num('warmup', 0, 60)
  const connections = num('connections', 1, 1000)
  const mode = modeOption(values.mode)
  const cgroup = sockmapCgroup(mode)
  const layout: CpuLayout = cpuLayoutOption(values.cpus)
  if (values.threads === '') values.threads = layout.proxy === null ? String(availableParallelism()) : '1'
  const threads = num('threads', 1, 64)

  const checks: Record<Scenario, { denied: number; allowed: number } | null> = {
    direct: null,
    l7proxy: null,
    haproxy: null,
  }
  const measured = await inLabRounds({
    lab: LAB,
    tmpPrefix: 'l7-bench-http-',
    scenarios: SCENARIOS,
    rounds: runs,
    pins: SCENARIOS.map(pinOf),
    describe: (r: Run) => `${Math.round(r.opsPerSec)} req/s`,
    prepare: (lab) => pinLabServers(layout, lab),
    measure: async (s: Scenario, dir: string, hold) => {
      const running = await startScenario(s, mode, dir, threads, cgroup)
      hold(() => stopScenario(running))
      if (layout.proxy !== null) pinProcess(running.proxyPid ?? running.node.pid, layout.proxy)
      const check = {
        allowed: await curlStatus('GET', '/v1/', cgroup),
        denied: await curlStatus('PUT', '/v1/exhaust-port', cgroup),
      }
      // Directly the server answers the PUT itself (503); through a proxy it is denied (403).
      const want = s === 'direct' ? 503 : 403
      if (check.allowed !== 200 || check.denied !== want) {
        throw new Error(
          `${s}: GET /v1/ gave ${check.allowed} (want 200), PUT /v1/exhaust-port gave ${check.denied} (want ${want}): the traffic does not take the path this scenario measures`,
        )
      }
      checks[s] = check
      const warm = warmup > 0 ? await wrkRun(warmup, connections, null, layout.rest, cgroup) : null
      const run = await wrkRun(duration, connections, running.proxyPid, layout.rest, cgroup)
      await stopScenario(running)
      let flowLines = 0
      let stopped = '{}'
      await running.node.eachLine((l) => {
        if (l.endsWith('"msg":"http allowed"}') || l.endsWith('"msg":"http denied"}')) flowLines++
        else if (l.endsWith('"msg":"datapath stopped"}')) stopped = l
      })
      if (s === 'l7proxy') {
        run.flowLines = flowLines
        const served = 2 + (warm?.ops ?? 0) + run.ops
        if (run.flowLines < served)
          throw new Error(`l7proxy logged ${run.flowLines} flow lines for ${served} requests: a request went unlogged`)
      }
      if (cgroup !== null && s !== 'direct') {
        run.sockmapMessages = (JSON.parse(stopped) as { sockmap?: { messages: number } }).sockmap?.messages ?? 0
        if (run.sockmapMessages === 0)
          throw new Error(`${s}: sk_msg moved no message: the traffic did not take sockmap's path`)
      }
      rmSync(join(dir, `${s}-flows.log`), { force: true })
      return run
    },
  })
  const rows = SCENARIOS.map((s) => ({
    scenario: s,
    check: checks[s]!,
    median: medianRun(measured[s], (r) => r.opsPerSec),
    runs: measured[s],
  }))

  const haproxy = rows.find((r) => r.scenario === 'haproxy')!.median
  const l7 = rows.find((r) => r.scenario === 'l7proxy')!.median
  const result = {
    benchmark: 'http',
    date: new Date().toISOString(),
    node: process.version,
    mode,
    target: TARGET,
    duration,
    runs,
    connections,
    cpus: layout.name,
    proxyThreads: threads,
    rows,
    l7proxyVsHaproxy: {
      requestsPerSec: l7.opsPerSec / haproxy.opsPerSec,
      p99: l7.latencyMs.p99 / haproxy.latencyMs.p99,
    },
  }
  const out = writeResult(values.out, result)
  const ms = (n: number): string => n.toFixed(2)
  process.stdout.write(
    renderTable(
      [
        'scenario',
        'req/s',
        'p50 ms',
        'p90 ms',
        'p99 ms',
        'errors',
        'proxy CPU',
        'CPU a request',
        'of it kernel',
        'req/s vs haproxy',
      ],
      rows.map(({ scenario, median: m }) => [
        scenario,
        String(Math.round(m.opsPerSec)),
        ms(m.latencyMs.p50),
        ms(m.latencyMs.p90),
        ms(m.latencyMs.p99),
        String(m.errors),
        m.proxyCpuCores === null ? '-' : `${m.proxyCpuCores.toFixed(2)} cores`,
        m.proxyCpuCores === null ? '-' : `${((m.proxyCpuCores / m.opsPerSec) * 1e6).toFixed(1)} us`,
        m.proxySystemCores === null ? '-' : `${((m.proxySystemCores / m.opsPerSec) * 1e6).toFixed(1)} us`,
        `${(m.opsPerSec / haproxy.opsPerSec).toFixed(2)}x`,
      ]),
    ),
  )
  process.stdout.write(
    `mode ${mode}, ${threads} proxy threads, cpus ${layout.name}${layout.proxy === null ? '' : ` (proxy on CPU ${layout.proxy}, wrk and servers on ${layout.rest})`}, ${connections} connections, median of ${runs} interleaved x ${duration}s; wrote ${out}\n`,
  )
}

runBench('bench:http', USAGE, main)
