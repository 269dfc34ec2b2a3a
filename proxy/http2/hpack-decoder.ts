// An HPACK decoder (RFC 7541) for one direction of one connection: a header block in, its fields
// out to a sink, the dynamic table kept in step. Any bytes are safe: a bad block is a returned
// reason (the connection then ends with COMPRESSION_ERROR, RFC 9113 4.3), never an exception.
// The table is bounded by the SETTINGS_HEADER_TABLE_SIZE this side advertised.

import type { Latin1Buffer } from '../http/head-fields.js'
import { huffmanDecode, huffmanDecodedBound } from './hpack-huffman.js'
import { DynamicTable, STATIC_COUNT, STATIC_TABLE } from './hpack-tables.js'

/** Receives a block's fields in order; `neverIndex`: the sender asked that no hop index it (6.2.3). */
export type FieldSink = (name: string, value: string, neverIndex: boolean) => void

/** Integers past this are refused: no header block needs them, and they stay exact. */
const MAX_INT = 2 ** 31 - 1

export class HpackDecoder {
  private readonly table: DynamicTable
  private scratch = Buffer.allocUnsafe(256) as Latin1Buffer
  // Where the last readInt/readString left off (module fields would be shared by decoders).
  private pos = 0
  private int = 0
  private str = ''

  constructor(
    /** The most SETTINGS_HEADER_TABLE_SIZE allows: size updates above it are errors. */
    private readonly limit: number = 4096,
  ) {
    this.table = new DynamicTable(limit)
  }

  /** The dynamic table's current size and entry count (for tests and status). */
  get tableSize(): { size: number; count: number; maxSize: number } {
    return { size: this.table.size, count: this.table.count, maxSize: this.table.maxSize }
  }

  /** Decodes the complete block `src[start, end)`; null when it was valid, else why not. */
  decode(src: Buffer, start: number, end: number, sink: FieldSink): string | null {
    this.pos = start
    let fieldsSeen = false
    while (this.pos < end) {
      const b = src[this.pos]!
      if (b & 0x80) {
        // 6.1 Indexed field.
        if (!this.readInt(src, end, 7)) return 'bad integer'
        const r = this.emitIndexed(this.int, sink)
        if (r !== null) return r
        fieldsSeen = true
      } else if ((b & 0xe0) === 0x20) {
        // 6.3 Dynamic table size update: only before the block's first field.
        if (fieldsSeen) return 'table size update after a field'
        if (!this.readInt(src, end, 5)) return 'bad integer'
        if (this.int > this.limit) return `table size update to ${this.int}, above ${this.limit}`
        this.table.resize(this.int)
      } else {
        // 6.2 Literal: with incremental indexing (01), without (0000), never indexed (0001).
        const indexing = (b & 0x40) !== 0
        const neverIndex = !indexing && (b & 0x10) !== 0
        if (!this.readInt(src, end, indexing ? 6 : 4)) return 'bad integer'
        let name: string
        if (this.int === 0) {
          const r = this.readString(src, end)
          if (r !== null) return r
          name = this.str
        } else {
          const n = this.nameAt(this.int)
          if (n === null) return `index ${this.int} out of range`
          name = n
        }
        const r = this.readString(src, end)
        if (r !== null) return r
        if (indexing) this.table.insert(name, this.str)
        sink(name, this.str, neverIndex)
        fieldsSeen = true
      }
    }
    return null
  }

  private emitIndexed(i: number, sink: FieldSink): string | null {
    if (i >= 1 && i <= STATIC_COUNT) {
      const f = STATIC_TABLE[i - 1]!
      sink(f[0], f[1], false)
      return null
    }
    const seq = this.table.seqOf(i - STATIC_COUNT)
    if (seq < 0) return `index ${i} out of range`
    sink(this.table.name(seq), this.table.value(seq), false)
    return null
  }

  private nameAt(i: number): string | null {
    if (i <= STATIC_COUNT) return STATIC_TABLE[i - 1]![0]
    const seq = this.table.seqOf(i - STATIC_COUNT)
    return seq < 0 ? null : this.table.name(seq)
  }

  /** 5.1: an integer with an N-bit prefix at this.pos, into this.int; false if cut short or too big. */
  private readInt(src: Buffer, end: number, prefixBits: number): boolean {
    const max = (1 << prefixBits) - 1
    let v = src[this.pos++]! & max
    if (v === max) {
      let m = 1
      for (;;) {
        if (this.pos >= end || m > 2 ** 28) return false
        const b = src[this.pos++]!
        v += (b & 0x7f) * m
        m *= 128
        if ((b & 0x80) === 0) break
      }
      if (v > MAX_INT) return false
    }
    this.int = v
    return true
  }

  /** 5.2: a string literal at this.pos, into this.str; null, or why it is bad. */
  private readString(src: Buffer, end: number): string | null {
    if (this.pos >= end) return 'block ends before a string'
    const huffman = (src[this.pos]! & 0x80) !== 0
    if (!this.readInt(src, end, 7)) return 'bad integer'
    const len = this.int
    if (len > end - this.pos) return 'string longer than the block'
    const from = this.pos
    this.pos += len
    if (!huffman) {
      this.str = (src as Latin1Buffer).latin1Slice(from, this.pos)
      return null
    }
    const bound = huffmanDecodedBound(len)
    if (this.scratch.length < bound)
      this.scratch = Buffer.allocUnsafe(Math.max(bound, this.scratch.length * 2)) as Latin1Buffer
    const n = huffmanDecode(src, from, this.pos, this.scratch, 0)
    if (n < 0) return 'bad Huffman code'
    this.str = this.scratch.latin1Slice(0, n)
    return null
  }
}
