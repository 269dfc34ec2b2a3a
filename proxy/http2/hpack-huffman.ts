// HPACK's static Huffman code (RFC 7541 5.2, Appendix B). The code is canonical, so the code
// lengths are all it takes: each symbol's code follows from them (shorter codes first, equal
// lengths in symbol order). Decoding runs a nibble at a time over a table built from that code
// at load (the tree's 256 inner nodes x 16 nibbles), with no allocation and no exception: bad
// input is a return value.

/** Code length in bits of each symbol: the bytes 0-255, then EOS (256). */
const LENGTHS = [
  13,
  23,
  28,
  28,
  28,
  28,
  28,
  28,
  28,
  24,
  30,
  28,
  28,
  30,
  28,
  28,
  28,
  28,
  28,
  28,
  28,
  28,
  30,
  28,
  28,
  28,
  28,
  28,
  28,
  28,
  28,
  28, //   0- 31
  6,
  10,
  10,
  12,
  13,
  6,
  8,
  11,
  10,
  10,
  8,
  11,
  8,
  6,
  6,
  6,
  5,
  5,
  5,
  6,
  6,
  6,
  6,
  6,
  6,
  6,
  7,
  8,
  15,
  6,
  12,
  10, //                            32- 63
  13,
  6,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  7,
  8,
  7,
  8,
  13,
  19,
  13,
  14,
  6, //                                  64- 95
  15,
  5,
  6,
  5,
  6,
  5,
  6,
  6,
  6,
  5,
  7,
  7,
  6,
  6,
  6,
  5,
  6,
  7,
  6,
  5,
  5,
  6,
  7,
  7,
  7,
  7,
  7,
  15,
  11,
  14,
  13,
  28, //                                 96-127
  20,
  22,
  20,
  20,
  22,
  22,
  22,
  23,
  22,
  23,
  23,
  23,
  23,
  23,
  24,
  23,
  24,
  24,
  22,
  23,
  24,
  23,
  23,
  23,
  23,
  21,
  22,
  23,
  22,
  23,
  23,
  24, // 128-159
  22,
  21,
  20,
  22,
  22,
  23,
  23,
  21,
  23,
  22,
  22,
  24,
  21,
  22,
  23,
  23,
  21,
  21,
  22,
  21,
  23,
  22,
  23,
  23,
  20,
  22,
  22,
  22,
  23,
  22,
  22,
  23, // 160-191
  26,
  26,
  20,
  19,
  22,
  23,
  22,
  25,
  26,
  26,
  26,
  27,
  27,
  26,
  24,
  25,
  19,
  21,
  26,
  27,
  27,
  26,
  27,
  24,
  21,
  21,
  26,
  26,
  28,
  27,
  27,
  27, // 192-223
  20,
  24,
  20,
  21,
  22,
  21,
  21,
  23,
  22,
  22,
  25,
  25,
  24,
  24,
  26,
  23,
  26,
  27,
  26,
  26,
  27,
  27,
  27,
  27,
  27,
  28,
  27,
  27,
  27,
  27,
  27,
  26, // 224-255
  30, //                                                                                                                              EOS
]
const EOS = 256

/** Each symbol's code, right-aligned (at most 30 bits: a double holds them exactly). */
export const HUFFMAN_CODES: readonly number[] = (() => {
  const order = LENGTHS.map((_, s) => s).sort((a, b) => LENGTHS[a]! - LENGTHS[b]! || a - b)
  const codes = new Array<number>(LENGTHS.length)
  let code = 0
  let len = LENGTHS[order[0]!]!
  for (const s of order) {
    code *= 2 ** (LENGTHS[s]! - len)
    len = LENGTHS[s]!
    codes[s] = code++
  }
  return codes
})()
export const HUFFMAN_LENGTHS: readonly number[] = LENGTHS

