// The agent's admin socket: routes answer JSON, unknown ones 404, the socket is root's only, a
// stale socket of a dead agent is replaced and a live agent's is not.

import { linkSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { AdminQueryError, startAdminServer } from '../proxy/agent/admin-server.js'
import { AdminError, adminGet, adminStream } from '../proxy/agent/admin-socket.js'

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
  const admin = await startAdminServer(path, {
    '/v1/status': () => ({ calls: ++calls }),
    '/v1/broken': () => {
      throw new Error('it broke')
    },
    'POST /v1/reset': () => ({ calls: (calls = 0) }),
    'POST /v1/echo': (_q, body) => ({ length: body.length, head: body.slice(0, 5) }),
  })
  t.teardown(() => admin.close())
  t.equal(statSync(path).mode & 0o777, 0o600, 'only root may talk to it')
  t.same(await adminGet(path, '/v1/status'), { calls: 1 })
  await t.rejects(adminGet(path, '/v1/nothing'), { code: 'EADMIN', message: /no such admin call/ })
  await t.rejects(adminGet(path, '/v1/broken'), { code: 'EADMIN', message: /it broke/ })
  await t.rejects(startAdminServer(path, {}), /another agent answers/, 'a live agent keeps its socket')
  t.same(await adminGet(path, '/v1/status'), { calls: 3 }, 'and still answers (the check asked it once)')

  t.same(await adminGet(path, '/v1/reset', 1000, 'POST'), { calls: 0 }, 'a POST route changes something')
  await t.rejects(
    adminGet(path, '/v1/reset'),
    { code: 'EADMIN', message: /no such admin call/ },
    'and is not there for GET',
  )
  t.same(
    await adminGet(path, '/v1/echo', 1000, 'POST', 'kind: Policy ✓'),
    { length: 14, head: 'kind:' },
    'a POST route gets the body as text',
  )
  await t.rejects(
    adminGet(path, '/v1/echo', 5000, 'POST', 'x'.repeat((1 << 20) + 1)),
    { code: 'EADMIN', message: /larger than 1048576 bytes/ },
    'one over 1 MiB is refused (413)',
  )
  await t.rejects(
    adminGet(path, '/v1/status', 1000, 'POST'),
    { code: 'EADMIN', message: /no such admin call/ },
    'nor a GET route for POST',
  )
  writeFileSync(join(dir, 'plain'), 'x')
  await t.rejects(
    startAdminServer(join(dir, 'plain'), {}),
    /is not a socket/,
    'a file that is not a socket is left alone',
  )
  const none = join(dir, 'none.sock')
  await t.rejects(
    adminGet(none, '/v1/status'),
    new AdminError('ENOAGENT', `no agent is running there (${none}: ENOENT)`),
    'no socket: no agent',
  )
})

t.test('streams: JSON lines as they come, 400 for a bad query, the producer told when the reader goes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-admin-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const path = join(dir, 'agent.sock')
  let stopped = 0
  let push: ((v: unknown) => void) | null = null
  const admin = await startAdminServer(path, {
    '/v1/feed': {
      stream: (q, write) => {
        if (q.get('bad') !== null) throw new AdminQueryError('bad is bad')
        write({ n: 0 })
        push = write
        return () => void stopped++
      },
    },
  })
  t.teardown(() => admin.close())
  const got: unknown[] = []
  const done = adminStream(path, '/v1/feed', (v) => {
    got.push(v)
    if (got.length === 1) setImmediate(() => push!({ n: 1 }))
    return got.length < 2
  })
  await done
  t.same(got, [{ n: 0 }, { n: 1 }], 'the first line, then one written later')
  for (let i = 0; i < 50 && stopped === 0; i++) await new Promise((r) => setTimeout(r, 10))
  t.equal(stopped, 1, 'the producer learns the reader left')
  await t.rejects(
    adminStream(path, '/v1/feed?bad=1', () => true),
    { code: 'EADMIN', message: /bad is bad/ },
  )
})
