// The endpoints file: endpoints read with their interface, addresses and labels; a file with
// problems refused whole, each problem with its line and column; changes as upserts and removals.

import t from 'tap'
import { diffEndpoints, EndpointsFileError, parseEndpointsText } from '../proxy/agent/endpoints-file.js'

const GOOD = `endpoints:
- { id: 1, name: tiefighter, interface: lxc-tiefighter, ips: [198.18.1.10], labels: { org: empire, class: tiefighter } }
- id: 3
  interface: lxc-deathstar
  ips: [198.18.2.10]
  labels: { org: empire, class: deathstar }
`

t.test('endpoints with their interface, addresses and labels; the name defaults to the interface', async (t) => {
  t.same(parseEndpointsText(GOOD, 'e.yaml'), [
    {
      id: 1,
      host: 'tiefighter',
      interface: 'lxc-tiefighter',
      ips: ['198.18.1.10'],
      labels: { org: 'empire', class: 'tiefighter' },
    },
    {
      id: 3,
      host: 'lxc-deathstar',
      interface: 'lxc-deathstar',
      ips: ['198.18.2.10'],
      labels: { org: 'empire', class: 'deathstar' },
    },
  ])
  t.same(parseEndpointsText('endpoints: []\n', 'e.yaml'), [], 'none at all is allowed')
})

const BAD: Array<[string, string, RegExp]> = [
  ['not YAML', 'endpoints: [\n', /^e\.yaml:\d+:\d+: YAML: /],
  ['no endpoints key', 'pods: []\n', /unknown field 'pods'/],
  [
    'missing interface',
    'endpoints:\n- { id: 1, ips: [], labels: {} }\n',
    /^e\.yaml:2:3: endpoints\[0\]: missing required field 'interface'/,
  ],
  [
    'bad address',
    'endpoints:\n- { id: 1, interface: a, ips: [198.18.1.300], labels: {} }\n',
    /^e\.yaml:2:32: endpoints\[0\]\.ips\[0\]: '198\.18\.1\.300' is not an IPv4 address/,
  ],
  ['a prefix', 'endpoints:\n- { id: 1, interface: a, ips: [198.18.1.0/24], labels: {} }\n', /is not an IPv4 address/],
  [
    'bad interface',
    'endpoints:\n- { id: 1, interface: "eth0 with spaces", ips: [], labels: {} }\n',
    /endpoints\[0\]\.interface: 'eth0 with spaces' is not an interface name/,
  ],
  [
    'id out of range',
    'endpoints:\n- { id: 0, interface: a, ips: [], labels: {} }\n',
    /endpoints\[0\]\.id: expected an integer from 1 to 65535/,
  ],
  [
    'same id twice',
    'endpoints:\n- { id: 1, name: x, interface: a, ips: [], labels: {} }\n- { id: 1, interface: b, ips: [], labels: {} }\n',
    /^e\.yaml:3:9: endpoints\[1\]\.id: endpoint id 1 is taken by x/,
  ],
  [
    'same interface twice',
    'endpoints:\n- { id: 1, interface: a, ips: [], labels: {} }\n- { id: 2, interface: a, ips: [], labels: {} }\n',
    /endpoints\[1\]\.interface: interface a belongs to another endpoint already/,
  ],
  [
    'same address twice',
    'endpoints:\n- { id: 1, interface: a, ips: [192.0.2.1], labels: {} }\n- { id: 2, interface: b, ips: [192.0.2.1], labels: {} }\n',
    /endpoints\[1\]\.ips\[0\]: 192\.0\.2\.1 belongs to another endpoint already/,
  ],
  [
    'labels not a map',
    'endpoints:\n- { id: 1, interface: a, ips: [], labels: [x] }\n',
    /endpoints\[0\]\.labels: expected a mapping/,
  ],
]

t.test(`${BAD.length} bad files: refused whole, with line, column, field and reason`, async (t) => {
  for (const [what, text, want] of BAD) {
    const e = t.throws(
      () => parseEndpointsText(text, 'e.yaml'),
      EndpointsFileError,
      what,
    ) as unknown as EndpointsFileError
    t.match(e.message, want, what)
  }
})

t.test('changes: new and changed endpoints by id, and the ids gone', async (t) => {
  const before = parseEndpointsText(GOOD, 'e.yaml')
  const moved = { ...before[1]!, labels: { org: 'empire', class: 'deathstar', tier: 'core' } }
  const added = { id: 5, host: 'dns', interface: 'lxc-dns', ips: ['198.18.2.53'], labels: { 'k8s-app': 'kube-dns' } }
  t.same(diffEndpoints(before, [moved, added]), { upserts: [moved, added], removes: [1] })
  t.same(diffEndpoints(before, before), { upserts: [], removes: [] }, 'the same endpoints: nothing')
})
