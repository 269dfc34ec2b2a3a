// Applies the policy engine's deltas to the kernel maps: only the entries that changed are
// written or deleted, never a whole map. Upserts go before deletes, so replacing an entry never
// leaves a gap in which a flow is decided by a missing entry.

import type { EngineDelta } from '../policy/engine.js'
import type { PolicyKey } from '../policy/map-state.js'
import type { BpfObject } from './bpf-object.js'
import { endpointValue, ipcacheKey, ipv4Key, policyKey, policyValue, u32 } from './map-layout.js'

export interface WriteStats {
  upserts: number
  deletes: number
}

function mapKey(endpointId: number, k: PolicyKey): Buffer {
  return policyKey({ endpointId, identity: k.identity, direction: k.direction, protocol: k.protocol, port: k.port, portPrefixLen: k.prefixLen })
}

export class PolicyWriter {
  /** endpoint id -> the ifindex its entry was written under. */
  private readonly written = new Map<number, number>()
  /** endpoint id -> the addresses written for it in l7_endpoint_ips. */
  private readonly writtenIps = new Map<number, readonly string[]>()

  constructor(
    private readonly obj: BpfObject,
    /** The node-side ifindex of an endpoint's veth; undefined for endpoints not on this node. */
    private readonly ifindexOf: (endpointId: number) => number | undefined,
  ) {}

  apply(delta: EngineDelta): WriteStats {
    const policy = this.obj.map('l7_policy')
    const ipcache = this.obj.map('l7_ipcache')
    const endpoints = this.obj.map('l7_endpoints')
    const endpointIps = this.obj.map('l7_endpoint_ips')
    // Encode everything first: a delta the maps cannot hold is refused before anything is written.
    const upserts: Array<[typeof policy, Buffer, Buffer]> = []
    const deletes: Array<[typeof policy, Buffer]> = []
    for (const [prefix, identity] of delta.ipcache.upserts) upserts.push([ipcache, ipcacheKey(prefix), u32(identity)])
    for (const [id, d] of delta.policy) {
      for (const [k, v] of d.upserts) upserts.push([policy, mapKey(id, k), policyValue(v.deny, v.proxyPort)])
      for (const k of d.deletes) deletes.push([policy, mapKey(id, k)])
    }
    const endpointWrites: Array<[number, number | undefined, Buffer, readonly string[]]> = []
    for (const ep of delta.endpoints.upserts) {
      endpointWrites.push([ep.id, this.ifindexOf(ep.id), endpointValue(ep.id, ep.identity, ep.enforce), ep.ips])
    }
    for (const prefix of delta.ipcache.deletes) deletes.push([ipcache, ipcacheKey(prefix)])

    for (const [map, k, v] of upserts) map.update(k, v)
    for (const [id, ifindex, v, ips] of endpointWrites) {
      // By address for its ingress policy; by the veth's ifindex (when it is on this node) for egress.
      for (const ip of ips) endpointIps.update(ipv4Key(ip), v)
      for (const ip of this.writtenIps.get(id) ?? []) if (!ips.includes(ip)) endpointIps.delete(ipv4Key(ip))
      this.writtenIps.set(id, ips)
      if (ifindex === undefined) continue
      endpoints.update(u32(ifindex), v)
      this.written.set(id, ifindex)
    }
    for (const [map, k] of deletes) map.delete(k)
    for (const id of delta.endpoints.deletes) {
      for (const ip of this.writtenIps.get(id) ?? []) endpointIps.delete(ipv4Key(ip))
      this.writtenIps.delete(id)
      const ifindex = this.written.get(id)
      if (ifindex === undefined) continue
      endpoints.delete(u32(ifindex))
      this.written.delete(id)
    }
    return { upserts: upserts.length + endpointWrites.length, deletes: deletes.length + delta.endpoints.deletes.length }
  }
}
