// The agent's configuration: defaults, file, environment and flags in that order; a bad file or
// value is refused with where and why, and nothing starts.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { execCommand } from '../lab/netns.js'
import { projectRoot } from '../lib/project-root.js'
import { agentSettings, hostNodePart } from '../proxy/agent/agent-settings.js'
import { ConfigError, defaultConfig, environmentLayers, parseConfigText, resolveConfig } from '../proxy/agent/config.js'
import { agentConfig, changedSettings } from '../proxy/cli/agent-command.js'
import { runCli } from './fixtures/cli.js'

t.test(
  'defaults: on this host, sk-assign, /etc/l7proxy/policies, no endpoints; on a lab, the examples and paths named by it',
  async (t) => {
    t.same(defaultConfig(), {
      lab: null,
      labNode: 1,
      mode: 'sk-assign',
      policyDirectory: '/etc/l7proxy/policies',
      endpointsFile: null,
      interfaces: [],
      proxy: { httpPort: 15001, dnsPort: 15053, threads: 0, address: null },
      bpffs: '/run/l7proxy/agent-bpffs',
      stateDirectory: '/run/l7proxy/state',
      caDirectory: '/var/lib/l7proxy/ca',
      dns: {
        rejectCode: 'REFUSED',
        minTtlSeconds: 3600,
        maxIpsPerName: 1000,
        maxDelayMs: 100,
        threads: 1,
        idleConnectionGraceSeconds: 0,
        maxDeferredConnectionDeletes: 10000,
      },
      maps: { ipcacheEntries: 65536, policyEntries: 65536 },
      cni: { labelsCommand: ['podman', 'container', 'inspect', '--format', '{{json .Config.Labels}}'] },
      overload: {
        connections: { perSource: 8192, perIdentity: 32768, perNode: 0 },
        streams: { perSource: 4096, perIdentity: 16384 },
        dnsQueries: { perSecondPerSource: 2000, burst: 2000 },
        pressure: { connectionsPercent: 80, memoryMB: 1024, headersTimeoutMs: 2000, idleTimeoutMs: 5000 },
        fileLimit: 0,
      },
      kvstore: null,
      handover: { drainSeconds: 30 },
      logging: { level: 'info' },
      admin: { socket: '/run/l7proxy/agent.sock', metrics: { address: '127.0.0.1', port: 9962 } },
    })
    t.same(
      resolveConfig([
        parseConfigText(
          "cni: { labelsCommand: [podman, --root, /var/lib/x, container, inspect, --format, '{{json .Config.Labels}}'] }\n",
          'c.yaml',
        ),
      ]).cni.labelsCommand.slice(0, 3),
      ['podman', '--root', '/var/lib/x'],
    )
    t.throws(
      () => parseConfigText('cni: { labelsCommand: [] }\n', 'c.yaml'),
      /cni\.labelsCommand: expected a command and its arguments/,
    )
    t.match(defaultConfig('main'), {
      lab: 'main',
      policyDirectory: join(projectRoot(), 'policy/examples'),
      bpffs: '/run/l7proxy/agent-bpffs-main',
      stateDirectory: '/run/l7proxy/state-main',
      admin: { socket: '/run/l7proxy/agent-main.sock' },
    })
  },
)

t.test('a host configuration: interfaces to attach and the proxy address, checked', async (t) => {
  const c = resolveConfig([parseConfigText('interfaces: [eth1, veth-a]\nproxy: { address: 192.0.2.1 }\n', 'host.yaml')])
  t.match(c, { lab: null, interfaces: ['eth1', 'veth-a'], proxy: { address: '192.0.2.1', httpPort: 15001 } })
  t.throws(
    () => parseConfigText('interfaces: [eth1, "a/b"]\n', 'host.yaml'),
    /interfaces\[1\]: 'a\/b' is not an interface name/,
  )
  t.throws(() => parseConfigText('interfaces: ["a-name-of-16-chr"]\n', 'host.yaml'), /is not an interface name/)
  t.throws(
    () => parseConfigText('proxy: { address: localhost }\n', 'host.yaml'),
    /proxy\.address: 'localhost' is not an IPv4 address/,
  )
})

