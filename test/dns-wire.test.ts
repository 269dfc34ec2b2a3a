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
    fc.property(
      nameArb,
      fc.constantFrom('A', 'AAAA', 'MX', 'TXT', 'CNAME'),
      fc.integer({ min: 0, max: 0xffff }),
      (name, type, id) => {
        const msg = dnsPacket.encode({
          type: 'query',
          id,
          flags: dnsPacket.RECURSION_DESIRED,
          questions: [{ type, name }],
          additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer],
        })
        const q = readQuery(msg)
        return (
          q.name === name.toLowerCase() &&
          q.questions === 1 &&
          !q.response &&
          q.opcode === 0 &&
          q.questionEnd === 12 + name.length + 2 + 4 &&
          q.type === msg.readUInt16BE(q.questionEnd - 4)
        )
      },
    ),
    { numRuns: 300 },
  )
})

t.test('answers read back as dns-packet decodes them: CNAME chains, A and AAAA, compressed names', async (t) => {
  fc.assert(
    fc.property(
      nameArb,
      nameArb,
      fc.array(ipArb, { minLength: 1, maxLength: 4 }),
      fc.nat(86400),
      (qname, target, ips, ttl) => {
        const answers: dnsPacket.Answer[] = [
          { type: 'CNAME', name: qname, ttl, data: target },
          ...ips.map((ip) => ({ type: 'A' as const, name: target, ttl, data: ip })),
          { type: 'AAAA', name: target, ttl, data: '2001:db8::1' },
        ]
        const msg = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: qname }], answers })
        const out: AnswerRecord[] = []
        readAnswers(msg, out)
        const lower = (d: unknown): unknown => (typeof d === 'string' ? d.toLowerCase() : d)
        const want = dnsPacket.decode(msg).answers!.map((a) => ({
          name: a.name.toLowerCase(),
          type: a.type,
          ttl: (a as { ttl?: number }).ttl,
          data: lower((a as { data?: unknown }).data),
        }))
        t.same(out, want)
        return true
      },
    ),
    { numRuns: 200 },
  )
})

t.test('IPv6 addresses are written the short way (RFC 5952)', async (t) => {
  for (const ip of ['2001:db8::1', '::1', '::', 'fe80::1:2', '2001:db8:0:1:1:1:1:1', '1::', '2001:0:0:1::1']) {
    const out: AnswerRecord[] = []
    readAnswers(
      dnsPacket.encode({ type: 'response', id: 1, answers: [{ type: 'AAAA', name: 'x', ttl: 1, data: ip }] }),
      out,
    )
    t.equal(out[0]!.data, ip, ip)
  }
})

t.test(
  'label bytes that are not plain come out escaped, so no label reads as two; letters in lower case',
  async (t) => {
    const msg = Buffer.from([
      0,
      1,
      1,
      0,
      0,
      1,
      0,
      0,
      0,
      0,
      0,
      0,
      11,
      ...Buffer.from('cantina.emp'),
      1,
      0x5c,
      2,
      0x00,
      0x7f,
      6,
      ...Buffer.from('EMPIRE'),
      0,
      0,
      1,
      0,
      1,
    ])
    t.equal(readQuery(msg).name, 'cantina\\.emp.\\\\.\\000\\127.empire')
  },
)

t.test(
  'records that point at an escaped question name, alone or after labels of their own, read it escaped',
  async (t) => {
    const question = [11, ...Buffer.from('cantina.emp'), 6, ...Buffer.from('EMPIRE'), 0, 0, 1, 0, 1]
    const rr = (name: number[], last: number) => [...name, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, last]
    const msg = Buffer.from([
      0,
      1,
      0x81,
      0x80,
      0,
      1,
      0,
      3,
      0,
      0,
      0,
      0,
      ...question,
      ...rr([0xc0, 12], 3),
      ...rr([1, 0x78, 0xc0, 12], 4),
      ...rr([0xc0, 12], 5),
    ])
    const out: AnswerRecord[] = []
    readAnswers(msg, out)
    t.same(
      out.map((r) => `${r.name} ${r.data as string}`),
      ['cantina\\.emp.empire 192.0.2.3', 'x.cantina\\.emp.empire 192.0.2.4', 'cantina\\.emp.empire 192.0.2.5'],
    )
  },
)

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
  [
    'pointer forward',
    Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 20, 0, 1, 0, 1, 0, 0, 1, 0, 0]),
    /does not point back/,
  ],
  [
    'pointer loop through two names',
    Buffer.from([0, 1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 0x61, 0xc0, 18, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1]),
    /does not point back/,
  ],
  ['pointer cut in half', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0]), /pointer runs past/],
  ['label type 0x40', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 0x61, 0, 0, 1, 0, 1]), /bad label type/],
  ['label type 0x80', Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x81, 0x61, 0, 0, 1, 0, 1]), /bad label type/],
  [
    'name of 256 bytes',
    Buffer.concat([
      Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
      Buffer.concat(Array.from({ length: 5 }, () => Buffer.from([50, ...Buffer.alloc(50, 0x61)]))),
      Buffer.from([0, 0, 1, 0, 1]),
    ]),
    /longer than 255/,
  ],
  [
    'record data past the end',
    Buffer.concat([query((b) => (b.writeUInt16BE(1, 10), b)), Buffer.from([0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 9, 1])]),
    /record data runs past/,
  ],
  [
    'record header cut off',
    Buffer.concat([query((b) => (b.writeUInt16BE(1, 10), b)), Buffer.from([0, 0, 41, 4])]),
    /record header runs past/,
  ],
]

