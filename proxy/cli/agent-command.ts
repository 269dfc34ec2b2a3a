// `l7proxy agent`: the node agent, in the foreground. Its configuration is the defaults, then
// --config FILE, then L7PROXY_* variables, then flags (proxy/agent/config.ts); a bad file or value
// is refused with where and why before anything starts. Without a lab it runs the agent in this
// process, in the namespace it was started in; with one it brings the lab up if it is not and
// runs the agent's process (proxy/agent/agent-main.ts) in the lab's node namespace. Either stops
// (datapath removed, a lab left up) on Ctrl-C or SIGTERM. SIGHUP reads the configuration again
// and, if it changed, restarts the agent with it.

import { closeSync, existsSync, readFileSync, statSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { ensureBpffs, isBpffs, removeBpffs } from '../../redirect-bpf/bpffs.js'
import { REDIRECT_MODES, type RedirectMode } from '../../redirect-bpf/modes/redirect-mode.js'
import { tcpListener } from '../../redirect-bpf/transparent-socket.js'
import { Agent, AgentStartError } from '../agent/agent.js'
import { agentSettings, hostNodePart } from '../agent/agent-settings.js'
import {
  type AgentConfig,
  ConfigError,
  type ConfigLayer,
  environmentLayers,
  LOG_LEVELS,
  type LogLevel,
  parseConfigText,
  resolveConfig,
} from '../agent/config.js'
import { EndpointsFileError, parseEndpointsText } from '../agent/endpoints-file.js'
import { isValidLabName } from '../agent/lab-name.js'
import { UsageError } from './usage-error.js'

export const AGENT_USAGE = `  agent [--config FILE] [--lab NAME [--node K]] [--mode M] [--policy-dir DIR] [--threads N] [--log-level L]
                            run the node agent in the foreground: on this host, in the network
                            namespace it is started in (policies in /etc/l7proxy/policies,
                            endpoints from the configuration's endpointsFile), or with --lab on
                            that lab's node (brought up if needed; policies: the examples), node
                            K of a lab of several (lab up --nodes N), joining its etcd;
                            the datapath in mode M (${REDIRECT_MODES.join(', ')}; default sk-assign),
                            the HTTP proxy on N threads (default: one per core), and every policy
                            file in DIR, applied live as files change;
                            settings: defaults < FILE < L7PROXY_* variables < flags;
                            --takeover: take over from the agent running with this configuration's
                            admin socket (a restart or an upgrade, e.g. by systemd): its sockets and
                            datapath carry over, it finishes what it has in flight, then exits;
                            nothing fails meanwhile (same mode, bpffs and proxy ports needed).
                            SIGHUP reads the configuration again and hands over the same way`

/** The flags as one more layer; bad values are usage errors. */
function flagLayer(args: string[]): { config?: string; layer: ConfigLayer } {
  let v: {
    config?: string
    lab?: string
    node?: string
    mode?: string
    'policy-dir'?: string
    threads?: string
    'log-level'?: string
  }
  try {
    ;({ values: v } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        config: { type: 'string' },
        lab: { type: 'string' },
        node: { type: 'string' },
        mode: { type: 'string' },
        'policy-dir': { type: 'string' },
        threads: { type: 'string' },
        'log-level': { type: 'string' },
      },
    }))
  } catch (e) {
    throw new UsageError(`agent: ${(e as Error).message}`)
  }
  const layer: ConfigLayer = {}
  if (v.lab !== undefined) {
    if (!isValidLabName(v.lab))
      throw new UsageError(`agent: invalid --lab '${v.lab}': use 1-16 characters from a-z and 0-9`)
    layer.lab = v.lab
  }
  if (v.node !== undefined) {
    if (!/^[1-8]$/.test(v.node))
      throw new UsageError(`agent: --node must be a node of the lab, 1 to 8, not '${v.node}'`)
    layer.labNode = Number(v.node)
  }
  if (v.mode !== undefined) {
    if (!(REDIRECT_MODES as readonly string[]).includes(v.mode))
      throw new UsageError(`agent: unknown --mode '${v.mode}' (expected one of: ${REDIRECT_MODES.join(', ')})`)
    layer.mode = v.mode as RedirectMode
  }
  if (v['policy-dir'] !== undefined) layer.policyDirectory = v['policy-dir']
  if (v.threads !== undefined) {
    const n = Number(v.threads)
    if (!Number.isInteger(n) || n < 1 || n > 64)
      throw new UsageError(`agent: --threads must be a whole number from 1 to 64, not '${v.threads}'`)
    layer.proxy = { threads: n }
  }
  if (v['log-level'] !== undefined) {
    if (!(LOG_LEVELS as readonly string[]).includes(v['log-level']))
      throw new UsageError(`agent: unknown --log-level '${v['log-level']}' (expected one of: ${LOG_LEVELS.join(', ')})`)
    layer.logging = { level: v['log-level'] as LogLevel }
  }
  return { ...(v.config !== undefined ? { config: v.config } : {}), layer }
}

