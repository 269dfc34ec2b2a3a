// The proxy's connection to an original destination: plain TCP, or TLS when the client's TLS was
// intercepted (then the server is verified against the policy's trustedCA bundle or the system's
// trust store, for the server name the client asked for; a failure is the upstream's error, so
// the client gets 502 and the log its reason, never a silent downgrade to plain text).

import { readFileSync, statSync } from 'node:fs'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'

export interface OriginTls {
  /** The name to ask for and verify; null: verify the address (the client sent no SNI). */
  servername: string | null
  /** A PEM bundle file; null: the system's trust store. */
  trustedCA: string | null
}

export interface Origin {
  host: string
  port: number
  tls?: OriginTls
}

const bundles = new Map<string, { mtimeMs: number; pem: string }>()

/** A trustedCA file's contents, read again when it changes. */
function bundle(path: string): string {
  const mtimeMs = statSync(path).mtimeMs
  const hit = bundles.get(path)
  if (hit && hit.mtimeMs === mtimeMs) return hit.pem
  const pem = readFileSync(path, 'utf8')
  bundles.set(path, { mtimeMs, pem })
  return pem
}

/** Connects to `origin`; for TLS, offering `alpn`. Errors (including verification) arrive as the socket's 'error'. */
export function connectOrigin(origin: Origin, alpn: 'http/1.1' | 'h2'): Socket {
  const t = origin.tls
  if (!t) return netConnect({ host: origin.host, port: origin.port, noDelay: true })
  let ca: string | undefined
  try {
    ca = t.trustedCA === null ? undefined : bundle(t.trustedCA)
  } catch (e) {
    // Not a silent fallback to the system store: the connection fails with the reason.
    const failed = netConnect({ host: origin.host, port: origin.port })
    const err = Object.assign(
      new Error(`trustedCA ${t.trustedCA}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`),
      { code: 'ETRUSTEDCA' },
    )
    queueMicrotask(() => failed.destroy(err))
    return failed
  }
  const s = tlsConnect({
    host: origin.host,
    port: origin.port,
    ALPNProtocols: [alpn],
    ...(t.servername !== null ? { servername: t.servername } : {}),
    ...(ca !== undefined ? { ca } : {}),
  })
  s.setNoDelay(true)
  return s
}
