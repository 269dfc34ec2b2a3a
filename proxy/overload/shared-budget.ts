// The node's budgets of concurrent client connections and HTTP/2 streams, shared by every proxy
// thread: per source address, per source identity, and (connections) for the whole node. One
// SharedArrayBuffer holds the limits, the counts and the pressure flag, so a worker thread needs
// only the buffer; a take or give is a few dozen instructions under a futex-style lock (no I/O
// inside, so the lock is held for well under a microsecond). Connections from one source land on
// every thread (SO_REUSEPORT spreads them by port), which is why the counts cannot be per thread.
//
// Counts per key live in two open-addressing tables (linear probing, keys deleted by backward
// shift when their counts reach zero), each with at least twice as many slots as the node
// allows connections: a key holds at least one connection, so a table is never more than half
// full. Source keys are IPv4 addresses as integers, identity keys identity numbers; 0 is "empty"
// in both (never a source address, never an identity).

import { parseIPv4 } from '../../policy/cidr.js'

/** A source address as the budgets key it: an IPv4 address as an integer (never 0, the empty key). */
export function sourceKey(address: string): number {
  return parseIPv4(address) || 0xffffffff
}

export interface BudgetLimits {
  /** Concurrent client connections from one source address; 0: no limit. */
  connectionsPerSource: number
  /** From all sources of one identity. */
  connectionsPerIdentity: number
  /** Over the whole node (every source, every thread); at least 1. */
  connectionsPerNode: number
  /** Concurrent HTTP/2 streams from one source address, over all its connections; 0: no limit. */
  streamsPerSource: number
  streamsPerIdentity: number
}

/** Which budget refused: none (0), or the one that was spent. */
export const Refusal = { None: 0, Source: 1, Identity: 2, Node: 3 } as const
export type Refusal = (typeof Refusal)[keyof typeof Refusal]

/** A refusal's name in log lines and counters, by its number. */
export const REFUSAL_NAMES = ['none', 'source', 'identity', 'node'] as const

/** Refusals counted so far, by what was refused and which budget said no. */
export interface RefusalCounts {
  connections: { source: number; identity: number; node: number }
  streams: { source: number; identity: number }
}

// Header words (Int32), then the refusal counters (Float64, written under the lock), then the tables.
const LOCK = 0
const PRESSURE = 1
const CONNECTIONS = 2
const STREAMS = 3
const LIMITS = 4 // five words, in BudgetLimits' order
const SLOTS = 9
const HEADER_WORDS = 10
const COUNTERS = 8 // Float64 slots: connections by refusal 1-3, streams by refusal 1-2 (at 4 + refusal)
const COUNTER_BYTES = COUNTERS * 8
/** A slot: key, connections, streams. */
const SLOT_WORDS = 3
const CONN = 1
const STREAM = 2
const MAX_SLOTS = 1 << 22
/** locate(): no such key, and no room for it. */
const FULL = -Infinity

function slotsFor(connectionsPerNode: number): number {
  let n = 1024
  while (n < 2 * connectionsPerNode && n < MAX_SLOTS) n *= 2
  return n
}

export class SharedBudget {
  private readonly i32: Int32Array
  private readonly counters: Float64Array
  private readonly slots: number
  private readonly bits: number
  private readonly sources: number
  private readonly identities: number
  readonly limits: Readonly<BudgetLimits>

  /** A new budget (its buffer goes to the other threads: SharedBudget.of). */
  static create(limits: BudgetLimits): SharedBudget {
    if (limits.connectionsPerNode < 1) throw new RangeError('connectionsPerNode must be at least 1')
    const slots = slotsFor(limits.connectionsPerNode)
    const buffer = new SharedArrayBuffer(HEADER_WORDS * 4 + COUNTER_BYTES + 2 * slots * SLOT_WORDS * 4)
    const i32 = new Int32Array(buffer, 0, HEADER_WORDS)
    const { connectionsPerSource, connectionsPerIdentity, connectionsPerNode, streamsPerSource, streamsPerIdentity } =
      limits
    i32.set(
      [connectionsPerSource, connectionsPerIdentity, connectionsPerNode, streamsPerSource, streamsPerIdentity],
      LIMITS,
    )
    i32[SLOTS] = slots
    return new SharedBudget(buffer)
  }

