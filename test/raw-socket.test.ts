// Accepted connections as bare handles (RawSocket): they have TCP_NODELAY, read from the start,
// tell their two ends, are written through SocketWriter, end as net.Socket does by default (the
// peer's EOF ends this side too; both ended, the handle closes and 'close' follows, once), are
// cut by destroy() or a deadline, and can become a net.Socket that reads the bytes already taken
// first.

import { once } from 'node:events'
import { type AddressInfo, connect, createServer, type Socket } from 'node:net'
import koffi from 'koffi'
import t, { type Test } from 'tap'
import { acceptHandles, readInto, readResult } from '../proxy/http/native-stream.js'
import { RawSocket } from '../proxy/http/raw-socket.js'
import { SocketWriter } from '../proxy/http/socket-writer.js'

interface Pair {
  raw: RawSocket
  client: Socket
  /** Times the raw side emitted 'close'. */
  closes: () => number
}

/** A client connected to a listener whose connections are taken as handles; the pair once accepted. */
async function pair(t: Test): Promise<Pair> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const accepted = new Promise<RawSocket>((resolve) => acceptHandles(server, (h) => resolve(new RawSocket(h))))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1')
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  const raw = await accepted
  let closes = 0
  raw.on('close', () => closes++)
  t.teardown(() => raw.destroy())
  await once(client, 'connect')
  return { raw, client, closes: () => closes }
}

/** What the client reads until the proxy side ends (or cuts) the connection. */
function readAll(s: Socket): Promise<string> {
  let got = ''
  s.setEncoding('latin1')
  s.on('data', (d: string) => (got += d))
  return new Promise((resolve) => s.once('close', () => resolve(got)))
}

/** Waits (bounded) until `cond` holds. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10))
  if (!cond()) throw new Error(`gave up waiting: ${what}`)
}

t.test('accepted connections have TCP_NODELAY (from the listening socket)', async (t) => {
  const getsockopt = koffi.load('libc.so.6').func('int getsockopt(int, int, int, _Out_ uint8_t *, _Inout_ uint32_t *)')
  const { raw } = await pair(t)
  const value = Buffer.alloc(4)
  t.equal(
    getsockopt((raw._handle as unknown as { fd: number }).fd, 6 /* IPPROTO_TCP */, 1 /* TCP_NODELAY */, value, [4]),
    0,
  )
  t.equal(value.readInt32LE(), 1)
})

t.test('a bare connection tells both of its ends', async (t) => {
  const { raw, client } = await pair(t)
  t.equal(raw.remoteAddress, '127.0.0.1')
  t.equal(raw.remotePort, client.localPort)
  t.equal(raw.localAddress, '127.0.0.1')
  t.equal(raw.localPort, client.remotePort)
})

t.test('end() half-closes after what was written; the peer closing in turn closes it, once', async (t) => {
  const { raw, client, closes } = await pair(t)
  const got = readAll(client)
  const out = new SocketWriter(raw)
  out.write('first; ')
  out.hold()
  out.write(Buffer.from('held; '))
  out.write('last')
  out.end()
  t.equal(await got, 'first; held; last', 'every byte, then EOF')
  await until(() => closes() === 1, 'close')
  t.ok(raw.destroyed)
  await new Promise((r) => setTimeout(r, 50))
  t.equal(closes(), 1, "'close' once")
})

t.test("the peer's EOF ends this side too, and the connection closes", async (t) => {
  const { raw, client, closes } = await pair(t)
  const got = readAll(client)
  client.end()
  t.equal(await got, '', 'EOF back, nothing else')
  await until(() => closes() === 1, 'close after both sides ended')
  t.ok(raw.destroyed)
})

t.test("with allowHalfOpen the peer's EOF is told as 'end', and this side writes on until end()", async (t) => {
  const { raw, client, closes } = await pair(t)
  raw.allowHalfOpen = true
  const got = readAll(client)
  const ended = once(raw, 'end')
  client.end()
  await ended
  await new Promise((r) => setTimeout(r, 30))
  t.equal(closes(), 0, 'still open after the EOF')
  const out = new SocketWriter(raw)
  out.write('answer after the EOF')
  out.end()
  t.equal(await got, 'answer after the EOF')
  await until(() => closes() === 1, 'close once both sides ended')
})

t.test('destroy() cuts the connection at once; a write to it after goes nowhere', async (t) => {
  const { raw, client, closes } = await pair(t)
  const clientClosed = once(client, 'close')
  const out = new SocketWriter(raw)
  raw.destroy()
  out.write('too late')
  await clientClosed
  await until(() => closes() === 1, 'close')
})

t.test('a peer that resets the connection closes it', async (t) => {
  const { client, closes } = await pair(t)
  client.resetAndDestroy()
  await until(() => closes() === 1, 'close after a reset')
})

t.test('setTimeout is a deadline that cuts the connection; 0 takes it back', async (t) => {
  const { raw, closes } = await pair(t)
  raw.setTimeout(30, () => raw.destroy())
  raw.setTimeout(0)
  await new Promise((r) => setTimeout(r, 80))
  t.equal(closes(), 0, 'a deadline taken back does not fire')
  raw.setTimeout(30, () => raw.destroy())
  await until(() => closes() === 1, 'the deadline')
})

t.test('toNetSocket: a net.Socket that reads the bytes already taken, then the rest, in order', async (t) => {
  const { raw, client } = await pair(t)
  const h = raw._handle
  const passOn = h.onread
  // Read into a buffer of ours first, as the proxy's sniff does: net then gets copies.
  const buf = Buffer.alloc(1024)
  readInto(h, buf)
  const first = new Promise<Buffer>((resolve) => {
    h.onread = (ab) => {
      const n = readResult()
      if (n <= 0) return passOn.call(h, ab)
      h.onread = passOn
      resolve(Buffer.from(buf.subarray(0, n)))
      return undefined
    }
  })
  client.write('taken first|')
  const socket = raw.toNetSocket(await first)
  let got = ''
  socket.setEncoding('latin1')
  socket.on('data', (d: string) => (got += d))
  client.write('then the rest')
  await until(() => got === 'taken first|then the rest', 'both parts')
  socket.write('and back')
  const back = once(client, 'data')
  t.equal(String((await back)[0]), 'and back', 'the net.Socket writes too')
  socket.destroy()
})
