// The node agent as one object, built from settings that were checked before (data, whoever
// made them: the agent command, a lab, a test): the policy engine fed by the node's endpoints and
// policy files, what DNS answers taught (restored before the first map write), the datapath on
// the interfaces it is told about, the proxies on transparent sockets of SO_REUSEPORT groups, one
// lane per thread (thread-proxies.ts), the admin socket and metrics. start() brings it up, stop()
// takes down what it put up; applyPolicy() and applyEndpoints() change it live.

import { openSync } from 'node:fs'
import { createServer as createHttpServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import pino, { type Logger } from 'pino'
import { L7ProxyError } from '../../lib/l7proxy-error.js'
import type { FileLimit } from '../../lib/libc.js'
import { formatIPv4 } from '../../policy/cidr.js'
import { PolicyEngine } from '../../policy/engine.js'
import { removeBpffs } from '../../redirect-bpf/bpffs.js'
import { joinCgroup } from '../../redirect-bpf/cgroup.js'
import { Datapath } from '../../redirect-bpf/datapath.js'
import type { MapSizes } from '../../redirect-bpf/map-sizes.js'
import type { RedirectMode } from '../../redirect-bpf/modes/redirect-mode.js'
import { ifindexOf } from '../../redirect-bpf/tc.js'
import { transparentTcpListener, transparentUdpSocket } from '../../redirect-bpf/transparent-socket.js'
import { LearnRelay, warnLate } from '../dns/learn-relay.js'
import type { Flow } from '../flow-verdict.js'
import type { SocketEnds } from '../http/http-proxy.js'
import { ClusterNode, type KvstoreSettings } from '../kvstore/cluster-node.js'
import type { ViewChange } from '../kvstore/cluster-view.js'
import { collectGarbage } from '../overload/collect-garbage.js'
import { raiseFileLimit } from '../overload/file-limit.js'
import {
  budgetLimits,
  type OverloadSettings,
  type OverloadStatus,
  pressureConnections,
} from '../overload/overload-settings.js'
import { PressureMonitor } from '../overload/pressure-monitor.js'
import { RefusalLog } from '../overload/refusal-log.js'
import { SharedBudget } from '../overload/shared-budget.js'
import type { OverloadInput } from '../overload/thread-overload.js'
import { adminRoutes } from './admin-routes.js'
import { AdminQueryError, startAdminServer } from './admin-server.js'
import { adminGet } from './admin-socket.js'
import { CniEndpoints } from './cni-endpoints.js'
import type { NodeEndpoint } from './endpoints-file.js'
import { FlowFeed } from './flow-feed.js'
import { FqdnLearning } from './fqdn-learning.js'
import {
  type HandoverOffer,
  type HandoverSockets,
  requestDrain,
  requestOffer,
  takeoverMismatch,
  takeSockets,
} from './handover.js'
import { LineChunks } from './line-chunks.js'
import { terminalLines } from './log-format.js'
import { AgentMetrics } from './metrics.js'
import { NodeEndpoints } from './node-endpoints.js'
import { PolicyFiles } from './policy-files.js'
import { ProxyTotals } from './proxy-totals.js'
import type { ProxyWorkerInput, RemoteChange } from './proxy-worker.js'
import { type ProxyWorkers, startProxyWorkers } from './proxy-workers.js'
import { runtimeLabels } from './runtime-labels.js'
import { type DnsLaneInput, startThreadProxies, type ThreadProxies } from './thread-proxies.js'

export interface AgentSettings {
  mode: RedirectMode
  /** The bpffs directory the maps are pinned in (removed at stop). */
  pin: string
  /** Where the proxies listen: loopback, or in dnat mode an address rewritten packets reach. */
  proxyAddress: string
  proxyPorts: { http: number; dns: number }
  /** 'external': the port is left to another proxy (a benchmark's HAProxy or dnsdist). */
  http: 'builtin' | 'external'
  dns: 'builtin' | 'external'
  /** HTTP proxy threads (dnat: always one, as only the main thread reads the proxymap for TCP). */
  threads: number
  /** Threads serving the DNS proxy's UDP. */
  dnsThreads: number
  /** sockmap: the cgroup whose sockets sock_ops watches (the agent joins it). */
  sockmapCgroup: string | null
  policy: { file: string | null; dir: string | null }
  /** The node's endpoints: a file (watched), or a list (changed by applyEndpoints). */
  endpoints: { file: string } | { list: NodeEndpoint[] }
  /** Interfaces that carry the programs with no endpoint behind them (traffic judged at its own end). */
  interfaces: string[]
  /** Flow lines appended to this file; null: stdout (as text at a terminal). */
  log: string | null
  logLevel: string
  dnsReject: 'REFUSED' | 'NXDOMAIN'
  dnsMinTtlSeconds: number
  dnsMaxIps: number
  /** Expired learned addresses connections still use: kept this long after the last, and at most this many. */
  dnsZombies: { idleGraceSeconds: number; max: number }
  dnsMaxDelayMs: number
  /** Entries of the node's ipcache and policy map; learned addresses past them are refused. */
  mapSizes: MapSizes
  /** Where the FQDN cache is kept across restarts; null: nowhere. */
  state: string | null
  caDir: string | null
  /** A listening socket for Prometheus' scrapes, made by whoever started the agent. */
  metricsFd: number | null
  /** The admin socket the CLI talks to (and l7proxy-cni registers containers on); null: none. */
  admin: string | null
  /** How a CNI-added container's labels are asked: the command, its id appended (runtime-labels.ts). */
  cniLabelsCommand: string[]
  /** Budgets per source, identity and node, the DNS query rate, pressure, the open-file limit. */
  overload: OverloadSettings
  /** The cluster's store (identities, other nodes' endpoints, cluster policy); null: a node on its own. */
  kvstore: KvstoreSettings | null
  /** Take over from the agent answering on `admin` (handover.ts), instead of starting afresh. */
  takeover: boolean
  /** How long an agent taken over from finishes what it has in flight before it exits. */
  drainTimeoutMs: number
}

/** How long an agent taken over from tries to pass on the names it learned meanwhile. */
const PASS_ON_MS = 5_000

/** A start-up step that failed: what, and why. Nothing the agent made is left behind. */
export class AgentStartError extends L7ProxyError {
  constructor(
    readonly step: string,
    cause: Error,
  ) {
    super('EAGENTSTART', `${step}: ${cause.message}`)
  }
}

/** Whether this network namespace has an interface of that name. */
function interfaceExists(ifname: string): boolean {
  try {
    ifindexOf(ifname)
    return true
  } catch {
    return false
  }
}

/** Runs a start-up step; its failure becomes an AgentStartError naming it. */
function step<T>(what: string, run: () => T): T {
  try {
    return run()
  } catch (e) {
    throw new AgentStartError(what, e as Error)
  }
}

export class Agent {
  readonly engine: PolicyEngine
  readonly logger: Logger
  /** Lines for learned addresses the maps had no room for (made at the first). */
  private mapRefusals: RefusalLog | null = null
  private readonly lines: LineChunks
  private readonly out: { write(bytes: Buffer): boolean; flushSync(): void }
  private readonly feed: FlowFeed
  private readonly endpoints: NodeEndpoints
  /** Containers l7proxy-cni registered: with an endpoints list (not a file), its endpoints join the list's. */
  private readonly cni: CniEndpoints | null
  /** The endpoints given and those CNI registered, together (null: from a file). */
  private readonly givenAndCni: (() => NodeEndpoint[]) | null
  private readonly policies: PolicyFiles
  /** This node in a cluster (settings.kvstore); null: on its own. */
  readonly cluster: ClusterNode | null
  private datapath: Datapath | null = null
  private fqdns: FqdnLearning | null = null
  private relay: LearnRelay | null = null
  private main: ThreadProxies | null = null
  private workers: ProxyWorkers | null = null
  private metricsServer: Server | null = null
  private admin: { close(gently?: boolean): Promise<void> } | null = null
  private totals: ProxyTotals | null = null
  private kernelFeed: NodeJS.Timeout | null = null
  private budget: SharedBudget | null = null
  private pressure: PressureMonitor | null = null
  private files: FileLimit | null = null
  private dnsThreads = 0
  private readonly startedAt = Date.now()
  /** The proxies' sockets (all threads'), as a handover offers them. */
  private sockets: HandoverSockets = { http: [], dns: [], dnsTcp: null, metrics: null }
  /** Offered to another agent: the maps are not written (the engine keeps the changes). */
  private frozen = false
  /** Names learned since the offer: passed on to the agent that took over (the maps are its). */
  private readonly learnedSinceOffer = new Set<string>()
  /** Draining after a handover: what is learned is passed on at once. */
  private draining = false
  private passingOn: Promise<void> | null = null
  private handedOver: () => void = () => undefined
  /** Resolves once another agent took over and this one drained and stopped. */
  readonly whenHandedOver = new Promise<void>((resolve) => (this.handedOver = resolve))
  /** A person at a terminal reads lines as text; a file or a pipe gets the JSON. */
  private readonly terminal: ((s: string) => string) | null

  private constructor(
    readonly settings: AgentSettings,
    /** Taking over: what the running agent offered, and its sockets copied here. */
    private readonly takeover: { offer: HandoverOffer; sockets: HandoverSockets } | null,
  ) {
    const s = settings
    this.terminal = s.log === null && process.stdout.isTTY ? terminalLines(true) : null
    // A learned address without room in the maps stays the world's; a line at most every 10 s a map says so.
    this.engine = new PolicyEngine({
      proxyPorts: s.proxyPorts,
      capacity: { ipcache: s.mapSizes.ipcacheEntries, policy: s.mapSizes.policyEntries },
      onRefused: ({ map, ...r }) =>
        (this.mapRefusals ??= new RefusalLog(this.logger, 10_000, 'maps')).note(map, Date.now(), {
          ...r,
          reason: `the ${map} map is full`,
        }),
    })
    // The maps hold the running agent's numbers until this one's state replaces them: the same labels, the same numbers.
    if (takeover) this.engine.identities.seed(takeover.offer.identities)
    // Every thread's lines reach `out` in chunks of bytes, written at least every quarter second
    // and at exit. A log file is opened at once: one still opening when a start-up error exits
    // would throw at exit instead of letting the error's one line stand.
    const log = s.log
    this.out = pino.destination({
      dest: log ? step(`log ${log}`, () => openSync(log, 'a')) : 1,
      sync: false,
      contentMode: 'buffer',
    }) as unknown as { write(bytes: Buffer): boolean; flushSync(): void }
    // Everything logged also feeds `l7proxy flows`.
    this.feed = new FlowFeed((id) => this.endpoints.list.find((e) => e.id === id)?.ips ?? [])
    this.lines = new LineChunks(this.writeLines)
    this.logger = pino({ base: null, level: s.logLevel }, this.lines)
    const given = 'list' in s.endpoints ? s.endpoints.list : null
    this.givenAndCni = given === null ? null : () => [...given, ...this.cni!.list()]
    this.cni =
      given === null
        ? null
        : new CniEndpoints({
            stateDir: s.state,
            labelsOf: runtimeLabels(s.cniLabelsCommand),
            onChange: () => this.applyEndpoints(this.givenAndCni!()),
            refusal: (id) => this.endpoints.refusal(id),
            exists: interfaceExists,
            logger: this.logger,
          })
    const source = this.givenAndCni === null ? s.endpoints : { list: this.givenAndCni() }
    const cluster = (this.cluster = s.kvstore
      ? new ClusterNode(
          s.kvstore,
          {
            remote: (c) => this.applyRemote(c),
            policy: (name, text) => this.policies.applyText(name, text),
            identitiesChanged: () => this.endpoints.refresh(),
          },
          this.logger,
        )
      : null)
    const identify = cluster ? (given: readonly NodeEndpoint[]) => cluster.identify(given) : undefined
    this.endpoints = step(
      'file' in s.endpoints ? `endpoints ${s.endpoints.file}` : 'endpoints',
      () => new NodeEndpoints(source, this.engine, this.logger, identify),
    )
    // A bad file given by name is a start-up error; a directory's bad files are refused and logged.
    this.policies = step(
      `policy ${s.policy.file ?? s.policy.dir}`,
      () => new PolicyFiles({ engine: this.engine, logger: this.logger, file: s.policy.file, dir: s.policy.dir }),
    )
  }

  /** Writes whole lines out (a chunk: this thread's, or one another thread sent). */
  private readonly writeLines = (chunk: Buffer, lines: number): void => {
    this.out.write(this.terminal ? Buffer.from(this.terminal(chunk.toString())) : chunk)
    this.feed.publishLines(chunk, lines)
  }

  /** Lines written so far leave now (also when the process exits without stop()). */
  flushLogs(): void {
    this.lines.flush()
    this.out.flushSync()
  }

  /** The agent, up: throws AgentStartError (having taken down what it made) if a step fails. */
  static async start(settings: AgentSettings): Promise<Agent> {
    const takeover = settings.takeover ? await Agent.takeOffer(settings) : null
    const agent = new Agent(settings, takeover)
    try {
      await agent.bringUp()
    } catch (e) {
      if (takeover) {
        // The running agent keeps everything: this one leaves the datapath as it found it.
        agent.datapath?.release()
        await adminGet(settings.admin!, '/v1/handover/cancel', 5_000, 'POST').catch(() => undefined)
      }
      await agent.stop()
      throw e instanceof AgentStartError ? e : new AgentStartError('start', e as Error)
    }
    return agent
  }

  /** The running agent's offer, checked against these settings, and its sockets copied here. */
  private static async takeOffer(s: AgentSettings): Promise<{ offer: HandoverOffer; sockets: HandoverSockets }> {
    if (!s.admin) throw new AgentStartError('takeover', new Error('no admin socket to find the running agent on'))
    try {
      const offer = await requestOffer(s.admin)
      const why = takeoverMismatch(offer, {
        mode: s.mode,
        pin: s.pin,
        proxyAddress: s.proxyAddress,
        proxyPorts: s.proxyPorts,
      })
      if (why !== null) {
        await adminGet(s.admin, '/v1/handover/cancel', 5_000, 'POST')
        throw new Error(`the agent on ${s.admin} cannot be taken over: ${why}`)
      }
      return { offer, sockets: takeSockets(offer) }
    } catch (e) {
      throw new AgentStartError('takeover', e as Error)
    }
  }

  /** Writes the engine's changes to the maps, unless another agent is taking over. */
  private writeMaps(): ReturnType<Datapath['apply']> {
    if (this.frozen || this.datapath === null) return { upserts: 0, deletes: 0 }
    return this.datapath.apply(this.engine.takeDelta())
  }

  /**
   * The open-file limit raised, and the node's budgets under it (shared with every thread); a
   * configured node budget above what the files allow is lowered to it.
   */
  private overloadInput(): OverloadInput {
    const o = this.settings.overload
    const files = (this.files = step('open-file limit', () => raiseFileLimit(o.fileLimit)))
    const limits = budgetLimits(o, files.soft)
    if (o.connections.perNode > limits.connectionsPerNode) {
      this.logger.warn(
        { configured: o.connections.perNode, fileLimit: files.soft, connectionsPerNode: limits.connectionsPerNode },
        'overload: node connection budget lowered to what the open-file limit allows',
      )
    }
    const budget = (this.budget = SharedBudget.create(limits))
    const line = pressureConnections(o, limits)
    const collect = (): void => {
      collectGarbage()
      this.workers?.collectGarbage()
    }
    this.pressure = new PressureMonitor({
      budget,
      connections: line,
      memoryBytes: o.pressure.memoryMB * 2 ** 20,
      logger: this.logger,
      collect,
    })
    this.pressure.start()
    return {
      budget: budget.buffer,
      pressureConnections: line,
      pressureHeadersMs: o.pressure.headersTimeoutMs,
      pressureIdleMs: o.pressure.idleTimeoutMs,
    }
  }

  private async bringUp(): Promise<void> {
    const s = this.settings
    const { engine, logger } = this
    const overload = this.overloadInput()
    const takeover = this.takeover
    const dp = (this.datapath = step('datapath', () =>
      Datapath.start({
        mode: s.mode,
        pinRoot: s.pin,
        proxyAddress: s.proxyAddress,
        proxyPorts: [s.proxyPorts.http, s.proxyPorts.dns],
        mapSizes: s.mapSizes,
        ...(s.sockmapCgroup ? { cgroupName: s.sockmapCgroup } : {}),
        ...(takeover ? { takeover: { earlyDemux: takeover.offer.earlyDemux } } : {}),
      }),
    ))
    step('endpoints', () => {
      for (const ifname of s.interfaces) dp.attach(ifname)
      for (const ep of this.endpoints.list) dp.attach(ep.interface, ep.id)
    })
    const writeMaps = (): ReturnType<Datapath['apply']> => this.writeMaps()
    // What allowed DNS answers taught, restored from the last run before the first map write, so
    // a restart cuts no allowed name.
    const fqdns = (this.fqdns = new FqdnLearning({
      engine,
      logger,
      cache: {
        minTtlSeconds: s.dnsMinTtlSeconds,
        maxIpsPerName: s.dnsMaxIps,
        idleGraceSeconds: s.dnsZombies.idleGraceSeconds,
        maxZombies: s.dnsZombies.max,
      },
      stateDir: s.state,
      writeMaps,
      liveDestinations: () => dp.liveDestinations(),
      tellThreads: (name, ips) => {
        relay.setKnown(name, ips)
        this.workers?.updateFqdn(name, ips)
        if (!this.frozen) return
        this.learnedSinceOffer.add(name)
        if (this.draining) this.passOnLearned()
      },
    }))
    writeMaps()
    // This thread's DNS answers are learned as another thread's are (learn-relay.ts), without the
    // trip between threads.
    const relay = (this.relay = new LearnRelay({
      maxDelayMs: s.dnsMaxDelayMs,
      send: (batch, answers) => {
        fqdns.learnAll(answers)
        relay.learned(batch)
      },
      onLate: warnLate(logger, s.dnsMaxDelayMs),
    }))
    for (const f of fqdns.names()) relay.setKnown(f.name, f.ips)

    // The proxies' socket groups. DNS answers leave from the server the client asked, through a
    // transparent socket bound to its address (dnat: conntrack rewrites the proxy's own).
    const answerFrom = s.mode === 'dnat' ? 'listener' : 'server'
    // A source's queries spread over the DNS threads by their port: each allows its share of the rate.
    const q = s.overload.dnsQueries
    const rate = {
      perSecond: q.perSecondPerSource / s.dnsThreads,
      burst: Math.max(1, Math.ceil(q.burst / s.dnsThreads)),
    }
    const lane = (fd: number): DnsLaneInput => ({
      fd,
      proxymapFd: dp.proxymapFd,
      answerFrom,
      rejectCode: s.dnsReject,
      maxDelayMs: s.dnsMaxDelayMs,
      rate,
    })
    // Taking over: the running agent's sockets first (whatever is queued on them is served here),
    // then more of the same groups if this agent runs more threads.
    const taken = takeover?.sockets ?? { http: [], dns: [], dnsTcp: null, metrics: null }
    const group = (have: number[], want: number, make: () => number): number[] => [
      ...have,
      ...Array.from({ length: Math.max(0, want - have.length) }, make),
    ]
    const dnsFds =
      s.dns === 'builtin'
        ? group(taken.dns, s.dnsThreads, () =>
            transparentUdpSocket(s.proxyAddress, s.proxyPorts.dns, { reusePort: true }),
          )
        : []
    this.dnsThreads = dnsFds.length
    const dnsTcpFd =
      s.dns === 'builtin' ? (taken.dnsTcp ?? transparentTcpListener(s.proxyAddress, s.proxyPorts.dns)) : null
    if (dnsTcpFd !== null) dp.addProxySocket(s.proxyPorts.dns, 'tcp', dnsTcpFd)
    if (dnsFds.length > 0) dp.addProxySocket(s.proxyPorts.dns, 'udp', dnsFds[0]!)
    // sockmap: the proxy's sockets must be in the cgroup sock_ops watches (a socket's cgroup is
    // fixed when it is made; accepted ones take their listener's): the listeners' and the
    // upstream connections' alike, so the process stays in it.
    if (s.http === 'builtin' && dp.cgroup) joinCgroup(dp.cgroup)
    const httpFds =
      s.http === 'builtin'
        ? group(taken.http, this.httpThreads, () =>
            transparentTcpListener(s.proxyAddress, s.proxyPorts.http, { reusePort: true }),
          )
        : []
    // Prometheus' listener: the one given, or the running agent's.
    const metricsFd = s.metricsFd ?? taken.metrics
    this.sockets = { http: httpFds, dns: dnsFds, dnsTcp: dnsTcpFd, metrics: metricsFd }
    if (httpFds.length > 0) {
      dp.addProxySocket(s.proxyPorts.http, 'tcp', httpFds[0]!)
      dp.spreadHttp(httpFds)
    }
    // Where a connection was going: getsockname, or in dnat mode the proxymap.
    const dnat = s.mode === 'dnat'
    const flowOf = (socket: SocketEnds): Flow => {
      const d = dp.originalDestination(socket.remoteAddress!, socket.remotePort!, 'tcp')
      return {
        sourceAddress: socket.remoteAddress!,
        sourcePort: socket.remotePort!,
        destAddress: d?.address ?? '0.0.0.0',
        destPort: d?.port ?? 0,
      }
    }
    this.main = await startThreadProxies({
      engine,
      logger,
      caDir: s.caDir,
      overload,
      http: httpFds.length > 0 ? { fd: httpFds[0]!, ...(dnat ? { flowOf } : {}) } : null,
      dns:
        dnsFds.length > 0
          ? {
              ...lane(dnsFds[0]!),
              tcpFd: dnsTcpFd!,
              ...(dnat
                ? {
                    tcpOriginalDestination: (c: Socket) =>
                      dp.originalDestination(c.remoteAddress!, c.remotePort!, 'tcp'),
                  }
                : {}),
            }
          : null,
      learn: (qname, answers) => relay.learn(qname, answers),
    })
    // The other threads: each with an HTTP proxy, a DNS proxy, or both, on the groups' other sockets.
    const workerInputs: ProxyWorkerInput[] = []
    for (let i = 1; i < Math.max(httpFds.length, dnsFds.length); i++) {
      workerInputs.push({
        http: httpFds[i] === undefined ? null : { fd: httpFds[i]! },
        dns: dnsFds[i] === undefined ? null : lane(dnsFds[i]!),
        proxyPorts: s.proxyPorts,
        caDir: s.caDir,
        overload,
        logLevel: s.logLevel,
        endpoints: this.endpoints.list,
        fqdns: fqdns.names(),
        policies: [...this.policies.texts].map(([name, text]) => ({ name, text })),
        remote: [...engine.remoteEndpoints()].map(
          ([ip, id]): RemoteChange => [ip, { identity: id, labels: engine.identities.get(id)!.labels.canonical }],
        ),
      })
    }
    if (workerInputs.length > 0)
      this.workers = await startProxyWorkers(workerInputs, {
        writeLog: this.writeLines,
        learnDns: (answers) => fqdns.learnAll(answers),
      })

    const totals = (this.totals = new ProxyTotals({
      http: () => this.main?.http ?? null,
      dns: () => this.main?.dns ?? null,
      workers: () => this.workers,
    }))
    const metrics = new AgentMetrics({
      httpRequests: () => ({ ...totals.http().requests }),
      httpConnections: () => totals.http().connections,
      dnsQueries: () => ({ ...totals.dns() }),
      fqdnNames: () => fqdns.entries().length,
      kernelCounters: () => dp.counters(),
      policyRevision: () => engine.policyRevision,
      requestDurations: () => ({ http: totals.httpDurations(), dns: totals.dnsDurations() }),
      dnsEnforce: () => totals.dnsEnforce(),
      overload: () => this.overloadStatus(),
      cluster: () => this.cluster?.status() ?? null,
      maps: () => engine.mapFill(),
    })
    // Live policy and endpoints: each accepted change reaches the kernel maps, then every proxy thread.
    this.policies.watch({
      writeMaps,
      tellThreads: (file, text) => this.workers?.updatePolicy(file, text),
      observe: (seconds) => metrics.policyApply.observe(seconds),
    })
    this.endpoints.watch({
      attach: (ifname, id) => void dp.attach(ifname, id),
      forget: (id) => dp.forgetEndpoint(id),
      quarantine: (ifname) => dp.quarantine(ifname),
      endQuarantine: (ifindex) => dp.endQuarantine(ifindex),
      writeMaps,
      tellThreads: (list) => this.workers?.updateEndpoints(list),
    })
    // Labels the runtime told while the agent was starting.
    if (this.givenAndCni !== null) this.endpoints.replace(this.givenAndCni())
    // Other nodes' pods and the cluster's policy arrive from now on, as they are watched.
    this.cluster?.start()
    if (metricsFd !== null) await this.serveMetrics(metricsFd, metrics)
    this.feed.publishKernel(dp.counters()) // what the kernel counted before now is not news
    this.kernelFeed = setInterval(() => this.feed.publishKernel(dp.counters()), 1_000)
    this.kernelFeed.unref()
    if (takeover) {
      // This agent's state is in the maps: what only the running one had goes, then it drains.
      const pruned = dp.pruneStale()
      await requestDrain(s.admin!)
      logger.info(
        { from: takeover.offer.pid, pruned, http: taken.http.length, dns: taken.dns.length },
        'took over from the running agent; it drains',
      )
    }
    if (s.admin) {
      const routes = adminRoutes({
        engine,
        endpoints: this.endpoints,
        cni: this.cni,
        feed: this.feed,
        fqdns,
        policies: this.policies,
        metrics,
        datapath: dp,
        logger,
        status: () => this.status(),
        cluster: this.cluster,
        handover: this,
      })
      this.admin = await startAdminServer(s.admin, routes)
    }
    const budget = this.budget!
    logger.info(
      {
        mode: s.mode,
        policies: [...this.policies.texts.keys()],
        revision: engine.policyRevision,
        httpThreads: this.main.http ? this.httpThreads : 0,
        fileLimit: this.files!.soft,
        connectionsPerNode: budget.limits.connectionsPerNode,
      },
      'node agent started',
    )
  }

  /** HTTP proxy threads: dnat has one, as only the main thread reads the proxymap for TCP. */
  private get httpThreads(): number {
    return this.settings.mode === 'dnat' ? 1 : this.settings.threads
  }

  /** Prometheus' scrape endpoint on a listener the agent's starter made in its own namespace. */
  private async serveMetrics(fd: number, metrics: AgentMetrics): Promise<void> {
    const server = (this.metricsServer = createHttpServer((req, res) => {
      if (req.method !== 'GET' || new URL(req.url ?? '/', 'http://agent').pathname !== '/metrics')
        return void res.writeHead(404).end('only GET /metrics here\n')
      void metrics.text().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      )
    }))
    await new Promise<void>((resolve) => server.listen({ fd }, resolve))
    const a = server.address() as AddressInfo
    this.logger.info({ url: `http://${a.address}:${a.port}/metrics` }, 'metrics served')
  }

  /** A policy file's text (null: removed), as if it had changed on disk; why it was refused, or null. */
  applyPolicy(file: string, text: string | null): string | null {
    return this.policies.applyText(file, text)
  }

  /** The node's endpoints are now `list` (an agent started with a list, not a file); before start, at start. */
  applyEndpoints(list: NodeEndpoint[]): void {
    if (this.datapath !== null) this.endpoints.replace(list)
  }

  /** What a takeover needs to know first (GET /v1/handover): nothing changes. */
  handoverInfo(): Omit<HandoverOffer, 'fds' | 'identities' | 'earlyDemux'> {
    const s = this.settings
    return { pid: process.pid, mode: s.mode, pin: s.pin, proxyAddress: s.proxyAddress, proxyPorts: s.proxyPorts }
  }

  /**
   * Another agent takes over (POST /v1/handover/offer): the maps are not written from now on
   * (the engine keeps its changes, in case the takeover is cancelled), the FQDN cache is saved
   * for it, and it is told the sockets and identity numbers.
   */
  offerHandover(): HandoverOffer {
    if (this.frozen) throw new AdminQueryError('a takeover of this agent is under way already')
    this.frozen = true
    this.fqdns?.saveNow()
    const identities = [...this.engine.identities.all()]
      .filter((i) => i.kind !== 'reserved')
      .map((i) => ({ labels: i.labels.canonical, id: i.id }))
    this.logger.info({}, 'handover offered: the maps are left to the agent taking over')
    return {
      ...this.handoverInfo(),
      fds: this.sockets,
      earlyDemux: this.datapath?.earlyDemuxBefore ?? null,
      identities,
    }
  }

  /** The takeover failed (POST /v1/handover/cancel): this agent writes its maps again, what changed meanwhile first. */
  cancelHandover(): void {
    if (!this.frozen) return
    this.frozen = false
    this.writeMaps()
    this.logger.warn({}, 'handover cancelled: this agent writes the maps again')
  }

  /**
   * The agent that took over is serving (POST /v1/handover/drain): this one stops reading the
   * sockets, finishes what it has in flight (at most drainTimeoutMs), and stops, leaving the
   * datapath to it.
   */
  drainAfterHandover(): void {
    if (!this.frozen) throw new AdminQueryError('no takeover was offered')
    const t = this.settings.drainTimeoutMs
    void (async () => {
      const started = performance.now()
      const open = this.totals?.http().connections ?? 0
      this.draining = true
      // The socket's path is the new agent's once this one no longer answers on it.
      const admin = this.admin?.close(true).then(() => this.passOnLearned())
      await Promise.allSettled([admin, this.main?.drain(t), this.workers?.drain(t)])
      await this.passingOn
      this.admin = null
      this.main = null
      this.workers = null
      this.datapath?.release()
      this.logger.info(
        { connections: open, drainMs: Math.round(performance.now() - started) },
        'drained after the handover',
      )
      await this.stop()
      this.handedOver()
    })()
  }

  /**
   * Passes the names learned since the offer to the agent that took over (on the admin socket's
   * path, once it answers there), so that what this one answered is allowed there too; again
   * for each name learned while draining. Tries for at most PASS_ON_MS.
   */
  private passOnLearned(): void {
    this.passingOn ??= (async () => {
      const deadline = performance.now() + PASS_ON_MS
      while (this.learnedSinceOffer.size > 0 && performance.now() < deadline) {
        const names = new Set(this.learnedSinceOffer)
        const entries = this.fqdns!.entries().filter((e) => names.has(e.name))
        try {
          await adminGet(this.settings.admin!, '/v1/fqdn/merge', 2_000, 'POST', JSON.stringify(entries))
          for (const n of names) this.learnedSinceOffer.delete(n)
        } catch {
          await new Promise((r) => setTimeout(r, 50)) // the new agent's admin socket is not up yet
        }
      }
      if (this.learnedSinceOffer.size > 0)
        this.logger.warn(
          { names: [...this.learnedSinceOffer] },
          'handover: names learned while handing over could not be passed on; they are learned again when asked again',
        )
      this.passingOn = null
    })()
  }

  /** Other nodes' pods came, changed or went: the engine, the maps, then every other thread. */
  private applyRemote(changes: ViewChange['endpoints']): void {
    const taken: RemoteChange[] = []
    for (const [ip, peer] of changes) {
      try {
        this.engine.setRemoteEndpoint(ip, peer)
        taken.push([ip, peer && { identity: peer.identity, labels: peer.labels.canonical }])
      } catch (e) {
        this.logger.error(
          { ip, identity: peer?.identity, error: (e as Error).message },
          'kvstore: remote endpoint refused; the address stays as it was',
        )
      }
    }
    this.writeMaps()
    // When the kernel enforces the change (bench:cluster measures propagation by it).
    const at = performance.timeOrigin + performance.now()
    this.workers?.updateRemote(taken)
    const ips = (gone: boolean): string[] => taken.filter(([, p]) => (p === null) === gone).map(([ip]) => ip)
    this.logger.info({ added: ips(false), removed: ips(true), at }, 'kvstore: remote endpoints applied')
  }

  /** Packets the kernel counted, by verdict, over every endpoint. */
  private kernelPacketTotals(): Record<string, number> {
    const kernel: Record<string, number> = {}
    for (const c of this.datapath?.counters() ?? []) kernel[c.verdict] = (kernel[c.verdict] ?? 0) + c.packets
    return kernel
  }

  /** The budgets, what they hold and refused, and the pressure, for status and metrics. */
  private overloadStatus(): OverloadStatus {
    const b = this.budget!
    const o = this.settings.overload
    return {
      fileLimit: this.files!.soft,
      limits: b.limits,
      open: { connections: b.connections, streams: b.streams },
      refused: { ...b.refusals(), dnsQueries: this.totals?.dns().rateLimited ?? 0 },
      dnsQueries: o.dnsQueries,
      pressure: { now: b.underPressure, episodes: this.pressure!.episodes, ...o.pressure },
      rssBytes: process.memoryUsage.rss(),
      heapBytesByThread: [process.memoryUsage().heapTotal, ...(this.workers?.stats().map((w) => w.heapBytes) ?? [])],
    }
  }

  /** What the agent is doing, for `l7proxy status`. */
  status(): Record<string, unknown> {
    const s = this.settings
    const totals = this.totals!
    const { requests, connections } = totals.http()
    return {
      mode: s.mode,
      pid: process.pid,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      policy: {
        revision: this.engine.policyRevision,
        files: [...this.policies.texts.keys()],
        directory: this.policies.dir,
      },
      endpoints: this.endpoints.list.length,
      identities: [...this.engine.identities.all()].length,
      maps: this.engine.mapFill(),
      http: this.main?.http
        ? { listening: `${s.proxyAddress}:${s.proxyPorts.http}`, threads: this.httpThreads, connections, requests }
        : { listening: 'external', threads: 0 },
      dns: {
        listening: `${s.proxyAddress}:${s.proxyPorts.dns}/udp`,
        threads: this.dnsThreads,
        queries: totals.dns(),
        queriesByThread: totals.dnsByThread(),
      },
      kernelPackets: this.kernelPacketTotals(),
      overload: {
        ...this.overloadStatus(),
        topSources: this.budget!.topSources(5).map((t) => ({ ...t, source: formatIPv4(t.source) })),
      },
      cluster: this.cluster?.status() ?? null,
    }
  }

  /** Takes down what the agent put up (the datapath last: steered flows fail closed meanwhile) and writes its last lines. */
  async stop(): Promise<void> {
    await this.cluster?.stop()
    this.policies.close()
    this.pressure?.stop()
    this.fqdns?.close()
    this.endpoints.close()
    this.cni?.close()
    this.relay?.close()
    if (this.kernelFeed !== null) clearInterval(this.kernelFeed)
    this.metricsServer?.close()
    this.metricsServer?.closeAllConnections()
    await Promise.allSettled([this.main?.close(), this.workers?.stop(), this.admin?.close()])
    const dp = this.datapath
    if (dp !== null) {
      // What the agent counted over its life: benchmarks read it to confirm the path taken.
      const totals = this.totals
      const counted = totals
        ? { httpRequests: totals.http().requests, dnsQueries: totals.dns(), kernelPackets: this.kernelPacketTotals() }
        : {}
      this.logger.info(
        {
          mode: this.settings.mode,
          httpThreads: this.main?.http ? this.httpThreads : 0,
          ...counted,
          ...(dp.cgroup ? { sockmap: dp.sockmapStats() } : {}),
          programs: dp.programStats(),
        },
        'datapath stopped',
      )
      // Handed over: the pinned maps are the other agent's.
      if (!dp.isReleased) removeBpffs(this.settings.pin)
      dp.stop()
      this.datapath = null
    }
    this.flushLogs()
  }
}
