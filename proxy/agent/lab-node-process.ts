// Starts lab-node.ts inside a lab's node namespace and talks to it: waits for READY, collects its
// JSON lines, stops it by PID with SIGTERM. Used by the kernel tests and the HTTP benchmark.

import { spawn } from 'node:child_process'
import { createReadStream, existsSync, readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { GATEWAY_IP, nodeNetns } from '../../lab/topology.js'
import { distPath } from '../../lib/project-root.js'

/** Where lab-node's proxies listen (the datapath steers there). */
export const LAB_PROXY_PORTS = { http: 15001, dns: 15053 } as const

/** The address the proxies listen on: in dnat mode one rewritten packets reach, else loopback. */
export function labProxyAddress(mode: string): string {
  return mode === 'dnat' ? GATEWAY_IP : '127.0.0.1'
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
  /** The node's endpoints from this file (watched) instead of the lab's. */
  endpointsFile?: string
  /** JSON lines go to this file instead of stdout (lines() then reads it). */
  logFile?: string
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
}

export async function startLabNode(o: LabNodeOptions): Promise<LabNode> {
  const args = [distPath('proxy/agent/lab-node.js'), '--mode', o.mode, '--policy', o.policyFile, '--pin', o.pin, '--http', o.http ?? 'builtin', '--dns', o.dns ?? 'builtin']
  if (o.sockmapCgroup) args.push('--sockmap-cgroup', o.sockmapCgroup)
  if (o.logFile) args.push('--log', o.logFile)
  if (o.threads !== undefined) args.push('--threads', String(o.threads))
  if (o.dnsThreads !== undefined) args.push('--dns-threads', String(o.dnsThreads))
  if (o.stateDir !== undefined) args.push('--state', o.stateDir)
  if (o.caDir !== undefined) args.push('--ca-dir', o.caDir)
  if (o.endpointsFile !== undefined) args.push('--endpoints', o.endpointsFile)
  if (o.admin !== undefined) args.push('--admin', o.admin)
  if (o.dnsMinTtl !== undefined) args.push('--dns-min-ttl', String(o.dnsMinTtl))
  // `ip netns exec` execs node: the child's PID is the agent's.
  const child = spawn('ip', ['netns', 'exec', nodeNetns(o.lab), process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const stop = async (timeoutMs = 10_000): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    const code = await exited
    clearTimeout(timer)
    return code
  }
  const deadline = Date.now() + (o.readyTimeoutMs ?? 20_000)
  while (!out.includes('READY\n') && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
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
  }
}
