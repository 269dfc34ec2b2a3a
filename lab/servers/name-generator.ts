// A DNS server for names that churn (bench:fqdn, the toFQDNs scale tests): every name under its
// zone exists, and every answer gives it the next address of a range, with a short TTL, as an
// object store or a CDN rotates its addresses. Other names and types are answered NXDOMAIN or
// with no record; what does not parse as a query is dropped.

import { createSocket, type Socket } from 'node:dgram'
import { parsePrefix } from '../../policy/cidr.js'
import { HEADER_BYTES, readQuery } from '../../proxy/dns/dns-wire.js'

export interface NameGeneratorOptions {
  port: number
  /** Names under it are answered (`n1.scale`, anything). */
  zone: string
  /** The addresses answers take in turn. */
  range: string
  ttlSeconds: number
}

const TYPE_A = 1
const NXDOMAIN = 3

/** Answers on 0.0.0.0:port until closed. */
export function startNameGenerator(o: NameGeneratorOptions): Promise<Socket> {
  const range = parsePrefix(o.range)
  if (typeof range === 'string') throw new Error(`range: ${range}`)
  const size = 2 ** (32 - range.len)
  const suffix = `.${o.zone}`
  let next = 0
  const socket = createSocket('udp4')
  socket.on('message', (msg, from) => {
    let q: ReturnType<typeof readQuery>
    try {
      q = readQuery(msg)
    } catch {
      return
    }
    if (q.response || q.questions !== 1) return
    const known = q.name.endsWith(suffix)
    const withAddress = known && q.type === TYPE_A
    const out = Buffer.alloc(q.questionEnd + (withAddress ? 16 : 0))
    msg.copy(out, 0, 0, q.questionEnd)
    out[2] = (msg[2]! & 0x01) | 0x84 // QR, AA, RD as asked
    out[3] = known ? 0 : NXDOMAIN
    out.writeUInt16BE(1, 4) // one question
    out.writeUInt16BE(withAddress ? 1 : 0, 6)
    out.writeUInt32BE(0, 8) // no authority, no additional records
    if (withAddress) {
      let at = q.questionEnd
      at = out.writeUInt16BE(0xc000 | HEADER_BYTES, at) // the question's name
      at = out.writeUInt16BE(TYPE_A, at)
      at = out.writeUInt16BE(1, at) // IN
      at = out.writeUInt32BE(o.ttlSeconds, at)
      at = out.writeUInt16BE(4, at)
      out.writeUInt32BE((range.addr + (next++ % size)) >>> 0, at)
    }
    socket.send(out, from.port, from.address)
  })
  return new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.bind({ port: o.port, address: '0.0.0.0' }, () => resolve(socket))
  })
}
