// TLS in the lab, steered by the kernel (sk-assign, and sk-lookup): HTTPS servers in the deathstar's namespace,
// real curl from the tiefighter. serverNames without interception on 9443; interception with
// the lab CA trusted by the client on 443 (HTTP/1.1 and HTTP/2) and on 8443, whose server has a
// certificate the proxy's trustedCA does not vouch for.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { initCa } from '../certs/local-ca.js'
import { execCommand, isAlive, spawnDetachedIn, waitListening } from '../lab/netns.js'
import { startLabNode } from '../lab/node-agent.js'
import { distPath } from '../lib/project-root.js'
import { kernelTest } from './fixtures/kernel.js'
import { type LabHandle, useLab } from './fixtures/lab.js'
import { cnp } from './fixtures/policy-text.js'

const DEATHSTAR = '198.18.2.10'

/** An HTTPS lab server in the deathstar's namespace with leaves from `caDir`, stopped at the end. */
async function httpsServer(t: Test, lab: LabHandle, port: number, caDir: string, log: string): Promise<void> {
  const ns = lab.netns('deathstar')
  const pid = await spawnDetachedIn(
    ns,
    [
      process.execPath,
      distPath('lab/servers/run.js'),
      'https',
      '--name',
      'deathstar',
      '--port',
      String(port),
      '--ca-dir',
      caDir,
    ],
    log,
  )
  t.teardown(() => {
    if (isAlive(pid)) process.kill(pid, 'SIGKILL')
  })
  await waitListening({ ns, port, proto: 'tcp', pid, logFile: log, what: `https server on ${port}` })
}

for (const mode of ['sk-assign', 'sk-lookup'] as const) {
  kernelTest(
    t,
    `tls in the lab (${mode}): SNI allow and deny without interception; intercepted GET, PUT, HTTP/2, untrusted upstream`,
    async (t) => {
      const dir = mkdtempSync(join(tmpdir(), 'l7-tls-'))
      t.teardown(() => rmSync(dir, { recursive: true, force: true }))
      const proxyCa = join(dir, 'proxy-ca')
      const serverCa = join(dir, 'server-ca')
      const strangerCa = join(dir, 'stranger-ca')
      await initCa(proxyCa, { commonName: 'lab proxy CA' })
      const server = await initCa(serverCa, { commonName: 'lab server CA' })
      await initCa(strangerCa, { commonName: 'stranger CA' })
      const bundle = join(dir, 'server-ca.pem')
      writeFileSync(bundle, server.certPem)
      const intercept = (port: number) => `    - ports: [ { port: "${port}", protocol: TCP } ]
      terminatingTLS: {}
      originatingTLS: { trustedCA: ${bundle} }
      rules: { http: [ { method: GET, path: "/v1/.*" } ] }`
      const policyFile = join(dir, 'tls.yaml')
      writeFileSync(
        policyFile,
        cnp(
          'deathstar-tls',
          '{ class: deathstar }',
          `  ingress:
  - fromEndpoints: [ { matchLabels: { org: empire } } ]
    toPorts:
    - ports: [ { port: "9443", protocol: TCP } ]
      serverNames: [ deathstar.empire ]
${intercept(443)}
${intercept(8443)}
`,
        ),
      )
      const lab = await useLab(t)
      await httpsServer(t, lab, 9443, serverCa, join(dir, 'https-9443.log'))
      await httpsServer(t, lab, 443, serverCa, join(dir, 'https-443.log'))
      await httpsServer(t, lab, 8443, strangerCa, join(dir, 'https-8443.log'))
      const pin = `/run/l7proxy/test-bpffs-${lab.name}`
      const node = await startLabNode({ lab: lab.name, mode, policyFile, pin, caDir: proxyCa })
      t.teardown(() => node.stop())
      const curl = (name: string, port: number, ca: string, args: string[]) =>
        execCommand(
          [
            'ip',
            'netns',
            'exec',
            lab.netns('tiefighter'),
            'curl',
            '-sS',
            '--max-time',
            '5',
            '--cacert',
            join(ca, 'ca.crt'),
            '--resolve',
            `${name}:${port}:${DEATHSTAR}`,
            ...args,
            `https://${name}:${port}/v1/`,
          ],
          { timeoutMs: 20_000 },
        )

      const sniOk = await curl('deathstar.empire', 9443, serverCa, ['-o', '/dev/null', '-w', '%{http_code}'])
      t.equal(sniOk.stdout, '200', `serverNames: an allowed name reaches the server's own TLS (${sniOk.stderr})`)
      const sniDenied = await curl('hoth.alliance', 9443, serverCa, ['-o', '/dev/null'])
      t.not(sniDenied.code, 0, 'another name is refused')
      t.match(sniDenied.stderr, /alert access denied/i, `with a TLS alert (${sniDenied.stderr.trim()})`)

      const get = await curl('api.empire', 443, proxyCa, [
        '-o',
        '/dev/null',
        '-w',
        '%{http_code} %{http_version}',
        '--http1.1',
      ])
      t.equal(get.stdout, '200 1.1', `intercepted: GET allowed, the client trusting the lab proxy CA (${get.stderr})`)
      const put = await curl('api.empire', 443, proxyCa, ['-X', 'PUT', '-w', ' %{http_code}', '--http1.1'])
      t.equal(put.stdout, 'Access denied\n 403', 'a denied PUT gets 403 over TLS')
      const h2 = await curl('api.empire', 443, proxyCa, [
        '-o',
        '/dev/null',
        '-w',
        '%{http_code} %{http_version}',
        '--http2',
      ])
      t.equal(h2.stdout, '200 2', `HTTP/2 over TLS works through the proxy (${h2.stderr})`)
      const untrusted = await curl('api.empire', 8443, proxyCa, ['-w', ' %{http_code}'])
      t.equal(
        untrusted.stdout,
        'Upstream unavailable\n 502',
        'an upstream whose certificate the trustedCA does not vouch for: 502',
      )

      t.equal(await node.stop(), 0)
      const lines = node.lines()
      t.match(
        lines.find((l) => l.msg === 'tls allowed'),
        { serverName: 'deathstar.empire', rules: ['CiliumNetworkPolicy/default/deathstar-tls'] },
      )
      t.match(
        lines.find((l) => l.msg === 'tls denied'),
        { serverName: 'hoth.alliance', reason: /no serverNames entry matched/ },
      )
      t.match(
        lines.find((l) => l.msg === 'http denied'),
        { method: 'PUT', host: 'api.empire', status: 403 },
      )
      t.match(
        lines.find((l) => l.msg === 'http: upstream failed (502)'),
        { origin: `${DEATHSTAR}:8443`, error: /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY/ },
      )
    },
  )
}
