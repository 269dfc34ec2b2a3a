import t from 'tap'
import { LAB_HOSTS, labEndpoints } from '../lab/topology.js'
import { type EngineOptions, type MapRefusal, PolicyEngine } from '../policy/engine.js'
import type { HttpRequestView } from '../policy/http-matcher.js'
import { RESERVED_IDENTITIES } from '../policy/identity.js'
import { evaluateHttp, evaluateName } from '../policy/l7-policy.js'
import { LabelSet } from '../policy/labels.js'
import { cnp } from './fixtures/policy-text.js'

const PORTS = { http: 15001, dns: 15053 }
const TCP = 6
const UDP = 17

/** An engine with the lab's endpoints (ids 1.., in topology order) loaded. */
function labEngine(opts: Omit<EngineOptions, 'proxyPorts'> = {}): {
  e: PolicyEngine
  ep: (name: string) => number
  id: (name: string) => number
} {
  const e = new PolicyEngine({ proxyPorts: PORTS, ...opts })
  const ids = new Map<string, number>()
  for (const ep of labEndpoints()) {
    e.upsertEndpoint(ep)
    ids.set(ep.host, ep.id)
  }
  return {
    e,
    ep: (name) => ids.get(name)!,
    id: (name) => e.identityOf(LAB_HOSTS.find((h) => h.name === name)!.addresses[0]!),
  }
}

function req(method: string, path: string, headers: Record<string, string> = {}): HttpRequestView {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]))
  return { method, path, host: 'deathstar', header: (n) => lower[n] }
}

const STAR_WARS = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: rule1
spec:
  description: "L7 policy to restrict access to specific HTTP call"
  endpointSelector:
    matchLabels: { org: empire, class: deathstar }
  ingress:
  - fromEndpoints:
    - matchLabels: { org: empire }
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules:
        http:
        - { method: POST, path: "/v1/request-landing" }
        - { method: PUT, path: "/v1/exhaust-port", headers: [ "X-Has-Force: True" ] }
