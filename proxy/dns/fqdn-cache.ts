// What allowed DNS answers taught: name -> IPs, each with when it expires. Pure: the DNS proxy
// feeds it answers, the agent asks it what changed and hands the names' current IP sets to the
// policy engine (toFQDNs). A TTL below the minimum is raised to it (Cilium does the same: short
// TTLs would make policy flap); a name keeps at most `maxIpsPerName` IPs, the ones learned last.
// An expired IP that a connection still uses stays (a zombie, as Cilium calls it) until that
// connection is gone, and `idleGraceSeconds` more; past `maxZombies` of them, those seen in use
// longest ago go first, used or not.

export interface FqdnCacheOptions {
  /** Seconds; default 3600, Cilium's --tofqdns-min-ttl. */
  minTtlSeconds?: number
  /** Default 1000, Cilium's --tofqdns-endpoint-max-ip-per-hostname. */
  maxIpsPerName?: number
  /** Seconds a zombie stays after its last connection was seen; default 0, Cilium's --tofqdns-idle-connection-grace-period. */
  idleGraceSeconds?: number
  /** Zombies kept at most; default 10000, Cilium's --tofqdns-max-deferred-connection-deletes. */
  maxZombies?: number
}

/** A resource record as dns-packet decodes it. */
export interface AnswerRecord {
  name: string
  type: string
  ttl?: number
  data?: unknown
}

export interface CacheEntry {
  name: string
  /** zombie: expired, kept while a connection to it is open. */
  ips: Array<{ ip: string; expiresAt: number; zombie?: true }>
}

