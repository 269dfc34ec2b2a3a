// Idle upstream HTTP/1.1 connections kept for the next client connection from the same source to
// the same origin. Without it a client that opens a connection per request costs an upstream
// connect per request as well, and the node, the side that closes, piles up TIME_WAIT sockets:
// one source address to one server runs out of ephemeral ports at about 470 connections/s.
// A connection is parked only between messages (nothing owed, nothing half-written) and shared
// only among connections of one source address, so one pod never inherits another's connection
// state (a server's connection-bound auth, NTLM style).

import type { Origin } from '../tls/origin-socket.js'
import type { UpstreamConnection } from './upstream-connection.js'

export interface UpstreamPoolLimits {
  /** Idle connections kept per source and origin. */
  perKey: number
  /** Idle connections kept in all. */
  total: number
  /** How long one may stay idle: below the servers' own keep-alive timeouts (Node's is 5 s). */
  idleMs: number
}

export const DEFAULT_POOL_LIMITS: UpstreamPoolLimits = { perKey: 64, total: 1024, idleMs: 4_000 }

/** The pool key: whose connection it is and where it goes (TLS ones by name and trust as well). */
export function poolKey(sourceAddress: string, origin: Origin): string {
  const tls = origin.tls ? `|tls|${origin.tls.servername ?? ''}|${origin.tls.trustedCA ?? ''}` : ''
  return `${sourceAddress}|${origin.host}|${origin.port}${tls}`
}

export class UpstreamPool {
  private readonly idle = new Map<string, UpstreamConnection[]>()
  private size = 0
  private closed = false

  constructor(private readonly limits: UpstreamPoolLimits = DEFAULT_POOL_LIMITS) {}

  /** Idle connections held now. */
  get idleCount(): number {
    return this.size
  }

  /** The most recently parked live connection for `key`, taken out of the pool; null when none. */
  take(key: string, now: number): UpstreamConnection | null {
    const list = this.idle.get(key)
    while (list !== undefined && list.length > 0) {
      const c = list.pop()!
      this.size--
      if (list.length === 0) this.idle.delete(key)
      if (c.reusable && now <= c.idleUntil) return c
      c.retire()
    }
    return null
  }

  /** Keeps `c` for `key` if it can be reused and there is room; otherwise closes it. */
  park(key: string, c: UpstreamConnection, now: number): void {
    const list = this.idle.get(key)
    if (this.closed || !c.reusable || this.size >= this.limits.total || (list?.length ?? 0) >= this.limits.perKey)
      return c.retire()
    c.park(now, this.limits.idleMs, () => this.remove(key, c))
    if (list === undefined) this.idle.set(key, [c])
    else list.push(c)
    this.size++
  }

  /** Closes the connections idle for longer than they may be. */
  sweep(now: number): void {
    for (const [key, list] of this.idle) {
      for (const c of [...list]) if (now > c.idleUntil) this.remove(key, c, true)
    }
  }

  /** Closes every idle connection. */
  close(): void {
    this.closed = true
    for (const list of this.idle.values()) for (const c of list) c.retire()
    this.idle.clear()
    this.size = 0
  }

  private remove(key: string, c: UpstreamConnection, retire = false): void {
    const list = this.idle.get(key)
    const at = list?.indexOf(c) ?? -1
    if (at < 0) return
    list!.splice(at, 1)
    if (list!.length === 0) this.idle.delete(key)
    this.size--
    if (retire) c.retire()
  }
}
