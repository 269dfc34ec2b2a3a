// The example policy shipped for the lab means what its comments say.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { labEndpoints } from '../lab/topology.js'
import { projectRoot } from '../lib/project-root.js'
import { PolicyEngine } from '../policy/engine.js'
import { evaluateHttp, evaluateName } from '../policy/l7-policy.js'

t.test('policy/examples/star-wars.yaml on the lab endpoints', async (t) => {
  const e = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  const ep = new Map<string, number>()
  for (const endpoint of labEndpoints()) {
    e.upsertEndpoint(endpoint)
    ep.set(endpoint.host, endpoint.id)
  }
  const file = join(projectRoot(), 'policy/examples/star-wars.yaml')
  t.equal(e.loadFile(file, readFileSync(file, 'utf8')).length, 3)
  const id = (ip: string) => e.identityOf(ip)
  const [tie, xwing, deathstar, dns, cantina] = [
    '198.18.1.10',
    '198.18.1.20',
    '198.18.2.10',
    '198.18.2.53',
    '192.0.2.3',
  ].map(id) as number[]
  const ds = ep.get('deathstar')!
  const tf = ep.get('tiefighter')!
  t.equal(e.decide(ds, 'ingress', xwing!, 6, 80).verdict, 'deny', 'xwing cannot reach the deathstar')
  t.equal(e.decide(ds, 'ingress', tie!, 6, 80).verdict, 'redirect')
  const http = e.l7Policy(ds)!.find('ingress', 'TCP', 80)!
  const req = (method: string, path: string) => ({ method, path, host: 'deathstar', header: () => undefined })
  t.ok(evaluateHttp(http, tie!, req('POST', '/v1/request-landing')).allowed, 'tiefighter lands')
  t.notOk(evaluateHttp(http, tie!, req('PUT', '/v1/exhaust-port')).allowed, 'but cannot reach the exhaust port')
  t.equal(e.decide(tf, 'egress', deathstar!, 6, 80).verdict, 'allow', 'tiefighter egress to the deathstar, kernel only')
  t.equal(e.decide(tf, 'egress', dns!, 17, 53).verdict, 'redirect', 'DNS goes through the DNS proxy')
  const dnsFilter = e.l7Policy(tf)!.find('egress', 'UDP', 53)!
  t.ok(evaluateName(dnsFilter, dns!, 'cantina.empire').allowed)
  t.notOk(evaluateName(dnsFilter, dns!, 'hoth.alliance').allowed, 'names outside empire. are refused')
  t.equal(e.decide(tf, 'egress', cantina!, 6, 80).verdict, 'deny', 'cantina before its name is learned')
  e.setFqdnIps('cantina.empire', ['192.0.2.3', '192.0.2.4'])
  t.equal(e.decide(tf, 'egress', id('192.0.2.3'), 6, 80).verdict, 'allow', 'and after')
  t.equal(
    e.decide(ep.get('xwing')!, 'egress', deathstar!, 6, 80).verdict,
    'allow',
    "xwing's own egress is not restricted",
  )
  const grpcServer = ep.get('grpc')!
  t.equal(
    e.decide(tf, 'egress', id('198.18.2.20'), 6, 50051).verdict,
    'allow',
    'tiefighter egress to the gRPC deathstar',
  )
  t.equal(e.decide(grpcServer, 'ingress', tie!, 6, 50051).verdict, 'redirect', 'whose ingress goes through the proxy')
  const calls = e.l7Policy(grpcServer)!.find('ingress', 'TCP', 50051)!
  const call = (method: string) => ({
    method: 'POST',
    path: `/empire.Deathstar/${method}`,
    host: 'grpc.empire',
    header: () => undefined,
  })
  t.ok(evaluateHttp(calls, tie!, call('RequestLanding')).allowed, 'RequestLanding is allowed')
  t.ok(evaluateHttp(calls, tie!, call('Chat')).allowed, 'and Chat')
  t.notOk(evaluateHttp(calls, tie!, call('FireExhaustPort')).allowed, 'FireExhaustPort is not')
  t.notOk(evaluateHttp(calls, tie!, { ...call('RequestLanding'), method: 'GET' }).allowed, 'a call is a POST')
  t.notOk(evaluateHttp(calls, tie!, call('RequestLandingX')).allowed, 'method names are whole')
})
