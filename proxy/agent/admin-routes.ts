// What the agent answers on its admin socket (admin-server.ts), for the CLI's status, endpoint
// list, flows, fqdn cache, policy, bpf policy and identity list commands and for a Prometheus
// scrape: each route reads the agent's parts, or changes them through the same calls the agent
// itself uses. A bad query is an AdminQueryError (a 400 saying what is wrong).

import type { Logger } from 'pino'
import type { PolicyEngine } from '../../policy/engine.js'
import { formatPrefix } from '../../policy/cidr.js'
import { labelString } from '../../policy/labels.js'
import type { Datapath } from '../../redirect-bpf/datapath.js'
import { AdminQueryError, AdminText, type AdminRoutes } from './admin-server.js'
import type { NodeEndpoint } from './endpoints-file.js'
import { FlowFilterError, parseFlowQuery, type FlowFeed } from './flow-feed.js'
import type { FqdnLearning } from './fqdn-learning.js'
import type { AgentMetrics } from './metrics.js'
import { parseAttachment, type CniEndpoints } from './cni-endpoints.js'
import type { PolicyFiles } from './policy-files.js'

export interface AgentParts {
  engine: PolicyEngine
  /** Containers l7proxy-cni registers; null where the endpoints come from a file. */
  cni: Pick<CniEndpoints, 'add' | 'remove'> | null
  endpoints: { readonly list: ReadonlyArray<Pick<NodeEndpoint, 'id' | 'host' | 'ips' | 'labels'>> }
  feed: FlowFeed
  fqdns: Pick<FqdnLearning, 'entries' | 'clean'>
  policies: Pick<PolicyFiles, 'dir' | 'texts' | 'import'>
  metrics: Pick<AgentMetrics, 'registry' | 'text'>
  datapath: Pick<Datapath, 'policyEntries'>
  logger: Logger
  /** What `l7proxy status` shows. */
  status: () => Record<string, unknown>
}

/** A flow query, or a 400 saying what is wrong with it. */
function flowQuery(q: URLSearchParams): ReturnType<typeof parseFlowQuery> {
  try {
    return parseFlowQuery(q)
  } catch (e) {
    throw e instanceof FlowFilterError ? new AdminQueryError(e.message) : e
  }
}

export function adminRoutes(p: AgentParts): AdminRoutes {
  const { engine, endpoints, feed, fqdns, policies, metrics } = p
  const labels = (identity: number): string[] => engine.identities.get(identity)?.labels.labels.map(labelString) ?? []
  return {
    '/v1/status': () => p.status(),
    '/v1/endpoints': () =>
      endpoints.list.map((ep) => {
        const info = engine.endpointInfo(ep.id)
        return { id: ep.id, host: ep.host, identity: info?.identity ?? null, ips: ep.ips, labels: ep.labels, enforce: info?.enforce ?? null, rules: info?.ruleIds ?? [] }
      }),
    '/v1/flows': (q) => {
      const { filter, last } = flowQuery(q)
      return feed.recentEvents(filter).slice(-(last || 1_000))
    },
    '/v1/flows/follow': {
      stream: (q, write) => {
        const { filter, last } = flowQuery(q)
        if (last > 0) for (const e of feed.recentEvents(filter).slice(-last)) write(e)
        return feed.follow(filter, write)
      },
    },
    '/v1/fqdn': () => fqdns.entries(),
    '/v1/policy': () => ({ revision: engine.policyRevision, directory: policies.dir, files: [...policies.texts].map(([file, text]) => ({ file, text })) }),
    'POST /v1/policy/import': (q, body) => policies.import(q.get('name'), body),
    // l7proxy-cni: a container's interface is an endpoint from its ADD to its DEL.
    'POST /v1/cni/add': (_q, body) => {
      if (p.cni === null) throw new AdminQueryError('this agent takes its endpoints from a file (endpointsFile): containers cannot join it through l7proxy-cni')
      return p.cni.add(parseAttachment(body))
    },
    'POST /v1/cni/del': (_q, body) => {
      const { containerId, ifname } = JSON.parse(body || '{}') as { containerId?: unknown; ifname?: unknown }
      if (typeof containerId !== 'string' || typeof ifname !== 'string') throw new AdminQueryError('expected { containerId, ifname }')
      return { removed: p.cni?.remove(containerId, ifname) ?? false }
    },
    // Forgetting names takes their addresses out of the maps: connections to them are cut.
    'POST /v1/fqdn/clean': () => {
      const removed = fqdns.clean()
      p.logger.info({ names: removed.length }, 'fqdn cache cleaned')
      return { removed }
    },
    '/metrics': async () => new AdminText(metrics.registry.contentType, await metrics.text()),
    '/v1/bpf/policy': (q) => {
      const id = Number(q.get('endpoint'))
      if (!endpoints.list.some((e) => e.id === id)) throw new AdminQueryError(`no endpoint '${q.get('endpoint')}' on this node (see l7proxy endpoint list)`)
      return p.datapath.policyEntries(id).map((e) => ({ ...e, labels: e.identity === 0 ? ['(any)'] : labels(e.identity) }))
    },
    '/v1/identities': () =>
      [...engine.identities.all()].map((i) => ({ id: i.id, kind: i.kind, labels: i.labels.labels.map(labelString), ...(i.prefix ? { prefix: formatPrefix(i.prefix) } : {}) })),
  }
}
