// A message head's header fields as spans of the bytes the parser read: a name or value becomes a
// string only when asked for. The proxy looks at a few fields of a head (Host, framing, what
// rules name) and forwards the rest as the bytes they came in, so making a string of each field
// and joining them again is left out. Names are tokens (ASCII, as llhttp
// checks them); names given to look-ups are lower case.
// The bytes are the parser's: a HeadFields is valid only during the onHead call that hands it over.

/** The bytes spans point into: read when used, since the parser's memory can be replaced while a head is handled. */
export interface ByteStore {
  readonly mem: Buffer
}

/** Buffer's latin1 codec without toString()'s and write()'s argument handling. */
export type Latin1Buffer = Buffer & {
  latin1Slice(start: number, end: number): string
  latin1Write(s: string, at: number): number
}

const SPAN = 4 // name offset, name length, value offset, value length
const INITIAL_FIELDS = 32

function lowerAscii(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c | 0x20 : c
}

export class HeadFields {
  count = 0
  /** Per field: where its name and its value are in `bytes`, and their lengths. */
  private spans = new Int32Array(INITIAL_FIELDS * SPAN)
  /** Fields not forwarded (hop-by-hop); look-ups still see them. */
  private dropped = new Uint8Array(INITIAL_FIELDS)

  constructor(private store: ByteStore) {}

  get bytes(): Latin1Buffer {
    return this.store.mem as Latin1Buffer
  }

  /** Empties it; its spans will point into `store`. */
  reset(store: ByteStore): void {
    this.store = store
    this.count = 0
  }

  /** A new field whose name is `nameLength` bytes at `nameAt` (its value empty until setValue). */
  addName(nameAt: number, nameLength: number): void {
    if (this.count * SPAN === this.spans.length) this.grow()
    const s = this.count * SPAN
    this.spans[s] = nameAt
    this.spans[s + 1] = nameLength
    this.spans[s + 2] = nameAt + nameLength
    this.spans[s + 3] = 0
    this.dropped[this.count++] = 0
  }

  setValue(i: number, at: number, length: number): void {
    this.spans[i * SPAN + 2] = at
    this.spans[i * SPAN + 3] = length
  }

  /** Lengthens the last field's name or value by bytes that follow it (a span cut by a read). */
  extendLast(part: 'name' | 'value', length: number): void {
    this.spans[(this.count - 1) * SPAN + (part === 'name' ? 1 : 3)] += length
  }

  /** Copies every field's bytes to `to` (the head goes on in a later read) and points the spans there. */
  moveTo(to: ByteStore & { append(from: Buffer, at: number, length: number): number }): void {
    const from = this.bytes
    for (let i = 0; i < this.count; i++) {
      const s = i * SPAN
      this.spans[s] = to.append(from, this.spans[s]!, this.spans[s + 1]!)
      this.spans[s + 2] = to.append(from, this.spans[s + 2]!, this.spans[s + 3]!)
    }
    this.store = to
  }

  /** Shortens field i's value by trailing spaces and tabs (OWS: not part of it, RFC 9110 5.5). */
  trimValue(i: number): void {
    const b = this.bytes
    const at = this.valueAt(i)
    let len = this.valueLength(i)
    while (len > 0 && (b[at + len - 1] === 0x20 || b[at + len - 1] === 0x09)) len--
    this.spans[i * SPAN + 3] = len
  }

  nameAt(i: number): number {
    return this.spans[i * SPAN]!
  }

  nameLength(i: number): number {
    return this.spans[i * SPAN + 1]!
  }

  valueAt(i: number): number {
    return this.spans[i * SPAN + 2]!
  }

  valueLength(i: number): number {
    return this.spans[i * SPAN + 3]!
  }

  name(i: number): string {
    const at = this.nameAt(i)
    return this.bytes.latin1Slice(at, at + this.nameLength(i))
  }

  value(i: number): string {
    const at = this.valueAt(i)
    return this.bytes.latin1Slice(at, at + this.valueLength(i))
  }

  /** Whether field i is called `lower` (a lower-case name), compared as HTTP compares names (ASCII case-insensitive). */
  nameIs(i: number, lower: string): boolean {
    return this.bytesAre(this.nameAt(i), this.nameLength(i), lower)
  }

  /** Whether field i's value is `lower` (ASCII lower case), compared without case. */
  valueIs(i: number, lower: string): boolean {
    return this.bytesAre(this.valueAt(i), this.valueLength(i), lower)
  }

  private bytesAre(at: number, len: number, lower: string): boolean {
    if (len !== lower.length) return false
    const b = this.bytes
    for (let k = 0; k < len; k++) if (lowerAscii(b[at + k]!) !== lower.charCodeAt(k)) return false
    return true
  }

  /** The first field called `lower` from `from` on, or -1. */
  indexOf(lower: string, from = 0): number {
    for (let i = from; i < this.count; i++) if (this.nameIs(i, lower)) return i
    return -1
  }

  /** Every value of the fields called `lower`, joined as RFC 9110 5.3 allows; or undefined. */
  get(lower: string): string | undefined {
    let i = this.indexOf(lower)
    if (i < 0) return undefined
    let v = this.value(i)
    while ((i = this.indexOf(lower, i + 1)) >= 0) v += `, ${this.value(i)}`
    return v
  }

  /** Field i is not forwarded. */
  drop(i: number): void {
    this.dropped[i] = 1
  }

  isDropped(i: number): boolean {
    return this.dropped[i] === 1
  }

  /** The fields as [name, value, name, value...] strings; without the dropped ones when `forwardedOnly`. */
  toRaw(forwardedOnly = false): string[] {
    const raw: string[] = []
    for (let i = 0; i < this.count; i++) if (!forwardedOnly || !this.isDropped(i)) raw.push(this.name(i), this.value(i))
    return raw
  }

  /** Fields of their own from [name, value...] strings (latin1), as the proxy rewrote them. */
  static fromRaw(raw: readonly string[]): HeadFields {
    let size = 0
    for (const s of raw) size += s.length
    const mem = Buffer.allocUnsafe(size) as Latin1Buffer
    const f = new HeadFields({ mem })
    let at = 0
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!
      const value = raw[i + 1]!
      f.addName(at, mem.latin1Write(name, at))
      at += name.length
      f.setValue(f.count - 1, at, mem.latin1Write(value, at))
      at += value.length
    }
    return f
  }

  private grow(): void {
    const spans = new Int32Array(this.spans.length * 2)
    spans.set(this.spans)
    this.spans = spans
    const dropped = new Uint8Array(this.dropped.length * 2)
    dropped.set(this.dropped)
    this.dropped = dropped
  }
}
