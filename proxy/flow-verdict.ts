// The L7 verdict for one request on a steered flow (an HTTP request, a DNS question): the
// sender's egress rules (if the sender is a local endpoint with L7 rules of that kind on that
// port) and the receiver's ingress rules (likewise) must both allow it. A flow steered while no L7 rule applies any more (policy changed since the
// kernel decided) falls back to the L3/L4 decision, so a removed allow is never kept open.
//
// What a flow resolves to (identities, endpoints, filters, L3/L4 decisions) is worked out once
// per source address, destination and port, and engine generation (FlowPolicy.of, cached: a
// pod's connections to one server resolve alike, and an L3/L4 decision alone is dozens of map
// look-ups); each request then only runs the matchers.

import type { PolicyEngine } from '../policy/engine.js'
import type { HeaderAction, HttpRequestView } from '../policy/http-matcher.js'
import { evaluateHttp, evaluateName, type L7Filter, type L7Verdict } from '../policy/l7-policy.js'
import type { Direction } from '../policy/model.js'

export interface Flow {
  sourceAddress: string
  sourcePort: number
  /** The original destination (not the proxy). */
  destAddress: string
  destPort: number
}

/** A flow's two ends as its log lines name them: `address:port`. */
export interface FlowEnds {
  source: string
  destination: string
}

export function flowEnds(flow: Flow): FlowEnds {
  return { source: `${flow.sourceAddress}:${flow.sourcePort}`, destination: `${flow.destAddress}:${flow.destPort}` }
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

/** Which L7 rules a proxy applies: HTTP or TLS server names on TCP, or DNS on UDP or TCP. */
export interface L7Kind {
  parser: 'http' | 'dns' | 'tls'
  protocol: 'TCP' | 'UDP'
}

const HTTP: L7Kind = { parser: 'http', protocol: 'TCP' }

/** Resolutions of an engine's current generation, by flow; emptied when full (a bound, not an LRU). */
const resolved = new WeakMap<PolicyEngine, { generation: number; flows: Map<string, FlowPolicy> }>()
const MAX_RESOLVED = 4096

/** One flow as the engine saw it at `generation`. */
export class FlowPolicy {
  readonly generation: number
  readonly sourceIdentity: number
  readonly destIdentity: number
  /** The sides with rules of this kind, in order egress then ingress. */
  readonly sides: readonly Side[]
  /** Set when a side without such rules denies the flow at L3/L4. */
  readonly l4Denial: string | null

  /** The flow's resolution at the engine's current generation (made once, then shared). */
  static of(engine: PolicyEngine, flow: Flow, kind: L7Kind = HTTP): FlowPolicy {
    let cache = resolved.get(engine)
    if (cache === undefined || cache.generation !== engine.stateGeneration)
      resolved.set(engine, (cache = { generation: engine.stateGeneration, flows: new Map() }))
    const key = `${kind.parser} ${kind.protocol} ${flow.sourceAddress} ${flow.destAddress} ${flow.destPort}`
    let policy = cache.flows.get(key)
    if (policy === undefined) {
      if (cache.flows.size >= MAX_RESOLVED) cache.flows.clear()
      cache.flows.set(key, (policy = new FlowPolicy(engine, flow, kind)))
    }
    return policy
  }

  private constructor(
    engine: PolicyEngine,
    flow: Flow,
    readonly kind: L7Kind,
  ) {
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
      const filter = engine.l7Policy(endpoint)?.find(direction, kind.protocol, flow.destPort)
      if (filter && filter.parser === kind.parser) sides.push({ direction, endpoint, peer, filter })
      // Rules of another protocol on this port: this one cannot be judged by them (TLS where
      // HTTP rules apply, plain HTTP where serverNames do): fail closed.
      else if (filter)
        denial ??= `${direction} of endpoint ${endpoint}: ${filter.parser} rules apply on this port, the connection is ${kind.parser}`
      else if (
        denial === null &&
        engine.decide(endpoint, direction, peer, kind.protocol === 'TCP' ? 6 : 17, flow.destPort).verdict === 'deny'
      ) {
        denial = `${direction} of endpoint ${endpoint}: denied at L3/L4`
      }
    }
    this.sides = sides
    this.l4Denial = denial
  }

  /** This resolution, or a fresh one if the engine changed since. */
  current(engine: PolicyEngine, flow: Flow): FlowPolicy {
    return engine.stateGeneration === this.generation ? this : FlowPolicy.of(engine, flow, this.kind)
  }
}

/** Both sides' rules applied by `evaluate`; the first side that denies decides. */
function verdict(
  policy: FlowPolicy,
  evaluate: (filter: L7Filter, peer: number) => L7Verdict,
  what: string,
): FlowVerdict {
  const v: FlowVerdict = {
    allowed: false,
    rules: [],
    reason: '',
    actions: [],
    sourceIdentity: policy.sourceIdentity,
    destIdentity: policy.destIdentity,
  }
  if (policy.l4Denial !== null) {
    v.reason = policy.l4Denial
    return v
  }
  for (const side of policy.sides) {
    const r = evaluate(side.filter, side.peer)
    if (!r.allowed) {
      v.reason = `${side.direction} of endpoint ${side.endpoint}: ${r.reason}`
      return v
    }
    v.rules.push(r.ruleId!)
    for (const a of r.actions) v.actions.push(a)
  }
  v.allowed = true
  v.reason = policy.sides.length === 0 ? `no ${policy.kind.parser} rule applies (L3/L4 allows it)` : what
  return v
}

export function httpVerdict(policy: FlowPolicy, req: HttpRequestView): FlowVerdict {
  return verdict(policy, (filter, peer) => evaluateHttp(filter, peer, req), 'request matched an http rule')
}

/** For one question's name (lower case, no trailing dot). */
export function dnsVerdict(policy: FlowPolicy, qname: string): FlowVerdict {
  return verdict(policy, (filter, peer) => evaluateName(filter, peer, qname), 'name matched a dns rule')
}

/** For a TLS connection by the server name its ClientHello asked for (lower case; null: none). */
export function tlsVerdict(policy: FlowPolicy, serverName: string | null): FlowVerdict {
  return verdict(
    policy,
    (filter, peer) => evaluateName(filter, peer, serverName),
    'server name matched a serverNames entry',
  )
}
