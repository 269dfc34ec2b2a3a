// The kernel datapath for real: loaded through libbpf (koffi) in the lab's node namespace,
// attached to the pods' veths, its maps driven by the policy engine's deltas.

import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { labEndpoints, nodeIfname } from '../lab/topology.js'
import { distPath } from '../lib/project-root.js'
import { PolicyEngine } from '../policy/engine.js'
import { BpfObject } from '../redirect-bpf/bpf-object.js'
import { removeBpffs } from '../redirect-bpf/bpffs.js'
import { Datapath } from '../redirect-bpf/datapath.js'
import { checkLayout, decodePolicyKey, type VerdictName } from '../redirect-bpf/map-layout.js'
import { inNetns } from '../redirect-bpf/netns.js'
import { ifindexOf, queryTc } from '../redirect-bpf/tc.js'
import { kernelTest } from './fixtures/kernel.js'
import { type LabHandle, useBpffs, useLab } from './fixtures/lab.js'
import { cnp } from './fixtures/policy-text.js'

const OBJECT = distPath('redirect-bpf/progs/from-endpoint.bpf.o')
const PODS = ['tiefighter', 'xwing']

const policy = (egress: string) =>
  cnp(
    'xwing-egress',
    '{ class: xwing }',
    `  egress:
  - toEndpoints: [ { matchLabels: { "k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns } } ]
    toPorts: [ { ports: [ { port: "53", protocol: ANY } ] } ]
${egress}`,
  )

async function curlCode(lab: LabHandle, host: string): Promise<number> {
  const r = await lab.exec(host, ['curl', '-s', '-o', '/dev/null', '--max-time', '2', 'http://198.18.2.10/v1/'], {
    timeoutMs: 10_000,
  })
  return r.code
}

/** A lab with an sk-assign datapath on the pods and an engine holding the lab's endpoints (no proxy listens). */
async function skAssignLab(t: Test): Promise<{ lab: LabHandle; engine: PolicyEngine; dp: Datapath }> {
  const lab = await useLab(t)
  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  const ids = new Map<string, number>()
  for (const ep of labEndpoints()) {
    engine.upsertEndpoint(ep)
    ids.set(ep.host, ep.id)
  }
  const dp = Datapath.start({
    mode: 'sk-assign',
    pinRoot: useBpffs(t, lab.name),
    proxyAddress: '127.0.0.1',
    proxyPorts: [15001, 15053],
    netns: lab.netns('node'),
  })
  t.teardown(() => dp.stop())
  for (const pod of PODS) dp.attach(nodeIfname(pod), ids.get(pod))
  return { lab, engine, dp }
}

