// An agent killed with kill -9 leaves the kernel failing closed: flows that need the proxy are
// dropped while nothing listens, never let through, and flows that do not need it go on. A new
// agent takes over the same node and policy, and allowed traffic flows again as soon as it is up,
// including to addresses the dead agent learned from DNS (toFQDNs, from its saved cache).

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startLabNode } from '../lab/node-agent.js'
import { projectRoot } from '../lib/project-root.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab } from './fixtures/lab.js'

// sk-lookup too: there the dead agent's sk_lookup link is gone with it, and TC alone must drop.
for (const mode of ['sk-assign', 'sk-lookup'] as const) {
  kernelTest(t, `agent (${mode}): kill -9 fails closed; a restarted agent enforces the same policy`, async (t) => {
    const lab = await useLab(t)
    const pin = `/run/l7proxy/test-bpffs-${lab.name}`
    t.teardown(() => rmSync(pin, { recursive: true, force: true }))
    const policyFile = join(projectRoot(), 'policy/examples/star-wars.yaml')
    const status = (host: string, method: string, url: string): Promise<string> => lab.httpCode(host, url, { method })

    const stateDir = mkdtempSync(join(tmpdir(), 'l7-state-'))
    t.teardown(() => rmSync(stateDir, { recursive: true, force: true }))
    const first = await startLabNode({ lab: lab.name, mode, policyFile, pin, threads: 2, stateDir })
    t.equal(
      await status('tiefighter', 'POST', 'http://198.18.2.10/v1/request-landing'),
      '200',
      'allowed while the agent runs',
    )
    await lab.exec('tiefighter', ['dig', '+short', '+time=2', '+tries=1', 'cantina.empire'])
    t.not(
      await status('tiefighter', 'GET', 'http://192.0.2.3/'),
      '000',
      'cantina.empire resolved: its address is allowed (toFQDNs)',
    )
    process.kill(first.pid, 'SIGKILL')
    await first.stop()

    t.equal(
      await status('tiefighter', 'POST', 'http://198.18.2.10/v1/request-landing'),
      '000',
      'with the agent dead, a flow that needs the proxy gets no answer',
    )
    t.equal(
      await status('tiefighter', 'PUT', 'http://198.18.2.10/v1/exhaust-port'),
      '000',
      'and a request the proxy would deny never reaches the server (no 503)',
    )
    const dns = await lab.exec('xwing', ['dig', '+short', '+time=1', '+tries=1', '@198.18.2.53', 'deathstar.empire'])
    t.equal(dns.stdout.trim(), '198.18.2.10', 'a flow no L7 rule steers (the xwing asking DNS) goes on as before')

    const started = Date.now()
    const second = await startLabNode({ lab: lab.name, mode, policyFile, pin, threads: 2, stateDir })
    t.teardown(() => second.stop())
    const restartMs = Date.now() - started
    t.equal(
      await status('tiefighter', 'POST', 'http://198.18.2.10/v1/request-landing'),
      '200',
      `the new agent lets the landing through as soon as it is up (restart took ${restartMs} ms)`,
    )
    t.equal(
      await status('tiefighter', 'PUT', 'http://198.18.2.10/v1/exhaust-port'),
      '403',
      'and denies what the policy denies',
    )
    t.not(
      await status('tiefighter', 'GET', 'http://192.0.2.3/'),
      '000',
      'cantina’s address is still allowed, with no new DNS query: the learned names were restored',
    )
    t.equal(await status('tiefighter', 'GET', 'http://192.0.2.5/'), '000', 'and nothing more')
    t.equal(await second.stop(), 0, 'and stops cleanly')
  })
}
