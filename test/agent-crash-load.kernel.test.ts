// An agent killed with kill -9 under load fails closed, and the next one serves again: while a
// pod makes a connection per request, sends requests the policy denies and asks names (retrying
// as resolvers do), beside the handover test's load (wrk, dnsperf, gRPC streams), the agent is
// killed and a new one started on the same pinned maps. Nothing
// is let through while no agent runs (a denied request that reached the deathstar would get its
// 503), DNS clients that retry get their answers, and how long until new connections and queries
// are served again is reported.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { type Client, dnsperf, wrk } from '../bench/load-generators.js'
import { startLabNode } from '../lab/node-agent.js'
import { distPath, projectRoot } from '../lib/project-root.js'
import { kernelTest } from './fixtures/kernel.js'
import { useBpffs, useLab } from './fixtures/lab.js'

const SECONDS = 14
const LANDING = 'http://198.18.2.10/v1/request-landing'

kernelTest(
  t,
  'kill -9 under load: nothing let through while down; served again after the next agent starts (time reported)',
  async (t) => {
    const lab = await useLab(t)
    const pin = useBpffs(t, lab.name)
    const dir = mkdtempSync(join(tmpdir(), 'l7-crash-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const opts = {
      lab: lab.name,
      mode: 'sk-assign',
      policyFile: join(projectRoot(), 'policy/examples/star-wars.yaml'),
      pin,
      threads: 2,
      stateDir: join(dir, 'state'),
    }
    const first = await startLabNode({ ...opts, logFile: join(dir, 'first.log') })
    t.teardown(() => first.stop())

    // Each line: when the request or query began and ended (ms since the epoch), and its outcome.
    const loop = (script: string): Promise<string[]> =>
      lab
        .exec(
          'tiefighter',
          ['sh', '-c', `end=$(($(date +%s) + ${SECONDS})); while [ $(date +%s) -lt $end ]; do ${script}; done`],
          { timeoutMs: (SECONDS + 60) * 1000 },
        )
        .then((r) => r.stdout.trim().split('\n'))
    const stamp = 'echo "$s $(date +%s%3N) $r"'
    // The handover test's load besides (kept-alive connections, dnsperf, gRPC streams): what fails
    // of it while no agent runs is reported, not asserted.
    const tiefighter: Client = { ns: lab.netns('tiefighter'), cgroup: null, nice: 10 }
    const queries = join(dir, 'queries.txt')
    writeFileSync(queries, 'deathstar.empire A\ncantina.empire A\n')
    const background = Promise.all([
      wrk(tiefighter, { url: LANDING, seconds: SECONDS, connections: 8, method: 'POST' }),
      // Under the pod's query budget (2000/s by default), which the lookups below share.
      dnsperf(tiefighter, {
        server: '198.18.2.53',
        seconds: SECONDS,
        clients: 2,
        outstanding: 10,
        queryFile: queries,
        maxQps: 1000,
      }),
      loop(
        `${process.execPath} ${distPath('lab/clients/grpc-call.js')} --target 198.18.2.20:50051 --method Chat --count 100 --deadline-ms 5000; echo`,
      ),
    ])
    const load = Promise.all([
      loop(
        `s=$(date +%s%3N); r=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' -XPOST ${LANDING}); ${stamp}; sleep 0.02`,
      ),
      loop(
        `s=$(date +%s%3N); r=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' -XPUT http://198.18.2.10/v1/exhaust-port); ${stamp}; sleep 0.05`,
      ),
      loop(
        `s=$(date +%s%3N); r=$(dig +tries=5 +time=1 deathstar.empire | grep -o 'status: [A-Z]*'); ${stamp}; sleep 0.05`,
      ),
    ])
    await new Promise((r) => setTimeout(r, 3_000))
    const killedAt = Date.now()
    process.kill(first.pid, 'SIGKILL')
    await first.stop()
    await new Promise((r) => setTimeout(r, 1_000)) // down for a second at least
    const startedAt = Date.now()
    const second = await startLabNode({ ...opts, logFile: join(dir, 'second.log') })
    t.teardown(() => second.stop())
    const readyAt = Date.now()
    const [landings, denied, names] = await load
    const [keptAlive, dns, grpc] = await background
    const streams = grpc.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { ok: boolean })
    t.comment(
      `meanwhile: wrk ${keptAlive.ops} requests, ${keptAlive.errors} failed; dnsperf ${dns.ops} queries, ${dns.errors} lost, answers ${JSON.stringify(dns.rcodes)}; ${streams.length} gRPC streams, ${streams.filter((c) => !c.ok).length} cut`,
    )
    const parse = (lines: string[]) =>
      lines.map((line) => {
        const [began, ended, ...r] = line.split(' ')
        return { began: Number(began), at: Number(ended), r: r.join(' ') }
      })
    const l = parse(landings)
    const firstServed = l.find((x) => x.began > killedAt && x.r === '200')
    t.ok(firstServed, 'landings are served again')
    t.comment(
      `killed at 0 ms; the next agent was started at ${startedAt - killedAt} ms and was up ${readyAt - startedAt} ms later; the first new connection was served ${firstServed!.at - killedAt} ms after the kill (${firstServed!.at - startedAt} ms after the start)`,
    )
    t.same(
      l.filter((x) => x.at < killedAt && x.r !== '200'),
      [],
      'before the kill every landing was served',
    )
    t.same(
      l.filter((x) => x.began > readyAt && x.r !== '200'),
      [],
      'and once the next agent was up, every one again',
    )
    t.same(
      [...new Set(l.map((x) => x.r))].filter((r) => r !== '200' && r !== '000').sort(),
      [],
      'while no agent ran, landings failed closed (no answer), never anything else',
    )
    const d = parse(denied)
    const whileDown = d.filter((x) => x.began > killedAt && x.began < readyAt)
    t.ok(whileDown.length > 0, `denied requests were tried while no agent ran (${whileDown.length})`)
    t.same(
      [...new Set(d.map((x) => x.r))].filter((r) => r !== '403' && r !== '000'),
      [],
      'a denied request never reached the deathstar (no 503): only 403, or no answer while down',
    )
    const n = parse(names)
    t.same(
      n.filter((x) => x.r !== 'status: NOERROR'),
      [],
      `every lookup answered (${n.length}; resolvers retrying through the restart)`,
    )
  },
)
