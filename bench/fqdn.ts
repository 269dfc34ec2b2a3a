// toFQDNs at scale in the lab:
//   npm run bench:fqdn [-- --names N --rates 100,1000 --mode M --lab NAME --out FILE]
//
// The lab's name generator (lab/servers/name-generator.ts, in the DNS pod on port 5353) answers
// every name under `scale` with the next address of the world's 198.19.64.0/18 and a 2 s TTL.
// The tiefighter resolves N new names at each rate (a second) and connects at once to the
// address each answer gave (lab/clients/fqdn-churn.ts), two ways, each on a fresh agent:
//   direct   an L4 allow to the generator and a toCIDR allow of the range: no proxy, no learning
//   l7proxy  the DNS rule `*.scale` and toFQDNs `*.scale` on port 80: every answer is a first
//            learning, which must be in the maps before the answer reaches the pod
// Reported per rate: the DNS latency the pod saw (l7proxy's minus direct's is what the proxy
// adds), answer-to-enforcement from l7proxy's log (enforceMs of the answers that taught an
// address), connects denied (they raced the map update: must be 0), the identities of learned
// addresses, the ipcache and policy-map entries, and the agent's memory.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { type GeneratedNames, generatedNamesPolicy, startGeneratedNames } from '../lab/generated-names.js'
import { execIn } from '../lab/netns.js'
import { startLabNode } from '../lab/node-agent.js'
import { findHost, GENERATED_NAMES, hostNetns } from '../lab/topology.js'
import { distPath } from '../lib/project-root.js'
import { adminGet } from '../proxy/agent/admin-socket.js'
import { renderTable } from '../proxy/cli/table.js'
import {
  benchOptions,
  benchPin,
  inLabRounds,
  modeOption,
  ONE_CLIENT,
  percentile,
  runBench,
  UsageError,
  wholeOption,
  writeResult,
} from './bench-support.js'

const USAGE = 'usage: npm run bench:fqdn [-- --names N --rates 100,1000 --mode M --lab NAME --out FILE]'
const DNS_POD = findHost('dns').addresses[0]!
const WAYS = ['direct', 'l7proxy'] as const
type Way = (typeof WAYS)[number]
const ENFORCE_MS = /"enforceMs":([\d.e-]+)/

interface Client {
  names: number
  answered: number
  unanswered: number
  connected: number
  denied: number
  unreachable: string[]
  dnsMs: { p50: number; p99: number; max: number }
  seconds: number
}

interface Run {
  way: Way
  rate: number
  client: Client
  /** l7proxy: answer arrival to the maps allowing its address, over the answers that taught one. */
  enforceMs: { p50: number; p99: number; max: number; answers: number } | null
  identities: { all: number; learned: number }
  maps: { ipcache: number; policy: number }
  rssMB: number
}

