// HPACK (RFC 7541): the Huffman code against Appendix B, the decoder against the examples of
// Appendix C (requests and responses, with and without Huffman, with evictions), the encoder
// reproducing C.4 byte for byte, and any bytes decoded without an exception while encoder and
// decoder stay in step over random header lists and table size changes.

import fc from 'fast-check'
import t from 'tap'
import { HpackDecoder } from '../proxy/http2/hpack-decoder.js'
import { HpackEncoder } from '../proxy/http2/hpack-encoder.js'
import {
  HUFFMAN_CODES,
  HUFFMAN_LENGTHS,
  huffmanDecode,
  huffmanDecodedBound,
  huffmanEncode,
  huffmanEncodedLength,
} from '../proxy/http2/hpack-huffman.js'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
type Field = [string, string]

function decodeAll(d: HpackDecoder, block: Buffer): { fields: Field[]; error: string | null } {
  const fields: Field[] = []
  const error = d.decode(block, 0, block.length, (n, v) => fields.push([n, v]))
  return { fields, error }
}

function encodeAll(e: HpackEncoder, fields: ReadonlyArray<Field | [string, string, boolean]>): Buffer {
  const out = Buffer.alloc(
    HpackEncoder.bound(
      fields.length,
      fields.reduce((n, [a, b]) => n + a.length + b.length, 0),
    ),
  )
  let at = e.begin(out, 0)
  for (const [n, v, never] of fields) at = e.field(out, at, n, v, never ?? false)
  return out.subarray(0, at)
}

function huffman(s: string): string {
  const out = Buffer.alloc(huffmanEncodedLength(s))
  t.equal(huffmanEncode(s, out, 0), out.length)
  return out.toString('hex')
}

t.test(
  'the Huffman code is Appendix B: codes derived from the lengths match the table, and the code is complete',
  async (t) => {
    // (symbol, code, bits) rows of Appendix B.
    for (const [sym, code, bits] of [
      [0, 0x1ff8, 13],
      [1, 0x7fffd8, 23],
      [10, 0x3ffffffc, 30],
      [32, 0x14, 6],
      [48, 0x0, 5],
      [97, 0x3, 5],
      [92, 0x7fff0, 19],
      [128, 0xfffe6, 20],
      [203, 0x7ffffde, 27],
      [255, 0x3ffffee, 26],
      [256, 0x3fffffff, 30],
    ] as const) {
      t.equal(HUFFMAN_LENGTHS[sym], bits, `symbol ${sym}: ${bits} bits`)
      t.equal(HUFFMAN_CODES[sym], code, `symbol ${sym}: code ${code.toString(16)}`)
    }
    t.equal(
      HUFFMAN_LENGTHS.reduce((s, l) => s + 2 ** -l, 0),
      1,
      'Kraft sum 1: every bit string decodes',
    )
  },
)

t.test('Huffman strings of Appendix C.4 and C.6 both ways', async (t) => {
  const examples: Array<[string, string]> = [
    ['www.example.com', 'f1e3c2e5f23a6ba0ab90f4ff'],
    ['no-cache', 'a8eb10649cbf'],
    ['custom-key', '25a849e95ba97d7f'],
    ['custom-value', '25a849e95bb8e8b4bf'],
    ['302', '6402'],
    ['private', 'aec3771a4b'],
    ['Mon, 21 Oct 2013 20:13:21 GMT', 'd07abe941054d444a8200595040b8166e082a62d1bff'],
    ['https://www.example.com', '9d29ad171863c78f0b97c8e9ae82ae43d3'],
    ['gzip', '9bd9ab'],
    [
      'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1',
      '94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007',
    ],
  ]
  for (const [text, code] of examples) {
    t.equal(huffman(text), code, `encodes ${text}`)
    const src = hex(code)
    const out = Buffer.alloc(huffmanDecodedBound(src.length))
    const n = huffmanDecode(src, 0, src.length, out, 0)
    t.equal(out.toString('latin1', 0, n), text, `decodes ${text}`)
  }
})

