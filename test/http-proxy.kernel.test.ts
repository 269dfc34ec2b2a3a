// The HTTP proxy in the lab, steered by the kernel in each mode: real curl from the pods, the
// example star-wars policy, the proxy running in the node namespace as the agent will.

import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import t, { type Test } from 'tap'
import { execCommand, netnsArgv, spawnDetachedIn, stopProcess, waitListening } from '../lab/netns.js'
import { type LabNode, startLabNode } from '../lab/node-agent.js'
import { labCgroupName } from '../lab/topology.js'
import { projectRoot } from '../lib/project-root.js'
import { cgroup2Root } from '../redirect-bpf/cgroup.js'
import { kernelTest } from './fixtures/kernel.js'
import { type LabHandle, useLab } from './fixtures/lab.js'
import { cnp } from './fixtures/policy-text.js'

interface NodeProxy extends LabNode {
  lab: LabHandle
  pin: string
  curl(host: string, args: string[]): ReturnType<typeof execCommand>
}

/** A lab whose node runs the node proxy (proxy/agent/agent-main.ts, through lab/node-agent.ts) in `mode` with `policyFile`. */
async function nodeProxy(t: Test, mode: string, policyFile: string): Promise<NodeProxy> {
  const lab = await useLab(t)
  const pin = `/run/l7proxy/test-bpffs-${lab.name}`
  const node = await startLabNode({
    lab: lab.name,
    mode,
    policyFile,
    pin,
    ...(mode === 'sockmap' ? { sockmapCgroup: labCgroupName(lab.name) } : {}),
  })
  t.teardown(async () => {
    await node.stop()
    rmSync(pin, { recursive: true, force: true }) // in case it could not
  })
  // sockmap: curl runs in the lab's cgroup, as a pod's processes (and the lab's servers) do.
  const cgroup = mode === 'sockmap' ? join(cgroup2Root(), labCgroupName(lab.name)) : null
  return {
    ...node,
    lab,
    pin,
    curl: (host, args) =>
      execCommand(netnsArgv(lab.netns(host), ['curl', '-s', '--max-time', '5', ...args], cgroup), {
        timeoutMs: 20_000,
      }),
  }
}

/** The HTTP proxy's lines (the agent's own start and stop lines left out). */
function httpLines(lines: Array<Record<string, unknown>>): Array<Record<string, unknown>> {
  return lines.filter((l) => String(l.msg).startsWith('http'))
}

/** Writes a policy file into a directory removed after the test. */
function policyFile(t: Test, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'l7-http-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'policy.yaml')
  writeFileSync(file, text)
  return file
}

for (const mode of ['sk-assign', 'tproxy', 'dnat', 'sk-lookup'] as const) {
  kernelTest(t, `http proxy in the lab (${mode}): star-wars allow and deny with real curl`, async (t) => {
    const p = await nodeProxy(t, mode, join(projectRoot(), 'policy/examples/star-wars.yaml'))
    const land = await p.curl('tiefighter', ['-X', 'POST', 'http://198.18.2.10/v1/request-landing'])
    t.equal(land.stdout, 'Ship landed\n', 'tiefighter lands: POST /v1/request-landing reaches the deathstar')
    const exhaust = await p.curl('tiefighter', [
      '-X',
      'PUT',
      '-w',
      ' %{http_code}',
      'http://198.18.2.10/v1/exhaust-port',
    ])
    t.equal(exhaust.stdout, 'Access denied\n 403', 'PUT /v1/exhaust-port gets 403 from the proxy')
    const keepAlive = await p.curl('tiefighter', [
      '-X',
      'POST',
      '-w',
      '[%{http_code} %{num_connects}]',
      'http://198.18.2.10/v1/request-landing',
      'http://198.18.2.10/v1/not-a-rule',
    ])
    t.equal(
      keepAlive.stdout,
      'Ship landed\n[200 1]Access denied\n[403 0]',
      'allowed then denied on one kept-alive connection',
    )
    const xwing = await p.curl('xwing', ['-X', 'POST', 'http://198.18.2.10/v1/request-landing'])
    t.not(xwing.code, 0, 'the xwing is dropped in the kernel')
    t.equal(await p.stop(), 0, 'the node proxy stops cleanly on SIGTERM')
    // Proxy threads log in batches: lines of different connections need not be in time order.
    const lines = p.lines()
    t.match(
      lines.find((l) => l.verdict === 'allowed'),
      {
        method: 'POST',
        path: '/v1/request-landing',
        source: /^198\.18\.1\.10:/,
        destination: '198.18.2.10:80',
        rules: ['CiliumNetworkPolicy/default/deathstar-l7'],
      },
      'an allow is logged with source, destination and rule',
    )
    t.match(
      lines.find((l) => l.verdict === 'denied' && l.method === 'PUT'),
      { path: '/v1/exhaust-port', status: 403, reason: /no http rule matched/ },
      'and a denial with its reason',
    )
    t.equal(
      lines.filter((l) => l.msg === 'http allowed' || l.msg === 'http denied').length,
      4,
      'one line per request, from whichever thread took the connection',
    )
    t.notOk(existsSync(p.pin), 'and removes its pin directory')
  })
}