`

t.test('the Cilium star-wars example, end to end', async (t) => {
  const { e, ep, id } = labEngine()
  e.loadFile('sw.yaml', STAR_WARS)
  const ds = ep('deathstar')
  t.same(e.endpointInfo(ds)!.enforce, { ingress: true, egress: false }, 'deathstar is default-deny at ingress only')
  t.same(e.endpointInfo(ep('tiefighter'))!.enforce, { ingress: false, egress: false }, 'the pods are not selected')

  const tie = e.decide(ds, 'ingress', id('tiefighter'), TCP, 80)
  t.equal(tie.verdict, 'redirect', 'tiefighter -> deathstar:80 goes to the proxy')
  t.equal(tie.proxyPort, PORTS.http)
  t.equal(e.decide(ds, 'ingress', id('xwing'), TCP, 80).verdict, 'deny', 'xwing is denied at L3 (kernel)')
  t.equal(e.decide(ds, 'ingress', id('tiefighter'), TCP, 443).verdict, 'deny', 'other ports are denied')
  t.equal(e.decide(ds, 'ingress', RESERVED_IDENTITIES.world, TCP, 80).verdict, 'deny', 'the world is denied')
  t.equal(
    e.decide(ep('tiefighter'), 'egress', id('deathstar'), TCP, 80).verdict,
    'allow',
    "the tiefighter's egress is not enforced",
  )

  const f = e.l7Policy(ds)!.find('ingress', 'TCP', 80)!
  t.ok(f, 'an L7 filter on ingress TCP/80')
  t.equal(f.parser, 'http')
  const land = evaluateHttp(f, id('tiefighter'), req('POST', '/v1/request-landing'))
  t.match(
    land,
    { allowed: true, ruleId: 'CiliumNetworkPolicy/default/rule1' },
    'POST /v1/request-landing allowed, rule named',
  )
  const exhaust = evaluateHttp(f, id('tiefighter'), req('PUT', '/v1/exhaust-port'))
  t.match(
    exhaust,
    { allowed: false, ruleId: null, reason: /no http rule matched on ingress TCP\/80/ },
    'PUT /v1/exhaust-port denied without the header',
  )
  t.match(
    evaluateHttp(f, id('tiefighter'), req('PUT', '/v1/exhaust-port', { 'X-Has-Force': 'True' })),
    { allowed: true },
    'allowed with it',
  )
  t.match(evaluateHttp(f, id('tiefighter'), req('GET', '/v1/request-landing')), { allowed: false }, 'GET is not POST')
  t.match(
    evaluateHttp(f, id('xwing'), req('POST', '/v1/request-landing')),
    { allowed: false, reason: /identity \d+ is not allowed/ },
    'the proxy denies xwing too',
  )
})

t.test('deny wins over allow, at every level', async (t) => {
  const { e, ep, id } = labEngine()
  e.loadFile(
    'p.yaml',
    cnp('allow', '{ class: deathstar }', '  ingress:\n  - fromEntities: [ all ]\n') +
      '---\n' +
      cnp(
        'deny',
        '{ class: deathstar }',
        '  ingressDeny:\n  - fromEndpoints: [ { matchLabels: { class: xwing } } ]\n    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]\n',
      ),
  )
  const ds = ep('deathstar')
  t.equal(e.decide(ds, 'ingress', id('xwing'), TCP, 80).verdict, 'deny', 'xwing:80 denied although "all" is allowed')
  t.equal(e.decide(ds, 'ingress', id('xwing'), TCP, 81).verdict, 'allow', 'xwing:81 allowed')
  t.equal(e.decide(ds, 'ingress', id('tiefighter'), TCP, 80).verdict, 'allow', 'others allowed on 80')
  e.loadFile('q.yaml', cnp('deny-all', '{ class: deathstar }', '  ingressDeny:\n  - fromEntities: [ cluster ]\n'))
  t.equal(e.decide(ds, 'ingress', id('tiefighter'), UDP, 53).verdict, 'deny', 'an L3 deny beats an L3 allow')
  t.equal(
    e.decide(ds, 'ingress', RESERVED_IDENTITIES.world, TCP, 80).verdict,
    'allow',
    'the world is not in the cluster',
  )
})

t.test('toCIDRSet with except, and CIDR identities in the ipcache', async (t) => {
  const { e, ep } = labEngine()
  e.loadFile(
    'c.yaml',
    cnp(
      'cidr',
      '{ class: tiefighter }',
      '  egress:\n  - toCIDRSet: [ { cidr: 192.0.2.0/24, except: [ 192.0.2.4/32 ] } ]\n',
    ),
  )
  const tf = ep('tiefighter')
  const ipc = e.ipcache()
  t.ok(ipc.has('192.0.2.0/24') && ipc.has('192.0.2.4/32'), 'the CIDR and its except get identities')
  t.equal(e.decide(tf, 'egress', e.identityOf('192.0.2.3'), TCP, 80).verdict, 'allow', '192.0.2.3 is inside')
  t.equal(e.decide(tf, 'egress', e.identityOf('192.0.2.4'), TCP, 80).verdict, 'deny', '192.0.2.4 is excepted')
  t.equal(e.decide(tf, 'egress', e.identityOf('203.0.113.7'), TCP, 80).verdict, 'deny', 'outside is denied')
  t.equal(e.identityOf('203.0.113.7'), RESERVED_IDENTITIES.world, 'unknown addresses are the world')
  e.removeFile('c.yaml')
  t.notOk(e.ipcache().has('192.0.2.0/24'), 'removing the policy releases its CIDR identities')
  t.equal(e.endpointInfo(tf)!.enforce.egress, false, 'and the endpoint is no longer enforced')
})

t.test('entities: world, cluster, host, all', async (t) => {
  const { e, ep, id } = labEngine()
  const tf = ep('tiefighter')
  e.loadFile('w.yaml', cnp('world', '{ class: tiefighter }', '  egress:\n  - toEntities: [ world ]\n'))
  t.equal(
    e.decide(tf, 'egress', RESERVED_IDENTITIES.world, TCP, 443).verdict,
    'allow',
    'world allows unknown addresses',
  )
  t.equal(e.decide(tf, 'egress', id('deathstar'), TCP, 80).verdict, 'deny', 'world is not the cluster')
  e.loadFile('w.yaml', cnp('world', '{ class: tiefighter }', '  egress:\n  - toEntities: [ cluster ]\n'))
  t.equal(e.decide(tf, 'egress', id('deathstar'), TCP, 80).verdict, 'allow', 'cluster has the endpoints')
  t.equal(e.decide(tf, 'egress', RESERVED_IDENTITIES.host, TCP, 80).verdict, 'allow', 'and the host')
  t.equal(e.decide(tf, 'egress', RESERVED_IDENTITIES.world, TCP, 80).verdict, 'deny', 'not the world')
  e.loadFile('w.yaml', cnp('world', '{ class: tiefighter }', '  egress:\n  - toEntities: [ host ]\n'))
  t.equal(e.decide(tf, 'egress', RESERVED_IDENTITIES.host, TCP, 80).verdict, 'allow')
  t.equal(e.decide(tf, 'egress', id('deathstar'), TCP, 80).verdict, 'deny')
  e.loadFile('w.yaml', cnp('world', '{ class: tiefighter }', '  egress:\n  - toEntities: [ all ]\n'))
  t.same([...e.policyMap(tf).keys()], ['0/egress/0/0/0'], '"all" is one wildcard entry, not one per identity')
})

t.test('default deny per direction, and enableDefaultDeny', async (t) => {
  const { e, ep, id } = labEngine()
  const ds = ep('deathstar')
  e.loadFile(
    'd.yaml',
    cnp('l4', '{ class: deathstar }', '  ingress:\n  - toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]\n'),
  )
  t.equal(
    e.decide(ds, 'ingress', id('xwing'), TCP, 80).verdict,
    'allow',
    'a rule without peers allows every peer on its port',
  )
  t.equal(e.decide(ds, 'ingress', id('xwing'), TCP, 22).verdict, 'deny', 'and nothing else')
  e.loadFile(
    'd.yaml',
    cnp(
      'l4',
      '{ class: deathstar }',
      '  enableDefaultDeny: { ingress: false }\n  ingressDeny:\n  - toPorts: [ { ports: [ { port: "22", protocol: TCP } ] } ]\n',
    ),
  )
  t.equal(e.endpointInfo(ds)!.enforce.ingress, false, 'enableDefaultDeny: false keeps it default-allow')
  t.equal(e.decide(ds, 'ingress', id('xwing'), TCP, 80).verdict, 'allow', 'so 80 passes')
  t.equal(e.decide(ds, 'ingress', id('xwing'), TCP, 22).verdict, 'deny', 'but the deny still applies')
  e.loadFile('d.yaml', cnp('l4', '{ class: deathstar }', '  egress: []\n  ingress: []\n'))
  t.same(e.endpointInfo(ds)!.enforce, { ingress: false, egress: false }, 'empty sections do not enforce')
  e.loadFile('d.yaml', cnp('l4', '{ class: deathstar }', '  enableDefaultDeny: { egress: true }\n'))
  t.same(
    e.endpointInfo(ds)!.enforce,
    { ingress: false, egress: true },
    'enableDefaultDeny: true enforces with no rules',
  )
})

t.test('namespaces restrict namespaced policies and their peers', async (t) => {
  const e = new PolicyEngine({ proxyPorts: PORTS })
  e.upsertEndpoint({ id: 1, labels: { app: 'db', 'io.kubernetes.pod.namespace': 'prod' }, ips: ['198.18.3.1'] })
  e.upsertEndpoint({ id: 2, labels: { app: 'db', 'io.kubernetes.pod.namespace': 'dev' }, ips: ['198.18.3.2'] })
  const webProd = e.addIdentity({ app: 'web', 'io.kubernetes.pod.namespace': 'prod' })
  const webDev = e.addIdentity({ app: 'web', 'io.kubernetes.pod.namespace': 'dev' })
  // The db policy in namespace prod, admitting peers that match `from`.
  const dbInProd = (from: string): string => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: db, namespace: prod }
spec:
  endpointSelector: { matchLabels: { app: db } }
  ingress:
  - fromEndpoints: [ { matchLabels: ${from} } ]
`
  e.loadFile('n.yaml', dbInProd('{ app: web }'))
  t.equal(e.endpointInfo(1)!.enforce.ingress, true, 'selects the prod db')
  t.equal(e.endpointInfo(2)!.enforce.ingress, false, 'not the dev db')
  t.equal(e.decide(1, 'ingress', webProd, TCP, 5432).verdict, 'allow', 'web in prod may connect')
  t.equal(e.decide(1, 'ingress', webDev, TCP, 5432).verdict, 'deny', 'web in dev may not')
  e.loadFile('n.yaml', dbInProd('{ app: web, "k8s:io.kubernetes.pod.namespace": dev }'))
  t.equal(e.decide(1, 'ingress', webDev, TCP, 5432).verdict, 'allow', 'naming the namespace reaches across')
  t.equal(e.decide(1, 'ingress', webProd, TCP, 5432).verdict, 'deny')
})

