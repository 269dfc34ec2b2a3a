// gRPC benchmark in the lab:
//   npm run bench:grpc [-- --duration S --runs R --warmup S --connections C --streams M --threads T --mode M --lab NAME --out FILE]
//
// Unary empire.Deathstar/RequestLanding calls from the tiefighter pod to the lab's gRPC server
// (@grpc/grpc-js) with h2load (raw HTTP/2: each request a gRPC frame, content-type
// application/grpc), two ways on one lab, the same cores and the same client:
//   direct   an L3/L4 allow on port 50051 and no L7 rule: the kernel passes it, no proxy
//   l7proxy  the same allow with grpc rules: steered (--mode) to l7proxy's proxy, per stream
// R rounds interleave the two ways, each started afresh and checked with the lab's grpc-js client
// (FireExhaustPort is PERMISSION_DENIED through the proxy and answered directly), warmed up and
// measured; the run with the median calls/s is reported. Latency percentiles come from h2load's
// per-request log; l7proxy's flow log must hold a line for every call h2load completed.
// Prints a table, writes JSON.

import { rmSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { execIn } from '../lab/netns.js'
import { startLabNode } from '../lab/node-agent.js'
import { findHost, hostNetns } from '../lab/topology.js'
import { distPath } from '../lib/project-root.js'
import { renderTable } from '../proxy/cli/table.js'
import type { RedirectMode } from '../redirect-bpf/modes/redirect-mode.js'
import {
  benchOptions,
  benchPin,
  inLabRounds,
  medianRun,
  modeOption,
  type RunningScenario,
  runBench,
  stopScenario,
  wholeOption,
  withProxyCpu,
  writeResult,
} from './bench-support.js'
import { h2load, type LoadResult } from './load-generators.js'

const USAGE =
  'usage: npm run bench:grpc [-- --duration S --runs R --warmup S --connections C --streams M --threads T --mode M --lab NAME --out FILE]'
const SERVER = `${findHost('grpc').addresses[0]!}:50051`
const CALL = '/empire.Deathstar/RequestLanding'
const SCENARIOS = ['direct', 'l7proxy'] as const
type Scenario = (typeof SCENARIOS)[number]

interface Run extends LoadResult {
  proxyCpuCores: number | null
  flowLines?: number
}

function policy(withRules: boolean): string {
  const rules = withRules
    ? '\n      rules:\n        grpc:\n        - { service: empire.Deathstar, method: RequestLanding }'
    : ''
  return `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: bench-grpc-${withRules ? 'l7' : 'l4'} }
spec:
  endpointSelector: { matchLabels: { class: grpc } }
  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "50051", protocol: TCP } ]${rules}
`
}

/** One gRPC message (LandingRequest{ship}) in its 5-byte length-prefixed frame. */
function grpcRequestBody(ship: string): Buffer {
  const name = Buffer.from(ship)
  const message = Buffer.concat([Buffer.from([0x0a, name.length]), name]) // field 1, length-delimited
  const prefix = Buffer.alloc(5)
  prefix.writeUInt32BE(message.length, 1)
  return Buffer.concat([prefix, message])
}

let LAB = 'benchgrpc'

function h2loadRun(o: {
  seconds: number
  warmup: number
  connections: number
  streams: number
  dir: string
  pid: number | null
}): Promise<Run> {
  const client = { ns: hostNetns(LAB, 'tiefighter'), cgroup: null }
  const load = {
    url: `http://${SERVER}${CALL}`,
    body: grpcRequestBody('tiefighter'),
    headers: ['content-type: application/grpc', 'te: trailers'],
    ...o,
  }
  return withProxyCpu(o.pid, () => h2load(client, load))
}

/** The grpc-js client's verdict on a method: 'ok', or the status code's number. */
async function callStatus(method: string): Promise<string> {
  const r = await execIn(
    hostNetns(LAB, 'tiefighter'),
    [
      process.execPath,
      distPath('lab/clients/grpc-call.js'),
      '--target',
      SERVER,
      '--method',
      method,
      '--deadline-ms',
      '3000',
    ],
    { timeoutMs: 20_000 },
  )
  const out = JSON.parse(r.stdout || '{}') as { ok?: boolean; code?: number }
  return out.ok ? 'ok' : `status ${out.code ?? `exit ${r.code}`}`
}

async function main(): Promise<void> {
  const values = benchOptions({
    duration: '10',
    runs: '3',
    warmup: '2',
    connections: '8',
    streams: '8',
    threads: String(availableParallelism()),
    mode: 'sk-assign',
    lab: 'benchgrpc',
    out: 'bench-results/grpc.json',
  })
  LAB = values.lab
  const duration = wholeOption(values, 'duration', 1, 300)
  const runs = wholeOption(values, 'runs', 1, 9)
  const warmup = wholeOption(values, 'warmup', 0, 60)
  const connections = wholeOption(values, 'connections', 1, 1000)
  const streams = wholeOption(values, 'streams', 1, 100)
  const threads = wholeOption(values, 'threads', 1, 64)
  const mode: RedirectMode = modeOption(values.mode)

  const checks: Partial<Record<Scenario, { allowed: string; denied: string }>> = {}
  const measured = await inLabRounds({
    lab: LAB,
    tmpPrefix: 'l7-bench-grpc-',
    scenarios: SCENARIOS,
    rounds: runs,
    pins: SCENARIOS.map((s) => benchPin(LAB, s)),
    describe: (r: Run) => `${Math.round(r.opsPerSec)} calls/s`,
    measure: async (s: Scenario, dir: string, hold) => {
      const policyFile = join(dir, `${s}.yaml`)
      writeFileSync(policyFile, policy(s === 'l7proxy'))
      const flowLog = join(dir, `${s}-flows.log`)
      const node = await startLabNode({ lab: LAB, mode, policyFile, pin: benchPin(LAB, s), threads, logFile: flowLog })
      const running: RunningScenario = { node, proxyPid: s === 'l7proxy' ? node.pid : null, peerPid: null }
      hold(() => stopScenario(running))
      const check = { allowed: await callStatus('RequestLanding'), denied: await callStatus('FireExhaustPort') }
      const want = s === 'direct' ? 'ok' : 'status 7'
      if (check.allowed !== 'ok' || check.denied !== want) {
        throw new Error(
          `${s}: RequestLanding gave ${check.allowed} (want ok), FireExhaustPort gave ${check.denied} (want ${want}): the calls do not take the path this scenario measures`,
        )
      }
      checks[s] = check
      const run = await h2loadRun({ seconds: duration, warmup, connections, streams, dir, pid: running.proxyPid })
      await stopScenario(running)
      if (s === 'l7proxy') {
        let flowLines = 0
        await node.eachLine((l) => {
          if (l.includes('"grpcMethod":"RequestLanding"')) flowLines++
        })
        run.flowLines = flowLines
        if (run.flowLines < run.ops)
          throw new Error(`l7proxy logged ${run.flowLines} flow lines for ${run.ops} calls: a call went unlogged`)
      }
      rmSync(flowLog, { force: true })
      return run
    },
  })
  const rows = SCENARIOS.map((s) => ({
    scenario: s,
    check: checks[s]!,
    median: medianRun(measured[s], (r) => r.opsPerSec),
    runs: measured[s],
  }))
  const [direct, l7] = [rows[0]!.median, rows[1]!.median]
  const result = {
    benchmark: 'grpc',
    date: new Date().toISOString(),
    node: process.version,
    mode,
    server: SERVER,
    call: CALL,
    duration,
    runs,
    connections,
    streams,
    threads,
    rows,
    l7proxyVsDirect: { callsPerSec: l7.opsPerSec / direct.opsPerSec, p99: l7.latencyMs.p99 / direct.latencyMs.p99 },
  }
  const out = writeResult(values.out, result)
  const f = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '-')
  process.stdout.write(
    renderTable(
      ['scenario', 'calls/s', 'p50 ms', 'p90 ms', 'p99 ms', 'failed', 'proxy CPU', 'vs direct'],
      rows.map(({ scenario, median: m }) => [
        scenario,
        String(Math.round(m.opsPerSec)),
        f(m.latencyMs.p50),
        f(m.latencyMs.p90),
        f(m.latencyMs.p99),
        String(m.errors),
        m.proxyCpuCores === null ? '-' : `${m.proxyCpuCores.toFixed(2)} cores`,
        `${(m.opsPerSec / direct.opsPerSec).toFixed(2)}x`,
      ]),
    ),
  )
  process.stdout.write(
    `mode ${mode}, ${connections} connections x ${streams} streams, ${threads} proxy threads, median of ${runs} interleaved x ${duration}s; wrote ${out}\n`,
  )
}

runBench('bench:grpc', USAGE, main)
