// An agent that cannot start says why in one line and exits 1, having left nothing attached:
// a policy file that is missing or invalid, a pin directory it cannot create (under `ip netns
// exec` /sys/fs/bpf is a sysfs that refuses mkdir, which once made the start-up spin for ever).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startLabNode } from '../lab/node-agent.js'
import { nodeIfname } from '../lab/topology.js'
import { projectRoot } from '../lib/project-root.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab } from './fixtures/lab.js'

kernelTest(t, 'lab node: start-up errors name what failed and attach nothing', async (t) => {
  const lab = await useLab(t)
  const pin = `/run/l7proxy/test-bpffs-${lab.name}`
  t.teardown(() => rmSync(pin, { recursive: true, force: true }))
  const dir = mkdtempSync(join(tmpdir(), 'l7-startup-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const bad = join(dir, 'bad.yaml')
  writeFileSync(
    bad,
    'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec:\n  endpointSelector: 7\n',
  )
  const starWars = join(projectRoot(), 'policy/examples/star-wars.yaml')

  const cases: Array<[string, Parameters<typeof startLabNode>[0], RegExp]> = [
    [
      'a missing policy file',
      { lab: lab.name, mode: 'sk-assign', policyFile: join(dir, 'none.yaml'), pin },
      /agent: policy .*none\.yaml: ENOENT/,
    ],
    [
      'an invalid policy file',
      { lab: lab.name, mode: 'sk-assign', policyFile: bad, pin },
      /agent: policy .*bad\.yaml: .*endpointSelector/,
    ],
    // Logging to a file: exiting before the file is open must not turn into a crash trace.
    [
      'an invalid policy file, logging to a file',
      { lab: lab.name, mode: 'sk-assign', policyFile: bad, pin, logFile: join(dir, 'node.log') },
      /^lab node \(sk-assign\) did not start: agent: policy [^\n]*bad\.yaml: [^\n]*$/,
    ],
    [
      'a pin directory sysfs will not create',
      { lab: lab.name, mode: 'tproxy', policyFile: starWars, pin: '/sys/fs/bpf/l7proxy-startup-test/x' },
      /agent: datapath: cannot create \/sys\/fs\/bpf\/l7proxy-startup-test\/x for a bpffs: \w+ at /,
    ],
  ]
  for (const [what, options, message] of cases) {
    await t.rejects(
      startLabNode({ ...options, readyTimeoutMs: 30_000 }),
      message,
      `${what}: one line that says what failed`,
    )
  }
  const filters = await lab.exec('node', ['tc', 'filter', 'show', 'dev', nodeIfname('tiefighter'), 'ingress'])
  t.equal(filters.stdout.trim(), '', 'no TC program was attached by the failed starts')
})
