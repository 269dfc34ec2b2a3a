// The DNS proxy in the lab, in each redirect mode: real dig and curl from the tiefighter with the
// example policy (names under empire allowed, nothing else). dig accepts an answer only from the
// server it asked, so every answer checked here came back from 198.18.2.53:53.

import { rmSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { startLabNode } from '../lab/node-agent.js'
import { projectRoot } from '../lib/project-root.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab } from './fixtures/lab.js'

for (const mode of ['sk-assign', 'tproxy', 'dnat', 'sk-lookup'] as const) {
  kernelTest(
    t,
    `dns proxy in the lab (${mode}): allowed names answered by the server, others refused by the proxy`,
    async (t) => {
      const lab = await useLab(t)
      const pin = `/run/l7proxy/test-bpffs-${lab.name}`
      const node = await startLabNode({
        lab: lab.name,
        mode,
        policyFile: join(projectRoot(), 'policy/examples/star-wars.yaml'),
        pin,
      })
      t.teardown(async () => {
        await node.stop()
        rmSync(pin, { recursive: true, force: true })
      })
      const dig = async (...args: string[]) =>
        (await lab.exec('tiefighter', ['dig', '+time=2', '+tries=1', ...args], { timeoutMs: 10_000 })).stdout
      const httpStatus = (url: string) => lab.httpCode('tiefighter', url)
      t.equal(
        await httpStatus('http://192.0.2.3/'),
        '000',
        'before any answer, cantina’s address is not allowed (toFQDNs has learned nothing)',
      )
      t.not(
        await httpStatus('http://cantina.empire/'),
        '000',
        'curl by name: its connect right after the answer is allowed (the answer was held until the maps allowed it)',
      )
      t.same(
        (await dig('+short', 'cantina.empire')).trim().split('\n').sort(),
        ['192.0.2.3', '192.0.2.4'],
        'cantina.empire: the server’s answer',
      )
      t.not(await httpStatus('http://192.0.2.3/'), '000', 'after the answer, both of cantina’s addresses are allowed')
      t.not(await httpStatus('http://192.0.2.4/'), '000')
      t.match(await dig('speeder.empire'), /status: NOERROR/, 'speeder.empire resolves (the DNS rule allows *.empire)')
      t.equal(await httpStatus('http://192.0.2.5/'), '000', 'but no toFQDNs names it: its address stays closed')
      t.match(await dig('hoth.alliance'), /status: REFUSED/, 'hoth.alliance: refused')
      t.match(
        await dig('+tcp', 'grpc.empire'),
        /status: NOERROR[\s\S]*grpc\.empire\.\s+\d+\s+IN\s+A\s+198\.18\.2\.20/,
        'over TCP too: grpc.empire answered by the server',
      )
      t.match(await dig('+tcp', 'hoth.alliance'), /status: REFUSED/, 'and hoth.alliance refused')
      const landing = await lab.exec(
        'tiefighter',
        ['curl', '-s', '--max-time', '5', '-X', 'POST', 'http://deathstar/v1/request-landing'],
        { timeoutMs: 15_000 },
      )
      t.equal(
        landing.stdout,
        'Ship landed\n',
        'a name resolved through the DNS proxy, then the request through the HTTP proxy',
      )
      t.equal(await node.stop(), 0)
      const lines = node.lines()
      // curl asked A and AAAA at once: the AAAA answer (no addresses to learn) may be logged first.
      const allowed = lines.find((l) => l.msg === 'dns allowed' && l.qname === 'cantina.empire' && l.qtype === 'A')
      t.match(
        allowed,
        { source: /^198\.18\.1\.10:/, destination: '198.18.2.53:53', rcode: 'NOERROR', enforceMs: Number },
        'the allowed query is logged, with the time its addresses took to be allowed',
      )
      t.same([...((allowed?.answers ?? []) as string[])].sort(), ['A 192.0.2.3', 'A 192.0.2.4'], 'with its answers')
      t.match(
        lines.find((l) => l.msg === 'dns denied'),
        { qname: 'hoth.alliance', rcode: 'REFUSED', reason: /no dns rule matched/ },
        'and the refused one with the reason',
      )
    },
  )
}
