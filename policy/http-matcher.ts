// HTTP rules as Cilium defines them: method, path and host are anchored regular expressions
// (host case-insensitive), `headers` must be present (with the value when one is given), and
// `headerMatches` may instead of failing the rule ask the proxy to LOG, ADD, DELETE or REPLACE
// the header. A rule matches when every part of it matches; rules on a port are OR'ed.

import type { HeaderMatchSpec, HttpRuleSpec } from './model.js'
import { compileAnchored, type SafeRegex } from './regex.js'

export interface HttpRequestView {
  method: string
  /** The request target's path as the proxy normalized it (with its query, as Envoy's :path). */
  path: string
  host: string
  /** A header's value (names lowercase); undefined when absent. */
  header(name: string): string | undefined
}

export interface HeaderAction {
  action: 'LOG' | 'ADD' | 'DELETE' | 'REPLACE'
  name: string
  value?: string
}

export interface HttpMatcher {
  readonly spec: HttpRuleSpec
  /** Whether the request matches; header actions the match requires are pushed to `actions`. */
  matches(req: HttpRequestView, actions: HeaderAction[]): boolean
}

interface CompiledHeader {
  name: string
  value: string | undefined
  mismatch: HeaderMatchSpec['mismatch']
}

function headerOk(req: HttpRequestView, h: CompiledHeader): boolean {
  const v = req.header(h.name)
  return v !== undefined && (h.value === undefined || v === h.value)
}

export function compileHttpRule(spec: HttpRuleSpec): HttpMatcher {
  const method: SafeRegex | null = spec.method ? compileAnchored(spec.method) : null
  const path: SafeRegex | null = spec.path ? compileAnchored(spec.path) : null
  const host: SafeRegex | null = spec.host ? compileAnchored(spec.host, 'i') : null
  const compile = (h: HeaderMatchSpec): CompiledHeader => ({
    name: h.name.toLowerCase(),
    value: h.value,
    mismatch: h.mismatch,
  })
  const headers = spec.headers.map(compile)
  const headerMatches = spec.headerMatches.map(compile)
  return {
    spec,
    matches(req, actions) {
      if (method && !method.test(req.method)) return false
      if (path && !path.test(req.path)) return false
      if (host && !host.test(req.host)) return false
      for (const h of headers) if (!headerOk(req, h)) return false
      const pending = actions.length
      for (const h of headerMatches) {
        if (headerOk(req, h)) continue
        if (!h.mismatch) {
          actions.length = pending // a failed rule asks for nothing
          return false
        }
        actions.push(
          h.value === undefined
            ? { action: h.mismatch, name: h.name }
            : { action: h.mismatch, name: h.name, value: h.value },
        )
      }
      return true
    },
  }
}
