// Log lines for what the overload budgets (or full maps) refuse, at a bounded rate: a flood is refused thousands
// of times a second, and a line each would make the log the next thing to flood. The first
// refusal of a kind is logged at once; later ones of that kind within `intervalMs` are counted
// and told in the next line (`refused`: how many since the last line).

import type { Logger } from 'pino'

interface Pending {
  count: number
  lastLine: number
}

export class RefusalLog {
  private readonly kinds = new Map<string, Pending>()

  /** `what`: the line's message prefix and the field that names the kind (the overload budgets': `overload`). */
  constructor(
    private readonly logger: Logger,
    private readonly intervalMs = 1_000,
    private readonly what = 'overload',
  ) {}

  /** A refusal of `kind` (what was refused and which budget said no); `fields` describe the latest one. */
  note(kind: string, now: number, fields: Record<string, unknown>): void {
    let p = this.kinds.get(kind)
    if (p === undefined) this.kinds.set(kind, (p = { count: 0, lastLine: -Infinity }))
    p.count++
    if (now - p.lastLine < this.intervalMs) return
    this.logger.warn({ verdict: 'refused', [this.what]: kind, refused: p.count, ...fields }, `${this.what}: refused`)
    p.count = 0
    p.lastLine = now
  }
}
