// Security identities: a number for each distinct label set, as in Cilium. Reserved identities
// are fixed; endpoint label sets get cluster identities from 256 (numbered here, or by the
// cluster's store, which then gives the number); CIDR prefixes (from toCIDR rules) and addresses
// learned through toFQDNs get node-local identities from 2^24. A learned address's identity is
// the set of toFQDNs selectors that select it (`fqdn:<pattern>` labels, as in Cilium since
// CFP 28427), so addresses selected alike share one; it names the address itself only when a
// toCIDR prefix covers it too. Identities are reference counted and released when their last
// user goes.

import { L7ProxyError } from '../lib/l7proxy-error.js'
import { formatPrefix, type Prefix } from './cidr.js'
import { type Label, LabelSet } from './labels.js'

export const RESERVED_IDENTITIES = {
  host: 1,
  world: 2,
  unmanaged: 3,
  health: 4,
  init: 5,
  'remote-node': 6,
  'kube-apiserver': 7,
} as const

/** The labels of an endpoint whose own are not known yet: Cilium's reserved:init identity. */
export const INIT_LABELS: Readonly<Record<string, string>> = Object.freeze({ 'reserved:init': '' })

export const ANY_IDENTITY = 0
export const FIRST_CLUSTER_IDENTITY = 256
export const LAST_CLUSTER_IDENTITY = 65535
export const FIRST_LOCAL_IDENTITY = 1 << 24

/** A number the cluster gave that this node already knows for other labels (or the reverse). */
export class IdentityClashError extends L7ProxyError {
  constructor(message: string) {
    super('EIDENTITYCLASH', message)
  }
}

export type IdentityKind = 'reserved' | 'endpoint' | 'cidr' | 'fqdn'

export interface Identity {
  readonly id: number
  readonly kind: IdentityKind
  readonly labels: LabelSet
  /** For CIDR identities, and learned addresses a toCIDR prefix covers: the prefix they stand for. */
  readonly prefix?: Prefix
}

export class IdentityAllocator {
  private readonly byId = new Map<number, Identity>()
  private readonly byCanonical = new Map<string, Identity>()
  private readonly refs = new Map<number, number>()
  private nextCluster = FIRST_CLUSTER_IDENTITY
  private nextLocal = FIRST_LOCAL_IDENTITY
  /** Numbers another agent gave labels (canonical), for when they are first acquired here. */
  private readonly seeded = new Map<string, number>()

  constructor() {
    for (const [name, id] of Object.entries(RESERVED_IDENTITIES)) {
      const identity: Identity = {
        id,
        kind: 'reserved',
        labels: new LabelSet([{ source: 'reserved', key: name, value: '' }]),
      }
      this.byId.set(id, identity)
      this.byCanonical.set(identity.labels.canonical, identity)
    }
  }

  /**
   * Numbers labels the way another agent did (one taking over its maps): labels acquired later
   * get the number it gave them, and numbers it used are not given to other labels.
   */
  seed(entries: ReadonlyArray<{ labels: string; id: number }>): void {
    for (const e of entries) {
      if (e.id < FIRST_CLUSTER_IDENTITY || this.byId.has(e.id)) continue
      this.seeded.set(e.labels, e.id)
      if (e.id >= FIRST_LOCAL_IDENTITY) this.nextLocal = Math.max(this.nextLocal, e.id + 1)
      else this.nextCluster = Math.max(this.nextCluster, e.id + 1)
    }
  }

  get(id: number): Identity | undefined {
    return this.byId.get(id)
  }

  all(): IterableIterator<Identity> {
    return this.byId.values()
  }

  private acquire(labels: LabelSet, make: () => Identity): { identity: Identity; created: boolean } {
    const existing = this.byCanonical.get(labels.canonical)
    if (existing) {
      if (existing.kind !== 'reserved') this.refs.set(existing.id, (this.refs.get(existing.id) ?? 0) + 1)
      return { identity: existing, created: false }
    }
    const identity = make()
    this.byId.set(identity.id, identity)
    this.byCanonical.set(labels.canonical, identity)
    this.refs.set(identity.id, 1)
    return { identity, created: true }
  }

  /**
   * The identity of an endpoint label set (one reference): numbered here, or `id` when the
   * cluster's store numbered it (a clash with what is known throws, and nothing changes).
   */
  acquireLabels(labels: readonly Label[] | LabelSet, id?: number): { identity: Identity; created: boolean } {
    const set = labels instanceof LabelSet ? labels : new LabelSet(labels)
    if (id !== undefined) {
      const known = this.byCanonical.get(set.canonical)?.id ?? id
      const holder = this.byId.get(id)
      if (known !== id || (holder !== undefined && holder.labels.canonical !== set.canonical)) {
        throw new IdentityClashError(
          `identity ${id} for ${set.canonical || '(no labels)'} clashes with ${known !== id ? `identity ${known} for these labels` : `identity ${id} for ${holder!.labels.canonical}`}`,
        )
      }
    }
    return this.acquire(set, () => ({
      id: id ?? this.seededId(set) ?? this.nextCluster++,
      kind: 'endpoint',
      labels: set,
    }))
  }

  /** The identity of a CIDR prefix; it carries `cidr:<prefix>` and `reserved:world`, as in Cilium. */
  acquireCidr(prefix: Prefix): { identity: Identity; created: boolean } {
    const set = new LabelSet([
      { source: 'cidr', key: formatPrefix(prefix), value: '' },
      { source: 'reserved', key: 'world', value: '' },
    ])
    return this.acquire(set, () => ({ id: this.seededId(set) ?? this.nextLocal++, kind: 'cidr', labels: set, prefix }))
  }

  /**
   * The identity of learned addresses selected by these toFQDNs selectors (their labels), with
   * `reserved:world`; `covered`: the one address a toCIDR prefix covers, which carries its CIDR label too.
   */
  acquireFqdn(selectorLabels: readonly string[], covered: Prefix | null): { identity: Identity; created: boolean } {
    const set = new LabelSet([
      ...selectorLabels.map((key) => ({ source: 'fqdn', key, value: '' })),
      { source: 'reserved', key: 'world', value: '' },
      ...(covered ? [{ source: 'cidr', key: formatPrefix(covered), value: '' }] : []),
    ])
    return this.acquire(set, () => ({
      id: this.seededId(set) ?? this.nextLocal++,
      kind: 'fqdn',
      labels: set,
      ...(covered ? { prefix: covered } : {}),
    }))
  }

  /** The number another agent gave these labels, if no identity here has it. */
  private seededId(set: LabelSet): number | undefined {
    const id = this.seeded.get(set.canonical)
    return id !== undefined && !this.byId.has(id) ? id : undefined
  }

  /** Drops one reference; returns the identity if that was the last one (it is gone now). */
  release(id: number): Identity | null {
    const identity = this.byId.get(id)
    if (!identity || identity.kind === 'reserved') return null
    const n = (this.refs.get(id) ?? 0) - 1
    if (n > 0) {
      this.refs.set(id, n)
      return null
    }
    this.refs.delete(id)
    this.byId.delete(id)
    this.byCanonical.delete(identity.labels.canonical)
    return identity
  }
}
