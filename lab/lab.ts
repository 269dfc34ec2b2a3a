// The lab: network namespaces for a node, its pods and servers, built from topology.ts, with the
// lab's servers running inside them. Used by `l7proxy lab up|down|status`, the tests' fixture,
// the demo and the benchmarks.
//
// Nothing is added to the root namespace: every address, route and sysctl lives in a namespace
// the lab made. Besides namespaces, the lab writes only /etc/netns/<ns>/resolv.conf (which
// `ip netns exec` bind-mounts) and its state directory; `down` removes all of it, and finds the
// leftovers of a crashed run by the namespace prefix alone.

import { mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { distPath } from '../lib/project-root.js'
import { DEFAULT_LAB } from '../proxy/agent/lab-name.js'
import { cgroup2Root, createCgroup, removeCgroup } from '../redirect-bpf/cgroup.js'
import { LabError } from './errors.js'
import { startEtcd } from './etcd-server.js'
import {
  type ExecOptions,
  type ExecResult,
  execIn,
  findExecutable,
  isAlive,
  listNetns,
  netnsPids,
  run,
  runIn,
  spawnDetachedIn,
  stopProcess,
  waitListening,
} from './netns.js'
import { unboundFiles } from './servers/unbound-config.js'
import {
  ETCD_ADDRESS,
  ETCD_CLIENT_PORT,
  ETCD_PEER_PORT,
  etcdClientUrl,
  findHost,
  GATEWAY_IP,
  HOST_IFNAME,
  hostNetns,
  isValidLabName,
  type LabHost,
  type LabService,
  labCgroupName,
  labHosts,
  nodeIfname,
  nodeNetns,
  nodeNetnsOf,
  nodeUnderlayAddress,
  type PlacedHost,
  parseNetns,
  podCidr,
  resolvConf,
  UNDERLAY_HOST,
  UNDERLAY_IFNAME,
  UNDERLAY_PREFIX_LEN,
  underlayNetns,
} from './topology.js'

export { DEFAULT_LAB }

/** Commands the lab runs, with the Debian package that has each. */
const REQUIRED_COMMANDS: ReadonlyArray<[string, string]> = [
  ['ip', 'iproute2'],
  ['ss', 'iproute2'],
  ['sysctl', 'procps'],
  ['unbound', 'unbound'],
]

export interface LabProcess {
  host: string
  kind: LabService['kind'] | 'etcd'
  port: number
  pid: number
  log: string
}

export interface LabState {
  name: string
  createdAt: string
  /** The first node's namespace. */
  nodeNetns: string
  /** How many nodes (each with its namespace, lab up --nodes). */
  nodes: number
  /** The cluster's store, when there are several nodes (etcd on the underlay). */
  etcd: string | null
  hosts: Array<
    Pick<LabHost, 'name' | 'role' | 'addresses' | 'labels'> & { node: number; netns: string; nodeIfname: string }
  >
  processes: LabProcess[]
}

export interface NamespaceStatus {
  netns: string
  host: string
  pids: number[]
}

export interface LabStatus {
  name: string
  /** Present when the lab's state file exists (it is written once the lab is fully up). */
  state: LabState | null
  namespaces: NamespaceStatus[]
  /** Fully up: every namespace exists and every recorded server is running. */
  healthy: boolean
}

function runDir(): string {
  return process.env.L7PROXY_RUN_DIR ?? '/run/l7proxy'
}

export function labStateDir(name: string): string {
  return join(runDir(), 'lab', name)
}

function etcNetnsDir(ns: string): string {
  return join('/etc/netns', ns)
}

function checkName(name: string): void {
  if (!isValidLabName(name)) {
    throw new LabError('EBADNAME', `invalid lab name '${name}': use 1-16 characters from a-z and 0-9`)
  }
}

/** Why the lab cannot run here, or null if it can. */
export function labPrerequisites(): string | null {
  if (process.getuid?.() !== 0) return 'the lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for network namespaces)'
  const missing = REQUIRED_COMMANDS.filter(([cmd]) => !findExecutable(cmd))
  if (missing.length > 0) {
    return `missing commands: ${missing.map(([c, p]) => `${c} (Debian package ${p})`).join(', ')}; run scripts/setup.sh`
  }
  return null
}

function assertPrerequisites(): void {
  const why = labPrerequisites()
  if (why) throw new LabError(process.getuid?.() !== 0 ? 'ENOTROOT' : 'ENOCMD', why)
}

function writeState(state: LabState): void {
  writeFileSync(join(labStateDir(state.name), 'state.json'), `${JSON.stringify(state, null, 2)}\n`)
}

/** A lab's state as `up` wrote it (null: not up, or not whole). */
export function readState(name: string): LabState | null {
  try {
    return JSON.parse(readFileSync(join(labStateDir(name), 'state.json'), 'utf8')) as LabState
  } catch {
    return null
  }
}

async function sysctls(ns: string, settings: string[]): Promise<void> {
  await runIn(ns, ['sysctl', '-qw', ...settings])
}

const IPV4_ONLY = ['net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']

async function addNamespace(ns: string): Promise<void> {
  await run(['ip', 'netns', 'add', ns])
  await run(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
  // The lab is IPv4 only; no IPv6 link-local chatter on its veths.
  await sysctls(ns, IPV4_ONLY)
}

async function wireHost(name: string, node: string, host: LabHost): Promise<void> {
  const ns = hostNetns(name, host.name)
  const lxc = nodeIfname(host.name)
  await addNamespace(ns)
  mkdirSync(etcNetnsDir(ns), { recursive: true })
  writeFileSync(join(etcNetnsDir(ns), 'resolv.conf'), resolvConf())
  await run(['ip', '-n', node, 'link', 'add', lxc, 'type', 'veth', 'peer', 'name', HOST_IFNAME, 'netns', ns])
  await run(['ip', '-n', node, 'addr', 'add', `${GATEWAY_IP}/32`, 'dev', lxc])
  await run(['ip', '-n', node, 'link', 'set', lxc, 'up'])
  for (const a of host.addresses) {
    await run(['ip', '-n', ns, 'addr', 'add', `${a}/32`, 'dev', HOST_IFNAME])
    await run(['ip', '-n', node, 'route', 'add', `${a}/32`, 'dev', lxc])
  }
  // Through the host's own address: one neighbour entry for the range, not one per address
  // (past the kernel's 1024 the table overflows and connects fail).
  for (const r of host.ranges ?? []) {
    await run(['ip', '-n', ns, 'route', 'add', 'local', r, 'dev', 'lo'])
    await run(['ip', '-n', node, 'route', 'add', r, 'via', host.addresses[0]!, 'dev', lxc])
  }
  await run(['ip', '-n', ns, 'link', 'set', HOST_IFNAME, 'up'])
  await run(['ip', '-n', ns, 'route', 'add', `${GATEWAY_IP}/32`, 'dev', HOST_IFNAME, 'scope', 'link'])
  await run(['ip', '-n', ns, 'route', 'add', 'default', 'via', GATEWAY_IP, 'dev', HOST_IFNAME])
}

async function startService(
  name: string,
  host: LabHost,
  svc: LabService,
  dir: string,
  cgroup: string,
): Promise<LabProcess> {
  const ns = hostNetns(name, host.name)
  const log = join(dir, `${host.name}-${svc.kind}.log`)
  let argv: string[]
  if (svc.kind === 'dns') {
    const { files, configFile } = unboundFiles({
      address: host.addresses[0]!,
      port: svc.port,
      directory: dir,
      threads: 2,
    })
    for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, file), content)
    argv = ['unbound', '-c', join(dir, configFile)]
  } else {
    argv = [process.execPath, distPath('lab/servers/run.js'), svc.kind, '--name', host.name, '--port', String(svc.port)]
  }
  const pid = await spawnDetachedIn(ns, argv, log, cgroup)
  const what = `${svc.kind} server on ${host.name}`
  await waitListening({ ns, port: svc.port, proto: svc.kind === 'dns' ? 'udp' : 'tcp', pid, logFile: log, what })
  if (svc.kind === 'dns') await waitListening({ ns, port: svc.port, proto: 'tcp', pid, logFile: log, what })
  return { host: host.name, kind: svc.kind, port: svc.port, pid, log }
}

