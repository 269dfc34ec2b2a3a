// The node's endpoints: a list given at start (changed by replace()), or those of an endpoints
// file, read at start and watched. A change is applied live: removed (or moved to another interface) endpoints leave the engine
// and the maps first, then new and changed ones are attached and written, then every other proxy
// thread is told; a file with any problem is refused whole, with where and why, and nothing
// changes. An endpoint the maps have no room for is refused alone, logged, and quarantined (its
// interface denies everything) until a later change finds room for it or it leaves.

import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import type { PolicyEngine } from '../../policy/engine.js'
import { MapFullError } from '../../policy/errors.js'
import type { WriteStats } from '../../redirect-bpf/policy-writer.js'
import { diffEndpoints, type NodeEndpoint, parseEndpointsText } from './endpoints-file.js'

/** What a change of endpoints is applied to, once the datapath is up. */
export interface EndpointSinks {
  /** Puts the programs on an interface (with the endpoint's policy when `id` is given). */
  attach: (ifname: string, id?: number) => void
  /** Drops what the datapath keeps for an endpoint that left. */
  forget: (id: number) => void
  /** Denies everything on an interface whose endpoint is refused; returns a handle for endQuarantine. */
  quarantine: (ifname: string) => number
  endQuarantine: (handle: number) => void
  writeMaps: () => WriteStats
  tellThreads: (endpoints: NodeEndpoint[]) => void
}

const WATCH_MS = 500

/** What the endpoints given become before they are enforced (in a cluster: their identities numbered). */
export type Identify = (given: readonly NodeEndpoint[]) => NodeEndpoint[]

export class NodeEndpoints {
  /** The endpoints in force. */
  list: NodeEndpoint[]
  /** As given (the file's, or the last replace()'s), before identify. */
  private given: NodeEndpoint[]
  readonly file: string | null
  /** The file's text in force (read once at start, so a change made meanwhile is not missed). */
  private text = ''
  private poll: NodeJS.Timeout | null = null
  private sinks: EndpointSinks | null = null
  /** Endpoints refused for want of room in the maps: why, and their quarantine (on which interface). */
  private readonly refused = new Map<number, { reason: string; interface: string; quarantine: number }>()

  /** Reads them (a bad file throws) and registers them with the engine. */
  constructor(
    source: { file: string } | { list: NodeEndpoint[] },
    private readonly engine: PolicyEngine,
    private readonly logger: Logger,
    private readonly identify: Identify = (given) => [...given],
  ) {
    if ('file' in source) {
      this.file = source.file
      this.text = readFileSync(source.file, 'utf8')
      this.given = parseEndpointsText(this.text, source.file)
    } else {
      this.file = null
      this.given = source.list
    }
    this.list = identify(this.given)
    for (const ep of this.list) engine.upsertEndpoint(ep)
  }

  /** From now on, changes (to the file, or by replace()) are applied to `sinks` (and one made to the file while starting, now). */
  watch(sinks: EndpointSinks): void {
    this.sinks = sinks
    const file = this.file
    if (!file) return
    const reread = (): void => {
      let text: string
      let next: NodeEndpoint[]
      try {
        text = readFileSync(file, 'utf8')
        if (text === this.text) return
        next = parseEndpointsText(text, file)
      } catch (e) {
        this.logger.error({ file, error: (e as Error).message }, 'endpoints file refused; the endpoints in force stay')
        return
      }
      this.text = text
      this.given = next
      this.apply(this.identify(next), sinks)
    }
    // Read and compared every WATCH_MS, not watched by stat: a stat watcher takes its first look
    // asynchronously, and a change made before that look is never reported.
    this.poll = setInterval(reread, WATCH_MS)
    reread() // one made while starting
  }

  /** Why an endpoint was refused (the maps had no room for it), or null. */
  refusal(id: number): string | null {
    return this.refused.get(id)?.reason ?? null
  }

  close(): void {
    if (this.poll !== null) clearInterval(this.poll)
    this.poll = null
  }

  /** The endpoints are now `next` (a source that is not a file: the lab, a CNI plugin). */
  replace(next: NodeEndpoint[]): void {
    if (this.sinks === null) throw new Error('endpoints replaced before the datapath is up')
    this.given = next
    this.apply(this.identify(next), this.sinks)
  }

  /** The endpoints given, identified again (an identity got its number). */
  refresh(): void {
    if (this.sinks !== null) this.apply(this.identify(this.given), this.sinks)
  }

  private apply(next: NodeEndpoint[], sinks: EndpointSinks): void {
    // Refused before and gone now: their interfaces are let go.
    for (const [id, r] of this.refused) {
      if (next.some((ep) => ep.id === id)) continue
      sinks.endQuarantine(r.quarantine)
      this.refused.delete(id)
    }
    const { upserts, removes } = diffEndpoints(this.list, next)
    if (upserts.length === 0 && removes.length === 0) return
    try {
      for (const ep of upserts) sinks.attach(ep.interface)
    } catch (e) {
      this.logger.error(
        { file: this.file, error: (e as Error).message },
        'endpoints file refused; the endpoints in force stay',
      )
      return
    }
    const moved = upserts
      .filter((ep) => this.list.some((o) => o.id === ep.id && o.interface !== ep.interface))
      .map((ep) => ep.id)
    const leaving = [...removes, ...moved]
    for (const id of leaving) this.engine.removeEndpoint(id)
    const removed = sinks.writeMaps()
    for (const id of leaving) sinks.forget(id)
    const refusedNow: NodeEndpoint[] = []
    for (const ep of upserts) {
      sinks.attach(ep.interface, ep.id)
      // A quarantine stays with its interface: one the endpoint left is let go.
      const before = this.refused.get(ep.id)
      const kept = before?.interface === ep.interface ? before.quarantine : null
      if (before && kept === null) sinks.endQuarantine(before.quarantine)
      try {
        this.engine.upsertEndpoint(ep)
        this.refused.delete(ep.id)
      } catch (e) {
        if (!(e instanceof MapFullError)) throw e
        sinks.forget(ep.id)
        this.refused.set(ep.id, {
          reason: e.message,
          interface: ep.interface,
          quarantine: kept ?? sinks.quarantine(ep.interface),
        })
        refusedNow.push(ep)
        this.logger.error(
          { endpoint: ep.id, host: ep.host, interface: ep.interface, error: e.message },
          'endpoint refused: the maps are full; its interface denies everything',
        )
      }
    }
    const written = sinks.writeMaps()
    const known = new Set(this.list.map((e) => e.id))
    // A refused endpoint is not in force: the next change tries it again.
    this.list = next.filter((ep) => !refusedNow.includes(ep))
    sinks.tellThreads(this.list)
    this.logger.info(
      {
        file: this.file,
        added: upserts.filter((e) => !known.has(e.id) && !refusedNow.includes(e)).map((e) => e.host),
        changed: upserts.filter((e) => known.has(e.id) && !refusedNow.includes(e)).map((e) => e.host),
        ...(refusedNow.length > 0 ? { refused: refusedNow.map((e) => e.host) } : {}),
        removed: removes,
        maps: { upserts: removed.upserts + written.upserts, deletes: removed.deletes + written.deletes },
      },
      'endpoints changed',
    )
  }
}
