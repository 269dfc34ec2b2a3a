// The incremental path equals a full compile: on random sequences of identity, endpoint, FQDN
// and policy changes, after every step
//   (a) the engine's delta, applied to the previous state, gives exactly its new full state, and
//       touches nothing that did not change (no no-op writes, no deletes of absent keys);
//   (b) that state equals what a fresh engine computes from scratch from the same inputs.
// Identities are compared by their labels: numbers depend on allocation order.

import fc from 'fast-check'
import t from 'tap'
import { PolicyEngine } from '../policy/engine.js'
import { keyString, type PolicyValue, parseKey } from '../policy/map-state.js'
import type { Entity, LabelRequirement, PeerRuleSpec, PortRuleSpec, RuleSpec, SelectorSpec } from '../policy/model.js'

const PORTS = { http: 15001, dns: 15053 }
const APPS = ['a', 'b', 'c']
const TEAMS = ['x', 'y']
const NAMES = ['cantina.empire', 'hoth.alliance', 'www.cantina.empire']
const IPS = ['192.0.2.3', '192.0.2.4', '192.0.2.5', '203.0.113.7']

type Labels = Record<string, string>

const labelsArb: fc.Arbitrary<Labels> = fc.record(
  { app: fc.constantFrom(...APPS), team: fc.constantFrom(...TEAMS) },
  { requiredKeys: ['app'] },
)

const reqArb: fc.Arbitrary<LabelRequirement> = fc.oneof(
  fc.record({
    source: fc.constant('any'),
    key: fc.constant('app'),
    op: fc.constantFrom('In' as const, 'NotIn' as const),
    values: fc.subarray(APPS, { minLength: 1 }),
  }),
  fc.record({
    source: fc.constant('any'),
    key: fc.constant('team'),
    op: fc.constantFrom('Exists' as const, 'DoesNotExist' as const),
    values: fc.constant([]),
  }),
)

const selectorArb: fc.Arbitrary<SelectorSpec> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.array(reqArb, { maxLength: 2 }).map((requirements) => ({ kind: 'labels' as const, requirements })),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom<SelectorSpec>(
      { kind: 'cidr', cidr: '192.0.2.0/24', except: ['192.0.2.4/32'] },
      { kind: 'cidr', cidr: '203.0.113.0/24', except: [] },
      { kind: 'cidr', cidr: '0.0.0.0/0', except: [] },
    ),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom<Entity>('world', 'cluster', 'all', 'host')
      .map((entity) => ({ kind: 'entity' as const, entity })),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom<SelectorSpec>(
      { kind: 'fqdn', matchName: 'cantina.empire' },
      { kind: 'fqdn', matchPattern: '*.empire' },
      { kind: 'fqdn', matchPattern: '*' },
    ),
  },
)

const portRuleArb = (deny: boolean): fc.Arbitrary<PortRuleSpec> =>
  fc.record({
    ports: fc.array(
      fc
        .oneof(
          fc.constantFrom(80, 443, 53).map((p) => ({ port: p, endPort: p })),
          fc.constant({ port: 8000, endPort: 8010 }),
          fc.constant({ port: 0, endPort: 65535 }),
        )
        .chain((r) => fc.subarray(['TCP', 'UDP'] as const, { minLength: 1 }).map((protocols) => ({ ...r, protocols }))),
      { minLength: 1, maxLength: 2 },
    ),
    l7: deny
      ? fc.constant(null)
      : fc.option(
          fc.constantFrom({ kind: 'http' as const, rules: [{ method: 'GET', headers: [], headerMatches: [] }] }),
          { nil: null },
        ),
  })

const peerRuleArb = (deny: boolean): fc.Arbitrary<PeerRuleSpec> =>
  fc.record({
    peers: fc.option(fc.array(selectorArb, { minLength: 1, maxLength: 2 }), { nil: null }),
    toPorts: fc.option(fc.array(portRuleArb(deny), { minLength: 1, maxLength: 2 }), { nil: null }),
  })