/** A policy file allowing the empire `method` on the deathstar's port 8080, through the proxy. */
function port8080Policy(t: Test, method: string): string {
  return policyFile(
    t,
    cnp(
      'deathstar-8080',
      '{ class: deathstar }',
      `  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "8080", protocol: TCP } ]
      rules: { http: [ { method: ${method} } ] }
`,
    ),
  )
}

/** What sk_msg moved socket to socket, from a stopped node's last line (sockmap mode). */
function sockmapStats(lines: Array<Record<string, unknown>>): { messages: number; bytes: number } {
  const stopped = lines.find((l) => l.msg === 'datapath stopped') as
    | { sockmap?: { messages: number; bytes: number } }
    | undefined
  return stopped?.sockmap ?? { messages: 0, bytes: 0 }
}

for (const mode of ['sk-assign', 'sockmap', 'sk-lookup'] as const) {
  kernelTest(t, `http proxy in the lab (${mode}): a 10 MB upload and a chunked download stream through`, async (t) => {
    const policy = policyFile(
      t,
      cnp(
        'deathstar-data',
        '{ class: deathstar }',
        `  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "80", protocol: TCP } ]
      rules: { http: [ { method: POST, path: "/v1/echo" }, { method: GET, path: "/v1/bytes([?].*)?" } ] }
`,
      ),
    )
    const upload = join(dirname(policy), 'upload.bin')
    const data = randomBytes(10 * 1024 * 1024)
    writeFileSync(upload, data)
    // Paths are matched with their query, as Envoy's :path is in Cilium: hence the bytes pattern.
    const p = await nodeProxy(t, mode, policy)
    const echo = await p.curl('tiefighter', [
      '--data-binary',
      `@${upload}`,
      '-H',
      'content-type: application/octet-stream',
      'http://198.18.2.10/v1/echo',
    ])
    t.equal(echo.code, 0, echo.stderr)
    const seen = JSON.parse(echo.stdout) as { bodyBytes: number; bodySha256: string; remoteAddress: string }
    t.equal(seen.bodyBytes, data.length, '10 MB arrived')
    t.equal(seen.bodySha256, createHash('sha256').update(data).digest('hex'), 'intact')
    const dl = await p.curl('tiefighter', [
      '-D',
      '-',
      '-o',
      '/dev/null',
      '-w',
      'size=%{size_download}',
      'http://198.18.2.10/v1/bytes?n=3000000',
    ])
    t.match(dl.stdout, /^HTTP\/1\.1 200/, 'the download is allowed')
    t.match(dl.stdout, /transfer-encoding: chunked/i, 'as a chunked response')
    t.match(dl.stdout, /size=3000000$/, 'all 3,000,000 bytes')
    t.equal(await p.stop(), 0)
    // Two connections, maybe two proxy threads: their lines in either order.
    const byPath = httpLines(p.lines()).sort((a, b) => String(a.path).localeCompare(String(b.path)))
    t.match(
      byPath,
      [
        { verdict: 'allowed', path: '/v1/bytes?n=3000000', status: 200 },
        { verdict: 'allowed', path: '/v1/echo', status: 200 },
      ],
      'both logged',
    )
    if (mode === 'sockmap') {
      // Each body crosses two hops, pod-proxy and proxy-deathstar (the node's own connection,
      // both ends in the cgroup): sk_msg carried both, so at least twice the bodies' bytes.
      const moved = sockmapStats(p.lines())
      t.ok(moved.bytes >= 2 * (data.length + 3_000_000), `sk_msg moved both hops' bytes (${JSON.stringify(moved)})`)
    }
  })
}