t.test('a file, then the environment, then flags: each overrides the one before', async (t) => {
  const file = parseConfigText(
    'lab: n1\nmode: tproxy\nproxy: { threads: 2, httpPort: 16001 }\ndns: { rejectCode: NXDOMAIN, minTtlSeconds: 5 }\nlogging: { level: debug }\n',
    'c.yaml',
  )
  const env = environmentLayers({
    L7PROXY_MODE: 'dnat',
    L7PROXY_THREADS: '3',
    L7PROXY_DNS_THREADS: '2',
    L7PROXY_CA_DIR: '/etc/l7proxy/ca',
    PATH: '/bin',
  })
  const c = resolveConfig([file, ...env, { proxy: { threads: 4 } }])
  t.match(c, {
    lab: 'n1',
    mode: 'dnat',
    proxy: { httpPort: 16001, dnsPort: 15053, threads: 4 },
    dns: { rejectCode: 'NXDOMAIN', minTtlSeconds: 5, maxIpsPerName: 1000, threads: 2 },
    logging: { level: 'debug' },
  })
  t.equal(c.bpffs, '/run/l7proxy/agent-bpffs-n1', 'paths follow the lab the file chose')
  t.equal(c.admin.socket, '/run/l7proxy/agent-n1.sock')
  t.equal(c.caDirectory, '/etc/l7proxy/ca', 'L7PROXY_CA_DIR sets the CA directory')
  t.same(resolveConfig([parseConfigText('', 'empty.yaml')]), defaultConfig(), 'an empty file is all defaults')
  t.same(
    resolveConfig([parseConfigText('maps: { policyEntries: 4096 }\n', 'c.yaml')]).maps,
    { ipcacheEntries: 65536, policyEntries: 4096 },
    'a map size set, the other as it was',
  )
  t.same(
    resolveConfig([parseConfigText('admin: { metrics: 127.0.0.1:0 }\n', 'c.yaml')]).admin,
    { socket: '/run/l7proxy/agent.sock', metrics: { address: '127.0.0.1', port: 0 } },
    'metrics on any free port',
  )
  t.equal(
    resolveConfig([
      parseConfigText('admin: { metrics: 127.0.0.1:9100 }\n', 'c.yaml'),
      ...environmentLayers({ L7PROXY_METRICS: 'off' }),
    ]).admin.metrics,
    null,
    'L7PROXY_METRICS=off turns them off',
  )
})