/**
 * Several nodes: the underlay's bridge (and etcd's address) in a namespace of its own, each node
 * on it by a veth, and routes from each node to the others' pod CIDRs (the outside world's
 * addresses hang off node 1).
 */
async function wireUnderlay(name: string, nodes: number, hosts: readonly PlacedHost[]): Promise<void> {
  const ul = underlayNetns(name)
  await addNamespace(ul)
  await run(['ip', '-n', ul, 'link', 'add', 'br0', 'type', 'bridge'])
  await run(['ip', '-n', ul, 'addr', 'add', `${ETCD_ADDRESS}/${UNDERLAY_PREFIX_LEN}`, 'dev', 'br0'])
  await run(['ip', '-n', ul, 'link', 'set', 'br0', 'up'])
  const world = hosts
    .filter((h) => h.role === 'external')
    .flatMap((h) => [...h.addresses.map((a) => `${a}/32`), ...(h.ranges ?? [])])
  for (let k = 1; k <= nodes; k++) {
    const node = nodeNetnsOf(name, k)
    await run(['ip', '-n', node, 'link', 'add', UNDERLAY_IFNAME, 'type', 'veth', 'peer', 'name', `ul${k}`, 'netns', ul])
    await run(['ip', '-n', ul, 'link', 'set', `ul${k}`, 'master', 'br0', 'up'])
    await run([
      'ip',
      '-n',
      node,
      'addr',
      'add',
      `${nodeUnderlayAddress(k)}/${UNDERLAY_PREFIX_LEN}`,
      'dev',
      UNDERLAY_IFNAME,
    ])
    await run(['ip', '-n', node, 'link', 'set', UNDERLAY_IFNAME, 'up'])
    for (let j = 1; j <= nodes; j++) {
      if (j !== k) await run(['ip', '-n', node, 'route', 'add', podCidr(j), 'via', nodeUnderlayAddress(j)])
    }
    if (k !== 1) for (const p of world) await run(['ip', '-n', node, 'route', 'add', p, 'via', nodeUnderlayAddress(1)])
  }
}

