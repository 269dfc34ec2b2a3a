// What one proxy thread holds of the overload settings: the node's shared budget, where pressure
// starts and what it shortens, and the thread's own line for refusals. Made from data that
// crosses to worker threads (the budget's SharedArrayBuffer is shared, not copied).

import type { Logger } from 'pino'
import { RefusalLog } from './refusal-log.js'
import { REFUSAL_NAMES, Refusal, SharedBudget, sourceKey } from './shared-budget.js'

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
  return {
    budget: SharedBudget.of(input.budget),
    pressureConnections: input.pressureConnections,
    headersMs: input.pressureHeadersMs,
    idleMs: input.pressureIdleMs,
    refusals: new RefusalLog(logger),
  }
}

/** Logs (at a bounded rate) a refusal by the budget of `what`, with the limit it hit. */
export function noteRefusal(
  o: ThreadOverload,
  what: 'connections' | 'streams',
  r: Refusal,
  fields: { source: string; identity: number },
): void {
  o.refusals.note(`${what} per ${REFUSAL_NAMES[r]}`, performance.now(), { ...fields, limit: o.budget.limitOf(what, r) })
}

/**
 * Takes a client connection from `address` of `identity` from the node's budget: how to give it
 * back when it closes, or null when it is refused (counted in the budget, logged).
 */
export function admitConnection(o: ThreadOverload, address: string, identity: number): (() => void) | null {
  const source = sourceKey(address)
  const refusal = o.budget.takeConnection(source, identity)
  if (refusal === Refusal.None) return () => o.budget.giveConnection(source, identity)
  noteRefusal(o, 'connections', refusal, { source: address, identity })
  return null
}
