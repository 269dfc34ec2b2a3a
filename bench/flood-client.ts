// A client for overload tests and the overload benchmark, run inside a pod's namespace:
//
//   flood-client flood --http IP:PORT [--slow N] [--idle N] [--silent N] [--inflight N] [--storm P]
//                      [--dns IP:PORT --dns-rate Q] [--seconds S | --hold]
//     what one misbehaving pod does: N connections trickling a request head a line a second
//     (slow), N kept alive idle after one request (idle), N connected and saying nothing
//     (silent), N sending a request whose body never ends (inflight: forwarded, waiting for the
//     rest), P loops connecting again and again (storm), Q DNS queries a second (dns). With
//     --hold it prints {"held":...} once its connections are open and ends them when stdin closes.
//   flood-client probe --http IP:PORT --dns IP:PORT --name NAME [--count N] [--interval-ms I]
//     what a well-behaved pod does: N requests, each on a connection of its own, and N lookups,
//     one every I ms, each timed.
//
// Each prints one JSON line with what happened (the last line, for flood --hold). Every loop is
// bounded by a count and by time.

import { createSocket } from 'node:dgram'
import { connect, type Socket } from 'node:net'
import { parseArgs } from 'node:util'
import { dnsQuery } from '../lab/clients/dns-query.js'
import { raiseFileLimit } from '../proxy/overload/file-limit.js'
import { percentile } from './bench-support.js'

const HEAD = (path: string, host: string, close: boolean): string =>
  `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\n${close ? 'Connection: close\r\n' : ''}\r\n`
/** Connects in flight at once while opening many (the listener's accept queue is 1024 deep). */
const CONNECTING = 256
/** No connection, request or lookup waits longer than this. */
const GIVE_UP_MS = 5_000

function endpoint(s: string | undefined, what: string): { host: string; port: number } | null {
  if (s === undefined) return null
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(s)
  if (!m) throw new Error(`--${what} must be IP:PORT, got '${s}'`)
  return { host: m[1]!, port: Number(m[2]) }
}

/** How a connection ended up: still held, reset or closed by the proxy before any answer, answered, or failed otherwise. */
type Outcome = 'held' | 'refused' | 'answered' | 'failed'

interface Conn {
  socket: Socket
  outcome: Outcome
  /** Resolves once the connection has ended (or could not be made). */
  ended: Promise<void>
  /** Resolves at its first answer, or its end: the proxy has decided on it either way. */
  settled: Promise<void>
}

/** Opens a connection and runs `use` on it once connected; resolves once it is connected or has ended. */
function openOne(to: { host: string; port: number }, use: (s: Socket) => void): Promise<Conn> {
  return new Promise((resolveOpen) => {
    const socket = connect(to)
    let answered = false
    let ended: () => void = () => undefined
    let settled: () => void = () => undefined
    const c: Conn = {
      socket,
      outcome: 'held',
      ended: new Promise<void>((r) => (ended = r)),
      settled: new Promise<void>((r) => (settled = r)),
    }
    const timer = setTimeout(() => socket.destroy(), GIVE_UP_MS)
    socket.on('data', () => {
      answered = true
      settled()
    })
    socket.on('error', (e: NodeJS.ErrnoException) => {
      if (c.outcome === 'held') c.outcome = answered ? 'answered' : e.code === 'ECONNRESET' ? 'refused' : 'failed'
    })
    socket.once('close', () => {
      clearTimeout(timer)
      if (c.outcome === 'held') c.outcome = answered ? 'answered' : 'refused'
      ended()
      settled()
      resolveOpen(c)
    })
    socket.once('connect', () => {
      clearTimeout(timer)
      use(socket)
      resolveOpen(c)
    })
  })
}

/** Opens `n` connections, at most CONNECTING at a time. */
async function openMany(n: number, open: () => Promise<Conn>): Promise<Conn[]> {
  const out: Conn[] = []
  for (let i = 0; i < n; i += CONNECTING)
    out.push(...(await Promise.all(Array.from({ length: Math.min(CONNECTING, n - i) }, open))))
  return out
}

