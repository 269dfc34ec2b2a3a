// The DNS proxy on two threads (SO_REUSEPORT): queries are spread over both by their source
// port, and an answer read by the thread that does not own the FQDN cache is still held until
// the maps allow its addresses: curl by name from the tiefighter, after the cache was emptied
// each time, connects at once whichever thread answered its lookup.

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startLabNode } from '../lab/node-agent.js'
import { projectRoot } from '../lib/project-root.js'
import { adminGet } from '../proxy/agent/admin-socket.js'
import type { DnsStats } from '../proxy/dns/dns-proxy.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab } from './fixtures/lab.js'

const ROUNDS = 16

for (const mode of ['dnat', 'sk-assign'] as const) {
  kernelTest(
    t,
    `dns on two threads (${mode}): both answer, and what either learns is allowed before its answer goes`,
    async (t) => {
      const lab = await useLab(t)
      const pin = `/run/l7proxy/test-bpffs-${lab.name}`
      const dir = mkdtempSync(join(tmpdir(), 'l7-dns-threads-'))
      const admin = join(dir, 'admin.sock')
      const node = await startLabNode({
        lab: lab.name,
        mode,
        policyFile: join(projectRoot(), 'policy/examples/star-wars.yaml'),
        pin,
        dnsThreads: 2,
        admin,
      })
      t.teardown(async () => {
        await node.stop()
        rmSync(pin, { recursive: true, force: true })
        rmSync(dir, { recursive: true, force: true })
      })
      const httpStatus = (url: string, seconds = 2) => lab.httpCode('tiefighter', url, { maxTime: seconds })
      const codes: string[] = []
      for (let i = 0; i < ROUNDS; i++) {
        await adminGet(admin, '/v1/fqdn/clean', 5_000, 'POST')
        t.equal(await httpStatus('http://192.0.2.3/', 0.5), '000', `round ${i}: cantina’s address closed again`)
        codes.push(await httpStatus('http://cantina.empire/'))
      }
      t.same(
        codes.filter((c) => c === '000'),
        [],
        'every connect right after its answer was allowed',
      )
      await new Promise((r) => setTimeout(r, 1_500)) // the other thread's counters come every second
      const status = (await adminGet(admin, '/v1/status')) as { dns: { threads: number; queriesByThread: DnsStats[] } }
      t.equal(status.dns.threads, 2)
      t.equal(status.dns.queriesByThread.length, 2)
      // Each curl asks from a new port: 2^-15 that all 16 land on one thread.
      t.ok(
        status.dns.queriesByThread.every((q) => q.allowed > 0),
        `both threads answered (${status.dns.queriesByThread.map((q) => q.allowed).join(' and ')} allowed)`,
      )
      t.equal(await node.stop(), 0)
      t.same(
        node.lines().filter((l) => /max delay/.test(String(l.msg))),
        [],
        'no answer was let go before its maps were written',
      )
    },
  )
}
