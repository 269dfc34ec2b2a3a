// Identities numbered cluster-wide in etcd, after Cilium's kvstore allocator: the same labels get
// the same number on every node, whichever asks first, and two nodes asking at once get one.
//
//   labels known  (labels/<L> holds X): one transaction, if labels/<L> is unchanged since read,
//                 writes it again (so a collector that saw no users fails) and our user key.
//   labels new:   pick a free X; one transaction, if neither labels/<L> nor id/X exists, makes
//                 both and our user key. A node that lost the race reads the winner's X.
//   released:     our user key goes; then the collector: labels/<L> with no user key, deleted
//                 with its id/X only if labels/<L> is unchanged since read (no one joined).
//
// A node's user keys live under its lease (a dead node stops using its identities); after a new
// lease each held identity is asked for again, which also mends one collected meanwhile.

import type { Logger } from 'pino'
import { L7ProxyError } from '../../lib/l7proxy-error.js'
import { FIRST_CLUSTER_IDENTITY, LAST_CLUSTER_IDENTITY } from '../../policy/identity.js'
import type { LabelSet } from '../../policy/labels.js'
import { type EtcdStore, op, when } from './etcd-store.js'
import { isClusterIdentity, type KvstoreKeys } from './kvstore-keys.js'

/** Attempts at one allocation before it fails (each lost race is one). */
const ATTEMPTS = 16

export class IdentityAllocationError extends L7ProxyError {
  constructor(message: string) {
    super('EIDENTITYALLOC', message)
  }
}

interface Held {
  labels: LabelSet
  id: number | null
  refs: number
  /** The allocation in progress, if any. */
  asking: Promise<number> | null
}

export class ClusterIdentities {
  private readonly held = new Map<string, Held>()
  /** Labels whose user key is being removed: asking for them again waits for that. */
  private readonly dropping = new Map<string, Promise<void>>()
  /** Allocations made (first number for labels new to the cluster) and races lost, since start. */
  readonly stats = { allocated: 0, joined: 0, racesLost: 0, collected: 0 }

  constructor(
    private readonly store: EtcdStore,
    private readonly keys: KvstoreKeys,
    private readonly node: string,
    private readonly leaseOf: () => string | null,
    private readonly logger: Logger,
    /** An identity this node holds got a (new) number. */
    private readonly onChange: (canonical: string) => void,
  ) {}

  /** The number of these labels, if this node holds one. */
  known(canonical: string): number | null {
    return this.held.get(canonical)?.id ?? null
  }

  /** One more user of these labels' identity here; the number once the cluster gave it. */
  acquire(labels: LabelSet): Promise<number> {
    let h = this.held.get(labels.canonical)
    if (!h) this.held.set(labels.canonical, (h = { labels, id: null, refs: 0, asking: null }))
    h.refs++
    if (h.id !== null) return Promise.resolve(h.id)
    return this.ask(h)
  }

  /** Asks the store for `h`'s number (one request at a time per labels). */
  private ask(h: Held): Promise<number> {
    h.asking ??= this.allocate(h.labels).then(
      (id) => {
        h.asking = null
        const changed = h.id !== id
        h.id = id
        if (h.refs === 0)
          this.forget(h) // released while it was asked for
        else if (changed) this.onChange(h.labels.canonical)
        return id
      },
      (e: Error) => {
        h.asking = null
        if (h.refs === 0) this.held.delete(h.labels.canonical)
        throw e
      },
    )
    return h.asking
  }

  /** One user fewer; the last one here removes this node's user key and collects the identity if no node uses it. */
  release(canonical: string): void {
    const h = this.held.get(canonical)
    if (!h || --h.refs > 0 || h.asking !== null) return
    this.forget(h)
  }

  private forget(h: Held): void {
    const L = h.labels.canonical
    this.held.delete(L)
    const done = this.dropUser(L).finally(() => {
      if (this.dropping.get(L) === done) this.dropping.delete(L)
    })
    this.dropping.set(L, done)
  }

  private async dropUser(canonical: string): Promise<void> {
    try {
      await this.store.delete(this.keys.user(canonical, this.node))
      await this.collect(canonical)
    } catch (e) {
      // The key goes with the lease, or the periodic collection finds it.
      this.logger.warn(
        { labels: canonical, error: (e as Error).message },
        'kvstore: releasing an identity failed; it is collected later',
      )
    }
  }

  /**
   * Asks again for the identities not numbered yet (etcd was away), or with `all` for every one
   * held (a new lease: their user keys went with the old one).
   */
  askAgain(all: boolean): void {
    for (const h of this.held.values()) {
      if (h.asking !== null || (!all && h.id !== null)) continue
      // Logged at warn once, where the endpoint asked; this retry runs every second.
      void this.ask(h).catch((e: Error) =>
        this.logger.debug({ labels: h.labels.canonical, error: e.message }, 'kvstore: identity not numbered yet'),
      )
    }
  }