t.test('Kubernetes NetworkPolicy', async (t) => {
  const e = new PolicyEngine({ proxyPorts: PORTS })
  e.upsertEndpoint({ id: 1, labels: { app: 'api', 'io.kubernetes.pod.namespace': 'shop' }, ips: ['198.18.4.1'] })
  const front = e.addIdentity({ app: 'front', 'io.kubernetes.pod.namespace': 'shop' })
  const monitor = e.addIdentity({
    app: 'prom',
    'io.kubernetes.pod.namespace': 'monitoring',
    'io.cilium.k8s.namespace.labels.team': 'sre',
  })
  e.loadFile(
    'k.yaml',
    `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: api, namespace: shop }
spec:
  podSelector: { matchLabels: { app: api } }
  policyTypes: [ Ingress, Egress ]
  ingress:
  - from:
    - podSelector: { matchLabels: { app: front } }
    ports: [ { port: 8080 } ]
  - from:
    - namespaceSelector: { matchLabels: { team: sre } }
    - ipBlock: { cidr: 203.0.113.0/24, except: [ 203.0.113.128/25 ] }
    ports: [ { protocol: TCP, port: 9000, endPort: 9010 } ]
`,
  )
  t.same(e.endpointInfo(1)!.enforce, { ingress: true, egress: true }, 'policyTypes Ingress and Egress both enforce')
  t.equal(e.decide(1, 'ingress', front, TCP, 8080).verdict, 'allow')
  t.equal(e.decide(1, 'ingress', front, UDP, 8080).verdict, 'deny', 'port without protocol is TCP')
  t.equal(
    e.decide(1, 'ingress', monitor, TCP, 9005).verdict,
    'allow',
    'namespaceSelector by namespace labels, port range',
  )
  t.equal(e.decide(1, 'ingress', monitor, TCP, 9011).verdict, 'deny')
  t.equal(e.decide(1, 'ingress', e.identityOf('203.0.113.5'), TCP, 9000).verdict, 'allow', 'ipBlock')
  t.equal(e.decide(1, 'ingress', e.identityOf('203.0.113.200'), TCP, 9000).verdict, 'deny', 'ipBlock except')
  t.equal(e.decide(1, 'egress', front, TCP, 80).verdict, 'deny', 'egress enforced with no rules denies all')
})