// The decoding tree: node n's children at 2n (bit 0) and 2n+1 (bit 1); a child >= 0 is an
// inner node, a child < 0 the leaf of symbol -child-1. Node 0 is the root.
const children: number[] = [0, 0]
for (let s = 0; s <= EOS; s++) {
  let node = 0
  for (let i = LENGTHS[s]! - 1; i >= 0; i--) {
    const bit = Math.floor(HUFFMAN_CODES[s]! / 2 ** i) % 2
    if (i === 0) children[2 * node + bit] = -s - 1
    else {
      if (children[2 * node + bit] === 0) {
        children[2 * node + bit] = children.length / 2
        children.push(0, 0)
      }
      node = children[2 * node + bit]!
    }
  }
}
const INNER = children.length / 2

// Per inner node and nibble: the node reached, and the symbol completed on the way (the
// shortest code is 5 bits, so at most one), or EOS met (the input is invalid).
const NEXT = new Uint8Array(INNER * 16)
const SYMBOL = new Int16Array(INNER * 16).fill(-1)
const FAILS = new Uint8Array(INNER * 16)
/** Whether input may end at this node: reached from the last symbol by fewer than 8 one bits (padding, 5.2). */
const MAY_END = new Uint8Array(INNER)
for (let n = 0, node = 0; n < 8; n++) {
  MAY_END[node] = 1
  node = children[2 * node + 1]!
}
for (let node = 0; node < INNER; node++) {
  for (let nibble = 0; nibble < 16; nibble++) {
    let at = node
    const i = node * 16 + nibble
    for (let b = 3; b >= 0; b--) {
      const child = children[2 * at + ((nibble >> b) & 1)]!
      if (child >= 0) at = child
      else if (-child - 1 === EOS) FAILS[i] = 1
      else {
        SYMBOL[i] = -child - 1
        at = 0
      }
    }
    NEXT[i] = at
  }
}

/** The most bytes `n` Huffman-coded bytes can decode to (the shortest code is 5 bits). */
export function huffmanDecodedBound(n: number): number {
  return Math.ceil((n * 8) / 5)
}

/**
 * Decodes `src[start, end)` into `out` from `at`; returns where the output ends, or -1 when the
 * input is not a valid code (EOS, padding of 8 bits or more, padding not all ones). `out` must
 * have huffmanDecodedBound(end - start) bytes free.
 */
export function huffmanDecode(src: Uint8Array, start: number, end: number, out: Uint8Array, at: number): number {
  let node = 0
  for (let p = start; p < end; p++) {
    const byte = src[p]!
    let i = node * 16 + (byte >> 4)
    if (FAILS[i] === 1) return -1
    if (SYMBOL[i] >= 0) out[at++] = SYMBOL[i]!
    i = NEXT[i]! * 16 + (byte & 15)
    if (FAILS[i] === 1) return -1
    if (SYMBOL[i] >= 0) out[at++] = SYMBOL[i]!
    node = NEXT[i]!
  }
  return MAY_END[node] === 1 ? at : -1
}

/** How many bytes the Huffman coding of `s` (as latin1) takes. */
export function huffmanEncodedLength(s: string): number {
  let bits = 0
  for (let i = 0; i < s.length; i++) bits += LENGTHS[s.charCodeAt(i) & 0xff]!
  return Math.ceil(bits / 8)
}

/** Writes the Huffman coding of `s` (as latin1) at `out[at]`, padded with ones; returns where it ends. */
export function huffmanEncode(s: string, out: Uint8Array, at: number): number {
  // Bits wait in `acc` (at most 7 + 30 of them: kept under 2^53 by flushing whole bytes).
  let acc = 0
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const sym = s.charCodeAt(i) & 0xff
    const len = LENGTHS[sym]!
    acc = acc * 2 ** len + HUFFMAN_CODES[sym]!
    n += len
    while (n >= 8) {
      n -= 8
      const shift = 2 ** n
      const byte = Math.floor(acc / shift)
      out[at++] = byte
      acc -= byte * shift
    }
  }
  if (n > 0) out[at++] = (acc << (8 - n)) | (0xff >> n)
  return at
}
