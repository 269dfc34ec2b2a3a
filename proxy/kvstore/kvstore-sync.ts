// Keeps a ClusterView in step with etcd: everything under the prefix listed at one revision,
// then watched from the next. A broken stream is resumed by the client from the last revision
// it saw (no gap); a watch etcd cancels (its revision compacted) is replaced by a new listing
// (never a partial view). Until the first listing, and while the stream is broken, the view is
// stale and `connected` false; what is known stays in force meanwhile (fail static).

import type { Watcher } from 'etcd3'
import type { Logger } from 'pino'
import type { ClusterView } from './cluster-view.js'
import type { EtcdStore } from './etcd-store.js'

const RELIST_MS = 500
const STOP_MS = 1_000

export class KvstoreSync {
  private watcher: Watcher | null = null
  private timer: NodeJS.Timeout | null = null
  private stopped = false
  /** Listed once, and the watch stream is up. */
  connected = false
  /** Listings made (the first, and one after each cancelled watch). */
  listings = 0
  lastError: string | null = null

  constructor(
    private readonly store: EtcdStore,
    private readonly prefix: string,
    private readonly view: ClusterView,
    private readonly logger: Logger,
    /** The view changed (a listing, or a batch of events). */
    private readonly changed: () => void,
    /** `connected` changed. */
    private readonly state: () => void,
  ) {}

  start(): void {
    void this.list()
  }

  private setConnected(up: boolean, error?: Error): void {
    if (error) this.lastError = error.message
    if (this.connected === up) return
    this.connected = up
    this.state()
  }

  private async list(): Promise<void> {
    if (this.stopped) return
    try {
      const { revision, kvs } = await this.store.range({ prefix: this.prefix })
      if (this.stopped) return
      this.view.reset(kvs, revision)
      this.listings++
      this.changed()
      this.watcher = await this.store.watch(this.prefix, revision, {
        events: (events, rev) => {
          for (const e of events) {
            if (e.type === 'put') this.view.put(e.kv.key, e.kv.value, e.kv.revision)
            else this.view.delete(e.kv.key, e.kv.revision)
          }
          this.view.revision = Math.max(this.view.revision, rev)
          this.changed()
        },
        disconnected: (e) => this.setConnected(false, e),
        connected: () => this.setConnected(true),
        cancelled: (e) => {
          this.logger.warn(
            { error: e.message, revision: this.view.revision },
            'kvstore: watch cancelled; listing everything again',
          )
          this.setConnected(false, e)
          void this.watcher?.cancel()
          this.watcher = null
          this.later()
        },
      })
      if (this.stopped) return void this.watcher.cancel()
      this.setConnected(true)
    } catch (e) {
      this.setConnected(false, e as Error)
      this.later()
    }
  }

  private later(): void {
    if (this.stopped || this.timer !== null) return
    this.timer = setTimeout(() => {
      this.timer = null
      void this.list()
    }, RELIST_MS)
  }

  /** Ends the watch; with etcd away, the agent's stop does not wait for it past STOP_MS. */
  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer !== null) clearTimeout(this.timer)
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<void>((r) => (timer = setTimeout(r, STOP_MS)))
    await Promise.race([this.watcher?.cancel().catch(() => undefined), late])
    clearTimeout(timer)
  }
}
