// The agent's process on a lab node (what `l7proxy agent` runs, and tests and benchmarks drive):
// run inside the lab's node namespace as
//   ip netns exec l7lab-NAME-node node dist/proxy/agent/lab-node.js --mode M --pin DIR
//     (--policy FILE | --policy-dir DIR) [options: lab-node-args.ts]
// It gives the Agent (agent.ts) the lab's part: its endpoints (unless an endpoints file is given)
// and every veth of the node to attach to, and the address the proxies listen on. It prints
// READY once the agent is up, logs flows as JSON lines on stdout (or appends them to FILE), and
// stops the agent on SIGTERM or SIGINT, also when one comes while it is still starting.

import { LAB_HOSTS, labEndpoints, nodeIfname } from '../../lab/topology.js'
import { parseMode } from '../../redirect-bpf/modes/redirect-mode.js'
import { Agent, AgentStartError, type AgentSettings } from './agent.js'
import { LAB_NODE_USAGE, LabNodeUsageError, parseLabNodeArgs, type LabNodeArgs } from './lab-node-args.js'
import { labProxyAddress } from './lab-node-process.js'

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
const settings: AgentSettings = {
  mode,
  pin: args.pin,
  proxyAddress: labProxyAddress(mode),
  proxyPorts: { http: args.httpPort, dns: args.dnsPort },
  http: args.http,
  dns: args.dns,
  threads: args.threads,
  dnsThreads: args.dnsThreads,
  sockmapCgroup: args.sockmapCgroup,
  policy: { file: args.policy, dir: args.policyDir },
  endpoints: args.endpoints ? { file: args.endpoints } : { list: labEndpoints().map((e) => ({ ...e, interface: nodeIfname(e.host) })) },
  // Every veth of the lab's node carries the programs (traffic from the outside world is judged
  // at its own); those with an endpoint behind them carry its policy.
  interfaces: LAB_HOSTS.map((h) => nodeIfname(h.name)),
  log: args.log,
  logLevel: args.logLevel,
  dnsReject: args.dnsReject,
  dnsMinTtlSeconds: args.dnsMinTtlSeconds,
  dnsMaxIps: args.dnsMaxIps,
  dnsMaxDelayMs: args.dnsMaxDelayMs,
  state: args.state,
  caDir: args.caDir,
  metricsFd: args.metricsFd,
  admin: args.admin,
}

let agent: Agent
try {
  agent = await Agent.start(settings)
} catch (e) {
  if (!(e instanceof AgentStartError)) throw e
  // One line that says what failed; what the agent had made is down again.
  process.stderr.write(`lab-node: ${e.message}\n`)
  process.exit(1)
}
process.once('exit', () => agent.flushLogs())
process.stdout.write('READY\n')
const shutdown = (): void => void agent.stop().finally(() => process.exit(0))
process.off('SIGTERM', stopWhileStarting)
process.off('SIGINT', stopWhileStarting)
process.once('SIGTERM', shutdown)
process.once('SIGINT', shutdown)
if (stopRequested) shutdown()
