// What one proxy thread holds of the overload settings: the node's shared budget, where pressure
// starts and what it shortens, and the thread's own line for refusals. Made from data that
// crosses to worker threads (the budget's SharedArrayBuffer is shared, not copied).

import type { Logger } from 'pino'
import { RefusalLog } from './refusal-log.js'
import { SharedBudget } from './shared-budget.js'

export interface OverloadInput {
  budget: SharedArrayBuffer
  /** Open connections (node-wide) past which idle ones are closed, oldest first. */
  pressureConnections: number
  pressureHeadersMs: number
  pressureIdleMs: number
}

export interface ThreadOverload {
  budget: SharedBudget
  pressureConnections: number
  headersMs: number
  idleMs: number
  refusals: RefusalLog
}

export function threadOverload(input: OverloadInput, logger: Logger): ThreadOverload {
  return { budget: SharedBudget.of(input.budget), pressureConnections: input.pressureConnections, headersMs: input.pressureHeadersMs, idleMs: input.pressureIdleMs, refusals: new RefusalLog(logger) }
}
