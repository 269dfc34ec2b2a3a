// The agent's connection to etcd, through the etcd3 client (gRPC): ranges at a revision,
// transactions with compares (the create-only and compare-and-delete steps the identity
// allocator needs), leases kept alive, and watches resumed from a revision. Fault handling is
// short: a node must notice etcd is gone within seconds and be back within a second of it
// returning, so the client's circuit breaker opens for 1 s (not 5) and a watch retries within 1 s.

import { readFileSync } from 'node:fs'
import { ConsecutiveBreaker, circuitBreaker, ExponentialBackoff, handleWhen, retry } from 'cockatiel'
import { Etcd3, type IOptions, isRecoverableError, type Lease, type Watcher } from 'etcd3'
import type { ICompare, IRequestOp } from 'etcd3/lib/rpc.js'
import type { KeyValue } from './cluster-view.js'

export interface KvstoreTls {
  ca: string
  cert: string
  key: string
  /** The name etcd's certificate is for, when the endpoints are addresses (Node 26 sends no address as a TLS server name). */
  serverName?: string
}

/** How a call to etcd ends when etcd does not answer: within this, with an error. */
const CALL_DEADLINE_MS = 3_000

/** The end of the range of keys that start with `prefix`. */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix)
  b[b.length - 1]!++
  return b
}

function keyValue(kv: { key: Buffer; value: Buffer; mod_revision: string }): KeyValue {
  return { key: kv.key.toString(), value: kv.value.toString(), revision: Number(kv.mod_revision) }
}

export type Compare = ICompare
export type Op = IRequestOp

/** Compares and operations of a transaction. */
export const when = {
  absent: (key: string): Compare => ({ key: Buffer.from(key), target: 'Create', result: 'Equal', create_revision: 0 }),
  present: (key: string): Compare => ({
    key: Buffer.from(key),
    target: 'Create',
    result: 'Greater',
    create_revision: 0,
  }),
  modifiedAt: (key: string, revision: number): Compare => ({
    key: Buffer.from(key),
    target: 'Mod',
    result: 'Equal',
    mod_revision: revision,
  }),
}

export const op = {
  put: (key: string, value: string, lease?: string): Op => ({
    request_put: { key: Buffer.from(key), value: Buffer.from(value), ...(lease ? { lease } : {}) },
  }),
  del: (key: string): Op => ({ request_delete_range: { key: Buffer.from(key) } }),
  get: (key: string): Op => ({ request_range: { key: Buffer.from(key) } }),
}

export interface WatchHandlers {
  /** A batch of changes, in order, with the revision they bring the view to. */
  events(events: Array<{ type: 'put' | 'delete'; kv: KeyValue }>, revision: number): void
  /** The stream broke (etcd gone): the client resumes it from the last revision seen. */
  disconnected(error: Error): void
  connected(): void
  /** etcd ended the watch (its revision compacted away): only a new listing can follow. */
  cancelled(error: Error): void
}

export class EtcdStore {
  readonly client: Etcd3
  private readonly watchers = new Set<Watcher>()

  constructor(endpoints: readonly string[], tls: KvstoreTls | null) {
    const options: IOptions = {
      hosts: [...endpoints],
      dialTimeout: CALL_DEADLINE_MS,
      defaultCallOptions: (c) => (c.isStream ? {} : { deadline: Date.now() + CALL_DEADLINE_MS }),
      faultHandling: {
        host: () =>
          circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1_000, breaker: new ConsecutiveBreaker(3) }),
        global: retry(handleWhen(isRecoverableError), { maxAttempts: 1 }),
        // The first retry after 50 ms; the client never resets it, so it stays at most 1 s.
        watchBackoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 1_000 }).next(),
      },
      ...(tls
        ? {
            credentials: {
              rootCertificate: readFileSync(tls.ca),
              certChain: readFileSync(tls.cert),
              privateKey: readFileSync(tls.key),
            },
          }
        : {}),
      ...(tls?.serverName
        ? { grpcOptions: { 'grpc.ssl_target_name_override': tls.serverName, 'grpc.default_authority': tls.serverName } }
        : {}),
    }
    this.client = new Etcd3(options)
  }

  /** The keys under `prefix` (or the one key `key`), at `revision` (0: now), and the revision read. */
  async range(
    what: { prefix: string } | { key: string },
    o: { revision?: number; keysOnly?: boolean; limit?: number } = {},
  ): Promise<{ revision: number; kvs: KeyValue[] }> {
    const res = await this.client.kv.range({
      ...('prefix' in what
        ? { key: Buffer.from(what.prefix), range_end: prefixEnd(what.prefix) }
        : { key: Buffer.from(what.key) }),
      ...(o.revision ? { revision: o.revision } : {}),
      ...(o.keysOnly ? { keys_only: true } : {}),
      ...(o.limit ? { limit: o.limit } : {}),
    })
    return { revision: Number(res.header.revision), kvs: res.kvs.map(keyValue) }
  }

  /** If every compare holds, `then`, else `otherwise`: whether it held, the revision after, and the answers of `otherwise`'s reads. */
  async txn(
    compare: Compare[],
    then: Op[],
    otherwise: Op[] = [],
  ): Promise<{ succeeded: boolean; revision: number; read: KeyValue[] }> {
    const res = await this.client.kv.txn({ compare, success: then, failure: otherwise })
    const read = res.responses.flatMap((r) => r.response_range?.kvs.map(keyValue) ?? [])
    return { succeeded: res.succeeded, revision: Number(res.header.revision), read }
  }

  async put(key: string, value: string, lease?: string): Promise<void> {
    await this.client.kv.put({ key: Buffer.from(key), value: Buffer.from(value), ...(lease ? { lease } : {}) })
  }

  async delete(key: string): Promise<void> {
    await this.client.kv.deleteRange({ key: Buffer.from(key) })
  }

  lease(ttlSeconds: number): Lease {
    return this.client.lease(ttlSeconds, { autoKeepAlive: true })
  }

  /** Every change under `prefix` after `revision`, until cancelled or close(); resolves once etcd took the watch. */
  watch(prefix: string, revision: number, h: WatchHandlers): Promise<Watcher> {
    const w = this.client
      .watch()
      .prefix(prefix)
      .startRevision(String(revision + 1))
      .watcher()
    this.watchers.add(w)
    w.once('end', () => this.watchers.delete(w))
    w.on('data', (res) => {
      if (res.events.length === 0) return
      h.events(
        res.events.map((e) => ({ type: e.type === 'Put' ? 'put' : 'delete', kv: keyValue(e.kv) })),
        Number(res.header.revision),
      )
    })
    return new Promise((resolve, reject) => {
      w.once('connected', () => {
        w.on('connected', () => h.connected())
        w.on('disconnected', (e: Error) => h.disconnected(e))
        w.on('error', (e: Error) => {
          this.watchers.delete(w)
          h.cancelled(e)
        })
        resolve(w)
      })
      w.once('error', (e: Error) => {
        this.watchers.delete(w)
        reject(e)
      })
      w.once('closed', () => reject(new Error('kvstore: closed before etcd took the watch')))
    })
  }

  /**
   * Ends the client. A watch still waiting for etcd (its link down) is detached first: the
   * client would otherwise retry it for ever on the closed connection, holding the process.
   */
  close(): void {
    for (const w of this.watchers) {
      w.emit('closed')
      w.removeAllListeners()
      w.on('error', () => undefined)
      void w.cancel()
    }
    this.watchers.clear()
    this.client.close()
  }
}
