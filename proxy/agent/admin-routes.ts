// What the agent answers on its admin socket (admin-server.ts), for the CLI's status, endpoint
// list, flows, fqdn cache, policy, bpf policy and identity list commands and for a Prometheus
// scrape: each route reads the agent's parts, or changes them through the same calls the agent
// itself uses. A bad query is an AdminQueryError (a 400 saying what is wrong).

import type { Logger } from 'pino'
import { L7ProxyError } from '../../lib/l7proxy-error.js'
import { formatPrefix } from '../../policy/cidr.js'
import type { PolicyEngine } from '../../policy/engine.js'
import { PolicyError } from '../../policy/errors.js'
import { labelString } from '../../policy/labels.js'
import type { Datapath } from '../../redirect-bpf/datapath.js'
import type { ClusterNode } from '../kvstore/cluster-node.js'
import { AdminQueryError, type AdminRoutes, AdminText } from './admin-server.js'
import { type CniEndpoints, parseAttachment } from './cni-endpoints.js'
import type { NodeEndpoint } from './endpoints-file.js'
import { type FlowFeed, FlowFilterError, parseFlowQuery } from './flow-feed.js'
import type { FqdnLearning } from './fqdn-learning.js'
import type { HandoverParty } from './handover.js'
import type { AgentMetrics } from './metrics.js'
import type { PolicyFiles } from './policy-files.js'

