// Log lines for what the overload budgets refuse, at a bounded rate: a flood is refused thousands
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

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs = 1_000,
  ) {}

  /** A refusal of `kind` (what was refused and which budget said no); `fields` describe the latest one. */
  note(kind: string, now: number, fields: Record<string, unknown>): void {
    let p = this.kinds.get(kind)
    if (p === undefined) this.kinds.set(kind, (p = { count: 0, lastLine: -Infinity }))
    p.count++
    if (now - p.lastLine < this.intervalMs) return
    this.logger.warn({ verdict: 'refused', overload: kind, refused: p.count, ...fields }, 'overload: refused')
    p.count = 0
    p.lastLine = now
  }
}
