// Header fields as byte spans (head-fields.ts), which fields are hop-by-hop (hop-by-hop.ts), and
// the heads the proxy writes from them (http1-writer.ts): the bytes must be what joining the
// fields as strings gives, whatever the names' case and the values' bytes.

import fc from 'fast-check'
import t from 'tap'
import { HeadFields } from '../proxy/http/head-fields.js'
import { dropHopByHop } from '../proxy/http/hop-by-hop.js'
import { requestHead, responseHead } from '../proxy/http/http1-writer.js'

const RAW = [
  'Host',
  'deathstar',
  'X-Trace',
  'a',
  'x-trace',
  'b',
  'Connection',
  'keep-alive, X-Gone',
  'X-GONE',
  '1',
  'TE',
  'trailers',
  'Content-Length',
  '5',
]

t.test(
  'look-ups compare names without case, join repeated fields, and see fields that are not forwarded',
  async (t) => {
    const f = HeadFields.fromRaw(RAW)
    t.equal(f.count, 7)
    t.same(f.toRaw(), RAW)
    t.equal(f.get('host'), 'deathstar')
    t.equal(f.get('x-trace'), 'a, b')
    t.equal(f.get('x-missing'), undefined)
    t.equal(f.indexOf('x-trace'), 1)
    t.equal(f.indexOf('x-trace', 2), 2)
    t.equal(f.indexOf('x-trace', 3), -1)
    t.ok(f.nameIs(6, 'content-length'))
    t.notOk(f.nameIs(6, 'content-lengt'))
    t.ok(f.valueIs(0, 'deathstar'))
    t.notOk(f.valueIs(0, 'deathsta'))
    dropHopByHop(f)
    // Connection, what it names (X-Gone, any case) and TE go; look-ups still find them.
    t.same(f.toRaw(true), ['Host', 'deathstar', 'X-Trace', 'a', 'x-trace', 'b', 'Content-Length', '5'])
    t.equal(f.get('te'), 'trailers')
  },
)

t.test(
  'the fixed hop-by-hop list is matched without case; a field of the same length that is not in it passes',
  async (t) => {
    const f = HeadFields.fromRaw([
      'KEEP-ALIVE',
      'timeout=5',
      'x-lab-host',
      'd',
      'Transfer-Encoding',
      'chunked',
      'Proxy-Authorization',
      'x',
      'Upgrade',
      'h2c',
      'Trailer',
      'a',
      'Expect',
      '100-continue',
      'Connection',
      'close',
    ])
    dropHopByHop(f)
    t.same(f.toRaw(true), ['x-lab-host', 'd'])
  },
)

t.test('a trailing space or tab is no part of a value', async (t) => {
  const f = HeadFields.fromRaw(['A', 'v \t', 'B', ' ', 'C', 'x y'])
  for (let i = 0; i < f.count; i++) f.trimValue(i)
  t.same(f.toRaw(), ['A', 'v', 'B', '', 'C', 'x y'])
})

const token = fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,24}$/)
// Field values as llhttp lets them through: visible latin1 and inner spaces, short or long.
const value = fc.stringMatching(/^[\x21-\x7e\x80-\xff]([\x20-\x7e\x80-\xff]{0,100}[\x21-\x7e\x80-\xff])?$/)
const rawFields = fc
  .array(fc.tuple(token, fc.oneof(value, fc.constant(''))), { maxLength: 12 })
  .map((pairs) => pairs.flat())

function joined(start: string, raw: readonly string[], extra: string): string {
  let s = start
  for (let i = 0; i < raw.length; i += 2) s += `${raw[i]!}: ${raw[i + 1]!}\r\n`
  return `${s}${extra}\r\n`
}

t.test('heads written from spans are the bytes joining the forwarded fields as strings gives', async (t) => {
  fc.assert(
    fc.property(
      rawFields,
      fc.constantFrom('GET', 'POST', 'M-SEARCH'),
      fc.stringMatching(/^\/[\x21-\x7e]{0,80}$/),
      fc.boolean(),
      (raw, method, path, chunked) => {
        const f = HeadFields.fromRaw(raw)
        dropHopByHop(f)
        const extra = chunked ? 'transfer-encoding: gzip, chunked\r\n' : ''
        const kept = f.toRaw(true)
        return (
          requestHead(method, path, f, extra).toString('latin1') ===
            joined(`${method} ${path} HTTP/1.1\r\n`, kept, extra) &&
          responseHead(200, 'OK Fine', f, extra).toString('latin1') === joined('HTTP/1.1 200 OK Fine\r\n', kept, extra)
        )
      },
    ),
    { numRuns: 300 },
  )
  t.pass('300 generated heads agree')
})
