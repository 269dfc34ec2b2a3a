// The DNS proxy on loopback: queries are injected as if the datapath had steered the tiefighter's
// (or the xwing's) lookups to the lab DNS server, and forwarded to a small server of the test's.

import { createSocket, type Socket } from 'node:dgram'
import { type AddressInfo, createServer as createTcpServer, connect as tcpConnect } from 'node:net'
import dnsPacket from 'dns-packet'
import t, { type Test } from 'tap'
import { labEndpoints } from '../lab/topology.js'
import { PolicyEngine } from '../policy/engine.js'
import { DnsProxy, type DnsProxyOptions } from '../proxy/dns/dns-proxy.js'
import { jsonLogger } from './fixtures/json-logger.js'
import { testOverload } from './fixtures/overload.js'

const POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: tiefighter-dns }
spec:
  endpointSelector: { matchLabels: { class: tiefighter } }
  egress:
  - toEndpoints: [ { matchLabels: { "k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns } } ]
    toPorts:
    - ports: [ { port: "53", protocol: ANY } ]
      rules: { dns: [ { matchPattern: "*.empire" } ] }
`

/** dns-packet's decoded answer; its types leave out the rcode it sets. */
type Answer = dnsPacket.DecodedPacket & { rcode: string }

interface Setup {
  /** Sends queries over one TCP connection (in one write) and returns the answers, in order received. */
  tcpQuery(packets: dnsPacket.Packet[], timeoutMs?: number): Promise<Answer[]>
  query(packet: Buffer | dnsPacket.Packet, timeoutMs?: number): Promise<dnsPacket.DecodedPacket | Buffer | null>
  served: string[]
  logs: Array<Record<string, unknown>>
  proxy: DnsProxy
}

/** How the test's server answers: with 192.0.2.3 (`edit` may change the answer's bytes), or never when `silent`. */
interface ServerBehaviour {
  silent?: boolean
  edit?: (answer: Buffer) => Buffer
}

/** A server (UDP, and TCP on the same port) answering A queries. */
async function server(t: Test, served: string[], how: ServerBehaviour): Promise<Socket> {
  const respond = (msg: Buffer): Buffer | null => {
    const q = dnsPacket.decode(msg)
    served.push(q.questions![0]!.name)
    if (how.silent) return null
    const a = dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: q.questions,
      answers: [{ type: 'A', name: q.questions![0]!.name, ttl: 60, data: '192.0.2.3' }],
    })
    return how.edit ? how.edit(a) : a
  }
  const tcp = createTcpServer((c) => {
    let buf = Buffer.alloc(0)
    c.on('data', (d) => {
      buf = Buffer.concat([buf, d])
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const a = respond(buf.subarray(2, 2 + buf.readUInt16BE(0)))
        buf = buf.subarray(2 + buf.readUInt16BE(0))
        if (a) c.write(Buffer.concat([Buffer.from([a.length >> 8, a.length & 0xff]), a]))
      }
    })
  })
  // One port for both: a UDP port whose TCP twin is taken (other tests' connections) is tried again.
  let s: Socket | null = null
  for (let attempt = 0; attempt < 50 && s === null; attempt++) {
    const udp = createSocket('udp4')
    udp.on('message', (msg, rinfo) => {
      const a = respond(msg)
      if (a) udp.send(a, rinfo.port, rinfo.address)
    })
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r))
    const listening = await new Promise<boolean>((r) => {
      tcp.once('error', () => r(false))
      tcp.listen(udp.address().port, '127.0.0.1', () => r(true))
    })
    tcp.removeAllListeners('error')
    if (listening) s = udp
    else udp.close()
  }
  if (s === null) throw new Error('no port free for both UDP and TCP after 50 tries')
  const udp = s
  t.teardown(() => {
    udp.close()
    tcp.close()
  })
  return udp
}

async function setup(
  t: Test,
  source = '198.18.1.10',
  extra: Partial<DnsProxyOptions> & ServerBehaviour = {},
): Promise<Setup> {
  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  for (const ep of labEndpoints()) engine.upsertEndpoint(ep)
  engine.loadFile('dns.yaml', POLICY)
  const served: string[] = []
  const { silent, edit, ...options } = extra
  const upstream = (await server(t, served, { silent, edit })).address() as AddressInfo
  const { logger, lines: logs } = jsonLogger()
  const proxy = new DnsProxy({
    engine,
    logger,
    // As if the datapath had steered `source` -> the lab DNS server here.
    originalDestination: (_address, _port, out) => {
      out.address = 0xc6120235 // 198.18.2.53
      out.port = 53
      return true
    },
    tcpOriginalDestination: () => ({ address: '198.18.2.53', port: 53 }),
    flowOf: (client, srv) => ({
      sourceAddress: source,
      sourcePort: client.port,
      destAddress: srv.address,
      destPort: srv.port,
    }),
    upstreamOf: () => ({ address: '127.0.0.1', port: upstream.port }),
    answerFrom: 'listener',
    ...options,
  })
  await proxy.listen({ port: 0, address: '127.0.0.1' })
  t.teardown(() => proxy.close())
  const port = proxy.port
  const query = (packet: Buffer | dnsPacket.Packet, timeoutMs = 1000) =>
    new Promise<dnsPacket.DecodedPacket | Buffer | null>((resolve) => {
      const c = createSocket('udp4')
      const done = (v: dnsPacket.DecodedPacket | Buffer | null) => {
        clearTimeout(timer)
        c.close()
        resolve(v)
      }
      const timer = setTimeout(() => done(null), timeoutMs)
      c.on('message', (m) => {
        try {
          done(dnsPacket.decode(m))
        } catch {
          done(m)
        }
      })
      c.send(Buffer.isBuffer(packet) ? packet : dnsPacket.encode(packet), port, '127.0.0.1')
    })
  const tcpQuery = (packets: dnsPacket.Packet[], timeoutMs = 1000) =>
    new Promise<Answer[]>((resolve) => {
      const got: Answer[] = []
      const c = tcpConnect(port, '127.0.0.1', () =>
        c.write(Buffer.concat(packets.map((p) => dnsPacket.streamEncode(p)))),
      )
      let buf = Buffer.alloc(0)
      const done = () => {
        clearTimeout(timer)
        c.destroy()
        resolve(got)
      }
      const timer = setTimeout(done, timeoutMs)
      c.on('error', done)
      c.on('data', (d) => {
        buf = Buffer.concat([buf, d])
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          got.push(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))) as Answer)
          buf = buf.subarray(2 + buf.readUInt16BE(0))
        }
        if (got.length === packets.length) done()
      })
    })
  return { query, tcpQuery, served, logs, proxy }
}

const ask = (name: string, id = 4242): dnsPacket.Packet => ({
  type: 'query',
  id,
  flags: dnsPacket.RECURSION_DESIRED,
  questions: [{ type: 'A', name }],
})

t.test('an allowed name is forwarded and its answer relayed with the client id', async (t) => {
  const s = await setup(t)
  const a = (await s.query(ask('cantina.empire', 7))) as Answer
  t.equal(a.id, 7)
  t.equal(a.rcode, 'NOERROR')
  t.match(a.answers, [{ type: 'A', name: 'cantina.empire', data: '192.0.2.3' }])
  t.same(s.served, ['cantina.empire'])
  t.match(s.logs, [
    {
      msg: 'dns allowed',
      verdict: 'allowed',
      qname: 'cantina.empire',
      qtype: 'A',
      rcode: 'NOERROR',
      answers: ['A 192.0.2.3'],
      rules: ['CiliumNetworkPolicy/default/tiefighter-dns'],
      source: /^198\.18\.1\.10:/,
      destination: '198.18.2.53:53',
    },
  ])
  t.equal(s.proxy.stats.allowed, 1)
})

t.test("a client's destination is looked up once per read of datagrams, and again in the next", async (t) => {
  let lookups = 0
  let server = 0xc6120235 // 198.18.2.53
  const s = await setup(t, '198.18.1.10', {
    originalDestination: (_address, _port, out) => {
      lookups++
      out.address = server
      out.port = 53
      return true
    },
  })
  const client = createSocket('udp4')
  t.teardown(() => client.close())
  const BURST = 200
  const answered = new Promise<number>((resolve) => {
    let n = 0
    client.on('message', () => ++n === BURST && resolve(n))
    setTimeout(() => resolve(n), 5_000).unref()
  })
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r))
  for (let i = 0; i < BURST; i++) client.send(dnsPacket.encode(ask('cantina.empire', i)), s.proxy.port, '127.0.0.1')
  t.equal(await answered, BURST, 'every query answered')
  t.ok(lookups < BURST / 2, `${lookups} lookups for ${BURST} queries from one client`)
  t.ok(
    s.logs.every((l) => l.destination === '198.18.2.53:53'),
    'all to the server the datapath named',
  )
  // The same client socket now sends to another server: its next read looks it up again.
  server = 0xc6120236 // 198.18.2.54
  const next = new Promise<void>((resolve) => client.once('message', () => resolve()))
  client.send(dnsPacket.encode(ask('cantina.empire', 999)), s.proxy.port, '127.0.0.1')
  await next
  t.equal(s.logs.at(-1)!.destination, '198.18.2.54:53', 'judged and logged as a query to the new server')
})

t.test('a name outside the rule gets REFUSED from the proxy; the server is never asked', async (t) => {
  const s = await setup(t)
  for (const name of ['hoth.alliance', 'empire', 'EVIL.com']) {
    const a = (await s.query(ask(name, 9))) as Answer
    t.equal(a.rcode, 'REFUSED', name)
    t.equal(a.id, 9)
    t.match(a.questions, [{ name }], 'with the question echoed')
  }
  t.same(s.served, [])
  t.match(s.logs[0], {
    msg: 'dns denied',
    qname: 'hoth.alliance',
    rcode: 'REFUSED',
    reason: /no dns rule matched 'hoth.alliance'/,
  })
  t.equal(s.proxy.stats.denied, 3)
})

t.test('names match case-insensitively', async (t) => {
  const s = await setup(t)
  t.equal(((await s.query(ask('Cantina.EMPIRE'))) as Answer).rcode, 'NOERROR')
})

t.test('past its query rate a source gets REFUSED from the proxy, counted and logged at a bounded rate', async (t) => {
  const overload = testOverload({})
  const s = await setup(t, '198.18.1.10', { rate: { perSecond: 1, burst: 3 }, overload })
  const codes = []
  for (let i = 0; i < 5; i++) codes.push(((await s.query(ask('cantina.empire', i))) as Answer).rcode)
  t.same(codes, ['NOERROR', 'NOERROR', 'NOERROR', 'REFUSED', 'REFUSED'], 'the burst, then refused')
  t.equal(s.served.length, 3, 'the server was asked only for the allowed ones')
  t.equal(s.proxy.stats.rateLimited, 2)
  t.equal(s.logs.length, 3, 'no flow line per refused query')
  t.match(overload.lines, [
    { verdict: 'refused', overload: 'dns queries per source', source: /^198\.18\.1\.10:/, limit: 1 },
  ])
  t.equal(overload.lines.length, 1, 'one line for both')
  const late = (await s.query(ask('cantina.empire', 9))) as Answer
  t.equal(late.rcode, 'REFUSED')
  t.match(late.questions, [{ name: 'cantina.empire' }], 'the question echoed')
})

t.test('NXDOMAIN instead of REFUSED when configured', async (t) => {
  const s = await setup(t, '198.18.1.10', { rejectCode: 'NXDOMAIN' })
  t.equal(((await s.query(ask('hoth.alliance'))) as Answer).rcode, 'NXDOMAIN')
})

t.test('malformed queries: FORMERR when the header can be read, dropped otherwise; never a crash', async (t) => {
  const s = await setup(t)
  const garbage = Buffer.concat([
    Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]),
    Buffer.from([0x3f, 0x61]),
  ])
  const r = (await s.query(garbage)) as Answer
  t.equal(r.id, 0x1234)
  t.equal(r.rcode, 'FORMERR')
  t.equal(await s.query(Buffer.from([1, 2, 3, 4, 5]), 300), null, 'five bytes: no header, no answer')
  const two = (await s.query({
    type: 'query',
    id: 5,
    questions: [
      { type: 'A', name: 'a.empire' },
      { type: 'A', name: 'b.empire' },
    ],
  })) as Answer
  t.equal(two.rcode, 'FORMERR', 'two questions')
  const notify = dnsPacket.encode(ask('cantina.empire'))
  notify.writeUInt16BE((notify.readUInt16BE(2) & ~0x7800) | (4 << 11), 2) // opcode NOTIFY
  t.equal(((await s.query(notify)) as Answer).rcode, 'NOTIMP', 'an opcode other than QUERY')
  for (let i = 0; i < 50; i++)
    await s.query(Buffer.from(Array.from({ length: 12 + (i % 30) }, (_, j) => (i * 31 + j * 7) & 0xff)), 50)
  t.same(s.served, [], 'none reached the server')
  t.equal(((await s.query(ask('cantina.empire'))) as Answer).rcode, 'NOERROR', 'and the proxy still answers')
})

t.test('a server that does not answer: the query times out and is logged', async (t) => {
  const s = await setup(t, '198.18.1.10', { silent: true, upstreamTimeoutMs: 200 })
  t.equal(await s.query(ask('cantina.empire'), 600), null)
  t.match(s.logs, [{ msg: 'dns allowed', rcode: 'TIMEOUT' }])
  t.equal(s.proxy.stats.timedOut, 1)
})

t.test('the xwing has no DNS rule: its lookups are not the proxy’s to judge (L3/L4 decides)', async (t) => {
  const s = await setup(t, '198.18.1.20')
  t.equal(((await s.query(ask('hoth.alliance'))) as Answer).rcode, 'NOERROR')
  t.match(s.logs, [{ reason: 'no dns rule applies (L3/L4 allows it)' }])
})

t.test('over TCP: queries in one write answered by id, allowed ones by the server, denied by the proxy', async (t) => {
  const s = await setup(t)
  const answers = await s.tcpQuery([ask('cantina.empire', 1), ask('hoth.alliance', 2), ask('deathstar.empire', 3)])
  t.same(answers.map((a) => [a.id, a.rcode]).sort(), [
    [1, 'NOERROR'],
    [2, 'REFUSED'],
    [3, 'NOERROR'],
  ])
  t.match(answers.find((a) => a.id === 1)?.answers, [{ type: 'A', data: '192.0.2.3' }])
  t.same(s.served.sort(), ['cantina.empire', 'deathstar.empire'], 'only the allowed names reached the server')
  t.match(
    s.logs.filter((l) => l.msg === 'dns denied'),
    [{ qname: 'hoth.alliance' }],
  )
})

t.test(
  "an answer that does not parse is never relayed: SERVFAIL with the client's id and question, nothing learned, logged",
  async (t) => {
    const learned: string[] = []
    // The A record's data claims 5 bytes and has them: the message holds together, the record does not.
    const badA = (a: Buffer): Buffer => {
      const out = Buffer.concat([a, Buffer.from([0])])
      out.writeUInt16BE(5, a.length - 6)
      return out
    }
    const s = await setup(t, '198.18.1.10', { edit: badA, learn: (qname) => void learned.push(qname) })
    const sent = ask('CaNtInA.empire', 77)
    const udp = await s.query(sent)
    t.ok(!Buffer.isBuffer(udp) && udp !== null, 'a parseable answer')
    const a = udp as Answer
    t.match(
      a,
      { id: 77, rcode: 'SERVFAIL', answers: [], questions: [{ name: 'CaNtInA.empire', type: 'A' }] },
      'its id and its own question, as it spelt it',
    )
    const [tcp] = await s.tcpQuery([ask('deathstar.empire', 78)])
    t.match(tcp, { id: 78, rcode: 'SERVFAIL', answers: [] }, 'over TCP too')
    t.same(learned, [], 'nothing learned from it')
    t.match(
      s.logs.filter((l) => l.msg === 'dns: malformed answer from the server replaced by SERVFAIL'),
      [{ qname: 'cantina.empire', error: /A record of 5 bytes/ }, { qname: 'deathstar.empire' }],
    )
    t.match(
      s.logs.filter((l) => l.msg === 'dns allowed'),
      [{ qname: 'cantina.empire', rcode: 'SERVFAIL', answers: [] }, { rcode: 'SERVFAIL' }],
    )
  },
)
