// The DNS proxy's batched UDP I/O on loopback: an echo through a DatagramPump gets every datagram
// back whole (more than one batch at a time, the largest UDP payload too), from the right
// address, and a closed pump sends nothing.

import { createSocket } from 'node:dgram'
import t from 'tap'
import { libc } from '../lib/libc.js'
import { DatagramPump } from '../proxy/dns/datagram-pump.js'
import { localPort, udpSocket } from '../redirect-bpf/transparent-socket.js'

const LOOPBACK = 0x7f000001

t.test('an echo through the pump returns every datagram whole, to its sender', async (t) => {
  const fd = udpSocket('127.0.0.1', 0)
  const seen: Array<{ address: number; port: number }> = []
  const pump = new DatagramPump(
    [fd],
    (socket, data, address, port) => {
      seen.push({ address, port })
      pump.send(socket, data, data.length, address, port) // the view is the pump's: send copies it
    },
    (e) => t.fail(e.message),
  )
  pump.start()
  t.teardown(() => {
    pump.close()
    libc().close(fd)
  })
  const client = createSocket({ type: 'udp4', recvBufferSize: 1 << 22 })
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r))
  t.teardown(() => client.close())
  const got: Buffer[] = []
  let want = 0
  let done: () => void = () => undefined
  client.on('message', (m) => {
    got.push(m)
    if (got.length === want) done()
  })
  /** Sends `batch` at once and waits for as many echoes. */
  const burst = async (batch: Buffer[]) => {
    want += batch.length
    const all = new Promise<void>((r) => (done = r))
    for (const b of batch) client.send(b, localPort(fd), '127.0.0.1')
    const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 5_000).unref())
    return Promise.race([all, timeout])
  }
  // The large ones one at a time (a socket's default buffer holds about three of 64 KB), then
  // more small ones at once than one recvmmsg takes.
  const large = [1, 12, 512, 1232, 4096, 65507].map((n, i) => Buffer.alloc(n, i))
  for (const b of large) t.not(await burst([b]), 'timeout', `${b.length} bytes echoed`)
  const small = Array.from({ length: 100 }, (_, i) => Buffer.alloc(20 + ((i * 37) % 180), 10 + i))
  t.not(await burst(small), 'timeout', `${small.length} datagrams sent at once, echoed`)
  const sent = [...large, ...small]
  const key = (b: Buffer) => `${b.length}:${b[0]}`
  t.same(got.map(key).sort(), sent.map(key).sort(), 'each one back, whole')
  t.ok(
    got.every((b) => b.every((x) => x === b[0])),
    'with its bytes',
  )
  t.ok(
    seen.every((s) => s.address === LOOPBACK && s.port === client.address().port),
    'every sender read as 127.0.0.1 and the client’s port',
  )
  t.match(pump.stats, { received: sent.length, sent: sent.length, dropped: 0 })
})

t.test('a closed pump sends nothing and reads nothing more', async (t) => {
  const fd = udpSocket('127.0.0.1', 0)
  let read = 0
  const pump = new DatagramPump(
    [fd],
    () => void read++,
    (e) => t.fail(e.message),
  )
  pump.start()
  pump.close()
  t.equal(pump.send(fd, Buffer.from('x'), 1, LOOPBACK, 9), false)
  const client = createSocket('udp4')
  await new Promise<void>((r) => client.send(Buffer.from('late'), localPort(fd), '127.0.0.1', () => r()))
  await new Promise((r) => setTimeout(r, 300))
  client.close()
  libc().close(fd)
  t.equal(read, 0)
})
