// A node's own keys in etcd (its node entry, its endpoints' addresses), under its lease: they
// vanish when the node dies and its lease expires. Writes are queued per key and written in
// order by one loop, so the last value set is the one stored; while etcd is away they wait, and
// a lease that was lost (etcd away longer than its TTL) is granted anew and every key written
// again under it. stop() leaves the keys to their lease: an agent that restarts within the TTL
// writes them back unchanged, and the other nodes see no change at all.

import type { Lease } from 'etcd3'
import type { Logger } from 'pino'
import type { EtcdStore } from './etcd-store.js'

const RETRY_MS = 250

export class LeasedKeys {
  private readonly owned = new Map<string, string>()
  private readonly dirty = new Set<string>()
  private lease: Lease | null = null
  private leaseId: string | null = null
  private flushing = false
  private retry: NodeJS.Timeout | null = null
  private stopped = false
  /** Why the last write or grant failed (null: all written). */
  failure: string | null = null

  constructor(
    private readonly store: EtcdStore,
    private readonly ttlSeconds: number,
    private readonly logger: Logger,
    /** A new lease was granted (at start, or after the last was lost): keys made under the old one are gone. */
    private readonly onLease: (leaseId: string) => void,
  ) {}

  /** The lease keys are written under now, if granted. */
  get currentLease(): string | null {
    return this.leaseId
  }

  /** Whether every key is written under a live lease. */
  get synced(): boolean {
    return this.leaseId !== null && this.dirty.size === 0 && !this.flushing
  }

  start(): void {
    void this.grant()
  }

  private async grant(): Promise<void> {
    if (this.stopped) return
    const lease = (this.lease = this.store.lease(this.ttlSeconds))
    lease.on('lost', (e: Error) => {
      if (this.lease !== lease || this.stopped) return
      this.logger.warn(
        { error: e.message },
        'kvstore: the node lease was lost; granting a new one and writing its keys again',
      )
      this.lease = null
      this.leaseId = null
      this.failure = `lease lost: ${e.message}`
      this.later()
    })
    try {
      const id = await lease.grant()
      if (this.lease !== lease) return
      this.leaseId = id
      for (const k of this.owned.keys()) this.dirty.add(k)
      this.onLease(id)
      void this.flush()
    } catch {
      // 'lost' fired too, and retries
    }
  }

  set(key: string, value: string): void {
    if (this.owned.get(key) === value && !this.dirty.has(key)) return
    this.owned.set(key, value)
    this.dirty.add(key)
    void this.flush()
  }

  delete(key: string): void {
    if (!this.owned.delete(key)) return
    this.dirty.add(key)
    void this.flush()
  }

  /** Tries again in a while: a new lease if there is none, else the writes left. */
  private later(): void {
    if (this.stopped || this.retry !== null) return
    this.retry = setTimeout(() => {
      this.retry = null
      if (this.lease === null) void this.grant()
      else void this.flush()
    }, RETRY_MS)
  }

  /** Writes what changed, one key at a time, until nothing is left or etcd fails (then again later). */
  private async flush(): Promise<void> {
    if (this.flushing || this.leaseId === null || this.stopped) return
    this.flushing = true
    try {
      while (this.dirty.size > 0 && this.leaseId !== null && !this.stopped) {
        const key = this.dirty.values().next().value!
        this.dirty.delete(key)
        const value = this.owned.get(key)
        try {
          if (value === undefined) await this.store.delete(key)
          else await this.store.put(key, value, this.leaseId)
          this.failure = null
        } catch (e) {
          // Written again later, with whatever value it has by then.
          this.dirty.add(key)
          this.failure = (e as Error).message
          this.later()
          return
        }
      }
    } finally {
      this.flushing = false
    }
  }

  /** Stops writing; the keys stay until the lease expires (a restart takes them back). */
  stop(): void {
    this.stopped = true
    if (this.retry !== null) clearTimeout(this.retry)
    this.lease?.release()
    this.lease = null
  }
}
