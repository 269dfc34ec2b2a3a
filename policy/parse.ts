// Reads a policy file: YAML with one or more documents (`---`), each a CiliumNetworkPolicy,
// CiliumClusterwideNetworkPolicy or Kubernetes NetworkPolicy. Either every document is valid and
// all their rules come back, or a PolicyError lists every problem with its location.

import { LineCounter, parseAllDocuments } from 'yaml'
import { PolicyError, type PolicyIssue } from './errors.js'
import type { RuleSpec } from './model.js'
import { type DocumentHeader, readCiliumRules } from './parse-cilium.js'
import { readK8sRules } from './parse-k8s.js'
import { ReadContext, YNode } from './yaml-reader.js'

export const MAX_POLICY_FILE_BYTES = 8 * 1024 * 1024

const KINDS: Record<string, { apiVersion: string; read: typeof readCiliumRules }> = {
  CiliumNetworkPolicy: { apiVersion: 'cilium.io/v2', read: readCiliumRules },
  CiliumClusterwideNetworkPolicy: { apiVersion: 'cilium.io/v2', read: readCiliumRules },
  NetworkPolicy: { apiVersion: 'networking.k8s.io/v1', read: readK8sRules },
}

const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/

function readHeader(f: Record<string, YNode>): DocumentHeader | null {
  const kind = f.kind!.string()
  const apiVersion = f.apiVersion!.string()
  if (kind === null || apiVersion === null) return null
  const known = KINDS[kind]
  if (!known) return f.kind!.fail(`unknown kind '${kind}'; expected one of: ${Object.keys(KINDS).join(', ')}`)
  if (apiVersion !== known.apiVersion)
    return f.apiVersion!.fail(`${kind} needs apiVersion '${known.apiVersion}', got '${apiVersion}'`)
  const m = f.metadata!.fields(
    [
      'name',
      'namespace',
      'labels',
      'annotations',
      'uid',
      'resourceVersion',
      'generation',
      'creationTimestamp',
      'managedFields',
    ],
    ['name'],
  )
  if (!m?.name) return null
  const name = m.name.string()
  if (name === null) return null
  if (!NAME_RE.test(name)) return m.name.fail(`'${name}' is not a valid name (lowercase letters, digits, '-' and '.')`)
  let namespace: string | null = null
  if (m.namespace) {
    namespace = m.namespace.string()
    if (namespace === null) return null
    if (kind === 'CiliumClusterwideNetworkPolicy') return m.namespace.fail('a clusterwide policy has no namespace')
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace))
      return m.namespace.fail(`'${namespace}' is not a valid namespace name`)
  }
  return { kind, name, namespace }
}

export function parsePolicyText(text: string, file: string): RuleSpec[] {
  const lines = new LineCounter()
  if (Buffer.byteLength(text) > MAX_POLICY_FILE_BYTES) {
    throw new PolicyError([
      { file, line: 1, column: 1, path: '', message: `file is larger than ${MAX_POLICY_FILE_BYTES} bytes` },
    ])
  }
  const docs = parseAllDocuments(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false })
  const ctx = new ReadContext(file, lines)
  const issues: PolicyIssue[] = []
  const rules: RuleSpec[] = []
  const seen = new Map<string, number>()
  const list = Array.isArray(docs) ? docs : [docs]
  for (const doc of list) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        const { line, col } = lines.linePos(e.pos[0])
        issues.push({ file, line, column: col, path: '', message: `YAML: ${e.message.split('\n')[0]}` })
      }
      continue
    }
    if (doc.contents === null) continue // an empty document between separators
    const root = new YNode(ctx, doc.contents, '', doc.range[0])
    const f = root.fields(
      ['apiVersion', 'kind', 'metadata', 'spec', 'specs', 'status'],
      ['apiVersion', 'kind', 'metadata'],
    )
    if (!f?.apiVersion || !f.kind || !f.metadata) continue
    const header = readHeader(f)
    if (!header) continue
    const reported = ctx.issues.length
    const read = KINDS[header.kind]!.read(f, root, header, file)
    if (!read) {
      // Readers report what they reject; never drop a document silently.
      if (ctx.issues.length === reported)
        ctx.report(
          root.offset,
          '',
          `${header.kind} ${header.name} was rejected without a reason (a bug: please report it)`,
        )
      continue
    }
    for (const r of read) {
      const first = seen.get(r.id)
      if (first !== undefined)
        ctx.report(
          root.offset,
          'metadata.name',
          `policy ${r.id} is defined twice in this file (first at line ${first})`,
        )
      else seen.set(r.id, r.line)
      rules.push(r)
    }
  }
  issues.push(...ctx.issues)
  if (issues.length > 0) throw new PolicyError(issues.sort((a, b) => a.line - b.line || a.column - b.column))
  return rules
}
