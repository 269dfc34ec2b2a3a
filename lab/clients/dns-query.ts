// A DNS query as the lab's clients send it: one question, type A, class IN, recursion desired.

/** A query for `name` (a trailing dot or none) with id `id`. */
export function dnsQuery(id: number, name: string): Buffer {
  const labels = name.split('.').filter(Boolean)
  const q = Buffer.alloc(12 + labels.reduce((n, l) => n + l.length + 1, 1) + 4)
  q.writeUInt16BE(id, 0)
  q.writeUInt16BE(0x0100, 2) // RD
  q.writeUInt16BE(1, 4)
  let at = 12
  for (const l of labels) {
    q[at++] = l.length
    at += q.write(l, at, 'ascii')
  }
  q[at++] = 0
  q.writeUInt16BE(1, at) // A
  q.writeUInt16BE(1, at + 2) // IN
  return q
}
