// The lab's HTTPS server: the HTTP server's routes over TLS, HTTP/2 and HTTP/1.1 by ALPN, with a
// leaf per server name minted from the CA in `caDir` (the test or demo decides whom that CA is
// trusted by: the proxy's originatingTLS trustedCA, or a client's --cacert).

import type { IncomingMessage, ServerResponse } from 'node:http'
import { createSecureServer, type Http2SecureServer } from 'node:http2'
import { LeafCache } from '../../certs/leaf-cache.js'
import { loadCa } from '../../certs/local-ca.js'
import { handleLabRequest } from './http-server.js'

export interface HttpsServerOptions {
  name: string
  port: number
  caDir: string
  host?: string
}

export function startHttpsServer(opts: HttpsServerOptions): Promise<Http2SecureServer> {
  const leaves = new LeafCache(() => loadCa(opts.caDir))
  const server = createSecureServer({
    allowHTTP1: true,
    SNICallback: (name, cb) => void leaves.context(name.toLowerCase()).then((c) => cb(null, c), cb),
  })
  server.on('request', (req, res) =>
    handleLabRequest(opts.name, req as unknown as IncomingMessage, res as unknown as ServerResponse),
  )
  server.on('sessionError', () => undefined)
  server.on('tlsClientError', () => undefined)
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port: opts.port, host: opts.host ?? '0.0.0.0' }, () => resolve(server))
  })
}
