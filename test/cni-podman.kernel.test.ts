// Containers on a host joined through l7proxy-cni, checked with real podman containers: a
// namespace of the test's plays the host (entered with nsenter, since podman needs the host's
// mounts), the agent runs there as a host's agent, `l7proxy cni install` puts the plugin and the
// network into directories of the test's, and containers run from a root filesystem built from
// Debian's busybox-static (no image registry). The star-wars rules hold between containers, an
// agent restart keeps their endpoints, and containers started and removed leave nothing behind.

import { execFile, spawn } from 'node:child_process'
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { execCommand } from '../lab/netns.js'
import { unboundFiles } from '../lab/servers/unbound-config.js'
import { distPath } from '../lib/project-root.js'
import { type AgentCommand, startAgentCommand, statusUntil } from './fixtures/agent-command.js'
import { runCli } from './fixtures/cli.js'
import { kernelRequired, kernelTest } from './fixtures/kernel.js'
import { cnp } from './fixtures/policy-text.js'
import { waitUntil } from './fixtures/wait.js'

const NEEDS = ['/usr/bin/podman', '/usr/sbin/runc', '/usr/lib/cni/host-local', '/bin/busybox']
const SUBNET = '198.19.100.0/24'
/** Outside the host, in a namespace behind it: the lab's DNS server (unbound, the lab's zones) and a web server at cantina.empire's addresses. */
const DNS_SERVER = '198.19.200.53'
const CANTINA = ['192.0.2.3', '192.0.2.4']
const WORLD_GATEWAY = '198.19.200.1'
/** host-local's gateway of SUBNET: on the host's side of every container's veth (dnat's proxy address). */
const GATEWAY = '198.19.100.1'
const POLICY = [
  cnp(
    'deathstar',
    '{ class: deathstar }',
    `  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules: { http: [ { method: GET, path: "/public/.*" } ] }
    - ports: [ { port: "53", protocol: UDP } ]
`,
  ),
  cnp(
    'tiefighter',
    '{ class: tiefighter }',
    `  egress:
  - toEndpoints: [ { matchLabels: { class: deathstar } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
    - ports: [ { port: "53", protocol: UDP } ]
      rules: { dns: [ { matchPattern: "*.empire" } ] }
  - toCIDR: [ ${DNS_SERVER}/32 ]
    toPorts:
    - ports: [ { port: "53", protocol: UDP } ]
      rules: { dns: [ { matchPattern: "*.empire" } ] }
  - toFQDNs: [ { matchName: cantina.empire } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
`,
  ),
].join('---\n')

interface Host {
  name: string
  dir: string
  socket: string
  podman(args: string[], timeoutMs?: number): Promise<{ code: number; stdout: string; stderr: string }>
}

