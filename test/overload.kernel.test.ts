// One pod floods the node's proxy (slow request heads, idle keep-alives, a connect storm, a DNS
// query storm) while another pod makes requests and lookups: the other pod's all succeed, fast,
// and the flooder's excess is refused at once and counted, in status and metrics alike. The agent
// runs as a user runs it (`l7proxy agent --config`), the pods' clients are bench/flood-client.ts.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { execCommand, netnsArgv } from '../lab/netns.js'
import { fileLimit } from '../lib/libc.js'
import { distPath } from '../lib/project-root.js'
import { startAgentCommand, statusUntil } from './fixtures/agent-command.js'
import { runCli } from './fixtures/cli.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab } from './fixtures/lab.js'
import { cnp } from './fixtures/policy-text.js'

const DEATHSTAR = '198.18.2.10:80'
const DNS = '198.18.2.53:53'
const PER_SOURCE = 1000
const DNS_RATE = 300
const SLOW = 600
const IDLE = 600
const FLOOD_SECONDS = 8

/** The deathstar lets both ships land; both may look up names under empire. */
const POLICY = [
  cnp(
    'deathstar',
    '{ org: empire, class: deathstar }',
    `  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } }, { matchLabels: { org: alliance } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules:
        http: [ { method: POST, path: "/v1/request-landing" } ]
`,
  ),
  ...['tiefighter', 'xwing'].map((ship) =>
    cnp(
      `${ship}-egress`,
      `{ class: ${ship} }`,
      `  egress:
  - toEndpoints: [ { matchLabels: { "k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns } } ]
    toPorts:
    - ports: [ { port: "53", protocol: ANY } ]
      rules:
        dns: [ { matchPattern: "*.empire" } ]
  - toEndpoints: [ { matchLabels: { class: deathstar } } ]
    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]
`,
    ),
  ),
].join('---\n')