/** Connections by outcome, as they are now. */
function tally(group: readonly Conn[]): Record<string, number> {
  const c: Record<string, number> = {}
  for (const x of group) c[x.outcome] = (c[x.outcome] ?? 0) + 1
  return c
}

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED']

/** `rate` queries a second for `seconds`, in 10 ms steps; answers counted by rcode, and how long it sent (ms). */
async function dnsStorm(
  to: { host: string; port: number },
  rate: number,
  seconds: number,
  name: string,
): Promise<Record<string, number>> {
  const sock = createSocket('udp4')
  const counts: Record<string, number> = { sent: 0 }
  sock.on('message', (m) => {
    const rcode = RCODES[m[3]! & 0xf] ?? String(m[3]! & 0xf)
    counts[rcode] = (counts[rcode] ?? 0) + 1
  })
  await new Promise<void>((r) => sock.bind(0, r))
  const perStep = Math.max(1, Math.round(rate / 100))
  const steps = Math.round(seconds * 100)
  const started = Date.now()
  for (let step = 0; step < steps; step++) {
    for (let i = 0; i < perStep; i++) sock.send(dnsQuery(counts.sent++ & 0xffff, name), to.port, to.host)
    await new Promise((r) => setTimeout(r, 10))
  }
  counts.ms = Date.now() - started
  await new Promise((r) => setTimeout(r, 500))
  sock.close()
  return counts
}

async function flood(v: Record<string, string | boolean | undefined>): Promise<void> {
  const http = endpoint(v.http as string, 'http')!
  const dns = endpoint(v.dns as string | undefined, 'dns')
  const host = (v.host as string | undefined) ?? 'deathstar'
  const count = (k: string): number => Number(v[k] ?? 0)
  const seconds = Number(v.seconds ?? 10)
  raiseFileLimit(0)
  const started = Date.now()
  const stormDone = Date.now() + seconds * 1000
  const dnsRun =
    dns && count('dns-rate') > 0
      ? dnsStorm(dns, count('dns-rate'), seconds, (v.name as string | undefined) ?? 'deathstar.empire')
      : null
  // Slow heads: a line a second after the request line, never the blank line that ends the head.
  const slow = await openMany(count('slow'), () =>
    openOne(http, (s) => {
      s.write(`POST /v1/request-landing HTTP/1.1\r\nHost: ${host}\r\n`)
      const t = setInterval(() => (s.destroyed ? clearInterval(t) : s.write('X-Slow: 1\r\n')), 1000)
      s.once('close', () => clearInterval(t))
    }),
  )
  const idle = await openMany(count('idle'), () =>
    openOne(http, (s) => s.write(HEAD('/v1/request-landing', host, false))),
  )
  const silent = await openMany(count('silent'), () => openOne(http, () => undefined))
  const inflight = await openMany(count('inflight'), () =>
    openOne(http, (s) =>
      s.write(`POST /v1/request-landing HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 1000000\r\n\r\nfirst bytes`),
    ),
  )
  // The storm begins once the proxy has answered or refused every idle connection (opened after
  // the slow ones): a connect returns when the kernel queued it, before the proxy took it from
  // its budget, and a storm connection let in ahead of them would be answered.
  await Promise.all(idle.map((c) => c.settled))
  const storm: Record<string, number> = { attempts: 0 }
  const stormLoop = async (): Promise<void> => {
    for (let i = 0; i < 1_000_000 && Date.now() < stormDone; i++) {
      storm.attempts!++
      const c = await openOne(http, (s) => s.write(HEAD('/v1/request-landing', host, true)))
      await c.ended
      storm[c.outcome] = (storm[c.outcome] ?? 0) + 1
    }
  }
  const storms = Array.from({ length: count('storm') }, stormLoop)
  const all = [...slow, ...idle, ...silent, ...inflight]
  if (v.hold === true) {
    process.stdout.write(
      `${JSON.stringify({ held: all.filter((c) => c.outcome === 'held').length, openedMs: Date.now() - started })}\n`,
    )
    await new Promise<void>((resolve) => {
      process.stdin.resume()
      process.stdin.once('end', resolve)
      process.stdin.once('close', resolve)
      setTimeout(resolve, 600_000).unref()
    })
  } else await new Promise((r) => setTimeout(r, Math.max(0, stormDone - Date.now())))
  const report = { slow: tally(slow), idle: tally(idle), silent: tally(silent), inflight: tally(inflight) }
  await Promise.all(storms)
  for (const x of all) x.socket.destroy()
  process.stdout.write(
    `${JSON.stringify({ ...report, storm, dns: dnsRun ? await dnsRun : null, ms: Date.now() - started })}\n`,
  )
}