t.test('toFQDNs selects exactly the IPs learned for matching names', async (t) => {
  const { e, ep } = labEngine()
  const tf = ep('tiefighter')
  e.loadFile(
    'f.yaml',
    cnp(
      'fqdn',
      '{ class: tiefighter }',
      `  egress:
  - toEndpoints: [ { matchLabels: { "k8s:io.kubernetes.pod.namespace": kube-system, k8s-app: kube-dns } } ]
    toPorts:
    - ports: [ { port: "53", protocol: ANY } ]
      rules: { dns: [ { matchPattern: "*.empire" } ] }
  - toFQDNs: [ { matchName: cantina.empire } ]
    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]
`,
    ),
  )
  const dns = e.identityOf('198.18.2.53')
  t.equal(e.decide(tf, 'egress', dns, UDP, 53).verdict, 'redirect', 'DNS over UDP goes to the DNS proxy')
  t.equal(e.decide(tf, 'egress', dns, TCP, 53).proxyPort, PORTS.dns, 'and over TCP')
  const f = e.l7Policy(tf)!.find('egress', 'UDP', 53)!
  t.match(evaluateName(f, dns, 'cantina.empire.'), { allowed: true, ruleId: 'CiliumNetworkPolicy/default/fqdn' })
  t.match(evaluateName(f, dns, 'hoth.alliance.'), { allowed: false, reason: /no dns rule matched 'hoth.alliance.'/ })
  t.equal(e.decide(tf, 'egress', e.identityOf('192.0.2.3'), TCP, 80).verdict, 'deny', 'nothing learned yet: denied')
  e.takeDelta()
  e.setFqdnIps('cantina.empire.', ['192.0.2.3', '192.0.2.4'])
  const d = e.takeDelta()
  t.same(d.ipcache.upserts.map(([p]) => p).sort(), ['192.0.2.3/32', '192.0.2.4/32'], 'learned IPs enter the ipcache')
  t.equal(d.policy.get(tf), undefined, "and nothing else: the selector's identity had its policy entry already")
  t.equal(
    e.identityOf('192.0.2.3'),
    e.identityOf('192.0.2.4'),
    'both carry the one identity of the selector that selects them',
  )
  t.equal(e.decide(tf, 'egress', e.identityOf('192.0.2.3'), TCP, 80).verdict, 'allow', 'a learned IP is allowed')
  t.equal(e.decide(tf, 'egress', e.identityOf('192.0.2.3'), TCP, 81).verdict, 'deny', 'on the rule port only')
  e.setFqdnIps('hoth.alliance', ['203.0.113.7'])
  t.equal(
    e.decide(tf, 'egress', e.identityOf('203.0.113.7'), TCP, 80).verdict,
    'deny',
    'IPs of other names stay blocked',
  )
  e.setFqdnIps('cantina.empire', ['192.0.2.4'])
  t.equal(
    e.decide(tf, 'egress', e.identityOf('192.0.2.3'), TCP, 80).verdict,
    'deny',
    'an IP the name no longer has is blocked',
  )
  t.notOk(e.ipcache().has('192.0.2.3/32'), 'and leaves the ipcache')
  e.setFqdnIps('cantina.empire', [])
  t.equal(e.decide(tf, 'egress', e.identityOf('192.0.2.4'), TCP, 80).verdict, 'deny')
})

