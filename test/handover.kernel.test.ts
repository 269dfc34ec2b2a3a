// Agents taking over from one another under load, as a restart or an upgrade does: while wrk
// keeps connections alive, wrk opens one per request, dnsperf asks names, a loop of gRPC bidi
// streams runs and a loop of denied requests runs, ten agents in a row each take over from the
// last (pidfd_getfd copies of its sockets, the same pinned maps) and the last drains and exits.
// Nothing fails: no HTTP error or reset, no DNS query lost, no gRPC stream cut, and every denied
// request is still answered 403 by policy.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { projectRoot, distPath } from '../lib/project-root.js'
import { startLabNode, type LabNode } from '../lab/node-agent.js'
import { dnsperf, wrk, type Client } from '../bench/load-generators.js'
import { kernelTest } from './fixtures/kernel.js'
import { useBpffs, useLab } from './fixtures/lab.js'

const LANDING = 'http://198.18.2.10/v1/request-landing'
const TAKEOVERS = 10
const SECONDS = 45

for (const mode of ['sk-assign', 'tproxy', 'dnat'] as const) {
  kernelTest(t, `handover (${mode}): ${TAKEOVERS} agents in a row take over under load; nothing fails`, async (t) => {
    const lab = await useLab(t)
    const pin = useBpffs(t, lab.name) // mounted here, so every agent's mount namespace sees the same pins
    const dir = mkdtempSync(join(tmpdir(), 'l7-handover-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const admin = join(dir, 'agent.sock')
    let n = 0
    const agent = (takeover: boolean): Promise<LabNode> =>
      startLabNode({ lab: lab.name, mode, policyFile: join(projectRoot(), 'policy/examples/star-wars.yaml'), pin, admin, threads: 2, stateDir: join(dir, 'state'), logFile: join(dir, `agent${n++}.log`), drainTimeoutMs: 10_000, takeover })
    const agents = [await agent(false)]
    t.teardown(async () => {
      for (const a of agents) await a.stop()
    })

    const tiefighter: Client = { ns: lab.netns('tiefighter'), cgroup: null, nice: 10 }
    const queries = join(dir, 'queries.txt')
    writeFileSync(queries, 'deathstar.empire A\ncantina.empire A\ngrpc.empire A\n')
    // The load runs niced: on two cores it would otherwise starve the agents starting up.
    const loop = (script: string): Promise<string> => lab.exec('tiefighter', ['nice', '-n', '10', 'sh', '-c', `end=$(($(date +%s) + ${SECONDS})); while [ $(date +%s) -lt $end ]; do ${script}; done`], { timeoutMs: (SECONDS + 60) * 1000 }).then((r) => r.stdout)
    const load = Promise.all([
      wrk(tiefighter, { url: LANDING, seconds: SECONDS, connections: 8, method: 'POST' }),
      loop(`curl -s -o /dev/null --max-time 5 -w '%{http_code}\\n' -XPOST ${LANDING} || echo "curl exit $?"`),
      loop(`curl -s -o /dev/null --max-time 5 -w '%{http_code}\\n' -XPUT http://198.18.2.10/v1/exhaust-port; sleep 0.05`),
      dnsperf(tiefighter, { server: '198.18.2.53', seconds: SECONDS, clients: 2, outstanding: 10, queryFile: queries }),
      loop(`${process.execPath} ${distPath('lab/clients/grpc-call.js')} --target 198.18.2.20:50051 --method Chat --count 200 --deadline-ms 15000; echo`),
    ])
    const started = Date.now()
    await new Promise((r) => setTimeout(r, 2_000))
    const takeoverMs: number[] = []
    for (let i = 0; i < TAKEOVERS && Date.now() - started < (SECONDS - 3) * 1000; i++) {
      const t0 = Date.now()
      const next = await agent(true)
      takeoverMs.push(Date.now() - t0)
      const last = agents.pop()!
      agents.push(next)
      const exited = await Promise.race([last.exited, new Promise<string>((r) => setTimeout(() => r('still running after 20 s'), 20_000))])
      t.equal(exited, 0, `takeover ${i + 1}: the agent taken over from drained and exited by itself`)
    }
    const [keptAlive, perRequest, denied, dns, grpc] = await load
    t.equal(takeoverMs.length, TAKEOVERS, `${TAKEOVERS} takeovers (${takeoverMs.join(', ')} ms each)`)
    t.ok(keptAlive.ops > 0, `wrk, 8 kept-alive connections: ${keptAlive.ops} requests`)
    t.equal(keptAlive.errors, 0, 'none failed (no socket error, no status other than 2xx)')
    const codes = (out: string): Record<string, number> => out.trim().split('\n').reduce<Record<string, number>>((m, c) => ((m[c] = (m[c] ?? 0) + 1), m), {})
    t.same(Object.keys(codes(perRequest)), ['200'], `a connection per request: ${JSON.stringify(codes(perRequest))}`)
    t.same(Object.keys(codes(denied)), ['403'], `denied requests, still judged by policy: ${JSON.stringify(codes(denied))}`)
    t.ok(dns.ops > 0, `dnsperf: ${dns.ops} queries`)
    t.equal(dns.errors, 0, 'no query lost')
    const calls = grpc.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { ok: boolean; reply?: { echoes?: number }; details?: string; code?: number })
    t.ok(calls.length > 0, `${calls.length} gRPC bidi streams of 200 messages`)
    t.same(calls.filter((c) => !(c.ok && c.reply?.echoes === 200)), [], 'every stream completed')
  })
}