export interface AgentParts {
  engine: PolicyEngine
  /** Containers l7proxy-cni registers; null where the endpoints come from a file. */
  cni: Pick<CniEndpoints, 'add' | 'remove'> | null
  endpoints: { readonly list: ReadonlyArray<Pick<NodeEndpoint, 'id' | 'host' | 'ips' | 'labels'>> }
  feed: FlowFeed
  fqdns: Pick<FqdnLearning, 'entries' | 'clean' | 'merge'>
  policies: Pick<PolicyFiles, 'dir' | 'texts' | 'import'>
  metrics: Pick<AgentMetrics, 'registry' | 'text'>
  datapath: Pick<Datapath, 'policyEntries'>
  logger: Logger
  /** What `l7proxy status` shows. */
  status: () => Record<string, unknown>
  /** This node in a cluster; null: on its own. */
  cluster: Pick<
    ClusterNode,
    'importPolicy' | 'removePolicy' | 'remoteEndpoints' | 'clusterIdentities' | 'status'
  > | null
  /** Being taken over by another agent (handover.ts). */
  handover: HandoverParty
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
    '/v1/endpoints': (q) => [
      ...endpoints.list.map((ep) => {
        const info = engine.endpointInfo(ep.id)
        return {
          id: ep.id,
          host: ep.host,
          identity: info?.identity ?? null,
          ips: ep.ips,
          labels: ep.labels,
          enforce: info?.enforce ?? null,
          rules: info?.ruleIds ?? [],
        }
      }),
      // Other nodes' endpoints, as the store has them (their policy is their node's to enforce).
      ...(q.get('remote') === '1'
        ? (p.cluster?.remoteEndpoints() ?? []).map((e) => ({
            id: null,
            node: e.Node,
            host: e.Name,
            identity: e.ID,
            ips: [e.IP],
            labels: labels(e.ID),
            enforce: null,
            rules: [],
          }))
        : []),
    ],
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
    '/v1/policy': () => {
      const c = p.cluster?.status()
      return {
        revision: engine.policyRevision,
        directory: policies.dir,
        files: [...policies.texts].map(([file, text]) => ({ file, text })),
        ...(c
          ? {
              cluster: {
                revision: c.policyRevision,
                nodes: c.nodes.map((n) => ({ node: n.name, revision: n.policyRevision })),
              },
            }
          : {}),
      }
    },
    'POST /v1/policy/import': (q, body) =>
      q.get('cluster') === '1'
        ? clusterCall(async () => ({
            name: q.get('name'),
            revision: await cluster().importPolicy(q.get('name') ?? '', body),
          }))
        : policies.import(q.get('name'), body),
    'POST /v1/policy/remove': (q) =>
      clusterCall(async () => ({ name: q.get('name'), removed: await cluster().removePolicy(q.get('name') ?? '') })),
    // l7proxy-cni: a container's interface is an endpoint from its ADD to its DEL.
    'POST /v1/cni/add': (_q, body) => {
      if (p.cni === null)
        throw new AdminQueryError(
          'this agent takes its endpoints from a file (endpointsFile): containers cannot join it through l7proxy-cni',
        )
      return p.cni.add(parseAttachment(body))
    },
    'POST /v1/cni/del': (_q, body) => {
      const { containerId, ifname } = JSON.parse(body || '{}') as { containerId?: unknown; ifname?: unknown }
      if (typeof containerId !== 'string' || typeof ifname !== 'string')
        throw new AdminQueryError('expected { containerId, ifname }')
      return { removed: p.cni?.remove(containerId, ifname) ?? false }
    },
    // The agent taken over from passes on what it learned after its offer (handover.ts).
    'POST /v1/fqdn/merge': (_q, body) => {
      const entries = JSON.parse(body || 'null') as unknown
      const valid =
        Array.isArray(entries) &&
        entries.every(
          (e) =>
            typeof e?.name === 'string' &&
            Array.isArray(e.ips) &&
            e.ips.every(
              (i: { ip?: unknown; expiresAt?: unknown }) =>
                typeof i?.ip === 'string' && typeof i.expiresAt === 'number',
            ),
        )
      if (!valid) throw new AdminQueryError('expected [{ name, ips: [{ ip, expiresAt }] }]')
      return { grew: fqdns.merge(entries) }
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
      if (!endpoints.list.some((e) => e.id === id))
        throw new AdminQueryError(`no endpoint '${q.get('endpoint')}' on this node (see l7proxy endpoint list)`)
      return p.datapath
        .policyEntries(id)
        .map((e) => ({ ...e, labels: e.identity === 0 ? ['(any)'] : labels(e.identity) }))
    },
    // Another agent taking over this one (handover.ts): what it needs to know, the offer, then a cancel or the drain.
    '/v1/handover': () => p.handover.handoverInfo(),
    'POST /v1/handover/offer': () => p.handover.offerHandover(),
    'POST /v1/handover/cancel': () => (p.handover.cancelHandover(), { cancelled: true }),
    'POST /v1/handover/drain': () => (p.handover.drainAfterHandover(), { draining: true }),
    '/v1/identities': () => {
      // In a cluster, which nodes use each cluster identity (those this node knows of, and the rest the store has).
      const used = new Map((p.cluster?.clusterIdentities() ?? []).map((c) => [c.id, c]))
      const known = [...engine.identities.all()].map((i) => ({
        id: i.id,
        kind: i.kind,
        labels: i.labels.labels.map(labelString),
        ...(i.prefix ? { prefix: formatPrefix(i.prefix) } : {}),
        ...(p.cluster && i.kind === 'endpoint' ? { nodes: used.get(i.id)?.nodes ?? [] } : {}),
      }))
      const elsewhere = [...used.values()]
        .filter((c) => !engine.identities.get(c.id))
        .map((c) => ({ id: c.id, kind: 'endpoint', labels: c.labels.split(';'), nodes: c.nodes }))
      return [...known, ...elsewhere].sort((a, b) => a.id - b.id)
    },
  }

  function cluster(): NonNullable<AgentParts['cluster']> {
    if (p.cluster === null)
      throw new AdminQueryError(
        'this agent is not in a cluster (no kvstore in its configuration): there is no cluster policy',
      )
    return p.cluster
  }

  /** A cluster call: a policy that does not parse, a bad name, or an unreachable store is a 400 saying so. */
  async function clusterCall<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run()
    } catch (e) {
      if (e instanceof PolicyError || e instanceof L7ProxyError) throw new AdminQueryError(e.message)
      if (e instanceof Error && !(e instanceof AdminQueryError))
        throw new AdminQueryError(`the cluster's store did not take it: ${e.message}`)
      throw e
    }
  }
}
