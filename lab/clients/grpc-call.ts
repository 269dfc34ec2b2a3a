// A gRPC client for tests, demos and benchmarks, run from a pod's namespace:
//   node dist/lab/clients/grpc-call.js --target 198.18.2.20:50051 [--method METHOD] [--ship NAME]
//        [--payload-bytes N] [--delay-ms MS] [--deadline-ms MS] [--count N] [--metadata k=v ...]
// METHOD: RequestLanding or FireExhaustPort (unary), ListShips (server-streaming: --count ships),
// UploadLogs (client-streaming: --count lines), Chat (bidi: --count messages, one at a time).
// Prints one JSON line: {"ok":true,"reply":...,"trailers":{...}} or {"ok":false,"code":N,"details":"..."}.

import { parseArgs } from 'node:util'
import * as grpc from '@grpc/grpc-js'
import { loadDeathstar } from '../servers/deathstar-proto.js'

const METHODS = ['RequestLanding', 'FireExhaustPort', 'ListShips', 'UploadLogs', 'Chat'] as const
type Method = (typeof METHODS)[number]
const MAX_COUNT = 1_000_000

function fail(message: string): never {
  process.stderr.write(`grpc-call: ${message}\n`)
  process.exit(2)
}

function wholeNumber(name: string, raw: string, max: number): number {
  if (!/^\d+$/.test(raw) || Number(raw) > max) fail(`--${name} wants a whole number up to ${max}, got '${raw}'`)
  return Number(raw)
}

function options() {
  try {
    return parseArgs({
      options: {
        target: { type: 'string' },
        method: { type: 'string', default: 'RequestLanding' },
        ship: { type: 'string', default: 'tiefighter' },
        'payload-bytes': { type: 'string', default: '0' },
        'delay-ms': { type: 'string', default: '0' },
        'deadline-ms': { type: 'string', default: '5000' },
        count: { type: 'string', default: '10' },
        metadata: { type: 'string', multiple: true, default: [] },
      },
    }).values
  } catch (e) {
    return fail((e as Error).message)
  }
}

const values = options()

if (!values.target) fail('--target HOST:PORT is required')
const method = values.method as Method
if (!METHODS.includes(method)) fail(`--method must be one of ${METHODS.join(', ')}; got '${values.method}'`)
const payloadBytes = wholeNumber('payload-bytes', values['payload-bytes'], 64 * 1024 * 1024)
const delayMs = wholeNumber('delay-ms', values['delay-ms'], 60_000)
const deadlineMs = wholeNumber('deadline-ms', values['deadline-ms'], 3_600_000)
const count = wholeNumber('count', values.count, MAX_COUNT)

const Deathstar = loadDeathstar()
const client = new Deathstar(values.target, grpc.credentials.createInsecure(), {
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  'grpc.max_send_message_length': 64 * 1024 * 1024,
})
const md = new grpc.Metadata()
for (const kv of values.metadata) {
  const eq = kv.indexOf('=')
  if (eq < 1) fail(`--metadata wants key=value, got '${kv}'`)
  md.add(kv.slice(0, eq), kv.slice(eq + 1))
}
const opts: grpc.CallOptions = { deadline: new Date(Date.now() + deadlineMs) }
type Callback = (err: grpc.ServiceError | null, reply?: unknown) => void
const calls = client as unknown as Record<
  Method,
  (...args: unknown[]) => grpc.ClientUnaryCall & grpc.ClientDuplexStream<unknown, unknown>
>

let trailers: Record<string, unknown> = {}
let finished = false
function done(err: grpc.ServiceError | null, reply?: unknown): void {
  if (finished) return
  finished = true
  client.close()
  // A channel still connecting (a SYN the kernel dropped) would keep the process up for minutes.
  process.stdout.write(
    `${JSON.stringify(err ? { ok: false, code: err.code, details: err.details } : { ok: true, reply, trailers })}\n`,
    () => process.exit(0),
  )
}
const onStatus = (s: grpc.StatusObject) => (trailers = s.metadata.getMap())

if (method === 'RequestLanding' || method === 'FireExhaustPort') {
  const call = calls[method]({ ship: values.ship, payload: Buffer.alloc(payloadBytes), delayMs }, md, opts, ((
    err,
    reply,
  ) => setImmediate(done, err, reply)) as Callback)
  call.on('status', onStatus)
} else if (method === 'ListShips') {
  const call = calls.ListShips({ count }, md, opts)
  let received = 0
  let last: unknown = null
  call.on('data', (m: unknown) => {
    received++
    last = m
  })
  call.on('status', onStatus)
  call.on('error', (e: grpc.ServiceError) => done(e))
  call.on('end', () => setImmediate(done, null, { received, last }))
} else if (method === 'UploadLogs') {
  const call = calls.UploadLogs(md, opts, ((err, reply) => setImmediate(done, err, reply)) as Callback)
  call.on('status', onStatus)
  for (let i = 0; i < count; i++) call.write({ text: `log line ${i}` })
  call.end()
} else {
  const call = calls.Chat(md, opts)
  let echoes = 0
  let last: unknown = null
  call.on('data', (m: unknown) => {
    echoes++
    last = m
    if (echoes < count) call.write({ text: `message ${echoes}` })
    else call.end()
  })
  call.on('status', onStatus)
  call.on('error', (e: grpc.ServiceError) => done(e))
  call.on('end', () => setImmediate(done, null, { echoes, last }))
  if (count > 0) call.write({ text: 'message 0' })
  else call.end()
}