function norm(name: string): string {
  return (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase()
}

export class FqdnCache {
  private readonly names = new Map<string, Map<string, number>>()
  private readonly minTtlMs: number
  private readonly maxIps: number
  private readonly graceMs: number
  private readonly maxZombies: number
  /** Expired IPs a connection used: when it was last seen. */
  private readonly aliveAt = new Map<string, number>()

  constructor(opts: FqdnCacheOptions = {}) {
    this.minTtlMs = (opts.minTtlSeconds ?? 3600) * 1000
    this.maxIps = opts.maxIpsPerName ?? 1000
    this.graceMs = (opts.idleGraceSeconds ?? 0) * 1000
    this.maxZombies = opts.maxZombies ?? 10_000
  }

  /**
   * Learns from an answer to `qname`: its A records, reached through any CNAME chain from
   * `qname`, belong to `qname` and to every name on the chain. Returns the names whose IP sets
   * changed (not those whose IPs were only renewed).
   */
  learn(qname: string, answers: readonly AnswerRecord[], now: number): string[] {
    // The chain from the question, bounded (a loop in a bad answer ends it). Most answers have
    // no CNAME: then it is the question alone, and nothing is built for it.
    const chain = [norm(qname)]
    if (answers.some((r) => r.type === 'CNAME')) {
      const cnames = new Map<string, string>()
      for (const r of answers)
        if (r.type === 'CNAME' && typeof r.data === 'string') cnames.set(norm(r.name), norm(r.data))
      for (
        let next = cnames.get(chain[0]!);
        next !== undefined && chain.length <= 16 && !chain.includes(next);
        next = cnames.get(next)
      )
        chain.push(next)
    }
    const changed: string[] = []
    for (const name of chain) {
      let ips = this.names.get(name)
      let grew = false
      for (const r of answers) {
        if (r.type !== 'A' || typeof r.data !== 'string' || !chain.includes(norm(r.name))) continue
        if (ips === undefined) this.names.set(name, (ips = new Map()))
        const known = ips.get(r.data)
        if (known === undefined) grew = true
        ips.delete(r.data) // re-inserted: most recently learned last
        ips.set(r.data, Math.max(now + Math.max((r.ttl ?? 0) * 1000, this.minTtlMs), known ?? 0))
      }
      // Over the limit only when an address was added, so the set changed either way.
      while (ips !== undefined && ips.size > this.maxIps) ips.delete(ips.keys().next().value!)
      if (grew) changed.push(name)
    }
    return changed
  }

  /**
   * Drops what expired by `now`, but for IPs `inUse` says a connection still uses (asked only
   * about expired ones); returns the names whose IP sets changed.
   */
  expire(now: number, inUse: (ip: string) => boolean = () => false): string[] {
    const changed = new Set<string>()
    const zombies: Array<{ name: string; ip: string; aliveAt: number }> = []
    for (const [name, ips] of this.names) {
      for (const [ip, expiresAt] of ips) {
        if (expiresAt > now) continue
        const used = inUse(ip)
        if (used) this.aliveAt.set(ip, now)
        const aliveAt = this.aliveAt.get(ip)
        if (used || (aliveAt !== undefined && now - aliveAt < this.graceMs))
          zombies.push({ name, ip, aliveAt: aliveAt! })
        else this.drop(name, ip, changed)
      }
    }
    // Too many: those seen in use longest ago go first.
    if (zombies.length > this.maxZombies) {
      zombies.sort((a, b) => a.aliveAt - b.aliveAt)
      for (const z of zombies.splice(0, zombies.length - this.maxZombies)) this.drop(z.name, z.ip, changed)
    }
    const kept = new Set(zombies.map((z) => z.ip))
    for (const ip of this.aliveAt.keys()) if (!kept.has(ip)) this.aliveAt.delete(ip)
    return [...changed]
  }

  private drop(name: string, ip: string, changed: Set<string>): void {
    const ips = this.names.get(name)!
    ips.delete(ip)
    if (ips.size === 0) this.names.delete(name)
    changed.add(name)
  }

  /** Forgets everything; returns the names that were known. */
  clear(): string[] {
    const names = [...this.names.keys()]
    this.names.clear()
    return names
  }

  /** A name's current IPs (none when unknown). */
  ips(name: string): string[] {
    return [...(this.names.get(norm(name))?.keys() ?? [])]
  }

  /**
   * Takes in saved entries (a restart), dropping what expired by `now` and anything malformed;
   * returns the names now known.
   */
  restore(entries: unknown, now: number): string[] {
    if (!Array.isArray(entries)) return []
    for (const e of entries as Array<Partial<CacheEntry>>) {
      if (typeof e?.name !== 'string' || !Array.isArray(e.ips)) continue
      const ips = new Map<string, number>()
      for (const i of e.ips) {
        if (
          typeof i?.ip === 'string' &&
          /^\d{1,3}(\.\d{1,3}){3}$/.test(i.ip) &&
          typeof i.expiresAt === 'number' &&
          i.expiresAt > now
        )
          ips.set(i.ip, i.expiresAt)
      }
      if (ips.size > 0) this.names.set(norm(e.name), ips)
    }
    return [...this.names.keys()]
  }

  /**
   * Takes in another agent's entries (one taken over from, passing on what it learned meanwhile):
   * each address kept until the later of the two expiries, the limit per name held; returns the
   * names whose IP sets grew.
   */
  merge(entries: readonly CacheEntry[], now: number): string[] {
    const grew: string[] = []
    for (const e of entries) {
      const name = norm(e.name)
      let ips = this.names.get(name)
      let added = false
      for (const { ip, expiresAt } of e.ips) {
        if (expiresAt <= now || !/^\d{1,3}(\.\d{1,3}){3}$/.test(ip)) continue
        if (ips === undefined) this.names.set(name, (ips = new Map()))
        const known = ips.get(ip)
        if (known === undefined) added = true
        ips.set(ip, Math.max(expiresAt, known ?? 0))
      }
      while (ips !== undefined && ips.size > this.maxIps) ips.delete(ips.keys().next().value!)
      if (added) grew.push(name)
    }
    return grew
  }

  /** Every name with its IPs and when each expires (ms since the epoch); zombies marked. */
  entries(now = Date.now()): CacheEntry[] {
    return [...this.names].map(([name, ips]) => ({
      name,
      ips: [...ips].map(([ip, expiresAt]) =>
        expiresAt <= now ? { ip, expiresAt, zombie: true as const } : { ip, expiresAt },
      ),
    }))
  }
}
