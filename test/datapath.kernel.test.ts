// The kernel datapath for real: from-endpoint.bpf.o loaded through libbpf (koffi) in the lab's
// node namespace, attached to the pods' veths, its maps driven by the policy engine's deltas.

import { existsSync } from 'node:fs'
import t from 'tap'
import { LAB_HOSTS, nodeIfname } from '../lab/topology.js'
import { distPath } from '../lib/project-root.js'
import { PolicyEngine } from '../policy/engine.js'
import { BpfObject } from '../redirect-bpf/bpf-object.js'
import { removeBpffs } from '../redirect-bpf/bpffs.js'
import { checkLayout, decodePolicyKey, readCounters, type VerdictName } from '../redirect-bpf/map-layout.js'
import { inNetns } from '../redirect-bpf/netns.js'
import { PolicyWriter } from '../redirect-bpf/policy-writer.js'
import { attachTc, detachTc, ifindexOf, queryTc } from '../redirect-bpf/tc.js'
import { kernelTest } from './fixtures/kernel.js'
import { useBpffs, useLab, type LabHandle } from './fixtures/lab.js'

const OBJECT = distPath('redirect-bpf/progs/from-endpoint.bpf.o')
const PODS = ['tiefighter', 'xwing']

const policy = (egress: string) => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: xwing-egress }
spec:
  endpointSelector: { matchLabels: { class: xwing } }
  egress:
  - toEndpoints: [ { matchLabels: { "k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns } } ]
    toPorts: [ { ports: [ { port: "53", protocol: ANY } ] } ]
${egress}`

async function curlCode(lab: LabHandle, host: string): Promise<number> {
  const r = await lab.exec(host, ['curl', '-s', '-o', '/dev/null', '--max-time', '2', 'http://198.18.2.10/v1/'], { timeoutMs: 10_000 })
  return r.code
}

function counter(obj: BpfObject, endpointId: number, verdict: VerdictName): number {
  return readCounters(obj).find((c) => c.endpointId === endpointId && c.verdict === verdict)?.packets ?? 0
}

kernelTest(t, 'datapath: egress L3/L4 policy enforced by the TC program, from engine deltas', async (t) => {
  const lab = await useLab(t)
  const pinRoot = useBpffs(t, lab.name)

  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  const endpointIds = new Map<string, number>()
  LAB_HOSTS.filter((h) => h.role !== 'external').forEach((h, i) => {
    engine.upsertEndpoint({ id: i + 1, labels: h.labels, ips: h.addresses })
    endpointIds.set(h.name, i + 1)
  })
  engine.loadFile('xwing.yaml', policy(''))
  const xwing = endpointIds.get('xwing')!
  const tiefighter = endpointIds.get('tiefighter')!

  const ifindex = new Map<number, number>()
  let obj = inNetns(lab.netns('node'), () => {
    const o = BpfObject.load(OBJECT, pinRoot)
    checkLayout(o)
    for (const pod of PODS) {
      const idx = ifindexOf(nodeIfname(pod))
      ifindex.set(endpointIds.get(pod)!, idx)
      attachTc(idx, 'ingress', o.programFd('from_endpoint'))
    }
    return o
  })
  t.teardown(() => obj.close())
  const writer = new PolicyWriter(obj, (id) => ifindex.get(id))
  const first = writer.apply(engine.takeDelta())
  t.ok(first.upserts > 0, `${first.upserts} entries written`)

  t.not(await curlCode(lab, 'xwing'), 0, 'xwing -> deathstar:80 is dropped (default deny at egress)')
  t.ok(counter(obj, xwing, 'denied-default') > 0, 'and counted as denied by default')
  const dig = await lab.exec('xwing', ['dig', '+short', '+time=2', '+tries=1', 'cantina.empire'])
  t.same(dig.stdout.trim().split('\n').sort(), ['192.0.2.3', '192.0.2.4'], 'xwing may still resolve through kube-dns:53')
  t.ok(counter(obj, xwing, 'allowed') > 0, 'counted as allowed')
  t.equal(await curlCode(lab, 'tiefighter'), 0, 'the tiefighter, not selected, passes')
  t.ok(counter(obj, tiefighter, 'not-enforced') > 0, 'counted as not enforced')

  engine.loadFile('xwing.yaml', policy('  - toEndpoints: [ { matchLabels: { class: deathstar } } ]\n    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]\n'))
  const change = engine.takeDelta()
  t.same([...change.policy.keys()], [xwing], 'a policy change touches only the xwing')
  t.equal(change.policy.get(xwing)!.upserts.length, 1, 'with one new entry')
  writer.apply(change)
  t.equal(await curlCode(lab, 'xwing'), 0, 'after the live change xwing reaches deathstar:80')

  engine.loadFile('xwing.yaml', policy('  - toEndpoints: [ { matchLabels: { class: deathstar } } ]\n    toPorts:\n    - ports: [ { port: "80", protocol: TCP } ]\n      rules: { http: [ { method: GET } ] }\n'))
  writer.apply(engine.takeDelta())
  t.not(await curlCode(lab, 'xwing'), 0, 'a flow that needs the proxy is dropped while no redirect mode is set (fail closed)')
  t.ok(counter(obj, xwing, 'no-proxy') > 0, 'counted as no-proxy')

  const before = obj.map('l7_policy').keys().map((k) => JSON.stringify(decodePolicyKey(k))).sort()
  const deniedBefore = counter(obj, xwing, 'denied-default')
  obj.close()
  obj = inNetns(lab.netns('node'), () => {
    const o = BpfObject.load(OBJECT, pinRoot)
    for (const idx of ifindex.values()) attachTc(idx, 'ingress', o.programFd('from_endpoint'))
    return o
  })
  const after = obj.map('l7_policy').keys().map((k) => JSON.stringify(decodePolicyKey(k))).sort()
  t.same(after, before, 'a restarted loader finds the pinned policy map as it was')
  t.ok(counter(obj, xwing, 'denied-default') >= deniedBefore, 'and the counters')
  t.not(await curlCode(lab, 'xwing'), 0, 'the replaced program enforces the same policy')
  t.equal(await lab.exec('xwing', ['dig', '+short', '+time=2', '+tries=1', 'speeder.empire']).then((r) => r.stdout.trim()), '192.0.2.5')

  inNetns(lab.netns('node'), () => {
    for (const idx of ifindex.values()) {
      t.ok(queryTc(idx, 'ingress'), `program attached on ifindex ${idx}`)
      t.equal(detachTc(idx, 'ingress'), true)
      t.equal(queryTc(idx, 'ingress'), null, 'and gone after detach')
    }
  })
  t.equal(await curlCode(lab, 'xwing'), 0, 'detached: no enforcement left behind')
  obj.close()
  removeBpffs(pinRoot)
  t.notOk(existsSync(pinRoot), 'pins and the bpffs are gone')
})

kernelTest(t, 'datapath: a map layout that disagrees with the object is refused at load', async (t) => {
  const pinRoot = useBpffs(t, `layout${process.pid}`)
  const obj = BpfObject.load(OBJECT, pinRoot)
  t.teardown(() => obj.close())
  const policy = obj.map('l7_policy')
  t.throws(() => policy.update(Buffer.alloc(8), Buffer.alloc(4)), { code: 'ELAYOUT', message: /key is 8 bytes, the map wants 12/ })
  const { MAP_LAYOUT } = await import('../redirect-bpf/map-layout.js')
  const saved = MAP_LAYOUT.l7_policy.key
  ;(MAP_LAYOUT.l7_policy as { key: number }).key = 16
  try {
    t.throws(() => checkLayout(obj), { code: 'ELAYOUT', message: /map l7_policy .* has key\/value 12\/4 bytes, redirect-bpf\/map-layout\.ts expects 16\/4/ })
  } finally {
    ;(MAP_LAYOUT.l7_policy as { key: number }).key = saved
  }
  checkLayout(obj)
})
