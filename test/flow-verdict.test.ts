// A flow's resolution (identities, rule tables, L3/L4 decisions) is made once per source,
// destination and port and shared by the connections of that flow, until the engine changes.

import t from 'tap'
import { LAB_HOSTS, labEndpoints } from '../lab/topology.js'
import { PolicyEngine } from '../policy/engine.js'
import { type Flow, FlowPolicy, httpVerdict } from '../proxy/flow-verdict.js'
import { cnp } from './fixtures/policy-text.js'

const addr = (name: string): string => LAB_HOSTS.find((h) => h.name === name)!.addresses[0]!
const flow = (from: string, port = 80, sourcePort = 40000): Flow => ({
  sourceAddress: addr(from),
  sourcePort,
  destAddress: addr('deathstar'),
  destPort: port,
})
const request = (method: string, path: string) => ({ method, path, host: 'deathstar', header: () => undefined })

const POLICY = (path: string): string =>
  cnp(
    'l7',
    '{ class: deathstar }',
    `  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules: { http: [ { method: GET, path: "${path}" } ] }
`,
  )

t.test("a flow's resolution is shared by its connections and made anew when the engine changes", async (t) => {
  const e = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  for (const ep of labEndpoints()) e.upsertEndpoint(ep)
  e.loadFile('l7.yaml', POLICY('/v1/.*'))
  const first = FlowPolicy.of(e, flow('tiefighter'))
  t.equal(
    FlowPolicy.of(e, flow('tiefighter', 80, 40001)),
    first,
    'another connection (source port) of the flow: the same resolution',
  )
  t.not(FlowPolicy.of(e, flow('xwing')), first, 'another source: its own')
  t.not(FlowPolicy.of(e, flow('tiefighter', 8080)), first, 'another port: its own')
  t.ok(httpVerdict(first, request('GET', '/v1/x')).allowed)
  t.equal(first.current(e, flow('tiefighter')), first, 'current while nothing changed')

  e.loadFile('l7.yaml', POLICY('/v2/.*'))
  const after = first.current(e, flow('tiefighter'))
  t.not(after, first, 'a policy change: a new resolution')
  t.equal(FlowPolicy.of(e, flow('tiefighter', 80, 40002)), after, 'shared again')
  t.notOk(httpVerdict(after, request('GET', '/v1/x')).allowed, 'and it applies the new rules')
  t.ok(httpVerdict(after, request('GET', '/v2/x')).allowed)
})
