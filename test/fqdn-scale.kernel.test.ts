// toFQDNs at scale in the kernel: learned addresses share the identity of the selectors that
// select them (no identity per address), and an ipcache sized too small on purpose refuses the
// address that does not fit, whole: its DNS answer still goes, connections to it are denied,
// and the metric, the status and one log line say which map was full.

import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { generatedNamesPolicy, startGeneratedNames } from '../lab/generated-names.js'
import { type LabNode, type LabNodeOptions, startLabNode } from '../lab/node-agent.js'
import { findHost, GENERATED_NAMES, labEndpoints } from '../lab/topology.js'
import { adminGet } from '../proxy/agent/admin-socket.js'
import { kernelTest } from './fixtures/kernel.js'
import { type LabHandle, useLab } from './fixtures/lab.js'

const IPCACHE = 16
/** Room left for learned addresses: three. */
const FILLERS = IPCACHE - 3 - labEndpoints().flatMap((e) => e.ips).length

const POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: fqdn-scale }
spec:
  endpointSelector: { matchLabels: { class: tiefighter } }
  egress:
  - toEndpoints: [ { matchLabels: { "k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns } } ]
    toPorts: [ { ports: [ { port: "53", protocol: ANY } ], rules: { dns: [ { matchPattern: "*" } ] } } ]
  - toFQDNs: [ { matchPattern: "*.empire" }, { matchName: hoth.alliance } ]
    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]
  - toCIDR: [ ${Array.from({ length: FILLERS }, (_, i) => `198.18.200.${i + 1}/32`).join(', ')} ]
`

interface Status {
  identities: number
  maps: {
    ipcache: { entries: number; capacity: number }
    policy: { entries: number; capacity: number }
    refused: { ipcache: number; policy: number }
  }
}

interface AgentLab {
  lab: LabHandle
  dir: string
  pin: string
  /** Starts the agent (sk-assign, one HTTP thread, the policy given) with these options over those. */
  start(o?: Partial<LabNodeOptions>): Promise<LabNode>
  stop(): Promise<void>
  status(): Promise<Status>
  /** The identities of learned addresses. */
  learned(): Promise<Array<{ id: number; labels: string[] }>>
  /** The HTTP status the tiefighter gets from port 80 of `ip` ('000': no connection). */
  curl(ip: string): Promise<string>
  /** What the tiefighter's resolver (or `server`, on `port`) answers for `name`: its addresses, sorted. */
  dig(name: string, server?: { address: string; port: number }): Promise<string[]>
}

/** A lab, a directory, `policy` in it, and an agent to start; with `generatedNames`, the name generator runs. Everything goes after the test. */
async function agentLab(t: Test, policy: string, o: { generatedNames?: boolean } = {}): Promise<AgentLab> {
  const lab = await useLab(t)
  const dir = mkdtempSync(join(tmpdir(), 'l7-fqdn-scale-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  if (o.generatedNames) {
    const names = await startGeneratedNames(lab.name, dir)
    t.teardown(() => names.stop())
  }
  writeFileSync(join(dir, 'policy.yaml'), policy)
  const pin = `/run/l7proxy/test-bpffs-${lab.name}`
  const admin = join(dir, 'agent.sock')
  let node: LabNode | null = null
  const stop = async (): Promise<void> => {
    await node?.stop()
    node = null
  }
  t.teardown(async () => {
    await stop()
    rmSync(pin, { recursive: true, force: true })
  })
  return {
    lab,
    dir,
    pin,
    start: async (more = {}) =>
      (node = await startLabNode({
        lab: lab.name,
        mode: 'sk-assign',
        policyFile: join(dir, 'policy.yaml'),
        pin,
        threads: 1,
        admin,
        ...more,
      })),
    stop,
    status: async () => (await adminGet(admin, '/v1/status')) as Status,
    learned: async () =>
      ((await adminGet(admin, '/v1/identities')) as Array<{ id: number; kind: string; labels: string[] }>).filter(
        (i) => i.kind === 'fqdn',
      ),
    curl: (ip) => lab.httpCode('tiefighter', `http://${ip}/v1/`),
    dig: async (name, server) =>
      (
        await lab.exec(
          'tiefighter',
          [
            'dig',
            '+short',
            '+time=2',
            '+tries=1',
            ...(server ? ['-p', String(server.port), `@${server.address}`] : []),
            name,
          ],
          { timeoutMs: 10_000 },
        )
      ).stdout
        .trim()
        .split('\n')
        .sort(),
  }
}