const ruleArb = (id: string): fc.Arbitrary<RuleSpec> =>
  fc.record({
    id: fc.constant(id),
    file: fc.constant('gen'),
    line: fc.constant(1),
    subject: fc.array(reqArb, { maxLength: 1 }),
    ingress: fc.array(peerRuleArb(false), { maxLength: 2 }),
    ingressDeny: fc.array(peerRuleArb(true), { maxLength: 1 }),
    egress: fc.array(peerRuleArb(false), { maxLength: 2 }),
    egressDeny: fc.array(peerRuleArb(true), { maxLength: 1 }),
    defaultDeny: fc.record({ ingress: fc.boolean(), egress: fc.boolean() }, { requiredKeys: [] }),
  })

type Op =
  | { op: 'identity'; labels: Labels }
  | { op: 'release'; index: number }
  | { op: 'endpoint'; id: number; labels: Labels }
  | { op: 'unendpoint'; id: number }
  | { op: 'fqdn'; name: string; ips: string[] }
  | { op: 'rules'; file: string; rules: RuleSpec[] }
  | { op: 'unrules'; file: string }

const fileArb = fc.constantFrom('f1', 'f2', 'f3')
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: labelsArb.map((labels) => ({ op: 'identity' as const, labels })) },
  { weight: 2, arbitrary: fc.nat(20).map((index) => ({ op: 'release' as const, index })) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('endpoint' as const),
      id: fc.integer({ min: 1, max: 3 }),
      labels: labelsArb,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('unendpoint' as const), id: fc.integer({ min: 1, max: 3 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant('fqdn' as const), name: fc.constantFrom(...NAMES), ips: fc.subarray(IPS) }),
  },
  {
    weight: 3,
    arbitrary: fileArb.chain((file) =>
      fc
        .array(ruleArb(file), { maxLength: 2 })
        .map((rules) => ({ op: 'rules' as const, file, rules: rules.map((r, i) => ({ ...r, id: `${file}#${i}` })) })),
    ),
  },
  { weight: 1, arbitrary: fileArb.map((file) => ({ op: 'unrules' as const, file })) },
)

/** The inputs as they stand, to rebuild from scratch. */
class World {
  identities: Labels[] = []
  endpoints = new Map<number, Labels>()
  fqdn = new Map<string, string[]>()
  files = new Map<string, RuleSpec[]>()

  apply(e: PolicyEngine, op: Op, ids: number[]): void {
    switch (op.op) {
      case 'identity':
        ids.push(e.addIdentity(op.labels))
        this.identities.push(op.labels)
        return
      case 'release': {
        if (ids.length === 0) return
        const i = op.index % ids.length
        e.releaseIdentity(ids[i]!)
        ids.splice(i, 1)
        this.identities.splice(i, 1)
        return
      }
      case 'endpoint':
        e.upsertEndpoint({ id: op.id, labels: op.labels, ips: [`198.18.9.${op.id}`] })
        this.endpoints.set(op.id, op.labels)
        return
      case 'unendpoint':
        e.removeEndpoint(op.id)
        this.endpoints.delete(op.id)
        return
      case 'fqdn':
        e.setFqdnIps(op.name, op.ips)
        this.fqdn.set(op.name, op.ips)
        return
      case 'rules':
        e.setRules(op.file, op.rules)
        this.files.set(op.file, op.rules)
        return
      case 'unrules':
        e.removeFile(op.file)
        this.files.delete(op.file)
        return
    }
  }

  fresh(): PolicyEngine {
    const e = new PolicyEngine({ proxyPorts: PORTS })
    for (const [file, rules] of this.files) e.setRules(file, rules)
    for (const [id, labels] of this.endpoints) e.upsertEndpoint({ id, labels, ips: [`198.18.9.${id}`] })
    for (const labels of this.identities) e.addIdentity(labels)
    for (const [name, ips] of this.fqdn) e.setFqdnIps(name, ips)
    return e
  }
}

function identityName(e: PolicyEngine, id: number): string {
  if (id === 0) return 'ANY'
  const identity = e.identities.get(id)
  if (!identity) throw new Error(`key names identity ${id}, which no longer exists`)
  return identity.labels.canonical
}

