// The lab for real: namespaces, veths through the node, the servers, real clients in the pods.

import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { labStateDir, labStatus, labUp } from '../lab/lab.js'
import { execCommand, listNetns } from '../lab/netns.js'
import { labCgroupName } from '../lab/topology.js'
import { distPath } from '../lib/project-root.js'
import { cgroup2Root } from '../redirect-bpf/cgroup.js'
import { kernelTest } from './fixtures/kernel.js'
import { type LabHandle, useLab } from './fixtures/lab.js'

/** What the root namespace routes by: the lab must leave all of it unchanged. */
async function rootNetworkSnapshot(): Promise<string> {
  const parts = await Promise.all(
    [
      ['ip', '-j', 'addr'],
      ['ip', '-j', 'route', 'show', 'table', 'all'],
      ['ip', '-j', 'rule'],
    ].map((argv) => execCommand(argv)),
  )
  return parts.map((p) => p.stdout).join('\n')
}

async function curl(lab: LabHandle, host: string, args: string[]) {
  return lab.exec(host, ['curl', '-sS', '--max-time', '5', ...args], { timeoutMs: 10_000 })
}

kernelTest(t, 'lab: pods reach servers through the node; DNS, HTTP and gRPC answer', async (t) => {
  const before = await rootNetworkSnapshot()
  const lab = await useLab(t)
  t.equal(await rootNetworkSnapshot(), before, 'root namespace addresses, routes and rules unchanged')

  const names = await listNetns()
  for (const host of ['node', 'tiefighter', 'xwing', 'deathstar', 'grpc', 'dns', 'world']) {
    t.ok(names.includes(lab.netns(host)), `namespace ${lab.netns(host)} exists`)
  }

  const landing = await curl(lab, 'tiefighter', ['-X', 'POST', 'http://deathstar/v1/request-landing'])
  t.equal(landing.code, 0, `curl ok: ${landing.stderr}`)
  t.equal(landing.stdout, 'Ship landed\n')

  const exhaust = await curl(lab, 'xwing', [
    '-X',
    'PUT',
    '-o',
    '/dev/null',
    '-w',
    '%{http_code}',
    'http://deathstar/v1/exhaust-port',
  ])
  t.equal(exhaust.stdout, '503', 'no policy yet: the xwing blows up the deathstar')

  const echo = await curl(lab, 'tiefighter', ['http://deathstar/v1/echo'])
  const seen = JSON.parse(echo.stdout) as { remoteAddress: string; localAddress: string; host: string }
  t.equal(seen.remoteAddress, '198.18.1.10', "server sees the pod's own address (routed, not NATed)")
  t.equal(seen.localAddress, '198.18.2.10')

  const trace = await lab.exec('tiefighter', ['ip', 'route', 'get', '198.18.2.10'])
  t.match(trace.stdout, /via 198\.18\.0\.1 dev eth0/, "the pod's path to deathstar goes through the node")
  const direct = await lab.exec('node', ['ip', 'route', 'get', '198.18.2.10'])
  t.match(direct.stdout, /dev lxc-deathstar/, "the node forwards to deathstar's veth")

  const dig = await lab.exec('tiefighter', ['dig', '+noall', '+answer', '+time=2', '+tries=1', 'cantina.empire'])
  t.equal(dig.code, 0, `dig ok: ${dig.stderr}`)
  const answers = dig.stdout
    .trim()
    .split('\n')
    .map((l) => l.split(/\s+/))
  t.same(answers.map((a) => a[4]).sort(), ['192.0.2.3', '192.0.2.4'], 'cantina.empire -> 192.0.2.3 and 192.0.2.4')
  t.ok(
    answers.every((a) => a[1] === '60'),
    'with its real TTL',
  )

  const cname = await lab.exec('xwing', ['dig', '+short', '+time=2', '+tries=1', 'www.cantina.empire'])
  t.same(
    cname.stdout.trim().split('\n').sort(),
    ['192.0.2.3', '192.0.2.4', 'cantina.empire.'],
    'CNAME chain answered whole',
  )

  const tcp = await lab.exec('tiefighter', ['dig', '+tcp', '+short', '+time=2', '+tries=1', 'speeder.empire'])
  t.equal(tcp.stdout.trim(), '192.0.2.5', 'DNS over TCP')

  const refused = await lab.exec('tiefighter', ['dig', '+time=2', '+tries=1', 'example.com'])
  t.match(refused.stdout, /status: REFUSED/, 'names outside the lab are refused, never recursed')

  const world = await curl(lab, 'tiefighter', ['http://cantina.empire/v1/echo'])
  t.match(
    JSON.parse(world.stdout),
    { host: 'world', localAddress: /^192\.0\.2\.[34]$/ },
    'learned-name addresses serve HTTP',
  )

  const grpc = await lab.exec(
    'tiefighter',
    [
      process.execPath,
      distPath('lab/clients/grpc-call.js'),
      '--target',
      'grpc.empire:50051',
      '--metadata',
      'x-fleet=black',
    ],
    { timeoutMs: 15_000 },
  )
  t.equal(grpc.code, 0, grpc.stderr)
  const reply = JSON.parse(grpc.stdout) as {
    ok: boolean
    reply: { message: string; peer: string; metadata: Record<string, string> }
  }
  t.equal(reply.ok, true)
  t.equal(reply.reply.message, 'Ship landed (tiefighter)')
  t.match(reply.reply.peer, /^198\.18\.1\.10:\d+$/)
  t.equal(reply.reply.metadata['x-fleet'], 'black', 'metadata arrives')

  const again = await labUp(lab.name)
  t.equal(again.created, false, 'a second up leaves a healthy lab alone')
  t.equal((await curl(lab, 'tiefighter', ['http://deathstar/v1/'])).code, 0, 'and it still serves')
})

kernelTest(t, 'lab: teardown removes namespaces, processes and files', async (t) => {
  let name = ''
  let pids: number[] = []
  await t.test('up', async (t) => {
    const lab = await useLab(t)
    name = lab.name
    pids = lab.state.processes.map((p) => p.pid)
    t.equal(pids.length, 4, 'four servers: deathstar, grpc, dns, world')
    t.ok(existsSync(`/etc/netns/${lab.netns('tiefighter')}/resolv.conf`))
    const inGroup = readFileSync(join(cgroup2Root(), labCgroupName(name), 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number)
    t.same(
      pids.filter((p) => !inGroup.includes(p)),
      [],
      "the servers run in the lab's cgroup (the pods sockmap's sock_ops sees)",
    )
  })
  // The subtest's teardown ran: the lab must be gone without a trace.
  const left = (await listNetns()).filter((ns) => ns.startsWith(`l7lab-${name}-`))
  t.same(left, [], 'no namespace of the lab is left')
  t.same(
    pids.filter((p) => existsSync(`/proc/${p}`)),
    [],
    'no server process is left',
  )
  t.notOk(existsSync(labStateDir(name)), 'state directory removed')
  t.notOk(existsSync(`/etc/netns/l7lab-${name}-tiefighter`), '/etc/netns entries removed')
  t.notOk(existsSync(join(cgroup2Root(), labCgroupName(name))), 'its cgroup removed')
  t.notOk(
    (await labStatus()).some((s) => s.name === name),
    'status no longer lists it',
  )
})
