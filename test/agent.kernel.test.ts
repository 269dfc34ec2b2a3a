// `l7proxy agent` as a user runs it: a real process on a lab, its policy directory edited while
// it runs. A rule removed from a file denies the next request, put back allows it again, a file
// that does not parse is refused without changing anything, a file removed takes its rules with
// it, a file imported through the CLI is enforced when the command returns; no restart in
// between. Then SIGHUP: a bad configuration is refused, a changed one restarts the agent with it.

import { spawn } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { execCommand } from '../lab/netns.js'
import { distPath, projectRoot } from '../lib/project-root.js'
import { startAgentCommand } from './fixtures/agent-command.js'
import { documentedJson, undocumentedFields } from './fixtures/cli-json.js'
import { kernelTest } from './fixtures/kernel.js'
import { useLab } from './fixtures/lab.js'
import { waitWithin } from './fixtures/wait.js'

const LANDING = 'http://198.18.2.10/v1/request-landing'

/** A line of Prometheus' text format: HELP, TYPE, or a sample with optional labels. */
const PROMETHEUS_LINE =
  /^(# HELP [a-zA-Z_:][\w:]* .*|# TYPE [a-zA-Z_:][\w:]* (counter|gauge|histogram|summary|untyped)|[a-zA-Z_:][\w:]*(\{[a-zA-Z_]\w*="(?:[^"\\]|\\.)*"(,[a-zA-Z_]\w*="(?:[^"\\]|\\.)*")*\})? (-?\d+(\.\d+)?(e[+-]?\d+)?|NaN|[+-]Inf))$/

kernelTest(t, 'agent: policy file changes take effect live, a bad file changes nothing', async (t) => {
  const lab = await useLab(t)
  const dir = mkdtempSync(join(tmpdir(), 'l7-agent-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'star-wars.yaml')
  copyFileSync(join(projectRoot(), 'policy/examples/star-wars.yaml'), file)
  const original = readFileSync(file, 'utf8')

  // Set up as a user would: a config file, with one setting from the environment.
  const config = join(dir, 'agent.conf')
  writeFileSync(
    config,
    `lab: ${lab.name}\npolicyDirectory: ${dir}\nstateDirectory: ${dir}/state\nproxy: { threads: 1 }\ndns: { rejectCode: NXDOMAIN }\nadmin: { metrics: 127.0.0.1:0 }\n`,
  )
  const pin = `/run/l7proxy/agent-bpffs-${lab.name}`
  const running = startAgentCommand(t, ['--config', config], { pin, env: { L7PROXY_THREADS: '2' } })
  const agent = running.child
  const exited = running.exited
  const lines = (): Array<Record<string, unknown>> =>
    running
      .out()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
  const waitFor = (what: string, ok: () => Promise<boolean> | boolean, ms = 10_000): Promise<number> =>
    waitWithin(what, ok, {
      withinMs: ms,
      everyMs: 50,
      said: () => `agent said:\n${running.out()}`,
    })
  const status = (method: string, url: string): Promise<string> =>
    lab.httpCode('tiefighter', url, { method, maxTime: 3 })

  // Log lines are written in batches (at least every 250 ms): wait for them too.
  const line = async (msg: string): Promise<Record<string, unknown>> => {
    await waitFor(`log line '${msg}'`, () => lines().some((l) => l.msg === msg))
    return lines().find((l) => l.msg === msg)!
  }
  await waitFor('READY', () => running.out().includes('READY\n'), 30_000)
  t.match(await line('node agent started'), { policies: [file], httpThreads: 2 })
  t.equal(await status('POST', LANDING), '200', 'the example policy allows the landing')
  t.equal(await status('PUT', 'http://198.18.2.10/v1/exhaust-port'), '403', 'and denies the exhaust port')

  // A second terminal asks the agent what it is doing.
  const cli = (...args: string[]) =>
    execCommand([process.execPath, distPath('proxy/cli/main.js'), ...args, '--lab', lab.name], { timeoutMs: 20_000 })
  const statusJson = async (): Promise<{
    mode: string
    policy: { revision: number; files: string[] }
    http: { threads: number; requests: Record<string, number> }
  }> => JSON.parse((await cli('status', '-o', 'json')).stdout)
  // Worker threads report their counters every second.
  await waitFor('status counts both requests', async () => {
    const s = await statusJson()
    return s.http.requests.allowed >= 1 && s.http.requests.denied >= 1
  })
  t.match(
    await statusJson(),
    { mode: 'sk-assign', policy: { revision: 1, files: [file] }, http: { threads: 2 } },
    'status: mode, policy, threads',
  )
  t.match(
    (await cli('status')).stdout,
    /^WHAT\s+STATE\nmode\s+sk-assign\n[\s\S]*http requests\s+allowed \d+, denied \d+/,
    'and as a table',
  )
  const eps = JSON.parse((await cli('endpoint', 'list', '-o', 'json')).stdout) as Array<{
    host: string
    identity: number
    enforce: { ingress: boolean }
  }>
  t.match(
    eps.find((e) => e.host === 'deathstar'),
    { enforce: { ingress: true }, rules: ['CiliumNetworkPolicy/default/deathstar-l7'] },
    'endpoint list: the deathstar enforces ingress',
  )
  const ids = JSON.parse((await cli('identity', 'list', '-o', 'json')).stdout) as Array<{
    id: number
    labels: string[]
  }>
  t.ok(
    ids.some(
      (i) => i.id === eps.find((e) => e.host === 'deathstar')!.identity && i.labels.includes('k8s:class=deathstar'),
    ),
    'identity list: the deathstar identity with its labels',
  )

  const refused = await lab.exec('tiefighter', ['dig', '+time=2', '+tries=1', 'hoth.alliance'])
  t.match(refused.stdout, /status: NXDOMAIN/, 'the config asked denied names to get NXDOMAIN')

  const kernel = JSON.parse((await cli('bpf', 'policy', 'get', '3', '-o', 'json')).stdout) as Array<{
    direction: string
    identity: number
    protocol: number
    port: number
    proxyPort: number
    deny: boolean
  }>
  const tiefighter = eps.find((e) => e.host === 'tiefighter')!.identity
  t.match(
    kernel.find((e) => e.direction === 'ingress' && e.identity === tiefighter),
    { protocol: 6, port: 80, deny: false, proxyPort: 15001 },
    "bpf policy get: the deathstar's map steers the tiefighter's port 80 to the proxy",
  )
  t.match(
    (await cli('bpf', 'policy', 'get', '3')).stdout,
    /^DIRECTION\s+IDENTITY\s+LABELS\s+PROTO\s+PORT\s+VERDICT\ningress\s+\d+\s+k8s:class=tiefighter.*TCP\s+80\s+redirect to 15001/,
    'and as a table',
  )

  // What the DNS proxy learned for toFQDNs.
  await lab.exec('tiefighter', ['dig', '+short', '+time=2', '+tries=1', 'cantina.empire'])
  const learned = JSON.parse((await cli('fqdn', 'cache', 'list', '-o', 'json')).stdout) as Array<{
    name: string
    ips: Array<{ ip: string; expiresAt: number }>
  }>
  t.same(
    learned
      .find((n) => n.name === 'cantina.empire')
      ?.ips.map((i) => i.ip)
      .sort(),
    ['192.0.2.3', '192.0.2.4'],
    'fqdn cache list: cantina.empire and its addresses',
  )
  t.match(
    (await cli('fqdn', 'cache', 'list')).stdout,
    /^NAME\s+IPS\s+SECONDS LEFT\ncantina\.empire\s+192\.0\.2\.\d,192\.0\.2\.\d\s+\d+,\d+/,
    'and as a table',
  )

  const cantinaOpen = async (): Promise<string> => status('GET', 'http://192.0.2.3/')
  t.not(await cantinaOpen(), '000', 'cantina’s address is open while its name is known')
  t.match(
    (await cli('fqdn', 'cache', 'clean')).stdout,
    /^forgot \d+ name\(s\): .*cantina\.empire/,
    'fqdn cache clean forgets the names',
  )
  t.equal(await cantinaOpen(), '000', 'and their addresses leave the maps at once')
  t.same(JSON.parse((await cli('fqdn', 'cache', 'list', '-o', 'json')).stdout), [], 'the cache is empty')

  // Flows: the proxy's decisions and the kernel's drops (the xwing is dropped before any proxy).
  await lab.exec('xwing', ['curl', '-s', '-o', '/dev/null', '--max-time', '1', '-X', 'POST', LANDING])
  type Flow = { protocol: string; verdict: string; path?: string; endpoint?: number }
  const flows = async (...args: string[]): Promise<Flow[]> =>
    (await cli('flows', ...args, '-o', 'json')).stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Flow)
  const denied = (): Promise<Flow[]> => flows('--verdict', 'denied')
  await waitFor('a kernel drop among the flows', async () => (await denied()).some((f) => f.protocol === 'kernel'))
  t.match(
    await denied(),
    [{ protocol: 'http', verdict: 'denied', path: '/v1/exhaust-port' }],
    'flows: the proxy denial, then',
  )
  t.ok(
    (await denied()).some((f) => f.protocol === 'kernel' && f.verdict.startsWith('denied')),
    "the kernel's drop of the xwing",
  )
  const follower = spawn(
    process.execPath,
    [
      distPath('proxy/cli/main.js'),
      'flows',
      '--follow',
      '--count',
      '1',
      '--verdict',
      'allowed',
      '-o',
      'json',
      '--lab',
      lab.name,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let followed = ''
  follower.stdout.on('data', (d: Buffer) => (followed += d.toString()))
  const followerDone = new Promise<number | null>((r) => follower.once('exit', (c) => r(c)))
  t.teardown(() => void follower.kill())
  await waitFor('flows --follow sees a new request', async () => {
    await status('POST', LANDING)
    return follower.exitCode !== null
  })
  t.equal(await followerDone, 0, 'flows --follow --count 1 ends after one event')
  t.match(
    JSON.parse(followed),
    { protocol: 'http', verdict: 'allowed', path: '/v1/request-landing', status: 200 },
    'the allowed landing, as it happened',
  )

  writeFileSync(file, original.replace('path: "/v1/request-landing"', 'path: "/v1/other"'))
  const denyMs = await waitFor('landing denied', async () => (await status('POST', LANDING)) === '403')
  t.pass(`the rule taken out of the file denies the landing (seen after ${denyMs} ms)`)
  const applied = await line('policy applied')
  t.match(
    applied,
    { file, revision: 2, applyMs: Number, sinceFileChangeMs: Number },
    'the change and the time it took are logged',
  )
  t.ok((applied!.sinceFileChangeMs as number) < 2_000, `file change to enforcement: ${applied!.sinceFileChangeMs} ms`)

  writeFileSync(join(dir, 'broken.yaml'), 'spec: [ unclosed\n')
  t.match(
    await line('policy file refused; the previous policy stays in force'),
    { level: 50, file: join(dir, 'broken.yaml'), error: /broken\.yaml:\d+:\d+/ },
    'refused with where and why',
  )
  t.equal(await status('POST', LANDING), '403', 'and nothing changed')

  writeFileSync(file, original)
  await waitFor('landing allowed again', async () => (await status('POST', LANDING)) === '200')
  t.pass('the rule put back allows it again, on the same agent')

  unlinkSync(file)
  await waitFor(
    'exhaust port reached directly',
    async () => (await status('PUT', 'http://198.18.2.10/v1/exhaust-port')) === '503',
  )
  t.pass('with the file removed no rule guards the exhaust port: the server itself answers (503)')
  t.match(await line('policy removed'), { file }, 'the removal is logged')

  // What is in force, and a policy file brought in from elsewhere through the agent.
  type InForce = { revision: number; directory: string; files: Array<{ file: string; text: string }> }
  const policyGet = async (): Promise<InForce> =>
    JSON.parse((await cli('policy', 'get', '-o', 'json')).stdout) as InForce
  t.match(await policyGet(), { directory: dir, files: [] }, 'policy get: nothing in force (broken.yaml was refused)')
  const elsewhere = mkdtempSync(join(tmpdir(), 'l7-import-'))
  t.teardown(() => rmSync(elsewhere, { recursive: true, force: true }))
  writeFileSync(
    join(elsewhere, 'bad.yaml'),
    'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nspec: { endpointSelector: 7 }\n',
  )
  const bad = await cli('policy', 'import', join(elsewhere, 'bad.yaml'))
  t.equal(bad.code, 1, 'policy import: an invalid file is refused')
  t.match(bad.stderr, /bad\.yaml:\d+:\d+.*\n.*nothing imported/s, 'with where and why, and nothing imported')
  t.notOk(existsSync(join(dir, 'bad.yaml')), 'and it is not written into the directory')
  writeFileSync(join(elsewhere, 'imported.yaml'), original)
  const imported = await cli('policy', 'import', join(elsewhere, 'imported.yaml'))
  t.equal(imported.code, 0, imported.stderr)
  t.match(
    imported.stdout,
    new RegExp(
      `imported\\.yaml: imported as ${join(dir, 'imported.yaml').replace(/\./g, '\\.')}, \\d+ rule\\(s\\); policy revision \\d+`,
    ),
    'a valid one is written into the directory',
  )
  t.equal(await status('PUT', 'http://198.18.2.10/v1/exhaust-port'), '403', 'and enforced when import returns')
  t.equal(readFileSync(join(dir, 'imported.yaml'), 'utf8'), original, 'the directory holds it as imported')
  t.match(
    await policyGet(),
    { files: [{ file: join(dir, 'imported.yaml'), text: original }] },
    'policy get shows it with its text',
  )
  const revision = (await policyGet()).revision
  t.equal(
    (await cli('policy', 'get')).stdout,
    `# policy revision ${revision}, 1 file(s) from ${dir}\n---\n# ${join(dir, 'imported.yaml')}\n${original}`,
    'and as YAML documents',
  )

  const metrics = (await cli('metrics')).stdout
  const metric = (re: RegExp): number => Number(re.exec(metrics)?.[1] ?? NaN)
  t.ok(
    metric(/^l7proxy_requests_total\{protocol="http",outcome="allowed"\} (\d+)$/m) >= 3,
    'metrics: HTTP requests by outcome, from every thread',
  )
  t.ok(metric(/^l7proxy_requests_total\{protocol="dns",outcome="denied"\} (\d+)$/m) >= 1, 'DNS queries by outcome')
  t.ok(metric(/^l7proxy_kernel_packets_total\{endpoint="1",verdict="to-proxy"\} (\d+)$/m) >= 1, "the kernel's counters")
  t.equal(metric(/^l7proxy_policy_revision (\d+)$/m), revision, 'the policy revision')
  t.equal(
    metric(/^l7proxy_policy_apply_seconds_count (\d+)$/m),
    4,
    'and the four policy changes applied (one imported), timed',
  )
  const known = (JSON.parse((await cli('fqdn', 'cache', 'list', '-o', 'json')).stdout) as unknown[]).length
  t.equal(metric(/^l7proxy_fqdn_names (\d+)$/m), known, 'learned names, as many as the cache lists')

  // Prometheus scrapes a TCP port in the namespace the agent was started in (here any free one).
  const url = (await line('metrics served')).url as string
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/, 'the metrics port is logged')
  const scraped = await execCommand(['curl', '-s', '--max-time', '5', '-D', '-', url], { timeoutMs: 10_000 })
  const [head, body] = scraped.stdout.split('\r\n\r\n') as [string, string]
  t.match(
    head,
    /^HTTP\/1\.1 200 OK\r\n[\s\S]*content-type: text\/plain; version=0\.0\.4; charset=utf-8/i,
    'curl gets 200 and Prometheus text',
  )
  const notProm = body.split('\n').filter((l) => l !== '' && !PROMETHEUS_LINE.test(l))
  t.same(notProm, [], 'every line is a HELP, a TYPE or a sample')
  for (const name of [
    'l7proxy_requests_total',
    'l7proxy_kernel_packets_total',
    'l7proxy_kernel_bytes_total',
    'l7proxy_http_connections',
    'l7proxy_fqdn_names',
    'l7proxy_policy_revision',
    'l7proxy_policy_apply_seconds',
    'l7proxy_request_duration_seconds',
    'l7proxy_dns_enforce_seconds',
  ]) {
    t.match(body, new RegExp(`^# TYPE ${name} \\w+$`, 'm'), `${name} is there`)
  }
  t.match(
    body,
    /^l7proxy_requests_total\{protocol="http",outcome="allowed"\} [1-9]\d*$/m,
    'with the same counts as over the admin socket',
  )
  t.match(
    body,
    /^l7proxy_request_duration_seconds_count\{protocol="http"\} [1-9]\d*$/m,
    'request durations from the proxy threads',
  )
  t.match(body, /^l7proxy_dns_enforce_seconds_count [1-9]\d*$/m, 'and answer-to-maps times from the DNS proxy')

  // -o json, field by field as docs/cli-json.md documents it.
  const docs = documentedJson()
  t.same(
    [...docs.keys()].sort(),
    ['bpf policy get ENDPOINT', 'endpoint list', 'flows', 'fqdn cache list', 'identity list', 'policy get', 'status'],
    'docs/cli-json.md documents every query',
  )
  for (const [cmd, [example]] of docs) {
    if (cmd === 'flows') continue
    const actual = JSON.parse((await cli(...cmd.replace('ENDPOINT', '3').split(' '), '-o', 'json')).stdout) as unknown
    t.same(undocumentedFields(example, actual), [], `${cmd} -o json: every documented field, with its type`)
  }
  const events = await flows('--last', '1000')
  for (const example of docs.get('flows')!) {
    const protocol = (example as { protocol: string }).protocol
    const these = events.filter((e) => e.protocol === protocol && !(protocol === 'http' && e.verdict === 'invalid'))
    t.ok(these.length > 0, `flows: ${these.length} ${protocol} events to check`)
    t.same(
      these.flatMap((e) => undocumentedFields(example, e)),
      [],
      `flows -o json (${protocol}): every documented field, with its type`,
    )
  }

  // SIGHUP: the configuration is read again; a bad one is refused, a changed one applied.
  const hoth = async (): Promise<string> =>
    /status: (\w+)/.exec((await lab.exec('tiefighter', ['dig', '+time=1', '+tries=1', 'hoth.alliance'])).stdout)?.[1] ??
    'no answer'
  const conf = readFileSync(config, 'utf8')
  writeFileSync(config, conf.replace('rejectCode: NXDOMAIN', 'rejectCode: SERVFAIL'))
  agent.kill('SIGHUP')
  await waitFor('the bad configuration refused', () =>
    running.out().includes('SIGHUP: configuration refused, the running one stays'),
  )
  t.match(
    running.out(),
    /SIGHUP: configuration refused, the running one stays:\n.*agent\.conf:\d+:\d+: dns\.rejectCode: unknown reject code 'SERVFAIL'/,
    'SIGHUP with a bad file: refused with where and why',
  )
  t.equal(await hoth(), 'NXDOMAIN', 'and the agent goes on as configured')
  writeFileSync(config, conf.replace('rejectCode: NXDOMAIN', 'rejectCode: REFUSED'))
  agent.kill('SIGHUP')
  await waitFor('a new agent taking over', () => running.out().includes('SIGHUP: dns changed; a new agent takes over'))
  await waitFor('the new agent process ready', () => running.out().split('READY\n').length === 3)
  await waitFor('denied names answered REFUSED', async () => (await hoth()) === 'REFUSED')
  t.pass('SIGHUP with a changed file: the agent process restarts with it (denied names now REFUSED)')
  t.equal(await status('POST', LANDING), '200', 'with the same policy in force')
  t.equal(await status('PUT', 'http://198.18.2.10/v1/exhaust-port'), '403')

  agent.kill('SIGTERM')
  t.equal(await exited, 0, 'SIGTERM stops the agent cleanly')
  t.ok(
    lines().some((l) => l.msg === 'datapath stopped'),
    'after removing its datapath',
  )
  t.notOk(existsSync(pin), 'and its pinned maps')
  const gone = await cli('status')
  t.equal(gone.code, 1, 'afterwards status fails')
  t.match(gone.stderr, /no agent is running on lab/, 'and says why')
})
