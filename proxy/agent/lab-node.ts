// The agent's process on a lab node (what `l7proxy agent` runs, and tests and benchmarks drive):
// run inside the lab's node namespace as
//   ip netns exec l7lab-NAME-node node dist/proxy/agent/lab-node.js --mode M --pin DIR
//     (--policy FILE | --policy-dir DIR) [options: lab-node-args.ts]
// It registers the lab's endpoints (or an endpoints file's, watched: node-endpoints.ts), loads
// the policy (a file, or every policy file of a directory, watched: policy-files.ts), restores
// what DNS answers taught (fqdn-learning.ts), starts the datapath on every host veth, and the
// proxies on transparent sockets, one per thread (default: one per core): HTTP (dnat mode: one
// thread, as only this one reads the proxymap for TCP) and DNS over UDP (TCP on this thread);
// with --http or --dns external it leaves that port to another proxy (a benchmark's HAProxy or
// dnsdist). It prints READY, logs flows as JSON lines on stdout (or appends them to
// FILE: a benchmark's reader must not compete with the proxy for CPU), and stops cleanly on
// SIGTERM or SIGINT. With --admin it answers the CLI on that unix socket (admin-routes.ts); with
// --metrics-fd it serves Prometheus on a listener the agent command made.

import { openSync } from 'node:fs'
import { createServer as createHttpServer } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import pino from 'pino'
import { LAB_HOSTS, nodeIfname } from '../../lab/topology.js'
import { PolicyEngine } from '../../policy/engine.js'
import { joinCgroup } from '../../redirect-bpf/cgroup.js'
import { removeBpffs } from '../../redirect-bpf/bpffs.js'
import { Datapath } from '../../redirect-bpf/datapath.js'
import { proxymapLookup } from '../../redirect-bpf/map-layout.js'
import { parseMode } from '../../redirect-bpf/modes/redirect-mode.js'
import { transparentTcpListener, transparentUdpSocket } from '../../redirect-bpf/transparent-socket.js'
import { DnsProxy } from '../dns/dns-proxy.js'
import { LearnRelay, warnLate } from '../dns/learn-relay.js'
import { FqdnLearning } from './fqdn-learning.js'
import type { Flow } from '../flow-verdict.js'
import { labProxyAddress } from './lab-node-process.js'
import { LAB_NODE_USAGE, LabNodeUsageError, parseLabNodeArgs, type LabNodeArgs } from './lab-node-args.js'
import { HttpProxy, type SocketEnds } from '../http/http-proxy.js'
import { startProxyWorkers, type ProxyWorkers } from './proxy-workers.js'
import type { ProxyWorkerInput } from './proxy-worker.js'
import { LineChunks } from './line-chunks.js'
import { ProxyTotals } from './proxy-totals.js'
import { terminalLines } from './log-format.js'
import { PolicyFiles } from './policy-files.js'
import { NodeEndpoints } from './node-endpoints.js'
import { startAdminServer } from './admin-server.js'
import { adminRoutes } from './admin-routes.js'
import { AgentMetrics } from './metrics.js'
import { FlowFeed } from './flow-feed.js'


let args: LabNodeArgs
try {
  args = parseLabNodeArgs(process.argv.slice(2))
} catch (e) {
  if (!(e instanceof LabNodeUsageError)) throw e
  process.stderr.write(`lab-node: ${e.message}\n${LAB_NODE_USAGE}\n`)
  process.exit(2)
}
// A stop asked for while still starting is kept and honoured once everything that has to be
// taken down again is up (the default action would leave the datapath attached and pinned).
let stopRequested = false
const stopWhileStarting = (): void => void (stopRequested = true)
process.once('SIGTERM', stopWhileStarting)
process.once('SIGINT', stopWhileStarting)
const mode = parseMode(args.mode)
const engine = new PolicyEngine({ proxyPorts: { http: args.httpPort, dns: args.dnsPort } })

