// A typed, located view of a parsed YAML document. Readers of policy documents walk it field by
// field; every mismatch is recorded with its line, column and field path, and reading goes on so
// one pass reports every problem in the document.

import { isMap, isScalar, isSeq, LineCounter, type Node, type Pair, parseDocument } from 'yaml'
import type { PolicyIssue } from './errors.js'

export class ReadContext {
  readonly issues: PolicyIssue[] = []
  constructor(
    readonly file: string,
    private readonly lines: LineCounter,
  ) {}

  lineOf(offset: number): number {
    return this.lines.linePos(offset).line
  }

  report(offset: number, path: string, message: string): void {
    const { line, col } = this.lines.linePos(offset)
    this.issues.push({ file: this.file, line, column: col, path, message })
  }
}

function describe(node: unknown): string {
  if (node === null || node === undefined) return 'nothing'
  if (isMap(node)) return 'a mapping'
  if (isSeq(node)) return 'a list'
  if (isScalar(node)) {
    const v = node.value
    if (v === null) return 'null'
    if (typeof v === 'string') return `the string '${v.length > 40 ? `${v.slice(0, 40)}...` : v}'`
    return `the ${typeof v} ${String(v)}`
  }
  return 'an unsupported YAML node'
}

export class YNode {
  constructor(
    readonly ctx: ReadContext,
    readonly node: unknown,
    readonly path: string,
    /** Where to point when this node is absent (its key, or its parent). */
    private readonly fallbackOffset: number,
  ) {}

  get offset(): number {
    const range = (this.node as Node | null)?.range
    return range ? range[0] : this.fallbackOffset
  }

  get line(): number {
    return this.ctx.lineOf(this.offset)
  }

  fail(message: string): null {
    this.ctx.report(this.offset, this.path, message)
    return null
  }

  isNull(): boolean {
    return this.node === null || this.node === undefined || (isScalar(this.node) && this.node.value === null)
  }

  /** A mapping whose keys must all be in `allowed`; reports unknown and missing keys. */
  fields(allowed: readonly string[], required: readonly string[] = []): Record<string, YNode> | null {
    if (!isMap(this.node)) return this.fail(`expected a mapping, got ${describe(this.node)}`)
    const out: Record<string, YNode> = {}
    for (const pair of this.node.items as Pair<unknown, unknown>[]) {
      const keyNode = pair.key as Node | null
      const keyOffset = keyNode?.range?.[0] ?? this.offset
      if (!isScalar(keyNode) || typeof keyNode.value !== 'string') {
        this.ctx.report(keyOffset, this.path, `keys must be strings, got ${describe(keyNode)}`)
        continue
      }
      const key = keyNode.value
      const path = this.path ? `${this.path}.${key}` : key
      if (!allowed.includes(key)) {
        this.ctx.report(keyOffset, path, `unknown field '${key}'; expected one of: ${allowed.join(', ')}`)
        continue
      }
      out[key] = new YNode(this.ctx, pair.value, path, keyOffset)
    }
    for (const key of required) {
      if (!(key in out) || out[key]!.isNull()) this.fail(`missing required field '${key}'`)
    }
    return out
  }

  /** A mapping of string keys to string values (labels). */
  stringMap(): Map<string, string> | null {
    if (!isMap(this.node)) return this.fail(`expected a mapping of strings, got ${describe(this.node)}`)
    const out = new Map<string, string>()
    for (const pair of this.node.items as Pair<unknown, unknown>[]) {
      const k = pair.key as Node | null
      const v = new YNode(
        this.ctx,
        pair.value,
        `${this.path}.${isScalar(k) ? String(k.value) : '?'}`,
        k?.range?.[0] ?? this.offset,
      )
      if (!isScalar(k) || typeof k.value !== 'string') {
        this.ctx.report(k?.range?.[0] ?? this.offset, this.path, `keys must be strings, got ${describe(k)}`)
        continue
      }
      const s = v.isNull() ? '' : v.scalarString()
      if (s !== null) out.set(k.value, s)
    }
    return out
  }

  list(): YNode[] | null {
    if (!isSeq(this.node)) return this.fail(`expected a list, got ${describe(this.node)}`)
    return this.node.items.map((item, i) => new YNode(this.ctx, item, `${this.path}[${i}]`, this.offset))
  }

  /** A list, or nothing when absent/null. */
  optionalList(): YNode[] | null {
    return this.isNull() ? [] : this.list()
  }

  string(): string | null {
    if (!isScalar(this.node) || typeof this.node.value !== 'string')
      return this.fail(`expected a string, got ${describe(this.node)}`)
    return this.node.value
  }

  /** A string, or a number/boolean written without quotes (label values, ports). */
  scalarString(): string | null {
    if (!isScalar(this.node) || this.node.value === null || typeof this.node.value === 'object') {
      return this.fail(`expected a string, got ${describe(this.node)}`)
    }
    return String(this.node.value)
  }

  boolean(): boolean | null {
    if (!isScalar(this.node) || typeof this.node.value !== 'boolean')
      return this.fail(`expected true or false, got ${describe(this.node)}`)
    return this.node.value
  }

  /** An integer in [min, max], written as a number or a string of digits. */
  integer(min: number, max: number): number | null {
    const raw = isScalar(this.node) ? this.node.value : undefined
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : NaN
    if (!Number.isInteger(n) || n < min || n > max) {
      return this.fail(`expected an integer from ${min} to ${max}, got ${describe(this.node)}`)
    }
    return n
  }
}

/**
 * One YAML document read for a located walk: its root (null for an empty document) and the
 * context issues are recorded in; YAML syntax errors come back as issues with no root.
 */
export function readDocument(
  text: string,
  file: string,
): { root: YNode | null; ctx: ReadContext; syntax: PolicyIssue[] } {
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false })
  const ctx = new ReadContext(file, lines)
  const syntax = doc.errors.map((e): PolicyIssue => {
    const { line, col } = lines.linePos(e.pos[0])
    return { file, line, column: col, path: '', message: `YAML: ${e.message.split('\n')[0]}` }
  })
  return { root: syntax.length > 0 || doc.contents === null ? null : new YNode(ctx, doc.contents, '', 0), ctx, syntax }
}
