// The agent's admin API: HTTP on a unix socket (mode 0600: root's CLI only), GET-only, JSON.
// Each route is a function of no arguments that returns what to send. A stale socket file of an
// agent that died is replaced; a live agent's is not.

import { chmodSync, existsSync, lstatSync, unlinkSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { AdminError, adminGet } from './admin-socket.js'

export type AdminRoutes = Record<string, () => unknown>

export interface AdminServer {
  close(): Promise<void>
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
  const server: Server = createServer((req, res) => {
    const route = req.method === 'GET' ? routes[(req.url ?? '').split('?')[0]!] : undefined
    if (!route) return send(res, req.method === 'GET' ? 404 : 405, { error: `${req.method} ${req.url}: no such admin call` })
    try {
      send(res, 200, route())
    } catch (e) {
      send(res, 500, { error: (e as Error).message })
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(socketPath, () => resolve())
  })
  chmodSync(socketPath, 0o600)
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
