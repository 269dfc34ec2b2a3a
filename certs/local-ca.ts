// The local certificate authority: created once (`l7proxy certs init`), loaded by the proxy to mint
// leaf certificates for the server names it intercepts, and by `certs issue` / `certs show`.
// ECDSA P-256 keys through WebCrypto, certificates built with @peculiar/x509 (no hand-written
// ASN.1). The CA key is written 0600 in a 0700 directory and never logged or printed.

import 'reflect-metadata' // @peculiar/x509's dependency injection needs it loaded first
import { createPrivateKey, randomBytes, webcrypto, X509Certificate } from 'node:crypto'
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import * as x509 from '@peculiar/x509'
import { L7ProxyError } from '../lib/l7proxy-error.js'

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
const DAY_MS = 86_400_000
/** Where the agent and `l7proxy certs` keep the CA unless told otherwise. */
export const DEFAULT_CA_DIR = '/var/lib/l7proxy/ca'
export const CA_CERT_FILE = 'ca.crt'
export const CA_KEY_FILE = 'ca.key'

export class CertError extends L7ProxyError {
  declare readonly code: 'ECAEXISTS' | 'ECAMISSING' | 'ECAINVALID' | 'EKEYMODE' | 'ENAME'
  constructor(message: string, code: 'ECAEXISTS' | 'ECAMISSING' | 'ECAINVALID' | 'EKEYMODE' | 'ENAME') {
    super(code, message)
  }
}

export interface LocalCa {
  cert: x509.X509Certificate
  certPem: string
  key: CryptoKey
}

export interface IssuedLeaf {
  certPem: string
  /** PKCS#8, PEM. */
  keyPem: string
  notAfter: Date
}

export interface CertSummary {
  subject: string
  issuer: string
  serialNumber: string
  fingerprint256: string
  notBefore: string
  notAfter: string
  subjectAltName: string | null
  isCa: boolean
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64')
  return `-----BEGIN ${label}-----\n${b64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`
}

function serial(): string {
  const b = randomBytes(16)
  b[0]! &= 0x7f // positive
  return b.toString('hex')
}

/** Writes `data` to a new file with `mode` from the start (no window with looser permissions). */
function writeNew(path: string, data: string, mode: number): void {
  const fd = openSync(path, 'wx', mode)
  try {
    writeSync(fd, data)
  } finally {
    closeSync(fd)
  }
  chmodSync(path, mode) // the umask may have narrowed it; never widened
}

/** Creates the CA in `dir` (made 0700 if missing); refuses to overwrite one. */
export async function initCa(dir: string, opts: { days?: number; commonName?: string } = {}): Promise<LocalCa> {
  const keyPath = join(dir, CA_KEY_FILE)
  const certPath = join(dir, CA_CERT_FILE)
  if (existsSync(keyPath) || existsSync(certPath))
    throw new CertError(
      `a CA already exists in ${dir}; remove ${CA_KEY_FILE} and ${CA_CERT_FILE} first to make a new one`,
      'ECAEXISTS',
    )
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair
  const now = Date.now()
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${opts.commonName ?? `l7proxy local CA (${hostname()})`}, O=l7proxy`,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + (opts.days ?? 3650) * DAY_MS),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  writeNew(keyPath, pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), 0o600)
  writeNew(certPath, `${cert.toString('pem')}\n`, 0o644)
  return { cert, certPem: `${cert.toString('pem')}\n`, key: keys.privateKey }
}

/** Loads the CA from `dir`: the key must be private to its owner and belong to the certificate. */
export async function loadCa(dir: string): Promise<LocalCa> {
  const keyPath = join(dir, CA_KEY_FILE)
  const certPath = join(dir, CA_CERT_FILE)
  if (!existsSync(keyPath) || !existsSync(certPath))
    throw new CertError(
      `no CA in ${dir} (expected ${CA_CERT_FILE} and ${CA_KEY_FILE}); create one with 'l7proxy certs init --dir ${dir}'`,
      'ECAMISSING',
    )
  const mode = statSync(keyPath).mode & 0o777
  if ((mode & 0o077) !== 0)
    throw new CertError(`${keyPath} is readable by others (mode ${mode.toString(8)}); chmod 600 it`, 'EKEYMODE')
  let cert: x509.X509Certificate
  let key: CryptoKey
  const certPem = readFileSync(certPath, 'utf8')
  try {
    cert = new x509.X509Certificate(certPem)
    const der = createPrivateKey(readFileSync(keyPath)).export({ format: 'der', type: 'pkcs8' })
    key = await webcrypto.subtle.importKey('pkcs8', der, ALG, false, ['sign'])
  } catch (e) {
    throw new CertError(`${dir}: cannot read the CA: ${(e as Error).message}`, 'ECAINVALID')
  }
  // The key signs, the certificate's public key verifies: they are one pair.
  const probe = Buffer.from('l7proxy')
  const sig = await webcrypto.subtle.sign(ALG, key, probe)
  if (!(await webcrypto.subtle.verify(ALG, await cert.publicKey.export(ALG, ['verify']), sig, probe))) {
    throw new CertError(`${dir}: ${CA_KEY_FILE} does not belong to ${CA_CERT_FILE}`, 'ECAINVALID')
  }
  return { cert, certPem, key }
}

const DNS_NAME =
  /^(?=.{1,253}$)(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/i
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/

/** A leaf certificate for `name` (a DNS name or an IPv4 address) signed by `ca`, valid `days`. */
export async function issueLeaf(ca: LocalCa, name: string, days = 7): Promise<IssuedLeaf> {
  const isIp = IPV4.test(name) && name.split('.').every((o) => Number(o) <= 255)
  // An all-numeric name that is not an address (300.1.1.1) is neither.
  if (!isIp && (!DNS_NAME.test(name) || /^[\d.]+$/.test(name)))
    throw new CertError(`'${name}' is not a DNS name or IPv4 address`, 'ENAME')
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair
  const now = Date.now()
  const notAfter = new Date(Math.min(now + days * DAY_MS, ca.cert.notAfter.getTime()))
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${name}`,
    issuer: ca.cert.subject,
    notBefore: new Date(now - 3_600_000),
    notAfter,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: isIp ? 'ip' : 'dns', value: name }]),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  })
  return {
    certPem: `${cert.toString('pem')}\n`,
    keyPem: pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
    notAfter,
  }
}

/** What `certs show` prints about a certificate (never anything about a key). */
export function summarize(certPem: string): CertSummary {
  const c = new X509Certificate(certPem)
  return {
    subject: c.subject.replace(/\n/g, ', '),
    issuer: c.issuer.replace(/\n/g, ', '),
    serialNumber: c.serialNumber,
    fingerprint256: c.fingerprint256,
    notBefore: new Date(c.validFrom).toISOString(),
    notAfter: new Date(c.validTo).toISOString(),
    subjectAltName: c.subjectAltName ?? null,
    isCa: c.ca,
  }
}