/** The tiefighter may reach cantina.empire and *.empire on 80, and 192.0.2.0/24 on 443. */
function fqdnGroupsEngine(opts: Omit<EngineOptions, 'proxyPorts'> = {}) {
  const lab = labEngine(opts)
  lab.e.loadFile(
    'f.yaml',
    cnp(
      'fqdn',
      '{ class: tiefighter }',
      `  egress:
  - toFQDNs: [ { matchName: cantina.empire }, { matchPattern: "*.empire" } ]
    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]
  - toCIDR: [ 192.0.2.0/24 ]
    toPorts: [ { ports: [ { port: "443", protocol: TCP } ] } ]
`,
    ),
  )
  lab.e.takeDelta()
  return lab
}

const localIdentities = (e: PolicyEngine) =>
  [...e.identities.all()]
    .filter((i) => i.kind === 'fqdn')
    .map((i) => i.labels.canonical)
    .sort()

t.test(
  'toFQDNs: addresses selected by the same selectors share one identity; a rotating name adds ipcache entries only',
  async (t) => {
    const { e, ep } = fqdnGroupsEngine()
    const tf = ep('tiefighter')
    const held = localIdentities(e)
    t.same(
      held,
      ['fqdn:*.empire;reserved:world', 'fqdn:cantina.empire;reserved:world'],
      'each selector holds its own identity from the start',
    )
    for (let i = 1; i <= 50; i++) {
      e.setFqdnIps('hoth.empire', [`203.0.113.${i}`])
      const d = e.takeDelta()
      t.equal(d.policy.size, 0, `answer ${i}: no policy entry changes`)
      t.same(
        d.ipcache.upserts.map(([p]) => p),
        [`203.0.113.${i}/32`],
        `answer ${i}: one ipcache entry`,
      )
    }
    t.same(localIdentities(e), held, 'fifty addresses later: no identity more')
    t.equal(
      e.decide(tf, 'egress', e.identityOf('203.0.113.50'), TCP, 80).verdict,
      'allow',
      'the newest address is allowed',
    )
    t.equal(
      e.decide(tf, 'egress', e.identityOf('203.0.113.49'), TCP, 80).verdict,
      'deny',
      'one the name moved away from is not',
    )

    e.setFqdnIps('cantina.empire', ['203.0.113.200'])
    e.setFqdnIps('hoth.empire', ['203.0.113.200', '203.0.113.201'])
    const both = e.identities.get(e.identityOf('203.0.113.200'))!
    t.equal(
      both.labels.canonical,
      'fqdn:*.empire;fqdn:cantina.empire;reserved:world',
      'an address both select has the identity of both',
    )
    t.not(e.identityOf('203.0.113.201'), both.id, 'one only *.empire selects has the other')
    t.equal(e.decide(tf, 'egress', both.id, TCP, 80).verdict, 'allow')

    e.setFqdnIps('hoth.empire', [])
    e.setFqdnIps('cantina.empire', [])
    t.same(localIdentities(e), held, 'no address holds the shared identities: released, the held ones stay')
    t.notOk(e.ipcache().has('203.0.113.200/32'), 'and the addresses left the ipcache')
  },
)