const BAD: Array<[string, string, RegExp]> = [
  [
    'unknown field',
    'mode: tproxy\nthreads: 2\n',
    /^c\.yaml:2:1: threads: unknown field 'threads'; expected one of: lab, labNode, mode/,
  ],
  [
    'bad mode',
    'mode: ebpf\n',
    /^c\.yaml:1:7: mode: unknown redirect mode 'ebpf'; expected one of: tproxy, sk-assign, dnat, sockmap, sk-lookup/,
  ],
  [
    'port out of range',
    'proxy: { httpPort: 70000 }\n',
    /^c\.yaml:1:20: proxy\.httpPort: expected an integer from 1 to 65535, got the number 70000/,
  ],
  [
    'one port for both proxies',
    'proxy: { httpPort: 15001, dnsPort: 15001 }\n',
    /proxy\.dnsPort: the DNS proxy needs a port of its own/,
  ],
  ['relative path', 'policyDirectory: policies\n', /policyDirectory: 'policies' is not an absolute path/],
  [
    'relative endpoints file',
    'endpointsFile: endpoints.yaml\n',
    /endpointsFile: 'endpoints\.yaml' is not an absolute path/,
  ],
  [
    'bad reject code',
    'dns: { rejectCode: SERVFAIL }\n',
    /dns\.rejectCode: unknown reject code 'SERVFAIL'; expected one of: REFUSED, NXDOMAIN/,
  ],
  ['no IPs per name', 'dns: { maxIpsPerName: 0 }\n', /dns\.maxIpsPerName: expected an integer from 1 to 10000/],
  ['no delay', 'dns: { maxDelayMs: 0 }\n', /dns\.maxDelayMs: expected an integer from 1 to 10000/],
  [
    'grace too long',
    'dns: { idleConnectionGraceSeconds: 100000 }\n',
    /dns\.idleConnectionGraceSeconds: expected an integer from 0 to 86400/,
  ],
  [
    'a map too small',
    'maps: { ipcacheEntries: 8 }\n',
    /^c\.yaml:1:25: maps\.ipcacheEntries: expected an integer from 16 to 16777216, got the number 8/,
  ],
  [
    'unknown map',
    'maps: { ctEntries: 100 }\n',
    /maps\.ctEntries: unknown field 'ctEntries'; expected one of: ipcacheEntries, policyEntries/,
  ],
  ['bad log level', 'logging: { level: loud }\n', /logging\.level: unknown log level 'loud'/],
  [
    'bad metrics address',
    'admin: { metrics: localhost:9962 }\n',
    /^c\.yaml:1:19: admin\.metrics: 'localhost:9962' is not ADDRESS:PORT \(e\.g\. 127\.0\.0\.1:9962\) or off/,
  ],
  [
    'metrics port out of range',
    'admin: { metrics: 127.0.0.1:99999 }\n',
    /admin\.metrics: '127\.0\.0\.1:99999' is not ADDRESS:PORT/,
  ],
  ['bad lab name', 'lab: Main_Lab\n', /lab: 'Main_Lab' is not a lab name/],
  ['not YAML', 'mode: [tproxy\n', /^c\.yaml:\d+:\d+: YAML: /],
  ['not a mapping', '- mode\n', /expected a mapping, got a list/],
]

t.test(`${BAD.length} bad files: refused with line, column, field and reason`, async (t) => {
  const refusal = (text: string): ConfigError | null => {
    try {
      parseConfigText(text, 'c.yaml')
    } catch (e) {
      if (e instanceof ConfigError) return e
      throw e
    }
    return null
  }
  for (const [name, text, message] of BAD) t.match(refusal(text)?.message, message, name)
  t.match(
    refusal('mode: x\nproxy: { threads: 99 }\ndns: { threads: 0 }\n')?.issues,
    [{ path: 'mode' }, { path: 'proxy.threads' }, { path: 'dns.threads' }],
    'every problem in one pass',
  )
})

t.test('environment values are checked like the file, and named by their variable', async (t) => {
  t.throws(
    () => environmentLayers({ L7PROXY_THREADS: 'many' }),
    /^\$L7PROXY_THREADS:1:\d+: proxy\.threads: expected an integer from 0 to 64, got the string 'many'/,
  )
})