/** The host namespace, the directories podman and the agent use, the plugin installed; removed after. */
async function useHost(t: Test): Promise<Host> {
  const name = `l7lab-cni${process.pid}`
  await execCommand(['ip', 'netns', 'add', name])
  await execCommand(['ip', '-n', name, 'link', 'set', 'lo', 'up'])
  const dir = mkdtempSync(join(tmpdir(), 'l7-cni-'))
  for (const d of ['bin', 'net', 'ipam', 'storage', 'run', 'policies', 'state', 'dns', 'root/bin', 'root/www/public'])
    mkdirSync(join(dir, d), { recursive: true })
  // The world the containers reach by name: a namespace behind the host's world0, with a DNS and a web server.
  const world = `${name}w`
  await execCommand(['ip', 'netns', 'add', world])
  await execCommand(['ip', '-n', name, 'link', 'add', 'world0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', world])
  await execCommand(['ip', '-n', name, 'addr', 'add', `${WORLD_GATEWAY}/32`, 'dev', 'world0'])
  await execCommand(['ip', '-n', name, 'link', 'set', 'world0', 'up'])
  await execCommand(['ip', 'netns', 'exec', name, 'sysctl', '-q', '-w', 'net.ipv4.conf.world0.forwarding=1'])
  for (const a of [DNS_SERVER, ...CANTINA]) {
    await execCommand(['ip', '-n', world, 'addr', 'add', `${a}/32`, 'dev', 'eth0'])
    await execCommand(['ip', '-n', name, 'route', 'add', `${a}/32`, 'dev', 'world0'])
  }
  await execCommand(['ip', '-n', world, 'link', 'set', 'eth0', 'up'])
  await execCommand(['ip', '-n', world, 'link', 'set', 'lo', 'up'])
  await execCommand(['ip', '-n', world, 'route', 'add', WORLD_GATEWAY, 'dev', 'eth0', 'scope', 'link'])
  await execCommand(['ip', '-n', world, 'route', 'add', 'default', 'via', WORLD_GATEWAY, 'dev', 'eth0'])
  const { files, configFile } = unboundFiles({ address: DNS_SERVER, port: 53, directory: join(dir, 'dns'), threads: 1 })
  for (const [file, text] of Object.entries(files)) writeFileSync(join(dir, 'dns', file), text)
  const servers = [
    spawn('nsenter', [`--net=/run/netns/${world}`, 'unbound', '-c', join(dir, 'dns', configFile)], { stdio: 'ignore' }),
    spawn(
      'nsenter',
      [
        `--net=/run/netns/${world}`,
        process.execPath,
        distPath('lab/servers/run.js'),
        'http',
        '--name',
        'cantina',
        '--port',
        '80',
      ],
      { stdio: 'ignore' },
    ),
  ]
  copyFileSync('/bin/busybox', join(dir, 'root/bin/busybox'))
  chmodSync(join(dir, 'root/bin/busybox'), 0o755)
  for (const applet of ['sh', 'nc', 'sleep', 'httpd', 'nslookup', 'printf'])
    symlinkSync('busybox', join(dir, 'root/bin', applet))
  writeFileSync(join(dir, 'root/www/public/x'), 'public\n')
  writeFileSync(join(dir, 'root/www/private'), 'secret\n')
  writeFileSync(
    join(dir, 'containers.conf'),
    `[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["${dir}/bin", "/usr/lib/cni"]\nnetwork_config_dir = "${dir}/net"\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n`,
  )
  const podmanArgv = [
    'podman',
    '--root',
    join(dir, 'storage'),
    '--runroot',
    join(dir, 'run'),
    '--network-config-dir',
    join(dir, 'net'),
  ]
  const podman: Host['podman'] = (args, timeoutMs = 60_000) =>
    new Promise((resolve) => {
      execFile(
        'nsenter',
        [`--net=/run/netns/${name}`, ...podmanArgv, ...args],
        {
          timeout: timeoutMs,
          encoding: 'utf8',
          env: { ...process.env, CONTAINERS_CONF: join(dir, 'containers.conf') },
        },
        (err, stdout, stderr) =>
          resolve({ code: err ? Number((err as { code?: number }).code ?? 1) || 1 : 0, stdout, stderr }),
      )
    })
  t.teardown(async () => {
    const all = await podman(['ps', '-aq'])
    if (all.stdout.trim()) await podman(['rm', '-f', '-t', '0', ...all.stdout.trim().split('\n')])
    for (const s of servers) s.kill('SIGTERM')
    await Promise.all(
      servers.map((s) =>
        s.exitCode === null && s.signalCode === null ? new Promise((r) => s.once('exit', r)) : undefined,
      ),
    )
    await execCommand(['ip', 'netns', 'del', name])
    await execCommand(['ip', 'netns', 'del', world])
    removeCgroups(CGROUP_PARENT)
    rmSync(dir, { recursive: true, force: true })
  })
  const socket = join(dir, 'agent.sock')
  const installed = runCli([
    'cni',
    'install',
    '--bin-dir',
    join(dir, 'bin'),
    '--conf-dir',
    join(dir, 'net'),
    '--subnet',
    SUBNET,
    '--socket',
    socket,
    '--ipam-dir',
    join(dir, 'ipam'),
  ])
  t.equal(installed.code, 0, `l7proxy cni install: ${installed.stdout.trim()}${installed.stderr.trim()}`)
  return { name, dir, socket, podman }
}

/** The agent on the host, as its owner would run it, answering on its socket. */
async function startAgent(t: Test, host: Host, mode: string): Promise<AgentCommand> {
  const config = join(host.dir, 'agent.yaml')
  const labels = [
    'podman',
    '--root',
    join(host.dir, 'storage'),
    '--runroot',
    join(host.dir, 'run'),
    'container',
    'inspect',
    '--format',
    '{{json .Config.Labels}}',
  ]
  writeFileSync(
    config,
    `mode: ${mode}\npolicyDirectory: ${host.dir}/policies\nbpffs: /run/l7proxy/test-bpffs-cni${process.pid}\nstateDirectory: ${host.dir}/state\nproxy: { threads: 1${mode === 'dnat' ? `, address: ${GATEWAY}` : ''} }\nadmin: { socket: ${host.socket}, metrics: off }\ncni: { labelsCommand: ${JSON.stringify(labels)} }\n`,
  )
  const agent = startAgentCommand(t, ['--config', config], {
    pin: `/run/l7proxy/test-bpffs-cni${process.pid}`,
    netns: host.name,
    nsenter: true,
    env: { CONTAINERS_CONF: join(host.dir, 'containers.conf') },
  })
  t.equal(
    (await statusUntil(agent, host.socket)).code,
    0,
    `the agent answers (${agent.out().trim().split('\n').at(-1) ?? ''})`,
  )
  return agent
}

