// The lab's gRPC server: empire.Deathstar with one method of each call kind. Replies echo what
// the server saw (peer, payload size, metadata) so tests can check what crossed the proxy.

import * as grpc from '@grpc/grpc-js'
import { loadDeathstar } from './deathstar-proto.js'

export interface GrpcServerOptions {
  name: string
  port: number
  host?: string
}

const MAX_MESSAGE = 64 * 1024 * 1024
const MAX_SHIPS = 100_000

function metadataObject(md: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(md.getMap())) out[k] = Buffer.isBuffer(v) ? v.toString('base64') : v
  return out
}

type Unary = grpc.ServerUnaryCall<{ ship: string; payload: Buffer; delayMs: number }, unknown>

const MAX_DELAY_MS = 10_000

function landing(message: string) {
  return (call: Unary, cb: grpc.sendUnaryData<unknown>): void => {
    const deadline = call.getDeadline()
    const deadlineMs =
      deadline instanceof Date
        ? Math.max(0, deadline.getTime() - Date.now())
        : Number.isFinite(deadline)
          ? Math.max(0, deadline - Date.now())
          : 0
    // A trailer the client can check: trailing metadata made it back.
    const trailer = new grpc.Metadata()
    trailer.set('x-landed-ship', call.request.ship)
    const reply = () =>
      cb(
        null,
        {
          message: `${message} (${call.request.ship})`,
          peer: call.getPeer(),
          payloadBytes: call.request.payload.length,
          metadata: metadataObject(call.metadata),
          deadlineMs,
        },
        trailer,
      )
    if (call.request.delayMs <= 0) return reply()
    const timer = setTimeout(reply, Math.min(call.request.delayMs, MAX_DELAY_MS))
    call.once('cancelled', () => clearTimeout(timer))
  }
}

export function startGrpcServer(opts: GrpcServerOptions): Promise<grpc.Server> {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE,
    'grpc.max_send_message_length': MAX_MESSAGE,
  })
  server.addService(loadDeathstar().service, {
    RequestLanding: landing('Ship landed'),
    FireExhaustPort: landing('Panic: deathstar exploded'),
    ListShips(call: grpc.ServerWritableStream<{ count: number }, unknown>) {
      const count = Math.min(call.request.count, MAX_SHIPS)
      for (let i = 0; i < count; i++) call.write({ index: i, name: `ship-${i}` })
      call.end()
    },
    UploadLogs(call: grpc.ServerReadableStream<{ text: string }, unknown>, cb: grpc.sendUnaryData<unknown>) {
      let lines = 0
      let bytes = 0
      call.on('data', (m: { text: string }) => {
        lines++
        bytes += Buffer.byteLength(m.text)
      })
      call.on('end', () => cb(null, { lines, bytes }))
    },
    Chat(call: grpc.ServerDuplexStream<{ text: string }, unknown>) {
      call.on('data', (m: { text: string }) => call.write({ text: `echo: ${m.text}` }))
      call.on('end', () => call.end())
    },
  })
  return new Promise((resolve, reject) => {
    server.bindAsync(`${opts.host ?? '0.0.0.0'}:${opts.port}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(server),
    )
  })
}