/** What a root process here may raise its open-file limit to: fs.nr_open with CAP_SYS_RESOURCE, else its hard limit. */
function hostFileLimit(): number {
  const effective = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`)
  const CAP_SYS_RESOURCE = 24n
  return (effective >> CAP_SYS_RESOURCE) & 1n ? Number(readFileSync('/proc/sys/fs/nr_open', 'utf8')) : fileLimit().hard
}

interface Percentiles {
  p50: number
  p99: number
  max: number
}

kernelTest(
  t,
  "overload: one pod's flood is refused and counted; the other pod's requests and lookups all succeed, p99 under 50 ms",
  async (t) => {
    const lab = await useLab(t)
    const dir = mkdtempSync(join(tmpdir(), 'l7-overload-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    writeFileSync(join(dir, 'ships.yaml'), POLICY)
    const socket = join(dir, 'agent.sock')
    const config = join(dir, 'agent.yaml')
    writeFileSync(
      config,
      [
        `lab: ${lab.name}`,
        `policyDirectory: ${dir}`,
        `stateDirectory: ${dir}/state`,
        `admin: { socket: ${socket}, metrics: off }`,
        'overload:',
        `  connections: { perSource: ${PER_SOURCE} }`,
        `  dnsQueries: { perSecondPerSource: ${DNS_RATE}, burst: ${DNS_RATE} }`,
        '',
      ].join('\n'),
    )
    const agent = startAgentCommand(t, ['--config', config], { pin: `/run/l7proxy/agent-bpffs-${lab.name}` })
    const up = await statusUntil(agent, socket)
    t.equal(up.code, 0, `the agent is up: ${agent.out().slice(-500)}`)
    const before = JSON.parse(up.stdout) as {
      overload: { fileLimit: number; limits: { connectionsPerSource: number; connectionsPerNode: number } }
    }
    t.equal(before.overload.limits.connectionsPerSource, PER_SOURCE, 'the configured budget is in force')
    t.equal(before.overload.fileLimit, hostFileLimit(), 'the agent raised its open-file limit to what the host allows')

    const client = (pod: string, args: string[]) =>
      execCommand(netnsArgv(lab.netns(pod), [process.execPath, distPath('bench/flood-client.js'), ...args]), {
        timeoutMs: 90_000,
      })
    const flooding = client('tiefighter', [
      'flood',
      '--http',
      DEATHSTAR,
      '--slow',
      String(SLOW),
      '--idle',
      String(IDLE),
      '--storm',
      '8',
      '--dns',
      DNS,
      '--dns-rate',
      '3000',
      '--seconds',
      String(FLOOD_SECONDS),
    ])
    // The flood opens its connections first; the other pod starts while it holds them and storms.
    await new Promise((r) => setTimeout(r, 2_000))
    const probing = client('xwing', [
      'probe',
      '--http',
      DEATHSTAR,
      '--dns',
      DNS,
      '--name',
      'deathstar.empire',
      '--count',
      '150',
      '--interval-ms',
      '20',
    ])
    const [flood, probe] = await Promise.all([flooding, probing])
    t.equal(flood.code, 0, `the flood ran: ${flood.stderr}`)
    t.equal(probe.code, 0, `the probe ran: ${probe.stderr}`)
    const f = JSON.parse(flood.stdout.trim().split('\n').at(-1)!) as {
      slow: Record<string, number>
      idle: Record<string, number>
      storm: Record<string, number>
      dns: Record<string, number>
    }
    const p = JSON.parse(probe.stdout) as {
      http: { statuses: Record<string, number>; ms: Percentiles }
      dns: { rcodes: Record<string, number>; ms: Percentiles }
    }
    t.comment(`flood: ${flood.stdout.trim()}`)
    t.comment(`probe: ${probe.stdout.trim()}`)

    t.same(p.http.statuses, { '200': 150 }, 'every request of the other pod succeeded')
    t.same(p.dns.rcodes, { NOERROR: 150 }, 'and every lookup')
    t.ok(
      p.http.ms.p99 < 50,
      `requests: p99 ${p.http.ms.p99.toFixed(1)} ms (p50 ${p.http.ms.p50.toFixed(1)}, max ${p.http.ms.max.toFixed(1)})`,
    )
    t.ok(
      p.dns.ms.p99 < 50,
      `lookups: p99 ${p.dns.ms.p99.toFixed(1)} ms (p50 ${p.dns.ms.p50.toFixed(1)}, max ${p.dns.ms.max.toFixed(1)})`,
    )

    const held = (f.slow.held ?? 0) + (f.idle.held ?? 0)
    const refused = (f.slow.refused ?? 0) + (f.idle.refused ?? 0)
    t.equal(held, PER_SOURCE, 'the flooder holds its budget')
    t.equal(refused, SLOW + IDLE - PER_SOURCE, 'and no more: the rest were refused')
    t.ok(f.storm.attempts! > 100, `the connect storm tried ${f.storm.attempts} connections`)
    t.equal(f.storm.refused, f.storm.attempts, 'every one refused while the budget was spent')
    // The bucket: its burst, then the rate over the time the storm sent (and its last answers' way back).
    const allowed = DNS_RATE + (DNS_RATE * (f.dns.ms! + 500)) / 1000
    t.ok(
      f.dns.REFUSED! > 0 && (f.dns.NOERROR ?? 0) <= allowed,
      `the DNS storm: ${f.dns.NOERROR} answered (at most ${Math.round(allowed)}), ${f.dns.REFUSED} refused of ${f.dns.sent}`,
    )

    const after = await statusUntil(
      agent,
      socket,
      (r) =>
        r.code === 0 &&
        (JSON.parse(r.stdout) as { overload: { open: { connections: number } } }).overload.open.connections === 0,
    )
    const s = JSON.parse(after.stdout) as {
      overload: { open: { connections: number }; refused: { connections: { source: number }; dnsQueries: number } }
    }
    t.equal(s.overload.open.connections, 0, 'once the flood ended, every connection was given back')
    t.equal(
      s.overload.refused.connections.source,
      refused + f.storm.refused!,
      'the agent counted each refused connection',
    )
    t.equal(s.overload.refused.dnsQueries, f.dns.REFUSED, 'and each refused query')
    t.match(
      runCli(['status', '--socket', socket]).stdout,
      /refused\s+connections: source \d+, identity 0, node 0; streams: source 0, identity 0; dns queries \d+/,
      'status shows them',
    )
    t.match(
      agent.out(),
      /"overload":"connections per source".*"source":"198\.18\.1\.10"/,
      'and the refusals were logged',
    )
    t.ok(
      agent
        .out()
        .split('\n')
        .filter((l) => l.includes('"msg":"overload: refused"')).length < 40,
      'at a bounded rate',
    )
  },
)
