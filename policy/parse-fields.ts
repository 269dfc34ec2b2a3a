// Readers for the fields policy documents share: label selectors, CIDRs, ports, HTTP and DNS
// rules. Each validates as it reads (regexes and DNS patterns are compiled here, so a bad one is
// reported at its line) and returns null after reporting a problem.

import { formatPrefix, parsePrefix, prefixContains } from './cidr.js'
import { compileMatchName, compileMatchPattern, compileServerName } from './dns-pattern.js'
import { PROXY_OWNED_FIELDS } from './http-fields.js'
import { compileHttpRule } from './http-matcher.js'
import { ANY_SOURCE, splitSource } from './labels.js'
import {
  type DnsRuleSpec,
  ENTITIES,
  type Entity,
  type HeaderMatchSpec,
  type HttpRuleSpec,
  type LabelOperator,
  type LabelRequirement,
  type PortSpec,
  type Protocol,
  type SelectorSpec,
  type TlsInterceptSpec,
  type TlsRuleSpec,
} from './model.js'
import type { YNode } from './yaml-reader.js'

const OPERATORS: readonly LabelOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist']

/** matchLabels + matchExpressions. Label keys may carry a source (`k8s:app`). */
export function readLabelSelector(n: YNode): LabelRequirement[] | null {
  if (n.isNull()) return []
  const f = n.fields(['matchLabels', 'matchExpressions'])
  if (!f) return null
  const reqs: LabelRequirement[] = []
  let ok = true
  if (f.matchLabels && !f.matchLabels.isNull()) {
    const labels = f.matchLabels.stringMap()
    if (!labels) ok = false
    else for (const [k, v] of labels) reqs.push({ ...splitSource(k, ANY_SOURCE), op: 'In', values: [v] })
  }
  if (f.matchExpressions) {
    for (const e of f.matchExpressions.list() ?? ((ok = false), [])) {
      const ef = e.fields(['key', 'operator', 'values'], ['key', 'operator'])
      if (!ef) {
        ok = false
        continue
      }
      const key = ef.key?.string()
      const op = ef.operator?.string()
      if (key == null || op == null) {
        ok = false
        continue
      }
      if (!OPERATORS.includes(op as LabelOperator)) {
        ef.operator!.fail(`unknown operator '${op}'; expected one of: ${OPERATORS.join(', ')}`)
        ok = false
        continue
      }
      const values = ef.values ? (ef.values.list() ?? []).map((v) => v.scalarString()) : []
      if (values.includes(null)) {
        ok = false
        continue
      }
      if ((op === 'In' || op === 'NotIn') && values.length === 0) {
        e.fail(`operator ${op} needs a non-empty 'values' list`)
        ok = false
        continue
      }
      if ((op === 'Exists' || op === 'DoesNotExist') && values.length > 0) {
        ef.values!.fail(`operator ${op} takes no values`)
        ok = false
        continue
      }
      reqs.push({ ...splitSource(key, ANY_SOURCE), op: op as LabelOperator, values: values as string[] })
    }
  }
  return ok ? reqs : null
}

/** A CIDR string, canonicalized (host bits cleared). */
export function readCidr(n: YNode): string | null {
  const s = n.string()
  if (s === null) return null
  const p = parsePrefix(s)
  if (typeof p === 'string') return n.fail(p)
  return formatPrefix(p)
}

export function readCidrList(n: YNode): SelectorSpec[] | null {
  const out: SelectorSpec[] = []
  for (const item of n.list() ?? []) {
    const cidr = readCidr(item)
    if (cidr === null) return null
    out.push({ kind: 'cidr', cidr, except: [] })
  }
  return out
}

export function readCidrSet(n: YNode): SelectorSpec[] | null {
  const out: SelectorSpec[] = []
  let ok = true
  for (const item of n.list() ?? []) {
    const f = item.fields(['cidr', 'except', 'cidrGroupRef'], [])
    if (!f) {
      ok = false
      continue
    }
    if (f.cidrGroupRef) {
      f.cidrGroupRef.fail('cidrGroupRef is not supported by l7proxy; list the CIDRs')
      ok = false
      continue
    }
    if (!f.cidr) {
      item.fail("missing required field 'cidr'")
      ok = false
      continue
    }
    const cidr = readCidr(f.cidr)
    const except = f.except ? (f.except.list() ?? []).map(readCidr) : []
    if (cidr === null || except.includes(null)) {
      ok = false
      continue
    }
    const outer = parsePrefix(cidr)
    for (const [i, e] of except.entries()) {
      const inner = parsePrefix(e!)
      if (typeof outer !== 'string' && typeof inner !== 'string' && !prefixContains(outer, inner)) {
        f.except!.list()![i]!.fail(`except '${e}' is not inside cidr '${cidr}'`)
        ok = false
      }
    }
    out.push({ kind: 'cidr', cidr, except: except as string[] })
  }
  return ok ? out : null
}

