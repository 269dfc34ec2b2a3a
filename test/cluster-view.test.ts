// The cluster's store as this node mirrors it, as pure logic: key names parsed and checked, bad
// values reported and ignored, other nodes' pods handed out once their identity's labels are
// known, this node's own never, a listing after a gap removing only what went (no flap), policy
// documents with the revision they changed at; and the engine taking other nodes' pods into its
// ipcache with their cluster identities.

import t from 'tap'
import { PolicyEngine } from '../policy/engine.js'
import { RESERVED_IDENTITIES } from '../policy/identity.js'
import { LabelSet } from '../policy/labels.js'
import { ClusterView } from '../proxy/kvstore/cluster-view.js'
import { decodeIpEntry, decodeNodeEntry, isNodeName, KvstoreKeys } from '../proxy/kvstore/kvstore-keys.js'

const keys = new KvstoreKeys('l7proxy')
const web = LabelSet.fromRecord({ app: 'web', 'io.kubernetes.pod.namespace': 'default' })
const db = LabelSet.fromRecord({ app: 'db', 'io.kubernetes.pod.namespace': 'default' })
const ipEntry = (ip: string, id: number, node: string): string =>
  JSON.stringify({ IP: ip, ID: id, HostIP: '198.19.0.2', Node: node, Name: 'pod' })

function view(self = 'node1') {
  const bad: Array<[string, string]> = []
  return { v: new ClusterView(keys, self, (k, why) => void bad.push([k, why])), bad }
}

t.test('keys: each kind parsed back; what is not ours, or not valid, is null', async (t) => {
  t.same(keys.parse(keys.id(300)), { kind: 'identity', id: 300 })
  t.same(keys.parse(keys.labels(web.canonical)), { kind: 'labels', labels: web.canonical })
  t.same(
    keys.parse(keys.user('k8s:app.kubernetes.io/name=x', 'node2')),
    { kind: 'user', labels: 'k8s:app.kubernetes.io/name=x', node: 'node2' },
    'a label with a slash: the node is the last part',
  )
  t.same(keys.parse(keys.ip('198.18.1.10')), { kind: 'ip', ip: '198.18.1.10' })
  t.same(keys.parse(keys.node('node-2')), { kind: 'node', node: 'node-2' })
  t.same(keys.parse(keys.policy('l7-rule.yaml')), { kind: 'policy', name: 'l7-rule.yaml' })
  t.equal(keys.parse(keys.id(5)), null, 'a reserved number is never a cluster identity')
  t.equal(keys.parse(keys.id(70000)), null)
  t.equal(keys.parse(keys.ip('198.18.1.300')), null)
  t.equal(keys.parse('other/state/ip/v1/default/198.18.1.10'), null)
  t.equal(isNodeName('Node1'), false)
  t.equal(isNodeName('node1'), true)
})

