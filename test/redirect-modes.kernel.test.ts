// Each implemented redirect mode steers a flow with L7 rules to a transparent listener on the
// node, which sees the client's own address and the original destination; other flows go
// straight to the server; with no listener the steered flow is dropped (fail closed).

import { spawnSync } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import t from 'tap'
import { LAB_HOSTS, nodeIfname } from '../lab/topology.js'
import { distPath } from '../lib/project-root.js'
import { PolicyEngine } from '../policy/engine.js'
import { BpfObject } from '../redirect-bpf/bpf-object.js'
import { ensureBpffs, removeBpffs } from '../redirect-bpf/bpffs.js'
import { checkLayout, readCounters, writeConfig, type VerdictName } from '../redirect-bpf/map-layout.js'
import { REDIRECT_MODES, ROUTE_TABLE, parseMode, setupMode, teardownModes, type Run } from '../redirect-bpf/modes/redirect-mode.js'
import { inNetns } from '../redirect-bpf/netns.js'
import { PolicyWriter } from '../redirect-bpf/policy-writer.js'
import { attachTc, ifindexOf } from '../redirect-bpf/tc.js'
import { transparentTcpListener } from '../redirect-bpf/transparent-socket.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab, type LabHandle } from './fixtures/lab.js'

const PROXY_PORT = 15001
const POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: tiefighter-l7 }
spec:
  endpointSelector: { matchLabels: { class: tiefighter } }
  egress:
  - toEndpoints: [ { matchLabels: { class: deathstar } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules: { http: [ { method: GET } ] }
`

async function curl(lab: LabHandle, host: string, urls: string[]) {
  return lab.exec(host, ['curl', '-s', '--max-time', '3', ...urls.flatMap((u) => [u, '-w', '\\n'])], { timeoutMs: 15_000 })
}

t.test('redirect modes: names', async (t) => {
  t.equal(parseMode('tproxy'), 'tproxy')
  t.throws(() => parseMode('sockmap'), { message: /redirect mode 'sockmap' is not implemented yet \(available: tproxy, sk-assign\)/ })
  t.throws(() => parseMode('magic'), { message: /unknown redirect mode 'magic'/ })
})

for (const mode of REDIRECT_MODES) {
  kernelTest(t, `redirect mode ${mode}: L7 flows reach the proxy with their original destination`, async (t) => {
    const lab = await useLab(t)
    const node = lab.netns('node')
    const run: Run = (argv) => {
      const r = spawnSync('ip', ['netns', 'exec', node, ...argv], { encoding: 'utf8', timeout: 10_000 })
      return { code: r.status ?? 1, stderr: r.stderr }
    }
    const pinRoot = `/run/l7proxy/test-bpffs-${lab.name}`
    ensureBpffs(pinRoot)
    t.teardown(() => removeBpffs(pinRoot))

    const engine = new PolicyEngine({ proxyPorts: { http: PROXY_PORT, dns: 15053 } })
    const ids = new Map<string, number>()
    LAB_HOSTS.filter((h) => h.role !== 'external').forEach((h, i) => {
      engine.upsertEndpoint({ id: i + 1, labels: h.labels, ips: h.addresses })
      ids.set(h.name, i + 1)
    })
    engine.loadFile('l7.yaml', POLICY)
    const ifindex = new Map<number, number>()
    const obj = inNetns(node, () => {
      const o = BpfObject.load(distPath('redirect-bpf/progs/from-endpoint.bpf.o'), pinRoot)
      checkLayout(o)
      writeConfig(o, mode, '127.0.0.1')
      for (const pod of ['tiefighter', 'xwing']) {
        const idx = ifindexOf(nodeIfname(pod))
        ifindex.set(ids.get(pod)!, idx)
        attachTc(idx, 'ingress', o.programFd('from_endpoint'))
      }
      return o
    })
    t.teardown(() => obj.close())
    new PolicyWriter(obj, (id) => ifindex.get(id)).apply(engine.takeDelta())
    setupMode(mode, run, [PROXY_PORT])
    t.teardown(() => teardownModes(run))

    const fd = inNetns(node, () => transparentTcpListener('127.0.0.1', PROXY_PORT))
    const proxy: Server = createServer({ keepAlive: true }, (req, res) => {
      res.setHeader('connection', 'keep-alive')
      res.end(JSON.stringify({ local: `${req.socket.localAddress}:${req.socket.localPort}`, remote: req.socket.remoteAddress, port: req.socket.remotePort }))
    })
    await new Promise<void>((resolve) => proxy.listen({ fd }, resolve))
    let proxyOpen = true
    t.teardown(() => (proxyOpen ? new Promise((r) => proxy.close(r)) : undefined))

    const tie = ids.get('tiefighter')!
    const count = (verdict: VerdictName) => readCounters(obj).find((c) => c.endpointId === tie && c.verdict === verdict)?.packets ?? 0
    const r = await curl(lab, 'tiefighter', ['http://198.18.2.10/v1/', 'http://198.18.2.10/v1/again'])
    t.equal(r.code, 0, `curl ok: ${r.stderr}`)
    const answers = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { local: string; remote: string; port: number })
    t.equal(answers.length, 2, 'two requests answered')
    for (const a of answers) {
      t.equal(a.local, '198.18.2.10:80', 'the proxy sees the original destination')
      t.equal(a.remote, '198.18.1.10', "and the client's own address")
    }
    t.equal(answers[0]!.port, answers[1]!.port, 'one connection carried both (established packets steered too)')
    t.ok(count('to-proxy') > 0, 'counted as steered to the proxy')

    const direct = await lab.exec('xwing', ['curl', '-s', '-D', '-', '-o', '/dev/null', '--max-time', '3', 'http://198.18.2.10/v1/'], { timeoutMs: 10_000 })
    t.match(direct.stdout, /x-lab-host: deathstar/i, 'a flow without L7 rules reaches the server itself')

    await new Promise((resolve) => proxy.close(resolve))
    proxyOpen = false
    const down = await curl(lab, 'tiefighter', ['http://198.18.2.10/v1/'])
    t.not(down.code, 0, 'no proxy listening: the steered flow is dropped, not let through')
    if (mode === 'sk-assign') t.ok(count('no-proxy') > 0, 'counted as no proxy')

    teardownModes(run)
    const inNode = (argv: string[]) => spawnSync('ip', ['netns', 'exec', node, ...argv], { encoding: 'utf8' }).stdout
    t.notMatch(inNode(['ip', 'rule', 'show']), new RegExp(`lookup ${ROUTE_TABLE}`), 'the fwmark rule is gone')
    t.equal(inNode(['ip', 'route', 'show', 'table', String(ROUTE_TABLE)]).trim(), '', 'the local route is gone')
    t.notMatch(inNode(['iptables', '-w', '-t', 'mangle', '-S']), /L7PROXY/, 'the TPROXY chain is gone')
  })
}

const STAR_WARS_INGRESS = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: deathstar-l7 }
spec:
  endpointSelector: { matchLabels: { org: empire, class: deathstar } }
  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules: { http: [ { method: POST, path: "/v1/request-landing" } ] }
`

kernelTest(t, 'ingress policy is enforced at the sender, and conntrack lets replies through', async (t) => {
  const lab = await useLab(t)
  const node = lab.netns('node')
  const run: Run = (argv) => {
    const r = spawnSync('ip', ['netns', 'exec', node, ...argv], { encoding: 'utf8', timeout: 10_000 })
    return { code: r.status ?? 1, stderr: r.stderr }
  }
  const pinRoot = `/run/l7proxy/test-bpffs-${lab.name}`
  ensureBpffs(pinRoot)
  t.teardown(() => removeBpffs(pinRoot))
  const engine = new PolicyEngine({ proxyPorts: { http: PROXY_PORT, dns: 15053 } })
  const ids = new Map<string, number>()
  LAB_HOSTS.filter((h) => h.role !== 'external').forEach((h, i) => {
    engine.upsertEndpoint({ id: i + 1, labels: h.labels, ips: h.addresses })
    ids.set(h.name, i + 1)
  })
  engine.loadFile('sw.yaml', STAR_WARS_INGRESS)
  const ifindex = new Map<number, number>()
  const obj = inNetns(node, () => {
    const o = BpfObject.load(distPath('redirect-bpf/progs/from-endpoint.bpf.o'), pinRoot)
    writeConfig(o, 'sk-assign', '127.0.0.1')
    // Every host's veth: pods, servers and the outside world all send through the program.
    for (const h of LAB_HOSTS) {
      const idx = ifindexOf(nodeIfname(h.name))
      if (ids.has(h.name)) ifindex.set(ids.get(h.name)!, idx)
      attachTc(idx, 'ingress', o.programFd('from_endpoint'))
    }
    return o
  })
  t.teardown(() => obj.close())
  new PolicyWriter(obj, (id) => ifindex.get(id)).apply(engine.takeDelta())
  setupMode('sk-assign', run, [PROXY_PORT])
  t.teardown(() => teardownModes(run))
  const fd = inNetns(node, () => transparentTcpListener('127.0.0.1', PROXY_PORT))
  const proxy = createServer((req, res) => res.end(`proxy saw ${req.socket.remoteAddress} -> ${req.socket.localAddress}:${req.socket.localPort}`))
  await new Promise<void>((resolve) => proxy.listen({ fd }, resolve))
  t.teardown(() => new Promise((r) => proxy.close(r)))

  const tie = await curl(lab, 'tiefighter', ['http://198.18.2.10/v1/request-landing'])
  t.equal(tie.stdout.trim(), 'proxy saw 198.18.1.10 -> 198.18.2.10:80', "deathstar's ingress L7 rule steers the tiefighter to the proxy")
  t.not((await curl(lab, 'xwing', ['http://198.18.2.10/v1/'])).code, 0, 'the xwing is denied by deathstar ingress policy')
  t.not((await curl(lab, 'world', ['http://198.18.2.10/v1/'])).code, 0, 'so is the outside world')
  const denied = readCounters(obj).find((c) => c.endpointId === ids.get('deathstar') && c.verdict === 'denied-default')?.packets ?? 0
  t.ok(denied > 0, 'counted on the deathstar as denied by default')
  const out = await curl(lab, 'deathstar', ['http://192.0.2.3/v1/'])
  t.equal(out.code, 0, `the deathstar's own connection out works: its replies pass by conntrack (${out.stderr})`)
  t.match(out.stdout, /"name":"world"/)
  const direct = await curl(lab, 'xwing', ['http://192.0.2.3/v1/'])
  t.equal(direct.code, 0, 'flows between hosts without policy pass')
})
