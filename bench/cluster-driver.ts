// Node 1 of bench:cluster, run in node 1's namespace: the cluster part of an agent (ClusterNode,
// as the agent runs it: identities numbered in etcd, addresses published under its lease) whose
// endpoints the benchmark changes at a steady rate. Prints JSON lines: each change with when it
// was made (performance.timeOrigin + now, comparable across the machine's processes), each
// population's keys and bytes in etcd, and the identity allocation rate. The other nodes are
// real agents; it asks them (admin sockets) when they have a whole population.
//
//   node dist/bench/cluster-driver.js '{"etcd":..., "sizes":[100,1000], "rate":100, "seconds":10, ...}'

import pino from 'pino'
import { LabelSet } from '../policy/labels.js'
import { adminGet } from '../proxy/agent/admin-socket.js'
import { ClusterNode, type LocalEndpoint } from '../proxy/kvstore/cluster-node.js'
import { EtcdStore } from '../proxy/kvstore/etcd-store.js'

export interface DriverInput {
  etcd: string
  node: string
  nodeAddress: string
  /** The other nodes' admin sockets. */
  peers: string[]
  sizes: number[]
  /** Changes per second (an endpoint removed, then one added, in turn). */
  rate: number
  seconds: number
  /** Identities allocated to measure the rate (new labels each). */
  allocations: number
}

export type DriverLine =
  | { type: 'change'; size: number; kind: 'add' | 'remove'; ip: string; at: number }
  | { type: 'population'; size: number; keys: number; bytes: number; identities: number; filledMs: number }
  | { type: 'allocation'; sequentialPerSecond: number; concurrentPerSecond: number; allocations: number }

const input = JSON.parse(process.argv[2] ?? '{}') as DriverInput
const emit = (line: DriverLine): boolean => process.stdout.write(`${JSON.stringify(line)}\n`)
const now = (): number => performance.timeOrigin + performance.now()
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const logger = pino({ base: null, level: 'warn' }, pino.destination(2))
const PREFIX = 'l7proxy'

/** Addresses no lab host has: 198.18.64.0/18, numbered from 1. */
function address(n: number): string {
  return `198.18.${64 + (n >> 8)}.${n & 255}`
}

/** Ten endpoints share an identity, as a deployment's pods do; half of them empire (the deathstar's policy selects those). */
function endpoint(n: number, size: number): LocalEndpoint {
  const app = n % Math.max(1, Math.round(size / 10))
  return {
    id: n,
    host: `bench${n}`,
    ips: [address(n)],
    labels: {
      app: `bench${app}`,
      org: app % 2 === 0 ? 'empire' : 'alliance',
      'io.kubernetes.pod.namespace': 'default',
    },
  }
}

let current: LocalEndpoint[] = []
const node = new ClusterNode(
  {
    endpoints: [input.etcd],
    prefix: PREFIX,
    tls: null,
    node: input.node,
    nodeAddress: input.nodeAddress,
    leaseTtlSeconds: 15,
    identityGcSeconds: 3600,
  },
  { remote: () => undefined, policy: () => null, identitiesChanged: () => void node.identify(current) },
  logger,
)
const store = new EtcdStore([input.etcd], null)

async function until(what: string, ok: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`)
    await sleep(50)
  }
}

/** Whether every other node knows exactly `n` endpoints of this node. */
async function peersHave(n: number): Promise<boolean> {
  const counts = await Promise.all(
    input.peers.map(
      async (s) =>
        ((await adminGet(s, '/v1/endpoints?remote=1')) as Array<{ node?: string }>).filter((e) => e.node === input.node)
          .length,
    ),
  )
  return counts.every((c) => c === n)
}

async function keysAndBytes(): Promise<{ keys: number; bytes: number }> {
  const { kvs } = await store.range({ prefix: `${PREFIX}/` })
  return {
    keys: kvs.length,
    bytes: kvs.reduce((a, kv) => a + Buffer.byteLength(kv.key) + Buffer.byteLength(kv.value), 0),
  }
}

/** The endpoints are now `list`. */
function set(list: LocalEndpoint[]): void {
  current = list
  node.identify(list)
}

async function population(size: number, next: { n: number }): Promise<void> {
  const before = await keysAndBytes()
  const started = now()
  const list = Array.from({ length: size }, () => endpoint(next.n++, size))
  set(list)
  await until(`${size} endpoints known to every other node`, () => peersHave(size))
  const filledMs = now() - started
  const after = await keysAndBytes()
  emit({
    type: 'population',
    size,
    keys: (after.keys - before.keys) / size,
    bytes: (after.bytes - before.bytes) / size,
    identities: new Set(list.map((e) => e.labels.app)).size,
    filledMs,
  })
  // A steady rate: change i at start + i / rate, whatever the last one cost.
  const changes = input.rate * input.seconds
  const start = now() + 100
  for (let i = 0; i < changes; i++) {
    const wait = start + (i * 1000) / input.rate - now()
    if (wait > 0) await sleep(wait)
    if (i % 2 === 0) {
      const gone = current[Math.floor(Math.random() * current.length)]!
      set(current.filter((e) => e !== gone))
      emit({ type: 'change', size, kind: 'remove', ip: gone.ips[0]!, at: now() })
    } else {
      const added = endpoint(next.n++, size)
      set([...current, added])
      emit({ type: 'change', size, kind: 'add', ip: added.ips[0]!, at: now() })
    }
  }
  await sleep(3_000) // the last changes reach every node
  set([])
  await until('every endpoint gone from the other nodes', () => peersHave(0))
}

async function allocationRate(): Promise<void> {
  const n = input.allocations
  const sets = (tag: string): LabelSet[] =>
    Array.from({ length: n }, (_, i) =>
      LabelSet.fromRecord({ app: `alloc-${tag}-${i}`, 'io.kubernetes.pod.namespace': 'default' }),
    )
  const sequential = sets('s')
  let started = now()
  for (const l of sequential) await node.identities.acquire(l)
  const sequentialMs = now() - started
  const concurrent = sets('c')
  started = now()
  await Promise.all(concurrent.map((l) => node.identities.acquire(l)))
  const concurrentMs = now() - started
  for (const l of [...sequential, ...concurrent]) node.identities.release(l.canonical)
  emit({
    type: 'allocation',
    sequentialPerSecond: (n * 1000) / sequentialMs,
    concurrentPerSecond: (n * 1000) / concurrentMs,
    allocations: n,
  })
}

async function main(): Promise<void> {
  node.start()
  await until('a current view of the store and the node lease', async () => !node.status().degraded, 30_000)
  const next = { n: 1 }
  for (const size of input.sizes) await population(size, next)
  await allocationRate()
  await node.stop()
  store.close()
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`cluster driver: ${e.message}\n`)
    process.exit(1)
  },
)
