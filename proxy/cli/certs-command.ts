// `l7proxy certs init|issue|show`: the local CA the proxy mints intercepted servers' certificates
// from. Prints subjects, fingerprints and dates; never a key.

import { X509Certificate } from 'node:crypto'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import {
  CA_CERT_FILE,
  type CertSummary,
  DEFAULT_CA_DIR,
  initCa,
  issueLeaf,
  loadCa,
  summarize,
} from '../../certs/local-ca.js'
import { UsageError } from './usage-error.js'

export const CERTS_USAGE = `  certs init [--dir DIR] [--days N]
                            create the local CA (DIR/ca.crt, DIR/ca.key mode 0600; default ${DEFAULT_CA_DIR})
  certs issue NAME [--dir DIR] [--out DIR] [--days N]
                            issue a leaf for NAME from the CA (for testing): NAME.crt and NAME.key in --out
  certs show [--dir DIR] [FILE]
                            subject, fingerprint and expiry of the CA (or of a certificate FILE)`

function describe(what: string, s: CertSummary): string {
  return [
    `${what}:`,
    `  subject      ${s.subject}`,
    `  issuer       ${s.issuer}`,
    ...(s.subjectAltName ? [`  names        ${s.subjectAltName}`] : []),
    `  serial       ${s.serialNumber}`,
    `  sha256       ${s.fingerprint256}`,
    `  valid        ${s.notBefore} to ${s.notAfter}`,
    `  CA           ${s.isCa ? 'yes' : 'no'}`,
    '',
  ].join('\n')
}

function days(raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback
  if (!/^\d{1,5}$/.test(raw) || Number(raw) < 1)
    throw new UsageError(`--days must be a whole number of days from 1 to 99999, not '${raw}'`)
  return Number(raw)
}

export async function certsCommand(args: string[], out: (s: string) => void): Promise<number> {
  const [sub, ...rest] = args
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { dir: { type: 'string' }, out: { type: 'string' }, days: { type: 'string' } },
  })
  const dir = resolve(values.dir ?? DEFAULT_CA_DIR)
  switch (sub) {
    case 'init': {
      if (positionals.length > 0 || values.out) throw new UsageError('certs init takes only --dir and --days')
      const ca = await initCa(dir, { days: days(values.days, 3650) })
      out(describe(`created a CA in ${dir}`, summarize(ca.certPem)))
      out(`clients that should trust intercepted connections trust ${join(dir, CA_CERT_FILE)}\n`)
      return 0
    }
    case 'issue': {
      if (positionals.length !== 1) throw new UsageError('certs issue needs one NAME')
      const name = positionals[0]!
      const leaf = await issueLeaf(await loadCa(dir), name, days(values.days, 7))
      const outDir = resolve(values.out ?? '.')
      const base = join(outDir, name.replace(/^\*\./, 'wildcard.'))
      writeFileSync(`${base}.key`, leaf.keyPem, { mode: 0o600, flag: 'w' })
      chmodSync(`${base}.key`, 0o600)
      writeFileSync(`${base}.crt`, leaf.certPem)
      out(describe(`issued ${base}.crt (key in ${base}.key, mode 0600)`, summarize(leaf.certPem)))
      return 0
    }
    case 'show': {
      if (positionals.length > 1 || values.out || values.days)
        throw new UsageError('certs show takes --dir or one certificate FILE')
      const file = positionals[0] ?? join(dir, CA_CERT_FILE)
      let text: string
      try {
        text = readFileSync(file, 'utf8')
        new X509Certificate(text)
      } catch (e) {
        throw new UsageError(
          `${file}: not a readable PEM certificate (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
        )
      }
      out(describe(file, summarize(text)))
      return 0
    }
    case undefined:
      throw new UsageError("'certs' needs a subcommand: init, issue or show")
    default:
      throw new UsageError(`unknown certs subcommand '${sub}' (expected init, issue or show)`)
  }
}