/** Where the tiefighter asks for generated names. */
const GENERATOR = { address: findHost('dns').addresses[0]!, port: GENERATED_NAMES.port }

kernelTest(
  t,
  "toFQDNs: learned addresses share their selectors' identities; a full ipcache refuses the next one whole",
  async (t) => {
    t.ok(FILLERS > 0, `${FILLERS} toCIDR entries fill the ipcache up to three free`)
    const a = await agentLab(t, POLICY)
    const node = await a.start({ maps: { ipcacheEntries: IPCACHE } })
    const { status, dig, curl, learned } = a

    const start = await status()
    t.match(
      start.maps,
      { ipcache: { entries: IPCACHE - 3, capacity: IPCACHE }, refused: { ipcache: 0, policy: 0 } },
      'the ipcache is made the size set, three entries free',
    )
    // The pins are in the agent's own mount namespace.
    const shown = spawnSync(
      'nsenter',
      ['-t', String(node.pid), '-m', 'bpftool', '-j', 'map', 'show', 'pinned', join(a.pin, 'l7_ipcache')],
      { encoding: 'utf8', timeout: 10_000 },
    )
    t.match(
      JSON.parse(shown.stdout || '{}'),
      { name: 'l7_ipcache', max_entries: IPCACHE },
      `the kernel's map has that size (${shown.stderr.trim()})`,
    )
    const held = await learned()
    t.same(
      held.map((i) => i.labels.sort().join(';')).sort(),
      ['fqdn:*.empire;reserved:world', 'fqdn:hoth.alliance;reserved:world'],
      'each toFQDNs selector holds its identity before any answer',
    )

    t.same(await dig('cantina.empire'), ['192.0.2.3', '192.0.2.4'])
    t.same(await dig('hoth.alliance'), ['203.0.113.7'])
    const filled = await status()
    t.equal(filled.maps.ipcache.entries, IPCACHE, 'three learned addresses: the ipcache is full')
    t.equal(
      filled.identities,
      start.identities,
      "and not one identity more: the addresses share their selectors' identities",
    )
    t.same(await learned(), held)
    for (const ip of ['192.0.2.3', '192.0.2.4', '203.0.113.7']) t.equal(await curl(ip), '200', `${ip} allowed`)

    t.same(await dig('speeder.empire'), ['192.0.2.5'], 'an answer whose address has no room is still released')
    t.equal(await curl('192.0.2.5'), '000', 'but connections to the address are denied')
    const refused = await status()
    t.match(
      refused.maps,
      { ipcache: { entries: IPCACHE }, refused: { ipcache: 1, policy: 0 } },
      'the status counts the refusal',
    )
    // Lines reach the log within a second.
    let line: Record<string, unknown> | undefined
    for (let i = 0; i < 30 && !(line = node.lines().find((l) => l.msg === 'maps: refused')); i++)
      await new Promise((r) => setTimeout(r, 100))
    t.match(
      line,
      {
        maps: 'ipcache',
        address: '192.0.2.5',
        names: ['speeder.empire'],
        entries: IPCACHE,
        capacity: IPCACHE,
        reason: 'the ipcache map is full',
      },
      'one line says which map was full and what it refused',
    )
    t.equal(await curl('192.0.2.3'), '200', 'what fitted still works')
  },
)

const RESTORED = 10_000

/** The i-th address of the generated range (198.19.64.0/18). */
const rangeAddress = (i: number): string => `198.19.${64 + (i >> 8)}.${i & 255}`