interface Endpoint {
  id: number
  host: string
  identity: number | null
  ips: string[]
}
const endpoints = (host: Host): Endpoint[] =>
  JSON.parse(runCli(['endpoint', 'list', '--socket', host.socket, '-o', 'json']).stdout || '[]') as Endpoint[]

/** Waits until `ok`, at most `tries` x 100 ms. */
const until = (ok: () => boolean | Promise<boolean>, tries = 200): Promise<boolean> => waitUntil(ok, tries, 100)

/** The containers' cgroups go under one of the test's (podman's default parent would outlive it). */
const CGROUP_PARENT = `l7lab-cni${process.pid}`
const RUN = [
  '--runtime',
  'runc',
  '--ulimit',
  'nofile=1024:20000',
  '--ulimit',
  'nproc=1024:1024',
  '--cgroup-parent',
  `/${CGROUP_PARENT}`,
  '--network',
  'l7proxy',
]

/** Removes a cgroup and what is under it, in every hierarchy (once its processes are gone). */
function removeCgroups(name: string): void {
  const remove = (dir: string): void => {
    if (!existsSync(dir)) return
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) remove(join(dir, e.name))
    rmdirSync(dir)
  }
  for (const h of readdirSync('/sys/fs/cgroup')) {
    try {
      remove(join('/sys/fs/cgroup', h, name))
    } catch {
      // a hierarchy that is not a directory of cgroups, or one still in use: left as it is
    }
  }
}

const NAME = 'cni: podman containers on a host, joined through l7proxy-cni, held to the star-wars rules'
const missing = NEEDS.filter((f) => !existsSync(f))
if (missing.length > 0 && !kernelRequired())
  t.test(NAME, { skip: `needs ${missing.join(', ')} (bash scripts/setup.sh installs them)` }, async () => undefined)