t.test('malformed messages throw DnsWireError with what is wrong', async (t) => {
  t.ok(MALFORMED.length >= 18)
  for (const [what, msg, reason] of MALFORMED)
    t.throws(() => readQuery(msg), { constructor: DnsWireError, message: reason }, what)
})

t.test('a malformed answer leaves nothing read behind', async (t) => {
  const good = dnsPacket.encode({
    type: 'response',
    id: 1,
    questions: [{ type: 'A', name: 'a.empire' }],
    answers: [{ type: 'A', name: 'a.empire', ttl: 5, data: '192.0.2.3' }],
  })
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

/** An answer to `a.empire` A holding one record of `type` with `data` (its length right, its content as given), in `section`. */
function withRecord(type: number, data: number[], section: 'answer' | 'authority' | 'additional' = 'answer'): Buffer {
  const head = Buffer.from([
    0,
    9,
    0x81,
    0x80,
    0,
    1,
    0,
    section === 'answer' ? 1 : 0,
    0,
    section === 'authority' ? 1 : 0,
    0,
    section === 'additional' ? 1 : 0,
  ])
  const question = Buffer.from([1, 0x61, 6, ...Buffer.from('empire'), 0, 0, 1, 0, 1])
  const rr = Buffer.from([
    0xc0,
    12,
    type >> 8,
    type & 0xff,
    0,
    1,
    0,
    0,
    0,
    60,
    data.length >> 8,
    data.length & 0xff,
    ...data,
  ])
  return Buffer.concat([head, question, rr])
}
const name = (s: string): number[] => [...s.split('.').flatMap((l) => [l.length, ...Buffer.from(l)]), 0]
const str = (s: string): number[] => [s.length, ...Buffer.from(s)]

// Record data that does not fill, or overruns, what its type lays out (RFC 1035 3.3 and later RFCs).
const BAD_DATA: Array<[string, Buffer, RegExp]> = [
  ['NS name without its end', withRecord(2, [3, 0x61, 0x62, 0x63]), /runs past/],
  ['NS name and a byte more', withRecord(2, [...name('ns.empire'), 7]), /NS record data longer than its contents/],
  ['PTR label longer than the record', withRecord(12, [10, 0x61, 0x62, 0]), /label runs past/],
  ['MX of one byte', withRecord(15, [0]), /runs past|shorter/],
  ['MX with a byte after the name', withRecord(15, [0, 10, ...name('mx.empire'), 1]), /MX record data longer/],
  ['TXT string longer than the record', withRecord(16, [10, 0x61, 0x62]), /TXT record data shorter/],
  ['TXT without a string', withRecord(16, []), /TXT record without a string/],
  ['SRV of five bytes', withRecord(33, [0, 1, 0, 1, 0]), /runs past|shorter/],
  [
    'SOA with 19 bytes of numbers',
    withRecord(6, [...name('ns.empire'), ...name('h.empire'), ...Array<number>(19).fill(0)], 'authority'),
    /SOA record data shorter/,
  ],
  [
    'SOA with 21 bytes of numbers',
    withRecord(6, [...name('ns.empire'), ...name('h.empire'), ...Array<number>(21).fill(0)], 'authority'),
    /SOA record data longer/,
  ],
  ['HINFO with one string', withRecord(13, str('cpu')), /HINFO record data shorter/],
  ['CAA with an empty tag', withRecord(257, [0, 0, 0x61]), /CAA record with a tag of 0 bytes/],
  ['OPT option longer than the record', withRecord(41, [0, 10, 0, 8, 1, 2], 'additional'), /OPT record data shorter/],
  ['A of five bytes in the additional section', withRecord(1, [192, 0, 2, 1, 0], 'additional'), /A record data longer/],
  [
    'NSEC with an empty type bitmap',
    withRecord(47, [...name('b.empire'), 0, 0], 'authority'),
    /NSEC record with a malformed type bitmap/,
  ],
  ['HTTPS parameter past the record', withRecord(65, [0, 1, 0, 0, 1, 0, 9, 0x61]), /HTTPS record data shorter/],
  ['SVCB target name cut', withRecord(64, [0, 1, 5, 0x61]), /runs past/],
  [
    'NAPTR without its replacement',
    withRecord(35, [0, 1, 0, 1, ...str('u'), ...str('E2U'), ...str('!x!y!')]),
    /runs past/,
  ],
  ['RRSIG shorter than its fixed part', withRecord(46, Array<number>(17).fill(0)), /runs past|shorter/],
  ['DS of three bytes', withRecord(43, [0, 1, 8]), /DS record data shorter/],
]

t.test(`${BAD_DATA.length} answers with record data that does not match its type are refused whole`, async (t) => {
  for (const [what, msg, reason] of BAD_DATA) {
    const out: AnswerRecord[] = []
    t.throws(() => readAnswers(msg, out), { constructor: DnsWireError, message: reason }, what)
    t.equal(out.length, 0, `${what}: nothing read`)
  }
})

t.test('well-formed records of every laid-out type, as dns-packet writes them, are read', async (t) => {
  const answers = [
    { type: 'NS', name: 'a.empire', data: 'ns.empire' },
    { type: 'PTR', name: 'a.empire', data: 'p.empire' },
    { type: 'MX', name: 'a.empire', data: { preference: 10, exchange: 'mx.empire' } },
    { type: 'TXT', name: 'a.empire', data: ['one', 'two'] },
    { type: 'TXT', name: 'a.empire', data: '' },
    { type: 'SRV', name: 'a.empire', data: { priority: 1, weight: 2, port: 80, target: 's.empire' } },
    { type: 'HINFO', name: 'a.empire', data: { cpu: 'x', os: 'y' } },
    { type: 'CAA', name: 'a.empire', data: { flags: 0, tag: 'issue', value: 'ca.empire' } },
    {
      type: 'NAPTR',
      name: 'a.empire',
      data: { order: 1, preference: 2, flags: 'u', services: 'E2U', regexp: '!x!y!', replacement: '.' },
    },
    { type: 'DS', name: 'a.empire', data: { keyTag: 1, algorithm: 8, digestType: 2, digest: Buffer.alloc(32, 1) } },
    { type: 'DNSKEY', name: 'a.empire', data: { flags: 257, algorithm: 8, key: Buffer.alloc(64, 2) } },
    {
      type: 'RRSIG',
      name: 'a.empire',
      data: {
        typeCovered: 'A',
        algorithm: 8,
        labels: 2,
        originalTTL: 60,
        expiration: 1,
        inception: 0,
        keyTag: 1,
        signersName: 'empire',
        signature: Buffer.alloc(64, 3),
      },
    },
    { type: 'NSEC', name: 'a.empire', data: { nextDomain: 'b.empire', rrtypes: ['A', 'TXT', 'RRSIG'] } },
  ].map((a) => ({ ...a, ttl: 60 })) as dnsPacket.Answer[]
  const msg = dnsPacket.encode({
    type: 'response',
    id: 1,
    questions: [{ type: 'A', name: 'a.empire' }],
    answers,
    authorities: [
      {
        type: 'SOA',
        name: 'empire',
        ttl: 60,
        data: { mname: 'ns.empire', rname: 'h.empire', serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 5 },
      },
    ],
    additionals: [
      {
        type: 'OPT',
        name: '.',
        udpPayloadSize: 1232,
        extendedRcode: 0,
        ednsVersion: 0,
        flags: 0,
        flag_do: false,
        options: [{ code: 12, length: 8 }],
      },
    ],
  })
  const out: AnswerRecord[] = []
  readAnswers(msg, out)
  t.same(
    out.map((r) => r.type),
    answers.map((a) => a.type),
  )
})