kernelTest(
  t,
  'http proxy in the lab (sockmap): pod and proxy sockets exchange the requests through sk_msg',
  async (t) => {
    const p = await nodeProxy(t, 'sockmap', join(projectRoot(), 'policy/examples/star-wars.yaml'))
    const r = await p.curl('tiefighter', [
      '-X',
      'POST',
      '-w',
      '[%{http_code} %{num_connects}]',
      'http://198.18.2.10/v1/request-landing',
      '--next',
      '-X',
      'PUT',
      '-w',
      '[%{http_code} %{num_connects}]',
      'http://198.18.2.10/v1/exhaust-port',
    ])
    t.equal(
      r.stdout,
      'Ship landed\n[200 1]Access denied\n[403 0]',
      `allowed then denied on one connection (${r.stderr})`,
    )
    t.equal(await p.stop(), 0)
    const lines = p.lines()
    t.match(httpLines(lines), [
      { verdict: 'allowed', path: '/v1/request-landing' },
      { verdict: 'denied', path: '/v1/exhaust-port', status: 403 },
    ])
    const moved = sockmapStats(lines)
    // Pod to proxy and back: two requests, two answers; proxy to deathstar and back: one each.
    t.ok(
      moved.messages >= 6,
      `sk_msg moved the requests and answers socket to socket on both hops (${JSON.stringify(moved)})`,
    )
  },
)

// The proxy-server hop is shortcut too (both sockets in the lab's cgroup): a server that reads
// slowly must hold the upload back through it, and every byte still arrive in order.
kernelTest(
  t,
  'http proxy in the lab (sockmap): an upload to a slow server on the shortcut hop arrives whole',
  async (t) => {
    const policy = port8080Policy(t, 'POST')
    const p = await nodeProxy(t, 'sockmap', policy)
    // Pauses 5 ms after every read (at most ~13 MB/s), so the proxy's writes outrun it.
    const slow = `const h = require('node:crypto'); require('node:http').createServer((req, res) => {
    const sha = h.createHash('sha256'); let n = 0
    req.on('data', (d) => { sha.update(d); n += d.length; req.pause(); setTimeout(() => req.resume(), 5) })
    req.on('end', () => res.end(JSON.stringify({ n, sha: sha.digest('hex') })))
  }).listen(8080, '198.18.2.10')`
    const log = join(dirname(policy), 'slow.log')
    const ns = p.lab.netns('deathstar')
    const pid = await spawnDetachedIn(
      ns,
      [process.execPath, '-e', slow],
      log,
      join(cgroup2Root(), labCgroupName(p.lab.name)),
    )
    t.teardown(() => stopProcess(pid))
    await waitListening({ ns, port: 8080, proto: 'tcp', pid, logFile: log, what: 'slow server' })
    const data = randomBytes(8 * 1024 * 1024)
    const upload = join(dirname(policy), 'slow-upload.bin')
    writeFileSync(upload, data)
    const started = Date.now()
    const r = await p.curl('tiefighter', [
      '--max-time',
      '15',
      '--data-binary',
      `@${upload}`,
      'http://198.18.2.10:8080/up',
    ])
    t.equal(r.code, 0, `curl: ${r.stderr}`)
    t.same(
      JSON.parse(r.stdout || '{}'),
      { n: data.length, sha: createHash('sha256').update(data).digest('hex') },
      `8 MB arrived whole and in order (${Date.now() - started} ms)`,
    )
    t.equal(await p.stop(), 0)
    const moved = sockmapStats(p.lines())
    t.ok(moved.bytes >= 2 * data.length, `both hops carried it socket to socket (${JSON.stringify(moved)})`)
  },
)

kernelTest(t, 'http proxy in the lab: an upstream that is down gives 502 and a log line', async (t) => {
  // Port 8080 on the deathstar has L7 rules but nothing listening.
  const policy = port8080Policy(t, 'GET')
  const p = await nodeProxy(t, 'sk-assign', policy)
  const r = await p.curl('tiefighter', ['-w', '[%{http_code}]', 'http://198.18.2.10:8080/v1/'])
  t.equal(r.stdout, 'Upstream unavailable\n[502]', 'the client gets 502 from the proxy')
  t.equal(await p.stop(), 0)
  t.match(httpLines(p.lines()), [
    { msg: 'http: upstream failed (502)', origin: '198.18.2.10:8080', error: 'ECONNREFUSED' },
    { verdict: 'allowed', status: 502 },
  ])
})