kernelTest(t, 'datapath: egress L3/L4 policy enforced by the TC program, from engine deltas', async (t) => {
  const lab = await useLab(t)
  const pinRoot = useBpffs(t, lab.name)
  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  const endpointIds = new Map<string, number>()
  for (const ep of labEndpoints()) {
    engine.upsertEndpoint(ep)
    endpointIds.set(ep.host, ep.id)
  }
  engine.loadFile('xwing.yaml', policy(''))
  const xwing = endpointIds.get('xwing')!
  const tiefighter = endpointIds.get('tiefighter')!
  // No proxy listens in this test: flows that need one must be dropped.
  const start = (mode: 'sk-assign' | 'tproxy') => {
    const d = Datapath.start({
      mode,
      pinRoot,
      proxyAddress: '127.0.0.1',
      proxyPorts: [15001, 15053],
      netns: lab.netns('node'),
    })
    for (const pod of PODS) d.attach(nodeIfname(pod), endpointIds.get(pod))
    return d
  }
  let dp = start('sk-assign')
  t.teardown(() => dp.stop())
  const counter = (endpointId: number, verdict: VerdictName) =>
    dp.counters().find((c) => c.endpointId === endpointId && c.verdict === verdict)?.packets ?? 0
  const first = dp.apply(engine.takeDelta())
  t.ok(first.upserts > 0, `${first.upserts} entries written`)

  t.not(await curlCode(lab, 'xwing'), 0, 'xwing -> deathstar:80 is dropped (default deny at egress)')
  t.ok(counter(xwing, 'denied-default') > 0, 'and counted as denied by default')
  const dig = await lab.exec('xwing', ['dig', '+short', '+time=2', '+tries=1', 'cantina.empire'])
  t.same(
    dig.stdout.trim().split('\n').sort(),
    ['192.0.2.3', '192.0.2.4'],
    'xwing may still resolve through kube-dns:53',
  )
  t.ok(counter(xwing, 'allowed') > 0, 'counted as allowed')
  t.equal(await curlCode(lab, 'tiefighter'), 0, 'the tiefighter, not selected, passes')
  t.ok(counter(tiefighter, 'not-enforced') > 0, 'counted as not enforced')

  engine.loadFile(
    'xwing.yaml',
    policy(
      '  - toEndpoints: [ { matchLabels: { class: deathstar } } ]\n    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]\n',
    ),
  )
  const change = engine.takeDelta()
  t.same([...change.policy.keys()], [xwing], 'a policy change touches only the xwing')
  t.equal(change.policy.get(xwing)!.upserts.length, 1, 'with one new entry')
  dp.apply(change)
  t.equal(await curlCode(lab, 'xwing'), 0, 'after the live change xwing reaches deathstar:80')

  engine.loadFile(
    'xwing.yaml',
    policy(
      '  - toEndpoints: [ { matchLabels: { class: deathstar } } ]\n    toPorts:\n    - ports: [ { port: "80", protocol: TCP } ]\n      rules: { http: [ { method: GET } ] }\n',
    ),
  )
  dp.apply(engine.takeDelta())
  t.not(await curlCode(lab, 'xwing'), 0, 'a flow that needs the proxy is dropped while no proxy listens (fail closed)')
  t.ok(counter(xwing, 'no-proxy') > 0, 'counted as no-proxy')

  const policyKeys = () =>
    dp.object
      .map('l7_policy')
      .keys()
      .map((k) => JSON.stringify(decodePolicyKey(k)))
      .sort()
  const before = policyKeys()
  const deniedBefore = counter(xwing, 'denied-default')
  dp.stop()
  t.equal(await curlCode(lab, 'xwing'), 0, 'stopped: programs detached, no enforcement left behind')
  dp = start('tproxy') // a restart that also switches the redirect mode
  t.same(policyKeys(), before, 'a restarted datapath, in another mode, finds the pinned policy map as it was')
  t.match(
    await lab.exec('node', ['iptables', '-w', '-t', 'mangle', '-S']).then((r) => r.stdout),
    /L7PROXY_TPROXY/,
    'with the new mode in place',
  )
  t.equal(
    (await lab.exec('node', ['sysctl', '-n', 'net.ipv4.tcp_early_demux'])).stdout.trim(),
    '0',
    'and TCP early demux off in the node (a TIME_WAIT proxy socket would swallow a reused tuple)',
  )
  t.ok(counter(xwing, 'denied-default') >= deniedBefore, 'and the counters')
  t.not(await curlCode(lab, 'xwing'), 0, 'and enforces the same policy at once')
  t.equal(
    await lab.exec('xwing', ['dig', '+short', '+time=2', '+tries=1', 'speeder.empire']).then((r) => r.stdout.trim()),
    '192.0.2.5',
  )

  dp.stop()
  inNetns(lab.netns('node'), () => {
    for (const pod of PODS) {
      const idx = ifindexOf(nodeIfname(pod))
      t.equal(queryTc(idx, 'ingress'), null, `nothing attached at ingress of ${nodeIfname(pod)}`)
      t.equal(queryTc(idx, 'egress'), null, `nor at egress`)
    }
  })
  const qdiscs = await lab.exec('node', ['tc', 'qdisc', 'show'])
  t.notMatch(qdiscs.stdout, /clsact/, 'and the clsact qdiscs the datapath made are gone')
  removeBpffs(pinRoot)
  t.notOk(existsSync(pinRoot), 'pins and the bpffs are gone')
})

