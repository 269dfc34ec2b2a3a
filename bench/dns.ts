// DNS proxy benchmark in the lab:
//   npm run bench:dns [-- --duration S --runs R --warmup S --clients C --outstanding Q --threads T --mode M --lab NAME --out FILE]
//
// dnsperf from the tiefighter pod against the lab DNS server (unbound), three ways on one lab,
// the same cores and the same client, with names under empire (allowed by the rule):
//   direct   an L3/L4 allow on port 53 and no DNS rule: the kernel passes it, no proxy
//   l7proxy  the same allow with the DNS rule `*.empire`: steered (--mode) to l7proxy's DNS proxy
//            on T threads (default 1, the agent's default)
//   dnsdist  the same steering, to Debian's dnsdist on the node with the same rule (REFUSED
//            otherwise) forwarding to the lab server (its defaults: one listening thread and
//            one per server for the answers)
// dnsdist cannot answer from the original server's address, so it is measured where the kernel
// does that for it: in dnat mode (the default here; with another mode its row is left out).
// Each way is checked first (hoth.alliance: answered directly, REFUSED through a proxy), then
// warmed up and measured; rounds interleave the ways. Queries/s from dnsperf, latency
// percentiles from its per-query report, the proxy process's CPU, and for l7proxy the time from
// an answer's arrival to the maps allowing its addresses being written (its log's enforceMs).

import { rmSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { execIn } from '../lab/netns.js'
import { LAB_PROXY_PORTS, labProxyAddress, startLabNode } from '../lab/node-agent.js'
import { findHost, hostNetns, nodeNetns } from '../lab/topology.js'
import { renderTable } from '../proxy/cli/table.js'
import type { RedirectMode } from '../redirect-bpf/modes/redirect-mode.js'
import {
  benchOptions,
  benchPin,
  inLabRounds,
  medianRun,
  modeOption,
  ONE_CLIENT,
  percentile,
  type RunningScenario,
  runBench,
  stopScenario,
  UsageError,
  wholeOption,
  withProxyCpu,
  writeResult,
} from './bench-support.js'
import { DNS_QUERY_NAMES } from './compare/workloads.js'
import { dnsperf, type LoadResult } from './load-generators.js'
import { startDnsdist } from './peers/dnsdist.js'

const USAGE =
  'usage: npm run bench:dns [-- --duration S --runs R --warmup S --clients C --outstanding Q --threads T --mode M --lab NAME --out FILE]'
const DNS_SERVER = findHost('dns').addresses[0]!
// All allowed by `*.empire` (www.cantina.empire is not: `*` stays within one label).
const NAMES = DNS_QUERY_NAMES
const SCENARIOS = ['direct', 'l7proxy', 'dnsdist'] as const
/** A query line's time from the answer to the maps allowing its addresses (only answers with addresses have it; 0: allowed already). */
const ENFORCE_MS = /"enforceMs":([\d.e-]+)/
type Scenario = (typeof SCENARIOS)[number]

interface Run extends LoadResult {
  proxyCpuCores: number | null
  /** l7proxy: answer arrival to maps written, over the allowed answers of this run. */
  enforceMs?: { p50: number; p99: number; max: number; answers: number }
}

function policy(withRule: boolean): string {
  const rules = withRule ? `\n      rules: { dns: [ { matchPattern: "*.empire" } ] }` : ''
  return `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: bench-dns }
spec:
  endpointSelector: { matchLabels: { class: tiefighter } }
  egress:
  - toEndpoints: [ { matchLabels: { "k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns } } ]
    toPorts:
    - ports: [ { port: "53", protocol: ANY } ]${rules}
`
}

let LAB = 'benchdns'

async function digStatus(name: string): Promise<string> {
  const r = await execIn(hostNetns(LAB, 'tiefighter'), ['dig', '+time=2', '+tries=1', `@${DNS_SERVER}`, name], {
    timeoutMs: 10_000,
  })
  return /status: (\w+)/.exec(r.stdout)?.[1] ?? 'no answer'
}

function dnsperfRun(o: {
  seconds: number
  clients: number
  outstanding: number
  file: string
  pid: number | null
}): Promise<Run> {
  const client = { ns: hostNetns(LAB, 'tiefighter'), cgroup: null }
  return withProxyCpu(o.pid, () =>
    dnsperf(client, {
      server: DNS_SERVER,
      seconds: o.seconds,
      clients: o.clients,
      outstanding: o.outstanding,
      queryFile: o.file,
    }),
  )
}

function pinOf(s: Scenario): string {
  return benchPin(LAB, s)
}

async function startScenario(
  s: Scenario,
  mode: RedirectMode,
  dir: string,
  dnsThreads: number,
): Promise<RunningScenario> {
  const policyFile = join(dir, `${s}.yaml`)
  writeFileSync(policyFile, policy(s !== 'direct'))
  const node = await startLabNode({
    lab: LAB,
    mode,
    policyFile,
    pin: pinOf(s),
    dns: s === 'dnsdist' ? 'external' : 'builtin',
    dnsThreads,
    logFile: join(dir, `${s}-flows.log`),
    overload: ONE_CLIENT,
  })
  if (s !== 'dnsdist') return { node, proxyPid: s === 'l7proxy' ? node.pid : null, peerPid: null }
  return startDnsdist(node, nodeNetns(LAB), dir, {
    listen: labProxyAddress(mode),
    port: LAB_PROXY_PORTS.dns,
    server: `${DNS_SERVER}:53`,
  })
}

async function main(): Promise<void> {
  const values = benchOptions({
    duration: '10',
    runs: '3',
    warmup: '2',
    clients: String(availableParallelism() * 2),
    outstanding: '100',
    threads: '1',
    mode: 'dnat',
    lab: 'benchdns',
    out: 'bench-results/dns.json',
  })
  LAB = values.lab
  const duration = wholeOption(values, 'duration', 1, 300)
  const runs = wholeOption(values, 'runs', 1, 9)
  const warmup = wholeOption(values, 'warmup', 0, 60)
  const clients = wholeOption(values, 'clients', 1, 256)
  const outstanding = wholeOption(values, 'outstanding', 1, 10_000)
  const threads = wholeOption(values, 'threads', 1, 64)
  const mode = modeOption(values.mode)
  if (mode === 'sockmap')
    throw new UsageError('--mode sockmap redirects TCP only; DNS is measured in dnat, tproxy, sk-assign or sk-lookup')
  const scenarios = SCENARIOS.filter((s) => s !== 'dnsdist' || mode === 'dnat')

  const checks: Partial<Record<Scenario, { allowed: string; denied: string }>> = {}
  const measured = await inLabRounds({
    lab: LAB,
    tmpPrefix: 'l7-bench-dns-',
    scenarios,
    rounds: runs,
    pins: SCENARIOS.map(pinOf),
    describe: (r: Run) => `${Math.round(r.opsPerSec)} queries/s`,
    measure: async (s: Scenario, dir: string, hold) => {
      const queryFile = join(dir, 'queries.txt')
      writeFileSync(queryFile, NAMES.map((n) => `${n} A\n`).join(''))
      const running = await startScenario(s, mode, dir, threads)
      hold(() => stopScenario(running))
      // The lab server answers hoth.alliance itself; through a proxy the rule refuses it.
      const check = { allowed: await digStatus('cantina.empire'), denied: await digStatus('hoth.alliance') }
      const want = s === 'direct' ? 'NOERROR' : 'REFUSED'
      if (check.allowed !== 'NOERROR' || check.denied !== want) {
        throw new Error(
          `${s}: cantina.empire gave ${check.allowed} (want NOERROR), hoth.alliance gave ${check.denied} (want ${want}): the queries do not take the path this scenario measures`,
        )
      }
      checks[s] = check
      if (warmup > 0) await dnsperfRun({ seconds: warmup, clients, outstanding, file: queryFile, pid: null })
      const run = await dnsperfRun({ seconds: duration, clients, outstanding, file: queryFile, pid: running.proxyPid })
      await stopScenario(running)
      if (s === 'l7proxy') {
        const enforce: number[] = []
        await running.node.eachLine((l) => {
          const ms = ENFORCE_MS.exec(l)
          if (ms && l.endsWith('"msg":"dns allowed"}')) enforce.push(Number(ms[1]))
        })
        run.enforceMs = {
          p50: percentile(enforce, 50),
          p99: percentile(enforce, 99),
          max: percentile(enforce, 100),
          answers: enforce.length,
        }
      }
      rmSync(join(dir, `${s}-flows.log`), { force: true })
      return run
    },
  })
  const rows = scenarios.map((s) => ({
    scenario: s,
    check: checks[s]!,
    median: medianRun(measured[s], (r) => r.opsPerSec),
    runs: measured[s],
  }))
  const peer = rows.find((r) => r.scenario === 'dnsdist')?.median
  const l7 = rows.find((r) => r.scenario === 'l7proxy')!.median
  const result = {
    benchmark: 'dns',
    date: new Date().toISOString(),
    node: process.version,
    mode,
    server: DNS_SERVER,
    names: NAMES,
    duration,
    runs,
    clients,
    outstanding,
    threads,
    rows,
    l7proxyVsDnsdist: peer
      ? { queriesPerSec: l7.opsPerSec / peer.opsPerSec, p99: l7.latencyMs.p99 / peer.latencyMs.p99 }
      : null,
  }
  const out = writeResult(values.out, result)
  const f = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '-')
  process.stdout.write(
    renderTable(
      ['scenario', 'queries/s', 'p50 ms', 'p90 ms', 'p99 ms', 'lost', 'proxy CPU', 'enforce p50/p99 ms', 'vs dnsdist'],
      rows.map(({ scenario, median: m }) => [
        scenario,
        String(Math.round(m.opsPerSec)),
        f(m.latencyMs.p50),
        f(m.latencyMs.p90),
        f(m.latencyMs.p99),
        String(m.errors),
        m.proxyCpuCores === null ? '-' : `${m.proxyCpuCores.toFixed(2)} cores`,
        m.enforceMs ? `${f(m.enforceMs.p50)}/${f(m.enforceMs.p99)}` : '-',
        peer ? `${(m.opsPerSec / peer.opsPerSec).toFixed(2)}x` : '-',
      ]),
    ),
  )
  process.stdout.write(
    `mode ${mode}, ${clients} clients, ${outstanding} outstanding, l7proxy on ${threads} DNS thread(s), median of ${runs} interleaved x ${duration}s; wrote ${out}\n`,
  )
}

runBench('bench:dns', USAGE, main)
