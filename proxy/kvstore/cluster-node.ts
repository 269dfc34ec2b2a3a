// This node in a cluster that shares its state through etcd (the agent's `kvstore:` setting).
// It numbers the node's endpoints' identities cluster-wide (cluster-identities.ts), publishes the
// node and its endpoints' addresses under its lease (leased-keys.ts), and follows the store
// (kvstore-sync.ts, cluster-view.ts) to hand the agent other nodes' pods and the cluster's
// policy documents. An endpoint whose identity is not numbered yet (etcd away) holds
// reserved:init, which is allowed nothing that needs its identity, until it is.

import type { Logger } from 'pino'
import { L7ProxyError } from '../../lib/l7proxy-error.js'
import { INIT_LABELS } from '../../policy/identity.js'
import { LabelSet } from '../../policy/labels.js'
import { parsePolicyText } from '../../policy/parse.js'
import { ClusterIdentities } from './cluster-identities.js'
import { ClusterView, type ViewChange } from './cluster-view.js'
import { EtcdStore, type KvstoreTls, op } from './etcd-store.js'
import { type IpEntry, isPolicyName, KvstoreKeys, type NodeEntry, POLICY_NAME_RULE } from './kvstore-keys.js'
import { KvstoreSync } from './kvstore-sync.js'
import { LeasedKeys } from './leased-keys.js'

export interface KvstoreSettings {
  /** etcd's client URLs (http:// or https://). */
  endpoints: string[]
  /** Every key lives under it. */
  prefix: string
  tls: KvstoreTls | null
  /** This node's name in the cluster. */
  node: string
  /** The address other nodes reach this one at (its node entry's InternalIP). */
  nodeAddress: string
  /** The node lease: its keys outlive a dead agent by at most this. */
  leaseTtlSeconds: number
  /** How often identities no node uses are collected. */
  identityGcSeconds: number
}

/** An endpoint of this node, as the agent has it (the identity is what identify() adds). */
export interface LocalEndpoint {
  id: number
  host: string
  ips: readonly string[]
  labels: Readonly<Record<string, string>>
  identity?: number
}

/** Where what the store says goes. */
export interface ClusterSinks {
  /** Other nodes' pods came, changed or went. */
  remote(changes: ViewChange['endpoints']): void
  /** A cluster policy document changed (null: removed); why it was refused, or null. */
  policy(name: string, text: string | null): string | null
  /** An endpoint's identity got its number: identify() the endpoints again. */
  identitiesChanged(): void
}

export class KvstoreError extends L7ProxyError {}

/** What this node keeps of the store, for `status`. */
export interface ClusterStatus {
  node: string
  endpoints: string[]
  prefix: string
  connected: boolean
  degraded: boolean
  reasons: string[]
  revision: number
  policyRevision: number
  nodes: Array<{ name: string; address: string; policyRevision: number; endpoints: number; self: boolean }>
  identities: { held: number; waiting: number; allocated: number; joined: number; racesLost: number; collected: number }
  remoteEndpoints: number
  listings: number
}

const POLICY_FILE_PREFIX = 'cluster:'
const RETRY_MS = 1_000
const NODE_ENTRY_MS = 1_000

/** The engine's name for a cluster policy document (kept apart from a policy directory's files). */
export function clusterPolicyFile(name: string): string {
  return `${POLICY_FILE_PREFIX}${name}`
}

export class ClusterNode {
  readonly keys: KvstoreKeys
  private readonly store: EtcdStore
  private readonly view: ClusterView
  private readonly sync: KvstoreSync
  private readonly leased: LeasedKeys
  readonly identities: ClusterIdentities
  /** This node's endpoints: id -> their labels (canonical) whose identity they hold. */
  private holding = new Map<number, LabelSet>()
  /** Addresses published: ip -> the identity and name their entry has. */
  private published = new Map<string, { id: number; name: string }>()
  private readonly labelSets = new WeakMap<object, LabelSet>()
  private nodeTimer: NodeJS.Timeout | null = null
  private endpointCount = 0
  private appliedPolicyRevision = 0
  private readonly startedAt = new Date().toISOString()
  private leases = 0
  private retry: NodeJS.Timeout | null = null
  private gc: NodeJS.Timeout | null = null
  private staleRemoved = false

