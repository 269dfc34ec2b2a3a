// How a DNS proxy thread that does not own the FQDN cache has its answers learned: the answers
// read together (one turn of the event loop) go to the owner in one batch. An answer that names
// only addresses the maps already allow for its names (as the owner last said) is released at
// once, and the batch only renews them; any other is held until the owner says the batch is
// learned (maps written), or until maxDelayMs has passed: then it is released anyway and
// `onLate` is told (Cilium's --tofqdns-proxy-response-max-delay does the same). Answers that
// only renew go once per batch for each name and set of records (with their longest TTLs): a
// busy name is answered thousands of times a second, and each copy would cost the owner a
// message to read and a cache update that changes nothing more. Pure: the caller carries
// batches to the owner and back.

import type { Logger } from 'pino'
import type { AnswerRecord } from './fqdn-cache.js'

/** An answer for the owner to learn from. */
export interface LearnRequest {
  qname: string
  records: AnswerRecord[]
}

export interface LearnRelayOptions {
  /** Carries a batch to the owner, which calls learned(id) once it has learned from it. */
  send: (id: number, answers: LearnRequest[]) => void
  maxDelayMs: number
  /** Answers of batch `id` released because the owner took longer than maxDelayMs. */
  onLate: (id: number, held: number) => void
}

interface Batch {
  id: number
  answers: LearnRequest[]
  release: Array<() => void>
  /** Per name, the renewals in `answers` (usually one). */
  renewals: Map<string, LearnRequest[]>
}

/** The `onLate` of a proxy thread's relay: a warning with the batch, how many it held, and the bound. */
export function warnLate(logger: Logger, maxDelayMs: number): LearnRelayOptions['onLate'] {
  return (batch, held) =>
    logger.warn(
      { batch, answers: held, maxDelayMs },
      'dns: answers released before their addresses were in the maps (max delay)',
    )
}

export class LearnRelay {
  /** Each name's addresses as the owner (and so the maps) has them. */
  private readonly known = new Map<string, Set<string>>()
  private collecting: Batch | null = null
  private nextId = 0
  private readonly waiting = new Map<number, { release: Array<() => void>; timer: NodeJS.Timeout }>()

  constructor(private readonly opts: LearnRelayOptions) {}

  /** A name's addresses as the owner now has them (none: forgotten). */
  setKnown(name: string, ips: readonly string[]): void {
    if (ips.length === 0) this.known.delete(name)
    else this.known.set(name, new Set(ips))
  }

  /** For DnsProxy's learn: nothing to wait for, or a promise settled when the answer may go. */
  learn(qname: string, records: readonly AnswerRecord[]): Promise<void> | void {
    if (this.collecting === null) {
      this.collecting = { id: this.nextId++, answers: [], release: [], renewals: new Map() }
      setImmediate(() => this.send()) // after the datagrams read together, so they go as one
    }
    const batch = this.collecting
    if (!this.allowedAlready(qname, records)) {
      batch.answers.push({ qname, records: records.slice() })
      return new Promise((resolve) => batch.release.push(resolve))
    }
    const renewals = batch.renewals.get(qname)
    const same = renewals?.find((r) => sameRecords(r.records, records))
    if (same !== undefined) return keepLongestTtl(same.records, records)
    const renewal = { qname, records: records.slice() }
    batch.answers.push(renewal)
    if (renewals === undefined) batch.renewals.set(qname, [renewal])
    else renewals.push(renewal)
  }

  /** The owner has learned from batch `id`: its held answers go. */
  learned(id: number): void {
    const w = this.waiting.get(id)
    if (!w) return // released already (max delay)
    this.waiting.delete(id)
    clearTimeout(w.timer)
    for (const release of w.release) release()
  }

  /** Releases everything held (the thread is stopping). */
  close(): void {
    for (const id of [...this.waiting.keys()]) this.learned(id)
  }

  private send(): void {
    const b = this.collecting!
    this.collecting = null
    if (b.release.length > 0) {
      const timer = setTimeout(() => {
        this.waiting.delete(b.id)
        this.opts.onLate(b.id, b.release.length)
        for (const release of b.release) release()
      }, this.opts.maxDelayMs)
      this.waiting.set(b.id, { release: b.release, timer })
    }
    this.opts.send(b.id, b.answers)
  }

  /**
   * Whether every A record's address is one the maps allow for the question's name and for every
   * CNAME target in the answer (what the owner files them under): nothing to wait for.
   */
  private allowedAlready(qname: string, records: readonly AnswerRecord[]): boolean {
    const names = [this.known.get(qname)]
    for (const r of records) if (r.type === 'CNAME') names.push(this.known.get(String(r.data).toLowerCase()))
    for (const r of records) {
      if (r.type !== 'A') continue
      for (const ips of names) if (ips === undefined || !ips.has(r.data as string)) return false
    }
    return true
  }
}

/** The same records in the same order (names, types and data; TTLs aside). */
function sameRecords(a: readonly AnswerRecord[], b: readonly AnswerRecord[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!
    const y = b[i]!
    if (x.type !== y.type || x.data !== y.data || x.name !== y.name) return false
  }
  return true
}

/** Raises each kept record's TTL to the later answer's where that is longer. */
function keepLongestTtl(kept: AnswerRecord[], later: readonly AnswerRecord[]): void {
  for (let i = 0; i < kept.length; i++) {
    const ttl = later[i]!.ttl
    if (ttl !== undefined && (kept[i]!.ttl ?? 0) < ttl) kept[i] = { ...kept[i]!, ttl }
  }
}
