// The policy engine: policy documents plus cluster state (endpoints on this node, identities in
// the cluster, IPs learned for DNS names) in; the desired kernel map state and the proxies' L7
// tables out. Every change is incremental: an identity appearing touches only the selectors that
// match it and the map entries those selectors feed; a policy file changing recomputes only the
// endpoints its old or new rules select. `takeDelta()` returns the net change since the last
// call, for the map writers.

import { formatPrefix, type Prefix, parseIPv4, parsePrefix, prefixContains } from './cidr.js'
import {
  type ContributionSpec,
  type ProxyPorts,
  type ResolvedPolicy,
  resolveEndpointPolicy,
  selectsEndpoint,
} from './endpoint-policy.js'
import { MapFullError, PolicyError } from './errors.js'
import { type Identity, IdentityAllocator, RESERVED_IDENTITIES } from './identity.js'
import { EndpointL7Policy, httpMatcher, type L7Filter, nameMatcher } from './l7-policy.js'
import { type LabelSet, splitSource } from './labels.js'
import {
  decide,
  keyString,
  type MapDelta,
  MapState,
  type PolicyValue,
  type PortBlock,
  portBlocks,
} from './map-state.js'
import type { Direction, DnsRuleSpec, HttpRuleSpec, RuleSpec, SelectorSpec, TlsRuleSpec } from './model.js'
import { parsePolicyText } from './parse.js'
import { type CachedSelector, type SelectionDelta, SelectorCache } from './selector-cache.js'

export interface EndpointSpec {
  /** Endpoint id on this node (the datapath keys its maps by it). */
  id: number
  /** Labels; a key without `source:` is a Kubernetes label. */
  labels: Readonly<Record<string, string>>
  ips: readonly string[]
  /** The identity the cluster's store numbered these labels with (absent: numbered here). */
  identity?: number
}

/** A pod on another node, as the cluster's store tells it: its identity and that identity's labels. */
export interface RemotePeer {
  identity: number
  labels: LabelSet
}

export interface EndpointInfo {
  id: number
  identity: number
  ips: readonly string[]
  enforce: Record<Direction, boolean>
  ruleIds: readonly string[]
}

export interface IpcacheDelta {
  upserts: Array<[string, number]>
  deletes: string[]
}

export interface EngineDelta {
  /** Per endpoint; an endpoint that left has all its entries in `deletes`. */
  policy: Map<number, MapDelta>
  ipcache: IpcacheDelta
  /** Endpoints added or whose identity or enforcement changed, and endpoints removed. */
  endpoints: { upserts: EndpointInfo[]; deletes: number[] }
}

interface Contribution extends ContributionSpec {
  endpoint: EndpointState
  sel: CachedSelector
  blocks: PortBlock[]
}

interface EndpointState {
  id: number
  /** As last given (taken back to, should a change not fit the maps). */
  spec: EndpointSpec
  identity: Identity
  ips: readonly string[]
  resolved: ResolvedPolicy
  contributions: Contribution[]
  map: MapState
  l7: EndpointL7Policy
  l7Selectors: CachedSelector[]
}

export interface EngineOptions {
  proxyPorts: ProxyPorts
  /** Entries the node's ipcache and policy map hold: learned addresses past them are refused. Default: no bound. */
  capacity?: MapCapacity
  /** A learned address refused for want of room (it stays the world's: connections to it are denied). */
  onRefused?: (r: MapRefusal) => void
}

export interface MapCapacity {
  ipcache: number
  policy: number
}

export interface MapRefusal {
  map: 'ipcache' | 'policy'
  address: string
  names: string[]
  /** How many entries the map holds, and may. */
  entries: number
  capacity: number
}

function labelList(labels: Readonly<Record<string, string>>) {
  return Object.entries(labels).map(([k, value]) => ({ ...splitSource(k, 'k8s'), value }))
}

function cidrsOf(rules: readonly RuleSpec[]): string[] {
  const out = new Set<string>()
  const visit = (s: SelectorSpec): void => {
    if (s.kind !== 'cidr') return
    out.add(s.cidr)
    for (const e of s.except) out.add(e)
  }
  for (const r of rules) {
    for (const section of [r.ingress, r.ingressDeny, r.egress, r.egressDeny])
      for (const pr of section) pr.peers?.forEach(visit)
  }
  return [...out]
}