/** The lab's etcd server on the underlay, its data in the lab's directory. */
async function startLabEtcd(name: string): Promise<LabProcess> {
  const dir = join(labStateDir(name), 'etcd')
  const etcd = await startEtcd({
    dir,
    address: ETCD_ADDRESS,
    clientPort: ETCD_CLIENT_PORT,
    peerPort: ETCD_PEER_PORT,
    netns: underlayNetns(name),
  })
  return { host: UNDERLAY_HOST, kind: 'etcd', port: ETCD_CLIENT_PORT, pid: etcd.pid(), log: join(dir, 'etcd.log') }
}

/** A lab's etcd (one of several nodes), stopped and started again on its data: an outage. */
export function labEtcd(name: string): { stop(): Promise<void>; start(): Promise<void> } {
  checkName(name)
  const state = readState(name)
  const at = state?.processes.findIndex((p) => p.kind === 'etcd') ?? -1
  if (state === null || at < 0)
    throw new LabError('EETCD', `lab '${name}' has no etcd (it has one with several nodes: lab up --nodes N)`)
  return {
    stop: () => stopProcess(state.processes[at]!.pid),
    start: async () => {
      if (isAlive(state.processes[at]!.pid))
        throw new LabError('EETCD', `lab '${name}': etcd (pid ${state.processes[at]!.pid}) is running`)
      state.processes[at] = await startLabEtcd(name)
      writeState(state)
    },
  }
}

async function create(name: string, nodes: number): Promise<LabState> {
  const dir = labStateDir(name)
  mkdirSync(dir, { recursive: true })
  const hosts = labHosts(nodes)
  for (let k = 1; k <= nodes; k++) {
    const node = nodeNetnsOf(name, k)
    await addNamespace(node)
    await sysctls(node, ['net.ipv4.ip_forward=1'])
  }
  for (const host of hosts) await wireHost(name, nodeNetnsOf(name, host.node), host)
  const processes: LabProcess[] = []
  if (nodes > 1) {
    await wireUnderlay(name, nodes, hosts)
    processes.push(await startLabEtcd(name))
  }
  // The servers are the lab's pods: in sockmap mode sock_ops sees their sockets in this group.
  const cgroup = createCgroup(labCgroupName(name)).dir
  for (const host of hosts) {
    for (const svc of host.services) processes.push(await startService(name, host, svc, dir, cgroup))
  }
  const state: LabState = {
    name,
    createdAt: new Date().toISOString(),
    nodeNetns: nodeNetns(name),
    nodes,
    etcd: nodes > 1 ? etcdClientUrl() : null,
    hosts: hosts.map((h) => ({
      name: h.name,
      role: h.role,
      addresses: h.addresses,
      labels: h.labels,
      node: h.node,
      netns: hostNetns(name, h.name),
      nodeIfname: nodeIfname(h.name),
    })),
    processes,
  }
  writeState(state)
  return state
}

export interface UpResult {
  state: LabState
  /** False when the lab was already up and healthy, and was left as it was. */
  created: boolean
}

/**
 * Brings the lab up. Idempotent: a healthy lab of that name (and of `nodes` nodes, when given) is
 * left alone; a broken or partial one, or one of another size, is removed and made again. On failure everything made so far is removed.
 */
export async function labUp(name: string = DEFAULT_LAB, o: { nodes?: number } = {}): Promise<UpResult> {
  checkName(name)
  const nodes = o.nodes ?? 1
  labHosts(nodes) // a bad count is refused before anything is made
  assertPrerequisites()
  const existing = (await labStatus()).find((s) => s.name === name)
  // Without a count, a healthy lab is taken as it is, whatever its number of nodes.
  if (existing?.healthy && existing.state && (o.nodes === undefined || existing.state.nodes === nodes))
    return { state: existing.state, created: false }
  if (existing) await labDown(name)
  try {
    return { state: await create(name, nodes), created: true }
  } catch (err) {
    await labDown(name).catch(() => undefined)
    throw err
  }
}

