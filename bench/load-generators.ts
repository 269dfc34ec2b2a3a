// The load generators the benchmarks and `l7proxy compare` drive from a lab pod, each parsed
// into one shape: operations completed, errors, throughput, latency percentiles. wrk (HTTP/1.1,
// kept-alive or a new connection per request), h2load (HTTP/2 and gRPC, percentiles from its
// per-request log), dnsperf (DNS, percentiles from its per-query lines) and curl (bulk bodies).
// A client may run inside a cgroup (sockmap watches the sockets of one).

import { createReadStream, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { type ExecResult, execCommand, netnsArgv } from '../lab/netns.js'
import { projectRoot } from '../lib/project-root.js'
import { percentile } from './bench-support.js'

export interface LoadResult {
  /** Requests, calls, queries or transfers completed. */
  ops: number
  errors: number
  /** The measured interval, seconds. */
  seconds: number
  opsPerSec: number
  /** Payload bytes moved (responses for HTTP). */
  bytes: number
  latencyMs: { p50: number; p90: number; p99: number; max: number }
}

/** Where a load generator runs: a pod's namespace, and a cgroup v2 directory it joins first (or null). */
export interface Client {
  ns: string
  cgroup: string | null
  /** Runs it at this niceness (a test's load that must not starve what it loads). */
  nice?: number
}

function inClient(c: Client, argv: readonly string[], timeoutMs: number): Promise<ExecResult> {
  return execCommand(netnsArgv(c.ns, c.nice === undefined ? argv : ['nice', '-n', String(c.nice), ...argv], c.cgroup), {
    timeoutMs,
  })
}

function fail(tool: string, r: ExecResult): never {
  throw new Error(`${tool} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim().slice(-500)}`)
}

function latencies(values: number[]): LoadResult['latencyMs'] {
  return {
    p50: percentile(values, 50),
    p90: percentile(values, 90),
    p99: percentile(values, 99),
    max: percentile(values, 100),
  }
}

/** wrk, one thread: `connections` kept alive, or (`closeEach`) a new connection per request; GET unless `method`. */
export async function wrk(
  c: Client,
  o: { url: string; seconds: number; connections: number; closeEach?: boolean; cpus?: string | null; method?: string },
): Promise<LoadResult> {
  const wrkArgv = [
    ...(o.method ? ['env', `L7_WRK_METHOD=${o.method}`] : []),
    ...(o.cpus ? ['taskset', '-c', o.cpus] : []),
    'wrk',
    '-t1',
    `-c${o.connections}`,
    `-d${o.seconds}s`,
    '--timeout',
    '5s',
    '-s',
    join(projectRoot(), 'bench/wrk-report.lua'),
  ]
  // A client opening a connection per request to one server would otherwise run out of source
  // ports held in its own TIME_WAIT (28k ports / 60 s: about 470 connections/s) and measure that.
  // The sysctl is per network namespace: only the lab pod's changes.
  const argv = o.closeEach
    ? ['sh', '-c', 'sysctl -qw net.ipv4.tcp_tw_reuse=1 && exec "$0" "$@"', ...wrkArgv, '-H', 'Connection: close']
    : wrkArgv
  const r = await inClient(c, [...argv, o.url], (o.seconds + 30) * 1000)
  const line = r.stdout.split('\n').find((l) => l.startsWith('{"requests"'))
  if (r.code !== 0 || !line) fail('wrk', r)
  const w = JSON.parse(line) as {
    requests: number
    durationUs: number
    bytes: number
    errors: Record<string, number>
    latencyUs: { p50: number; p90: number; p99: number; max: number }
  }
  const seconds = w.durationUs / 1e6
  const ms = (us: number): number => us / 1000
  return {
    ops: w.requests,
    errors: Object.values(w.errors).reduce((a, b) => a + b, 0),
    seconds,
    opsPerSec: w.requests / seconds,
    bytes: w.bytes,
    latencyMs: {
      p50: ms(w.latencyUs.p50),
      p90: ms(w.latencyUs.p90),
      p99: ms(w.latencyUs.p99),
      max: ms(w.latencyUs.max),
    },
  }
}

/** h2load, one thread: `connections` x `streams` concurrent requests POSTing `body` with `headers`. */
export async function h2load(
  c: Client,
  o: {
    url: string
    seconds: number
    warmup: number
    connections: number
    streams: number
    body: Buffer
    headers: string[]
    dir: string
  },
): Promise<LoadResult> {
  const bodyFile = join(o.dir, 'h2load-body.bin')
  const log = join(o.dir, 'h2load.log')
  writeFileSync(bodyFile, o.body)
  rmSync(log, { force: true })
  const argv = [
    'h2load',
    '-t1',
    '-c',
    String(o.connections),
    '-m',
    String(o.streams),
    '-D',
    String(o.seconds),
    '-d',
    bodyFile,
    `--log-file=${log}`,
  ]
  if (o.warmup > 0) argv.push(`--warm-up-time=${o.warmup}`)
  for (const h of o.headers) argv.push('-H', h)
  const r = await inClient(c, [...argv, o.url], (o.seconds + o.warmup + 30) * 1000)
  const rps = /finished in [\d.]+m?s, ([\d.]+) req\/s, ([\d.]+)([KMG]?)B\/s/.exec(r.stdout)
  const counts = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(
    r.stdout,
  )
  if (r.code !== 0 || !rps || !counts) fail('h2load', r)
  const times: number[] = []
  // Per request: start (us since epoch), HTTP status, us until the end of the response.
  for (const line of readFileSync(log, 'utf8').split('\n')) {
    const us = Number(line.split('\t')[2])
    if (line && Number.isFinite(us)) times.push(us / 1000)
  }
  rmSync(log, { force: true })
  const unit = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[rps[3] as '' | 'K' | 'M' | 'G']
  return {
    ops: Number(counts[4]),
    errors: Number(counts[5]) + Number(counts[6]),
    seconds: o.seconds,
    opsPerSec: Number(rps[1]),
    bytes: Math.round(Number(rps[2]) * unit * o.seconds),
    latencyMs: latencies(times),
  }
}

/** What dnsperf measured, and how many answers had each response code (NOERROR, REFUSED, ...). */
export interface DnsperfResult extends LoadResult {
  rcodes: Record<string, number>
}

/** dnsperf: `clients` sockets with up to `outstanding` queries in flight (at most `maxQps` a second), names from `queryFile`. */
export async function dnsperf(
  c: Client,
  o: { server: string; seconds: number; clients: number; outstanding: number; queryFile: string; maxQps?: number },
): Promise<DnsperfResult> {
  // -v prints a line per query: at 150k queries/s that is more than a pipe buffer we want to hold,
  // so dnsperf writes to a file beside the query file, read a line at a time.
  const report = join(dirname(o.queryFile), 'dnsperf.out')
  const argv = [
    'dnsperf',
    '-s',
    o.server,
    '-d',
    o.queryFile,
    '-l',
    String(o.seconds),
    '-c',
    String(o.clients),
    '-q',
    String(o.outstanding),
    '-t',
    '2',
    '-v',
    ...(o.maxQps ? ['-Q', String(o.maxQps)] : []),
  ]
  try {
    const r = await inClient(c, ['sh', '-c', 'exec "$@" > "$0"', report, ...argv], (o.seconds + 30) * 1000)
    const times: number[] = []
    let summary = ''
    for await (const line of createInterface({ input: createReadStream(report), crlfDelay: Infinity })) {
      // '> ' lines: one per answered query, its latency in seconds last.
      if (line.startsWith('> ')) {
        const s = Number(line.slice(line.lastIndexOf(' ') + 1))
        if (Number.isFinite(s)) times.push(s * 1000)
      } else summary += `${line}\n`
    }
    const qps = /Queries per second:\s+([\d.]+)/.exec(summary)
    const completed = /Queries completed:\s+(\d+)/.exec(summary)
    const lost = /Queries lost:\s+(\d+)/.exec(summary)
    if (r.code !== 0 || !qps || !completed) fail('dnsperf', { ...r, stdout: summary })
    // "Response codes:       NOERROR 9000 (90.00%), REFUSED 1000 (10.00%)"
    const rcodes = Object.fromEntries(
      [...(/Response codes:(.*)/.exec(summary)?.[1] ?? '').matchAll(/([A-Z]+) (\d+)/g)].map((m) => [
        m[1]!,
        Number(m[2]),
      ]),
    )
    return {
      ops: Number(completed[1]),
      errors: Number(lost?.[1] ?? 0),
      seconds: o.seconds,
      opsPerSec: Number(qps[1]),
      bytes: 0,
      latencyMs: latencies(times),
      rcodes,
    }
  } finally {
    rmSync(report, { force: true })
  }
}

/** curl downloading `url` (a large body) again and again for `seconds`; latency is per transfer. */
export async function bulk(c: Client, o: { url: string; seconds: number }): Promise<LoadResult> {
  // One shell loop in the client, bounded by time and by count: each line "<http code> <bytes> <seconds>".
  const script =
    'end=$(($(date +%s) + $0)); n=0; while [ $(date +%s) -lt $end ] && [ $n -lt 1000 ]; do curl -s -o /dev/null --max-time 60 -w "%{http_code} %{size_download} %{time_total}\\n" "$1"; n=$((n+1)); done'
  const t0 = process.hrtime.bigint()
  const r = await inClient(c, ['sh', '-c', script, String(o.seconds), o.url], (o.seconds + 90) * 1000)
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  if (r.code !== 0) fail('curl loop', r)
  let ops = 0
  let errors = 0
  let bytes = 0
  const times: number[] = []
  for (const line of r.stdout.trim().split('\n')) {
    const [code, size, time] = line.split(' ')
    if (code === '200') {
      ops++
      bytes += Number(size)
      times.push(Number(time) * 1000)
    } else errors++
  }
  return { ops, errors, seconds, opsPerSec: ops / seconds, bytes, latencyMs: latencies(times) }
}