  /** Whether an identity held here still waits for its number. */
  get waiting(): boolean {
    for (const h of this.held.values()) if (h.id === null) return true
    return false
  }

  /** What every held identity is, for status. */
  list(): Array<{ labels: string; id: number | null; refs: number }> {
    return [...this.held.values()].map((h) => ({ labels: h.labels.canonical, id: h.id, refs: h.refs }))
  }

  private async allocate(labels: LabelSet): Promise<number> {
    const L = labels.canonical
    await this.dropping.get(L)
    const labelsKey = this.keys.labels(L)
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const lease = this.leaseOf()
      if (lease === null) throw new IdentityAllocationError(`no lease on the store yet for ${L}`)
      const userKey = this.keys.user(L, this.node)
      const { kvs } = await this.store.range({ key: labelsKey })
      const existing = kvs[0]
      if (existing) {
        const id = Number(existing.value)
        if (!isClusterIdentity(id))
          throw new IdentityAllocationError(`${labelsKey} holds '${existing.value}', not an identity`)
        const r = await this.store.txn(
          [when.modifiedAt(labelsKey, existing.revision)],
          [op.put(labelsKey, String(id)), op.put(userKey, String(id), lease)],
        )
        if (r.succeeded) {
          this.stats.joined++
          return id
        }
      } else {
        const id = await this.freeId()
        const idKey = this.keys.id(id)
        const r = await this.store.txn(
          [when.absent(labelsKey), when.absent(idKey)],
          [op.put(idKey, L), op.put(labelsKey, String(id)), op.put(userKey, String(id), lease)],
        )
        if (r.succeeded) {
          this.stats.allocated++
          return id
        }
      }
      this.stats.racesLost++
    }
    throw new IdentityAllocationError(
      `no identity for ${L} after ${ATTEMPTS} attempts (too many nodes racing, or the range ${FIRST_CLUSTER_IDENTITY}-${LAST_CLUSTER_IDENTITY} is full)`,
    )
  }

  /** A number no identity has now, at random (two nodes rarely pick the same). */
  private async freeId(): Promise<number> {
    const { kvs } = await this.store.range({ prefix: this.keys.ids }, { keysOnly: true })
    const used = new Set(
      kvs.map((kv) => this.keys.parse(kv.key)).flatMap((k) => (k?.kind === 'identity' ? [k.id] : [])),
    )
    const size = LAST_CLUSTER_IDENTITY - FIRST_CLUSTER_IDENTITY + 1
    if (used.size >= size)
      throw new IdentityAllocationError(
        `every identity from ${FIRST_CLUSTER_IDENTITY} to ${LAST_CLUSTER_IDENTITY} is taken`,
      )
    const start = Math.floor(Math.random() * size)
    for (let i = 0; i < size; i++) {
      const id = FIRST_CLUSTER_IDENTITY + ((start + i) % size)
      if (!used.has(id)) return id
    }
    throw new IdentityAllocationError('no free identity')
  }

  /** Deletes these labels' identity if no node uses it (and none started to since it was read). */
  async collect(canonical: string): Promise<boolean> {
    const labelsKey = this.keys.labels(canonical)
    const { kvs } = await this.store.range({ key: labelsKey })
    const entry = kvs[0]
    if (!entry) return false
    const users = await this.store.range({ prefix: this.keys.usersOf(canonical) }, { keysOnly: true, limit: 1 })
    if (users.kvs.length > 0) return false
    const id = Number(entry.value)
    const r = await this.store.txn(
      [when.modifiedAt(labelsKey, entry.revision)],
      [op.del(labelsKey), ...(isClusterIdentity(id) ? [op.del(this.keys.id(id))] : [])],
    )
    if (r.succeeded) {
      this.stats.collected++
      this.logger.info({ identity: id, labels: canonical }, 'kvstore: identity no node uses any more released')
    }
    return r.succeeded
  }

  /** Collects every identity no node uses (nodes that died leave theirs behind); how many went. */
  async collectAll(): Promise<number> {
    const { kvs } = await this.store.range({ prefix: this.keys.labelKeys }, { keysOnly: true })
    const users = await this.store.range({ prefix: this.keys.users }, { keysOnly: true })
    const inUse = new Set(
      users.kvs.map((kv) => this.keys.parse(kv.key)).flatMap((k) => (k?.kind === 'user' ? [k.labels] : [])),
    )
    let n = 0
    for (const kv of kvs) {
      const k = this.keys.parse(kv.key)
      if (k?.kind === 'labels' && !inUse.has(k.labels) && !this.held.has(k.labels) && (await this.collect(k.labels)))
        n++
    }
    return n
  }
}
