// The agent's admin routes against a real policy engine and flow feed (no kernel): what the CLI
// is shown, and bad queries refused with what is wrong.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import { Registry } from 'prom-client'
import t, { type Test } from 'tap'
import { labEndpoints } from '../lab/topology.js'
import { PolicyEngine } from '../policy/engine.js'
import { parsePolicyText } from '../policy/parse.js'
import { type AgentParts, adminRoutes } from '../proxy/agent/admin-routes.js'
import { AdminQueryError, type AdminRoute } from '../proxy/agent/admin-server.js'
import { CniEndpoints } from '../proxy/agent/cni-endpoints.js'
import type { NodeEndpoint } from '../proxy/agent/endpoints-file.js'
import { FlowFeed } from '../proxy/agent/flow-feed.js'
import { PolicyFiles } from '../proxy/agent/policy-files.js'

const POLICY = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: deathstar-l7 }
spec:
  endpointSelector: { matchLabels: { class: deathstar } }
  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules: { http: [ { method: POST, path: "/v1/request-landing" } ] }
`

/** What a node in a cluster answers, as a stand-in for its store. */
function fakeCluster() {
  const stored = new Map<string, string>()
  const cluster: NonNullable<AgentParts['cluster']> = {
    importPolicy: async (name, text) => {
      if (name === 'down') throw new Error('etcd: connection refused')
      parsePolicyText(text, name)
      stored.set(name, text)
      return 42
    },
    removePolicy: async (name) => stored.delete(name),
    remoteEndpoints: () => [{ IP: '198.18.3.10', ID: 300, HostIP: '198.19.0.3', Node: 'node3', Name: 'probe' }],
    clusterIdentities: () => [{ id: 300, labels: 'k8s:app=probe', nodes: ['node3'] }],
    status: () =>
      ({
        policyRevision: 42,
        nodes: [
          { name: 'node1', policyRevision: 42 },
          { name: 'node3', policyRevision: 41 },
        ],
      }) as ReturnType<NonNullable<AgentParts['cluster']>['status']>,
  }
  return { cluster, stored }
}

function setup(t: Test, cluster: AgentParts['cluster'] = null) {
  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  const list = labEndpoints()
  for (const ep of list) engine.upsertEndpoint(ep)
  const lines: Array<Record<string, unknown>> = []
  const logger = pino(
    { base: null },
    new Writable({
      write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString()) as Record<string, unknown>), cb()),
    }),
  )
  const dir = mkdtempSync(join(tmpdir(), 'l7-admin-routes-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const policies = new PolicyFiles({ engine, logger, file: null, dir })
  t.teardown(() => policies.close())
  const feed = new FlowFeed((id) => list.find((e) => e.id === id)?.ips ?? [])
  const cleaned: string[][] = []
  const deathstar = list.find((e) => e.host === 'deathstar')!
  const tiefighter = engine.endpointInfo(list.find((e) => e.host === 'tiefighter')!.id)!.identity
  const registered: NodeEndpoint[][] = []
  const handoverCalls: string[] = []
  const merged: Array<{ name: string }> = []
  const cni = new CniEndpoints({
    stateDir: dir,
    labelsOf: async (id) => (id === 'known' ? { app: 'x' } : null),
    onChange: (l) => void registered.push(l),
    exists: () => true,
    logger,
    retryMs: 10,
    giveUpMs: 50,
  })
  t.teardown(() => cni.close())
  const routes = adminRoutes({
    engine,
    endpoints: { list },
    cni,
    feed,
    fqdns: {
      entries: () => [],
      clean: () => (cleaned.push(['cantina.empire']), ['cantina.empire']),
      merge: (entries) => (merged.push(...entries), entries.map((e) => e.name)),
    },
    policies,
    metrics: { registry: new Registry(), text: async () => 'l7proxy_up 1\n' },
    datapath: {
      policyEntries: (id) =>
        id === deathstar.id
          ? [
              {
                endpointId: id,
                identity: tiefighter,
                direction: 'ingress',
                protocol: 6,
                port: 80,
                portPrefixLen: 16,
                deny: false,
                proxyPort: 15001,
              },
              {
                endpointId: id,
                identity: 0,
                direction: 'egress',
                protocol: 0,
                port: 0,
                portPrefixLen: 0,
                deny: false,
                proxyPort: 0,
              },
            ]
          : [],
    },
    logger,
    status: () => ({ mode: 'sk-assign' }),
    cluster,
    handover: {
      handoverInfo: () => ({
        pid: 1,
        mode: 'sk-assign',
        pin: '/p',
        proxyAddress: '127.0.0.1',
        proxyPorts: { http: 15001, dns: 15053 },
      }),
      offerHandover: () => (
        handoverCalls.push('offer'),
        {
          pid: 1,
          mode: 'sk-assign',
          pin: '/p',
          proxyAddress: '127.0.0.1',
          proxyPorts: { http: 15001, dns: 15053 },
          fds: { http: [20], dns: [21], dnsTcp: 22, metrics: null },
          earlyDemux: '1',
          identities: [],
        }
      ),
      cancelHandover: () => void handoverCalls.push('cancel'),
      drainAfterHandover: () => void handoverCalls.push('drain'),
    },
  })
  const call = (route: string, query = '', body = ''): unknown =>
    (routes[route] as Extract<AdminRoute, (...a: never[]) => unknown>)(new URLSearchParams(query), body)
  const get = (path: string, query = ''): unknown => call(path, query)
  t.match(
    call('POST /v1/policy/import', 'name=sw.yaml', POLICY),
    { file: 'sw.yaml', revision: Number },
    'a policy imported through its route',
  )
  return { routes, get, call, feed, lines, cleaned, deathstar, registered, dir, handoverCalls, merged }
}

t.test('endpoints, policy and identities as the engine has them', async (t) => {
  const { get, deathstar } = setup(t)
  const eps = get('/v1/endpoints') as Array<Record<string, unknown>>
  t.match(
    eps.find((e) => e.id === deathstar.id),
    { host: 'deathstar', ips: deathstar.ips, identity: Number, rules: ['CiliumNetworkPolicy/default/deathstar-l7'] },
  )
  t.match(get('/v1/policy'), { revision: Number, files: [{ file: 'sw.yaml', text: POLICY }] })
  t.ok(
    (get('/v1/identities') as Array<{ labels: string[] }>).some((i) => i.labels.includes('k8s:class=deathstar')),
    'identities with their labels',
  )
  t.same(get('/v1/status'), { mode: 'sk-assign' })
})

t.test('flows: the feed through a filter; a bad filter is a query error saying what', async (t) => {
  const { get, feed } = setup(t)
  feed.publishLines(
    Buffer.from(
      `${JSON.stringify({ level: 30, time: 5, source: '198.18.1.10:1', destination: '198.18.2.10:80', verdict: 'denied', path: '/x', msg: 'http denied' })}\n`,
    ),
    1,
  )
  t.match(get('/v1/flows', 'verdict=denied'), [{ protocol: 'http', path: '/x' }])
  t.same(get('/v1/flows', 'verdict=allowed'), [])
  t.throws(() => get('/v1/flows', 'verdict=maybe'), {
    constructor: AdminQueryError,
    message: /unknown verdict 'maybe'/,
  })
  t.throws(() => get('/v1/flows', 'last=-1'), { constructor: AdminQueryError, message: /last must be a whole number/ })
})

t.test(
  "bpf policy: an endpoint's entries with their identities' labels; an unknown endpoint is a query error",
  async (t) => {
    const { get, deathstar } = setup(t)
    const entries = get('/v1/bpf/policy', `endpoint=${deathstar.id}`) as Array<{ identity: number; labels: string[] }>
    t.ok(entries[0]!.labels.includes('k8s:class=tiefighter'), 'a peer by its labels')
    t.same(entries[1]!.labels, ['(any)'], 'identity 0 is any')
    t.throws(() => get('/v1/bpf/policy', 'endpoint=999'), {
      constructor: AdminQueryError,
      message: /no endpoint '999' on this node/,
    })
  },
)

t.test('metrics in Prometheus text format, not JSON', async (t) => {
  const { get } = setup(t)
  t.match(await get('/metrics'), { contentType: /^text\/plain/, body: 'l7proxy_up 1\n' })
})

t.test('cleaning the FQDN cache says what went, and logs it', async (t) => {
  const { routes, lines, cleaned } = setup(t)
  const clean = routes['POST /v1/fqdn/clean'] as Extract<AdminRoute, (...a: never[]) => unknown>
  t.same(clean(new URLSearchParams(), ''), { removed: ['cantina.empire'] })
  t.same(cleaned, [['cantina.empire']])
  t.match(lines.at(-1), { msg: 'fqdn cache cleaned', names: 1 })
})

t.test(
  'l7proxy-cni registers a container interface at init, its labels follow; DEL is repeatable; bad calls change nothing',
  async (t) => {
    const { call, registered, dir } = setup(t)
    const add = call(
      'POST /v1/cni/add',
      '',
      JSON.stringify({ containerId: 'known', ifname: 'eth0', interface: 'lxc1', ips: ['198.19.0.5'] }),
    )
    t.match(
      add,
      { id: 1000, host: 'known', interface: 'lxc1', ips: ['198.19.0.5'], labels: { 'reserved:init': '' } },
      'at init while the runtime has not said',
    )
    for (let i = 0; i < 50 && !registered.at(-1)?.[0]?.labels.app; i++) await new Promise((r) => setTimeout(r, 10))
    t.same(
      registered.at(-1)?.[0]?.labels,
      { 'io.kubernetes.pod.namespace': 'default', app: 'x' },
      'then with the labels the runtime gives (namespace default)',
    )
    t.throws(
      () =>
        call(
          'POST /v1/cni/add',
          '',
          JSON.stringify({ containerId: 'other', ifname: 'eth0', interface: 'lxc2', ips: ['198.19.0.5'] }),
        ),
      /already the address of container known/,
    )
    t.throws(() => call('POST /v1/cni/add', '', '{"containerId":"a/b"}'), /containerId: expected a container id/)
    t.throws(
      () =>
        call(
          'POST /v1/cni/add',
          '',
          JSON.stringify({ containerId: 'c', ifname: 'eth0', interface: 'lxc3', ips: ['300.1.1.1'] }),
        ),
      /ips: expected IPv4 addresses/,
    )
    t.match(
      call(
        'POST /v1/cni/add',
        '',
        JSON.stringify({ containerId: 'unknown', ifname: 'eth0', interface: 'lxc4', ips: ['198.19.0.6'] }),
      ),
      { id: 1001 },
    )
    t.match(
      readFileSync(join(dir, 'cni-endpoints.json'), 'utf8'),
      /"containerId":"unknown"/,
      'kept in the state directory',
    )
    t.same(call('POST /v1/cni/del', '', '{"containerId":"known","ifname":"eth0"}'), { removed: true })
    t.same(
      call('POST /v1/cni/del', '', '{"containerId":"known","ifname":"eth0"}'),
      { removed: false },
      'a second DEL is fine',
    )
    t.same(
      registered.at(-1)?.map((e) => e.id),
      [1001],
    )
    const again = new CniEndpoints({
      stateDir: dir,
      labelsOf: async () => null,
      onChange: () => undefined,
      exists: () => true,
      logger: pino({ level: 'silent' }),
      retryMs: 10,
      giveUpMs: 20,
    })
    t.teardown(() => again.close())
    t.same(
      again.list().map((e) => [e.id, e.host]),
      [[1001, 'unknown']],
      'an agent restarted reads them back',
    )
    const gone = new CniEndpoints({
      stateDir: dir,
      labelsOf: async () => null,
      onChange: () => undefined,
      exists: () => false,
      logger: pino({ level: 'silent' }),
    })
    t.same(gone.list(), [], 'except those whose interface went while no agent ran')
  },
)

t.test('a CNI ADD the agent has no room for fails with why, and leaves no registration', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-cni-full-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const seen: number[][] = []
  const full = new CniEndpoints({
    stateDir: dir,
    labelsOf: async () => null,
    onChange: (l) => void seen.push(l.map((e) => e.id)),
    refusal: (id) =>
      id === 1000
        ? 'endpoint 1000: refused: its 1 address(es) do not fit the ipcache (6 of maps.ipcacheEntries 6)'
        : null,
    exists: () => true,
    logger: pino({ level: 'silent' }),
  })
  t.teardown(() => full.close())
  t.throws(() => full.add({ containerId: 'c1', ifname: 'eth0', interface: 'lxc9', ips: ['198.19.0.9'] }), {
    constructor: AdminQueryError,
    message: /^endpoint 1000: refused: .*do not fit the ipcache/,
  })
  t.same(full.list(), [], 'not registered')
  t.same(seen, [[1000], []], 'the agent was given it, then its removal')
  t.equal(readFileSync(join(dir, 'cni-endpoints.json'), 'utf8'), '[]', 'nor kept')
})

t.test(
  'a cluster: policy imported into the store (checked first), remote endpoints on request, which nodes use each identity',
  async (t) => {
    const { cluster, stored } = fakeCluster()
    const { call, get } = setup(t, cluster)
    t.same(await call('POST /v1/policy/import', 'cluster=1&name=sw.yaml', POLICY), { name: 'sw.yaml', revision: 42 })
    t.equal(stored.get('sw.yaml'), POLICY)
    await t.rejects(
      call('POST /v1/policy/import', 'cluster=1&name=bad.yaml', 'spec: [') as Promise<unknown>,
      { constructor: AdminQueryError, message: /bad\.yaml/ },
      'a policy that does not parse is a query error',
    )
    await t.rejects(call('POST /v1/policy/import', 'cluster=1&name=down', POLICY) as Promise<unknown>, {
      constructor: AdminQueryError,
      message: /the cluster's store did not take it: etcd: connection refused/,
    })
    t.same(await call('POST /v1/policy/remove', 'name=sw.yaml'), { name: 'sw.yaml', removed: true })
    t.match(get('/v1/policy'), {
      cluster: {
        revision: 42,
        nodes: [
          { node: 'node1', revision: 42 },
          { node: 'node3', revision: 41 },
        ],
      },
    })
    t.notOk(
      (get('/v1/endpoints') as Array<{ node?: string }>).some((e) => e.node),
      "only this node's endpoints unless asked",
    )
    t.match((get('/v1/endpoints', 'remote=1') as unknown[]).at(-1), {
      id: null,
      node: 'node3',
      host: 'probe',
      identity: 300,
      ips: ['198.18.3.10'],
      enforce: null,
    })
    t.match(
      (get('/v1/identities') as unknown[]).find((i) => (i as { id: number }).id === 300),
      { kind: 'endpoint', labels: ['k8s:app=probe'], nodes: ['node3'] },
      'an identity only the store has, with its node',
    )
  },
)

t.test('not in a cluster: a cluster import is a query error saying so', async (t) => {
  const { call } = setup(t)
  await t.rejects(call('POST /v1/policy/import', 'cluster=1&name=sw.yaml', POLICY) as Promise<unknown>, {
    constructor: AdminQueryError,
    message: /not in a cluster/,
  })
})

t.test('handover: what the agent taking over asks, each call reaching the agent', async (t) => {
  const { get, call, handoverCalls } = setup(t)
  t.match(get('/v1/handover'), { pid: 1, mode: 'sk-assign', proxyPorts: { http: 15001 } })
  t.match(call('POST /v1/handover/offer'), { fds: { http: [20], dns: [21], dnsTcp: 22 } })
  t.same(call('POST /v1/handover/cancel'), { cancelled: true })
  t.same(call('POST /v1/handover/drain'), { draining: true })
  t.same(handoverCalls, ['offer', 'cancel', 'drain'])
})

t.test('fqdn merge: names another agent learned, taken in; a body not of that shape is a query error', async (t) => {
  const { call, merged } = setup(t)
  t.same(
    call(
      'POST /v1/fqdn/merge',
      '',
      JSON.stringify([{ name: 'cantina.empire', ips: [{ ip: '192.0.2.3', expiresAt: Date.now() + 60_000 }] }]),
    ),
    { grew: ['cantina.empire'] },
  )
  t.same(
    merged.map((e) => e.name),
    ['cantina.empire'],
  )
  t.throws(() => call('POST /v1/fqdn/merge', '', '{"name":"x"}'), {
    constructor: AdminQueryError,
    message: /expected \[\{ name, ips/,
  })
  t.throws(() => call('POST /v1/fqdn/merge', '', JSON.stringify([{ name: 'x', ips: [{ ip: 1 }] }])), {
    constructor: AdminQueryError,
    message: /expected/,
  })
})