kernelTest(
  t,
  'toFQDNs: a name rotating through new addresses adds no identity; 10,000 learned addresses come back after restarts',
  async (t) => {
    const a = await agentLab(t, generatedNamesPolicy(true), { generatedNames: true })
    const stateDir = join(a.dir, 'state')
    const start = () => a.start({ mode: 'tproxy', stateDir })
    const { status, curl } = a
    const learnedIdentities = async () => (await a.learned()).length
    const endpoints = labEndpoints().flatMap((e) => e.ips).length

    await start()
    const before = await status()
    const seen = new Set<string>()
    for (let i = 0; i < 20; i++) {
      const [ip = ''] = await a.dig(`n1.${GENERATED_NAMES.zone}`, GENERATOR)
      seen.add(ip)
      if ((await curl(ip)) !== '200') t.fail(`answer ${i + 1}: ${ip} not reachable at once`)
    }
    t.equal(seen.size, 20, 'twenty answers for one name, twenty addresses')
    const after = await status()
    t.equal(after.identities, before.identities, 'not one identity more')
    t.equal(await learnedIdentities(), 1, "every address has the selector's identity")
    t.equal(after.maps.ipcache.entries, endpoints + 20, 'twenty ipcache entries more')
    t.equal(after.maps.policy.entries, before.maps.policy.entries, 'and no policy entry more')
    await a.stop()

    // The state file as the agent keeps it, with ten thousand names of one address each.
    const expiresAt = Date.now() + 3_600_000
    writeFileSync(
      join(stateDir, 'fqdn-cache.json'),
      JSON.stringify(
        Array.from({ length: RESTORED }, (_, i) => ({
          name: `n${i}.${GENERATED_NAMES.zone}`,
          ips: [{ ip: rangeAddress(i), expiresAt }],
        })),
      ),
    )
    for (const restart of ['from a file written aside', "from the agent's own save"]) {
      const startedAt = Date.now()
      await start()
      const restored = await status()
      t.equal(
        restored.maps.ipcache.entries,
        endpoints + RESTORED,
        `${restart}: ${RESTORED} addresses restored in ${Date.now() - startedAt} ms`,
      )
      t.equal(await learnedIdentities(), 1, 'under one identity')
      for (const i of [0, 4321, RESTORED - 1])
        t.equal(await curl(rangeAddress(i)), '200', `${rangeAddress(i)} allowed without a DNS query`)
      t.equal(await curl(rangeAddress(RESTORED + 5)), '000', 'an address of the range never learned is not')
      await a.stop()
    }
  },
)

kernelTest(
  t,
  'toFQDNs: a name moving to a new address in a full ipcache takes the room its old one leaves',
  async (t) => {
    const a = await agentLab(t, generatedNamesPolicy(true), { generatedNames: true })
    // One address a name: each answer replaces the name's address.
    const node = await a.start({ maps: { ipcacheEntries: IPCACHE }, dnsMaxIps: 1 })
    const resolve = async (name: string) => (await a.dig(`${name}.${GENERATED_NAMES.zone}`, GENERATOR))[0] ?? ''
    const { curl, status } = a
    const free = IPCACHE - labEndpoints().flatMap((e) => e.ips).length
    for (let i = 0; i < free; i++) await resolve(`n${i}`)
    t.match(
      (await status()).maps,
      { ipcache: { entries: IPCACHE }, refused: { ipcache: 0 } },
      `${free} names fill the ipcache`,
    )
    let previous = await resolve('n0')
    for (let i = 0; i < 5; i++) {
      const next = await resolve('n0')
      t.not(next, previous, `answer ${i + 1}: a new address`)
      t.equal(await curl(next), '200', `answer ${i + 1}: reachable at once, the map full before and after`)
      t.equal(await curl(previous), '000', `answer ${i + 1}: the address the name left is not`)
      previous = next
    }
    t.match((await status()).maps, { ipcache: { entries: IPCACHE }, refused: { ipcache: 0 } }, 'nothing refused')
    t.notOk(
      node.lines().some((l) => /failed/.test(String(l.msg))),
      'no write failed',
    )
  },
)