t.test('l7proxy agent refuses a bad config before starting anything (exit 2)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-config-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'agent.yaml')
  writeFileSync(file, 'mode: sk-assign\nproxy:\n  threads: lots\n')
  const r = runCli(['agent', '--config', file])
  t.equal(r.code, 2)
  t.match(
    r.stderr,
    new RegExp(`^l7proxy: bad configuration, nothing started:\\n${file}:3:12: proxy\\.threads: expected an integer`),
  )
  const missing = runCli(['agent', '--config', join(dir, 'nope.yaml')])
  t.equal(missing.code, 2)
  t.match(missing.stderr, /nope\.yaml:0:0: cannot read it: ENOENT/)
  const endpoints = join(dir, 'endpoints.yaml')
  writeFileSync(endpoints, 'endpoints:\n- { id: 1, interface: lxc-x, ips: [10.0.0.300], labels: {} }\n')
  writeFileSync(file, `policyDirectory: ${dir}\nendpointsFile: ${endpoints}\n`)
  const badEndpoints = runCli(['agent', '--config', file])
  t.equal(badEndpoints.code, 2, 'a bad endpoints file is refused before anything starts')
  t.match(
    badEndpoints.stderr,
    /endpointsFile: '.*endpoints\.yaml' is refused:\n.*endpoints\.yaml:2:36: endpoints\[0\]\.ips\[0\]: '10\.0\.0\.300' is not an IPv4 address/,
  )
  const noDir = runCli(['agent', '--policy-dir', '/nonexistent/policies'])
  t.equal(noDir.code, 2)
  t.match(noDir.stderr, /policyDirectory: '\/nonexistent\/policies' is not a directory/)
  const hostDefault = runCli(['agent'], { env: { L7PROXY_POLICY_DIR: dir, L7PROXY_MODE: 'dnat' } })
  t.equal(hostDefault.code, 2, 'dnat on a host without a proxy address is refused')
  t.match(hostDefault.stderr, /proxy\.address: dnat on a host needs the host address/)
  t.match(
    agentConfig(['--threads', '2'], { L7PROXY_LAB: 'x1', L7PROXY_THREADS: '1' }),
    { lab: 'x1', proxy: { threads: 2 } },
    'without a file: environment, then flags',
  )
  t.match(
    agentConfig(['--lab', 'x1', '--node', '3'], {}),
    { lab: 'x1', labNode: 3, admin: { socket: '/run/l7proxy/agent-x1-node3.sock' } },
    '--node: another node of the lab, with its own paths',
  )
  t.throws(() => agentConfig(['--lab', 'x1', '--node', '9'], {}), /--node must be a node of the lab, 1 to 8, not '9'/)

  // A metrics port something else holds: said before anything starts (no lab is brought up).
  const holder = createServer()
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r))
  t.teardown(() => holder.close())
  const port = (holder.address() as AddressInfo).port
  const busy = runCli(['agent', '--lab', 'nometrics'], { env: { L7PROXY_METRICS: `127.0.0.1:${port}` } })
  t.equal(busy.code, 2)
  t.match(
    busy.stderr,
    new RegExp(
      `admin\\.metrics: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE; choose another ADDRESS:PORT, or off`,
    ),
  )
  t.equal(
    (await execCommand(['ip', 'netns', 'list'])).stdout.includes('l7lab-nometrics'),
    false,
    'and no lab was brought up',
  )
})

t.test('SIGHUP restarts the agent only for settings that changed, and names them', async (t) => {
  const a = defaultConfig()
  t.same(changedSettings(a, defaultConfig()), [], 'the same configuration: nothing to do')
  t.same(
    changedSettings(a, { ...a, dns: { ...a.dns, rejectCode: 'NXDOMAIN' }, admin: { ...a.admin, metrics: null } }),
    ['dns', 'admin'],
  )
})

t.test("the settings an agent runs with: the configuration, and the node's part over it", async (t) => {
  const host = resolveConfig([parseConfigText('interfaces: [eth1]\nproxy: { threads: 2 }\n', 'host.yaml')])
  t.match(agentSettings(host, hostNodePart(host, null)), {
    mode: 'sk-assign',
    pin: '/run/l7proxy/agent-bpffs',
    proxyAddress: '127.0.0.1',
    interfaces: ['eth1'],
    endpoints: { list: [] },
    policy: { file: null, dir: '/etc/l7proxy/policies' },
    threads: 2,
    admin: '/run/l7proxy/agent.sock',
    metricsFd: null,
  })
  const withFile = resolveConfig([
    parseConfigText('endpointsFile: /etc/l7proxy/endpoints.yaml\nproxy: { address: 192.0.2.1 }\n', 'host.yaml'),
  ])
  t.match(agentSettings(withFile, hostNodePart(withFile, 7)), {
    endpoints: { file: '/etc/l7proxy/endpoints.yaml' },
    proxyAddress: '192.0.2.1',
    metricsFd: 7,
  })
  t.match(
    agentSettings(host, { interfaces: [], proxyAddress: '198.18.0.1', threads: 1, log: '/tmp/x.log' }),
    { threads: 1, log: '/tmp/x.log', proxyAddress: '198.18.0.1' },
    'the node part overrides',
  )
})

