// DNS messages read straight from their bytes (RFC 1035 4.1), for the proxy's hot path: the whole
// message is walked and checked (counts, label lengths, name length, compression pointers that
// only point back, record lengths), but only what the proxy uses becomes a JS value: a query's
// question, an answer's A, AAAA and CNAME records. dns-packet builds every record of every
// section as objects, which cost more than the rest of relaying a query did.
// A label's dots, backslashes and unprintable bytes come out escaped as a master file writes
// them ('\.', '\\', '\DDD'), as Cilium's DNS library does, so a label with a dot in it can
// never read as two labels and pass a rule meant for another name. Names come out in lower
// case (names compare without case; rules, the log and the FQDN cache all use lower case), so
// no second string is made to lower-case them.

import { L7ProxyError } from '../../lib/l7proxy-error.js'
import type { AnswerRecord } from './fqdn-cache.js'

export class DnsWireError extends L7ProxyError {
  constructor(message: string) {
    super('EDNSWIRE', message)
  }
}

export const HEADER_BYTES = 12
const MAX_NAME = 255
const TYPE_NAMES: Record<number, string> = {
  1: 'A',
  2: 'NS',
  5: 'CNAME',
  6: 'SOA',
  12: 'PTR',
  13: 'HINFO',
  15: 'MX',
  16: 'TXT',
  28: 'AAAA',
  33: 'SRV',
  35: 'NAPTR',
  41: 'OPT',
  43: 'DS',
  46: 'RRSIG',
  47: 'NSEC',
  48: 'DNSKEY',
  64: 'SVCB',
  65: 'HTTPS',
  252: 'AXFR',
  255: 'ANY',
  257: 'CAA',
}

/** A type's mnemonic, or RFC 3597's TYPEn for one without. */
export function typeName(type: number): string {
  return TYPE_NAMES[type] ?? `TYPE${type}`
}

/** What a query is judged by: its header fields and its first question. */
export interface QueryInfo {
  response: boolean
  opcode: number
  questions: number
  /** The first question's name, in lower case (no trailing dot; '' for the root or no question). */
  name: string
  type: number
  /** Where the first question ends (the header and it are what the proxy's own answers echo). */
  questionEnd: number
}

// The name readName decoded last (no trailing dot; '' for the root): returned through here so
// reading one allocates only its string.
let decoded = ''
/** A name as text, dots between labels, built as bytes and made into one string: a byte escaped takes at most 4. */
const scratch = Buffer.allocUnsafe(MAX_NAME * 4)
const BACKSLASH = 0x5c
const DOT = 0x2e

/**
 * Writes label byte `b` into scratch at `at` as Cilium's DNS library prints it: `.` and `\` as
 * `\.` and `\\`, other printable ASCII as it is (letters in lower case), the rest as `\DDD`;
 * returns where the next goes.
 */
function putLabelByte(b: number, at: number): number {
  if (b === DOT || b === BACKSLASH) {
    scratch[at] = BACKSLASH
    scratch[at + 1] = b
    return at + 2
  }
  if (b > 0x20 && b < 0x7f) {
    scratch[at] = b >= 0x41 && b <= 0x5a ? b | 0x20 : b
    return at + 1
  }
  scratch[at] = BACKSLASH
  scratch[at + 1] = 0x30 + Math.floor(b / 100)
  scratch[at + 2] = 0x30 + (Math.floor(b / 10) % 10)
  scratch[at + 3] = 0x30 + (b % 10)
  return at + 4
}

/**
 * Reads the name at `offset`; returns where the bytes that follow it start. With `decode` the
 * name is left in `decoded`. Pointers must point before the labels they end, so there are no loops.
 */
function readName(msg: Buffer, offset: number, end: number, decode: boolean): number {
  let next = -1
  let bound = offset
  let total = 0
  let length = 0
  for (;;) {
    if (offset >= end) throw new DnsWireError('name runs past the end of the message')
    const len = msg[offset]!
    if (len === 0) {
      if (next < 0) next = offset + 1
      break
    }
    if ((len & 0xc0) === 0xc0) {
      if (offset + 1 >= end) throw new DnsWireError('compression pointer runs past the end of the message')
      const target = ((len & 0x3f) << 8) | msg[offset + 1]!
      if (target >= bound) throw new DnsWireError('compression pointer does not point back')
      if (next < 0) next = offset + 2
      offset = bound = target
      continue
    }
    if ((len & 0xc0) !== 0) throw new DnsWireError(`bad label type 0x${len.toString(16)}`)
    total += len + 1
    if (total >= MAX_NAME) throw new DnsWireError('name longer than 255 bytes')
    if (offset + 1 + len > end) throw new DnsWireError('label runs past the end of the message')
    if (decode) {
      if (length > 0) scratch[length++] = DOT
      for (let i = offset + 1; i <= offset + len; i++) length = putLabelByte(msg[i]!, length)
    }
    offset += 1 + len
  }
  if (decode) decoded = scratch.toString('latin1', 0, length)
  return next
}

