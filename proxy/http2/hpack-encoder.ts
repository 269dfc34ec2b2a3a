// An HPACK encoder (RFC 7541) for one direction of one connection. Fields found in the static or
// dynamic table go as an index; others as literals, added to the dynamic table unless they are
// unlikely to repeat (lengths, dates) or sensitive (7.1.3: credentials are never indexed, and
// stay so on every later hop); strings Huffman-coded when that is shorter.

import type { Latin1Buffer } from '../http/head-fields.js'
import { huffmanEncode, huffmanEncodedLength } from './hpack-huffman.js'
import { DynamicTable, ENTRY_OVERHEAD, STATIC_COUNT, STATIC_TABLE } from './hpack-tables.js'

/** Fields whose values seldom repeat: indexing them would only push useful entries out (a date repeats for a second: indexed). */
const NOT_INDEXED = new Set([
  'content-length',
  'etag',
  'last-modified',
  'if-modified-since',
  'if-none-match',
  'location',
  'grpc-timeout',
  'x-request-id',
])
/** Cookies shorter than this are never indexed (guessable by probing the table size, 7.1.3). */
const SHORT_COOKIE = 20

/** name -> value -> static index (the lowest, for names listed twice). */
const STATIC_INDEX = new Map<string, Map<string, number>>()
STATIC_TABLE.forEach(([name, value], i) => {
  let values = STATIC_INDEX.get(name)
  if (!values) STATIC_INDEX.set(name, (values = new Map()))
  if (!values.has(value)) values.set(value, i + 1)
})

export class HpackEncoder {
  private readonly table: DynamicTable
  /** name -> value -> seq of the newest dynamic entry with it. */
  private readonly index = new Map<string, Map<string, number>>()
  /** A size update owed at the start of the next block (4.2), or -1. */
  private pendingResize = -1
  /** The smallest size the table went through since the last block (both are signalled, 4.2). */
  private lowestResize = -1

  constructor(maxSize = 4096) {
    this.table = new DynamicTable(maxSize, (name, value, seq) => {
      const values = this.index.get(name)
      if (values?.get(value) === seq) {
        values.delete(value)
        if (values.size === 0) this.index.delete(name)
      }
    })
  }

  /** The peer's SETTINGS_HEADER_TABLE_SIZE changed: the table follows it, capped at `cap`. */
  setMaxSize(peerMax: number, cap = 4096): void {
    const size = Math.min(peerMax, cap)
    if (size === this.table.maxSize && this.pendingResize < 0) return
    this.lowestResize = this.lowestResize < 0 ? size : Math.min(this.lowestResize, size)
    this.pendingResize = size
    this.table.resize(size)
  }

  /** The most bytes encode() can write for fields of these total name and value lengths. */
  static bound(fieldCount: number, nameValueBytes: number): number {
    // Per field a type byte with up to 5 bytes of index, and two 5-byte lengths; 12 for size updates.
    return nameValueBytes + fieldCount * 16 + 12
  }

  /** Starts a block: the size updates owed, at `out[at]`; returns where it ends. */
  begin(out: Buffer, at: number): number {
    if (this.pendingResize < 0) return at
    if (this.lowestResize < this.pendingResize) at = writeInt(out, at, 0x20, 5, this.lowestResize)
    at = writeInt(out, at, 0x20, 5, this.pendingResize)
    this.pendingResize = this.lowestResize = -1
    return at
  }

  /** Writes one field at `out[at]` (after begin()); returns where it ends. */
  field(out: Buffer, at: number, name: string, value: string, neverIndex = false): number {
    const known = STATIC_INDEX.get(name)
    const dynamic = this.index.get(name)
    if (!neverIndex) {
      const staticExact = known?.get(value)
      if (staticExact !== undefined) return writeInt(out, at, 0x80, 7, staticExact)
      const seq = dynamic?.get(value)
      if (seq !== undefined) return writeInt(out, at, 0x80, 7, STATIC_COUNT + this.table.inserted - seq)
    }
    // The name's index: static first (stable), else the newest dynamic entry with that name.
    const dynamicName = dynamic?.values().next().value
    const nameIndex =
      known?.values().next().value ?? (dynamicName === undefined ? 0 : STATIC_COUNT + this.table.inserted - dynamicName)
    const sensitive =
      neverIndex ||
      name === 'authorization' ||
      name === 'proxy-authorization' ||
      (name === 'cookie' && value.length < SHORT_COOKIE)
    const cost = name.length + value.length + ENTRY_OVERHEAD
    if (sensitive) at = writeInt(out, at, 0x10, 4, nameIndex)
    else if (NOT_INDEXED.has(name) || cost > (this.table.maxSize * 3) / 4) at = writeInt(out, at, 0x00, 4, nameIndex)
    else {
      at = writeInt(out, at, 0x40, 6, nameIndex)
      this.table.insert(name, value)
      let values = this.index.get(name)
      if (!values) this.index.set(name, (values = new Map()))
      values.set(value, this.table.inserted - 1)
    }
    if (nameIndex === 0) at = writeString(out, at, name)
    return writeString(out, at, value)
  }
}

/** 5.1: `v` with an N-bit prefix under the type bits `flags`. */
function writeInt(out: Buffer, at: number, flags: number, prefixBits: number, v: number): number {
  const max = (1 << prefixBits) - 1
  if (v < max) {
    out[at++] = flags | v
    return at
  }
  out[at++] = flags | max
  v -= max
  while (v >= 128) {
    out[at++] = (v % 128) | 0x80
    v = Math.floor(v / 128)
  }
  out[at++] = v
  return at
}

/** 5.2: a string, Huffman-coded if that is shorter. */
function writeString(out: Buffer, at: number, s: string): number {
  const h = huffmanEncodedLength(s)
  if (h < s.length) {
    at = writeInt(out, at, 0x80, 7, h)
    return huffmanEncode(s, out, at)
  }
  at = writeInt(out, at, 0x00, 7, s.length)
  return at + (out as Latin1Buffer).latin1Write(s, at)
}