t.test('Huffman decoding refuses EOS, padding of a byte or more, and padding that is not ones', async (t) => {
  const out = Buffer.alloc(64)
  const ok = hex('6402') // "302"
  t.equal(huffmanDecode(ok, 0, 2, out, 0), 3)
  t.equal(huffmanDecode(hex('6402ff'), 0, 3, out, 0), -1, 'a whole byte of padding')
  t.equal(huffmanDecode(hex('ffffffff'), 0, 4, out, 0), -1, 'EOS (30 ones)')
  t.equal(huffmanDecode(hex('60'), 0, 1, out, 0), -1, '"3" (011001) padded with zeros')
  t.equal(huffmanDecode(hex('67'), 0, 1, out, 0), 1, '"3" padded with ones')
  t.equal(huffmanDecode(hex(''), 0, 0, out, 0), 0, 'empty')
})

t.test('Huffman round trip of any bytes; any input decodes or is refused without an exception', async () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const s = Buffer.from(bytes).toString('latin1')
      const code = Buffer.alloc(huffmanEncodedLength(s))
      huffmanEncode(s, code, 0)
      const out = Buffer.alloc(huffmanDecodedBound(code.length))
      const n = huffmanDecode(code, 0, code.length, out, 0)
      return n === s.length && out.toString('latin1', 0, n) === s
    }),
    { numRuns: 500 },
  )
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 100 }), (bytes) => {
      const out = Buffer.alloc(huffmanDecodedBound(bytes.length))
      const n = huffmanDecode(bytes, 0, bytes.length, out, 0)
      return n >= -1 && n <= out.length
    }),
    { numRuns: 2000 },
  )
})

t.test('Appendix C.2: literal representations and an indexed field', async (t) => {
  const d = new HpackDecoder()
  t.same(
    decodeAll(d, hex('400a637573746f6d2d6b65790d637573746f6d2d686561646572')),
    { fields: [['custom-key', 'custom-header']], error: null },
    'C.2.1 with indexing',
  )
  t.same(d.tableSize, { size: 55, count: 1, maxSize: 4096 })
  const never: boolean[] = []
  const block = hex('100870617373776f726406736563726574')
  t.equal(
    new HpackDecoder().decode(block, 0, block.length, (_n, _v, ni) => never.push(ni)),
    null,
    'C.2.3 never indexed',
  )
  t.same(never, [true], 'told as never indexed')
  const d2 = new HpackDecoder()
  t.same(
    decodeAll(d2, hex('040c2f73616d706c652f70617468')),
    { fields: [[':path', '/sample/path']], error: null },
    'C.2.2 without indexing',
  )
  t.same(d2.tableSize.count, 0, 'nothing added')
  t.same(decodeAll(d2, hex('82')), { fields: [[':method', 'GET']], error: null }, 'C.2.4 indexed')
})

const requests: Field[][] = [
  [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
  ],
  [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
    ['cache-control', 'no-cache'],
  ],
  [
    [':method', 'GET'],
    [':scheme', 'https'],
    [':path', '/index.html'],
    [':authority', 'www.example.com'],
    ['custom-key', 'custom-value'],
  ],
]

t.test(
  'Appendix C.3 and C.4: three requests on one connection, without and with Huffman; the encoder writes C.4 byte for byte',
  async (t) => {
    const plain = [
      '828684410f7777772e6578616d706c652e636f6d',
      '828684be58086e6f2d6361636865',
      '828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565',
    ]
    const coded = [
      '828684418cf1e3c2e5f23a6ba0ab90f4ff',
      '828684be5886a8eb10649cbf',
      '828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf',
    ]
    const sizes = [57, 110, 164]
    for (const blocks of [plain, coded]) {
      const d = new HpackDecoder()
      blocks.forEach((b, i) => {
        t.same(decodeAll(d, hex(b)), { fields: requests[i], error: null }, `request ${i + 1}`)
        t.equal(d.tableSize.size, sizes[i], `table size ${sizes[i]}`)
      })
    }
    const e = new HpackEncoder()
    requests.forEach((fields, i) =>
      t.equal(encodeAll(e, fields).toString('hex'), coded[i], `encoded request ${i + 1} as in C.4`),
    )
  },
)

