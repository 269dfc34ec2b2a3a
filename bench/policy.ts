// Policy engine benchmark: `npm run bench:policy [-- --out FILE --quick]`.
//
// For N policies over M cluster identities with E local endpoints, measures
//   - parse: N CiliumNetworkPolicy documents in one YAML file,
//   - compile: a fresh engine given the identities, endpoints and parsed rules (the full compile),
//   - one identity added / removed: time until the delta is out, and how many map entries it
//     touched, next to how many entries really reference that identity (they must be equal).
// Prints a table and writes JSON. Every loop is bounded by its count.

import { parseArgs } from 'node:util'
import { PolicyEngine } from '../policy/engine.js'
import { parseKey } from '../policy/map-state.js'
import type { RuleSpec } from '../policy/model.js'
import { parsePolicyText } from '../policy/parse.js'
import { writeResult } from './bench-support.js'

const PORTS = { http: 15001, dns: 15053 }
const APPS = 500
const TEAMS = 50
const NAMESPACES = 10
const TIERS = ['web', 'api', 'db']
const ENDPOINTS = 100
const IDENTITY_CHANGES = 200

function identityLabels(i: number): Record<string, string> {
  return {
    app: `app-${i % APPS}`,
    team: `team-${i % TEAMS}`,
    tier: TIERS[i % TIERS.length]!,
    'io.kubernetes.pod.namespace': `ns-${i % NAMESPACES}`,
    instance: `i-${i}`,
  }
}

function policyYaml(j: number): string {
  const app = j % APPS
  return `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: { name: p-${j}, namespace: ns-${app % NAMESPACES} }
spec:
  endpointSelector: { matchLabels: { app: app-${app} } }
  ingress:
  - fromEndpoints: [ { matchLabels: { team: team-${j % TEAMS} } } ]
    toPorts:
    - ports: [ { port: "8080", protocol: TCP } ]
      rules:
        http:
        - { method: GET, path: "/api/v1/.*" }
        - { method: POST, path: "/api/v1/orders", headers: [ "X-Tenant" ] }
  - fromEndpoints: [ { matchLabels: { tier: web } } ]
    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]
  egress:
  - toEndpoints: [ { matchLabels: { app: app-${(app + 1) % APPS} } } ]
    toPorts: [ { ports: [ { port: "5432", protocol: TCP }, { port: "9000", endPort: 9099, protocol: TCP } ] } ]
  - toCIDRSet: [ { cidr: 203.0.113.0/24, except: [ 203.0.113.${j % 256}/32 ] } ]
  - toFQDNs: [ { matchPattern: "*.svc-${j % 20}.example" } ]
    toPorts: [ { ports: [ { port: "443", protocol: TCP } ] } ]
`
}

