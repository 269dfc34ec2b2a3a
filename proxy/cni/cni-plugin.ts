// l7proxy-cni, the CNI plugin (SPEC 1.0.0; installed by `l7proxy cni install`): a container's
// interface as a point-to-point veth to the host, as Cilium's. ADD takes an address from the
// standard host-local IPAM plugin, gives the container it as a /32 with the host as its default
// gateway (the gateway address on the host's side, the container's /32 routed to it there,
// forwarding on for it), and registers the host side with the running agent, which attaches its
// programs and the container's policy there. DEL undoes all that, and succeeds when things are
// gone already; CHECK says whether the interface is there; VERSION says which versions it speaks.
// Nothing is left behind by an ADD that fails, and none is made when no agent is running.

import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { AdminError, adminGet } from '../agent/admin-socket.js'
import {
  addResult,
  CNI_ERRORS,
  CniError,
  type CniRequest,
  errorResult,
  ipamLease,
  parseRequest,
  versionResult,
} from './cni-protocol.js'

/** The host side of a container's veth: named from its container and interface (15 characters). */
function hostIfname(req: CniRequest): string {
  return `lxc${createHash('sha256').update(`${req.containerId}/${req.ifname}`).digest('hex').slice(0, 12)}`
}

/** Runs a command; throws CniError (interface failed) with what it said, unless `tolerant`. */
function run(argv: string[], tolerant = false): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 10_000 })
  if (r.status !== 0 && !tolerant)
    throw new CniError(
      CNI_ERRORS.interfaceFailed,
      `'${argv.join(' ')}' failed`,
      (r.stderr || String(r.error ?? '')).trim(),
    )
  return r.stdout ?? ''
}

/** A command in the container's network namespace. */
const inContainer = (req: CniRequest, argv: string[], tolerant = false): string =>
  run(['nsenter', `--net=${req.netns}`, ...argv], tolerant)

/** The delegated IPAM plugin (host-local) for `command`, with this call's environment and configuration. */
function ipam(req: CniRequest, command: 'ADD' | 'DEL' | 'CHECK', stdin: string): unknown {
  const type = req.config!.ipam.type
  const bin = req.path.map((dir) => join(dir, type)).find((p) => existsSync(p))
  if (bin === undefined)
    throw new CniError(
      CNI_ERRORS.invalidConfig,
      `IPAM plugin '${type}' not found`,
      `looked in CNI_PATH: ${req.path.join(':') || '(empty)'}`,
    )
  const r = spawnSync(bin, [], {
    input: stdin,
    encoding: 'utf8',
    timeout: 10_000,
    env: { ...process.env, CNI_COMMAND: command },
  })
  if (r.stderr) process.stderr.write(r.stderr)
  if (r.status === 0) return r.stdout.trim() === '' ? null : (JSON.parse(r.stdout) as unknown)
  let err: { code?: number; msg?: string; details?: string } = {}
  try {
    err = JSON.parse(r.stdout) as typeof err
  } catch {
    // not the spec's error: said below with what it printed
  }
  throw new CniError(
    err.code ?? CNI_ERRORS.ioFailure,
    `IPAM plugin '${type}' ${command} failed: ${err.msg ?? r.stdout.trim()}`,
    err.details ?? '',
  )
}

/** The agent's answer to an admin call; its absence as the plugin's own error. */
async function agent(req: CniRequest, path: string, body?: string): Promise<unknown> {
  const socket = req.config!.agentSocket
  try {
    return await adminGet(socket, path, 10_000, body === undefined ? 'GET' : 'POST', body)
  } catch (e) {
    if (e instanceof AdminError && e.code === 'ENOAGENT')
      throw new CniError(
        CNI_ERRORS.noAgent,
        'no l7proxy agent is running',
        `nothing answers on ${socket}: start it (l7proxy agent) before containers`,
      )
    throw new CniError(CNI_ERRORS.tryAgainLater, 'the l7proxy agent refused the container', (e as Error).message)
  }
}

