// The lab's HTTP server: "deathstar" from Cilium's star-wars example, plus endpoints that let
// tests see what crossed the proxy (echo of method, path, headers, body digest and the peer's
// address) and stream large or chunked bodies. Bodies are streamed, never held whole.

import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'

export interface HttpServerOptions {
  name: string
  port: number
  host?: string
}

const MAX_STREAM_BYTES = 1 << 30

function send(res: ServerResponse, status: number, body: string, type = 'text/plain'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

/** Reads the request body through a digest, so 100 MB bodies cost no memory. */
function digestBody(req: IncomingMessage, done: (bytes: number, sha256: string) => void): void {
  const hash = createHash('sha256')
  let bytes = 0
  req.on('data', (chunk: Buffer) => {
    bytes += chunk.length
    hash.update(chunk)
  })
  req.on('end', () => done(bytes, hash.digest('hex')))
}

function streamBytes(res: ServerResponse, total: number): void {
  const chunk = Buffer.alloc(64 * 1024, 0x61)
  let left = total
  res.writeHead(200, { 'content-type': 'application/octet-stream' }) // no length: chunked
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, chunk.length)
      left -= n
      if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
        res.once('drain', pump)
        return
      }
    }
    res.end()
  }
  pump()
}

/** The lab server's routes, for node:http and (through its compatibility API) node:http2. */
export function handleLabRequest(name: string, req: IncomingMessage, res: ServerResponse): void {
  res.setHeader('x-lab-host', name)
  const url = new URL(req.url ?? '/', 'http://lab')
  const path = url.pathname
  if (path === '/v1' || path === '/v1/') {
    return send(
      res,
      200,
      JSON.stringify({
        name,
        endpoints: ['GET /v1', 'POST /v1/request-landing', 'PUT /v1/exhaust-port', 'ANY /v1/echo', 'GET /v1/bytes?n=N'],
      }),
      'application/json',
    )
  }
  if (path === '/v1/request-landing' && (req.method === 'POST' || req.method === 'GET')) {
    return digestBody(req, () => send(res, 200, 'Ship landed\n'))
  }
  if (path === '/v1/exhaust-port' && req.method === 'PUT') {
    return digestBody(req, () => send(res, 503, 'Panic: deathstar exploded\n'))
  }
  if (path === '/v1/echo') {
    return digestBody(req, (bytes, sha256) =>
      send(
        res,
        200,
        JSON.stringify({
          host: name,
          method: req.method,
          url: req.url,
          httpVersion: req.httpVersion,
          headers: req.headers,
          rawHeaders: req.rawHeaders,
          bodyBytes: bytes,
          bodySha256: sha256,
          remoteAddress: req.socket.remoteAddress,
          remotePort: req.socket.remotePort,
          localAddress: req.socket.localAddress,
          localPort: req.socket.localPort,
        }),
        'application/json',
      ),
    )
  }
  if (path === '/v1/bytes' && req.method === 'GET') {
    const n = Number(url.searchParams.get('n') ?? '0')
    if (!Number.isInteger(n) || n < 0 || n > MAX_STREAM_BYTES) {
      return send(res, 400, `n must be an integer in 0..${MAX_STREAM_BYTES}\n`)
    }
    return streamBytes(res, n)
  }
  req.resume()
  send(res, 404, `no route for ${req.method} ${path}\n`)
}

export function startHttpServer(opts: HttpServerOptions): Promise<Server> {
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => handleLabRequest(opts.name, req, res))
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port: opts.port, host: opts.host ?? '0.0.0.0', backlog: 1024 }, () => resolve(server))
  })
}