kernelTest(
  t,
  "http proxy in the lab: the server's egress default-deny does not cut the proxy's upstream",
  async (t) => {
    // The deathstar may only send DNS: its replies to the node's upstream connection still pass
    // (to-endpoint tracks the node's SYN), but a connection it starts itself does not.
    const policy = policyFile(
      t,
      readFileSync(join(projectRoot(), 'policy/examples/star-wars.yaml'), 'utf8') +
        '---\n' +
        cnp(
          'deathstar-egress-dns-only',
          '{ class: deathstar }',
          '  egress:\n  - toEndpoints: [ { matchLabels: { k8s-app: kube-dns, "k8s:io.kubernetes.pod.namespace": kube-system } } ]\n    toPorts: [ { ports: [ { port: "53", protocol: ANY } ] } ]\n',
        ),
    )
    const p = await nodeProxy(t, 'sk-assign', policy)
    const land = await p.curl('tiefighter', ['-X', 'POST', 'http://198.18.2.10/v1/request-landing'])
    t.equal(land.stdout, 'Ship landed\n', 'the request and its answer cross the proxy')
    const out = await p.curl('deathstar', ['-w', '%{http_code}', '--max-time', '2', 'http://192.0.2.3/v1/'])
    t.not(out.code, 0, "the deathstar's own connections are still denied")
  },
)

// The proxy closes a `Connection: close` exchange first, so its side of the tuple stays in
// TIME_WAIT in the node; a new SYN on that tuple meets it (sk_assign hands it over, sk-lookup's
// local delivery finds it), and the kernel must then find the proxy's listener
// (sk-lookup.bpf.c) or the client waits a second to retry.
for (const mode of ['sk-assign', 'sockmap', 'sk-lookup'] as const) {
  kernelTest(
    t,
    `http proxy in the lab (${mode}): a SYN reusing the tuple of a proxy socket in TIME_WAIT reaches the proxy at once`,
    async (t) => {
      const p = await nodeProxy(t, mode, join(projectRoot(), 'policy/examples/star-wars.yaml'))
      const port = 41100
      // Reads the whole answer and closes after the proxy does (the client keeps no TIME_WAIT).
      const client = `const s = require('net').connect({ host: '198.18.2.10', port: 80, localPort: ${port} }, () => s.write('POST /v1/request-landing HTTP/1.1\\r\\nHost: deathstar\\r\\nConnection: close\\r\\nContent-Length: 0\\r\\n\\r\\n'));
      let a = ''; s.on('data', (d) => (a += d)); s.on('end', () => { s.end(); process.stdout.write(a.split('\\r\\n')[0]) }); s.on('error', (e) => { console.error(e.message); process.exit(1) })`
      const synRetrans = async (): Promise<number> => {
        // /proc/net/netstat: a line of TcpExt names, then one of their values (this namespace's).
        const [names, values] = (await p.lab.exec('tiefighter', ['cat', '/proc/net/netstat'])).stdout
          .split('\n')
          .filter((l) => l.startsWith('TcpExt:'))
          .map((l) => l.split(/\s+/))
        return Number(values?.[names?.indexOf('TCPSynRetrans') ?? -1])
      }
      t.equal(
        (await p.lab.exec('tiefighter', [process.execPath, '-e', client], { timeoutMs: 15_000 })).stdout,
        'HTTP/1.1 200 OK',
        'first connection from port 41100',
      )
      const tw = await p.lab.exec('node', ['ss', '-Htan', 'state', 'time-wait', `( dport = :${port} )`])
      t.match(
        tw.stdout,
        /198\.18\.2\.10:80\s+198\.18\.1\.10:41100/,
        "the proxy's side of it is in TIME_WAIT in the node",
      )
      const before = await synRetrans()
      t.ok(Number.isInteger(before), `the client's SYN retransmissions so far: ${before}`)
      t.equal(
        (await p.lab.exec('tiefighter', [process.execPath, '-e', client], { timeoutMs: 15_000 })).stdout,
        'HTTP/1.1 200 OK',
        'the same tuple again',
      )
      t.equal((await synRetrans()) - before, 0, 'and its SYN was answered the first time (no retransmission)')
    },
  )
}