t.test('kvstore: the cluster store section, defaults filled and every field checked', async (t) => {
  const c = resolveConfig([
    parseConfigText(
      'kvstore: { endpoints: [http://198.19.0.254:2379], node: node2, nodeAddress: 198.19.0.2 }\n',
      'c.yaml',
    ),
  ])
  t.same(c.kvstore, {
    endpoints: ['http://198.19.0.254:2379'],
    prefix: 'l7proxy',
    tls: null,
    node: 'node2',
    nodeAddress: '198.19.0.2',
    leaseTtlSeconds: 15,
    identityGcSeconds: 60,
  })
  const tls = parseConfigText(
    'kvstore:\n  endpoints: [https://etcd:2379]\n  tls: { ca: /e/ca.pem, cert: /e/n.pem, key: /e/n-key.pem }\n  prefix: team/l7\n',
    'c.yaml',
  )
  t.same(tls.kvstore, {
    endpoints: ['https://etcd:2379'],
    prefix: 'team/l7',
    tls: { ca: '/e/ca.pem', cert: '/e/n.pem', key: '/e/n-key.pem' },
  })
  t.throws(
    () => parseConfigText('kvstore: { endpoints: [https://etcd:2379] }\n', 'c.yaml'),
    /kvstore\.endpoints\[0\]: 'https:\/\/etcd:2379': https:\/\/ needs tls/,
  )
  t.throws(() => parseConfigText('kvstore: { endpoints: [etcd:2379] }\n', 'c.yaml'), /is not an etcd client URL/)
  t.throws(
    () => parseConfigText('kvstore: { endpoints: [http://etcd] }\n', 'c.yaml'),
    /is not an etcd client URL \(http:\/\/ADDRESS:PORT\)/,
  )
  t.throws(() => parseConfigText('kvstore: { endpoints: [] }\n', 'c.yaml'), /expected at least one etcd client URL/)
  t.throws(
    () => parseConfigText('kvstore: { endpoints: [http://e:1], node: Node_1 }\n', 'c.yaml'),
    /kvstore\.node: 'Node_1' is not a node name/,
  )
  t.throws(
    () => parseConfigText('kvstore: { endpoints: [http://e:1], prefix: /abs/ }\n', 'c.yaml'),
    /is not a key prefix/,
  )
  t.throws(
    () => parseConfigText('kvstore: { endpoints: [http://e:1], leaseTtlSeconds: 1 }\n', 'c.yaml'),
    /leaseTtlSeconds/,
  )
  t.throws(() => parseConfigText('kvstore: { prefix: x }\n', 'c.yaml'), /missing required field 'endpoints'/)
})

t.test('labNode: which node of a lab of several; its paths carry it', async (t) => {
  const c = resolveConfig([parseConfigText('lab: l1\nlabNode: 2\n', 'c.yaml')])
  t.match(c, {
    lab: 'l1',
    labNode: 2,
    bpffs: '/run/l7proxy/agent-bpffs-l1-node2',
    stateDirectory: '/run/l7proxy/state-l1-node2',
    admin: { socket: '/run/l7proxy/agent-l1-node2.sock', metrics: { port: 9972 } },
  })
  t.equal(
    resolveConfig([parseConfigText('lab: l1\n', 'c.yaml')]).admin.socket,
    '/run/l7proxy/agent-l1.sock',
    "node 1 keeps the single node's paths",
  )
  t.throws(() => parseConfigText('labNode: 9\n', 'c.yaml'), /labNode/)
})

t.test('handover: how long an agent taken over from drains', async (t) => {
  t.same(resolveConfig([parseConfigText('handover: { drainSeconds: 5 }\n', 'c.yaml')]).handover, { drainSeconds: 5 })
  t.throws(() => parseConfigText('handover: { drainSeconds: 0 }\n', 'c.yaml'), /handover\.drainSeconds/)
})
