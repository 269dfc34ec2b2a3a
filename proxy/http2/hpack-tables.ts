// HPACK's two tables (RFC 7541 2.3): the static table of 61 fields, and a connection's dynamic
// table, newest entry first at index 62, bounded in size (a field costs its name and value plus
// 32 bytes) and evicting its oldest entries to make room.

/** RFC 7541 Appendix A: index i + 1 is STATIC_TABLE[i]. */
export const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
]
export const STATIC_COUNT = STATIC_TABLE.length

/** RFC 7541 4.1: what an entry counts against the table's size. */
export const ENTRY_OVERHEAD = 32

/** The dynamic table: a ring of entries, each numbered by its insertion (`seq`). */
export class DynamicTable {
  /** The current bound (at most what SETTINGS_HEADER_TABLE_SIZE allows). */
  maxSize: number
  size = 0
  /** Entries ever inserted: the newest has seq inserted - 1. */
  inserted = 0
  count = 0
  private names: string[]
  private values: string[]

  constructor(
    maxSize: number,
    /** Told of each entry evicted (the encoder drops it from its index). */
    private readonly evicted: (name: string, value: string, seq: number) => void = () => undefined,
  ) {
    this.maxSize = maxSize
    const slots = Math.floor(maxSize / ENTRY_OVERHEAD) + 1
    this.names = new Array<string>(slots)
    this.values = new Array<string>(slots)
  }

  /** Dynamic index i (1 is the newest) as an insertion number, or -1 past the end. */
  seqOf(i: number): number {
    return i >= 1 && i <= this.count ? this.inserted - i : -1
  }

  name(seq: number): string {
    return this.names[seq % this.names.length]!
  }

  value(seq: number): string {
    return this.values[seq % this.values.length]!
  }

  /** Adds a field, evicting what it takes; one bigger than the whole table empties it (4.4). */
  insert(name: string, value: string): void {
    const cost = name.length + value.length + ENTRY_OVERHEAD
    this.evictTo(this.maxSize - cost)
    if (cost > this.maxSize) return
    const slot = this.inserted % this.names.length
    this.names[slot] = name
    this.values[slot] = value
    this.inserted++
    this.count++
    this.size += cost
  }

  /** A dynamic table size update (4.3, 6.3); the caller checks it against the limit. */
  resize(maxSize: number): void {
    this.evictTo(maxSize)
    this.maxSize = maxSize
    const slots = Math.floor(maxSize / ENTRY_OVERHEAD) + 1
    if (slots <= this.names.length) return
    // More entries may fit now: a bigger ring, the live entries moved to their new slots.
    const names = new Array<string>(slots)
    const values = new Array<string>(slots)
    for (let seq = this.inserted - this.count; seq < this.inserted; seq++) {
      names[seq % slots] = this.name(seq)
      values[seq % slots] = this.value(seq)
    }
    this.names = names
    this.values = values
  }

  private evictTo(size: number): void {
    while (this.count > 0 && this.size > Math.max(size, 0)) {
      const seq = this.inserted - this.count
      const name = this.name(seq)
      const value = this.value(seq)
      this.size -= name.length + value.length + ENTRY_OVERHEAD
      this.count--
      this.evicted(name, value, seq)
    }
  }
}
