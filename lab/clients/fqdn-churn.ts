// A pod that resolves new names at a set rate and connects at once to the address each answer
// gives, as a client of a churning object store does (bench:fqdn, the toFQDNs scale tests):
//   node dist/lab/clients/fqdn-churn.js --server IP --port P --zone Z --names N --rate R
//        [--first K] [--connect-port 80] [--timeout-ms 1000]
// Names n<K>..n<K+N-1>.<Z>, R a second. A connect that does not complete within the timeout
// counts as denied (a denied SYN is dropped). Prints one JSON line: how many were answered and
// connected, the DNS answers' latency as the client saw it, and the addresses it could not reach.

import { createSocket } from 'node:dgram'
import { connect } from 'node:net'
import { parseArgs } from 'node:util'
import { readAnswers } from '../../proxy/dns/dns-wire.js'
import type { AnswerRecord } from '../../proxy/dns/fqdn-cache.js'
import { dnsQuery } from './dns-query.js'

const MAX_NAMES = 1_000_000

function whole(name: string, raw: string | undefined, min: number, max: number): number {
  const n = Number(raw)
  if (raw === undefined || !Number.isInteger(n) || n < min || n > max) {
    process.stderr.write(`fqdn-churn: --${name} wants a whole number from ${min} to ${max}, got '${raw}'\n`)
    process.exit(2)
  }
  return n
}

const { values } = parseArgs({
  options: {
    server: { type: 'string' },
    port: { type: 'string', default: '53' },
    zone: { type: 'string' },
    names: { type: 'string' },
    rate: { type: 'string' },
    first: { type: 'string', default: '1' },
    'connect-port': { type: 'string', default: '80' },
    'timeout-ms': { type: 'string', default: '1000' },
  },
})
const o = {
  server: values.server ?? '',
  port: whole('port', values.port, 1, 65535),
  zone: values.zone ?? '',
  names: whole('names', values.names, 1, MAX_NAMES),
  rate: whole('rate', values.rate, 1, 100_000),
  first: whole('first', values.first, 0, MAX_NAMES),
  connectPort: whole('connect-port', values['connect-port'], 1, 65535),
  timeoutMs: whole('timeout-ms', values['timeout-ms'], 1, 60_000),
}
if (!o.server || !o.zone) {
  process.stderr.write('fqdn-churn: --server and --zone are required\n')
  process.exit(2)
}

const dnsMs: number[] = []
const unreachable: string[] = []
let answered = 0
let connected = 0
let unanswered = 0
let settled = 0
const pending = new Map<number, { sent: number; timer: NodeJS.Timeout }>()
const socket = createSocket('udp4')
const started = performance.now()

function finish(): void {
  if (++settled < o.names) return
  socket.close()
  dnsMs.sort((a, b) => a - b)
  const at = (p: number) =>
    dnsMs.length === 0
      ? null
      : Number(dnsMs[Math.min(dnsMs.length - 1, Math.floor((p / 100) * dnsMs.length))]!.toFixed(3))
  const out = {
    names: o.names,
    rate: o.rate,
    answered,
    unanswered,
    connected,
    denied: unreachable.length,
    unreachable: unreachable.slice(0, 20),
    dnsMs: { p50: at(50), p99: at(99), max: at(100) },
    seconds: Number(((performance.now() - started) / 1000).toFixed(3)),
  }
  process.stdout.write(`${JSON.stringify(out)}\n`)
}

function reach(address: string): void {
  const c = connect({ host: address, port: o.connectPort })
  const timer = setTimeout(() => c.destroy(new Error('timeout')), o.timeoutMs)
  c.once('connect', () => {
    connected++
    clearTimeout(timer)
    c.destroy()
    finish()
  })
  c.once('error', () => {
    clearTimeout(timer)
    unreachable.push(address)
    finish()
  })
}

socket.on('message', (msg) => {
  const p = pending.get(msg.readUInt16BE(0))
  if (!p) return
  pending.delete(msg.readUInt16BE(0))
  clearTimeout(p.timer)
  dnsMs.push(performance.now() - p.sent)
  const records: AnswerRecord[] = []
  try {
    readAnswers(msg, records)
  } catch {
    // counted as not answered below
  }
  const a = records.find((r) => r.type === 'A')
  if (!a) {
    unanswered++
    return finish()
  }
  answered++
  reach(a.data as string)
})

// Each tick sends the queries due by then: at most 16 bits of ids in flight.
let sent = 0
const tick = setInterval(() => {
  const due = Math.min(o.names, Math.floor(((performance.now() - started) / 1000) * o.rate) + 1)
  for (; sent < due; sent++) {
    const id = sent & 0xffff
    const timer = setTimeout(() => {
      pending.delete(id)
      unanswered++
      finish()
    }, o.timeoutMs * 2)
    pending.set(id, { sent: performance.now(), timer })
    socket.send(dnsQuery(id, `n${o.first + sent}.${o.zone}`), o.port, o.server)
  }
  if (sent >= o.names) clearInterval(tick)
}, 5)
