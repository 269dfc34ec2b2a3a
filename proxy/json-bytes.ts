// JSON text written straight into bytes (a log chunk), for the flow lines written per request
// and per query: building the line as a string and encoding it cost more than the rest of the
// line (joining pieces, then flattening and encoding the joined string). Each function writes at
// `at` and returns where it stopped; the caller has made room (the *Room functions say how much).

/** Bytes `s` may take as a JSON string: JSON.stringify escapes a character in at most 6. */
export function stringRoom(s: string): number {
  return s.length * 6 + 2
}

/** `s` as a JSON string: plain ASCII byte by byte, anything needing escapes or UTF-8 through JSON.stringify. */
export function putString(buf: Buffer, at: number, s: string): number {
  let o = at
  buf[o++] = 0x22
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) return at + buf.write(JSON.stringify(s), at)
    buf[o++] = c
  }
  buf[o++] = 0x22
  return o
}

/**
 * A string of one-byte characters, byte by byte: text known to be JSON already and ASCII (keys,
 * numbers' text, names from fixed tables); also latin1 text such as HTTP heads (http1-writer.ts).
 */
export function putAscii(buf: Buffer, at: number, s: string): number {
  for (let i = 0; i < s.length; i++) buf[at + i] = s.charCodeAt(i)
  return at + s.length
}

/** Room for putInt's and putMs's numbers. */
export const NUMBER_ROOM = 24

/** A whole number. */
export function putInt(buf: Buffer, at: number, n: number): number {
  // Up to 15 digits (times in ms, identities, statuses) the arithmetic below is exact.
  if (!(n >= 0 && n < 1e15 && n === Math.floor(n))) return putAscii(buf, at, String(n))
  let digits = 1
  for (let p = 10; p <= n; p *= 10) digits++
  for (let i = at + digits - 1; i >= at; i--) {
    const q = Math.floor(n / 10)
    buf[i] = 0x30 + n - q * 10
    n = q
  }
  return at + digits
}

/**
 * A duration in ms with at most 3 decimals, as String(Math.round(ms * 1000) / 1000) prints it,
 * made from whole numbers (printing a fraction costs more than the rest of a line's numbers).
 */
export function putMs(buf: Buffer, at: number, ms: number): number {
  const us = Math.round(ms * 1000)
  if (!(us >= 0 && us < 1e15)) return putAscii(buf, at, String(us / 1000))
  const whole = Math.floor(us / 1000)
  const frac = us - whole * 1000
  at = putInt(buf, at, whole)
  if (frac === 0) return at
  buf[at++] = 0x2e
  const d1 = Math.floor(frac / 100)
  const d2 = Math.floor(frac / 10) - d1 * 10
  const d3 = frac % 10
  buf[at++] = 0x30 + d1
  if (d2 === 0 && d3 === 0) return at
  buf[at++] = 0x30 + d2
  if (d3 !== 0) buf[at++] = 0x30 + d3
  return at
}
