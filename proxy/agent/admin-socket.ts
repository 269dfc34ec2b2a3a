// Where a lab's agent answers the CLI (a unix socket, mode 0600), and the client side of it:
// GET a path, get JSON back. The server is admin-server.ts.

import { request } from 'node:http'
import { L7ProxyError } from '../../lib/l7proxy-error.js'

/** A lab's agent's socket; null: the host's agent's. */
export function agentSocketPath(lab: string | null): string {
  return lab === null ? '/run/l7proxy/agent.sock' : `/run/l7proxy/agent-${lab}.sock`
}

export class AdminError extends L7ProxyError {
  declare readonly code: 'ENOAGENT' | 'EADMIN'
  constructor(code: 'ENOAGENT' | 'EADMIN', message: string) {
    super(code, message)
  }
}

/** The agent said no: its JSON error when it gave one, else the status. */
function refusal(path: string, status: number | undefined, body: string): AdminError {
  let why: string | number | undefined = status
  try {
    why = (JSON.parse(body) as { error?: string }).error ?? why
  } catch {
    // not JSON: the status says enough
  }
  return new AdminError('EADMIN', `the agent refused ${path}: ${why}`)
}

/** No socket, or nobody on it, means no agent; anything else is what it is. */
function connectError(socketPath: string, e: NodeJS.ErrnoException): AdminError {
  if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED')
    return new AdminError('ENOAGENT', `no agent is running there (${socketPath}: ${e.code})`)
  return new AdminError('EADMIN', `${socketPath}: ${e.message}`)
}

/** GETs `path` from the agent at `socketPath` (or POSTs `body` to it): its answer's text, or an AdminError. */
export function adminGetText(
  socketPath: string,
  path: string,
  timeoutMs = 5_000,
  method: 'GET' | 'POST' = 'GET',
  body = '',
): Promise<string> {
  return new Promise((resolve, reject) => {
    const headers =
      method === 'POST'
        ? { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) }
        : {}
    const req = request({ socketPath, path, method, headers, timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => {
        if (res.statusCode === 200) return resolve(body)
        reject(refusal(path, res.statusCode, body))
      })
    })
    req.on('timeout', () =>
      req.destroy(new AdminError('EADMIN', `the agent did not answer ${path} within ${timeoutMs} ms`)),
    )
    req.on('error', (e: NodeJS.ErrnoException) => reject(e instanceof AdminError ? e : connectError(socketPath, e)))
    req.end(body)
  })
}

/** GETs (or POSTs `body` to) `path` at the agent at `socketPath`; its JSON answer, or an AdminError. */
export async function adminGet(
  socketPath: string,
  path: string,
  timeoutMs = 5_000,
  method: 'GET' | 'POST' = 'GET',
  body = '',
): Promise<unknown> {
  const text = await adminGetText(socketPath, path, timeoutMs, method, body)
  try {
    return JSON.parse(text) as unknown
  } catch {
    throw new AdminError('EADMIN', `the agent answered ${path} with something that is not JSON`)
  }
}

/**
 * Reads a stream of JSON lines from `path`, calling `onValue` for each, until the agent ends it,
 * `onValue` returns false, or the agent goes away. Resolves when it is over.
 */
export function adminStream(
  socketPath: string,
  path: string,
  onValue: (v: unknown) => boolean | undefined,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET' }, (res) => {
      let pending = ''
      res.setEncoding('utf8')
      if (res.statusCode !== 200) {
        res.on('data', (d: string) => (pending += d))
        res.on('end', () => reject(refusal(path, res.statusCode, pending)))
        return
      }
      res.on('data', (d: string) => {
        pending += d
        let nl: number
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl)
          pending = pending.slice(nl + 1)
          if (line && onValue(JSON.parse(line)) === false) {
            req.destroy()
            return resolve()
          }
        }
      })
      res.on('end', () => resolve())
      res.on('close', () => resolve())
    })
    req.on('error', (e: NodeJS.ErrnoException) => reject(connectError(socketPath, e)))
    req.end()
  })
}
