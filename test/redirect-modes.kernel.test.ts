// Each implemented redirect mode steers flows with L7 rules to transparent sockets on the node,
// which see the client's own address and recover the original destination; other flows go
// straight to their server; with no proxy socket the steered flow is dropped (fail closed).

import { spawnSync } from 'node:child_process'
import { createSocket, type Socket } from 'node:dgram'
import { existsSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { execCommand, netnsArgv } from '../lab/netns.js'
import { GATEWAY_IP, LAB_HOSTS, labCgroupName, labEndpoints, nodeIfname } from '../lab/topology.js'
import { PolicyEngine } from '../policy/engine.js'
import { cgroup2Root, joinCgroup, removeCgroup } from '../redirect-bpf/cgroup.js'
import { Datapath } from '../redirect-bpf/datapath.js'
import type { VerdictName } from '../redirect-bpf/map-layout.js'
import { parseMode, REDIRECT_MODES, type RedirectMode, ROUTE_TABLE } from '../redirect-bpf/modes/redirect-mode.js'
import { inNetns } from '../redirect-bpf/netns.js'
import { transparentTcpListener, transparentUdpSocket } from '../redirect-bpf/transparent-socket.js'
import { kernelTest } from './fixtures/kernel.js'
import { type LabHandle, useBpffs, useLab } from './fixtures/lab.js'
import { cnp } from './fixtures/policy-text.js'

const HTTP_PORT = 15001
const DNS_PORT = 15053

interface SteeredLab {
  mode: RedirectMode
  /** Where the proxies listen: loopback, or for dnat a node address the rewritten packets can reach. */
  proxyAddr: string
  lab: LabHandle
  dp: Datapath
  /** Endpoint id by host name. */
  ids: Map<string, number>
  count(host: string, verdict: VerdictName): number
}

/** A lab whose node runs the datapath on every host's veth in `mode`, with `policy` applied. */
async function steeredLab(t: Test, mode: RedirectMode, policy: string): Promise<SteeredLab> {
  const lab = await useLab(t)
  const proxyAddr = mode === 'dnat' ? GATEWAY_IP : '127.0.0.1'
  const engine = new PolicyEngine({ proxyPorts: { http: HTTP_PORT, dns: DNS_PORT } })
  const ids = new Map<string, number>()
  for (const ep of labEndpoints()) {
    engine.upsertEndpoint(ep)
    ids.set(ep.host, ep.id)
  }
  engine.loadFile('policy.yaml', policy)
  const dp = Datapath.start({
    mode,
    pinRoot: useBpffs(t, lab.name),
    proxyAddress: proxyAddr,
    proxyPorts: [HTTP_PORT, DNS_PORT],
    netns: lab.netns('node'),
    cgroupName: labCgroupName(lab.name),
  })
  t.teardown(() => dp.stop())
  for (const h of LAB_HOSTS) dp.attach(nodeIfname(h.name), ids.get(h.name))
  dp.apply(engine.takeDelta())
  const count = (host: string, verdict: VerdictName) =>
    dp.counters().find((c) => c.endpointId === ids.get(host) && c.verdict === verdict)?.packets ?? 0
  return { mode, proxyAddr, lab, dp, ids, count }
}

/**
 * A test HTTP "proxy" on transparent listeners in the node, one per `threads` (a SO_REUSEPORT
 * group the datapath spreads connections over): answers with what it saw, and which listener.
 */
async function httpProxy(t: Test, s: SteeredLab, threads = 1): Promise<{ close(): Promise<void> }> {
  // In sockmap mode the proxy's sockets must belong to the cgroup sock_ops watches; a socket's
  // cgroup is fixed when it is made, and accepted sockets take the listener's.
  if (s.dp.cgroup) joinCgroup(s.dp.cgroup)
  let fds: number[]
  try {
    fds = inNetns(s.lab.netns('node'), () =>
      Array.from({ length: threads }, () => transparentTcpListener(s.proxyAddr, HTTP_PORT, { reusePort: threads > 1 })),
    )
  } finally {
    if (s.dp.cgroup) joinCgroup(cgroup2Root())
  }
  s.dp.addProxySocket(HTTP_PORT, 'tcp', fds[0]!)
  if (threads > 1) s.dp.spreadHttp(fds)
  const servers = fds.map((fd, thread) => {
    const server: Server = createServer({ keepAlive: true }, (req, res) => {
      const { localAddress, localPort, remoteAddress, remotePort } = req.socket
      // The design's two ways to learn where the client was going: getsockname, or the proxymap.
      const dest =
        s.mode === 'dnat'
          ? s.dp.originalDestination(remoteAddress!, remotePort!, 'tcp')
          : { address: localAddress!, port: localPort! }
      res.end(
        JSON.stringify({
          original: dest ? `${dest.address}:${dest.port}` : 'unknown',
          remote: remoteAddress,
          port: remotePort,
          thread,
        }),
      )
    })
    return { server, fd }
  })
  await Promise.all(servers.map(({ server, fd }) => new Promise<void>((resolve) => server.listen({ fd }, resolve))))
  let open = true
  const close = async () => {
    if (!open) return
    open = false
    await Promise.all(servers.map(({ server }) => new Promise<void>((r) => server.close(() => r()))))
  }
  t.teardown(close)
  return { close }
}

async function curl(lab: LabHandle, host: string, urls: string[]) {
  return lab.exec(host, ['curl', '-s', '--max-time', '3', ...urls.flatMap((u) => [u, '-w', '\\n'])], {
    timeoutMs: 15_000,
  })
}

t.test('redirect modes: names', async (t) => {
  for (const m of ['tproxy', 'sk-assign', 'dnat', 'sockmap', 'sk-lookup']) t.equal(parseMode(m), m)
  t.throws(() => parseMode('magic'), {
    message: /unknown redirect mode 'magic' \(expected one of: tproxy, sk-assign, dnat, sockmap, sk-lookup\)/,
  })
})

// The tiefighter: L7 rules to the deathstar, plain L4 to the gRPC server. The xwing: only DNS.
// (Not L4 to another host on port 80: once a port has L7 rules, every peer on it is proxied.)
const TCP_POLICY =
  cnp(
    'tiefighter-l7',
    '{ class: tiefighter }',
    '  egress:\n  - toEndpoints: [ { matchLabels: { class: deathstar } } ]\n    toPorts:\n    - ports: [ { port: "80", protocol: TCP } ]\n      rules: { http: [ { method: GET } ] }\n' +
      '  - toEndpoints: [ { matchLabels: { class: grpc } } ]\n    toPorts: [ { ports: [ { port: "50051", protocol: TCP } ] } ]\n',
  ) +
  '---\n' +
  cnp(
    'xwing-dns-only',
    '{ class: xwing }',
    '  egress:\n  - toEndpoints: [ { matchLabels: { k8s-app: kube-dns, "k8s:io.kubernetes.pod.namespace": kube-system } } ]\n    toPorts: [ { ports: [ { port: "53", protocol: ANY } ] } ]\n',
  )

for (const mode of REDIRECT_MODES) {
  kernelTest(
    t,
    `redirect mode ${mode}: TCP flows with L7 rules reach the proxy with their original destination`,
    async (t) => {
      const s = await steeredLab(t, mode, TCP_POLICY)
      const proxy = await httpProxy(t, s)
      const r = await curl(s.lab, 'tiefighter', ['http://198.18.2.10/v1/', 'http://198.18.2.10/v1/again'])
      t.equal(r.code, 0, `curl ok: ${r.stderr}`)
      const answers = r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { original: string; remote: string; port: number })
      t.equal(answers.length, 2, 'two requests answered')
      for (const a of answers) {
        t.equal(a.original, '198.18.2.10:80', 'the proxy recovers the original destination')
        t.equal(a.remote, '198.18.1.10', "and the client's own address")
      }
      t.equal(answers[0]!.port, answers[1]!.port, 'one connection carried both (established packets steered too)')
      t.ok(s.count('tiefighter', 'to-proxy') > 0, 'counted as steered to the proxy')

      // HTTP/2 with prior knowledge: only the real gRPC server can answer it, not the test proxy.
      const direct = await s.lab.exec(
        'tiefighter',
        [
          'curl',
          '-s',
          '--http2-prior-knowledge',
          '-o',
          '/dev/null',
          '-w',
          '%{http_version} %{http_code}',
          '--max-time',
          '3',
          'http://198.18.2.20:50051/',
        ],
        { timeoutMs: 10_000 },
      )
      t.match(
        direct.stdout,
        /^2 [1-5]\d\d$/,
        `a flow without L7 rules reaches the server itself (${direct.stdout} ${direct.stderr})`,
      )
      t.ok(s.count('tiefighter', 'allowed') > 0, 'counted as allowed, not steered')
      const denied = await s.lab.exec(
        'xwing',
        ['curl', '-s', '-D', '-', '-o', '/dev/null', '--max-time', '2', 'http://198.18.2.10/v1/'],
        { timeoutMs: 10_000 },
      )
      t.not(denied.code, 0, 'a denied flow (xwing -> deathstar) never reaches the server')
      t.notMatch(denied.stdout, /x-lab-host/i)
      t.ok(s.count('xwing', 'denied-default') > 0, 'and the drop counter rises')

      await proxy.close()
      t.not(
        (await curl(s.lab, 'tiefighter', ['http://198.18.2.10/v1/'])).code,
        0,
        'no proxy listening: the steered flow is dropped, not let through',
      )
      if (mode === 'sk-assign' || mode === 'sk-lookup')
        t.ok(s.count('tiefighter', 'no-proxy') > 0, 'counted as no proxy')

      s.dp.stop()
      const inNode = (argv: string[]) =>
        spawnSync('ip', ['netns', 'exec', s.lab.netns('node'), ...argv], { encoding: 'utf8' }).stdout
      t.notMatch(inNode(['ip', 'rule', 'show']), new RegExp(`lookup ${ROUTE_TABLE}`), 'the fwmark rule is gone')
      t.equal(inNode(['ip', 'route', 'show', 'table', String(ROUTE_TABLE)]).trim(), '', 'the local route is gone')
      t.notMatch(inNode(['iptables', '-w', '-t', 'mangle', '-S']), /L7PROXY/, 'the TPROXY chain is gone')
    },
  )

  kernelTest(t, `redirect mode ${mode}: new connections take turns over the proxy's threads`, async (t) => {
    const s = await steeredLab(t, mode, TCP_POLICY)
    await httpProxy(t, s, 2)
    // Eight connections, one after another (the kernel's hash of their addresses would send a
    // run of them to one listener: strict turns by chance is 2 in 256).
    const r = await s.lab.exec(
      'tiefighter',
      ['sh', '-c', 'for i in 1 2 3 4 5 6 7 8; do curl -s --max-time 3 http://198.18.2.10/v1/; echo; done'],
      { timeoutMs: 40_000 },
    )
    const answers = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { original: string; port: number; thread: number })
    t.equal(answers.length, 8, `eight requests answered (${r.stderr})`)
    t.equal(new Set(answers.map((a) => a.port)).size, 8, 'each on a connection of its own')
    const threads = answers.map((a) => a.thread)
    t.ok(
      threads.every((th, i) => i === 0 || th !== threads[i - 1]),
      `the two listeners took turns: ${threads.join(' ')}`,
    )
    for (const a of answers) t.equal(a.original, '198.18.2.10:80', 'with the original destination')
  })

  kernelTest(
    t,
    `redirect mode ${mode}: DNS over UDP reaches the proxy, which answers from the original server`,
    async (t) => {
      const s = await steeredLab(
        t,
        mode,
        cnp(
          'tiefighter-dns',
          '{ class: tiefighter }',
          '  egress:\n  - toEndpoints: [ { matchLabels: { k8s-app: kube-dns, "k8s:io.kubernetes.pod.namespace": kube-system } } ]\n    toPorts:\n    - ports: [ { port: "53", protocol: ANY } ]\n      rules: { dns: [ { matchPattern: "*.empire" } ] }\n',
        ),
      )
      const node = s.lab.netns('node')
      const seen: Array<{ client: string; destination: string }> = []
      const replySockets = new Map<string, Socket>()
      const proxy = createSocket('udp4')
      proxy.on('message', (msg, rinfo) => {
        const dest = s.dp.originalDestination(rinfo.address, rinfo.port, 'udp')
        seen.push({
          client: `${rinfo.address}:${rinfo.port}`,
          destination: dest ? `${dest.address}:${dest.port}` : 'unknown',
        })
        if (!dest || msg.length < 12) return
        const key = `${dest.address}:${dest.port}`
        // dnat: the kernel reverse-translates the proxy's own replies; otherwise answer from a
        // transparent socket bound to the original destination.
        let reply = mode === 'dnat' ? proxy : replySockets.get(key)
        if (!reply) {
          const fd = inNetns(node, () => transparentUdpSocket(dest.address, dest.port))
          reply = createSocket('udp4')
          reply.bind({ fd })
          replySockets.set(key, reply)
        }
        const answer = Buffer.from(msg)
        answer[2] = answer[2]! | 0x80 // QR: a response
        answer[3] = (answer[3]! & 0xf0) | 5 // RCODE REFUSED
        reply.send(answer, rinfo.port, rinfo.address)
      })
      const fd = inNetns(node, () => transparentUdpSocket(s.proxyAddr, DNS_PORT))
      await new Promise<void>((resolve) => proxy.bind({ fd }, resolve))
      s.dp.addProxySocket(DNS_PORT, 'udp', fd)
      let proxyOpen = true
      const closeProxy = () => {
        if (proxyOpen) proxy.close()
        proxyOpen = false
      }
      t.teardown(() => {
        closeProxy()
        for (const r of replySockets.values()) r.close()
      })

      const dig = await s.lab.exec('tiefighter', ['dig', '+time=2', '+tries=1', '@198.18.2.53', 'cantina.empire'], {
        timeoutMs: 10_000,
      })
      t.match(dig.stdout, /status: REFUSED/, 'the answer came back from 198.18.2.53:53 (dig accepts no other source)')
      t.match(
        seen,
        [{ client: /^198\.18\.1\.10:\d+$/, destination: '198.18.2.53:53' }],
        'the proxy saw the client and recovered the original destination',
      )
      t.ok(s.count('tiefighter', 'to-proxy') > 0, 'counted as steered')

      const viaTcp = await s.lab.exec(
        'tiefighter',
        ['dig', '+tcp', '+time=2', '+tries=1', '@198.18.2.53', 'cantina.empire'],
        { timeoutMs: 10_000 },
      )
      t.notMatch(viaTcp.stdout, /status:/, 'DNS over TCP is steered too: no TCP proxy here, so no answer')

      closeProxy()
      const down = await s.lab.exec('tiefighter', ['dig', '+time=1', '+tries=1', '@198.18.2.53', 'cantina.empire'], {
        timeoutMs: 10_000,
      })
      t.notMatch(down.stdout, /status:/, 'no proxy socket: the query is dropped, never reaches the real server')
      t.equal(seen.length, 1, 'and the closed proxy saw nothing more')
    },
  )
}