export function readEntities(n: YNode): SelectorSpec[] | null {
  const out: SelectorSpec[] = []
  for (const item of n.list() ?? []) {
    const e = item.string()
    if (e === null) return null
    if (!ENTITIES.includes(e as Entity))
      return item.fail(`unknown entity '${e}'; expected one of: ${ENTITIES.join(', ')}`)
    out.push({ kind: 'entity', entity: e as Entity })
  }
  return out
}

export function readFqdnSelectors(n: YNode): SelectorSpec[] | null {
  const out: SelectorSpec[] = []
  for (const item of n.list() ?? []) {
    const r = readDnsRule(item, 'toFQDNs entry')
    if (!r) return null
    out.push({ kind: 'fqdn', ...r })
  }
  return out
}

/** One of matchName or matchPattern, validated. */
export function readDnsRule(n: YNode, what: string): DnsRuleSpec | null {
  const f = n.fields(['matchName', 'matchPattern'])
  if (!f) return null
  if (!f.matchName === !f.matchPattern) return n.fail(`a ${what} needs exactly one of matchName or matchPattern`)
  const key = f.matchName ? 'matchName' : 'matchPattern'
  const s = f[key]!.string()
  if (s === null) return null
  try {
    if (key === 'matchName') compileMatchName(s)
    else compileMatchPattern(s)
  } catch (e) {
    return f[key]!.fail((e as Error).message)
  }
  return key === 'matchName' ? { matchName: s } : { matchPattern: s }
}

const PROTOCOLS: Record<string, readonly Protocol[]> = { TCP: ['TCP'], UDP: ['UDP'], ANY: ['TCP', 'UDP'] }

/** One `ports` entry: {port, endPort, protocol}; port 0 (or absent) means every port. */
export function readPort(n: YNode, protocolDefault: 'ANY' | 'TCP'): PortSpec | null {
  const f = n.fields(['port', 'endPort', 'protocol'])
  if (!f) return null
  let port = 0
  if (f.port && !f.port.isNull()) {
    const raw = f.port.scalarString()
    if (raw === null) return null
    if (!/^\d+$/.test(raw)) return f.port.fail(`named ports ('${raw}') are not supported; use the port number`)
    const p = f.port.integer(0, 65535)
    if (p === null) return null
    port = p
  }
  let endPort = port === 0 ? 65535 : port
  if (f.endPort && !f.endPort.isNull()) {
    const e = f.endPort.integer(1, 65535)
    if (e === null) return null
    if (port === 0) return f.endPort.fail('endPort needs a non-zero port')
    if (e < port) return f.endPort.fail(`endPort ${e} is below port ${port}`)
    endPort = e
  }
  const proto = f.protocol ? f.protocol.string() : protocolDefault
  if (proto === null) return null
  const protocols = PROTOCOLS[proto]
  if (!protocols)
    return f.protocol!.fail(`unsupported protocol '${proto}'; expected one of: ${Object.keys(PROTOCOLS).join(', ')}`)
  return { port, endPort, protocols }
}

function readHeaderLine(n: YNode): HeaderMatchSpec | null {
  const s = n.string()
  if (s === null) return null
  const i = s.indexOf(':')
  const name = (i < 0 ? s : s.slice(0, i)).trim()
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) return n.fail(`'${s}' is not 'Header-Name' or 'Header-Name: value'`)
  return i < 0 ? { name } : { name, value: s.slice(i + 1).trim() }
}

const MISMATCH = ['LOG', 'ADD', 'DELETE', 'REPLACE'] as const

function readHeaderMatch(n: YNode): HeaderMatchSpec | null {
  const f = n.fields(['name', 'value', 'mismatch', 'secret'], ['name'])
  if (!f) return null
  if (f.secret) return f.secret.fail('secret header values are not supported by l7proxy')
  const name = f.name?.string()
  if (name == null) return null
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) return f.name!.fail(`'${name}' is not a valid header name`)
  const value = f.value ? f.value.scalarString() : undefined
  if (value === null) return null
  // The proxy writes ADD/REPLACE values onto the wire as they are.
  if (value !== undefined && /[\r\n\0]/.test(value))
    return f.value!.fail('a header value must not contain CR, LF or NUL')
  let mismatch: HeaderMatchSpec['mismatch']
  if (f.mismatch) {
    const m = f.mismatch.string()
    if (m === null) return null
    if (!MISMATCH.includes(m as (typeof MISMATCH)[number]))
      return f.mismatch.fail(`unknown mismatch action '${m}'; expected one of: ${MISMATCH.join(', ')}`)
    mismatch = m as HeaderMatchSpec['mismatch']
    if (mismatch !== 'DELETE' && mismatch !== 'LOG' && value === undefined)
      return n.fail(`mismatch ${m} needs a 'value' to set`)
    if (mismatch !== 'LOG' && PROXY_OWNED_FIELDS.has(name.toLowerCase().replaceAll('_', '-'))) {
      return f.mismatch.fail(
        `mismatch ${m} cannot change '${name}': the proxy writes framing, Host and hop-by-hop fields itself`,
      )
    }
  }
  const out: HeaderMatchSpec = { name }
  if (value !== undefined) out.value = value
  if (mismatch) out.mismatch = mismatch
  return out
}