/**
 * How each type's data is laid out (RFC 1035 3.3, and the RFCs of the later types): byte counts,
 * names, character-strings (`string`; `strings`: one or more to the end), `options` (code, length,
 * value: EDNS options, SVCB parameters) or `bitmaps` (NSEC type windows) to the end, a CAA tag, or
 * `rest` (anything). Types not here are opaque.
 */
type Part = number | 'name' | 'string' | 'strings' | 'options' | 'bitmaps' | 'tag' | 'rest'
const ONE_NAME: Part[] = ['name']
const PREFERENCE_NAME: Part[] = [2, 'name']
const KEY: Part[] = [4, 'rest']
const SVCB: Part[] = [2, 'name', 'options']
const LAYOUTS: Record<number, Part[]> = {
  1: [4],
  2: ONE_NAME,
  3: ONE_NAME,
  4: ONE_NAME,
  5: ONE_NAME,
  6: ['name', 'name', 20],
  7: ONE_NAME,
  8: ONE_NAME,
  9: ONE_NAME,
  12: ONE_NAME,
  13: ['string', 'string'],
  14: ['name', 'name'],
  15: PREFERENCE_NAME,
  16: ['strings'],
  17: ['name', 'name'],
  18: PREFERENCE_NAME,
  21: PREFERENCE_NAME,
  26: [2, 'name', 'name'],
  28: [16],
  33: [6, 'name'],
  35: [4, 'string', 'string', 'string', 'name'],
  36: PREFERENCE_NAME,
  39: ONE_NAME,
  41: ['options'],
  43: KEY,
  44: [2, 'rest'],
  46: [18, 'name', 'rest'],
  47: ['name', 'bitmaps'],
  48: KEY,
  52: [3, 'rest'],
  59: KEY,
  60: KEY,
  64: SVCB,
  65: SVCB,
  99: ['strings'],
  257: [1, 'tag', 'rest'],
}

const shortData = (type: number): DnsWireError =>
  new DnsWireError(`${typeName(type)} record data shorter than its contents`)

/** Checks a record's data (`at` to `end`) against its type's layout; throws DnsWireError naming what is wrong. */
function checkData(msg: Buffer, type: number, at: number, end: number): void {
  const layout = LAYOUTS[type]
  if (layout === undefined) return
  for (const part of layout) {
    if (typeof part === 'number') at += part
    else if (part === 'name') at = readName(msg, at, end, false)
    else if (part === 'rest') at = end
    else if (part === 'string' || part === 'tag') {
      if (at >= end) throw shortData(type)
      if (part === 'tag' && (msg[at] === 0 || msg[at]! > 15))
        throw new DnsWireError(`${typeName(type)} record with a tag of ${msg[at]} bytes`)
      at += 1 + msg[at]!
    } else {
      // strings: at least one; options, bitmaps: any number, each filling its own length.
      if (part === 'strings' && at === end) throw new DnsWireError(`${typeName(type)} record without a string`)
      while (at < end) {
        if (part === 'strings') at += 1 + msg[at]!
        else if (part === 'options') at += at + 4 <= end ? 4 + msg.readUInt16BE(at + 2) : 4
        else {
          const length = at + 2 <= end ? msg[at + 1]! : 0
          if (length < 1 || length > 32) throw new DnsWireError(`${typeName(type)} record with a malformed type bitmap`)
          at += 2 + length
        }
      }
    }
    if (at > end) throw shortData(type)
  }
  if (at !== end) throw new DnsWireError(`${typeName(type)} record data longer than its contents`)
}

/** Walks `count` resource records from `offset` (their data checked against its type, if `checked`); returns where they end. */
function skipRecords(msg: Buffer, offset: number, end: number, count: number, checked = false): number {
  for (let i = 0; i < count; i++) {
    offset = readName(msg, offset, end, false)
    if (offset + 10 > end) throw new DnsWireError('record header runs past the end of the message')
    const data = offset + 10
    offset = data + msg.readUInt16BE(offset + 8)
    if (offset > end) throw new DnsWireError('record data runs past the end of the message')
    if (checked) checkData(msg, msg.readUInt16BE(data - 10), data, offset)
  }
  return offset
}

