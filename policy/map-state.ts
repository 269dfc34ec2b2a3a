// The desired content of one endpoint's policy map, kept as reference-counted contributions so
// that adding or removing one rule or one identity touches only its own entries, and a journal
// that turns any batch of changes into the net delta (upserts and deletes) for the map writers.
//
// Lookup semantics the datapath implements (and `decide` below is the reference for): a packet
// (identity I, protocol P, port N, direction D) is covered by an entry whose identity is I or 0
// (any), whose protocol is P or 0 (any), and whose port block (port, prefixLen over the 16 port
// bits) contains N. Any covering deny entry drops it (deny wins); otherwise the most specific
// covering allow (identity first, then protocol, then the longest port prefix) passes it, to the
// proxy when its proxyPort is set; otherwise default deny applies if the endpoint enforces D.

import type { Direction } from './model.js'

export interface PolicyKey {
  identity: number
  direction: Direction
  /** 6 TCP, 17 UDP, 0 any. */
  protocol: number
  port: number
  /** Bits of `port` that count, 0-16: 16 is one port, 0 every port. */
  prefixLen: number
}

export interface PolicyValue {
  deny: boolean
  /** Non-zero: the flow goes to the proxy listening on this port. */
  proxyPort: number
}

export function keyString(k: PolicyKey): string {
  return `${k.identity}/${k.direction}/${k.protocol}/${k.port}/${k.prefixLen}`
}

export function parseKey(s: string): PolicyKey {
  const [identity, direction, protocol, port, prefixLen] = s.split('/')
  return { identity: Number(identity), direction: direction as Direction, protocol: Number(protocol), port: Number(port), prefixLen: Number(prefixLen) }
}

export interface PortBlock {
  port: number
  prefixLen: number
}

/** The fewest aligned power-of-two blocks covering lo..hi (inclusive). */
export function portBlocks(lo: number, hi: number): PortBlock[] {
  const out: PortBlock[] = []
  let start = lo
  while (start <= hi) {
    let size = 1
    while (size < 65536 && start % (size * 2) === 0 && start + size * 2 - 1 <= hi) size *= 2
    out.push({ port: start, prefixLen: 16 - Math.log2(size) })
    start += size
  }
  return out
}

interface Entry {
  allow: number
  deny: number
  /** proxy port -> references; 0 is not stored. */
  proxy: Map<number, number> | null
}

function resolve(e: Entry | undefined): PolicyValue | null {
  if (!e || (e.allow === 0 && e.deny === 0)) return null
  if (e.deny > 0) return { deny: true, proxyPort: 0 }
  let proxyPort = 0
  if (e.proxy) for (const p of e.proxy.keys()) if (proxyPort === 0 || p < proxyPort) proxyPort = p
  return { deny: false, proxyPort }
}

function sameValue(a: PolicyValue | null, b: PolicyValue | null): boolean {
  return a === b || (a !== null && b !== null && a.deny === b.deny && a.proxyPort === b.proxyPort)
}

export interface MapDelta {
  upserts: Array<[PolicyKey, PolicyValue]>
  deletes: PolicyKey[]
}

export class MapState {
  private readonly entries = new Map<string, Entry>()
  /** Keys touched since the last takeDelta, with the value they had before. */
  private journal = new Map<string, PolicyValue | null>()

  get size(): number {
    return this.entries.size
  }

  private touch(key: string, e: Entry | undefined): void {
    if (!this.journal.has(key)) this.journal.set(key, resolve(e))
  }

  add(key: string, deny: boolean, proxyPort: number): void {
    let e = this.entries.get(key)
    this.touch(key, e)
    if (!e) this.entries.set(key, (e = { allow: 0, deny: 0, proxy: null }))
    if (deny) e.deny++
    else {
      e.allow++
      if (proxyPort) (e.proxy ??= new Map()).set(proxyPort, (e.proxy.get(proxyPort) ?? 0) + 1)
    }
  }

  remove(key: string, deny: boolean, proxyPort: number): void {
    const e = this.entries.get(key)
    if (!e) throw new Error(`policy map state: removing absent entry ${key}`)
    this.touch(key, e)
    if (deny) e.deny--
    else {
      e.allow--
      if (proxyPort && e.proxy) {
        const n = (e.proxy.get(proxyPort) ?? 0) - 1
        if (n > 0) e.proxy.set(proxyPort, n)
        else e.proxy.delete(proxyPort)
      }
    }
    if (e.allow === 0 && e.deny === 0) this.entries.delete(key)
  }

  get(key: string): PolicyValue | null {
    return resolve(this.entries.get(key))
  }

  /** Every entry, resolved. */
  snapshot(): Map<string, PolicyValue> {
    const out = new Map<string, PolicyValue>()
    for (const [k, e] of this.entries) out.set(k, resolve(e)!)
    return out
  }

  /** The net change since the last call: entries whose resolved value differs. */
  takeDelta(): MapDelta {
    const delta: MapDelta = { upserts: [], deletes: [] }
    for (const [key, before] of this.journal) {
      const after = resolve(this.entries.get(key))
      if (sameValue(before, after)) continue
      if (after === null) delta.deletes.push(parseKey(key))
      else delta.upserts.push([parseKey(key), after])
    }
    this.journal = new Map()
    return delta
  }
}

/** Reference lookup over resolved entries (see the top of this file). */
export function decide(
  lookup: (key: string) => PolicyValue | null | undefined,
  enforced: boolean,
  identity: number,
  direction: Direction,
  protocol: number,
  port: number,
): { verdict: 'allow' | 'deny' | 'redirect'; proxyPort: number; key: PolicyKey | null } {
  let best: { key: PolicyKey; value: PolicyValue; rank: number } | null = null
  for (const id of identity === 0 ? [0] : [identity, 0]) {
    for (const proto of protocol === 0 ? [0] : [protocol, 0]) {
      for (let len = 16; len >= 0; len--) {
        const blockPort = len === 0 ? 0 : (port >> (16 - len)) << (16 - len)
        const key: PolicyKey = { identity: id, direction, protocol: proto, port: blockPort, prefixLen: len }
        const value = lookup(keyString(key))
        if (!value) continue
        if (value.deny) return { verdict: 'deny', proxyPort: 0, key }
        const rank = (id !== 0 ? 1 << 10 : 0) + (proto !== 0 ? 1 << 5 : 0) + len
        if (!best || rank > best.rank) best = { key, value, rank }
      }
    }
  }
  if (best) return { verdict: best.value.proxyPort ? 'redirect' : 'allow', proxyPort: best.value.proxyPort, key: best.key }
  return { verdict: enforced ? 'deny' : 'allow', proxyPort: 0, key: null }
}