/** What a well-behaved pod sees: each request on a new connection and each lookup, timed. */
async function probe(v: Record<string, string | boolean | undefined>): Promise<void> {
  const http = endpoint(v.http as string, 'http')!
  const dns = endpoint(v.dns as string, 'dns')!
  const name = (v.name as string | undefined) ?? 'deathstar.empire'
  const host = (v.host as string | undefined) ?? 'deathstar'
  const count = Math.min(100_000, Number(v.count ?? 100))
  const interval = Number(v['interval-ms'] ?? 20)
  const httpMs: number[] = []
  const dnsMs: number[] = []
  const statuses: Record<string, number> = {}
  const rcodes: Record<string, number> = {}
  const sock = createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, r))
  const waiting = new Map<number, (rcode: string) => void>()
  sock.on('message', (m) => waiting.get(m.readUInt16BE(0))?.(RCODES[m[3]! & 0xf] ?? String(m[3]! & 0xf)))
  const request = (): Promise<string> =>
    new Promise((resolve) => {
      const s = connect(http, () => s.write(HEAD('/v1/request-landing', host, true)))
      let got = ''
      const timer = setTimeout(() => s.destroy(), GIVE_UP_MS)
      s.on('data', (d: Buffer) => (got += d.toString('latin1')))
      s.on('error', (e: NodeJS.ErrnoException) => (got ||= `error ${e.code}`))
      s.once('close', () => {
        clearTimeout(timer)
        resolve(/^HTTP\/1\.1 (\d+)/.exec(got)?.[1] ?? (got.startsWith('error') ? got : 'closed'))
      })
    })
  const lookup = (id: number): Promise<string> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => (waiting.delete(id), resolve('timeout')), GIVE_UP_MS)
      waiting.set(id, (rcode) => {
        clearTimeout(timer)
        waiting.delete(id)
        resolve(rcode)
      })
      sock.send(dnsQuery(id, name), dns.port, dns.host)
    })
  for (let i = 0; i < count; i++) {
    const t0 = performance.now()
    const status = await request()
    const t1 = performance.now()
    const rcode = await lookup(i & 0xffff)
    const t2 = performance.now()
    statuses[status] = (statuses[status] ?? 0) + 1
    rcodes[rcode] = (rcodes[rcode] ?? 0) + 1
    httpMs.push(t1 - t0)
    dnsMs.push(t2 - t1)
    await new Promise((r) => setTimeout(r, interval))
  }
  sock.close()
  const summary = (ms: number[]) => ({ p50: percentile(ms, 50), p99: percentile(ms, 99), max: percentile(ms, 100) })
  process.stdout.write(
    `${JSON.stringify({ http: { statuses, ms: summary(httpMs) }, dns: { rcodes, ms: summary(dnsMs) } })}\n`,
  )
}

const [role, ...args] = process.argv.slice(2)
const STRINGS = [
  'http',
  'dns',
  'name',
  'host',
  'slow',
  'idle',
  'silent',
  'inflight',
  'storm',
  'dns-rate',
  'seconds',
  'count',
  'interval-ms',
]
const options: Record<string, { type: 'string' | 'boolean' }> = { hold: { type: 'boolean' } }
for (const k of STRINGS) options[k] = { type: 'string' }
const values = parseArgs({ args, strict: true, options }).values as Record<string, string | boolean | undefined>
if (role === 'flood') await flood(values)
else if (role === 'probe') await probe(values)
else {
  process.stderr.write('usage: flood-client flood|probe ... (see the head of bench/flood-client.ts)\n')
  process.exit(2)
}