// Every thread's lines reach `out` in chunks of bytes; written out at least every quarter
// second, and at exit.
// The file is opened here, at once: a destination still opening when a start-up error exits
// would throw at exit instead of letting the error's one line stand.
const logFile = args.log
const out = pino.destination({ dest: logFile ? startup(`log ${logFile}`, () => openSync(logFile, 'a')) : 1, sync: false, contentMode: 'buffer' }) as unknown as { write(bytes: Buffer): boolean; flushSync(): void }
// Everything logged also feeds `l7proxy flows`.
const feed = new FlowFeed((id) => endpoints.list.find((e) => e.id === id)?.ips ?? [])
// A person at a terminal reads them as lines of text; a file or a pipe gets the JSON.
const forTerminal = args.log === null && process.stdout.isTTY ? terminalLines(true) : null
/** Writes whole lines out (a chunk: this thread's, or one another thread sent). */
function writeLines(chunk: Buffer, lines: number): void {
  out.write(forTerminal ? Buffer.from(forTerminal(chunk.toString())) : chunk)
  feed.publishLines(chunk, lines)
}
const lines = new LineChunks(writeLines)
process.once('exit', () => {
  lines.flush()
  out.flushSync()
})
const logger = pino({ base: null, level: args.logLevel }, lines)

/** A start-up step that failed: one line saying what, then exit 1 (nothing is attached yet). */
function startup<T>(what: string, step: () => T): T {
  try {
    return step()
  } catch (e) {
    process.stderr.write(`lab-node: ${what}: ${(e as Error).message}\n`)
    process.exit(1)
  }
}
// The node's endpoints: the lab's, or those of an endpoints file (watched once the datapath is up).
const endpoints = startup(args.endpoints ? `endpoints ${args.endpoints}` : 'endpoints', () => new NodeEndpoints(args.endpoints, engine, logger))
// A bad file given by name is a start-up error; a directory's bad files are refused and logged.
const policies = startup(`policy ${args.policy ?? args.policyDir}`, () => new PolicyFiles({ engine, logger, file: args.policy, dir: args.policyDir }))
const proxyAddress = labProxyAddress(mode)
const dp = startup('datapath', () => Datapath.start({ mode, pinRoot: args.pin, proxyAddress, proxyPorts: [args.httpPort, args.dnsPort], ...(args.sockmapCgroup ? { cgroupName: args.sockmapCgroup } : {}) }))
// Every veth of the lab's node carries the programs (traffic from the outside world is judged
// at its own); those with an endpoint behind them carry its policy.
startup('endpoints', () => {
  for (const h of LAB_HOSTS) dp.attach(nodeIfname(h.name))
  for (const ep of endpoints.list) dp.attach(ep.interface, ep.id)
})
let workers: ProxyWorkers | null = null
/** The engine's pending changes to the kernel maps (policy, endpoints, learned names alike). */
const writeMaps = (): ReturnType<Datapath['apply']> => dp.apply(engine.takeDelta())
// What allowed DNS answers taught, restored from the last run before the first map write, so a
// restart cuts no allowed name.
const fqdns = new FqdnLearning({
  engine,
  logger,
  cache: { minTtlSeconds: args.dnsMinTtlSeconds, maxIpsPerName: args.dnsMaxIps },
  stateDir: args.state,
  writeMaps,
  liveDestinations: () => dp.liveDestinations(),
  tellThreads: (name, ips) => {
    relay.setKnown(name, ips)
    workers?.updateFqdn(name, ips)
  },
})
writeMaps()
// This thread's DNS answers are learned as another thread's are (learn-relay.ts), only without
// the trip between threads: those read together are learned together once read, an answer that
// names nothing new goes at once, and a busy name's renewals are learned once per batch.
const relay: LearnRelay = new LearnRelay({
  maxDelayMs: args.dnsMaxDelayMs,
  send: (batch, answers) => {
    fqdns.learnAll(answers)
    relay.learned(batch)
  },
  onLate: warnLate(logger, args.dnsMaxDelayMs),
})
for (const f of fqdns.names()) relay.setKnown(f.name, f.ips)

