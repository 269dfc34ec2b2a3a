// The agent's admin API: HTTP on a unix socket (mode 0600: root's CLI only). A route is a
// function of the query that returns what to send as JSON, or a stream: JSON lines written as
// they come until the client goes (or reads too slowly). Routes are GETs, except those whose key
// starts with 'POST ' (the calls that change something; they get the request body as text). A stale socket file of an agent that
// died is replaced; a live agent's is not.

import { chmodSync, existsSync, lstatSync, unlinkSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { AdminError, adminGet } from './admin-socket.js'

/** A route's answer sent as it is, not as JSON (Prometheus' text format). */
export class AdminText {
  constructor(
    readonly contentType: string,
    readonly body: string,
  ) {}
}

export type AdminRoute =
  | ((query: URLSearchParams, body: string) => unknown)
  | { stream: (query: URLSearchParams, write: (value: unknown) => void) => () => void }
export type AdminRoutes = Record<string, AdminRoute>

/** A query the route cannot take: 400 with the message. */
export class AdminQueryError extends Error {}

/** A streaming client this far behind is cut off rather than buffered for. */
const MAX_STREAM_BACKLOG = 1 << 20
/** The largest request body a POST may carry (a policy file). */
const MAX_BODY_BYTES = 1 << 20

/** A request's body as text, or null when it is larger than MAX_BODY_BYTES. */
function readBody(req: import('node:http').IncomingMessage): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (d: Buffer) => {
      size += d.length
      if (size <= MAX_BODY_BYTES) chunks.push(d)
    })
    req.on('end', () => resolve(size > MAX_BODY_BYTES ? null : Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

export interface AdminServer {
  /** gently: the calls being answered get their answers first (at most a second). */
  close(gently?: boolean): Promise<void>
}

function send(res: import('node:http').ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

export async function startAdminServer(socketPath: string, routes: AdminRoutes): Promise<AdminServer> {
  if (existsSync(socketPath)) {
    if (!lstatSync(socketPath).isSocket()) throw new Error(`${socketPath} exists and is not a socket`)
    const alive = await adminGet(socketPath, '/v1/status', 1_000).then(
      () => true,
      (e: unknown) => !(e instanceof AdminError && e.code === 'ENOAGENT'),
    )
    if (alive) throw new Error(`another agent answers on ${socketPath}`)
    unlinkSync(socketPath)
  }
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://agent')
    const route =
      req.method === 'GET' ? routes[url.pathname] : req.method === 'POST' ? routes[`POST ${url.pathname}`] : undefined
    if (!route)
      return send(res, req.method === 'GET' || req.method === 'POST' ? 404 : 405, {
        error: `${req.method} ${req.url}: no such admin call`,
      })
    try {
      if (typeof route === 'function') {
        const body = req.method === 'POST' ? await readBody(req) : ''
        if (body === null)
          return send(res, 413, { error: `${req.url}: the body is larger than ${MAX_BODY_BYTES} bytes` })
        const result = await route(url.searchParams, body)
        if (!(result instanceof AdminText)) return send(res, 200, result)
        res.writeHead(200, { 'content-type': result.contentType, 'content-length': Buffer.byteLength(result.body) })
        return void res.end(result.body)
      }
      let stop = (): void => undefined
      const start = (): void => {
        if (!res.headersSent) res.writeHead(200, { 'content-type': 'application/x-ndjson' }).flushHeaders()
      }
      const write = (value: unknown): void => {
        start()
        if (res.writableLength > MAX_STREAM_BACKLOG) {
          res.end(`${JSON.stringify({ error: 'the reader fell too far behind; stream ended' })}\n`)
          stop()
          return
        }
        res.write(`${JSON.stringify(value)}\n`)
      }
      stop = route.stream(url.searchParams, write)
      start()
      res.on('close', stop)
    } catch (e) {
      send(res, e instanceof AdminQueryError ? 400 : 500, { error: (e as Error).message })
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(socketPath, () => resolve())
  })
  chmodSync(socketPath, 0o600)
  return {
    close: (gently = false) =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        if (!gently) return server.closeAllConnections()
        // The call being answered (a takeover's drain) gets its answer first.
        server.closeIdleConnections()
        setTimeout(() => server.closeAllConnections(), 1_000).unref()
      }),
  }
}