function ms(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

interface Row {
  policies: number
  identities: number
  endpoints: number
  parseMs: number
  compileMs: number
  importMs: number
  mapEntries: number
  selectors: number
  identityAdd: {
    p50Ms: number
    p99Ms: number
    maxMs: number
    touchedMean: number
    referencingMean: number
    exact: boolean
  }
  identityRemove: { p50Ms: number; p99Ms: number; maxMs: number; touchedMean: number; exact: boolean }
}

function run(policies: number, identities: number): Row {
  const text = Array.from({ length: policies }, (_, j) => policyYaml(j)).join('---\n')
  let t0 = process.hrtime.bigint()
  const rules: RuleSpec[] = parsePolicyText(text, 'bench.yaml')
  const parseMs = ms(t0)

  t0 = process.hrtime.bigint()
  const engine = new PolicyEngine({ proxyPorts: PORTS })
  for (let i = 0; i < identities; i++) engine.addIdentity(identityLabels(i))
  for (let e = 0; e < ENDPOINTS; e++)
    engine.upsertEndpoint({ id: e + 1, labels: identityLabels(e), ips: [`198.18.${100 + (e >> 8)}.${e & 255}`] })
  engine.setRules('bench.yaml', rules)
  engine.takeDelta()
  const compileMs = ms(t0)
  const mapEntries = engine.endpointIds().reduce((n, id) => n + engine.policyMap(id).size, 0)

  const add: number[] = []
  const remove: number[] = []
  let touchedAdd = 0
  let referencing = 0
  let touchedRemove = 0
  let exactAdd = true
  let exactRemove = true
  for (let k = 0; k < IDENTITY_CHANGES; k++) {
    const labels = { ...identityLabels(k * 7), instance: `new-${k}` }
    t0 = process.hrtime.bigint()
    const id = engine.addIdentity(labels)
    const d = engine.takeDelta()
    add.push(ms(t0))
    const touched = [...d.policy.values()].reduce((n, m) => n + m.upserts.length + m.deletes.length, 0)
    let refs = 0
    for (const ep of engine.endpointIds())
      for (const key of engine.policyMap(ep).keys()) if (parseKey(key).identity === id) refs++
    touchedAdd += touched
    referencing += refs
    if (touched !== refs) exactAdd = false

    t0 = process.hrtime.bigint()
    engine.releaseIdentity(id)
    const r = engine.takeDelta()
    remove.push(ms(t0))
    const removed = [...r.policy.values()].reduce((n, m) => n + m.upserts.length + m.deletes.length, 0)
    touchedRemove += removed
    if (removed !== refs) exactRemove = false
  }
  add.sort((a, b) => a - b)
  remove.sort((a, b) => a - b)
  return {
    policies,
    identities,
    endpoints: ENDPOINTS,
    parseMs,
    compileMs,
    importMs: parseMs + compileMs,
    mapEntries,
    selectors: engine.selectors.size,
    identityAdd: {
      p50Ms: percentile(add, 50),
      p99Ms: percentile(add, 99),
      maxMs: add.at(-1)!,
      touchedMean: touchedAdd / IDENTITY_CHANGES,
      referencingMean: referencing / IDENTITY_CHANGES,
      exact: exactAdd,
    },
    identityRemove: {
      p50Ms: percentile(remove, 50),
      p99Ms: percentile(remove, 99),
      maxMs: remove.at(-1)!,
      touchedMean: touchedRemove / IDENTITY_CHANGES,
      exact: exactRemove,
    },
  }
}

function main(): void {
  const { values } = parseArgs({
    options: {
      out: { type: 'string', default: 'bench-results/policy.json' },
      quick: { type: 'boolean', default: false },
    },
  })
  const sizes: Array<[number, number]> = values.quick
    ? [
        [10, 100],
        [100, 1000],
      ]
    : [
        [10, 100],
        [100, 1000],
        [1000, 1000],
        [1000, 10000],
      ]
  run(50, 500) // warm-up: JIT, regex compilation caches
  const rows = sizes.map(([n, m]) => run(n, m))
  const f = (x: number) => x.toFixed(x < 10 ? 3 : 1)
  console.log(
    'policies identities endpoints | parse ms compile ms import ms | entries selectors | id add p50/p99/max ms touched=refs | id del p50/p99/max ms',
  )
  for (const r of rows) {
    console.log(
      `${String(r.policies).padStart(8)} ${String(r.identities).padStart(10)} ${String(r.endpoints).padStart(9)} | ` +
        `${f(r.parseMs).padStart(8)} ${f(r.compileMs).padStart(10)} ${f(r.importMs).padStart(9)} | ` +
        `${String(r.mapEntries).padStart(7)} ${String(r.selectors).padStart(9)} | ` +
        `${f(r.identityAdd.p50Ms)}/${f(r.identityAdd.p99Ms)}/${f(r.identityAdd.maxMs)} ${r.identityAdd.touchedMean.toFixed(1)}=${r.identityAdd.referencingMean.toFixed(1)}${r.identityAdd.exact ? '' : ' (MISMATCH)'} | ` +
        `${f(r.identityRemove.p50Ms)}/${f(r.identityRemove.p99Ms)}/${f(r.identityRemove.maxMs)}${r.identityRemove.exact ? '' : ' (MISMATCH)'}`,
    )
  }
  const out = writeResult(values.out, {
    benchmark: 'policy',
    node: process.version,
    date: new Date().toISOString(),
    rows,
  })
  console.log(`wrote ${out}`)
  if (rows.some((r) => !r.identityAdd.exact || !r.identityRemove.exact)) process.exitCode = 1
}

main()
