// The ClientHello reader: real hellos from Node's TLS client (whole, split at every byte, one
// message over several records), and malformed ones thrown at it by hand and at random: it must
// answer incomplete, invalid or the hello, and never throw.

import { type AddressInfo, createServer } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import fc from 'fast-check'
import t from 'tap'
import { MAX_HELLO_BYTES, parseClientHello } from '../proxy/tls/client-hello.js'

/** The first flight a Node TLS client sends for `servername` and `alpn`. */
async function captureHello(servername: string | undefined, alpn?: string[]): Promise<Buffer> {
  const server = createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      server.once('connection', (s) => {
        let got = Buffer.alloc(0)
        s.on('data', (d: Buffer) => {
          got = Buffer.concat([got, d])
          if (got.length >= 5 && got.length >= 5 + got.readUInt16BE(3)) {
            resolve(got)
            s.destroy()
          }
        })
      })
      const c = tlsConnect({
        port: (server.address() as AddressInfo).port,
        host: '127.0.0.1',
        ...(servername ? { servername } : {}),
        ...(alpn ? { ALPNProtocols: alpn } : {}),
      })
      c.on('error', () => undefined)
      setTimeout(() => reject(new Error('no hello')), 5000).unref()
    })
  } finally {
    server.close()
  }
}

/** `hello`'s handshake message re-cut into records of at most `size` bytes. */
function rerecord(hello: Buffer, size: number): Buffer {
  const msg = hello.subarray(5, 5 + hello.readUInt16BE(3))
  const out: Buffer[] = []
  for (let i = 0; i < msg.length; i += size) {
    const part = msg.subarray(i, i + size)
    const head = Buffer.from([22, 3, 1, 0, 0])
    head.writeUInt16BE(part.length, 3)
    out.push(head, part)
  }
  return Buffer.concat(out)
}

t.test('real hellos: server name and ALPN, whole or in pieces', async (t) => {
  const hello = await captureHello('API.Empire', ['h2', 'http/1.1'])
  t.same(
    parseClientHello(hello),
    { state: 'complete', hello: { serverName: 'api.empire', alpn: ['h2', 'http/1.1'] } },
    'lower-cased name, both protocols in order',
  )
  let incomplete = 0
  for (let cut = 0; cut < hello.length; cut++)
    if (parseClientHello(hello.subarray(0, cut)).state === 'incomplete') incomplete++
  t.equal(incomplete, hello.length, 'every proper prefix is incomplete, none invalid')
  for (const size of [1, 7, 100]) {
    t.match(
      parseClientHello(rerecord(hello, size)),
      { state: 'complete', hello: { serverName: 'api.empire' } },
      `one message over records of ${size} bytes`,
    )
  }
  t.match(
    parseClientHello(Buffer.concat([hello, Buffer.from('more bytes after')])),
    { state: 'complete' },
    'bytes after the hello are not its business',
  )
  t.same(
    parseClientHello(await captureHello(undefined)),
    { state: 'complete', hello: { serverName: null, alpn: [] } },
    'no SNI (an IP address target), no ALPN',
  )
})

