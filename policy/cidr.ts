// IPv4 prefixes as numbers, for CIDR selectors and the ipcache.

export interface Prefix {
  /** Network address as an unsigned 32-bit integer, host bits zero. */
  addr: number
  len: number
}

export function parseIPv4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s)
  if (!m) return null
  const parts = m.slice(1).map(Number)
  if (parts.some((p) => p > 255)) return null
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0
}

export function formatIPv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`
}

function mask(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0
}

/** Parses `a.b.c.d/len` (or a bare address as /32); host bits are cleared. Error text or prefix. */
export function parsePrefix(s: string): Prefix | string {
  if (s.includes(':')) return `'${s}' is IPv6, which is not supported yet (IPv4 only)`
  const [ip, lenStr, extra] = s.split('/')
  const addr = parseIPv4(ip ?? '')
  if (addr === null || extra !== undefined) return `'${s}' is not an IPv4 address or CIDR`
  const len = lenStr === undefined ? 32 : /^\d{1,2}$/.test(lenStr) ? Number(lenStr) : NaN
  if (!(len >= 0 && len <= 32)) return `'${s}' has an invalid prefix length (0-32)`
  return { addr: (addr & mask(len)) >>> 0, len }
}

export function formatPrefix(p: Prefix): string {
  return `${formatIPv4(p.addr)}/${p.len}`
}

/** Whether `inner` lies entirely inside `outer`. */
export function prefixContains(outer: Prefix, inner: Prefix): boolean {
  return inner.len >= outer.len && (inner.addr & mask(outer.len)) >>> 0 === outer.addr
}