export class PolicyEngine {
  readonly identities = new IdentityAllocator()
  readonly selectors = new SelectorCache()
  private readonly proxyPorts: ProxyPorts
  private readonly files = new Map<string, RuleSpec[]>()
  private readonly fileCidrs = new Map<string, Identity[]>()
  private readonly endpoints = new Map<number, EndpointState>()
  private readonly bySelector = new Map<CachedSelector, Set<Contribution>>()
  private readonly endpointIps = new Map<string, number>()
  /** A local endpoint's address -> its endpoint id. */
  private readonly endpointByIp = new Map<string, number>()
  private readonly cidrIps = new Map<string, number>()
  /** Other nodes' pods: address -> identity (held, one reference each). */
  private readonly remoteIps = new Map<string, number>()
  private ipJournal = new Map<string, number | null>()
  private readonly fqdnNames = new Map<string, Set<string>>()
  /** Learned addresses: their names, and the identity the toFQDNs selectors of those give them (null: none selects it). */
  private readonly fqdnIps = new Map<string, { names: Set<string>; identity: Identity | null }>()
  /** Learned addresses' ipcache entries (`ip/32` -> identity). */
  private readonly fqdnPrefixes = new Map<string, number>()
  /** Each toFQDNs selector's own identity, held while the selector is: an address it alone selects needs only an ipcache entry. */
  private readonly fqdnHeld = new Map<string, Identity>()
  /** The toFQDNs labels and toCIDR prefixes learned addresses were labelled against. */
  private fqdnShape = ''
  /** Prefixes the ipcache holds (from any table). */
  private ipcacheEntries = 0
  private readonly capacity: MapCapacity
  private readonly onRefused: (r: MapRefusal) => void
  /** Learned addresses refused so far, by the map that had no room. */
  private readonly refused = { ipcache: 0, policy: 0 }
  private removedEndpoints = new Map<number, MapDelta>()
  private touchedEndpoints = new Set<number>()
  private revision = 0
  private generation = 0

  constructor(opts: EngineOptions) {
    this.proxyPorts = opts.proxyPorts
    this.capacity = opts.capacity ?? { ipcache: Infinity, policy: Infinity }
    this.onRefused = opts.onRefused ?? (() => {})
    for (const id of Object.values(RESERVED_IDENTITIES)) this.selectors.identityAdded(this.identities.get(id)!)
  }

  // ---- policy ---------------------------------------------------------------------------------

  /** Parses and applies a policy file, replacing what it held before. On error nothing changes. */
  loadFile(file: string, text: string): RuleSpec[] {
    const rules = parsePolicyText(text, file)
    this.setRules(file, rules)
    return rules
  }

  /** Applies already-parsed rules under `file`'s name (replacing its previous rules). */
  setRules(file: string, rules: RuleSpec[]): void {
    this.generation++
    const clash = rules.find((r) => this.ruleOwner(r.id) !== null && this.ruleOwner(r.id) !== file)
    if (clash) {
      throw new PolicyError([
        {
          file,
          line: clash.line,
          column: 1,
          path: 'metadata.name',
          message: `policy ${clash.id} is already loaded from ${this.ruleOwner(clash.id)}`,
        },
      ])
    }
    const old = this.files.get(file) ?? []
    this.applyRules(file, rules, old)
    // What does not fit the maps is refused whole: the file's rules as they were, and an error.
    const over = this.overCapacity()
    if (over !== null) {
      this.applyRules(file, old, rules)
      throw new PolicyError([
        {
          file,
          line: rules[0]?.line ?? 1,
          column: 1,
          path: '',
          message: `refused: ${over}; the file's rules before it stay in force`,
        },
      ])
    }
  }

  /** Why the maps cannot hold what the engine wants now, or null. */
  private overCapacity(): string | null {
    const policy = this.policyEntries()
    if (policy > this.capacity.policy)
      return `the policy map would need ${policy} entries, maps.policyEntries is ${this.capacity.policy}`
    if (this.ipcacheEntries > this.capacity.ipcache)
      return `the ipcache would need ${this.ipcacheEntries} entries, maps.ipcacheEntries is ${this.capacity.ipcache}`
    return null
  }