else
  kernelTest(t, NAME, async (t) => {
    if (missing.length > 0)
      return void t.fail(`podman test cannot run: missing ${missing.join(', ')} (bash scripts/setup.sh installs them)`)
    const host = await useHost(t)
    writeFileSync(join(host.dir, 'policies/star-wars.yaml'), POLICY)

    // No agent: ADD fails with the plugin's error, and leaves nothing behind.
    const early = await host.podman(['run', '--rm', ...RUN, '--rootfs', join(host.dir, 'root'), '/bin/busybox', 'true'])
    t.not(early.code, 0, 'a container cannot join while no agent runs')
    t.match(early.stderr, /no l7proxy agent is running/, 'and podman says why')
    t.equal(
      (await execCommand(['ip', '-n', host.name, '-o', 'link'])).stdout.includes('lxc'),
      false,
      'no interface left behind',
    )

    let agent = await startAgent(t, host, 'sk-assign')
    const run = async (name: string, labels: Record<string, string>, cmd: string[]): Promise<string> => {
      const r = await host.podman([
        'run',
        '-d',
        '--name',
        name,
        ...Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
        ...RUN,
        '--rootfs',
        join(host.dir, 'root'),
        ...cmd,
      ])
      t.equal(r.code, 0, `podman run ${name}: ${r.stderr.trim()}`)
      return (
        await host.podman(['inspect', name, '--format', '{{.NetworkSettings.Networks.l7proxy.IPAddress}}'])
      ).stdout.trim()
    }
    const ds = await run('ds', { org: 'empire', class: 'deathstar' }, [
      '/bin/busybox',
      'httpd',
      '-f',
      '-p',
      '80',
      '-h',
      '/www',
    ])
    await run('tf', { org: 'empire', class: 'tiefighter' }, ['/bin/busybox', 'sleep', '600'])
    await run('xw', { org: 'alliance', class: 'xwing' }, ['/bin/busybox', 'sleep', '600'])
    t.ok(
      await until(() => endpoints(host).filter((e) => e.identity !== null && e.identity >= 256).length === 3),
      "three endpoints, each with its labels' identity once podman told them",
    )
    const get = async (from: string, path: string): Promise<string> =>
      (
        await host.podman(
          [
            'exec',
            from,
            '/bin/busybox',
            'sh',
            '-c',
            `printf 'GET ${path} HTTP/1.0\\r\\nHost: deathstar\\r\\n\\r\\n' | nc -w 3 ${ds} 80`,
          ],
          20_000,
        )
      ).stdout.split('\r\n')[0] ?? ''
    const holds = async (mode: string): Promise<void> => {
      t.ok(
        await until(async () => (await get('tf', '/public/x')) === 'HTTP/1.1 200 OK', 50),
        `${mode}: the tiefighter gets an allowed path`,
      )
      t.equal(await get('tf', '/private'), 'HTTP/1.1 403 Forbidden', `${mode}: and 403 from the proxy for another`)
      t.equal(await get('xw', '/public/x'), '', `${mode}: the xwing is dropped in the kernel`)
      const dns = await host.podman(['exec', 'tf', '/bin/busybox', 'nslookup', 'hoth.alliance', ds], 20_000)
      t.match(
        `${dns.stdout}${dns.stderr}`,
        /REFUSED/,
        `${mode}: a name outside the DNS rule gets REFUSED from the proxy (${JSON.stringify(dns.stdout + dns.stderr)})`,
      )
    }
    await holds('sk-assign')
    // toFQDNs: cantina.empire's addresses are closed to the tiefighter until it has looked the name up.
    const cantina = async (): Promise<string> =>
      (
        await host.podman(
          [
            'exec',
            'tf',
            '/bin/busybox',
            'sh',
            '-c',
            `printf 'GET /v1 HTTP/1.0\\r\\nHost: cantina.empire\\r\\n\\r\\n' | nc -w 3 ${CANTINA[0]} 80`,
          ],
          20_000,
        )
      ).stdout.split('\r\n')[0] ?? ''
    t.equal(await cantina(), '', "cantina.empire's address is closed before the lookup")
    const lookup = await host.podman(['exec', 'tf', '/bin/busybox', 'nslookup', 'cantina.empire', DNS_SERVER], 20_000)
    t.match(
      lookup.stdout,
      new RegExp(CANTINA[0]!.replaceAll('.', '\\.')),
      `an allowed lookup through the proxy answers (${JSON.stringify(lookup.stdout + lookup.stderr)})`,
    )
    t.equal(await cantina(), 'HTTP/1.1 200 OK', 'and toFQDNs opens the address it named')

    // A restart keeps the containers' endpoints (the agent's state directory) and their policy.
    agent.child.kill('SIGTERM')
    t.equal(await agent.exited, 0, 'the agent stops')
    agent = await startAgent(t, host, 'sk-assign')
    t.equal(endpoints(host).length, 3, 'the restarted agent has the three endpoints')
    t.ok(
      await until(async () => (await get('tf', '/private')) === 'HTTP/1.1 403 Forbidden'),
      'and enforces on them again',
    )
    t.equal(await get('tf', '/public/x'), 'HTTP/1.1 200 OK')
    // Every redirect mode: the agent restarted in it, the same containers and rules.
    for (const mode of ['tproxy', 'sockmap', 'dnat']) {
      agent.child.kill('SIGTERM')
      t.equal(await agent.exited, 0, `the agent stops, to start in ${mode}`)
      agent = await startAgent(t, host, mode)
      await holds(mode)
    }

    // podman rm while no agent runs: DEL succeeds, and the agent started later has forgotten it.
    agent.child.kill('SIGTERM')
    t.equal(await agent.exited, 0, 'the agent stops')
    const rm = await host.podman(['rm', '-f', '-t', '0', 'xw'])
    t.equal(rm.code, 0, `podman rm succeeds with no agent running (${rm.stderr.trim()})`)
    agent = await startAgent(t, host, 'sk-assign')
    t.equal(endpoints(host).length, 2, 'the agent started afterwards has no endpoint for it')
    const leases = (): string[] =>
      readdirSync(join(host.dir, 'ipam/l7proxy')).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f))
    t.equal(leases().length, 2, 'and its IPAM lease')

    // 20 containers started and removed in a row leave no interface, endpoint or lease behind.
    const lxc = async (): Promise<number> =>
      (await execCommand(['ip', '-n', host.name, '-o', 'link'])).stdout.split('\n').filter((l) => l.includes(': lxc'))
        .length
    for (let i = 0; i < 20; i++) {
      await run(`c${i}`, { app: `c${i}` }, ['/bin/busybox', 'sleep', '600'])
      await host.podman(['rm', '-f', '-t', '0', `c${i}`])
    }
    t.equal(endpoints(host).length, 2, 'after 20 containers came and went: the two endpoints')
    t.equal(await lxc(), 2, 'two interfaces')
    t.equal(leases().length, 2, 'two leases')
    const inMap = (
      JSON.parse(
        (
          await execCommand([
            'bpftool',
            '-j',
            'map',
            'dump',
            'pinned',
            `/run/l7proxy/test-bpffs-cni${process.pid}/l7_policy`,
          ])
        ).stdout,
      ) as unknown[]
    ).length
    const live = endpoints(host).reduce(
      (n, e) =>
        n +
        (
          JSON.parse(
            runCli(['bpf', 'policy', 'get', String(e.id), '--socket', host.socket, '-o', 'json']).stdout,
          ) as unknown[]
        ).length,
      0,
    )
    t.equal(inMap, live, `and the policy map holds only the two endpoints' entries (${live})`)
  })
