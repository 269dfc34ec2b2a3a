// Writing straight to a TCP socket's handle: every byte arrives, in order, whether written while
// the socket still connects (through Writable) or after (directly), held for one write or not;
// a peer that does not read makes write() say wait and whenDrained() say when to go on; end()
// half-closes after everything written.

import { once } from 'node:events'
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { SocketWriter } from '../proxy/http/socket-writer.js'

async function listening(t: Test, onSocket: (s: Socket) => void): Promise<number> {
  const server: Server = createServer(onSocket)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return (server.address() as AddressInfo).port
}

/** Everything the server side receives until the client half-closes. */
function received(s: Socket): Promise<Buffer> {
  const parts: Buffer[] = []
  s.on('data', (d: Buffer) => parts.push(d))
  return new Promise((resolve) => s.on('end', () => resolve(Buffer.concat(parts))))
}

t.test('bytes written while connecting, then directly, held or not, arrive whole and in order', async (t) => {
  const peer: { got: Promise<Buffer> | null } = { got: null }
  const port = await listening(t, (s) => (peer.got = received(s)))
  const client = connect(port, '127.0.0.1')
  const out = new SocketWriter(client)
  const expected: Buffer[] = []
  const put = (d: string | Buffer): void => {
    expected.push(Buffer.isBuffer(d) ? d : Buffer.from(d, 'latin1'))
    out.write(d)
  }
  put('written while connecting; ')
  put(Buffer.from('bytes too; '))
  await once(client, 'connect')
  for (let i = 0; i < 50; i++) {
    out.hold()
    put(`head ${i} \xe9; `)
    put(Buffer.alloc(i * 100, i))
    put('\r\n')
    out.release()
    put(`alone ${i}; `)
  }
  out.end()
  await once(client, 'close')
  t.ok(peer.got, 'the server saw the connection')
  t.same(await peer.got, Buffer.concat(expected))
})

t.test('a peer that does not read: write() says wait, whenDrained() fires once it has caught up', async (t) => {
  const peer: { socket: Socket | null } = { socket: null }
  const port = await listening(t, (s) => {
    peer.socket = s
    s.pause()
  })
  const client = connect(port, '127.0.0.1')
  await once(client, 'connect')
  while (peer.socket === null) await new Promise((r) => setImmediate(r))
  const server = peer.socket
  const out = new SocketWriter(client)
  const chunk = Buffer.alloc(64 * 1024, 7)
  let written = 0
  let ok = true
  for (let i = 0; i < 1000 && ok; i++) {
    ok = out.write(chunk)
    written += chunk.length
  }
  t.notOk(ok, `write() said wait after ${written} bytes`)
  let drained = false
  out.whenDrained(() => (drained = true))
  await new Promise((r) => setTimeout(r, 50))
  t.notOk(drained, 'not drained while the peer does not read')
  const all = received(server)
  server.resume()
  const deadline = Date.now() + 5000
  while (!drained && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
  t.ok(drained, 'drained once the peer reads')
  out.end()
  t.equal((await all).length, written, 'every byte arrived before the end')
})

t.test('held writes that fill the window: whenDrained() called while held fires after release', async (t) => {
  const peer: { socket: Socket | null } = { socket: null }
  const port = await listening(t, (s) => (peer.socket = s))
  const client = connect(port, '127.0.0.1')
  await once(client, 'connect')
  while (peer.socket === null) await new Promise((r) => setImmediate(r))
  const all = received(peer.socket)
  const out = new SocketWriter(client)
  out.write('x') // direct from here on
  out.hold()
  t.notOk(out.write(Buffer.alloc(20 * 1024)), 'more than the high-water mark held says wait')
  let drained = false
  out.whenDrained(() => (drained = true))
  t.notOk(drained, 'not while held')
  out.release()
  const deadline = Date.now() + 5000
  while (!drained && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
  t.ok(drained)
  out.end()
  t.equal((await all).length, 1 + 20 * 1024)
})

t.test('a write to a socket the peer reset destroys it with the error, without throwing', async (t) => {
  const port = await listening(t, (s) => void setTimeout(() => s.resetAndDestroy(), 20))
  const client = connect(port, '127.0.0.1')
  const errors: string[] = []
  client.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message))
  await once(client, 'connect')
  const out = new SocketWriter(client)
  await new Promise((r) => setTimeout(r, 50))
  for (let i = 0; i < 20 && !client.destroyed; i++) {
    out.write(Buffer.alloc(1024))
    await new Promise((r) => setTimeout(r, 5))
  }
  t.ok(client.destroyed, 'destroyed')
  out.hold()
  out.write('held after the end')
  out.release()
  out.write(Buffer.from('and written'))
  t.pass('writing to the destroyed socket drops the bytes without throwing')
  t.ok(errors.length <= 1 && errors.every((c) => /ECONNRESET|EPIPE/.test(c)), `errors: ${errors.join(', ')}`)
})