  constructor(
    private readonly s: KvstoreSettings,
    private readonly sinks: ClusterSinks,
    private readonly logger: Logger,
  ) {
    this.keys = new KvstoreKeys(s.prefix)
    this.store = new EtcdStore(s.endpoints, s.tls)
    this.view = new ClusterView(this.keys, s.node, (key, why) =>
      logger.error({ key, error: why }, 'kvstore: a value in the store is not valid; ignored'),
    )
    this.leased = new LeasedKeys(this.store, s.leaseTtlSeconds, logger, () => {
      // A lease after the first: the identities' user keys went with the old one.
      if (this.leases++ > 0) this.identities.askAgain(true)
    })
    this.identities = new ClusterIdentities(
      this.store,
      this.keys,
      s.node,
      () => this.leased.currentLease,
      logger,
      () => this.sinks.identitiesChanged(),
    )
    this.sync = new KvstoreSync(
      this.store,
      this.keys.all,
      this.view,
      logger,
      () => this.viewChanged(),
      () => this.stateChanged(),
    )
  }

  start(): void {
    this.leased.start()
    this.sync.start()
    this.publishNode()
    this.retry = setInterval(() => {
      if (this.identities.waiting) this.identities.askAgain(false)
    }, RETRY_MS)
    this.retry.unref()
    this.gc = setInterval(
      () => void this.identities.collectAll().catch(() => undefined),
      this.s.identityGcSeconds * 1000,
    )
    this.gc.unref()
  }

  /**
   * This node's endpoints with their cluster identities: each holds its labels' identity, asked
   * for when first seen; one still waiting for its number has reserved:init instead. Publishes
   * the addresses of those numbered and withdraws those gone.
   */
  identify<E extends LocalEndpoint>(list: readonly E[]): E[] {
    const next = new Map<number, LabelSet>()
    for (const ep of list) next.set(ep.id, this.labelSet(ep.labels))
    for (const [id, labels] of next) {
      const before = this.holding.get(id)
      if (before?.canonical === labels.canonical) continue
      if (!labels.has('reserved', 'init')) {
        this.identities
          .acquire(labels)
          .catch((e: Error) =>
            this.logger.warn(
              { endpoint: id, labels: labels.canonical, error: e.message },
              'kvstore: endpoint waits for its identity (reserved:init until the store numbers it)',
            ),
          )
      }
      if (before) this.identities.release(before.canonical)
    }
    for (const [id, labels] of this.holding) if (!next.has(id)) this.identities.release(labels.canonical)
    this.holding = next
    const out = list.map((ep): E => {
      const number = this.identities.known(next.get(ep.id)!.canonical)
      return number === null ? { ...ep, labels: { ...INIT_LABELS }, identity: undefined } : { ...ep, identity: number }
    })
    this.publishEndpoints(out)
    return out
  }

  /** An endpoint's labels as a set, made once per labels object (identify() runs on every change). */
  private labelSet(labels: Readonly<Record<string, string>>): LabelSet {
    let set = this.labelSets.get(labels)
    if (!set) this.labelSets.set(labels, (set = LabelSet.fromRecord(labels)))
    return set
  }

  /** Writes the addresses whose entry changed and withdraws those gone; the rest is left alone. */
  private publishEndpoints(list: readonly LocalEndpoint[]): void {
    const next = new Map<string, { id: number; name: string }>()
    for (const ep of list) {
      if (ep.identity === undefined) continue
      for (const ip of ep.ips) {
        next.set(ip, { id: ep.identity, name: ep.host })
        const before = this.published.get(ip)
        if (before?.id === ep.identity && before.name === ep.host) continue
        const entry: IpEntry = { IP: ip, ID: ep.identity, HostIP: this.s.nodeAddress, Node: this.s.node, Name: ep.host }
        this.leased.set(this.keys.ip(ip), JSON.stringify(entry))
      }
    }
    for (const ip of this.published.keys()) if (!next.has(ip)) this.leased.delete(this.keys.ip(ip))
    this.published = next
    if (this.endpointCount !== list.length) {
      this.endpointCount = list.length
      this.publishNodeSoon()
    }
  }

  /** The node entry again within a second: its endpoint count changes with every endpoint, and one write a second says enough. */
  private publishNodeSoon(): void {
    if (this.nodeTimer !== null) return
    this.nodeTimer = setTimeout(() => {
      this.nodeTimer = null
      this.publishNode()
    }, NODE_ENTRY_MS)
    this.nodeTimer.unref()
  }