// The DNS proxy, one per thread over UDP (TCP on this one): answers leave from the server the
// client asked, through a transparent socket bound to that address (in dnat mode conntrack
// rewrites the proxy's own answers back). What answers teach is learned on this thread.
const answerFrom = mode === 'dnat' ? 'listener' : 'server'
const dns: DnsProxy = new DnsProxy({
  engine,
  logger,
  originalDestination: (address, port, out) => proxymapLookup(dp.proxymapFd, address, port, 'udp', out),
  ...(mode === 'dnat' ? { tcpOriginalDestination: (s: Socket) => dp.originalDestination(s.remoteAddress!, s.remotePort!, 'tcp') } : {}),
  rejectCode: args.dnsReject,
  learn: (qname, answers) => relay.learn(qname, answers),
  answerFrom,
})
// --dns external: the port is left to another DNS proxy (a benchmark's dnsdist).
const dnsFds = args.dns === 'builtin' ? Array.from({ length: args.dnsThreads }, () => transparentUdpSocket(proxyAddress, args.dnsPort, { reusePort: true })) : []
if (args.dns === 'builtin') {
  const tcpFd = transparentTcpListener(proxyAddress, args.dnsPort)
  dp.addProxyListener(args.dnsPort, tcpFd)
  await dns.listen({ fd: dnsFds[0]!, tcpFd })
}

let proxy: HttpProxy | null = null
// dnat: one HTTP thread (only this one reads the proxymap for TCP).
const threads = mode === 'dnat' ? 1 : args.threads
let httpFds: number[] = []
if (args.http === 'builtin') {
  // Where a connection was going: getsockname, or in dnat mode the proxymap.
  const flowOf =
    mode === 'dnat'
      ? (socket: SocketEnds): Flow => {
          const d = dp.originalDestination(socket.remoteAddress!, socket.remotePort!, 'tcp')
          return { sourceAddress: socket.remoteAddress!, sourcePort: socket.remotePort!, destAddress: d?.address ?? '0.0.0.0', destPort: d?.port ?? 0 }
        }
      : undefined
  proxy = new HttpProxy({ engine, logger, ...(flowOf ? { flowOf } : {}), ...(args.caDir ? { caDir: args.caDir } : {}) })
  // sockmap: the proxy's sockets must be in the cgroup sock_ops watches (a socket's cgroup is
  // fixed when it is made; accepted ones take their listener's): the listeners' and the upstream
  // connections' alike, so the process stays in it.
  if (dp.cgroup) joinCgroup(dp.cgroup)
  httpFds = Array.from({ length: threads }, () => transparentTcpListener(proxyAddress, args.httpPort, { reusePort: true }))
  dp.addProxyListener(args.httpPort, httpFds[0]!)
  await proxy.listen({ fd: httpFds[0]! })
}
// The other threads: each with an HTTP proxy, a DNS proxy, or both, on the groups' other sockets.
const workerInputs: ProxyWorkerInput[] = []
for (let i = 1; i < Math.max(httpFds.length, dnsFds.length); i++) {
  const udp = dnsFds[i]
  workerInputs.push({
    http: httpFds[i] === undefined ? null : { fd: httpFds[i]! },
    dns: udp === undefined ? null : { fd: udp, proxymapFd: dp.proxymapFd, answerFrom, rejectCode: args.dnsReject, maxDelayMs: args.dnsMaxDelayMs },
    proxyPorts: { http: args.httpPort, dns: args.dnsPort },
    caDir: args.caDir,
    logLevel: args.logLevel,
    endpoints: endpoints.list,
    fqdns: fqdns.names(),
    policies: [...policies.texts].map(([name, text]) => ({ name, text })),
  })
}
if (workerInputs.length > 0) workers = await startProxyWorkers(workerInputs, { writeLog: writeLines, learnDns: (answers) => fqdns.learnAll(answers) })

const totals = new ProxyTotals({ http: () => proxy, dns: () => (args.dns === 'builtin' ? dns : null), workers: () => workers })
const metrics = new AgentMetrics({
  httpRequests: () => ({ ...totals.http().requests }),
  httpConnections: () => totals.http().connections,
  dnsQueries: () => ({ ...totals.dns() }),
  fqdnNames: () => fqdns.entries().length,
  kernelCounters: () => dp.counters(),
  policyRevision: () => engine.policyRevision,
  requestDurations: () => ({ http: totals.httpDurations(), dns: totals.dnsDurations() }),
  dnsEnforce: () => totals.dnsEnforce(),
})