export function readHttpRule(n: YNode): HttpRuleSpec | null {
  const f = n.fields(['method', 'path', 'host', 'headers', 'headerMatches'])
  if (!f) return null
  const spec: HttpRuleSpec = { headers: [], headerMatches: [] }
  for (const key of ['method', 'path', 'host'] as const) {
    if (!f[key]) continue
    const s = f[key]!.string()
    if (s === null) return null
    try {
      compileHttpRule({ [key]: s, headers: [], headerMatches: [] })
    } catch (e) {
      return f[key]!.fail((e as Error).message)
    }
    spec[key] = s
  }
  if (f.headers) {
    const hs = (f.headers.list() ?? []).map(readHeaderLine)
    if (hs.includes(null)) return null
    spec.headers = hs as HeaderMatchSpec[]
  }
  if (f.headerMatches) {
    const hs = (f.headerMatches.list() ?? []).map(readHeaderMatch)
    if (hs.includes(null)) return null
    spec.headerMatches = hs as HeaderMatchSpec[]
  }
  return spec
}

const PROTO_IDENT = '[A-Za-z_][A-Za-z0-9_]*'
const GRPC_SERVICE = new RegExp(`^${PROTO_IDENT}(\\.${PROTO_IDENT})*$`)
const GRPC_METHOD = new RegExp(`^${PROTO_IDENT}$`)

/**
 * l7proxy's `grpc: [{service, method}]`: a call is a POST to /<package.Service>/<Method>, so a
 * rule is the HTTP rule Cilium users write by hand for it. Without `method`, every method of the
 * service. Names are literal (protobuf full names), not patterns.
 */
export function readGrpcRule(n: YNode): HttpRuleSpec | null {
  const f = n.fields(['service', 'method'], ['service'])
  if (!f?.service) return null
  const service = f.service.string()
  if (service === null) return null
  if (!GRPC_SERVICE.test(service)) return f.service.fail(`'${service}' is not a gRPC service name (package.Service)`)
  let method = '[^/]+'
  if (f.method) {
    const m = f.method.string()
    if (m === null) return null
    if (!GRPC_METHOD.test(m)) return f.method.fail(`'${m}' is not a gRPC method name`)
    method = m
  }
  return { method: 'POST', path: `/${service.replaceAll('.', '\\.')}/${method}`, headers: [], headerMatches: [] }
}

/**
 * A port rule's `serverNames`: only TLS connections whose ClientHello names one of them pass
 * (Cilium's meaning). Names compare case-insensitively; patterns as cilium-envoy reads them
 * (dns-pattern.ts: `*.empire`, `**.empire`, `*` for any name).
 */
export function readServerNames(n: YNode): { kind: 'tls'; rules: TlsRuleSpec[] } | null {
  const items = n.list()
  if (!items) return null
  if (items.length === 0) return n.fail('expected at least one server name')
  const rules: TlsRuleSpec[] = []
  for (const item of items) {
    const name = item.string()
    if (name === null) return null
    try {
      compileServerName(name)
    } catch (e) {
      return item.fail((e as Error).message)
    }
    rules.push({ serverName: name })
  }
  return { kind: 'tls', rules }
}

/**
 * terminatingTLS and originatingTLS (Cilium's TLSContext): l7proxy terminates with certificates
 * minted by its local CA, so terminatingTLS is `{}`; originatingTLS may name `trustedCA`, a PEM
 * bundle file to verify servers with (default: the system's trust store). Both are needed:
 * intercepted traffic always leaves encrypted. Secret references are refused (no Kubernetes).
 */
export function readInterception(
  terminating: YNode | undefined,
  originating: YNode | undefined,
  rules: YNode | undefined,
): TlsInterceptSpec | null {
  if (!terminating)
    return originating!.fail('originatingTLS without terminatingTLS: the proxy can only re-encrypt what it decrypted')
  if (!originating)
    return terminating.fail(
      'terminatingTLS needs originatingTLS too (use originatingTLS: {} to verify servers with the system trust store)',
    )
  if (!rules) return terminating.fail('TLS interception needs http rules on the port (rules: { http: [...] })')
  const t = terminating.fields(['secret', 'certificate', 'privateKey', 'trustedCA'])
  if (!t) return null
  for (const k of ['secret', 'certificate', 'privateKey', 'trustedCA'] as const) {
    if (t[k])
      return t[k]!.fail(
        `${k} is not supported in terminatingTLS: l7proxy mints the certificates from its local CA ('l7proxy certs init'); write terminatingTLS: {}`,
      )
  }
  const o = originating.fields(['secret', 'certificate', 'privateKey', 'trustedCA'])
  if (!o) return null
  for (const k of ['secret', 'certificate', 'privateKey'] as const) {
    if (o[k])
      return o[k]!.fail(
        `${k} is not supported in originatingTLS (client certificates are not presented); only trustedCA`,
      )
  }
  if (!o.trustedCA) return { trustedCA: null }
  const path = o.trustedCA.string()
  if (path === null) return null
  if (!path.startsWith('/'))
    return o.trustedCA.fail(`trustedCA must be an absolute path to a PEM bundle, not '${path}'`)
  return { trustedCA: path }
}