t.test('malformed hellos are invalid with a reason, never a throw', async (t) => {
  const good = await captureHello('deathstar.empire', ['h2'])
  const msgStart = 5
  const mutate = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good)
    f(b)
    return b
  }
  const findExt = (type: number): number => {
    // Walks the hello to the extension's type field (offsets from the real layout).
    let at = msgStart + 4 + 2 + 32
    at += 1 + good[at]!
    at += 2 + good.readUInt16BE(at)
    at += 1 + good[at]!
    const end = at + 2 + good.readUInt16BE(at)
    for (at += 2; at < end; at += 4 + good.readUInt16BE(at + 2)) if (good.readUInt16BE(at) === type) return at
    throw new Error(`no extension ${type}`)
  }
  const sni = findExt(0)
  const alpn = findExt(16)
  const cases: Array<[string, Buffer, RegExp]> = [
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), /record type 71/],
    ['an alert record', Buffer.from([21, 3, 3, 0, 2, 2, 40]), /record type 21/],
    ['SSLv2-style hello', Buffer.from([0x80, 0x2e, 0x01, 0x00, 0x02]), /record type 128/],
    ['record version 2.0', mutate((b) => (b[1] = 2)), /is not TLS/],
    ['empty record', Buffer.from([22, 3, 1, 0, 0]), /handshake record of 0 bytes/],
    ['record above 16 KiB', Buffer.from([22, 3, 1, 0x40, 0x01]), /handshake record of 16385 bytes/],
    ['ServerHello type', mutate((b) => (b[msgStart] = 2)), /type 2 is not a ClientHello/],
    ['hello length above the bound', mutate((b) => b.writeUIntBE(MAX_HELLO_BYTES + 1, msgStart + 1, 3)), /above 16384/],
    [
      'hello shorter than its fields',
      (() => {
        const b = Buffer.from([22, 3, 1, 0, 10, 1, 0, 0, 6, 3, 3, 0, 0, 0, 0])
        return b
      })(),
      /random runs past its end/,
    ],
    ['client version 2.0', mutate((b) => (b[msgStart + 4] = 2)), /client version 2\.\d is not TLS/],
    ['session_id longer than 32', mutate((b) => (b[msgStart + 4 + 2 + 32] = 33)), /session_id/],
    ['session_id past the end', mutate((b) => (b[msgStart + 4 + 2 + 32] = 255)), /runs past its end|session_id/],
    [
      'odd cipher_suites',
      mutate((b) => {
        const at = msgStart + 4 + 2 + 32 + 1 + b[msgStart + 4 + 2 + 32]!
        b.writeUInt16BE(b.readUInt16BE(at) - 1, at)
      }),
      /cipher_suites|runs past its end|compression/,
    ],
    [
      'extensions length past the end',
      mutate((b) => {
        let at = msgStart + 4 + 2 + 32
        at += 1 + b[at]!
        at += 2 + b.readUInt16BE(at)
        at += 1 + b[at]!
        b.writeUInt16BE(b.readUInt16BE(at) + 10, at)
      }),
      /extensions runs past its end/,
    ],
    [
      'SNI list length too long',
      mutate((b) => b.writeUInt16BE(b.readUInt16BE(sni + 4) + 5, sni + 4)),
      /server_name_list runs past its end/,
    ],
    ['SNI name length too long', mutate((b) => b.writeUInt16BE(500, sni + 7)), /server name runs past its end/],
    ['SNI name with a space', mutate((b) => (b[sni + 9] = 0x20)), /is not a host name/],
    ['SNI name with a NUL', mutate((b) => (b[sni + 12] = 0)), /is not a host name/],
    [
      'SNI name ending in a dot',
      mutate((b) => (b[sni + 9 + 'deathstar.empire'.length - 1] = 0x2e)),
      /is not a host name/,
    ],
    ['duplicate extension', mutate((b) => b.writeUInt16BE(0, alpn)), /extension 0 appears twice/],
    [
      'ALPN list past the end',
      mutate((b) => b.writeUInt16BE(b.readUInt16BE(alpn + 4) + 3, alpn + 4)),
      /protocol_name_list runs past its end/,
    ],
    ['empty ALPN name', mutate((b) => (b[alpn + 6] = 0)), /empty ALPN protocol name|runs past its end|bytes after/],
  ]
  t.ok(cases.length >= 20, `${cases.length} malformed hellos`)
  for (const [name, bytes, reason] of cases) {
    const r = parseClientHello(bytes)
    t.equal(r.state, 'invalid', name)
    if (r.state === 'invalid') t.match(r.reason, reason, `${name}: ${r.reason}`)
  }
})

t.test('random bytes and random corruptions of a real hello never throw', async (t) => {
  const good = await captureHello('x-wing.alliance', ['http/1.1'])
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) =>
      ['incomplete', 'invalid', 'complete'].includes(parseClientHello(Buffer.from(bytes)).state),
    ),
    { numRuns: 2000 },
  )
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(good.length - 1), fc.nat(255)), { minLength: 1, maxLength: 8 }), (edits) => {
      const b = Buffer.from(good)
      for (const [at, v] of edits) b[at] = v
      const r = parseClientHello(b)
      return r.state !== 'complete' || r.hello.serverName === null || /^[a-z0-9_.-]+$/.test(r.hello.serverName)
    }),
    { numRuns: 3000 },
  )
  t.pass('5000 random inputs, no throw, any name returned is a host name')
})