// Live policy: each accepted change reaches the kernel maps, then every proxy thread.
policies.watch({
  writeMaps,
  tellThreads: (file, text) => workers?.updatePolicy(file, text),
  observe: (seconds) => metrics.policyApply.observe(seconds),
})

endpoints.watch({
  attach: (ifname, id) => void dp.attach(ifname, id),
  forget: (id) => dp.forgetEndpoint(id),
  writeMaps,
  tellThreads: (list) => workers?.updateEndpoints(list),
})

// Prometheus' scrape endpoint on a listener the agent command made in its own namespace.
const metricsServer = args.metricsFd === null ? null : createHttpServer((req, res) => {
  if (req.method !== 'GET' || new URL(req.url ?? '/', 'http://agent').pathname !== '/metrics') return void res.writeHead(404).end('only GET /metrics here\n')
  void metrics.text().then((text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text), () => res.writeHead(500).end())
})
if (metricsServer) {
  await new Promise<void>((resolve) => metricsServer.listen({ fd: args.metricsFd }, resolve))
  const a = metricsServer.address() as AddressInfo
  logger.info({ url: `http://${a.address}:${a.port}/metrics` }, 'metrics served')
}
const startedAt = Date.now()
feed.publishKernel(dp.counters()) // what the kernel counted before now is not news
setInterval(() => feed.publishKernel(dp.counters()), 1_000).unref()
const admin = args.admin
  ? await startAdminServer(args.admin, adminRoutes({ engine, endpoints, feed, fqdns, policies, metrics, datapath: dp, logger, status: () => agentStatus() }))
  : null

/** Packets the kernel counted, by verdict, over every endpoint. */
function kernelPacketTotals(): Record<string, number> {
  const kernel: Record<string, number> = {}
  for (const c of dp.counters()) kernel[c.verdict] = (kernel[c.verdict] ?? 0) + c.packets
  return kernel
}

/** What the agent is doing, for `l7proxy status`. */
function agentStatus(): Record<string, unknown> {
  const { requests, connections } = totals.http()
  const kernel = kernelPacketTotals()
  return {
    mode,
    pid: process.pid,
    uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
    policy: { revision: engine.policyRevision, files: [...policies.texts.keys()], directory: policies.dir },
    endpoints: endpoints.list.length,
    identities: [...engine.identities.all()].length,
    http: proxy ? { listening: `${proxyAddress}:${args.httpPort}`, threads, connections, requests } : { listening: 'external', threads: 0 },
    dns: { listening: `${proxyAddress}:${args.dnsPort}/udp`, threads: dnsFds.length, queries: totals.dns(), queriesByThread: totals.dnsByThread() },
    kernelPackets: kernel,
  }
}
logger.info({ mode, policies: [...policies.texts.keys()], revision: engine.policyRevision, httpThreads: proxy ? threads : 0 }, 'node agent started')
process.stdout.write('READY\n')
const shutdown = (): void => {
  policies.close()
  fqdns.close()
  endpoints.close()
  dns.close()
  metricsServer?.close()
  metricsServer?.closeAllConnections()
  void Promise.all([proxy?.close(), workers?.stop(), admin?.close()]).finally(() => {
    // What the process counted over its life: benchmarks read it to confirm the path taken.
    const counted = { httpRequests: totals.http().requests, dnsQueries: totals.dns(), kernelPackets: kernelPacketTotals() }
    logger.info({ mode, httpThreads: proxy ? threads : 0, ...counted, ...(dp.cgroup ? { sockmap: dp.sockmapStats() } : {}) }, 'datapath stopped')
    dp.stop()
    removeBpffs(args.pin)
    process.exit(0)
  })
}
process.off('SIGTERM', stopWhileStarting)
process.off('SIGINT', stopWhileStarting)
process.once('SIGTERM', shutdown)
process.once('SIGINT', shutdown)
if (stopRequested) shutdown()