t.test(
  'toFQDNs: an address the ipcache has no room for is refused whole, and said so; room again, it is taken',
  async (t) => {
    const refusals: MapRefusal[] = []
    const probe = fqdnGroupsEngine().e.mapFill().ipcache.entries
    const { e, ep } = fqdnGroupsEngine({
      capacity: { ipcache: probe + 3, policy: 1000 },
      onRefused: (r) => refusals.push(r),
    })
    const tf = ep('tiefighter')
    e.setFqdnIps('hoth.empire', ['203.0.113.1', '203.0.113.2', '203.0.113.3', '203.0.113.4', '203.0.113.5'])
    const d = e.takeDelta()
    t.same(
      d.ipcache.upserts.map(([p]) => p).sort(),
      ['203.0.113.1/32', '203.0.113.2/32', '203.0.113.3/32'],
      'the first three fit, in the order given',
    )
    t.match(refusals, [
      { map: 'ipcache', address: '203.0.113.4', names: ['hoth.empire'], entries: probe + 3, capacity: probe + 3 },
      { map: 'ipcache', address: '203.0.113.5' },
    ])
    t.equal(
      e.decide(tf, 'egress', e.identityOf('203.0.113.4'), TCP, 80).verdict,
      'deny',
      'a refused address stays the world: denied',
    )
    t.match(e.mapFill(), { ipcache: { entries: probe + 3, capacity: probe + 3 }, refused: { ipcache: 2, policy: 0 } })
    e.setFqdnIps('hoth.empire', ['203.0.113.4', '203.0.113.6'])
    t.equal(
      e.decide(tf, 'egress', e.identityOf('203.0.113.4'), TCP, 80).verdict,
      'allow',
      'the name learned anew, with room: a refused address is taken',
    )
    t.equal(
      e.decide(tf, 'egress', e.identityOf('203.0.113.6'), TCP, 80).verdict,
      'allow',
      'and a new one, in the room the lost ones left',
    )
  },
)

t.test('toFQDNs: an identity whose policy entries would not fit is taken back whole', async (t) => {
  const refusals: MapRefusal[] = []
  const probe = fqdnGroupsEngine()
  const policy = probe.e.mapFill().policy.entries
  const { e, ep } = fqdnGroupsEngine({ capacity: { ipcache: 1000, policy }, onRefused: (r) => refusals.push(r) })
  e.setFqdnIps('hoth.empire', ['203.0.113.1'])
  t.equal(refusals.length, 0, "an address one selector selects uses that selector's identity: no new entry")
  e.takeDelta()
  e.setFqdnIps('cantina.empire', ['203.0.113.9'])
  t.match(
    refusals,
    [{ map: 'policy', address: '203.0.113.9', names: ['cantina.empire'] }],
    'both selectors: a new identity, whose entries have no room',
  )
  const d = e.takeDelta()
  t.equal(d.policy.get(ep('tiefighter')), undefined, 'no policy entry was written, not even part of them')
  t.same(d.ipcache.upserts, [], 'nor an ipcache entry')
  t.equal(e.mapFill().policy.entries, policy)
})

t.test('a policy whose entries the maps cannot hold is refused whole, the rules before it staying', async (t) => {
  const probe = fqdnGroupsEngine().e.mapFill()
  const { e, ep } = fqdnGroupsEngine({
    capacity: { ipcache: probe.ipcache.entries + 2, policy: probe.policy.entries + 1 },
  })
  const tf = ep('tiefighter')
  const before = e.policyMap(tf)
  const wide = cnp(
    'wide',
    '{ class: tiefighter }',
    '  egress:\n  - toCIDR: [ 203.0.113.0/28 ]\n    toPorts: [ { ports: [ { port: "80", protocol: TCP }, { port: "443", protocol: TCP } ] } ]\n',
  )
  t.throws(() => e.loadFile('wide.yaml', wide), {
    code: 'EPOLICY',
    message:
      /^wide\.yaml:\d+:1: refused: the policy map would need \d+ entries, maps\.policyEntries is \d+; the file's rules before it stay in force$/,
  })
  t.same(e.policyMap(tf), before, 'the policy map is as it was')
  t.same(e.takeDelta().policy.size, 0, 'and nothing is written')
  const cidrs = cnp(
    'cidrs',
    '{ class: tiefighter }',
    '  egress:\n  - toCIDR: [ 203.0.113.1/32, 203.0.113.2/32, 203.0.113.3/32 ]\n',
  )
  t.throws(() => e.loadFile('cidrs.yaml', cidrs), { message: /refused: the (ipcache|policy map) would need/ })
  t.notOk(e.ipcache().has('203.0.113.1/32'), 'nor is the ipcache')
})

