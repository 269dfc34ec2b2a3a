// The agent's cluster part against a real etcd: identities numbered cluster-wide (two nodes
// racing for the same new labels get one number; released ones collected once no node uses
// them, also a dead node's), endpoints and policy documents shared between nodes, and the
// faults: etcd away (degraded, what is known stays, a new endpoint waits at init, all resumes
// when etcd is back), a node that dies (its pods leave the others' view when its lease
// expires) and one that restarts within its lease (the others see no change).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { type AddressInfo, connect, createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Logger } from 'pino'
import t, { type Test } from 'tap'
import { initCa, issueLeaf } from '../certs/local-ca.js'
import { startEtcd } from '../lab/etcd-server.js'
import type { RemotePeer } from '../policy/engine.js'
import { LabelSet } from '../policy/labels.js'
import { ClusterIdentities } from '../proxy/kvstore/cluster-identities.js'
import {
  ClusterNode,
  type ClusterSinks,
  clusterPolicyFile,
  type KvstoreSettings,
  type LocalEndpoint,
} from '../proxy/kvstore/cluster-node.js'
import { EtcdStore } from '../proxy/kvstore/etcd-store.js'
import { KvstoreKeys } from '../proxy/kvstore/kvstore-keys.js'
import { LeasedKeys } from '../proxy/kvstore/leased-keys.js'
import { etcdTest, freePort, withEtcd } from './fixtures/etcd.js'
import { jsonLogger } from './fixtures/json-logger.js'
import { waitUntil } from './fixtures/wait.js'

const PREFIX = 'l7test'
const keys = new KvstoreKeys(PREFIX)
const labelsOf = (i: number): LabelSet =>
  LabelSet.fromRecord({ app: `app${i}`, 'io.kubernetes.pod.namespace': 'default' })

/** One node's identity allocator on its own connection and lease. */
async function allocator(t: Test, url: string, node: string, logger: Logger) {
  const store = new EtcdStore([url], null)
  const leased = new LeasedKeys(store, 5, logger, () => undefined)
  leased.start()
  const ids = new ClusterIdentities(
    store,
    keys,
    node,
    () => leased.currentLease,
    logger,
    () => undefined,
  )
  t.ok(await waitUntil(() => leased.currentLease !== null, 100, 50), `${node}: lease granted`)
  return {
    ids,
    store,
    close: () => {
      leased.stop()
      store.close()
    },
  }
}

/** A node of the cluster whose sinks keep what they were told. */
function clusterNode(url: string, node: string, logger: Logger, o: Partial<KvstoreSettings> = {}) {
  const remote = new Map<string, RemotePeer>()
  const events: Array<[string, number | null]> = []
  const policies = new Map<string, string>()
  let endpoints: LocalEndpoint[] = []
  let identified: LocalEndpoint[] = []
  const sinks: ClusterSinks = {
    remote: (changes) => {
      for (const [ip, peer] of changes) {
        events.push([ip, peer?.identity ?? null])
        if (peer) remote.set(ip, peer)
        else remote.delete(ip)
      }
    },
    policy: (name, text) => {
      if (text === null) policies.delete(name)
      else policies.set(name, text)
      return null
    },
    identitiesChanged: () => void (identified = n.identify(endpoints)),
  }
  const settings: KvstoreSettings = {
    endpoints: [url],
    prefix: PREFIX,
    tls: null,
    node,
    nodeAddress: '198.19.0.1',
    leaseTtlSeconds: 4,
    identityGcSeconds: 3600,
    ...o,
  }
  const n = new ClusterNode(settings, sinks, logger)
  return {
    n,
    remote,
    events,
    policies,
    identified: () => identified,
    setEndpoints: (list: LocalEndpoint[]) => {
      endpoints = list
      identified = n.identify(list)
    },
  }
}

const endpoint = (id: number, ip: string, app: string): LocalEndpoint => ({
  id,
  host: app,
  ips: [ip],
  labels: { app, 'io.kubernetes.pod.namespace': 'default' },
})

etcdTest(
  t,
  'identities: two nodes racing for the same new labels get one number each time; numbers never repeat',
  async (t, etcd) => {
    const { logger } = jsonLogger()
    const a = await allocator(t, etcd.clientUrl, 'node1', logger)
    const b = await allocator(t, etcd.clientUrl, 'node2', logger)
    t.teardown(() => {
      a.close()
      b.close()
    })
    const N = 40
    const sets = Array.from({ length: N }, (_, i) => labelsOf(i))
    const [fromA, fromB] = await Promise.all([
      Promise.all(sets.map((l) => a.ids.acquire(l))),
      Promise.all(sets.map((l) => b.ids.acquire(l))),
    ])
    t.same(fromA, fromB, 'the same labels got the same number on both nodes')
    t.equal(new Set(fromA).size, N, 'different labels, different numbers')
    t.ok(
      fromA.every((id) => id >= 256 && id <= 65535),
      'cluster identities are in 256-65535',
    )
    t.equal(a.ids.stats.allocated + b.ids.stats.allocated, N, 'each number was made once')
    t.equal(a.ids.stats.joined + b.ids.stats.joined, N, 'and joined once by the other node')
    const ids = await a.store.range({ prefix: keys.ids })
    t.equal(ids.kvs.length, N, 'one id key per labels')
    t.same(
      ids.kvs.find((kv) => kv.key === keys.id(fromA[7]!))?.value,
      sets[7]!.canonical,
      'the id key holds its labels',
    )
  },
)