kernelTest(t, 'ingress policy is enforced at the sender, and conntrack lets replies through', async (t) => {
  const s = await steeredLab(
    t,
    'sk-assign',
    cnp(
      'deathstar-l7',
      '{ org: empire, class: deathstar }',
      '  ingress:\n  - fromEndpoints: [ { matchLabels: { org: empire } } ]\n    toPorts:\n    - ports: [ { port: "80", protocol: TCP } ]\n      rules: { http: [ { method: POST, path: "/v1/request-landing" } ] }\n',
    ),
  )
  await httpProxy(t, s)
  const tie = await curl(s.lab, 'tiefighter', ['http://198.18.2.10/v1/request-landing'])
  t.match(
    JSON.parse(tie.stdout.trim()),
    { original: '198.18.2.10:80', remote: '198.18.1.10' },
    "deathstar's ingress L7 rule steers the tiefighter to the proxy",
  )
  t.not(
    (await curl(s.lab, 'xwing', ['http://198.18.2.10/v1/'])).code,
    0,
    'the xwing is denied by deathstar ingress policy',
  )
  t.not((await curl(s.lab, 'world', ['http://198.18.2.10/v1/'])).code, 0, 'so is the outside world')
  t.ok(s.count('deathstar', 'denied-default') > 0, 'counted on the deathstar as denied by default')
  const out = await curl(s.lab, 'deathstar', ['http://192.0.2.3/v1/'])
  t.equal(out.code, 0, `the deathstar's own connection out works: its replies pass by conntrack (${out.stderr})`)
  t.match(out.stdout, /"name":"world"/)
  t.equal((await curl(s.lab, 'xwing', ['http://192.0.2.3/v1/'])).code, 0, 'flows between hosts without policy pass')
})

