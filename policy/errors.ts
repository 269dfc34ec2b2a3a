// Errors of the policy layer. A rejected document carries every problem found in it, each with
// where it is (file, line, column, field path) and what was expected.

import { L7ProxyError } from '../lib/l7proxy-error.js'

export interface PolicyIssue {
  file: string
  line: number
  column: number
  /** Field path inside the document, e.g. `spec.ingress[0].toPorts[0].ports[0].port`. */
  path: string
  message: string
}

export function formatIssue(i: PolicyIssue): string {
  return `${i.file}:${i.line}:${i.column}: ${i.path ? `${i.path}: ` : ''}${i.message}`
}

export class PolicyError extends L7ProxyError {
  readonly issues: readonly PolicyIssue[]
  constructor(issues: PolicyIssue[]) {
    super('EPOLICY', issues.map(formatIssue).join('\n'))
    this.issues = issues
  }
}

/** An entry the node's maps have no room for (maps.ipcacheEntries, maps.policyEntries): refused, nothing changed. */
export class MapFullError extends L7ProxyError {
  constructor(message: string) {
    super('EMAPFULL', message)
  }
}