t.test('values: an ipcache entry and a node entry are checked field by field', async (t) => {
  t.same(decodeIpEntry(ipEntry('198.18.1.10', 300, 'node2'), '198.18.1.10'), {
    IP: '198.18.1.10',
    ID: 300,
    HostIP: '198.19.0.2',
    Node: 'node2',
    Name: 'pod',
  })
  t.match(
    decodeIpEntry(ipEntry('198.18.1.10', 300, 'node2'), '198.18.1.11'),
    /IP "198.18.1.10" is not the key's 198.18.1.11/,
  )
  t.match(decodeIpEntry(ipEntry('198.18.1.10', 2, 'node2'), '198.18.1.10'), /ID 2 is not a cluster identity/)
  t.match(decodeIpEntry('{', '198.18.1.10'), /not JSON/)
  t.match(decodeIpEntry('[]', '198.18.1.10'), /not a JSON object/)
  const node = {
    Name: 'node2',
    IPAddresses: [{ Type: 'InternalIP', IP: '198.19.0.2' }],
    PolicyRevision: 7,
    Endpoints: 3,
    StartedAt: 'x',
  }
  t.same(decodeNodeEntry(JSON.stringify(node), 'node2'), node)
  t.match(decodeNodeEntry(JSON.stringify({ ...node, PolicyRevision: -1 }), 'node2'), /PolicyRevision/)
  t.match(decodeNodeEntry(JSON.stringify(node), 'node3'), /not the key's node3/)
})

t.test(
  "view: another node's pod once its identity is known; this node's own never; gone when either goes",
  async (t) => {
    const { v, bad } = view()
    v.put(keys.ip('198.18.2.10'), ipEntry('198.18.2.10', 300, 'node2'), 5)
    t.same(v.take().endpoints, [], 'identity 300 not known yet: nothing (world)')
    v.put(keys.id(300), web.canonical, 6)
    const [[ip, peer]] = v.take().endpoints as [[string, { identity: number; labels: LabelSet }]]
    t.equal(ip, '198.18.2.10')
    t.equal(peer.identity, 300)
    t.equal(peer.labels.canonical, web.canonical)
    v.put(keys.ip('198.18.1.10'), ipEntry('198.18.1.10', 300, 'node1'), 7)
    t.same(v.take().endpoints, [], "this node's own address is its endpoint's, never remote")
    v.put(keys.ip('198.18.2.10'), ipEntry('198.18.2.10', 300, 'node2'), 8)
    t.same(v.take().endpoints, [], 'the same value again: no change')
    v.delete(keys.id(300), 9)
    t.same(v.take().endpoints, [['198.18.2.10', null]], 'its identity collected: gone')
    v.put(keys.id(301), db.canonical, 10)
    v.put(keys.ip('198.18.2.10'), ipEntry('198.18.2.10', 301, 'node2'), 10)
    t.same(
      v.take().endpoints.map(([i, p]) => [i, p?.identity]),
      [['198.18.2.10', 301]],
      'a new identity for the address',
    )
    v.delete(keys.ip('198.18.2.10'), 11)
    t.same(v.take().endpoints, [['198.18.2.10', null]])
    t.equal(v.revision, 11)
    t.same(bad, [])
  },
)

t.test('view: a listing after a gap hands out only what changed; bad values are reported and left out', async (t) => {
  const { v, bad } = view()
  v.reset(
    [
      { key: keys.id(300), value: web.canonical, revision: 2 },
      { key: keys.id(301), value: db.canonical, revision: 3 },
      { key: keys.ip('198.18.2.10'), value: ipEntry('198.18.2.10', 300, 'node2'), revision: 4 },
      { key: keys.ip('198.18.2.20'), value: ipEntry('198.18.2.20', 301, 'node2'), revision: 5 },
      { key: keys.policy('a'), value: 'text-a', revision: 6 },
    ],
    10,
  )
  t.same(
    v.take().endpoints.map(([i, p]) => [i, p?.identity]),
    [
      ['198.18.2.10', 300],
      ['198.18.2.20', 301],
    ],
  )
  t.equal(v.policyRevision, 6)
  // While the node was away: .20 went, .30 came, a policy changed; .10 stayed as it was.
  v.reset(
    [
      { key: keys.id(300), value: web.canonical, revision: 2 },
      { key: keys.ip('198.18.2.10'), value: ipEntry('198.18.2.10', 300, 'node2'), revision: 4 },
      { key: keys.ip('198.18.2.30'), value: ipEntry('198.18.2.30', 300, 'node3'), revision: 12 },
      { key: keys.ip('198.18.2.40'), value: '{"IP":"198.18.2.40"}', revision: 13 },
      { key: keys.id(302), value: 'no labels here', revision: 14 },
      { key: keys.policy('a'), value: 'text-b', revision: 15 },
    ],
    20,
  )
  const change = v.take()
  t.same(
    change.endpoints.map(([i, p]) => [i, p?.identity ?? null]).sort(),
    [
      ['198.18.2.20', null],
      ['198.18.2.30', 300],
    ],
    'the one that stayed is not handed out again',
  )
  t.same(change.policies, [['a', 'text-b']])
  t.equal(v.policyRevision, 15)
  t.same(
    bad.map(([k]) => k),
    [keys.ip('198.18.2.40'), keys.id(302)],
  )
  v.reset([], 21)
  t.same(v.take().policies, [['a', null]], 'a policy gone from the listing is removed')
})

t.test('view: identities with the nodes that use them; nodes', async (t) => {
  const { v } = view()
  v.put(keys.id(300), web.canonical, 1)
  v.put(keys.user(web.canonical, 'node2'), '300', 2)
  v.put(keys.user(web.canonical, 'node1'), '300', 3)
  v.put(
    keys.node('node2'),
    JSON.stringify({
      Name: 'node2',
      IPAddresses: [{ Type: 'InternalIP', IP: '198.19.0.2' }],
      PolicyRevision: 0,
      Endpoints: 1,
      StartedAt: 'x',
    }),
    4,
  )
  t.same(v.identities(), [{ id: 300, labels: web.canonical, nodes: ['node1', 'node2'] }])
  v.delete(keys.user(web.canonical, 'node2'), 5)
  t.same(v.identities()[0]!.nodes, ['node1'])
  t.same(
    v.nodes().map((n) => n.Name),
    ['node2'],
  )
})

t.test(
  'engine: other nodes pods in the ipcache with their cluster identity; local endpoints win; a clash changes nothing',
  async (t) => {
    const e = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
    e.upsertEndpoint({
      id: 1,
      labels: { app: 'web', 'io.kubernetes.pod.namespace': 'default' },
      ips: ['198.18.1.10'],
      identity: 300,
    })
    t.equal(e.endpointInfo(1)!.identity, 300, 'the number the store gave')
    e.setRemoteEndpoint('198.18.2.10', { identity: 301, labels: db })
    t.equal(e.identityOf('198.18.2.10'), 301)
    e.setRemoteEndpoint('198.18.2.11', { identity: 301, labels: db })
    t.same(e.takeDelta().ipcache.upserts.sort(), [
      ['198.18.1.10/32', 300],
      ['198.18.2.10/32', 301],
      ['198.18.2.11/32', 301],
    ])
    t.throws(
      () => e.setRemoteEndpoint('198.18.2.12', { identity: 300, labels: db }),
      { code: 'EIDENTITYCLASH', message: /identity 300 for k8s:app=db.* clashes with identity 301 for these labels/ },
      'db is 301 here',
    )
    t.equal(e.identityOf('198.18.2.12'), RESERVED_IDENTITIES.world)
    e.setRemoteEndpoint('198.18.1.10', { identity: 301, labels: db })
    t.equal(e.identityOf('198.18.1.10'), 300, "this node's endpoint wins over a stale remote entry")
    e.setRemoteEndpoint('198.18.1.10', null)
    e.setRemoteEndpoint('198.18.2.10', null)
    t.ok(e.identities.get(301), 'still held by .11')
    e.setRemoteEndpoint('198.18.2.11', null)
    t.equal(e.identities.get(301), undefined, 'released with its last address')
    t.same(e.takeDelta().ipcache.deletes.sort(), ['198.18.2.10/32', '198.18.2.11/32'])
  },
)

t.test(
  'engine: an endpoint at reserved:init is enforced both ways (Cilium: allowed only what policy for init allows)',
  async (t) => {
    const e = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
    e.upsertEndpoint({ id: 1, labels: { 'reserved:init': '' }, ips: ['198.18.1.10'] })
    t.same(e.endpointInfo(1)!.enforce, { ingress: true, egress: true })
    t.equal(e.endpointInfo(1)!.identity, RESERVED_IDENTITIES.init)
    t.equal(e.decide(1, 'egress', RESERVED_IDENTITIES.world, 6, 80).verdict, 'deny')
  },
)
