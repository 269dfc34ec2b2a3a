import t from 'tap'
import { unboundFiles, zoneFile } from '../lab/servers/unbound-config.js'
import {
  DNS_RECORDS,
  DNS_ZONES,
  findHost,
  GATEWAY_IP,
  hostNetns,
  isValidLabName,
  LAB_HOSTS,
  labEndpointId,
  labEndpoints,
  nodeIfname,
  nodeNetns,
  parseNetns,
  resolvConf,
} from '../lab/topology.js'

function ipv4ToInt(a: string): number {
  const parts = a.split('.').map(Number)
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255))
    throw new Error(`not IPv4: ${a}`)
  return parts.reduce((acc, p) => acc * 256 + p, 0)
}

function inCidr(addr: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/') as [string, string]
  const size = 2 ** (32 - Number(bits))
  const base = ipv4ToInt(net)
  const a = ipv4ToInt(addr)
  return a >= base && a < base + size
}

const ALLOWED = ['198.18.0.0/15', '192.0.2.0/24', '203.0.113.0/24']

t.test('every lab address is in a benchmark or documentation range, and unique', async (t) => {
  const all = [GATEWAY_IP, ...LAB_HOSTS.flatMap((h) => h.addresses)]
  for (const a of all)
    t.ok(
      ALLOWED.some((c) => inCidr(a, c)),
      `${a} in ${ALLOWED.join(' | ')}`,
    )
  t.equal(new Set(all).size, all.length, 'no address used twice')
  t.notOk(inCidr('10.0.0.1', '198.18.0.0/15'), 'the range check itself rejects other addresses')
})

t.test('star-wars labels as in the Cilium example', async (t) => {
  t.match(findHost('tiefighter').labels, { org: 'empire', class: 'tiefighter' })
  t.match(findHost('xwing').labels, { org: 'alliance', class: 'xwing' })
  t.match(findHost('deathstar').labels, { org: 'empire', class: 'deathstar' })
  t.match(findHost('dns').labels, { 'k8s-app': 'kube-dns', 'io.kubernetes.pod.namespace': 'kube-system' })
  t.same(
    LAB_HOSTS.filter((h) => h.role === 'pod').map((h) => h.name),
    ['tiefighter', 'xwing'],
  )
  t.throws(() => findHost('millennium'), { code: 'EHOST' })
})

t.test('interface and namespace names', async (t) => {
  for (const h of LAB_HOSTS) {
    t.match(h.name, /^[a-z0-9]+$/, `${h.name} is a plain label`)
    t.ok(nodeIfname(h.name).length <= 15, `${nodeIfname(h.name)} fits IFNAMSIZ`)
    t.same(parseNetns(hostNetns('main', h.name)), { lab: 'main', host: h.name })
  }
  t.same(parseNetns(nodeNetns('t123x0')), { lab: 't123x0', host: 'node' })
  for (const foreign of [
    'l7lab-',
    'other-main-node',
    'l7lab-main',
    'l7lab-a-b-c',
    'l7lab-Main-node',
    'l7lab-main-',
    'l7lab--node',
  ]) {
    t.equal(parseNetns(foreign), null, `'${foreign}' is not a lab namespace`)
  }
  t.ok(isValidLabName('main'))
  t.ok(isValidLabName('a'.repeat(16)))
  for (const bad of ['', 'a'.repeat(17), 'Main', 'a-b', 'a_b', 'a b', '../x'])
    t.notOk(isValidLabName(bad), `'${bad}' refused`)
})

t.test('DNS records point at lab hosts and real TTLs', async (t) => {
  const addrs = new Set(LAB_HOSTS.flatMap((h) => h.addresses))
  const names = new Set(DNS_RECORDS.map((r) => r.name))
  for (const r of DNS_RECORDS) {
    t.ok(r.ttl > 0, `${r.name} has a TTL`)
    t.ok(
      DNS_ZONES.some((z) => r.name.endsWith(`.${z}`)),
      `${r.name} is inside a lab zone`,
    )
    if (r.type === 'A') t.ok(addrs.has(r.data), `${r.name} -> ${r.data} is a lab host`)
    else t.ok(names.has(r.data), `${r.name} CNAME -> ${r.data} exists`)
  }
  t.same(
    DNS_RECORDS.filter((r) => r.name === 'cantina.empire').map((r) => r.data),
    ['192.0.2.3', '192.0.2.4'],
  )
})

t.test('unbound config: authoritative zones, everything else refused', async (t) => {
  const { files, configFile } = unboundFiles({ address: '198.18.2.53', port: 53, directory: '/run/x', threads: 2 })
  const conf = files[configFile]!
  t.match(conf, /interface: 198\.18\.2\.53@53/)
  t.match(conf, /local-zone: "\." refuse/)
  for (const z of DNS_ZONES) {
    t.match(conf, new RegExp(`auth-zone:\\n  name: "${z}\\."\\n  zonefile: "/run/x/${z}\\.zone"`))
    t.ok(files[`${z}.zone`], `zone file for ${z}`)
  }
  t.notMatch(conf, /forward-zone|stub-zone|root-hints/, 'no upstream to recurse to')
  const empire = zoneFile('empire')
  t.match(empire, /^cantina\.empire\. 60 IN A 192\.0\.2\.3$/m)
  t.match(empire, /^www\.cantina\.empire\. 60 IN CNAME cantina\.empire\.$/m)
  t.notMatch(empire, /hoth\.alliance/, 'records of another zone stay out')
  t.match(zoneFile('alliance'), /^hoth\.alliance\. 60 IN A 203\.0\.113\.7$/m)
})

t.test('resolv.conf points pods at the lab DNS server with the empire search domain', async (t) => {
  t.equal(resolvConf(), 'search empire\nnameserver 198.18.2.53\noptions ndots:1 timeout:1 attempts:2\n')
})

t.test('the lab endpoints: pods and servers with stable ids, not the outside world', async (t) => {
  const eps = labEndpoints()
  t.same(
    eps.map((e) => [e.id, e.host]),
    [
      [1, 'tiefighter'],
      [2, 'xwing'],
      [3, 'deathstar'],
      [4, 'grpc'],
      [5, 'dns'],
    ],
  )
  t.same(eps[0]!.ips, ['198.18.1.10'])
  t.equal(labEndpointId('deathstar'), 3)
  t.throws(() => labEndpointId('world'), { code: 'EHOST', message: /'world' is not an endpoint/ })
})