  private applyRules(file: string, rules: RuleSpec[], old: RuleSpec[]): void {
    const cidrs = cidrsOf(rules).map((c) => this.acquireCidr(parsePrefix(c) as Prefix))
    if (rules.length > 0) this.files.set(file, rules)
    else this.files.delete(file)
    for (const id of this.fileCidrs.get(file) ?? []) this.releaseLocal(id)
    if (cidrs.length > 0) this.fileCidrs.set(file, cidrs)
    else this.fileCidrs.delete(file)
    this.revision++
    for (const ep of this.endpoints.values()) {
      const labels = ep.identity.labels
      if (old.some((r) => selectsEndpoint(r, labels)) || rules.some((r) => selectsEndpoint(r, labels)))
        this.recompute(ep)
    }
    this.syncFqdnSelectors()
  }

  removeFile(file: string): void {
    this.setRules(file, [])
  }

  private ruleOwner(id: string): string | null {
    for (const [file, rules] of this.files) if (rules.some((r) => r.id === id)) return file
    return null
  }

  rules(): RuleSpec[] {
    return [...this.files.values()].flat()
  }

  get policyRevision(): number {
    return this.revision
  }

  /** Bumped by every change (rules, identities, endpoints, names): caches of lookups key on it. */
  get stateGeneration(): number {
    return this.generation
  }

  // ---- identities and endpoints ------------------------------------------------------------------

  private identityAdded(identity: Identity): void {
    if (identity.kind === 'cidr') this.setIp(this.cidrIps, formatPrefix(identity.prefix!), identity.id)
    this.applySelections(this.selectors.identityAdded(identity))
  }

  private identityRemoved(identity: Identity): void {
    if (identity.kind === 'cidr') this.setIp(this.cidrIps, formatPrefix(identity.prefix!), null)
    this.applySelections(this.selectors.identityRemoved(identity))
  }

  /** A cluster identity (e.g. pods on other nodes) with these labels; one reference. */
  addIdentity(labels: Readonly<Record<string, string>>): number {
    this.generation++
    const { identity, created } = this.identities.acquireLabels(labelList(labels))
    if (created) this.identityAdded(identity)
    return identity.id
  }

  releaseIdentity(id: number): void {
    this.generation++
    const gone = this.identities.release(id)
    if (gone) this.identityRemoved(gone)
  }

  private acquireCidr(prefix: Prefix): Identity {
    const { identity, created } = this.identities.acquireCidr(prefix)
    if (created) this.identityAdded(identity)
    return identity
  }

  /** Drops a local (CIDR or learned address) identity's reference. */
  private releaseLocal(identity: Identity): void {
    const gone = this.identities.release(identity.id)
    if (gone) this.identityRemoved(gone)
  }

  /**
   * Adds or changes a local endpoint. One the maps cannot hold (its addresses in the ipcache, its
   * policy entries) is refused whole (MapFullError): the engine is as it was.
   */
  upsertEndpoint(spec: EndpointSpec): void {
    for (const ip of spec.ips) {
      if (parseIPv4(ip) === null) throw new Error(`endpoint ${spec.id}: '${ip}' is not an IPv4 address`)
    }
    const newEntries = spec.ips.filter((ip) => this.ipValue(`${ip}/32`) === null).length
    if (this.ipcacheEntries + newEntries > this.capacity.ipcache) {
      throw new MapFullError(
        `endpoint ${spec.id}: refused: its ${newEntries} address(es) do not fit the ipcache (${this.ipcacheEntries} of maps.ipcacheEntries ${this.capacity.ipcache})`,
      )
    }
    const before = this.endpoints.get(spec.id)?.spec
    this.applyEndpoint(spec)
    const over = this.overCapacity()
    if (over !== null) {
      if (before) this.applyEndpoint(before)
      else this.removeEndpoint(spec.id)
      throw new MapFullError(`endpoint ${spec.id}: refused: ${over}`)
    }
  }

