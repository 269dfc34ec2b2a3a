// The local CA: made with a private key file, loaded only when the key is private and belongs to
// the certificate, leaves that chain to it for the names asked; the CLI prints no key.

import { X509Certificate } from 'node:crypto'
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { CertError, initCa, issueLeaf, loadCa } from '../certs/local-ca.js'
import { runCli } from './fixtures/cli.js'

function scratch(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'l7-certs-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('init writes a CA whose key only its owner can read, and refuses to overwrite it', async (t) => {
  const dir = join(scratch(t), 'ca')
  const ca = await initCa(dir)
  t.equal(statSync(dir).mode & 0o777, 0o700, 'directory 0700')
  t.equal(statSync(join(dir, 'ca.key')).mode & 0o777, 0o600, 'key 0600')
  const cert = new X509Certificate(readFileSync(join(dir, 'ca.crt')))
  t.ok(cert.ca, 'a CA certificate')
  t.ok(cert.checkIssued(cert), 'self-signed')
  t.equal(cert.fingerprint256, new X509Certificate(ca.certPem).fingerprint256)
  await t.rejects(initCa(dir), { code: 'ECAEXISTS' })
})

t.test('leaves chain to the CA, name the server, and are short-lived', async (t) => {
  const dir = scratch(t)
  await initCa(dir)
  const ca = await loadCa(dir)
  const caCert = new X509Certificate(ca.certPem)
  for (const name of ['api.empire', '*.deathstar.empire', '198.18.2.10']) {
    const leaf = await issueLeaf(ca, name, 2)
    const c = new X509Certificate(leaf.certPem)
    t.ok(c.verify(caCert.publicKey), `${name}: signed by the CA`)
    t.ok(c.checkIssued(caCert), `${name}: issued by it`)
    t.notOk(c.ca, `${name}: not a CA`)
    t.ok(
      name.includes('*')
        ? c.checkHost('gunner.deathstar.empire')
        : name.startsWith('198')
          ? c.checkIP(name)
          : c.checkHost(name),
      `${name}: names the server`,
    )
    t.ok(leaf.notAfter.getTime() - Date.now() <= 2 * 86_400_000 + 1000, `${name}: valid 2 days`)
    t.match(leaf.keyPem, /^-----BEGIN PRIVATE KEY-----\n/)
  }
  for (const bad of ['', 'a b', 'api..empire', '-x.empire', '300.1.1.1', 'x'.repeat(254)]) {
    await t.rejects(issueLeaf(ca, bad), { code: 'ENAME' }, `'${bad.slice(0, 20)}' refused`)
  }
})

t.test('load refuses a key others can read, a key of another CA, and a missing CA', async (t) => {
  const a = scratch(t)
  const b = join(scratch(t), 'b')
  await initCa(a)
  await initCa(b)
  chmodSync(join(a, 'ca.key'), 0o644)
  await t.rejects(loadCa(a), { code: 'EKEYMODE', message: /readable by others \(mode 644\)/ })
  chmodSync(join(a, 'ca.key'), 0o600)
  copyFileSync(join(b, 'ca.key'), join(a, 'ca.key'))
  await t.rejects(loadCa(a), { code: 'ECAINVALID', message: /does not belong/ })
  const missing = await loadCa(join(a, 'none')).catch((e: unknown) => e)
  t.ok(missing instanceof CertError && missing.code === 'ECAMISSING', 'no CA there: ECAMISSING')
})

t.test('l7proxy certs init | issue | show print certificates, never keys', async (t) => {
  const dir = scratch(t)
  const ca = join(dir, 'ca')
  const init = runCli(['certs', 'init', '--dir', ca])
  t.equal(init.code, 0, init.stderr)
  t.match(init.stdout, /created a CA in .*\n {2}subject {6}CN=l7proxy local CA/)
  const issue = runCli(['certs', 'issue', 'api.empire', '--dir', ca, '--out', dir, '--days', '3'])
  t.equal(issue.code, 0, issue.stderr)
  t.equal(statSync(join(dir, 'api.empire.key')).mode & 0o777, 0o600, 'the issued key is 0600')
  t.match(issue.stdout, /names {8}DNS:api.empire/)
  const show = runCli(['certs', 'show', '--dir', ca])
  t.match(show.stdout, /sha256 {7}([0-9A-F]{2}:){31}[0-9A-F]{2}/)
  t.notMatch(init.stdout + issue.stdout + show.stdout, /PRIVATE KEY|BEGIN/, 'no key (nor any PEM) on the terminal')
  const again = runCli(['certs', 'init', '--dir', ca])
  t.equal(again.code, 1, 'init over an existing CA: exit 1')
  t.match(again.stderr, /a CA already exists .* \[ECAEXISTS\]/)
  t.equal(runCli(['certs', 'issue', 'bad name', '--dir', ca, '--out', dir]).code, 1)
  t.equal(runCli(['certs', 'frob']).code, 2)
  t.equal(runCli(['certs', 'init', '--days', 'x', '--dir', join(dir, 'other')]).code, 2)
  t.equal(runCli(['certs', 'show', join(dir, 'api.empire.key')]).code, 2, 'a key is not shown as a certificate')
})