kernelTest(
  t,
  'datapath: a new connection on a tuple conntrack still holds is judged by the policy of now',
  async (t) => {
    const { lab, engine, dp } = await skAssignLab(t)
    // The same source port each time: the client ends with a reset, so no TIME_WAIT holds the port.
    const client = `const s = require('net').connect({ host: '198.18.2.10', port: 80, localPort: 41000 }, () => s.write('GET /v1/ HTTP/1.1\\r\\nHost: deathstar\\r\\n\\r\\n'));
    s.on('data', (d) => { if (/^HTTP\\/1\\.1 200/.test(d.toString())) { s.resetAndDestroy(); process.exit(0) } });
    s.on('error', () => process.exit(2)); setTimeout(() => process.exit(1), 2000)`
    const fromPort = async () => (await lab.exec('xwing', [process.execPath, '-e', client], { timeoutMs: 10_000 })).code
    engine.loadFile(
      'xwing.yaml',
      policy(
        '  - toEndpoints: [ { matchLabels: { class: deathstar } } ]\n    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]\n',
      ),
    )
    dp.apply(engine.takeDelta())
    t.equal(await fromPort(), 0, 'allowed: xwing:41000 -> deathstar:80')
    t.equal(await fromPort(), 0, 'and again from the same port')
    engine.loadFile('xwing.yaml', policy(''))
    dp.apply(engine.takeDelta())
    t.not(
      await fromPort(),
      0,
      'once the allow is gone, a new connection from that port is dropped, though conntrack knew its tuple',
    )
    t.not(await curlCode(lab, 'xwing'), 0, 'as from any other port')
  },
)

kernelTest(t, 'datapath: a map layout that disagrees with the object is refused at load', async (t) => {
  const pinRoot = useBpffs(t, `layout${process.pid}`)
  const obj = BpfObject.load(OBJECT, pinRoot)
  t.teardown(() => obj.close())
  const policy = obj.map('l7_policy')
  t.throws(() => policy.update(Buffer.alloc(8), Buffer.alloc(4)), {
    code: 'ELAYOUT',
    message: /key is 8 bytes, the map wants 16/,
  })
  const { MAP_LAYOUT } = await import('../redirect-bpf/map-layout.js')
  const saved = MAP_LAYOUT.l7_policy.key
  ;(MAP_LAYOUT.l7_policy as { key: number }).key = saved + 4
  try {
    t.throws(() => checkLayout(obj), {
      code: 'ELAYOUT',
      message: new RegExp(
        `map l7_policy .* has key/value ${saved}/4 bytes, redirect-bpf/map-layout\\.ts expects ${saved + 4}/4`,
      ),
    })
  } finally {
    ;(MAP_LAYOUT.l7_policy as { key: number }).key = saved
  }
  checkLayout(obj)
})

kernelTest(
  t,
  'datapath: a mode the node cannot do is refused at start, with the reason, and leaves nothing',
  async (t) => {
    const lab = await useLab(t)
    const pinRoot = useBpffs(t, lab.name)
    // A node without iptables (only `ip` on the PATH): TPROXY rules cannot be made.
    const bin = mkdtempSync(join(tmpdir(), 'l7-path-'))
    t.teardown(() => rmSync(bin, { recursive: true, force: true }))
    symlinkSync(execFileSync('sh', ['-c', 'command -v ip'], { encoding: 'utf8' }).trim(), join(bin, 'ip'))
    const path = process.env.PATH
    process.env.PATH = bin
    let err: { code?: string; message?: string } = {}
    try {
      Datapath.start({
        mode: 'tproxy',
        pinRoot,
        proxyAddress: '127.0.0.1',
        proxyPorts: [15001],
        netns: lab.netns('node'),
      })
    } catch (e) {
      err = e as typeof err
    } finally {
      process.env.PATH = path
    }
    t.equal(err.code, 'EATTACH')
    t.match(
      err.message,
      /^redirect mode 'tproxy' cannot start here: 'iptables -w -t mangle -N L7PROXY_TPROXY' failed: .*iptables/,
      'names the mode and what is missing',
    )
    const rules = await lab.exec('node', ['ip', 'rule', 'show'])
    t.notMatch(rules.stdout, /lookup 2004/, 'the half-made setup was undone')
    t.same(
      await lab.exec('node', ['ip', 'route', 'show', 'table', '2004']).then((r) => r.stdout.trim()),
      '',
      'no local route left',
    )
  },
)