/** The configuration the agent would run with: every layer read and checked. */
export function agentConfig(args: string[], env: NodeJS.ProcessEnv): AgentConfig {
  const flags = flagLayer(args)
  const layers: ConfigLayer[] = []
  if (flags.config !== undefined) {
    let text: string
    try {
      text = readFileSync(flags.config, 'utf8')
    } catch (e) {
      throw new ConfigError([
        {
          file: flags.config,
          line: 0,
          column: 0,
          path: '',
          message: `cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        },
      ])
    }
    layers.push(parseConfigText(text, flags.config))
  }
  layers.push(...environmentLayers(env), flags.layer)
  const c = resolveConfig(layers)
  if (c.lab === null && c.mode === 'dnat' && c.proxy.address === null) {
    throw new ConfigError([
      {
        file: 'agent',
        line: 0,
        column: 0,
        path: 'proxy.address',
        message:
          "dnat on a host needs the host address the proxies listen on and steered packets are rewritten to (the endpoints' gateway)",
      },
    ])
  }
  if (!existsSync(c.policyDirectory) || !statSync(c.policyDirectory).isDirectory()) {
    throw new ConfigError([
      {
        file: 'agent',
        line: 0,
        column: 0,
        path: 'policyDirectory',
        message: `'${c.policyDirectory}' is not a directory`,
      },
    ])
  }
  if (c.endpointsFile !== null) {
    try {
      parseEndpointsText(readFileSync(c.endpointsFile, 'utf8'), c.endpointsFile)
    } catch (e) {
      const issues =
        e instanceof EndpointsFileError
          ? e.issues
          : [
              {
                file: c.endpointsFile,
                line: 0,
                column: 0,
                path: '',
                message: `cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
              },
            ]
      throw new ConfigError([
        { file: 'agent', line: 0, column: 0, path: 'endpointsFile', message: `'${c.endpointsFile}' is refused:` },
        ...issues,
      ])
    }
  }
  return c
}

/**
 * The metrics listener, made here (in the namespace the agent is started in, where Prometheus
 * scrapes) and handed to the agent process in the lab's node namespace as its fd 3.
 */
function metricsListener(c: AgentConfig): number | null {
  if (c.admin.metrics === null) return null
  const { address, port } = c.admin.metrics
  try {
    return tcpListener(address, port)
  } catch (e) {
    throw new ConfigError([
      {
        file: 'agent',
        line: 0,
        column: 0,
        path: 'admin.metrics',
        message: `cannot listen on ${address}:${port}: ${(e as Error).message.replace(/^bind [^:]+:\d+: /, '')}; choose another ADDRESS:PORT, or off`,
      },
    ])
  }
}

interface AgentProcess {
  kill(sig: NodeJS.Signals): void
  /** Its exit code (0 when it was stopped by SIGINT or SIGTERM). */
  exited: Promise<number>
}

/** Runs the agent's process (agent-main.ts) in the lab's node namespace with configuration `c`, handed over as settings. */
async function startLabAgent(
  lab: AgentConfig & { lab: string },
  metricsFd: number | null,
  out: (s: string) => void,
  takeover: boolean,
): Promise<AgentProcess> {
  let c = lab
  // The lab is a user of the agent: loaded only when one is asked for.
  const [{ labUp }, { labKvstoreLayer, labNodePart, spawnNodeAgent }, { labCgroupName }] = await Promise.all([
    import('../../lab/lab.js'),
    import('../../lab/node-agent.js'),
    import('../../lab/topology.js'),
  ])
  const { created, state } = await labUp(c.lab)
  if (c.labNode > state.nodes)
    throw new ConfigError([
      {
        file: 'agent',
        line: 0,
        column: 0,
        path: 'labNode',
        message: `lab '${c.lab}' has ${state.nodes} node(s): there is no node ${c.labNode}`,
      },
    ])
  // Several nodes: the node joins the lab's etcd unless the configuration names a store.
  if (state.etcd !== null && c.kvstore === null)
    c = { ...c, kvstore: resolveConfig([{ kvstore: labKvstoreLayer(state.etcd, c.labNode) }]).kvstore }
  out(
    `${created ? 'brought lab' : 'lab'} '${c.lab}' up; starting the agent of node ${c.labNode} of ${state.nodes} (${c.mode}, policies in ${c.policyDirectory})\n`,
  )
  out(`try: ip netns exec l7lab-${c.lab}-tiefighter curl -s -XPOST http://deathstar/v1/request-landing\n`)
  out(`     ip netns exec l7lab-${c.lab}-tiefighter curl -s -XPUT http://deathstar/v1/exhaust-port\n`)
  out(`     ip netns exec l7lab-${c.lab}-tiefighter dig hoth.alliance\n`)
  const settings = agentSettings(c, {
    ...labNodePart(c, { nodes: state.nodes, node: c.labNode }),
    sockmapCgroup: c.mode === 'sockmap' ? labCgroupName(c.lab) : null,
    metricsFd: metricsFd === null ? null : 3,
    takeover,
  })
  const child = spawnNodeAgent(
    c.lab,
    settings,
    { out: 'inherit', ...(metricsFd !== null ? { fds: [metricsFd] } : {}) },
    c.labNode,
  )
  return {
    kill: (sig) => void child.kill(sig),
    exited: new Promise<number>((resolve) =>
      child.once('exit', (code, sig) => resolve(code ?? (sig === 'SIGINT' || sig === 'SIGTERM' ? 0 : 1))),
    ),
  }
}

/**
 * Runs the agent in this process, in the namespace it was started in, with configuration `c`.
 * Its metrics listener is its own (made now, closed at its stop), so a restart binds it again.
 */
async function startHostAgent(c: AgentConfig, out: (s: string) => void, takeover: boolean): Promise<AgentProcess> {
  // Taking over, the running agent's metrics listener is taken with its other sockets.
  const metricsFd = takeover ? null : metricsListener(c)
  out(`starting the agent on this host (${c.mode}, policies in ${c.policyDirectory}, admin socket ${c.admin.socket})\n`)
  let stopped: (code: number) => void = () => undefined
  const exited = new Promise<number>((resolve) => (stopped = resolve))
  let agent: Agent | null = null
  try {
    agent = await Agent.start(agentSettings(c, { ...hostNodePart(c, metricsFd), takeover }))
  } catch (e) {
    if (!(e instanceof AgentStartError)) throw e
    out(`l7proxy agent: ${e.message}\n`)
    if (metricsFd !== null) closeSync(metricsFd)
    stopped(1)
  }
  // Another agent took over from this one (l7proxy agent --takeover): it drained and stopped.
  void agent?.whenHandedOver.then(() => {
    out('another agent took over; this one drained and stopped\n')
    stopped(0)
  })
  return {
    kill: () => void agent?.stop().finally(() => stopped(0)),
    exited,
  }
}

/** The top-level settings that differ between two configurations. */
export function changedSettings(a: AgentConfig, b: AgentConfig): string[] {
  return (Object.keys(a) as Array<keyof AgentConfig>).filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
}

const startAgent = (
  c: AgentConfig,
  metricsFd: number | null,
  out: (s: string) => void,
  takeover: boolean,
): Promise<AgentProcess> =>
  c.lab === null
    ? startHostAgent(c, out, takeover)
    : startLabAgent(c as AgentConfig & { lab: string }, metricsFd, out, takeover)

/** Whether an agent with configuration `b` can take over from one with `a`: the same datapath, on the same sockets. */
export function keepsDatapath(a: AgentConfig, b: AgentConfig): boolean {
  const same = (k: keyof AgentConfig): boolean => JSON.stringify(a[k]) === JSON.stringify(b[k])
  return (
    (['lab', 'labNode', 'mode', 'bpffs'] as const).every(same) &&
    a.proxy.httpPort === b.proxy.httpPort &&
    a.proxy.dnsPort === b.proxy.dnsPort &&
    a.proxy.address === b.proxy.address &&
    a.admin.socket === b.admin.socket
  )
}

/** A lab's agent process gets a metrics listener made here, in this namespace, kept across its restarts; a host's agent makes its own. */
const labMetricsListener = (c: AgentConfig): number | null => (c.lab === null ? null : metricsListener(c))

export async function agentCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const takeover = argv.includes('--takeover')
  const args = argv.filter((a) => a !== '--takeover')
  let c = agentConfig(args, process.env)
  let metricsFd = takeover ? null : labMetricsListener(c)
  // A lab's agents are processes in the node's namespace with mount namespaces of their own:
  // their pinned maps are shared (for a takeover) through a bpffs mounted here.
  const pinnedHere = c.lab !== null && !isBpffs(c.bpffs) ? (ensureBpffs(c.bpffs), true) : false
  let agent: AgentProcess
  try {
    agent = await startAgent(c, metricsFd, out, takeover)
  } catch (e) {
    if (pinnedHere) removeBpffs(c.bpffs)
    throw e
  }
  // SIGHUP: the configuration read again (file, environment, flags). A bad one is refused and
  // the running agent stays; a changed one is taken over by a new agent on the same sockets and
  // maps (nothing fails meanwhile), or, when the datapath itself changes (mode, bpffs, proxy
  // ports), replaces it (steered flows fail closed for the moment in between).
  let replacing = false
  const reload = async (): Promise<void> => {
    let next: AgentConfig
    let nextFd: number | null
    try {
      next = agentConfig(args, process.env)
      const changed = changedSettings(c, next)
      if (changed.length === 0) return void out('l7proxy agent: SIGHUP: the configuration is unchanged\n')
      nextFd =
        next.lab === c.lab && JSON.stringify(next.admin.metrics) === JSON.stringify(c.admin.metrics)
          ? metricsFd
          : labMetricsListener(next)
      out(
        `l7proxy agent: SIGHUP: ${changed.join(', ')} changed; ${keepsDatapath(c, next) ? 'a new agent takes over' : 'restarting the agent'}\n`,
      )
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e
      return void out(`l7proxy agent: SIGHUP: configuration refused, the running one stays:\n${e.message}\n`)
    }
    replacing = true
    const old = agent
    const handOver = keepsDatapath(c, next) && nextFd === metricsFd
    if (!handOver) {
      old.kill('SIGTERM')
      await old.exited
    }
    if (nextFd !== metricsFd && metricsFd !== null) closeSync(metricsFd)
    c = next
    metricsFd = nextFd
    agent = await startAgent(c, metricsFd, out, handOver)
    // The agent taken over from drains and exits by itself.
    if (handOver) await old.exited
    replacing = false
  }
  let reloads = Promise.resolve()
  const onHup = (): void => void (reloads = reloads.then(reload))
  // A lab's agent process gets Ctrl-C through the terminal's process group; a SIGTERM sent to
  // this process alone is passed on. An agent in this process is stopped by either.
  const forward = (sig: NodeJS.Signals): void => agent.kill(sig)
  const onInt = (sig: NodeJS.Signals): void => (c.lab === null ? forward(sig) : undefined)
  process.on('SIGTERM', forward)
  process.on('SIGINT', onInt)
  process.on('SIGHUP', onHup)
  try {
    for (;;) {
      const code = await agent.exited
      if (!replacing) return code
      await reloads
    }
  } finally {
    process.off('SIGTERM', forward)
    process.off('SIGINT', onInt)
    process.off('SIGHUP', onHup)
    if (pinnedHere) removeBpffs(c.bpffs)
  }
}
