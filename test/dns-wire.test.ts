// DNS messages read from their bytes: what dns-packet encodes reads back the same (names in lower
// case, types, A/AAAA/CNAME records, with compression), and malformed messages throw DnsWireError without
// leaving anything read behind.

import dnsPacket from 'dns-packet'
import fc from 'fast-check'
import t from 'tap'
import { DnsWireError, readAnswers, readQuery } from '../proxy/dns/dns-wire.js'
import type { AnswerRecord } from '../proxy/dns/fqdn-cache.js'

const labelArb = fc.stringMatching(/^[a-zA-Z0-9_-]{1,20}$/)
const nameArb = fc.array(labelArb, { minLength: 1, maxLength: 5 }).map((l) => l.join('.'))
const ipArb = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((b) => b.join('.'))

t.test('queries dns-packet encodes read back: first question, type, counts (with an EDNS record)', async () => {
  fc.assert(
    fc.property(nameArb, fc.constantFrom('A', 'AAAA', 'MX', 'TXT', 'CNAME'), fc.integer({ min: 0, max: 0xffff }), (name, type, id) => {
      const msg = dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }], additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer] })
      const q = readQuery(msg)
      return q.name === name.toLowerCase() && q.questions === 1 && !q.response && q.opcode === 0 && q.questionEnd === 12 + name.length + 2 + 4 && q.type === msg.readUInt16BE(q.questionEnd - 4)
    }),
    { numRuns: 300 },
  )
})

t.test('answers read back as dns-packet decodes them: CNAME chains, A and AAAA, compressed names', async (t) => {
  fc.assert(
    fc.property(nameArb, nameArb, fc.array(ipArb, { minLength: 1, maxLength: 4 }), fc.nat(86400), (qname, target, ips, ttl) => {
      const answers: dnsPacket.Answer[] = [{ type: 'CNAME', name: qname, ttl, data: target }, ...ips.map((ip) => ({ type: 'A' as const, name: target, ttl, data: ip })), { type: 'AAAA', name: target, ttl, data: '2001:db8::1' }]
      const msg = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: qname }], answers })
      const out: AnswerRecord[] = []
      readAnswers(msg, out)
      const lower = (d: unknown): unknown => (typeof d === 'string' ? d.toLowerCase() : d)
      const want = dnsPacket.decode(msg).answers!.map((a) => ({ name: a.name.toLowerCase(), type: a.type, ttl: (a as { ttl?: number }).ttl, data: lower((a as { data?: unknown }).data) }))
      t.same(out, want)
      return true
    }),
    { numRuns: 200 },
  )
})

t.test('IPv6 addresses are written the short way (RFC 5952)', async (t) => {
  for (const ip of ['2001:db8::1', '::1', '::', 'fe80::1:2', '2001:db8:0:1:1:1:1:1', '1::', '2001:0:0:1::1']) {
    const out: AnswerRecord[] = []
    readAnswers(dnsPacket.encode({ type: 'response', id: 1, answers: [{ type: 'AAAA', name: 'x', ttl: 1, data: ip }] }), out)
    t.equal(out[0]!.data, ip, ip)
  }
})

t.test('label bytes that are not plain come out escaped, so no label reads as two; letters in lower case', async (t) => {
  const msg = Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, ...Buffer.from('cantina.emp'), 1, 0x5c, 2, 0x00, 0x7f, 6, ...Buffer.from('EMPIRE'), 0, 0, 1, 0, 1])
  t.equal(readQuery(msg).name, 'cantina\\.emp.\\\\.\\000\\127.empire')
})