etcdTest(
  t,
  'identities: released by one node it stays while another uses it; collected after the last; a dead node leaves its own to the collector',
  async (t, etcd) => {
    const { logger } = jsonLogger()
    const a = await allocator(t, etcd.clientUrl, 'node1', logger)
    const b = await allocator(t, etcd.clientUrl, 'node2', logger)
    t.teardown(() => {
      a.close()
      b.close()
    })
    const web = labelsOf(1)
    const id = await a.ids.acquire(web)
    t.equal(await b.ids.acquire(web), id)
    a.ids.release(web.canonical)
    t.ok(
      await waitUntil(
        async () => (await a.store.range({ prefix: keys.usersOf(web.canonical) })).kvs.length === 1,
        100,
        20,
      ),
      "node1's user key went",
    )
    t.equal((await a.store.range({ key: keys.id(id) })).kvs.length, 1, 'node2 still uses it: not collected')
    b.ids.release(web.canonical)
    t.ok(
      await waitUntil(async () => (await a.store.range({ key: keys.id(id) })).kvs.length === 0, 100, 20),
      'collected once no node uses it',
    )
    t.equal((await a.store.range({ key: keys.labels(web.canonical) })).kvs.length, 0)
    // A node that dies keeps its user key until its lease expires; then the collector takes it.
    const c = await allocator(t, etcd.clientUrl, 'node3', logger)
    const dbId = await c.ids.acquire(labelsOf(2))
    c.close() // no revoke: the lease runs out (5 s)
    t.equal(await a.ids.collectAll(), 0, 'in use by node3 until its lease expires')
    t.ok(
      await waitUntil(async () => (await a.ids.collectAll()) === 1, 40, 250),
      "collected after node3's lease expired",
    )
    t.equal((await a.store.range({ key: keys.id(dbId) })).kvs.length, 0)
  },
)

etcdTest(
  t,
  'nodes: endpoints and policy documents reach the other node; a removed endpoint leaves it; status shows every node',
  async (t, etcd) => {
    const { logger } = jsonLogger()
    const a = clusterNode(etcd.clientUrl, 'node1', logger)
    const b = clusterNode(etcd.clientUrl, 'node2', logger)
    t.teardown(async () => {
      await a.n.stop()
      await b.n.stop()
    })
    a.setEndpoints([endpoint(1, '198.18.1.10', 'web')])
    b.setEndpoints([endpoint(1, '198.18.2.10', 'db')])
    a.n.start()
    b.n.start()
    t.ok(
      await waitUntil(() => b.remote.has('198.18.1.10') && a.remote.has('198.18.2.10'), 100, 50),
      "each node has the other's pod",
    )
    const webId = a.identified()[0]!.identity!
    t.equal(b.remote.get('198.18.1.10')!.identity, webId, 'with the number node1 holds for it')
    t.equal(b.remote.get('198.18.1.10')!.labels.canonical, 'k8s:app=web;k8s:io.kubernetes.pod.namespace=default')
    t.notOk(a.remote.has('198.18.1.10'), 'its own endpoint is never remote')
    const policy =
      'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: { name: p }\nspec:\n  endpointSelector: { matchLabels: { app: web } }\n  ingress: [{}]\n'
    const revision = await a.n.importPolicy('p', policy)
    t.ok(await waitUntil(() => b.policies.get(clusterPolicyFile('p')) === policy, 100, 50), 'the policy reached node2')
    t.ok(
      await waitUntil(() => a.n.status().nodes.find((n) => n.name === 'node2')?.policyRevision === revision, 100, 50),
      "node1 sees node2 enforce the import's revision",
    )
    await t.rejects(
      a.n.importPolicy('q', 'kind: CiliumNetworkPolicy\nspec: 7\n'),
      { code: 'EPOLICY' },
      'a policy that does not parse is refused, never stored',
    )
    await t.rejects(a.n.importPolicy('../x', policy), { code: 'EPOLICYNAME' })
    const st = a.n.status()
    t.same(
      st.nodes.map((n) => [n.name, n.endpoints, n.self]),
      [
        ['node1', 1, true],
        ['node2', 1, false],
      ],
    )
    t.equal(st.degraded, false, st.reasons.join('; '))
    t.same(
      a.n.remoteEndpoints().map((e) => [e.IP, e.Node, e.Name]),
      [['198.18.2.10', 'node2', 'db']],
    )
    a.setEndpoints([])
    t.ok(await waitUntil(() => !b.remote.has('198.18.1.10'), 100, 50), 'a removed endpoint leaves the other node')
    t.ok(await a.n.removePolicy('p'))
    t.ok(await waitUntil(() => !b.policies.has(clusterPolicyFile('p')), 100, 50), 'a removed policy leaves it too')
  },
)