kernelTest(t, 'sockmap: payload between the pod and the proxy moves socket to socket through sk_msg', async (t) => {
  const s = await steeredLab(t, 'sockmap', TCP_POLICY)
  await httpProxy(t, s)
  const before = s.dp.sockmapStats()
  // A client outside the cgroup: only the proxy's end is in the sockhash, so the normal path.
  const outside = await curl(s.lab, 'tiefighter', ['http://198.18.2.10/v1/outside'])
  t.match(
    JSON.parse(outside.stdout.trim()),
    { original: '198.18.2.10:80', remote: '198.18.1.10' },
    'a client outside the cgroup still works',
  )
  t.same(s.dp.sockmapStats(), before, 'and nothing was redirected: no peer in the sockhash')
  // A client inside the cgroup: both ends are in the sockhash.
  // Async: the proxy answering it lives in this process's event loop.
  const inside = await execCommand(
    netnsArgv(
      s.lab.netns('tiefighter'),
      ['curl', '-sS', '--max-time', '3', 'http://198.18.2.10/v1/inside', '-w', '\\n', 'http://198.18.2.10/v1/again'],
      s.dp.cgroup,
    ),
    { timeoutMs: 15_000 },
  )
  const after = s.dp.sockmapStats()
  t.equal(
    inside.code,
    0,
    `curl exit ${inside.code}: ${inside.stderr} (sk_msg moved ${after.messages - before.messages} messages, ${after.bytes - before.bytes} bytes)`,
  )
  const answers = inside.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { original: string; remote: string })
  t.equal(answers.length, 2, 'both requests answered over the redirected path')
  for (const a of answers) t.match(a, { original: '198.18.2.10:80', remote: '198.18.1.10' })
  t.ok(
    after.messages - before.messages >= 4,
    `sk_msg moved ${after.messages - before.messages} messages (two requests, two responses)`,
  )
  t.ok(after.bytes - before.bytes > 200, `${after.bytes - before.bytes} bytes went socket to socket`)
})

kernelTest(t, "sockmap: a datapath removes a cgroup it made, and leaves one it found (the lab's)", async (t) => {
  const lab = await useLab(t)
  const pinRoot = useBpffs(t, lab.name)
  const start = (cgroupName: string): Datapath =>
    Datapath.start({
      mode: 'sockmap',
      pinRoot,
      proxyAddress: '127.0.0.1',
      proxyPorts: [HTTP_PORT, DNS_PORT],
      netns: lab.netns('node'),
      cgroupName,
    })
  const labGroup = join(cgroup2Root(), labCgroupName(lab.name))
  start(labCgroupName(lab.name)).stop()
  t.ok(
    existsSync(labGroup),
    "the lab's cgroup stays after the datapath stops: the lab made it, and its servers are in it",
  )
  // Not a lab's name: lab down would not take it, so it is this test's to remove if the datapath does not.
  const name = `${labCgroupName(lab.name)}-own`
  t.teardown(() => removeCgroup(join(cgroup2Root(), name)))
  const made = start(name)
  t.ok(existsSync(join(cgroup2Root(), name)), 'a cgroup that did not exist is made')
  made.stop()
  t.notOk(existsSync(join(cgroup2Root(), name)), 'and removed when the datapath stops')
})