  private applyEndpoint(spec: EndpointSpec): void {
    this.generation++
    const { identity, created } = this.identities.acquireLabels(labelList(spec.labels), spec.identity)
    if (created) this.identityAdded(identity)
    const prev = this.endpoints.get(spec.id)
    if (prev) {
      for (const ip of prev.ips) {
        if (spec.ips.includes(ip)) continue
        this.setIp(this.endpointIps, `${ip}/32`, null)
        this.endpointByIp.delete(ip)
      }
      const old = prev.identity
      prev.spec = spec
      prev.ips = [...spec.ips]
      if (old.id !== identity.id) {
        prev.identity = identity
        this.recompute(prev)
      }
      this.releaseIdentity(old.id) // the reference this endpoint held before
    } else {
      const ep: EndpointState = {
        id: spec.id,
        spec,
        identity,
        ips: [...spec.ips],
        resolved: { enforce: { ingress: false, egress: false }, contributions: [], l7: [], ruleIds: [], warnings: [] },
        contributions: [],
        map: new MapState(),
        l7: new EndpointL7Policy(spec.id, this.revision, []),
        l7Selectors: [],
      }
      this.endpoints.set(spec.id, ep)
      this.recompute(ep)
    }
    for (const ip of spec.ips) {
      this.setIp(this.endpointIps, `${ip}/32`, identity.id)
      this.endpointByIp.set(ip, spec.id)
    }
    this.touchedEndpoints.add(spec.id)
    this.syncFqdnSelectors()
  }

  removeEndpoint(id: number): void {
    this.generation++
    const ep = this.endpoints.get(id)
    if (!ep) return
    for (const c of ep.contributions) this.detach(c)
    for (const s of ep.l7Selectors) this.selectors.release(s)
    this.removedEndpoints.set(id, ep.map.takeDelta())
    this.endpoints.delete(id)
    this.touchedEndpoints.delete(id)
    for (const ip of ep.ips) {
      this.setIp(this.endpointIps, `${ip}/32`, null)
      this.endpointByIp.delete(ip)
    }
    this.releaseIdentity(ep.identity.id)
    this.syncFqdnSelectors()
  }

  /**
   * A pod on another node at `ip` now has this identity (null: it left). A clash with a number
   * this node knows for other labels throws, and nothing changes.
   */
  setRemoteEndpoint(ip: string, peer: RemotePeer | null): void {
    if (parseIPv4(ip) === null) throw new Error(`remote endpoint: '${ip}' is not an IPv4 address`)
    const key = `${ip}/32`
    const before = this.remoteIps.get(key)
    if (peer !== null && before === peer.identity) return
    if (peer !== null && this.ipValue(key) === null && this.ipcacheEntries >= this.capacity.ipcache) {
      throw new MapFullError(
        `remote endpoint ${ip}: refused: the ipcache holds ${this.ipcacheEntries} entries, maps.ipcacheEntries is ${this.capacity.ipcache}`,
      )
    }
    this.generation++
    if (peer !== null) {
      const { identity, created } = this.identities.acquireLabels(peer.labels, peer.identity)
      if (created) this.identityAdded(identity)
    }
    this.setIp(this.remoteIps, key, peer?.identity ?? null)
    if (before !== undefined) this.releaseIdentity(before)
  }

  /** Other nodes' pods known here: address -> identity. */
  remoteEndpoints(): Map<string, number> {
    return new Map([...this.remoteIps].map(([p, id]) => [p.slice(0, -3), id]))
  }

  /** Replaces the IPs a DNS name resolved to (from an allowed DNS answer); [] forgets the name. */
  setFqdnIps(name: string, ips: readonly string[]): void {
    for (const ip of ips) {
      if (parseIPv4(ip) === null) throw new Error(`fqdn ${name}: '${ip}' is not an IPv4 address`)
    }
    this.generation++
    const key = name.toLowerCase().replace(/\.$/, '')
    const before = this.fqdnNames.get(key) ?? new Set<string>()
    const after = new Set(ips)
    // Addresses the name lost first, so that the room they leave is there for the new ones.
    for (const ip of before) {
      if (after.has(ip)) continue
      const entry = this.fqdnIps.get(ip)!
      entry.names.delete(key)
      this.labelAddress(ip, entry)
      if (entry.names.size === 0) this.fqdnIps.delete(ip)
    }
    // New ones, and those without an identity yet (refused for want of room before: tried again).
    for (const ip of after) {
      let entry = this.fqdnIps.get(ip)
      if (before.has(ip) && entry!.identity !== null) continue
      if (!entry) this.fqdnIps.set(ip, (entry = { names: new Set(), identity: null }))
      entry.names.add(key)
      this.labelAddress(ip, entry)
    }
    if (after.size > 0) this.fqdnNames.set(key, after)
    else this.fqdnNames.delete(key)
  }