etcdTest(
  t,
  'faults: etcd away (degraded, known state stays, a new endpoint waits at init); back (resumed, no gap); a dead node expires; a restarted one does not flap',
  async (t, etcd) => {
    const { logger, lines } = jsonLogger()
    const a = clusterNode(etcd.clientUrl, 'node1', logger)
    const b = clusterNode(etcd.clientUrl, 'node2', logger)
    t.teardown(async () => {
      await a.n.stop()
      await b.n.stop()
    })
    a.setEndpoints([endpoint(1, '198.18.1.10', 'web')])
    b.setEndpoints([endpoint(1, '198.18.2.10', 'db')])
    a.n.start()
    b.n.start()
    t.ok(await waitUntil(() => b.remote.has('198.18.1.10') && a.remote.has('198.18.2.10'), 100, 50))

    await etcd.stop()
    t.ok(
      await waitUntil(() => a.n.status().degraded && !a.n.status().connected, 100, 50),
      'node1 reports itself degraded',
    )
    t.ok(a.remote.has('198.18.2.10') && b.remote.has('198.18.1.10'), 'what each knew stays in force')
    a.setEndpoints([endpoint(1, '198.18.1.10', 'web'), endpoint(2, '198.18.1.11', 'cache')])
    t.same(a.identified()[1]!.labels, { 'reserved:init': '' }, 'an endpoint made meanwhile holds reserved:init')
    t.equal(a.identified()[1]!.identity, undefined)
    t.ok(
      lines.some((l) => l.msg === 'kvstore: disconnected; enforcing what is known (degraded)'),
      'the disconnection is logged',
    )
    const eventsBefore = b.events.length

    await etcd.restart()
    t.ok(
      await waitUntil(() => a.identified()[1]?.identity !== undefined, 200, 50),
      'back: the new endpoint got its number',
    )
    t.ok(
      await waitUntil(() => b.remote.get('198.18.1.11')?.identity === a.identified()[1]!.identity, 100, 50),
      'and node2 has it',
    )
    t.ok(await waitUntil(() => !a.n.status().degraded && !b.n.status().degraded, 100, 50), 'neither degraded')
    t.same(
      b.events.slice(eventsBefore),
      [['198.18.1.11', a.identified()[1]!.identity]],
      'node2 saw exactly the one change: nothing else flapped',
    )

    // node1 restarts within its lease: the same keys written again, node2 sees nothing change.
    const before = b.events.length
    await a.n.stop()
    const a2 = clusterNode(etcd.clientUrl, 'node1', logger)
    t.teardown(() => a2.n.stop())
    a2.setEndpoints([endpoint(1, '198.18.1.10', 'web'), endpoint(2, '198.18.1.11', 'cache')])
    a2.n.start()
    t.ok(
      await waitUntil(
        () => a2.identified().every((e) => e.identity !== undefined) && a2.remote.has('198.18.2.10'),
        100,
        50,
      ),
      'restarted node1 is back',
    )
    t.same(
      a2.identified().map((e) => e.identity),
      a.identified().map((e) => e.identity),
      'with the same numbers',
    )
    await new Promise((r) => setTimeout(r, 5_000)) // past the old lease's TTL (4 s)
    t.same(b.events.slice(before), [], 'node2 saw no change at all')

    // node2 dies (no revoke): its pod leaves node1's view when its lease expires.
    await b.n.stop()
    t.ok(
      await waitUntil(() => !a2.remote.has('198.18.2.10'), 60, 250),
      "node2's pod is gone from node1 after its lease expired",
    )
    t.notOk(
      a2.n.status().nodes.some((n) => n.name === 'node2'),
      'and node2 itself',
    )
    await etcd.stop()
    await a2.n.stop()
    t.pass('a node stops with etcd away (its watch is not waited for)')
  },
)