t.test(
  'Appendix C.5 and C.6: three responses with a 256-byte table (entries evicted), without and with Huffman',
  async (t) => {
    const date1 = 'Mon, 21 Oct 2013 20:13:21 GMT'
    const responses: Field[][] = [
      [
        [':status', '302'],
        ['cache-control', 'private'],
        ['date', date1],
        ['location', 'https://www.example.com'],
      ],
      [
        [':status', '307'],
        ['cache-control', 'private'],
        ['date', date1],
        ['location', 'https://www.example.com'],
      ],
      [
        [':status', '200'],
        ['cache-control', 'private'],
        ['date', 'Mon, 21 Oct 2013 20:13:22 GMT'],
        ['location', 'https://www.example.com'],
        ['content-encoding', 'gzip'],
        ['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1'],
      ],
    ]
    const plain = [
      '4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d',
      '4803333037c1c0bf',
      '88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31',
    ]
    const coded = [
      '488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3',
      '4883640effc1c0bf',
      '88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007',
    ]
    const sizes = [222, 222, 215]
    for (const blocks of [plain, coded]) {
      const d = new HpackDecoder(256)
      t.equal(
        d.decode(hex('3fe101'), 0, 3, () => undefined),
        null,
        'size update to 256',
      ) // 0x3f 0xe1 0x01 = 31 + 97 + 128
      blocks.forEach((b, i) => {
        t.same(decodeAll(d, hex(b)), { fields: responses[i], error: null }, `response ${i + 1}`)
        t.equal(d.tableSize.size, sizes[i], `table size ${sizes[i]}`)
      })
    }
    const e = new HpackEncoder(256)
    const d = new HpackDecoder(256)
    for (const r of responses)
      t.same(decodeAll(d, encodeAll(e, r)), { fields: r, error: null }, 'our encoding of it decodes the same')
  },
)

t.test(
  'bad blocks are refused with a reason: index 0 or past the tables, cut-short strings and integers, size updates above the limit or after a field',
  async (t) => {
    const cases: Array<[string, RegExp]> = [
      ['80', /index 0/],
      ['be', /index 62 out of range/],
      ['7f00', /index 63 out of range/],
      ['400a6375', /string longer than the block/],
      ['40', /block ends before a string/],
      ['ff', /bad integer/],
      ['ffffffffffff7f', /bad integer/],
      ['3fe21f', /table size update to 4096|above/],
      ['823f01', /after a field/],
      ['4081ff0161', /bad Huffman code/],
    ]
    for (const [bytes, reason] of cases) {
      const block = hex(bytes)
      const r = new HpackDecoder(4095).decode(block, 0, block.length, () => undefined)
      t.match(r, reason, `${bytes}: ${r}`)
    }
  },
)

const fieldArb = fc.tuple(
  fc.oneof(
    fc.constantFrom(
      ':method',
      ':path',
      ':authority',
      'content-type',
      'cookie',
      'authorization',
      'date',
      'grpc-timeout',
      'te',
      'x-custom',
    ),
    fc.stringMatching(/^[a-z0-9-]{1,20}$/),
  ),
  fc.oneof(
    fc.constantFrom('GET', '/', 'application/grpc', 'trailers', '1S', ''),
    fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b).toString('latin1')),
  ),
  fc.boolean(),
)

t.test(
  'encoder and decoder stay in step over random header lists and table size changes; never-indexed stays so',
  async () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.array(fieldArb, { maxLength: 12 }), fc.option(fc.nat(4096))), {
          minLength: 1,
          maxLength: 20,
        }),
        (blocks) => {
          const e = new HpackEncoder()
          const d = new HpackDecoder()
          for (const [fields, resize] of blocks) {
            if (resize !== null) e.setMaxSize(resize)
            const got: Array<[string, string, boolean]> = []
            const block = encodeAll(e, fields)
            if (d.decode(block, 0, block.length, (n, v, never) => got.push([n, v, never])) !== null) return false
            if (got.length !== fields.length) return false
            for (let i = 0; i < got.length; i++) {
              const [n, v, never] = fields[i]!
              if (got[i]![0] !== n || got[i]![1] !== v || (never && !got[i]![2])) return false
            }
          }
          return true
        },
      ),
      { numRuns: 400 },
    )
  },
)

t.test('any bytes, and valid blocks with bytes flipped, decode or are refused without an exception', async () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const r = new HpackDecoder().decode(Buffer.from(bytes), 0, bytes.length, () => undefined)
      return r === null || typeof r === 'string'
    }),
    { numRuns: 3000 },
  )
  fc.assert(
    fc.property(fc.array(fieldArb, { minLength: 1, maxLength: 10 }), fc.nat(), fc.nat(255), (fields, where, xor) => {
      const block = encodeAll(new HpackEncoder(), fields)
      block[where % block.length]! ^= xor
      const r = new HpackDecoder().decode(block, 0, block.length, () => undefined)
      return r === null || typeof r === 'string'
    }),
    { numRuns: 2000 },
  )
})
