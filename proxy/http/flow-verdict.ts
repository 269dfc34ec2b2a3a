// The L7 verdict for one HTTP request on a steered flow: the sender's egress rules (if the sender
// is a local endpoint with L7 rules on that port) and the receiver's ingress rules (likewise)
// must both allow it. A flow steered while no L7 rule applies any more (policy changed since the
// kernel decided) falls back to the L3/L4 decision, so a removed allow is never kept open.
//
// What a flow resolves to (identities, endpoints, filters, L3/L4 decisions) is worked out once
// per connection and engine generation (FlowPolicy); each request then only runs the matchers.

import type { PolicyEngine } from '../../policy/engine.js'
import type { HeaderAction, HttpRequestView } from '../../policy/http-matcher.js'
import { evaluateHttp, type L7Filter } from '../../policy/l7-policy.js'
import type { Direction } from '../../policy/model.js'

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

interface Side {
  direction: Direction
  endpoint: number
  peer: number
  filter: L7Filter
}

/** One flow as the engine saw it at `generation`. */
export class FlowPolicy {
  readonly generation: number
  readonly sourceIdentity: number
  readonly destIdentity: number
  /** The sides with HTTP rules, in order egress then ingress. */
  readonly sides: readonly Side[]
  /** Set when a side without HTTP rules denies the flow at L3/L4. */
  readonly l4Denial: string | null

  constructor(engine: PolicyEngine, flow: Flow) {
    this.generation = engine.stateGeneration
    this.sourceIdentity = engine.identityOf(flow.sourceAddress)
    this.destIdentity = engine.identityOf(flow.destAddress)
    const sides: Side[] = []
    let denial: string | null = null
    const candidates: Array<[Direction, number | undefined, number]> = [
      ['egress', engine.endpointAt(flow.sourceAddress), this.destIdentity],
      ['ingress', engine.endpointAt(flow.destAddress), this.sourceIdentity],
    ]
    for (const [direction, endpoint, peer] of candidates) {
      if (endpoint === undefined) continue
      const filter = engine.l7Policy(endpoint)?.find(direction, 'TCP', flow.destPort)
      if (filter && filter.parser === 'http') sides.push({ direction, endpoint, peer, filter })
      else if (denial === null && engine.decide(endpoint, direction, peer, 6, flow.destPort).verdict === 'deny') {
        denial = `${direction} of endpoint ${endpoint}: denied at L3/L4`
      }
    }
    this.sides = sides
    this.l4Denial = denial
  }

  /** This resolution, or a fresh one if the engine changed since. */
  current(engine: PolicyEngine, flow: Flow): FlowPolicy {
    return engine.stateGeneration === this.generation ? this : new FlowPolicy(engine, flow)
  }
}

export function httpVerdict(policy: FlowPolicy, req: HttpRequestView): FlowVerdict {
  const v: FlowVerdict = { allowed: false, rules: [], reason: '', actions: [], sourceIdentity: policy.sourceIdentity, destIdentity: policy.destIdentity }
  if (policy.l4Denial !== null) {
    v.reason = policy.l4Denial
    return v
  }
  for (const side of policy.sides) {
    const r = evaluateHttp(side.filter, side.peer, req)
    if (!r.allowed) {
      v.reason = `${side.direction} of endpoint ${side.endpoint}: ${r.reason}`
      return v
    }
    v.rules.push(r.ruleId!)
    for (const a of r.actions) v.actions.push(a)
  }
  v.allowed = true
  v.reason = policy.sides.length === 0 ? 'no http rule applies (L3/L4 allows it)' : 'request matched an http rule'
  return v
}