withEtcd(
  t,
  'tls: a store reached over https with the configured CA; one whose certificate another CA signed is refused',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'l7-etcd-tls-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const ca = await initCa(join(dir, 'ca'))
    await initCa(join(dir, 'other'))
    const write = async (
      name: string,
      leaf: Promise<{ certPem: string; keyPem: string }>,
    ): Promise<{ cert: string; key: string }> => {
      const l = await leaf
      writeFileSync(join(dir, `${name}.pem`), l.certPem)
      writeFileSync(join(dir, `${name}-key.pem`), l.keyPem)
      return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) }
    }
    // For a name: the endpoint is an address, and Node 26 sends none as a TLS server name.
    const server = await write('server', issueLeaf(ca, 'etcd.l7proxy.test'))
    const client = await write('client', issueLeaf(ca, 'node1'))
    const etcd = await startEtcd({
      dir: join(dir, 'etcd'),
      address: '127.0.0.1',
      clientPort: await freePort(),
      peerPort: await freePort(),
      netns: null,
      tls: server,
    })
    t.teardown(() => etcd.stop())
    t.match(etcd.clientUrl, /^https:\/\//)
    const store = new EtcdStore([etcd.clientUrl], {
      ca: join(dir, 'ca', 'ca.crt'),
      ...client,
      serverName: 'etcd.l7proxy.test',
    })
    t.teardown(() => store.close())
    await store.put(keys.node('node1'), 'x')
    t.same(
      (await store.range({ key: keys.node('node1') })).kvs.map((kv) => kv.value),
      ['x'],
      'written and read back over TLS',
    )
    const wrong = new EtcdStore([etcd.clientUrl], {
      ca: join(dir, 'other', 'ca.crt'),
      ...client,
      serverName: 'etcd.l7proxy.test',
    })
    t.teardown(() => wrong.close())
    await t.rejects(
      wrong.range({ key: keys.node('node1') }),
      'a server the configured CA did not sign is not talked to',
    )
  },
)

/** A TCP relay to etcd that the test can cut and restore (a node's link to the store, and only its). */
async function relay(t: Test, to: string): Promise<{ url: string; cut(): void; restore(): void }> {
  const { hostname, port } = new URL(to)
  let up = true
  const open = new Set<Socket>()
  const server = createServer((client) => {
    if (!up) return void client.destroy()
    const upstream = connect(Number(port), hostname)
    for (const s of [client, upstream]) {
      open.add(s)
      s.on('error', () => undefined)
      s.on('close', () => open.delete(s))
    }
    client.pipe(upstream).pipe(client)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    for (const s of open) s.destroy()
    server.close()
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut: () => {
      up = false
      for (const s of open) s.destroy()
    },
    restore: () => void (up = true),
  }
}

etcdTest(
  t,
  'a node whose watch revision was compacted while it was cut off lists everything again: what went is gone, what came is there, nothing else changes',
  async (t, etcd) => {
    const { logger, lines } = jsonLogger()
    const link = await relay(t, etcd.clientUrl)
    const a = clusterNode(etcd.clientUrl, 'node1', logger, { leaseTtlSeconds: 30 })
    const b = clusterNode(link.url, 'node2', logger, { leaseTtlSeconds: 30 })
    t.teardown(async () => {
      await a.n.stop()
      await b.n.stop()
    })
    a.setEndpoints([endpoint(1, '198.18.1.10', 'web'), endpoint(2, '198.18.1.11', 'cache')])
    a.n.start()
    b.n.start()
    t.ok(await waitUntil(() => b.remote.has('198.18.1.10') && b.remote.has('198.18.1.11'), 100, 50))
    link.cut()
    t.ok(await waitUntil(() => !b.n.status().connected, 100, 50), 'node2 lost its link to the store')
    a.setEndpoints([endpoint(1, '198.18.1.10', 'web'), endpoint(3, '198.18.1.12', 'db')])
    const store = new EtcdStore([etcd.clientUrl], null)
    t.teardown(() => store.close())
    t.ok(
      await waitUntil(
        async () =>
          (await store.range({ prefix: keys.ips })).kvs
            .map((kv) => kv.key)
            .sort()
            .join() === [keys.ip('198.18.1.10'), keys.ip('198.18.1.12')].join(),
        100,
        50,
      ),
      'node1 changed its endpoints meanwhile',
    )
    const { revision } = await store.range({ key: keys.ip('198.18.1.10') })
    await store.client.kv.compact({ revision, physical: true })
    const before = b.events.length
    link.restore()
    t.ok(
      await waitUntil(() => b.remote.has('198.18.1.12') && !b.remote.has('198.18.1.11'), 200, 50),
      'back: the new pod is there and the gone one is not',
    )
    t.ok(
      lines.some((l) => l.msg === 'kvstore: watch cancelled; listing everything again'),
      'its watch could not resume (compacted): it listed everything',
    )
    t.same(
      b.events.slice(before).sort(),
      [
        ['198.18.1.11', null],
        ['198.18.1.12', a.identified()[1]!.identity!],
      ].sort(),
      'only what changed was applied (198.18.1.10 never flapped)',
    )
    t.ok(b.n.status().listings >= 2)
  },
)