async function main(): Promise<void> {
  const values = benchOptions({
    names: '10000',
    rates: '100,1000',
    mode: 'sk-assign',
    lab: 'benchfqdn',
    out: 'bench-results/fqdn.json',
  })
  const lab = values.lab
  const names = wholeOption(values, 'names', 1, 16384)
  const rates = values.rates.split(',').map((r) => Number(r))
  if (rates.some((r) => !Number.isInteger(r) || r < 1 || r > 10_000))
    throw new UsageError(`--rates wants whole numbers from 1 to 10000, comma-separated, got '${values.rates}'`)
  const mode = modeOption(values.mode)
  if (mode === 'sockmap')
    throw new UsageError('--mode sockmap redirects TCP only; DNS is measured in dnat, tproxy, sk-assign or sk-lookup')
  const scenarios = rates.flatMap((rate) => WAYS.map((way) => `${way}@${rate}`))
  let generator: GeneratedNames | null = null

  const measured = await inLabRounds({
    lab,
    tmpPrefix: 'l7-bench-fqdn-',
    scenarios,
    rounds: 1,
    pins: scenarios.map((s) => benchPin(lab, s.replace('@', '-'))),
    describe: (r: Run) => `${r.client.connected}/${r.client.names} connected, ${r.client.denied} denied`,
    measure: async (scenario, dir, hold): Promise<Run> => {
      const [way, rateText] = scenario.split('@') as [Way, string]
      const rate = Number(rateText)
      generator ??= await startGeneratedNames(lab, dir)
      const policyFile = join(dir, `${way}.yaml`)
      writeFileSync(policyFile, generatedNamesPolicy(way === 'l7proxy'))
      const admin = join(dir, `${way}-${rate}.sock`)
      // With a state directory, as an agent on a node has: the cache is saved as it grows.
      const node = await startLabNode({
        lab,
        mode,
        policyFile,
        pin: benchPin(lab, scenario.replace('@', '-')),
        threads: 1,
        admin,
        stateDir: join(dir, `state-${way}-${rate}`),
        logFile: join(dir, `${way}-${rate}.log`),
        overload: ONE_CLIENT,
      })
      hold(() => node.stop().then(() => undefined))
      const churn = await execIn(
        hostNetns(lab, 'tiefighter'),
        [
          process.execPath,
          distPath('lab/clients/fqdn-churn.js'),
          '--server',
          DNS_POD,
          '--port',
          String(GENERATED_NAMES.port),
          '--zone',
          GENERATED_NAMES.zone,
          '--names',
          String(names),
          '--rate',
          String(rate),
        ],
        { timeoutMs: (names / rate) * 1000 + 60_000 },
      )
      if (churn.code !== 0) throw new Error(`${scenario}: the client failed: ${churn.stderr.trim()}`)
      const client = JSON.parse(churn.stdout) as Client
      const status = (await adminGet(admin, '/v1/status')) as {
        identities: number
        maps: { ipcache: { entries: number }; policy: { entries: number } }
        overload: { rssBytes: number }
      }
      const learned = ((await adminGet(admin, '/v1/identities')) as Array<{ kind: string }>).filter(
        (i) => i.kind === 'fqdn',
      ).length
      await node.stop()
      let enforceMs: Run['enforceMs'] = null
      if (way === 'l7proxy') {
        const enforce: number[] = []
        await node.eachLine((l) => {
          const ms = ENFORCE_MS.exec(l)
          if (ms && Number(ms[1]) > 0 && l.endsWith('"msg":"dns allowed"}')) enforce.push(Number(ms[1]))
        })
        enforceMs = {
          p50: percentile(enforce, 50),
          p99: percentile(enforce, 99),
          max: percentile(enforce, 100),
          answers: enforce.length,
        }
      }
      return {
        way,
        rate,
        client,
        enforceMs,
        identities: { all: status.identities, learned },
        maps: { ipcache: status.maps.ipcache.entries, policy: status.maps.policy.entries },
        rssMB: Math.round(status.overload.rssBytes / 2 ** 20),
      }
    },
  }).finally(() => generator?.stop())

  const runs = scenarios.map((s) => measured[s]![0]!)
  const direct = (rate: number) => runs.find((r) => r.way === 'direct' && r.rate === rate)!
  const rows = runs.map((r) => ({
    ...r,
    addedDnsMs:
      r.way === 'direct'
        ? null
        : {
            p50: r.client.dnsMs.p50 - direct(r.rate).client.dnsMs.p50,
            p99: r.client.dnsMs.p99 - direct(r.rate).client.dnsMs.p99,
          },
  }))
  const out = writeResult(values.out, {
    benchmark: 'fqdn',
    date: new Date().toISOString(),
    mode,
    names,
    rates,
    generator: GENERATED_NAMES,
    rows,
  })
  const f = (n: number | undefined | null): string =>
    n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(2)
  process.stdout.write(
    renderTable(
      [
        'names/s',
        'way',
        'connected',
        'denied',
        'DNS p50/p99 ms',
        'added p50/p99 ms',
        'enforce p50/p99/max ms',
        'learned ids',
        'ipcache',
        'policy',
        'RSS MB',
      ],
      rows.map((r) => [
        String(r.rate),
        r.way,
        `${r.client.connected}/${r.client.names}`,
        String(r.client.denied),
        `${f(r.client.dnsMs.p50)}/${f(r.client.dnsMs.p99)}`,
        r.addedDnsMs ? `${f(r.addedDnsMs.p50)}/${f(r.addedDnsMs.p99)}` : '-',
        r.enforceMs ? `${f(r.enforceMs.p50)}/${f(r.enforceMs.p99)}/${f(r.enforceMs.max)}` : '-',
        String(r.identities.learned),
        String(r.maps.ipcache),
        String(r.maps.policy),
        String(r.rssMB),
      ]),
    ),
  )
  process.stdout.write(`mode ${mode}, ${names} new names at each rate, one agent per row; wrote ${out}\n`)
}

runBench('bench:fqdn', USAGE, main)