  /**
   * Gives a learned address the identity of the toFQDNs selectors that select its names (none:
   * no ipcache entry, it stays the world's). A toCIDR prefix (not /0) covering it makes the
   * identity its own, with its CIDR label, so those rules keep selecting it under the /32 entry.
   */
  private labelAddress(ip: string, entry: { names: Set<string>; identity: Identity | null }): void {
    const labels = this.selectors.fqdnLabelsOf(entry.names)
    const previous = entry.identity
    let next: Identity | null = null
    if (labels.length > 0) {
      const prefix: Prefix = { addr: parseIPv4(ip)!, len: 32 }
      const refuse = (map: MapRefusal['map'], entries: number, capacity: number): null => {
        this.refused[map]++
        this.onRefused({ map, address: ip, names: [...entry.names], entries, capacity })
        return null
      }
      // A new ipcache entry needs room; so do the policy entries a new identity brings, or it
      // is taken back whole (no endpoint gets part of them).
      if (previous === null && this.ipValue(`${ip}/32`) === null && this.ipcacheEntries >= this.capacity.ipcache) {
        next = refuse('ipcache', this.ipcacheEntries, this.capacity.ipcache)
      } else {
        const { identity, created } = this.identities.acquireFqdn(labels, this.coveredByCidr(prefix) ? prefix : null)
        if (created) this.identityAdded(identity)
        const policy = created ? this.policyEntries() : 0
        if (policy > this.capacity.policy) {
          this.releaseLocal(identity)
          next = refuse('policy', policy, this.capacity.policy)
        } else next = identity
      }
    }
    entry.identity = next
    if (next?.id !== previous?.id) this.setIp(this.fqdnPrefixes, `${ip}/32`, next?.id ?? null)
    if (previous) this.releaseLocal(previous)
  }

  private coveredByCidr(prefix: Prefix): boolean {
    for (const ids of this.fileCidrs.values())
      for (const id of ids) if (id.prefix!.len > 0 && prefixContains(id.prefix!, prefix)) return true
    return false
  }

  /**
   * After rules or endpoints changed: if the toFQDNs selectors or the toCIDR prefixes did, each
   * selector holds its own identity (from its first use, so the first address learned for it
   * needs no policy change), and every learned address is labelled anew.
   */
  private syncFqdnSelectors(): void {
    const labels = this.selectors.fqdnLabels()
    const shape = `${labels.join(' ')}|${[...this.fileCidrs.values()]
      .flat()
      .map((id) => id.labels.canonical)
      .sort()
      .join(' ')}`
    if (shape === this.fqdnShape) return
    this.fqdnShape = shape
    for (const label of labels) {
      if (this.fqdnHeld.has(label)) continue
      const { identity, created } = this.identities.acquireFqdn([label], null)
      if (created) this.identityAdded(identity)
      this.fqdnHeld.set(label, identity)
    }
    for (const ip of [...this.fqdnIps.keys()]) this.labelAddress(ip, this.fqdnIps.get(ip)!)
    for (const [label, identity] of this.fqdnHeld) {
      if (labels.includes(label)) continue
      this.fqdnHeld.delete(label)
      this.releaseLocal(identity)
    }
  }

  // ---- contributions -----------------------------------------------------------------------------