function mac(ifname: string, inside?: CniRequest): string {
  const argv = ['ip', '-j', 'link', 'show', 'dev', ifname]
  const out = inside ? inContainer(inside, argv) : run(argv)
  return (JSON.parse(out) as Array<{ address: string }>)[0]!.address
}

async function add(req: CniRequest, stdin: string): Promise<string> {
  await agent(req, '/v1/status') // no agent: nothing is made
  const lease = ipamLease(ipam(req, 'ADD', stdin))
  const ip = lease.address.split('/')[0]!
  const host = hostIfname(req)
  try {
    const gateway = lease.gateway
    if (gateway === undefined)
      throw new CniError(
        CNI_ERRORS.invalidConfig,
        'IPAM gave no gateway',
        "the host side of the veth takes the subnet's gateway address",
      )
    // Made inside the container, its peer put in this (the host's) namespace: this process's.
    inContainer(req, [
      'ip',
      'link',
      'add',
      req.ifname,
      'type',
      'veth',
      'peer',
      'name',
      host,
      'netns',
      String(process.pid),
    ])
    inContainer(req, ['ip', 'addr', 'add', `${ip}/32`, 'dev', req.ifname])
    inContainer(req, ['ip', 'link', 'set', req.ifname, 'up'])
    inContainer(req, ['ip', 'route', 'add', gateway, 'dev', req.ifname, 'scope', 'link'])
    inContainer(req, ['ip', 'route', 'add', 'default', 'via', gateway, 'dev', req.ifname])
    run(['ip', 'addr', 'add', `${gateway}/32`, 'dev', host])
    run(['ip', 'link', 'set', host, 'up'])
    run(['ip', 'route', 'add', `${ip}/32`, 'dev', host])
    // Containers reach each other through the host: forwarding for what comes in on this veth.
    writeFileSync(`/proc/sys/net/ipv4/conf/${host}/forwarding`, '1')
    await agent(
      req,
      '/v1/cni/add',
      JSON.stringify({ containerId: req.containerId, ifname: req.ifname, interface: host, ips: [ip] }),
    )
    return addResult({
      version: req.version,
      hostIf: { name: host, mac: mac(host) },
      containerIf: { name: req.ifname, mac: mac(req.ifname, req), sandbox: req.netns },
      ip,
      gateway,
    })
  } catch (e) {
    await del(req, stdin).catch(() => undefined)
    throw e
  }
}

async function del(req: CniRequest, stdin: string): Promise<void> {
  try {
    await agent(req, '/v1/cni/del', JSON.stringify({ containerId: req.containerId, ifname: req.ifname }))
  } catch (e) {
    if (!(e instanceof CniError && e.code === CNI_ERRORS.noAgent)) throw e // gone with the agent
  }
  run(['ip', 'link', 'del', hostIfname(req)], true) // takes the container's end with it
  ipam(req, 'DEL', stdin)
}

async function check(req: CniRequest, stdin: string): Promise<void> {
  const host = hostIfname(req)
  if (spawnSync('ip', ['link', 'show', 'dev', host]).status !== 0)
    throw new CniError(CNI_ERRORS.interfaceFailed, `the container's veth ${host} is missing`)
  ipam(req, 'CHECK', stdin)
}

async function main(): Promise<number> {
  let stdin = ''
  let version = '1.0.0'
  try {
    try {
      stdin = readFileSync(0, 'utf8')
    } catch (e) {
      throw new CniError(CNI_ERRORS.ioFailure, 'cannot read the network configuration from stdin', (e as Error).message)
    }
    const req = parseRequest(process.env, stdin)
    version = req.version
    if (req.command === 'VERSION') process.stdout.write(versionResult(version))
    else if (req.command === 'ADD') process.stdout.write(await add(req, stdin))
    else if (req.command === 'DEL') await del(req, stdin)
    else await check(req, stdin)
    return 0
  } catch (e) {
    const err =
      e instanceof CniError
        ? e
        : new CniError(CNI_ERRORS.ioFailure, 'l7proxy-cni failed', (e as Error).stack ?? String(e))
    process.stdout.write(errorResult(version, err))
    return 1
  }
}

process.exitCode = await main()
