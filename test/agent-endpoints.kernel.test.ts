// The node's endpoints from a file the agent watches: an endpoint added there gets its policy
// at once (and its peers' policies see it by identity), one removed leaves it, and a file with a
// problem changes nothing. Observed from the lab's pods with curl, the agent never restarted.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startLabNode } from '../lab/node-agent.js'
import { labEndpoints, nodeIfname } from '../lab/topology.js'
import { projectRoot } from '../lib/project-root.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab } from './fixtures/lab.js'
import { waitWithin } from './fixtures/wait.js'

const LANDING = 'http://198.18.2.10/v1/request-landing'

/** The lab's endpoints as an endpoints file, but for those named in `without`. */
function endpointsYaml(without: readonly string[]): string {
  const eps = labEndpoints().filter((e) => !without.includes(e.host))
  return `endpoints:\n${eps.map((e) => `- ${JSON.stringify({ id: e.id, name: e.host, interface: nodeIfname(e.host), ips: e.ips, labels: e.labels })}\n`).join('')}`
}

kernelTest(t, 'agent: endpoints appear and leave through the endpoints file, live', async (t) => {
  const lab = await useLab(t)
  const dir = mkdtempSync(join(tmpdir(), 'l7-endpoints-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'endpoints.yaml')
  writeFileSync(file, endpointsYaml(['deathstar']))
  const pin = `/run/l7proxy/test-bpffs-${lab.name}`
  const node = await startLabNode({
    lab: lab.name,
    mode: 'sk-assign',
    policyFile: join(projectRoot(), 'policy/examples/star-wars.yaml'),
    pin,
    threads: 2,
    endpointsFile: file,
  })
  t.teardown(async () => {
    await node.stop()
    rmSync(pin, { recursive: true, force: true })
  })
  const status = (host: string, method: string, url: string): Promise<string> => lab.httpCode(host, url, { method })
  const waitFor = (what: string, ok: () => Promise<boolean> | boolean): Promise<number> =>
    waitWithin(what, ok, {
      said: () => `the node said:\n${JSON.stringify(node.lines().slice(-5))}`,
    })

  t.equal(
    await status('tiefighter', 'POST', LANDING),
    '000',
    'no deathstar endpoint: its address is the world, which the tiefighter may not reach',
  )
  t.equal(await status('xwing', 'POST', LANDING), '200', 'and nothing guards it from the xwing')

  writeFileSync(file, endpointsYaml([]))
  await waitFor('the tiefighter lands', async () => (await status('tiefighter', 'POST', LANDING)) === '200')
  t.pass('the deathstar added to the file: an endpoint the tiefighter may reach')
  t.equal(await status('tiefighter', 'PUT', 'http://198.18.2.10/v1/exhaust-port'), '403', 'its L7 policy applies')
  t.equal(await status('xwing', 'POST', LANDING), '000', 'and the xwing is dropped at its door')
  await waitFor('the change logged', () => node.lines().some((l) => l.msg === 'endpoints changed'))
  t.match(
    node.lines().find((l) => l.msg === 'endpoints changed'),
    { added: ['deathstar'], changed: [], removed: [] },
    'logged',
  )

  writeFileSync(file, endpointsYaml([]).replace('"ips":["198.18.2.10"]', '"ips":["198.18.2.10/24"]'))
  await waitFor('the bad file refused', () =>
    node.lines().some((l) => l.msg === 'endpoints file refused; the endpoints in force stay'),
  )
  t.match(
    node.lines().find((l) => l.msg === 'endpoints file refused; the endpoints in force stay'),
    { error: /endpoints\.yaml:\d+:\d+: endpoints\[\d\]\.ips\[0\]: '198\.18\.2\.10\/24' is not an IPv4 address/ },
    'a bad file is refused with where and why',
  )
  t.equal(await status('tiefighter', 'POST', LANDING), '200', 'and nothing changed')

  writeFileSync(file, endpointsYaml(['deathstar']))
  await waitFor('the deathstar gone again', async () => (await status('xwing', 'POST', LANDING)) === '200')
  t.pass('the deathstar removed from the file: nothing guards it from the xwing again')
  t.equal(await status('tiefighter', 'POST', LANDING), '000', 'and to the tiefighter it is the world again')
  await waitFor('the removal logged', () =>
    node.lines().some((l) => l.msg === 'endpoints changed' && (l.removed as number[]).length > 0),
  )
  t.match(
    node
      .lines()
      .filter((l) => l.msg === 'endpoints changed')
      .at(-1),
    { removed: [3] },
  )
  t.equal(await node.stop(), 0, 'the node stops cleanly')
})

kernelTest(
  t,
  'agent: an endpoint the ipcache has no room for is refused and quarantined, then let go when it leaves',
  async (t) => {
    const lab = await useLab(t)
    const dir = mkdtempSync(join(tmpdir(), 'l7-endpoints-full-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, 'endpoints.yaml')
    writeFileSync(file, endpointsYaml(['xwing']))
    // toCIDR entries fill the ipcache of 16 beside the four endpoints.
    const fillers = 16 - (labEndpoints().length - 1)
    writeFileSync(
      join(dir, 'policy.yaml'),
      `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: { name: fill }\nspec:\n  endpointSelector: { matchLabels: { class: tiefighter } }\n  egress:\n  - toCIDR: [ ${Array.from({ length: fillers }, (_, i) => `198.18.200.${i + 1}/32`).join(', ')} ]\n`,
    )
    const pin = `/run/l7proxy/test-bpffs-${lab.name}`
    const node = await startLabNode({
      lab: lab.name,
      mode: 'sk-assign',
      policyFile: join(dir, 'policy.yaml'),
      pin,
      threads: 1,
      endpointsFile: file,
      maps: { ipcacheEntries: 16 },
    })
    t.teardown(async () => {
      await node.stop()
      rmSync(pin, { recursive: true, force: true })
    })
    const toWorld = (): Promise<string> => lab.httpCode('xwing', 'http://192.0.2.3/v1/')
    const waitFor = (what: string, ok: () => Promise<boolean> | boolean): Promise<number> =>
      waitWithin(what, ok, {
        said: () => `the node said:\n${JSON.stringify(node.lines().slice(-5))}`,
      })

    t.equal(await toWorld(), '200', 'the xwing is no endpoint yet: nothing is enforced at its interface')
    writeFileSync(file, endpointsYaml([]))
    await waitFor('the refusal logged', () =>
      node.lines().some((l) => l.msg === 'endpoint refused: the maps are full; its interface denies everything'),
    )
    t.match(
      node.lines().find((l) => l.msg === 'endpoint refused: the maps are full; its interface denies everything'),
      {
        host: 'xwing',
        error: /^endpoint \d+: refused: its 1 address\(es\) do not fit the ipcache \(16 of maps\.ipcacheEntries 16\)$/,
      },
    )
    t.equal(await toWorld(), '000', 'refused, its interface denies everything: fail closed')
    writeFileSync(file, endpointsYaml(['xwing']))
    await waitFor('the quarantine ended', async () => (await toWorld()) === '200')
    t.pass('out of the file again: its interface is let go')
  },
)