  private recompute(ep: EndpointState): void {
    const resolved = resolveEndpointPolicy(this.rules(), ep.identity.labels, this.proxyPorts)
    const before = ep.resolved
    const fresh = resolved.contributions.map((spec) => this.attach(ep, spec))
    for (const c of ep.contributions) this.detach(c)
    ep.contributions = fresh
    ep.resolved = resolved
    const oldSelectors = ep.l7Selectors
    ep.l7Selectors = []
    const filters: L7Filter[] = resolved.l7.map((f) => ({
      direction: f.direction,
      protocol: f.protocol,
      port: f.port,
      endPort: f.endPort,
      parser: f.parser,
      intercept: f.intercept,
      entries: f.entries.map((e) => {
        const selector = this.selectors.acquire(e.selector)
        ep.l7Selectors.push(selector)
        return {
          selector,
          allowAllBy: e.allowAllBy,
          http:
            f.parser === 'http'
              ? e.rules.map(({ ruleId, rule }) => ({ ruleId, matcher: httpMatcher(rule as HttpRuleSpec) }))
              : [],
          names:
            f.parser === 'http'
              ? []
              : e.rules.map(({ ruleId, rule }) => ({
                  ruleId,
                  matcher: nameMatcher(rule as DnsRuleSpec | TlsRuleSpec),
                })),
        }
      }),
    }))
    ep.l7 = new EndpointL7Policy(ep.id, this.revision, filters)
    for (const s of oldSelectors) this.selectors.release(s)
    if (before.enforce.ingress !== resolved.enforce.ingress || before.enforce.egress !== resolved.enforce.egress)
      this.touchedEndpoints.add(ep.id)
  }

  private attach(ep: EndpointState, spec: ContributionSpec): Contribution {
    const sel = this.selectors.acquire(spec.selector)
    const c: Contribution = {
      ...spec,
      endpoint: ep,
      sel,
      blocks: spec.protocol === 0 ? [{ port: 0, prefixLen: 0 }] : portBlocks(spec.port, spec.endPort),
    }
    let set = this.bySelector.get(sel)
    if (!set) this.bySelector.set(sel, (set = new Set()))
    set.add(c)
    if (sel.wildcard) this.entries(c, 0, true)
    else for (const id of sel.selections) this.entries(c, id, true)
    return c
  }

  private detach(c: Contribution): void {
    if (c.sel.wildcard) this.entries(c, 0, false)
    else for (const id of c.sel.selections) this.entries(c, id, false)
    const set = this.bySelector.get(c.sel)!
    set.delete(c)
    if (set.size === 0) this.bySelector.delete(c.sel)
    this.selectors.release(c.sel)
  }

  private entries(c: Contribution, identity: number, add: boolean): void {
    for (const b of c.blocks) {
      const key = keyString({
        identity,
        direction: c.direction,
        protocol: c.protocol,
        port: b.port,
        prefixLen: b.prefixLen,
      })
      if (add) c.endpoint.map.add(key, c.deny, c.proxyPort)
      else c.endpoint.map.remove(key, c.deny, c.proxyPort)
    }
  }

  private applySelections(deltas: SelectionDelta[]): void {
    for (const d of deltas) {
      const users = this.bySelector.get(d.selector)
      if (!users) continue
      for (const c of users) {
        for (const id of d.added) this.entries(c, id, true)
        for (const id of d.removed) this.entries(c, id, false)
      }
    }
  }

  // ---- ipcache -----------------------------------------------------------------------------------

  private ipValue(prefix: string): number | null {
    return (
      this.endpointIps.get(prefix) ??
      this.remoteIps.get(prefix) ??
      this.fqdnPrefixes.get(prefix) ??
      this.cidrIps.get(prefix) ??
      null
    )
  }

  private setIp(table: Map<string, number>, prefix: string, identity: number | null): void {
    const had = this.ipValue(prefix) !== null
    if (!this.ipJournal.has(prefix)) this.ipJournal.set(prefix, this.ipValue(prefix))
    if (identity === null) table.delete(prefix)
    else table.set(prefix, identity)
    this.ipcacheEntries += Number(this.ipValue(prefix) !== null) - Number(had)
  }

  /** Entries of every endpoint's policy, as the node's one policy map holds them. */
  private policyEntries(): number {
    let n = 0
    for (const ep of this.endpoints.values()) n += ep.map.size
    return n
  }