t.test('records that point at an escaped question name, alone or after labels of their own, read it escaped', async (t) => {
  const question = [11, ...Buffer.from('cantina.emp'), 6, ...Buffer.from('EMPIRE'), 0, 0, 1, 0, 1]
  const rr = (name: number[], last: number) => [...name, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, last]
  const msg = Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0, ...question, ...rr([0xc0, 12], 3), ...rr([1, 0x78, 0xc0, 12], 4), ...rr([0xc0, 12], 5)])
  const out: AnswerRecord[] = []
  readAnswers(msg, out)
  t.same(
    out.map((r) => `${r.name} ${r.data as string}`),
    ['cantina\\.emp.empire 192.0.2.3', 'x.cantina\\.emp.empire 192.0.2.4', 'cantina\\.emp.empire 192.0.2.5'],
  )
})

/** A query for cantina.empire A with its bytes changed by `edit`. */
function query(edit: (b: Buffer) => Buffer): Buffer {
  return edit(dnsPacket.encode({ type: 'query', id: 7, questions: [{ type: 'A', name: 'cantina.empire' }] }))
}

const MALFORMED: Array<[string, Buffer, RegExp]> = [
  ['empty', Buffer.alloc(0), /shorter than a header/],
  ['11 bytes', Buffer.alloc(11), /shorter than a header/],
  ['question count with no question', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), /past the end/],
  ['two questions counted, one there', query((b) => (b.writeUInt16BE(2, 4), b)), /past the end/],
  ['answer counted, none there', query((b) => (b.writeUInt16BE(1, 6), b)), /past the end/],
  ['additional counted, none there', query((b) => (b.writeUInt16BE(1, 10), b)), /past the end/],
  ['label longer than the message', query((b) => ((b[12] = 60), b)), /label runs past/],
  ['question type cut off', query((b) => b.subarray(0, b.length - 3)), /question runs past/],
  ['name without its end', query((b) => b.subarray(0, 12 + 8)), /past the end/],
  ['pointer to itself', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]), /does not point back/],
  ['pointer forward', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 20, 0, 1, 0, 1, 0, 0, 1, 0, 0]), /does not point back/],
  ['pointer loop through two names', Buffer.from([0, 1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 0x61, 0xc0, 18, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1]), /does not point back/],
  ['pointer cut in half', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0]), /pointer runs past/],
  ['label type 0x40', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 0x61, 0, 0, 1, 0, 1]), /bad label type/],
  ['label type 0x80', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x81, 0x61, 0, 0, 1, 0, 1]), /bad label type/],
  ['name of 256 bytes', Buffer.concat([Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.concat(Array.from({ length: 5 }, () => Buffer.from([50, ...Buffer.alloc(50, 0x61)]))), Buffer.from([0, 0, 1, 0, 1])]), /longer than 255/],
  ['record data past the end', Buffer.concat([query((b) => (b.writeUInt16BE(1, 10), b)), Buffer.from([0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 9, 1])]), /record data runs past/],
  ['record header cut off', Buffer.concat([query((b) => (b.writeUInt16BE(1, 10), b)), Buffer.from([0, 0, 41, 4])]), /record header runs past/],
]

t.test('malformed messages throw DnsWireError with what is wrong', async (t) => {
  t.ok(MALFORMED.length >= 18)
  for (const [what, msg, reason] of MALFORMED) t.throws(() => readQuery(msg), { constructor: DnsWireError, message: reason }, what)
})

t.test('a malformed answer leaves nothing read behind', async (t) => {
  const good = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'a.empire' }], answers: [{ type: 'A', name: 'a.empire', ttl: 5, data: '192.0.2.3' }] })
  const out: AnswerRecord[] = [{ name: 'kept', type: 'A' }]
  readAnswers(good, out)
  t.equal(out.length, 2)
  const cut = Buffer.from(good)
  cut.writeUInt16BE(2, 6) // a second answer that is not there
  t.throws(() => readAnswers(cut, out), { constructor: DnsWireError, message: /name runs past the end/ })
  t.equal(out.length, 2, 'the first answer of the bad message was taken back')
  const shortA = Buffer.from(good)
  shortA.writeUInt16BE(3, shortA.length - 6) // rdlength 3 for an A record
  t.throws(() => readAnswers(shortA.subarray(0, shortA.length - 1), out), /A record of 3 bytes/)
})
