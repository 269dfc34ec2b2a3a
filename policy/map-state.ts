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
//
// The kernel finds, per (identity, protocol), only the longest matching port block (an LPM
// trie). So "deny wins" is resolved here down the port hierarchy: an allow entry inside a deny
// block of the same identity, direction and protocol resolves to deny, and when a deny comes or
// goes, the entries inside it are journaled with it.

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
  return {
    identity: Number(identity),
    direction: direction as Direction,
    protocol: Number(protocol),
    port: Number(port),
    prefixLen: Number(prefixLen),
  }
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

/** `identity/direction/protocol` of a key string, without parsing it (hot path). */
function groupOf(key: string): string {
  return key.slice(0, key.lastIndexOf('/', key.lastIndexOf('/') - 1))
}

interface Group {
  keys: Set<string>
  /** Entries of the group that hold a deny: push-down is only needed when there are some. */
  denies: number
}

export class MapState {
  private readonly entries = new Map<string, Entry>()
  /** (identity, direction, protocol) -> its keys and denies, for deny push-down. */
  private readonly groups = new Map<string, Group>()
  /** Keys touched since the last takeDelta, with the value they had before. */
  private journal = new Map<string, PolicyValue | null>()

  get size(): number {
    return this.entries.size
  }

  /** The resolved value of `key`, with denies of enclosing port blocks pushed down. */
  private resolveKey(key: string, e: Entry | undefined): PolicyValue | null {
    const v = resolve(e)
    if (!v || v.deny || !this.groups.get(groupOf(key))?.denies) return v
    const k = parseKey(key)
    for (let len = k.prefixLen - 1; len >= 0; len--) {
      const port = len === 0 ? 0 : (k.port >> (16 - len)) << (16 - len)
      const outer = this.entries.get(keyString({ ...k, port, prefixLen: len }))
      if (outer && outer.deny > 0) return { deny: true, proxyPort: 0 }
    }
    return v
  }

  private touch(key: string): void {
    if (!this.journal.has(key)) this.journal.set(key, this.resolveKey(key, this.entries.get(key)))
  }

  /** Before a deny appears or disappears at `key`, journal the entries inside its port block. */
  private touchInside(key: string): void {
    const k = parseKey(key)
    for (const other of this.groups.get(groupOf(key))?.keys ?? []) {
      const o = parseKey(other)
      if (
        o.prefixLen > k.prefixLen &&
        (k.prefixLen === 0 || o.port >> (16 - k.prefixLen) === k.port >> (16 - k.prefixLen))
      )
        this.touch(other)
    }
  }

  add(key: string, deny: boolean, proxyPort: number): void {
    let e = this.entries.get(key)
    this.touch(key)
    const g = groupOf(key)
    let group = this.groups.get(g)
    if (!group) this.groups.set(g, (group = { keys: new Set(), denies: 0 }))
    if (deny && !(e && e.deny > 0)) {
      this.touchInside(key)
      group.denies++
    }
    if (!e) {
      this.entries.set(key, (e = { allow: 0, deny: 0, proxy: null }))
      group.keys.add(key)
    }
    if (deny) e.deny++
    else {
      e.allow++
      if (proxyPort) (e.proxy ??= new Map()).set(proxyPort, (e.proxy.get(proxyPort) ?? 0) + 1)
    }
  }

  remove(key: string, deny: boolean, proxyPort: number): void {
    const e = this.entries.get(key)
    if (!e) throw new Error(`policy map state: removing absent entry ${key}`)
    this.touch(key)
    const group = this.groups.get(groupOf(key))!
    if (deny && e.deny === 1) {
      this.touchInside(key)
      group.denies--
    }
    if (deny) e.deny--
    else {
      e.allow--
      if (proxyPort && e.proxy) {
        const n = (e.proxy.get(proxyPort) ?? 0) - 1
        if (n > 0) e.proxy.set(proxyPort, n)
        else e.proxy.delete(proxyPort)
      }
    }
    if (e.allow === 0 && e.deny === 0) {
      this.entries.delete(key)
      group.keys.delete(key)
      if (group.keys.size === 0) this.groups.delete(groupOf(key))
    }
  }

  get(key: string): PolicyValue | null {
    return this.resolveKey(key, this.entries.get(key))
  }

  /** Every entry, resolved. */
  snapshot(): Map<string, PolicyValue> {
    const out = new Map<string, PolicyValue>()
    for (const [k, e] of this.entries) out.set(k, this.resolveKey(k, e)!)
    return out
  }

  /** The net change since the last call: entries whose resolved value differs. */
  takeDelta(): MapDelta {
    const delta: MapDelta = { upserts: [], deletes: [] }
    for (const [key, before] of this.journal) {
      const after = this.resolveKey(key, this.entries.get(key))
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
  if (best)
    return { verdict: best.value.proxyPort ? 'redirect' : 'allow', proxyPort: best.value.proxyPort, key: best.key }
  return { verdict: enforced ? 'deny' : 'allow', proxyPort: 0, key: null }
}