async function killAll(pids: number[]): Promise<void> {
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    for (const pid of pids) {
      try {
        process.kill(pid, sig)
      } catch {
        // already gone
      }
    }
    const deadline = Date.now() + 3000
    while (Date.now() < deadline && pids.some(isAlive)) await new Promise((r) => setTimeout(r, 25))
    if (!pids.some(isAlive)) return
  }
}

export interface DownResult {
  namespaces: string[]
  killed: number[]
}

/**
 * Removes a lab (or, with no name, every lab, including leftovers of crashed runs): ends the
 * processes running inside its namespaces (they are ours: nothing else runs there), deletes the
 * namespaces (which takes their veths, addresses and routes along), and removes its files.
 */
export async function labDown(name?: string): Promise<DownResult> {
  if (name !== undefined) checkName(name)
  assertPrerequisites()
  const namespaces = (await listNetns()).filter((ns) => {
    const p = parseNetns(ns)
    return p !== null && (name === undefined || p.lab === name)
  })
  const killed: number[] = []
  for (const ns of namespaces) killed.push(...(await netnsPids(ns)))
  await killAll(killed)
  for (const ns of namespaces) {
    await run(['ip', 'netns', 'del', ns])
    rmSync(etcNetnsDir(ns), { recursive: true, force: true })
  }
  // ip netns exec only reads /etc/netns; an empty one means nothing once no lab exists (while
  // another lab is being made, its namespaces exist before its /etc/netns entries).
  if (!(await listNetns()).some((ns) => parseNetns(ns) !== null)) rmdirIfEmpty('/etc/netns')
  const labsDir = join(runDir(), 'lab')
  const stateDirs = name !== undefined ? [name] : safeReaddir(labsDir).filter(isValidLabName)
  for (const lab of stateDirs) rmSync(labStateDir(lab), { recursive: true, force: true })
  removeLabCgroups(name)
  return { namespaces, killed }
}

/** The lab's cgroup (or every lab's), once its processes are gone. */
function removeLabCgroups(name: string | undefined): void {
  const root = cgroup2Root()
  const prefix = labCgroupName('')
  const groups =
    name !== undefined
      ? [labCgroupName(name)]
      : safeReaddir(root).filter((d) => d.startsWith(prefix) && isValidLabName(d.slice(prefix.length)))
  for (const g of groups) removeCgroup(join(root, g))
}

function rmdirIfEmpty(dir: string): void {
  try {
    if (readdirSync(dir).length === 0) rmdirSync(dir)
  } catch {
    // absent, or not ours to remove
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

/** Every lab that exists, by its namespaces and state files. */
export async function labStatus(): Promise<LabStatus[]> {
  assertPrerequisites()
  const byLab = new Map<string, NamespaceStatus[]>()
  for (const ns of await listNetns()) {
    const p = parseNetns(ns)
    if (!p) continue
    const list = byLab.get(p.lab) ?? []
    list.push({ netns: ns, host: p.host, pids: await netnsPids(ns) })
    byLab.set(p.lab, list)
  }
  for (const lab of safeReaddir(join(runDir(), 'lab'))) {
    if (isValidLabName(lab) && !byLab.has(lab)) byLab.set(lab, [])
  }
  const out: LabStatus[] = []
  for (const [name, namespaces] of [...byLab].sort(([a], [b]) => a.localeCompare(b))) {
    const state = readState(name)
    const nodes = state?.nodes ?? 1
    const nodeSpaces = Array.from({ length: nodes }, (_, i) => nodeNetnsOf(name, i + 1))
    const expected = [
      ...nodeSpaces,
      ...(nodes > 1 ? [underlayNetns(name)] : []),
      ...labHosts(nodes).map((h) => hostNetns(name, h.name)),
    ]
    const rank = (ns: string): number => (expected.includes(ns) ? expected.indexOf(ns) : expected.length)
    namespaces.sort((a, b) => rank(a.netns) - rank(b.netns))
    const present = new Set(namespaces.map((n) => n.netns))
    const healthy =
      state !== null &&
      expected.every((ns) => present.has(ns)) &&
      state.processes.every((p) =>
        namespaces.some((n) => n.netns === hostNetns(name, p.host) && n.pids.includes(p.pid)),
      )
    out.push({ name, state, namespaces, healthy })
  }
  return out
}

/** The namespace of a lab host, of `node` (the first node), `nodeK` (node K) or `underlay`. */
export function labNetns(name: string, host: string): string {
  checkName(name)
  if (host === 'node') return nodeNetns(name)
  const k = /^node([1-9])$/.exec(host)
  if (k) return nodeNetnsOf(name, Number(k[1]))
  if (host !== UNDERLAY_HOST) findHost(host)
  return hostNetns(name, host)
}

/** Runs a command inside a lab host's namespace (`node` for the node namespace, `nodeK`, `underlay`). */
export function labExec(name: string, host: string, argv: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
  return execIn(labNetns(name, host), argv, opts)
}
