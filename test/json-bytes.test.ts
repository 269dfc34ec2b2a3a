// JSON written straight into bytes: what JSON.stringify and String would print, as UTF-8.

import fc from 'fast-check'
import t from 'tap'
import { NUMBER_ROOM, putInt, putMs, putString, stringRoom } from '../proxy/json-bytes.js'

function written(room: number, put: (buf: Buffer, at: number) => number): string {
  const buf = Buffer.alloc(room + 8, 0xff)
  const end = put(buf, 3)
  if (end > 3 + room) throw new Error(`wrote ${end - 3} bytes, room for ${room}`)
  return buf.toString('utf8', 3, end)
}

t.test('strings as JSON.stringify has them, within the room said', async (t) => {
  for (const s of [
    '',
    '/v1/',
    'a"b',
    'back\\slash',
    'tab\there',
    'é',
    '\u0000\u001f\u007f',
    '💥',
    '\ud800',
    'x'.repeat(1000),
  ]) {
    t.equal(
      written(stringRoom(s), (b, at) => putString(b, at, s)),
      JSON.stringify(s),
      JSON.stringify(s),
    )
  }
  fc.assert(
    fc.property(
      fc.string({ unit: 'binary', maxLength: 40 }),
      (s) => written(stringRoom(s), (b, at) => putString(b, at, s)) === JSON.stringify(s),
    ),
  )
})

t.test('whole numbers as String has them', async (t) => {
  for (const n of [0, 7, 9, 10, 99, 100, 200, 65535, 1763917668123, Number.MAX_SAFE_INTEGER, -1, 1.5])
    t.equal(
      written(NUMBER_ROOM, (b, at) => putInt(b, at, n)),
      String(n),
    )
  fc.assert(fc.property(fc.maxSafeNat(), (n) => written(NUMBER_ROOM, (b, at) => putInt(b, at, n)) === String(n)))
})

t.test('durations print as Math.round(ms * 1000) / 1000 would, from whole numbers', async (t) => {
  const ms = (x: number): string => written(NUMBER_ROOM, (b, at) => putMs(b, at, x))
  for (const x of [
    0, 0.0004, 0.0005, 0.001, 0.005, 0.05, 0.5, 0.512, 1, 1.23456, 10.1, 10.01, 999.9995, 123456.789, 2e6, -1,
  ])
    t.equal(ms(x), String(Math.round(x * 1000) / 1000), String(x))
  fc.assert(
    fc.property(fc.double({ min: 0, max: 1e9, noNaN: true }), (x) => ms(x) === String(Math.round(x * 1000) / 1000)),
  )
  fc.assert(fc.property(fc.integer({ min: 0, max: 999_999_999 }), (us) => ms(us / 1000) === String(us / 1000)))
})
