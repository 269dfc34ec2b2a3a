// Entry point of a lab server process, started by the lab inside a host's namespace:
//   node dist/lab/servers/run.js http|grpc|https|names --name NAME --port PORT [--ca-dir DIR (https)] [--ttl S (names)]
// It runs until SIGTERM. (The DNS server is unbound, started by the lab directly; `names` is the
// generator of churning names, started by what needs it.)

import { parseArgs } from 'node:util'
import { GENERATED_NAMES } from '../topology.js'
import { startGrpcServer } from './grpc-server.js'
import { startHttpServer } from './http-server.js'
import { startHttpsServer } from './https-server.js'
import { startNameGenerator } from './name-generator.js'

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      port: { type: 'string' },
      'ca-dir': { type: 'string' },
      ttl: { type: 'string', default: '2' },
    },
  })
  const kind = positionals[0]
  const port = Number(values.port)
  const name = values.name ?? kind ?? 'lab'
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new Error(`--port must be 1..65535, got '${values.port}'`)
  let close: () => void
  if (kind === 'http') {
    const s = await startHttpServer({ name, port })
    close = () => s.close()
  } else if (kind === 'https') {
    if (!values['ca-dir']) throw new Error('https needs --ca-dir (a CA made by l7proxy certs init)')
    const s = await startHttpsServer({ name, port, caDir: values['ca-dir'] })
    close = () => s.close()
  } else if (kind === 'grpc') {
    const s = await startGrpcServer({ name, port })
    close = () => s.forceShutdown()
  } else if (kind === 'names') {
    const s = await startNameGenerator({
      port,
      zone: GENERATED_NAMES.zone,
      range: GENERATED_NAMES.range,
      ttlSeconds: Number(values.ttl),
    })
    close = () => s.close()
  } else {
    throw new Error(`unknown server kind '${kind}' (expected http, https, grpc or names)`)
  }
  process.stdout.write(`${kind} server ${name} listening on :${port}\n`)
  process.once('SIGTERM', () => {
    close()
    process.exit(0)
  })
}

main().catch((err: Error) => {
  process.stderr.write(`lab server: ${err.message}\n`)
  process.exit(1)
})
