// The node side of a lab, until the agent (issue 8) takes over: run inside the lab's node
// namespace as
//   ip netns exec l7lab-NAME-node node dist/proxy/agent/lab-node.js --mode M --policy FILE --pin DIR
//     [--http builtin|external] [--threads N] [--sockmap-cgroup NAME] [--log FILE]
// It registers the lab's endpoints, loads the policy, starts the datapath on every host veth and
// the HTTP proxy on transparent listeners, one per thread (default: one per core; dnat mode: one,
// as the proxymap is read where the datapath lives) (or, with --http external, leaves the port to another
// proxy such as HAProxy), prints READY, logs flows as JSON lines on stdout (or appends them to
// FILE: a benchmark's reader must not compete with the proxy for CPU), and stops cleanly on
// SIGTERM. Tests and benchmarks drive it.

import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import type { Socket } from 'node:net'
import { parseArgs } from 'node:util'
import pino from 'pino'
import { LAB_HOSTS, labEndpoints, nodeIfname } from '../../lab/topology.js'
import { PolicyEngine } from '../../policy/engine.js'
import { joinCgroup, cgroup2Root } from '../../redirect-bpf/cgroup.js'
import { removeBpffs } from '../../redirect-bpf/bpffs.js'
import { Datapath } from '../../redirect-bpf/datapath.js'
import { parseMode } from '../../redirect-bpf/modes/redirect-mode.js'
import { transparentTcpListener } from '../../redirect-bpf/transparent-socket.js'
import type { Flow } from '../http/flow-verdict.js'
import { LAB_PROXY_PORTS, labProxyAddress } from './lab-node-process.js'
import { HttpProxy } from '../http/http-proxy.js'
import { startHttpWorkers, type HttpWorkers } from './http-workers.js'
import { LineBatcher } from './line-batcher.js'

const { http: LAB_HTTP_PROXY_PORT, dns: LAB_DNS_PROXY_PORT } = LAB_PROXY_PORTS

const { values } = parseArgs({
  options: {
    mode: { type: 'string' },
    policy: { type: 'string' },
    pin: { type: 'string' },
    http: { type: 'string', default: 'builtin' },
    'sockmap-cgroup': { type: 'string' },
    log: { type: 'string' },
    threads: { type: 'string' },
  },
})
const threadsArg = Number(values.threads ?? availableParallelism())
if (!values.policy || !values.pin || (values.http !== 'builtin' && values.http !== 'external') || !Number.isInteger(threadsArg) || threadsArg < 1 || threadsArg > 64) {
  process.stderr.write('usage: lab-node --mode M --policy FILE --pin DIR [--http builtin|external] [--threads N (1-64)] [--sockmap-cgroup NAME] [--log FILE]\n')
  process.exit(2)
}
const mode = parseMode(values.mode ?? '')
const engine = new PolicyEngine({ proxyPorts: { http: LAB_HTTP_PROXY_PORT, dns: LAB_DNS_PROXY_PORT } })
const endpoints = labEndpoints()
for (const ep of endpoints) engine.upsertEndpoint(ep)
const policies = [{ name: values.policy, text: readFileSync(values.policy, 'utf8') }]
for (const p of policies) engine.loadFile(p.name, p.text)
const proxyAddress = labProxyAddress(mode)
const dp = Datapath.start({ mode, pinRoot: values.pin, proxyAddress, proxyPorts: [LAB_HTTP_PROXY_PORT, LAB_DNS_PROXY_PORT], ...(values['sockmap-cgroup'] ? { cgroupName: values['sockmap-cgroup'] } : {}) })
for (const h of LAB_HOSTS) dp.attach(nodeIfname(h.name), endpoints.find((e) => e.host === h.name)?.id)
dp.apply(engine.takeDelta())

// Every thread's lines reach `out` in batches; written out at least every quarter second, and
// at exit.
const out = pino.destination({ dest: values.log ?? 1, sync: false, append: true })
const lines = new LineBatcher((text) => out.write(text))
process.once('exit', () => {
  lines.flush()
  out.flushSync()
})
const logger = pino({ base: null }, lines)

let proxy: HttpProxy | null = null
let workers: HttpWorkers | null = null
const threads = mode === 'dnat' ? 1 : threadsArg
if (values.http === 'builtin') {
  // Where a connection was going: getsockname, or in dnat mode the proxymap.
  const flowOf =
    mode === 'dnat'
      ? (socket: Socket): Flow => {
          const d = dp.originalDestination(socket.remoteAddress!, socket.remotePort!, 'tcp')
          return { sourceAddress: socket.remoteAddress!, sourcePort: socket.remotePort!, destAddress: d?.address ?? '0.0.0.0', destPort: d?.port ?? 0 }
        }
      : undefined
  proxy = new HttpProxy({ engine, logger, ...(flowOf ? { flowOf } : {}) })
  // sockmap: the proxy's sockets must be in the cgroup sock_ops watches; accepted sockets take
  // the listener's cgroup, fixed when it is made.
  if (dp.cgroup) joinCgroup(dp.cgroup)
  const fds = Array.from({ length: threads }, () => transparentTcpListener(proxyAddress, LAB_HTTP_PROXY_PORT, { reusePort: true }))
  if (dp.cgroup) joinCgroup(cgroup2Root())
  await proxy.listen({ fd: fds[0]! })
  const proxyPorts = { http: LAB_HTTP_PROXY_PORT, dns: LAB_DNS_PROXY_PORT }
  workers = await startHttpWorkers(
    fds.slice(1).map((fd) => ({ fd, proxyPorts, endpoints, policies })),
    (text) => lines.write(text),
  )
}
process.stdout.write('READY\n')
process.once('SIGTERM', () => {
  void Promise.all([proxy?.close(), workers?.stop()]).finally(() => {
    logger.info({ mode, httpThreads: proxy ? threads : 0, ...(dp.cgroup ? { sockmap: dp.sockmapStats() } : {}) }, 'datapath stopped')
    dp.stop()
    removeBpffs(values.pin!)
    process.exit(0)
  })
})