  private publishNode(): void {
    const entry: NodeEntry = {
      Name: this.s.node,
      IPAddresses: [{ Type: 'InternalIP', IP: this.s.nodeAddress }],
      PolicyRevision: this.appliedPolicyRevision,
      Endpoints: this.endpointCount,
      StartedAt: this.startedAt,
    }
    this.leased.set(this.keys.node(this.s.node), JSON.stringify(entry))
  }

  private viewChanged(): void {
    const change = this.view.take()
    if (change.endpoints.length > 0) this.sinks.remote(change.endpoints)
    for (const [name, text] of change.policies) {
      const why = this.sinks.policy(clusterPolicyFile(name), text)
      if (why !== null)
        this.logger.error(
          { policy: name, revision: this.view.policyRevision, error: why },
          'kvstore: cluster policy refused; what was in force for it stays',
        )
    }
    if (this.appliedPolicyRevision !== this.view.policyRevision) {
      this.appliedPolicyRevision = this.view.policyRevision
      this.publishNode()
    }
    this.removeStale()
  }

  /**
   * Once everything of this node is written again after a start: addresses its last run
   * published that no endpoint has now go (they would otherwise wait for the old lease).
   */
  private removeStale(): void {
    if (this.staleRemoved || !this.leased.synced || this.identities.waiting || this.sync.listings === 0) return
    this.staleRemoved = true
    for (const e of this.view.ipEntryList()) {
      if (e.Node === this.s.node && !this.published.has(e.IP))
        void this.store.delete(this.keys.ip(e.IP)).catch(() => (this.staleRemoved = false))
    }
  }

  private stateChanged(): void {
    const up = this.sync.connected
    if (up) this.logger.info({ revision: this.view.revision }, 'kvstore: connected; the view is current')
    else
      this.logger.warn(
        { revision: this.view.revision, error: this.sync.lastError },
        'kvstore: disconnected; enforcing what is known (degraded)',
      )
  }

  /** Stores a policy document for every node, once it parses; the store's revision after. */
  async importPolicy(name: string, text: string): Promise<number> {
    if (!isPolicyName(name))
      throw new KvstoreError('EPOLICYNAME', `'${name}' is not a cluster policy name (${POLICY_NAME_RULE})`)
    parsePolicyText(text, name) // a PolicyError says where
    const r = await this.store.txn([], [op.put(this.keys.policy(name), text)])
    return r.revision
  }

  /** Removes a cluster policy document; whether there was one. */
  async removePolicy(name: string): Promise<boolean> {
    const r = await this.store.range({ key: this.keys.policy(name) }, { keysOnly: true })
    if (r.kvs.length === 0) return false
    await this.store.delete(this.keys.policy(name))
    return true
  }

  /** Other nodes' endpoints the store has: address, identity, node, name. */
  remoteEndpoints(): IpEntry[] {
    return this.view.ipEntryList().filter((e) => e.Node !== this.s.node)
  }

  /** Cluster identities with the nodes that use them. */
  clusterIdentities(): ReturnType<ClusterView['identities']> {
    return this.view.identities()
  }

  status(): ClusterStatus {
    const reasons: string[] = []
    if (!this.sync.connected) reasons.push(`store not reachable (${this.sync.lastError ?? 'connecting'})`)
    if (!this.leased.synced)
      reasons.push(`own keys not written${this.leased.failure ? ` (${this.leased.failure})` : ''}`)
    const held = this.identities.list()
    const waiting = held.filter((h) => h.id === null).length
    if (waiting > 0) reasons.push(`${waiting} identities wait for their number`)
    return {
      node: this.s.node,
      endpoints: this.s.endpoints,
      prefix: this.s.prefix,
      connected: this.sync.connected,
      degraded: reasons.length > 0,
      reasons,
      revision: this.view.revision,
      policyRevision: this.appliedPolicyRevision,
      nodes: this.view.nodes().map((n) => ({
        name: n.Name,
        address: n.IPAddresses[0]?.IP ?? '',
        policyRevision: n.PolicyRevision,
        endpoints: n.Endpoints,
        self: n.Name === this.s.node,
      })),
      identities: { held: held.length, waiting, ...this.identities.stats },
      remoteEndpoints: this.remoteEndpoints().length,
      listings: this.sync.listings,
    }
  }

  async stop(): Promise<void> {
    if (this.retry !== null) clearInterval(this.retry)
    if (this.nodeTimer !== null) clearTimeout(this.nodeTimer)
    if (this.gc !== null) clearInterval(this.gc)
    this.leased.stop()
    await this.sync.stop()
    this.store.close()
  }
}
