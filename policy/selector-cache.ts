// Memoized selectors, as in Cilium's selector cache (LPC 2019): each distinct selector is kept
// once with the set of identities it selects. When an identity appears or disappears, only the
// selectors that can match it are tested, and the change comes out as a per-selector delta of
// added and removed identities. A toFQDNs selector selects the identities that carry its
// `fqdn:` label: which learned address has which is the engine's to decide (fqdnLabelsOf).
//
// Label and toFQDNs selectors are indexed by one `key=value` they require, so an identity is
// tested only against selectors whose indexed label it carries (plus the few that have no such label).

import { type Prefix, parsePrefix, prefixContains } from './cidr.js'
import { compileMatchName, compileMatchPattern, type DnsNameMatcher } from './dns-pattern.js'
import { type Identity, RESERVED_IDENTITIES } from './identity.js'
import type { LabelSet } from './labels.js'
import type { Entity, LabelRequirement, SelectorSpec } from './model.js'

export interface SelectionDelta {
  selector: CachedSelector
  added: number[]
  removed: number[]
}

function requirementString(r: LabelRequirement): string {
  return `${r.source}:${r.key} ${r.op} ${[...r.values].sort().join(',')}`
}

export function selectorKey(spec: SelectorSpec): string {
  switch (spec.kind) {
    case 'labels':
      return `labels{${spec.requirements.map(requirementString).sort().join('; ')}}`
    case 'cidr':
      return `cidr{${spec.cidr}${spec.except.length ? ` except ${[...spec.except].sort().join(',')}` : ''}}`
    case 'fqdn':
      return spec.matchName !== undefined
        ? `fqdn{name ${spec.matchName.toLowerCase()}}`
        : `fqdn{pattern ${spec.matchPattern!.toLowerCase()}}`
    case 'entity':
      return `entity{${spec.entity}}`
  }
}

export function requirementsMatch(reqs: readonly LabelRequirement[], labels: LabelSet): boolean {
  for (const r of reqs) {
    const vals = labels.values(r.source, r.key)
    switch (r.op) {
      case 'In':
        if (!vals.some((v) => r.values.includes(v))) return false
        break
      case 'NotIn':
        if (vals.some((v) => r.values.includes(v))) return false
        break
      case 'Exists':
        if (vals.length === 0) return false
        break
      case 'DoesNotExist':
        if (vals.length > 0) return false
        break
    }
  }
  return true
}

const ENTITY_IDS: Partial<Record<Entity, number>> = {
  host: RESERVED_IDENTITIES.host,
  'remote-node': RESERVED_IDENTITIES['remote-node'],
  health: RESERVED_IDENTITIES.health,
  init: RESERVED_IDENTITIES.init,
  unmanaged: RESERVED_IDENTITIES.unmanaged,
  'kube-apiserver': RESERVED_IDENTITIES['kube-apiserver'],
}

type Matcher = (identity: Identity) => boolean

/** The `fqdn:` label a toFQDNs selector gives the addresses it selects (Cilium's: the name or pattern). */
export function fqdnLabel(spec: { matchName?: string; matchPattern?: string }): string {
  return (spec.matchName ?? spec.matchPattern!).toLowerCase().replace(/\.$/, '')
}

function labelMatcher(reqs: readonly LabelRequirement[]): Matcher {
  // Reserved and CIDR identities only match selectors that ask for their kind of label, so a
  // selector like `app NotIn [x]` does not select the world.
  const wantsSpecial = reqs.some((r) => r.source === 'reserved' || r.source === 'cidr')
  if (reqs.length === 0)
    return (id) => id.kind === 'endpoint' || (id.kind === 'reserved' && id.id !== RESERVED_IDENTITIES.world)
  return (id) => (id.kind === 'endpoint' || wantsSpecial) && requirementsMatch(reqs, id.labels)
}

function cidrMatcher(cidr: string, except: readonly string[]): Matcher {
  const outer = parsePrefix(cidr) as Prefix
  const holes = except.map((e) => parsePrefix(e) as Prefix)
  return (id) => {
    if (id.id === RESERVED_IDENTITIES.world) return outer.len === 0 // 0.0.0.0/0 is the world
    // A learned address's identity without a prefix is the world's, as far as CIDRs go.
    if (id.prefix === undefined) return id.kind === 'fqdn' && outer.len === 0
    return (
      (id.kind === 'cidr' || id.kind === 'fqdn') &&
      prefixContains(outer, id.prefix) &&
      !holes.some((h) => prefixContains(h, id.prefix!))
    )
  }
}

function fqdnMatcher(label: string): Matcher {
  return (id) => id.kind === 'fqdn' && id.labels.has('fqdn', label)
}

function entityMatcher(entity: Entity): Matcher {
  switch (entity) {
    case 'all':
      return () => true
    case 'world':
      return (id) => id.id === RESERVED_IDENTITIES.world || id.kind === 'cidr' || id.kind === 'fqdn'
    case 'cluster':
      return (id) => id.kind === 'endpoint' || (id.kind === 'reserved' && id.id !== RESERVED_IDENTITIES.world)
    default: {
      const want = ENTITY_IDS[entity]
      return (id) => id.id === want
    }
  }
}

export class CachedSelector {
  readonly selections = new Set<number>()
  /** Selects every identity: compiled to the wildcard identity, never enumerated. */
  readonly wildcard: boolean
  /** One `key=value` every match carries, for the index; null when there is none. */
  readonly indexLabel: string | null
  /** A toFQDNs selector: the label it selects by, and what tells which names it selects. */
  readonly fqdn: { label: string; names: DnsNameMatcher } | null
  refs = 0

