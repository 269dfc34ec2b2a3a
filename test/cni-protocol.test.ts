// The CNI protocol as the plugin reads and writes it (SPEC.md 1.0.0): requests from the
// environment and stdin checked whole, each problem with the spec's error code; results and
// errors in the spec's shapes.

import t from 'tap'
import {
  addResult,
  CNI_ERRORS,
  CniError,
  errorResult,
  ipamLease,
  parseRequest,
  versionResult,
} from '../proxy/cni/cni-protocol.js'

const CONF = {
  cniVersion: '1.0.0',
  name: 'l7proxy',
  type: 'l7proxy-cni',
  agentSocket: '/run/l7proxy/agent.sock',
  ipam: { type: 'host-local', ranges: [[{ subnet: '198.19.0.0/24' }]] },
}
const ENV = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'c0ffee_1.x-y',
  CNI_NETNS: '/run/netns/c1',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=x',
  CNI_PATH: '/opt/cni/bin:/usr/lib/cni',
}

t.test('a well-formed ADD, DEL without a namespace, and VERSION are read', async (t) => {
  const add = parseRequest(ENV, JSON.stringify(CONF))
  t.match(add, {
    command: 'ADD',
    containerId: 'c0ffee_1.x-y',
    netns: '/run/netns/c1',
    ifname: 'eth0',
    args: { IgnoreUnknown: '1', K8S_POD_NAME: 'x' },
    path: ['/opt/cni/bin', '/usr/lib/cni'],
    version: '1.0.0',
  })
  t.match(add.config, { name: 'l7proxy', agentSocket: '/run/l7proxy/agent.sock', ipam: { type: 'host-local' } })
  t.equal(
    parseRequest(
      { ...ENV, CNI_COMMAND: 'DEL', CNI_NETNS: undefined },
      JSON.stringify({ ...CONF, prevResult: { ips: [] } }),
    ).netns,
    '',
    'DEL may come without a namespace (it is gone)',
  )
  t.same(parseRequest({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}'), {
    command: 'VERSION',
    containerId: '',
    netns: '',
    ifname: '',
    args: {},
    path: [],
    config: null,
    version: '0.4.0',
  })
})

t.test("every problem gets the spec's error code and says what and where", async (t) => {
  const cases: Array<[string, Record<string, string | undefined>, string, number, RegExp]> = [
    [
      'unknown command',
      { ...ENV, CNI_COMMAND: 'FROB' },
      JSON.stringify(CONF),
      CNI_ERRORS.invalidEnvironment,
      /CNI_COMMAND: 'FROB'/,
    ],
    [
      'no container id',
      { ...ENV, CNI_CONTAINERID: '' },
      JSON.stringify(CONF),
      CNI_ERRORS.invalidEnvironment,
      /CNI_CONTAINERID: missing/,
    ],
    [
      'a container id with a slash',
      { ...ENV, CNI_CONTAINERID: 'a/b' },
      JSON.stringify(CONF),
      CNI_ERRORS.invalidEnvironment,
      /CNI_CONTAINERID: 'a\/b'/,
    ],
    [
      'an interface name too long',
      { ...ENV, CNI_IFNAME: 'eth0123456789012' },
      JSON.stringify(CONF),
      CNI_ERRORS.invalidEnvironment,
      /CNI_IFNAME/,
    ],
    [
      'ADD without a namespace',
      { ...ENV, CNI_NETNS: undefined },
      JSON.stringify(CONF),
      CNI_ERRORS.invalidEnvironment,
      /CNI_NETNS: missing/,
    ],
    [
      'bad CNI_ARGS',
      { ...ENV, CNI_ARGS: 'novalue' },
      JSON.stringify(CONF),
      CNI_ERRORS.invalidEnvironment,
      /CNI_ARGS: 'novalue' is not KEY=VALUE/,
    ],
    ['not JSON', ENV, '{', CNI_ERRORS.decodeFailure, /not JSON/],
    ['a JSON list', ENV, '[]', CNI_ERRORS.decodeFailure, /not a JSON object/],
    [
      'an unknown version',
      ENV,
      JSON.stringify({ ...CONF, cniVersion: '9.9.9' }),
      CNI_ERRORS.incompatibleVersion,
      /cniVersion 9\.9\.9 is not one of/,
    ],
    [
      'no agent socket',
      ENV,
      JSON.stringify({ ...CONF, agentSocket: 'agent.sock' }),
      CNI_ERRORS.invalidConfig,
      /agentSocket: expected the absolute path/,
    ],
    [
      'no IPAM',
      ENV,
      JSON.stringify({ ...CONF, ipam: undefined }),
      CNI_ERRORS.invalidConfig,
      /ipam: expected an object with a type/,
    ],
    [
      'an IPAM type that is a path',
      ENV,
      JSON.stringify({ ...CONF, ipam: { type: '../../bin/sh' } }),
      CNI_ERRORS.invalidConfig,
      /ipam\.type: '\.\.\/\.\.\/bin\/sh' is not a plugin name/,
    ],
  ]
  for (const [what, env, stdin, code, why] of cases) {
    try {
      parseRequest(env, stdin)
      t.fail(`${what}: accepted`)
    } catch (e) {
      t.ok(e instanceof CniError, `${what}: a CniError`)
      t.equal((e as CniError).code, code, `${what}: code ${code}`)
      t.match(`${(e as CniError).message}: ${(e as CniError).details}`, why, `${what}: says why`)
    }
  }
})

t.test("results, versions and errors in the spec's shapes", async (t) => {
  t.same(JSON.parse(versionResult('1.0.0')), {
    cniVersion: '1.0.0',
    supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'],
  })
  t.same(JSON.parse(errorResult('1.0.0', new CniError(100, 'no agent', 'nothing on /run/l7proxy/agent.sock'))), {
    cniVersion: '1.0.0',
    code: 100,
    msg: 'no agent',
    details: 'nothing on /run/l7proxy/agent.sock',
  })
  const add = JSON.parse(
    addResult({
      version: '1.0.0',
      hostIf: { name: 'lxc1234', mac: '02:00:00:00:00:01' },
      containerIf: { name: 'eth0', mac: '02:00:00:00:00:02', sandbox: '/run/netns/c1' },
      ip: '198.19.0.5',
      gateway: '198.19.0.1',
    }),
  )
  t.same(add, {
    cniVersion: '1.0.0',
    interfaces: [
      { name: 'lxc1234', mac: '02:00:00:00:00:01' },
      { name: 'eth0', mac: '02:00:00:00:00:02', sandbox: '/run/netns/c1' },
    ],
    ips: [{ address: '198.19.0.5/32', gateway: '198.19.0.1', interface: 1 }],
    routes: [{ dst: '0.0.0.0/0', gw: '198.19.0.1' }],
  })
  t.match(
    JSON.parse(
      addResult({
        version: '0.4.0',
        hostIf: { name: 'h', mac: 'm' },
        containerIf: { name: 'c', mac: 'm', sandbox: '/s' },
        ip: '198.19.0.5',
        gateway: '198.19.0.1',
      }),
    ).ips,
    [{ version: '4' }],
    'before 1.0.0 an IP names its family',
  )
  t.same(
    ipamLease({
      cniVersion: '1.0.0',
      ips: [{ address: '2001:db8::5/64' }, { address: '198.19.0.5/24', gateway: '198.19.0.1' }],
    }),
    { address: '198.19.0.5/24', gateway: '198.19.0.1' },
  )
  t.throws(() => ipamLease({ ips: [] }), { code: CNI_ERRORS.invalidConfig, message: /IPAM gave no IPv4 address/ })
})
