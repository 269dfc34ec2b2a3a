// The L7 verdict for one HTTP request on a steered flow: the sender's egress rules (if the sender
// is a local endpoint with L7 rules on that port) and the receiver's ingress rules (likewise)
// must both allow it. A flow steered while no L7 rule applies any more (policy changed since the
// kernel decided) falls back to the L3/L4 decision, so a removed allow is never kept open.

import type { PolicyEngine } from '../../policy/engine.js'
import type { HeaderAction, HttpRequestView } from '../../policy/http-matcher.js'
import { evaluateHttp } from '../../policy/l7-policy.js'

export interface Flow {
  sourceAddress: string
  sourcePort: number
  /** The original destination (not the proxy). */
  destAddress: string
  destPort: number
}

export interface FlowVerdict {
  allowed: boolean
  /** Policies whose rules allowed it, or the one reason it was denied. */
  rules: string[]
  reason: string
  actions: HeaderAction[]
  sourceIdentity: number
  destIdentity: number
}

export function httpVerdict(engine: PolicyEngine, flow: Flow, req: HttpRequestView): FlowVerdict {
  const sourceIdentity = engine.identityOf(flow.sourceAddress)
  const destIdentity = engine.identityOf(flow.destAddress)
  const base = { sourceIdentity, destIdentity, actions: [] as HeaderAction[], rules: [] as string[] }
  const sides: Array<['egress' | 'ingress', number | undefined, number]> = [
    ['egress', engine.endpointAt(flow.sourceAddress), destIdentity],
    ['ingress', engine.endpointAt(flow.destAddress), sourceIdentity],
  ]
  let checked = 0
  for (const [direction, endpoint, peer] of sides) {
    if (endpoint === undefined) continue
    const filter = engine.l7Policy(endpoint)?.find(direction, 'TCP', flow.destPort)
    if (filter && filter.parser === 'http') {
      checked++
      const v = evaluateHttp(filter, peer, req)
      if (!v.allowed) return { ...base, allowed: false, reason: `${direction} of endpoint ${endpoint}: ${v.reason}` }
      base.rules.push(v.ruleId!)
      base.actions.push(...v.actions)
    } else if (engine.decide(endpoint, direction, peer, 6, flow.destPort).verdict === 'deny') {
      return { ...base, allowed: false, reason: `${direction} of endpoint ${endpoint}: denied at L3/L4` }
    }
  }
  if (checked === 0) return { ...base, allowed: true, reason: 'no http rule applies (L3/L4 allows it)' }
  return { ...base, allowed: true, reason: 'request matched an http rule' }
}
