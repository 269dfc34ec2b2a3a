// The HTTP proxy in the lab, steered by the kernel in each mode: real curl from the pods, the
// example star-wars policy, the proxy running in the node namespace as the agent will.

import { spawn } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { execCommand } from '../lab/netns.js'
import { distPath, projectRoot } from '../lib/project-root.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab } from './fixtures/lab.js'

for (const mode of ['sk-assign', 'tproxy', 'dnat'] as const) {
  kernelTest(t, `http proxy in the lab (${mode}): star-wars allow and deny with real curl`, async (t) => {
    const lab = await useLab(t)
    const pin = `/run/l7proxy/test-bpffs-${lab.name}` // mounted in the child's own mount namespace
    const child = spawn(
      'ip',
      ['netns', 'exec', lab.netns('node'), process.execPath, distPath('test/fixtures/node-proxy.js'), '--mode', mode, '--policy', join(projectRoot(), 'policy/examples/star-wars.yaml'), '--pin', pin],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      await exited
      rmSync(pin, { recursive: true, force: true }) // in case it could not
    })
    const deadline = Date.now() + 20_000
    while (!out.includes('READY') && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    t.ok(out.includes('READY'), `the node proxy is up (${err.trim()})`)

    const curl = (host: string, args: string[]) => execCommand(['ip', 'netns', 'exec', lab.netns(host), 'curl', '-s', '--max-time', '3', ...args], { timeoutMs: 15_000 })
    const land = await curl('tiefighter', ['-X', 'POST', 'http://198.18.2.10/v1/request-landing'])
    t.equal(land.stdout, 'Ship landed\n', 'tiefighter lands: POST /v1/request-landing reaches the deathstar')
    const exhaust = await curl('tiefighter', ['-X', 'PUT', '-w', ' %{http_code}', 'http://198.18.2.10/v1/exhaust-port'])
    t.equal(exhaust.stdout, 'Access denied\n 403', 'PUT /v1/exhaust-port gets 403 from the proxy')
    const keepAlive = await curl('tiefighter', ['-X', 'POST', '-w', '[%{http_code} %{num_connects}]', 'http://198.18.2.10/v1/request-landing', 'http://198.18.2.10/v1/not-a-rule'])
    t.equal(keepAlive.stdout, 'Ship landed\n[200 1]Access denied\n[403 0]', 'allowed then denied on one kept-alive connection')
    const xwing = await curl('xwing', ['-X', 'POST', 'http://198.18.2.10/v1/request-landing'])
    t.not(xwing.code, 0, 'the xwing is dropped in the kernel')
    const lines = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
    t.match(lines, [
      { verdict: 'allowed', method: 'POST', path: '/v1/request-landing', source: /^198\.18\.1\.10:/, destination: '198.18.2.10:80', rules: ['CiliumNetworkPolicy/default/deathstar-l7'] },
      { verdict: 'denied', method: 'PUT', path: '/v1/exhaust-port', status: 403 },
    ], 'each decision is logged with source, destination and rule')
    child.kill('SIGTERM')
    t.equal(await exited, 0, 'the node proxy stops cleanly on SIGTERM')
    t.notOk(existsSync(pin), 'and removes its pin directory')
  })
}