  constructor(
    readonly key: string,
    readonly spec: SelectorSpec,
  ) {
    this.wildcard = spec.kind === 'entity' && spec.entity === 'all'
    this.fqdn =
      spec.kind === 'fqdn'
        ? {
            label: fqdnLabel(spec),
            names:
              spec.matchName !== undefined ? compileMatchName(spec.matchName) : compileMatchPattern(spec.matchPattern!),
          }
        : null
    this.matches = spec.kind === 'fqdn' ? fqdnMatcher(this.fqdn!.label) : makeMatcher(spec)
    const indexed =
      spec.kind === 'labels' ? spec.requirements.find((r) => r.op === 'In' && r.values.length === 1) : undefined
    this.indexLabel = indexed ? `${indexed.key}=${indexed.values[0]}` : this.fqdn ? `${this.fqdn.label}=` : null
  }

  readonly matches: Matcher

  selects(identity: number): boolean {
    return this.wildcard || this.selections.has(identity)
  }
}

function makeMatcher(spec: Exclude<SelectorSpec, { kind: 'fqdn' }>): Matcher {
  switch (spec.kind) {
    case 'labels':
      return labelMatcher(spec.requirements)
    case 'cidr':
      return cidrMatcher(spec.cidr, spec.except)
    case 'entity':
      return entityMatcher(spec.entity)
  }
}

function labelKeys(labels: LabelSet): string[] {
  return labels.labels.map((l) => `${l.key}=${l.value}`)
}

export class SelectorCache {
  private readonly byKey = new Map<string, CachedSelector>()
  private readonly byIndexLabel = new Map<string, Set<CachedSelector>>()
  /** Selectors with no index label: tested against every new identity. */
  private readonly unindexed = new Set<CachedSelector>()
  private readonly fqdnSelectors = new Set<CachedSelector>()
  private readonly identities = new Map<number, Identity>()
  private readonly identitiesByLabel = new Map<string, Set<number>>()

  get size(): number {
    return this.byKey.size
  }

  /** A reference to the selector for `spec`, made (and its selection computed) if new. */
  acquire(spec: SelectorSpec): CachedSelector {
    const key = selectorKey(spec)
    let sel = this.byKey.get(key)
    if (!sel) {
      sel = new CachedSelector(key, spec)
      this.byKey.set(key, sel)
      if (sel.indexLabel) this.bucket(this.byIndexLabel, sel.indexLabel).add(sel)
      else this.unindexed.add(sel)
      if (spec.kind === 'fqdn') this.fqdnSelectors.add(sel)
      const candidates = sel.indexLabel ? (this.identitiesByLabel.get(sel.indexLabel) ?? []) : this.identities.keys()
      if (!sel.wildcard) {
        for (const id of candidates) {
          if (sel.matches(this.identities.get(id)!)) sel.selections.add(id)
        }
      }
    }
    sel.refs++
    return sel
  }

  /** Drops a reference; the selector is forgotten with its last one. */
  release(sel: CachedSelector): void {
    if (--sel.refs > 0) return
    this.byKey.delete(sel.key)
    if (sel.indexLabel) this.byIndexLabel.get(sel.indexLabel)?.delete(sel)
    else this.unindexed.delete(sel)
    this.fqdnSelectors.delete(sel)
  }

  private bucket<K, V>(map: Map<K, Set<V>>, key: K): Set<V> {
    let s = map.get(key)
    if (!s) map.set(key, (s = new Set()))
    return s
  }

  private candidates(identity: Identity): Set<CachedSelector> {
    const out = new Set(this.unindexed)
    for (const k of labelKeys(identity.labels)) for (const s of this.byIndexLabel.get(k) ?? []) out.add(s)
    return out
  }

  identityAdded(identity: Identity): SelectionDelta[] {
    this.identities.set(identity.id, identity)
    for (const k of labelKeys(identity.labels)) this.bucket(this.identitiesByLabel, k).add(identity.id)
    const out: SelectionDelta[] = []
    for (const sel of this.candidates(identity)) {
      if (!sel.wildcard && sel.matches(identity)) {
        sel.selections.add(identity.id)
        out.push({ selector: sel, added: [identity.id], removed: [] })
      }
    }
    return out
  }

  identityRemoved(identity: Identity): SelectionDelta[] {
    this.identities.delete(identity.id)
    for (const k of labelKeys(identity.labels)) this.identitiesByLabel.get(k)?.delete(identity.id)
    const out: SelectionDelta[] = []
    for (const sel of this.candidates(identity)) {
      if (sel.selections.delete(identity.id)) out.push({ selector: sel, added: [], removed: [identity.id] })
    }
    return out
  }

  /** The labels of the toFQDNs selectors that select any of these names, sorted (none: []). */
  fqdnLabelsOf(names: Iterable<string>): string[] {
    const out = new Set<string>()
    for (const sel of this.fqdnSelectors) {
      for (const n of names) {
        if (sel.fqdn!.names.test(n)) {
          out.add(sel.fqdn!.label)
          break
        }
      }
    }
    return [...out].sort()
  }

  /** Every toFQDNs selector's label, sorted. */
  fqdnLabels(): string[] {
    return [...new Set([...this.fqdnSelectors].map((sel) => sel.fqdn!.label))].sort()
  }
}
