// A gRPC client for tests and demos, run from a pod's namespace:
//   node dist/lab/clients/grpc-call.js --target 198.18.2.20:50051 [--method RequestLanding]
//        [--ship NAME] [--payload-bytes N] [--deadline-ms MS] [--metadata k=v ...]
// Prints one JSON line: {"ok":true,"reply":{...}} or {"ok":false,"code":N,"details":"..."}.
// Unary methods only; streaming calls are exercised by the tests through the same client class.

import * as grpc from '@grpc/grpc-js'
import { parseArgs } from 'node:util'
import { loadDeathstar } from '../servers/deathstar-proto.js'

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    method: { type: 'string', default: 'RequestLanding' },
    ship: { type: 'string', default: 'tiefighter' },
    'payload-bytes': { type: 'string', default: '0' },
    'deadline-ms': { type: 'string', default: '5000' },
    metadata: { type: 'string', multiple: true, default: [] },
  },
})

function fail(message: string): never {
  process.stderr.write(`grpc-call: ${message}\n`)
  process.exit(2)
}

if (!values.target) fail('--target HOST:PORT is required')
if (values.method !== 'RequestLanding' && values.method !== 'FireExhaustPort') {
  fail(`--method must be RequestLanding or FireExhaustPort, got '${values.method}'`)
}
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
const deadline = new Date(Date.now() + Number(values['deadline-ms']))
const request = { ship: values.ship, payload: Buffer.alloc(Number(values['payload-bytes'])) }
const call = client[values.method] as unknown as (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, reply: unknown) => void,
) => void
call.call(client, request, md, { deadline }, (err, reply) => {
  process.stdout.write(
    JSON.stringify(err ? { ok: false, code: err.code, details: err.details } : { ok: true, reply }) + '\n',
  )
  client.close()
})