kernelTest(t, 'datapath: port ranges (endPort) in the kernel, with deny winning inside them', async (t) => {
  const { lab, engine, dp } = await skAssignLab(t)
  const xwing = (body: string) => engine.loadFile('r.yaml', cnp('xwing-ranges', '{ class: xwing }', body))
  const toDeathstar = (ports: string) =>
    `  - toEndpoints: [ { matchLabels: { class: deathstar } } ]\n    toPorts: [ { ports: [ ${ports} ] } ]\n`

  xwing(`  egress:\n${toDeathstar('{ port: "64", endPort: 127, protocol: TCP }')}`)
  dp.apply(engine.takeDelta())
  t.equal(await curlCode(lab, 'xwing'), 0, 'a range 64-127 allows port 80')
  xwing(`  egress:\n${toDeathstar('{ port: "81", endPort: 127, protocol: TCP }')}`)
  dp.apply(engine.takeDelta())
  t.not(await curlCode(lab, 'xwing'), 0, 'a range 81-127 does not')
  xwing(
    `  egress:\n${toDeathstar('{ port: "0", endPort: 1023, protocol: TCP }').replace('port: "0", endPort: 1023', 'port: "1", endPort: 1023')}  egressDeny:\n${toDeathstar('{ port: "80", protocol: TCP }')}`,
  )
  dp.apply(engine.takeDelta())
  t.not(await curlCode(lab, 'xwing'), 0, 'a deny of port 80 inside an allowed range wins')
  xwing(
    `  egress:\n${toDeathstar('{ port: "80", protocol: TCP }')}  egressDeny:\n${toDeathstar('{ port: "1", endPort: 1023, protocol: TCP }')}`,
  )
  dp.apply(engine.takeDelta())
  t.not(await curlCode(lab, 'xwing'), 0, 'an allowed port inside a denied range stays denied')
  xwing(`  egress:\n${toDeathstar('{ port: "80", protocol: TCP }')}`)
  dp.apply(engine.takeDelta())
  t.equal(await curlCode(lab, 'xwing'), 0, 'and is allowed once the deny is gone')
})

kernelTest(t, 'datapath: a node is changed only where the datapath owns it, and put back at stop', async (t) => {
  const lab = await useLab(t)
  const node = (argv: string[]) => lab.exec('node', argv).then((r) => r.stdout)
  // Someone else's rule at our preference, route in our table, and early demux as they set it.
  await node(['ip', 'rule', 'add', 'fwmark', '0x7', 'lookup', '2004', 'pref', '9000'])
  await node(['ip', 'route', 'add', 'unreachable', '192.0.2.99/32', 'table', '2004'])
  await node(['sysctl', '-q', '-w', 'net.ipv4.tcp_early_demux=1'])
  t.teardown(async () => {
    await node(['ip', 'rule', 'del', 'fwmark', '0x7', 'lookup', '2004', 'pref', '9000'])
    await node(['ip', 'route', 'flush', 'table', '2004'])
  })
  for (const [i, mode] of (['tproxy', 'sk-assign', 'sk-lookup'] as const).entries()) {
    const dp = Datapath.start({
      mode,
      pinRoot: useBpffs(t, `${lab.name}${i}`),
      proxyAddress: '127.0.0.1',
      proxyPorts: [15001, 15053],
      netns: lab.netns('node'),
    })
    t.match(
      await node(['ip', 'rule', 'show', 'pref', '9000']),
      /fwmark 0x200\/0xf00 lookup 2004/,
      `${mode}: our rule is in place`,
    )
    t.match(
      await node(['ip', 'route', 'show', 'table', '2004', 'type', 'local']),
      /local default dev lo/,
      `${mode}: and our route`,
    )
    t.equal(
      (await node(['sysctl', '-n', 'net.ipv4.tcp_early_demux'])).trim(),
      '0',
      `${mode}: early demux off while it runs`,
    )
    dp.stop()
    t.notMatch(await node(['ip', 'rule', 'show', 'pref', '9000']), /0x200/, `${mode}: our rule is gone at stop`)
    t.match(
      await node(['ip', 'rule', 'show', 'pref', '9000']),
      /fwmark 0x7 lookup 2004/,
      `${mode}: the other rule at that preference stays`,
    )
    t.match(
      await node(['ip', 'route', 'show', 'table', '2004']),
      /unreachable 192\.0\.2\.99/,
      `${mode}: the other route in that table stays`,
    )
    t.equal((await node(['ip', 'route', 'show', 'table', '2004', 'type', 'local'])).trim(), '', `${mode}: ours is gone`)
    t.notMatch(await node(['iptables', '-w', '-t', 'mangle', '-S']), /L7PROXY_TPROXY/, `${mode}: no chain of ours left`)
    t.equal((await node(['sysctl', '-n', 'net.ipv4.tcp_early_demux'])).trim(), '1', `${mode}: early demux as it was`)
  }
})