t.test('a local endpoint the maps have no room for is refused whole, the engine as it was', async (t) => {
  const probe = labEngine().e.mapFill()
  const { e } = labEngine({ capacity: { ipcache: probe.ipcache.entries, policy: 1000 } })
  e.takeDelta()
  const extra = { id: 77, labels: { class: 'extra' }, ips: ['198.18.1.77'] }
  t.throws(() => e.upsertEndpoint(extra), {
    code: 'EMAPFULL',
    message: /^endpoint 77: refused: its 1 address\(es\) do not fit the ipcache/,
  })
  t.equal(e.endpointInfo(77), undefined)
  t.same(e.takeDelta().ipcache.upserts, [], 'nothing to write')

  const tight = fqdnGroupsEngine()
  const policy = tight.e.mapFill().policy.entries
  const { e: e2, ep } = fqdnGroupsEngine({ capacity: { ipcache: 1000, policy } })
  const tf = e2.endpointInfo(ep('tiefighter'))!
  const before = e2.policyMap(tf.id)
  // A second tiefighter: the rules select it too, and its entries have no room.
  t.throws(
    () =>
      e2.upsertEndpoint({
        id: 78,
        labels: { class: 'tiefighter', 'io.kubernetes.pod.namespace': 'default' },
        ips: ['198.18.1.78'],
      }),
    {
      code: 'EMAPFULL',
      message: /^endpoint 78: refused: the policy map would need \d+ entries, maps\.policyEntries is \d+$/,
    },
  )
  t.equal(e2.endpointInfo(78), undefined, 'taken back')
  t.notOk(e2.ipcache().has('198.18.1.78/32'))
  t.same(e2.policyMap(tf.id), before)
  t.equal(e2.mapFill().policy.entries, policy)
})

t.test("another node's pod the ipcache has no room for is refused, nothing changed", async (t) => {
  const probe = labEngine().e.mapFill()
  const { e } = labEngine({ capacity: { ipcache: probe.ipcache.entries + 1, policy: 1000 } })
  const peer = { identity: 300, labels: new LabelSet([{ source: 'k8s', key: 'app', value: 'remote' }]) }
  e.setRemoteEndpoint('198.18.3.30', peer)
  t.throws(() => e.setRemoteEndpoint('198.18.3.31', peer), {
    code: 'EMAPFULL',
    message: 'remote endpoint 198.18.3.31: refused: the ipcache holds 6 entries, maps.ipcacheEntries is 6',
  })
  t.notOk(e.ipcache().has('198.18.3.31/32'))
  e.setRemoteEndpoint('198.18.3.30', null)
  e.setRemoteEndpoint('198.18.3.31', peer)
  t.equal(e.ipcache().get('198.18.3.31/32'), 300, 'room again: taken')
})

t.test(
  'toFQDNs: a learned address a toCIDR prefix covers keeps its own identity, so both rules select it',
  async (t) => {
    const { e, ep } = fqdnGroupsEngine()
    const tf = ep('tiefighter')
    e.setFqdnIps('cantina.empire', ['192.0.2.3', '203.0.113.9'])
    const covered = e.identities.get(e.identityOf('192.0.2.3'))!
    t.equal(covered.labels.canonical, 'cidr:192.0.2.3/32;fqdn:*.empire;fqdn:cantina.empire;reserved:world')
    t.equal(
      e.decide(tf, 'egress', covered.id, TCP, 443).verdict,
      'allow',
      'the toCIDR rule still selects it under its /32 entry',
    )
    t.equal(e.decide(tf, 'egress', covered.id, TCP, 80).verdict, 'allow', 'and the toFQDNs rule')
    t.notOk(
      e.identities.get(e.identityOf('203.0.113.9'))!.labels.has('cidr', '203.0.113.9/32'),
      'one outside every prefix is grouped',
    )
    t.equal(
      e.decide(tf, 'egress', e.identityOf('203.0.113.9'), TCP, 443).verdict,
      'deny',
      'and the toCIDR rule does not reach it',
    )
  },
)

