// A lab's node agent: the agent's process (proxy/agent/agent-main.ts) started inside the lab's
// node namespace with settings the lab makes (the agent's defaults, and the lab's part: its
// endpoints or an endpoints file, every veth of its node, the proxy address the redirect mode
// needs). Tests and benchmarks drive it: wait for READY, collect its JSON lines, stop it by PID
// with SIGTERM. `l7proxy agent --lab` runs the same process with the settings of its configuration.

import { spawn } from 'node:child_process'
import { createReadStream, existsSync, readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { distPath } from '../lib/project-root.js'
import type { AgentSettings } from '../proxy/agent/agent.js'
import { agentSettings, type NodePart } from '../proxy/agent/agent-settings.js'
import { type AgentConfig, type ConfigLayer, DEFAULT_PROXY_PORTS, resolveConfig } from '../proxy/agent/config.js'
import type { KvstoreSettings } from '../proxy/kvstore/cluster-node.js'
import { parseMode } from '../redirect-bpf/modes/redirect-mode.js'
import { readState } from './lab.js'
import {
  clusterNodeName,
  GATEWAY_IP,
  labEndpointsOn,
  labHosts,
  nodeIfname,
  nodeNetnsOf,
  nodeUnderlayAddress,
  UNDERLAY_IFNAME,
} from './topology.js'

/** Where the node agent's proxies listen (the datapath steers there): the agent's defaults. */
export const LAB_PROXY_PORTS = DEFAULT_PROXY_PORTS

/** The address the proxies listen on: in dnat mode one rewritten packets reach, else loopback. */
export function labProxyAddress(mode: string): string {
  return mode === 'dnat' ? GATEWAY_IP : '127.0.0.1'
}

/** Which node of a lab of how many: the first of one, unless told. */
export interface LabNodeAt {
  nodes: number
  node: number
}

/**
 * The lab's part of a node agent's settings: every veth of its node carries the programs (traffic
 * from the outside world, and from other nodes over the underlay, is judged at its own end), the
 * node's endpoints unless the configuration names a file, and the proxy address of the mode.
 */
export function labNodePart(c: AgentConfig, at: LabNodeAt = { nodes: 1, node: 1 }): NodePart {
  const hosts = labHosts(at.nodes).filter((h) => h.node === at.node)
  return {
    interfaces: [...hosts.map((h) => nodeIfname(h.name)), ...(at.nodes > 1 ? [UNDERLAY_IFNAME] : []), ...c.interfaces],
    proxyAddress: c.proxy.address ?? labProxyAddress(c.mode),
    ...(c.endpointsFile === null
      ? { endpoints: { list: labEndpointsOn(at.nodes, at.node).map((e) => ({ ...e, interface: nodeIfname(e.host) })) } }
      : {}),
  }
}

/** A node's part of the cluster's configuration: the lab's etcd, its name and underlay address. */
export function labKvstoreLayer(
  etcd: string,
  node: number,
  more: Partial<KvstoreSettings> = {},
): NonNullable<ConfigLayer['kvstore']> {
  return { endpoints: [etcd], node: clusterNodeName(node), nodeAddress: nodeUnderlayAddress(node), ...more }
}

/** Runs the agent's process in node `node` of `lab` with `settings` (on its stdin); extra fds become its fd 3 on. */
export function spawnNodeAgent(
  lab: string,
  settings: AgentSettings,
  stdio: { out: 'pipe' | 'inherit'; fds?: number[] },
  node = 1,
) {
  // `ip netns exec` execs node: the child's PID is the agent's.
  const child = spawn(
    'ip',
    ['netns', 'exec', nodeNetnsOf(lab, node), process.execPath, distPath('proxy/agent/agent-main.js')],
    { stdio: ['pipe', stdio.out, stdio.out, ...(stdio.fds ?? [])] },
  )
  child.stdin!.on('error', () => undefined) // an agent that exits at once
  child.stdin!.end(JSON.stringify(settings))
  return child
}

export interface LabNodeOptions {
  lab: string
  mode: string
  policyFile: string
  /** bpffs directory, mounted in the child's own mount namespace; the child removes it at stop. */
  pin: string
  /** 'external': the datapath steers to the HTTP port, and something else listens there. */
  http?: 'builtin' | 'external'
  /** Likewise for the DNS port. */
  dns?: 'builtin' | 'external'
  sockmapCgroup?: string
  /** The local CA for TLS interception. */
  caDir?: string
  /** HTTP proxy threads (default: one per core). */
  threads?: number
  /** DNS proxy (UDP) threads (default 1). */
  dnsThreads?: number
  /** Where the agent keeps state across restarts (the FQDN cache); none by default. */
  stateDir?: string
  /** Answer the CLI's admin calls on this unix socket. */
  admin?: string
  /** Seconds; learned FQDN addresses live at least this long (default: the agent's 3600). */
  dnsMinTtl?: number
  /** Addresses a learned name keeps, the latest (default: the agent's 1000). */
  dnsMaxIps?: number
  /** The node's endpoints from this file (watched) instead of the lab's. */
  endpointsFile?: string
  /** JSON lines go to this file instead of stdout (lines() then reads it). */
  logFile?: string
  /** Overload settings over the defaults (a benchmark from one client lifts the per-source ones). */
  overload?: ConfigLayer['overload']
  /** Map sizes over the defaults (a test fills a small ipcache on purpose). */
  maps?: ConfigLayer['maps']
  /** Which node of a lab of several (default 1); its agent then joins the lab's cluster. */
  node?: number
  /** The cluster's settings over the lab's (a test shortens the lease). */
  kvstore?: Partial<KvstoreSettings>
  /** Take over from the agent answering on `admin` (same mode and pin), without a gap. */
  takeover?: boolean
  /** How long an agent taken over from drains (default: the agent's 30 s). */
  drainTimeoutMs?: number
  readyTimeoutMs?: number
}

export interface LabNode {
  readonly pid: number
  /** JSON lines printed so far (flow lines are flushed within a second, and at exit). */
  lines(): Array<Record<string, unknown>>
  /**
   * Each line printed so far, as text, read a line at a time: a benchmark's log outgrows what
   * one string can hold (512 MB), so it is never read whole.
   */
  eachLine(visit: (line: string) => void): Promise<void>
  /** SIGTERM, then the exit code (null if it had to be killed after `timeoutMs`). */
  stop(timeoutMs?: number): Promise<number | null>
  /** Its exit code once it exits by itself (an agent taken over from drains, then exits). */
  readonly exited: Promise<number | null>
}

export async function startLabNode(o: LabNodeOptions): Promise<LabNode> {
  const state = readState(o.lab)
  const at: LabNodeAt = { nodes: state?.nodes ?? 1, node: o.node ?? 1 }
  if (at.node < 1 || at.node > at.nodes)
    throw new Error(`lab ${o.lab} has ${at.nodes} node(s): there is no node ${at.node}`)
  const cluster = state?.etcd ? { kvstore: labKvstoreLayer(state.etcd, at.node, o.kvstore) } : {}
  const config = resolveConfig([
    {
      lab: o.lab,
      mode: parseMode(o.mode),
      ...(o.overload ? { overload: o.overload } : {}),
      ...(o.maps ? { maps: o.maps } : {}),
      ...cluster,
    },
  ])
  if (o.endpointsFile !== undefined) config.endpointsFile = o.endpointsFile
  const settings = agentSettings(config, {
    ...labNodePart(config, at),
    pin: o.pin,
    http: o.http ?? 'builtin',
    dns: o.dns ?? 'builtin',
    sockmapCgroup: o.sockmapCgroup ?? null,
    policy: { file: o.policyFile, dir: null },
    log: o.logFile ?? null,
    state: o.stateDir ?? null,
    caDir: o.caDir ?? null,
    admin: o.admin ?? null,
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
    ...(o.dnsThreads !== undefined ? { dnsThreads: o.dnsThreads } : {}),
    ...(o.dnsMinTtl !== undefined ? { dnsMinTtlSeconds: o.dnsMinTtl } : {}),
    ...(o.dnsMaxIps !== undefined ? { dnsMaxIps: o.dnsMaxIps } : {}),
    ...(o.takeover ? { takeover: true } : {}),
    ...(o.drainTimeoutMs !== undefined ? { drainTimeoutMs: o.drainTimeoutMs } : {}),
  })
  const child = spawnNodeAgent(o.lab, settings, { out: 'pipe' }, at.node)
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
  let out = ''
  let err = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  const stop = async (timeoutMs = 10_000): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    const code = await exited
    clearTimeout(timer)
    return code
  }
  const deadline = Date.now() + (o.readyTimeoutMs ?? 20_000)
  while (!out.includes('READY\n') && child.exitCode === null && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50))
  if (!out.includes('READY\n')) {
    await stop()
    throw new Error(`lab node (${o.mode}) did not start: ${err.trim() || 'no READY within the timeout'}`)
  }
  return {
    pid: child.pid!,
    lines: () =>
      (o.logFile ? (existsSync(o.logFile) ? readFileSync(o.logFile, 'utf8') : '') : out)
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    eachLine: async (visit) => {
      if (!o.logFile) return out.split('\n').forEach(visit)
      if (!existsSync(o.logFile)) return
      for await (const line of createInterface({ input: createReadStream(o.logFile), crlfDelay: Infinity })) visit(line)
    },
    stop,
    exited,
  }
}