  /** The budget another thread created. */
  static of(buffer: SharedArrayBuffer): SharedBudget {
    return new SharedBudget(buffer)
  }

  private constructor(readonly buffer: SharedArrayBuffer) {
    const head = new Int32Array(buffer, 0, HEADER_WORDS)
    this.slots = head[SLOTS]!
    this.bits = Math.log2(this.slots)
    this.i32 = new Int32Array(buffer, 0, HEADER_WORDS + (COUNTER_BYTES >> 2) + 2 * this.slots * SLOT_WORDS)
    this.counters = new Float64Array(buffer, HEADER_WORDS * 4, COUNTERS)
    this.sources = HEADER_WORDS + (COUNTER_BYTES >> 2)
    this.identities = this.sources + this.slots * SLOT_WORDS
    this.limits = {
      connectionsPerSource: head[LIMITS]!,
      connectionsPerIdentity: head[LIMITS + 1]!,
      connectionsPerNode: head[LIMITS + 2]!,
      streamsPerSource: head[LIMITS + 3]!,
      streamsPerIdentity: head[LIMITS + 4]!,
    }
  }

  /** Client connections open now, over the node. */
  get connections(): number {
    return Atomics.load(this.i32, CONNECTIONS)
  }

  get streams(): number {
    return Atomics.load(this.i32, STREAMS)
  }

  /** Set by the pressure monitor: the proxies shorten their timeouts and close idle connections first. */
  get underPressure(): boolean {
    return Atomics.load(this.i32, PRESSURE) !== 0
  }

  set underPressure(on: boolean) {
    Atomics.store(this.i32, PRESSURE, on ? 1 : 0)
  }

  /** Counts a new connection from `source` (IPv4 as an integer) of `identity`, or says which budget is spent. */
  takeConnection(source: number, identity: number): Refusal {
    const a = this.i32
    this.lock()
    try {
      if (a[CONNECTIONS]! >= this.limits.connectionsPerNode) return this.refused(0, Refusal.Node)
      return this.take(CONN, source, identity, this.limits.connectionsPerSource, this.limits.connectionsPerIdentity, 0)
    } finally {
      this.unlock()
    }
  }

  /** A connection taken from this budget has closed. */
  giveConnection(source: number, identity: number): void {
    this.give(CONN, source, identity)
  }

  /** Counts a new HTTP/2 stream, or says which budget is spent. */
  takeStream(source: number, identity: number): Refusal {
    this.lock()
    try {
      return this.take(STREAM, source, identity, this.limits.streamsPerSource, this.limits.streamsPerIdentity, 3)
    } finally {
      this.unlock()
    }
  }

  giveStream(source: number, identity: number): void {
    this.give(STREAM, source, identity)
  }

  /** The limit a refusal of `what` hit (the node's connections when a table was full). */
  limitOf(what: 'connections' | 'streams', r: Refusal): number {
    const l = this.limits
    if (r === Refusal.Source) return what === 'connections' ? l.connectionsPerSource : l.streamsPerSource
    if (r === Refusal.Identity) return what === 'connections' ? l.connectionsPerIdentity : l.streamsPerIdentity
    return l.connectionsPerNode
  }

  /** Refusals so far (read without the lock: a report, not a decision). */
  refusals(): RefusalCounts {
    const c = this.counters
    return { connections: { source: c[1]!, identity: c[2]!, node: c[3]! }, streams: { source: c[4]!, identity: c[5]! } }
  }

  /** The `n` sources with the most connections open now (for status: who is using the budget). */
  topSources(n: number): Array<{ source: number; connections: number; streams: number }> {
    const a = this.i32
    const out: Array<{ source: number; connections: number; streams: number }> = []
    for (let s = this.sources; s < this.identities; s += SLOT_WORDS) {
      if (a[s] === 0) continue
      out.push({ source: a[s]! >>> 0, connections: a[s + CONN]!, streams: a[s + STREAM]! })
    }
    return out.sort((x, y) => y.connections - x.connections || y.streams - x.streams).slice(0, n)
  }