function header(end: number): void {
  if (end < HEADER_BYTES) throw new DnsWireError(`${end} bytes: shorter than a header`)
}

/** Reads and checks a whole query (the first `end` bytes of `msg`). Throws DnsWireError. */
export function readQuery(msg: Buffer, end = msg.length): QueryInfo {
  header(end)
  const flags = msg.readUInt16BE(2)
  const questions = msg.readUInt16BE(4)
  let offset = HEADER_BYTES
  let name = ''
  let type = 0
  let questionEnd = HEADER_BYTES
  for (let i = 0; i < questions; i++) {
    offset = readName(msg, offset, end, i === 0)
    if (offset + 4 > end) throw new DnsWireError('question runs past the end of the message')
    if (i === 0) {
      name = decoded
      type = msg.readUInt16BE(offset)
      questionEnd = offset + 4
    }
    offset += 4
  }
  skipRecords(msg, offset, end, msg.readUInt16BE(6) + msg.readUInt16BE(8) + msg.readUInt16BE(10))
  return { response: (flags & 0x8000) !== 0, opcode: (flags >> 11) & 0xf, questions, name, type, questionEnd }
}

function ipv6(msg: Buffer, at: number): string {
  const groups: number[] = []
  for (let i = 0; i < 16; i += 2) groups.push(msg.readUInt16BE(at + i))
  // RFC 5952: the longest run of two or more zero groups becomes '::'.
  let best = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) [best, bestLen] = [i, j - i]
    i = j === i ? i + 1 : j
  }
  const hex = groups.map((g) => g.toString(16))
  return best < 0 ? hex.join(':') : `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`
}

/**
 * Reads and checks a whole answer (the first `end` bytes of `msg`), every record's data against
 * its type's layout: pushes its answer section's records onto `out` (A, AAAA and CNAME with their
 * data; others with name, type and TTL only).
 * Throws DnsWireError, having pushed nothing, if any part of the message is malformed.
 */
export function readAnswers(msg: Buffer, out: AnswerRecord[], end = msg.length): void {
  header(end)
  let offset = HEADER_BYTES
  for (let i = msg.readUInt16BE(4); i > 0; i--) {
    offset = readName(msg, offset, end, false) + 4
    if (offset > end) throw new DnsWireError('question runs past the end of the message')
  }
  const first = out.length
  // Records mostly name the question by a pointer to it (offset 12): decoded once for all of them.
  let question: string | null = null
  try {
    for (let i = msg.readUInt16BE(6); i > 0; i--) {
      let name: string
      if (msg.readUInt16BE(4) > 0 && offset + 1 < end && msg[offset] === 0xc0 && msg[offset + 1] === HEADER_BYTES) {
        if (question === null) {
          readName(msg, HEADER_BYTES, end, true)
          question = decoded
        }
        name = question
        offset += 2
      } else {
        offset = readName(msg, offset, end, true)
        name = decoded
      }
      if (offset + 10 > end) throw new DnsWireError('record header runs past the end of the message')
      const type = msg.readUInt16BE(offset)
      const ttl = msg.readUInt32BE(offset + 4)
      const rdlength = msg.readUInt16BE(offset + 8)
      const data = offset + 10
      offset = data + rdlength
      if (offset > end) throw new DnsWireError('record data runs past the end of the message')
      if (type === 1) {
        if (rdlength !== 4) throw new DnsWireError(`A record of ${rdlength} bytes`)
        out.push({ name, type: 'A', ttl, data: `${msg[data]}.${msg[data + 1]}.${msg[data + 2]}.${msg[data + 3]}` })
      } else if (type === 28) {
        if (rdlength !== 16) throw new DnsWireError(`AAAA record of ${rdlength} bytes`)
        out.push({ name, type: 'AAAA', ttl, data: ipv6(msg, data) })
      } else if (type === 5) {
        if (readName(msg, data, offset, true) !== offset) throw new DnsWireError('CNAME name does not fill its record')
        out.push({ name, type: 'CNAME', ttl, data: decoded })
      } else {
        checkData(msg, type, data, offset)
        out.push({ name, type: typeName(type), ttl })
      }
    }
    skipRecords(msg, offset, end, msg.readUInt16BE(8) + msg.readUInt16BE(10), true)
  } catch (e) {
    out.length = first
    throw e
  }
}