t.test(
  'toFQDNs: addresses learned before a selector selects them enter the ipcache when one does, and leave with it',
  async (t) => {
    const { e, ep } = labEngine()
    const tf = ep('tiefighter')
    e.setFqdnIps('cantina.empire', ['203.0.113.9'])
    t.notOk(e.ipcache().has('203.0.113.9/32'), 'no selector: no ipcache entry, the address stays the world')
    e.loadFile(
      'f.yaml',
      cnp('fqdn', '{ class: tiefighter }', '  egress:\n  - toFQDNs: [ { matchPattern: "*.empire" } ]\n'),
    )
    t.equal(e.ipcache().get('203.0.113.9/32'), e.identityOf('203.0.113.9'))
    t.equal(
      e.decide(tf, 'egress', e.identityOf('203.0.113.9'), TCP, 80).verdict,
      'allow',
      'a policy loaded later allows the address learned before',
    )
    e.removeFile('f.yaml')
    t.notOk(e.ipcache().has('203.0.113.9/32'), 'the policy gone: the entry too')
    t.same(localIdentities(e), [], 'and every learned-address identity')
  },
)

t.test('L3 rules and L4 rules without L7 are OR-ed into L7 ports', async (t) => {
  const { e, ep, id } = labEngine()
  e.loadFile(
    'o.yaml',
    STAR_WARS +
      '---\n' +
      cnp(
        'xwing-l3',
        '{ class: deathstar }',
        '  ingress:\n  - fromEndpoints: [ { matchLabels: { class: xwing } } ]\n',
      ) +
      '---\n' +
      cnp(
        'tie-80',
        '{ class: deathstar }',
        '  ingress:\n  - fromEndpoints: [ { matchLabels: { class: tiefighter } } ]\n    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]\n',
      ),
  )
  const ds = ep('deathstar')
  const f = e.l7Policy(ds)!.find('ingress', 'TCP', 80)!
  t.match(
    evaluateHttp(f, id('xwing'), req('DELETE', '/anything')),
    { allowed: true, ruleId: 'CiliumNetworkPolicy/default/xwing-l3' },
    'an L3 allow allows every request',
  )
  t.match(
    evaluateHttp(f, id('tiefighter'), req('DELETE', '/anything')),
    { allowed: true, ruleId: 'CiliumNetworkPolicy/default/tie-80' },
    'an L4 allow on the port too',
  )
  t.match(
    evaluateHttp(f, id('grpc'), req('DELETE', '/anything')),
    { allowed: false },
    'the L7 rules still bind other empire peers',
  )
  t.equal(e.decide(ds, 'ingress', id('grpc'), TCP, 80).verdict, 'redirect')
})

t.test('deny wins down the port hierarchy: allowed ports inside a denied range resolve to deny', async (t) => {
  const { e, ep, id } = labEngine()
  const tf = ep('tiefighter')
  const ds = id('deathstar')
  const allow80 =
    '  egress:\n  - toEndpoints: [ { matchLabels: { class: deathstar } } ]\n    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]\n'
  const denyRange =
    '  egressDeny:\n  - toEndpoints: [ { matchLabels: { class: deathstar } } ]\n    toPorts: [ { ports: [ { port: "64", endPort: 127, protocol: TCP } ] } ]\n'
  e.loadFile('a.yaml', cnp('allow', '{ class: tiefighter }', allow80))
  e.takeDelta()
  const key80 = `${ds}/egress/6/80/16`
  t.same(e.policyMap(tf).get(key80), { deny: false, proxyPort: 0 })
  e.loadFile('d.yaml', cnp('deny', '{ class: tiefighter }', denyRange))
  const d = e.takeDelta().policy.get(tf)!
  t.same(
    e.policyMap(tf).get(key80),
    { deny: true, proxyPort: 0 },
    'the exact allow now resolves to deny (the kernel finds only the longest block)',
  )
  t.ok(
    d.upserts.some(([k, v]) => k.port === 80 && k.prefixLen === 16 && v.deny),
    'and the delta rewrites it',
  )
  t.ok(
    d.upserts.some(([k, v]) => k.port === 64 && k.prefixLen === 10 && v.deny),
    'next to the deny block itself',
  )
  e.removeFile('d.yaml')
  const back = e.takeDelta().policy.get(tf)!
  t.same(e.policyMap(tf).get(key80), { deny: false, proxyPort: 0 }, 'removing the deny restores the allow')
  t.ok(
    back.upserts.some(([k, v]) => k.port === 80 && !v.deny),
    'through the delta',
  )
  t.ok(
    back.deletes.some((k) => k.port === 64 && k.prefixLen === 10),
    'and the deny block is deleted',
  )
})
