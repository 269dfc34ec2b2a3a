// A checked configuration (config.ts) turned into what the agent runs with (AgentSettings), given
// the node's part, which the configuration does not say: where the agent was put to work (a lab's
// node, a host) decides the interfaces, the proxy address, the endpoints' source and the like.

import { availableParallelism } from 'node:os'
import type { AgentSettings } from './agent.js'
import type { AgentConfig } from './config.js'

/** What the node adds to a configuration: always its interfaces and proxy address; any other setting it overrides. */
export type NodePart = Partial<AgentSettings> & Pick<AgentSettings, 'interfaces' | 'proxyAddress'>

export function agentSettings(c: AgentConfig, node: NodePart): AgentSettings {
  return {
    mode: c.mode,
    pin: c.bpffs,
    proxyPorts: { http: c.proxy.httpPort, dns: c.proxy.dnsPort },
    http: 'builtin',
    dns: 'builtin',
    threads: c.proxy.threads === 0 ? availableParallelism() : c.proxy.threads,
    dnsThreads: c.dns.threads,
    sockmapCgroup: null,
    policy: { file: null, dir: c.policyDirectory },
    endpoints: c.endpointsFile !== null ? { file: c.endpointsFile } : { list: [] },
    log: null,
    logLevel: c.logging.level,
    dnsReject: c.dns.rejectCode,
    dnsMinTtlSeconds: c.dns.minTtlSeconds,
    dnsMaxIps: c.dns.maxIpsPerName,
    dnsZombies: { idleGraceSeconds: c.dns.idleConnectionGraceSeconds, max: c.dns.maxDeferredConnectionDeletes },
    dnsMaxDelayMs: c.dns.maxDelayMs,
    mapSizes: c.maps,
    state: c.stateDirectory,
    caDir: c.caDirectory,
    metricsFd: null,
    admin: c.admin.socket,
    cniLabelsCommand: c.cni.labelsCommand,
    overload: c.overload,
    kvstore: c.kvstore,
    takeover: false,
    drainTimeoutMs: c.handover.drainSeconds * 1000,
    ...node,
  }
}

/**
 * A host's part: the interfaces the configuration names, the proxy address it gives (loopback by
 * default; dnat needs a host address the endpoints' packets reach, checked with the
 * configuration), and no endpoints unless a file names them. sockmap makes a cgroup of its own.
 */
export function hostNodePart(c: AgentConfig, metricsFd: number | null): NodePart {
  return { interfaces: c.interfaces, proxyAddress: c.proxy.address ?? '127.0.0.1', metricsFd }
}