  /** How full the node's maps are (as this engine wants them), and what was refused for want of room. */
  mapFill(): {
    ipcache: { entries: number; capacity: number }
    policy: { entries: number; capacity: number }
    refused: { ipcache: number; policy: number }
  } {
    return {
      ipcache: { entries: this.ipcacheEntries, capacity: this.capacity.ipcache },
      policy: { entries: this.policyEntries(), capacity: this.capacity.policy },
      refused: { ...this.refused },
    }
  }

  /** Desired ipcache: prefix -> identity (this node's endpoints win over other nodes', over learned addresses, over CIDR identities). */
  ipcache(): Map<string, number> {
    const out = new Map(this.cidrIps)
    for (const [p, id] of this.fqdnPrefixes) out.set(p, id)
    for (const [p, id] of this.remoteIps) out.set(p, id)
    for (const [p, id] of this.endpointIps) out.set(p, id)
    return out
  }

  /** The identity of an address by longest prefix, as the datapath's LPM lookup finds it. */
  identityOf(ip: string): number {
    const p = parsePrefix(ip)
    if (typeof p === 'string') return RESERVED_IDENTITIES.world
    for (let len = 32; len >= 0; len--) {
      const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0
      const v = this.ipValue(formatPrefix({ addr: (p.addr & mask) >>> 0, len }))
      if (v !== null) return v
    }
    return RESERVED_IDENTITIES.world
  }

  // ---- outputs -----------------------------------------------------------------------------------

  endpointInfo(id: number): EndpointInfo | undefined {
    const ep = this.endpoints.get(id)
    return (
      ep && {
        id: ep.id,
        identity: ep.identity.id,
        ips: ep.ips,
        enforce: { ...ep.resolved.enforce },
        ruleIds: ep.resolved.ruleIds,
      }
    )
  }

  /** The local endpoint with this address, if any. */
  endpointAt(ip: string): number | undefined {
    return this.endpointByIp.get(ip)
  }

  endpointIds(): number[] {
    return [...this.endpoints.keys()]
  }

  /** The whole desired policy map of an endpoint: key string -> value. */
  policyMap(id: number): Map<string, PolicyValue> {
    return this.endpoints.get(id)?.map.snapshot() ?? new Map()
  }

  l7Policy(id: number): EndpointL7Policy | undefined {
    return this.endpoints.get(id)?.l7
  }

  /** What the datapath does with a packet (reference semantics; see map-state.ts). */
  decide(endpointId: number, direction: Direction, remoteIdentity: number, protocol: number, port: number) {
    const ep = this.endpoints.get(endpointId)
    if (!ep) throw new Error(`no endpoint ${endpointId}`)
    return decide((k) => ep.map.get(k), ep.resolved.enforce[direction], remoteIdentity, direction, protocol, port)
  }

  /** The net change since the last call. */
  takeDelta(): EngineDelta {
    const policy = new Map<number, MapDelta>(this.removedEndpoints)
    for (const [id, ep] of this.endpoints) {
      const d = ep.map.takeDelta()
      // Removed and added again in this batch: the old entries the new state lacks go too.
      const removed = this.removedEndpoints.get(id)
      if (removed) {
        const now = ep.map.snapshot()
        d.deletes.push(
          ...removed.deletes.filter(
            (k) => !now.has(keyString(k)) && !d.deletes.some((x) => keyString(x) === keyString(k)),
          ),
        )
      }
      if (d.upserts.length > 0 || d.deletes.length > 0) policy.set(id, d)
      else policy.delete(id)
    }
    const ipcache: IpcacheDelta = { upserts: [], deletes: [] }
    for (const [prefix, before] of this.ipJournal) {
      const after = this.ipValue(prefix)
      if (before === after) continue
      if (after === null) ipcache.deletes.push(prefix)
      else ipcache.upserts.push([prefix, after])
    }
    const endpoints = {
      upserts: [...this.touchedEndpoints].map((id) => this.endpointInfo(id)!),
      deletes: [...this.removedEndpoints.keys()].filter((id) => !this.endpoints.has(id)),
    }
    this.removedEndpoints = new Map()
    this.touchedEndpoints = new Set()
    this.ipJournal = new Map()
    return { policy, ipcache, endpoints }
  }
}
