// The agent's admin socket: routes answer JSON, unknown ones 404, the socket is root's only, a
// stale socket of a dead agent is replaced and a live agent's is not.

import { linkSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startAdminServer } from '../proxy/agent/admin-server.js'
import { AdminError, adminGet } from '../proxy/agent/admin-socket.js'

t.test('routes, errors, permissions, stale and live sockets', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-admin-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const path = join(dir, 'agent.sock')

  // A socket file nobody listens on, as a killed agent leaves it: a second name for a listener's
  // socket file outlives the listener (closing removes only the first name).
  const dead = createServer()
  await new Promise<void>((r) => dead.listen(join(dir, 'first.sock'), () => r()))
  linkSync(join(dir, 'first.sock'), path)
  await new Promise<void>((r) => dead.close(() => r()))
  t.ok(statSync(path).isSocket(), 'a stale socket file is there')

  let calls = 0
  const admin = await startAdminServer(path, { '/v1/status': () => ({ calls: ++calls }), '/v1/broken': () => { throw new Error('it broke') } })
  t.teardown(() => admin.close())
  t.equal(statSync(path).mode & 0o777, 0o600, 'only root may talk to it')
  t.same(await adminGet(path, '/v1/status'), { calls: 1 })
  await t.rejects(adminGet(path, '/v1/nothing'), { code: 'EADMIN', message: /no such admin call/ })
  await t.rejects(adminGet(path, '/v1/broken'), { code: 'EADMIN', message: /it broke/ })
  await t.rejects(startAdminServer(path, {}), /another agent answers/, 'a live agent keeps its socket')
  t.same(await adminGet(path, '/v1/status'), { calls: 3 }, 'and still answers (the check asked it once)')

  writeFileSync(join(dir, 'plain'), 'x')
  await t.rejects(startAdminServer(join(dir, 'plain'), {}), /is not a socket/, 'a file that is not a socket is left alone')
  const none = join(dir, 'none.sock')
  await t.rejects(adminGet(none, '/v1/status'), new AdminError('ENOAGENT', `no agent is running there (${none}: ENOENT)`), 'no socket: no agent')
})
