// toFQDNs expiry in the kernel: an address learned from DNS is blocked again once its TTL is
// over and nothing uses it; one a connection still uses stays (a zombie) while that connection
// lives, and goes within seconds of its close (conntrack marks FIN/RST). Lab DNS gives
// speeder.empire a 3 s TTL; the node runs with no minimum TTL.

import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startLabNode } from '../lab/node-agent.js'
import { adminGet } from '../proxy/agent/admin-socket.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab } from './fixtures/lab.js'
import { waitWithin } from './fixtures/wait.js'

const SPEEDER = '192.0.2.5'
const POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: speeder }
spec:
  endpointSelector: { matchLabels: { class: tiefighter } }
  egress:
  - toEndpoints: [ { matchLabels: { "k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns } } ]
    toPorts: [ { ports: [ { port: "53", protocol: ANY } ], rules: { dns: [ { matchPattern: "*.empire" } ] } } ]
  - toFQDNs: [ { matchName: speeder.empire } ]
    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]
`

// One kept-alive connection: a request every 300 ms for the given seconds, then closed.
const LONG_CLIENT = `const [host, seconds] = process.argv.slice(1); const s = require('net').connect({ host, port: 80 });
let buf = '', sent = 0; const statuses = [];
s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\\r\\n\\r\\n')) >= 0) { const head = buf.slice(0, i); const len = Number(/content-length: (\\d+)/i.exec(head)?.[1] ?? 0); if (buf.length < i + 4 + len) break; statuses.push(head.split(' ')[1]); buf = buf.slice(i + 4 + len) } });
const tick = setInterval(() => { s.write('GET /v1/ HTTP/1.1\\r\\nHost: speeder.empire\\r\\n\\r\\n'); sent++ }, 300);
setTimeout(() => { clearInterval(tick); setTimeout(() => { s.end(); console.log(JSON.stringify({ sent, statuses })) }, 500) }, Number(seconds) * 1000);
s.on('error', (e) => { console.log(JSON.stringify({ sent, statuses, error: e.message })); process.exit(0) })`

kernelTest(t, 'toFQDNs: expired addresses blocked again, but not under a live connection (zombies)', async (t) => {
  const lab = await useLab(t)
  const dir = mkdtempSync(join(tmpdir(), 'l7-zombie-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'policy.yaml'), POLICY)
  const pin = `/run/l7proxy/test-bpffs-${lab.name}`
  const admin = join(dir, 'agent.sock')
  const node = await startLabNode({
    lab: lab.name,
    mode: 'sk-assign',
    policyFile: join(dir, 'policy.yaml'),
    pin,
    threads: 1,
    admin,
    dnsMinTtl: 0,
  })
  t.teardown(async () => {
    await node.stop()
    rmSync(pin, { recursive: true, force: true })
  })
  const curl = (): Promise<string> => lab.httpCode('tiefighter', `http://${SPEEDER}/v1/`)
  const speeder = async (): Promise<Array<{ ip: string; zombie?: boolean }>> =>
    ((await adminGet(admin, '/v1/fqdn')) as Array<{ name: string; ips: Array<{ ip: string; zombie?: boolean }> }>).find(
      (e) => e.name === 'speeder.empire',
    )?.ips ?? []
  const waitFor = (what: string, ok: () => Promise<boolean>, ms: number): Promise<number> =>
    waitWithin(what, ok, { withinMs: ms, everyMs: 200 })
  const resolve = (): Promise<unknown> =>
    lab.exec('tiefighter', ['dig', '+short', '+time=2', '+tries=1', 'speeder.empire'])

  t.equal(await curl(), '000', 'before any DNS answer the address is blocked')
  await resolve()
  t.equal(await curl(), '200', 'resolved: allowed at once')
  // That curl's connection counts as in use for 10 s after its FIN.
  const goneMs = await waitFor('the unused address expires', async () => (await speeder()).length === 0, 20_000)
  t.pass(`unused, it left the cache ${goneMs} ms after the curl (TTL 3 s, the closed connection's 10 s of grace)`)
  t.equal(await curl(), '000', 'and is blocked again')

  await resolve()
  const client = spawn(
    'ip',
    ['netns', 'exec', lab.netns('tiefighter'), process.execPath, '-e', LONG_CLIENT, SPEEDER, '8'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let out = ''
  client.stdout.on('data', (d: Buffer) => (out += d.toString()))
  const clientDone = new Promise<void>((r) => client.once('exit', () => r()))
  t.teardown(() => void client.kill())
  await waitFor(
    'the address a connection uses becomes a zombie',
    async () => (await speeder()).some((i) => i.ip === SPEEDER && i.zombie === true),
    10_000,
  )
  t.pass('past its TTL, the address a connection uses stays, marked a zombie')
  await clientDone
  const r = JSON.parse(out) as { sent: number; statuses: string[]; error?: string }
  t.equal(r.error, undefined, 'the long connection was never cut')
  t.ok(
    r.sent >= 20 && r.statuses.length === r.sent && r.statuses.every((s) => s === '200'),
    `all ${r.sent} requests over 8 s answered 200 (${r.statuses.length} answers)`,
  )
  const closedMs = await waitFor(
    'the zombie goes once its connection closed',
    async () => (await speeder()).length === 0,
    20_000,
  )
  t.ok(closedMs <= 15_000, `its connection closed, the zombie went after ${closedMs} ms (FIN: 10 s of grace)`)
  t.equal(await curl(), '000', 'and the address is blocked again')
})