/** Policy maps and ipcache with identities replaced by their labels. */
function normalized(e: PolicyEngine, maps: Map<number, Map<string, PolicyValue>>, ipcache: Map<string, number>) {
  const out: Record<string, string> = {}
  for (const [ep, entries] of maps) {
    for (const [k, v] of entries) {
      const key = parseKey(k)
      out[`ep${ep} ${identityName(e, key.identity)} ${key.direction} ${key.protocol} ${key.port}/${key.prefixLen}`] =
        v.deny ? 'deny' : `allow:${v.proxyPort}`
    }
  }
  for (const [prefix, id] of ipcache) out[`ipcache ${prefix}`] = identityName(e, id)
  return out
}

function sorted(o: Record<string, string>): string {
  return JSON.stringify(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)))
}

function fullMaps(e: PolicyEngine): Map<number, Map<string, PolicyValue>> {
  return new Map(e.endpointIds().map((id) => [id, e.policyMap(id)]))
}

t.test('incremental deltas equal full compiles on random change sequences', async (t) => {
  let steps = 0
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 25 }), (ops) => {
      const engine = new PolicyEngine({ proxyPorts: PORTS })
      const world = new World()
      const ids: number[] = []
      const mirror = new Map<number, Map<string, PolicyValue>>()
      const mirrorIp = new Map<string, number>()
      engine.takeDelta()
      for (const op of ops) {
        world.apply(engine, op, ids)
        const d = engine.takeDelta()
        for (const [ep, md] of d.policy) {
          const m = mirror.get(ep) ?? new Map<string, PolicyValue>()
          for (const k of md.deletes) {
            if (!m.delete(keyString(k))) throw new Error(`${op.op}: delete of absent key ${keyString(k)} on ep${ep}`)
          }
          for (const [k, v] of md.upserts) {
            const prev = m.get(keyString(k))
            if (prev && prev.deny === v.deny && prev.proxyPort === v.proxyPort)
              throw new Error(`${op.op}: no-op upsert of ${keyString(k)}`)
            m.set(keyString(k), v)
          }
          mirror.set(ep, m)
        }
        for (const ep of d.endpoints.deletes) {
          if ((mirror.get(ep)?.size ?? 0) > 0)
            throw new Error(`${op.op}: endpoint ${ep} removed but its entries were not deleted`)
          mirror.delete(ep)
        }
        for (const p of d.ipcache.deletes)
          if (!mirrorIp.delete(p)) throw new Error(`${op.op}: ipcache delete of absent ${p}`)
        for (const [p, id] of d.ipcache.upserts) {
          if (mirrorIp.get(p) === id) throw new Error(`${op.op}: no-op ipcache upsert ${p}`)
          mirrorIp.set(p, id)
        }
        for (const [ep, m] of mirror) if (m.size === 0) mirror.delete(ep)
        const full = fullMaps(engine)
        for (const [ep, m] of full) if (m.size === 0) full.delete(ep)
        const fromDeltas = normalized(engine, mirror, mirrorIp)
        const incremental = normalized(engine, full, engine.ipcache())
        if (sorted(fromDeltas) !== sorted(incremental)) {
          throw new Error(
            `${op.op}: deltas do not add up to the engine's state:\n${sorted(fromDeltas)}\n!=\n${sorted(incremental)}`,
          )
        }
        const fresh = world.fresh()
        const freshMaps = fullMaps(fresh)
        for (const [ep, m] of freshMaps) if (m.size === 0) freshMaps.delete(ep)
        const scratch = normalized(fresh, freshMaps, fresh.ipcache())
        if (sorted(scratch) !== sorted(incremental)) {
          throw new Error(
            `after ${op.op}: incremental state differs from a full compile:\n${sorted(incremental)}\n!=\n${sorted(scratch)}`,
          )
        }
        for (const ep of engine.endpointIds()) {
          const a = engine.endpointInfo(ep)!
          const b = fresh.endpointInfo(ep)!
          if (JSON.stringify(a.enforce) !== JSON.stringify(b.enforce))
            throw new Error(`after ${op.op}: enforcement of ep${ep} differs`)
        }
        steps++
      }
    }),
    { numRuns: 200, seed: Number(process.env.L7PROXY_PROPERTY_SEED ?? 20261122) },
  )
  t.ok(steps > 1000, `${steps} random steps checked`)
})