  /** Under the lock: both per-key counts below their limits (0: none), then both counted. */
  private take(
    field: number,
    source: number,
    identity: number,
    perSource: number,
    perIdentity: number,
    counterBase: number,
  ): Refusal {
    const a = this.i32
    const s = this.locate(this.sources, source)
    if (perSource > 0 && s >= 0 && a[s + field]! >= perSource) return this.refused(counterBase, Refusal.Source)
    const i = this.locate(this.identities, identity)
    if (perIdentity > 0 && i >= 0 && a[i + field]! >= perIdentity) return this.refused(counterBase, Refusal.Identity)
    if (s === FULL || i === FULL) return this.refused(counterBase, Refusal.Node)
    const sourceSlot = s >= 0 ? s : this.claim(-s - 1, source)
    const identitySlot = i >= 0 ? i : this.claim(-i - 1, identity)
    a[sourceSlot + field]!++
    a[identitySlot + field]!++
    a[field === CONN ? CONNECTIONS : STREAMS]!++
    return Refusal.None
  }

  private refused(counterBase: number, r: Refusal): Refusal {
    this.counters[counterBase + r]!++
    return r
  }

  private give(field: number, source: number, identity: number): void {
    this.lock()
    try {
      this.giveKey(this.sources, source, field)
      this.giveKey(this.identities, identity, field)
      this.i32[field === CONN ? CONNECTIONS : STREAMS]!--
    } finally {
      this.unlock()
    }
  }

  private giveKey(table: number, key: number, field: number): void {
    const a = this.i32
    const slot = this.locate(table, key)
    if (slot < 0 || a[slot + field]! <= 0) return
    a[slot + field]!--
    if (a[slot + CONN] === 0 && a[slot + STREAM] === 0) this.remove(table, slot)
  }

  private home(table: number, key: number): number {
    return table + (Math.imul(key, 0x9e3779b1) >>> (32 - this.bits)) * SLOT_WORDS
  }

  /** The slot holding `key` in `table` (>= 0); if none, -1 - the empty slot it would take, or FULL. */
  private locate(table: number, key: number): number {
    const a = this.i32
    const k = key | 0
    const end = table + this.slots * SLOT_WORDS
    let s = this.home(table, k)
    for (let probes = 0; probes < this.slots; probes++) {
      const at = a[s]!
      if (at === k) return s
      if (at === 0) return -1 - s
      s += SLOT_WORDS
      if (s === end) s = table
    }
    return FULL
  }

  /** Gives `key` the empty slot `s` (as locate found it). */
  private claim(s: number, key: number): number {
    this.i32[s] = key | 0
    return s
  }

  /** Empties slot `s`, moving later members of its probe run back so every key stays reachable. */
  private remove(table: number, s: number): void {
    const a = this.i32
    const end = table + this.slots * SLOT_WORDS
    let hole = s
    let j = s
    for (;;) {
      j += SLOT_WORDS
      if (j === end) j = table
      if (a[j] === 0) break
      const k = this.home(table, a[j]!)
      // The member at j may move to the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? hole < k && k <= j : hole < k || k <= j
      if (stays) continue
      a[hole] = a[j]!
      a[hole + CONN] = a[j + CONN]!
      a[hole + STREAM] = a[j + STREAM]!
      hole = j
    }
    a[hole] = a[hole + CONN] = a[hole + STREAM] = 0
  }

  // A futex-style mutex (Drepper's "Futexes are tricky", mutex 2): 0 free, 1 held, 2 held with waiters.
  private lock(): void {
    const a = this.i32
    let c = Atomics.compareExchange(a, LOCK, 0, 1)
    if (c === 0) return
    do {
      if (c === 2 || Atomics.compareExchange(a, LOCK, 1, 2) !== 0) Atomics.wait(a, LOCK, 2, 5)
    } while ((c = Atomics.compareExchange(a, LOCK, 0, 2)) !== 0)
  }

  private unlock(): void {
    if (Atomics.sub(this.i32, LOCK, 1) === 1) return
    Atomics.store(this.i32, LOCK, 0)
    Atomics.notify(this.i32, LOCK, 1)
  }
}
