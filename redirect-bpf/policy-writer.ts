// Applies the policy engine's deltas to the kernel maps: only the entries that changed are
// written or deleted, never a whole map. Upserts go before deletes, so replacing an entry never
// leaves a gap in which a flow is decided by a missing entry; policy entries go before the
// ipcache's, so an address is never given an identity whose entries are not there yet. An agent
// taking over maps another one wrote (handover.ts) records its first write and prunes the rest.

import type { EngineDelta } from '../policy/engine.js'
import type { PolicyKey } from '../policy/map-state.js'
import type { BpfObject } from './bpf-object.js'
import type { BpfError } from './libbpf.js'
import { endpointValue, ipcacheKey, ipv4Key, policyKey, policyValue, u32 } from './map-layout.js'

/** What a full map answers an update with: ENOSPC (an LPM trie), E2BIG (a hash map). */
const MAP_FULL = new Set([28, 7])

export interface WriteStats {
  upserts: number
  deletes: number
}

function mapKey(endpointId: number, k: PolicyKey): Buffer {
  return policyKey({
    endpointId,
    identity: k.identity,
    direction: k.direction,
    protocol: k.protocol,
    port: k.port,
    portPrefixLen: k.prefixLen,
  })
}

export class PolicyWriter {
  /** endpoint id -> the ifindex its entry was written under. */
  private readonly written = new Map<number, number>()
  /** endpoint id -> the addresses written for it in l7_endpoint_ips. */
  private readonly writtenIps = new Map<number, readonly string[]>()
  /** Keys written since record() (map/hex), or null when not recording. */
  private recording: Set<string> | null = null

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
    for (const [id, d] of delta.policy) {
      for (const [k, v] of d.upserts) upserts.push([policy, mapKey(id, k), policyValue(v.deny, v.proxyPort)])
      for (const k of d.deletes) deletes.push([policy, mapKey(id, k)])
    }
    for (const [prefix, identity] of delta.ipcache.upserts) upserts.push([ipcache, ipcacheKey(prefix), u32(identity)])
    const endpointWrites: Array<[number, number | undefined, Buffer, readonly string[]]> = []
    for (const ep of delta.endpoints.upserts) {
      endpointWrites.push([ep.id, this.ifindexOf(ep.id), endpointValue(ep.id, ep.identity, ep.enforce), ep.ips])
    }
    for (const prefix of delta.ipcache.deletes) deletes.push([ipcache, ipcacheKey(prefix)])

    // Upserts before deletes, so that nothing allowed before and after is denied between; but a
    // full map takes the deletes first (the engine sized the whole delta to fit).
    let deleted = false
    const deleteAll = (): void => {
      if (deleted) return
      deleted = true
      for (const [map, k] of deletes) map.delete(k)
    }
    for (const [map, k, v] of upserts) {
      try {
        map.update(k, v)
      } catch (e) {
        if (deleted || !MAP_FULL.has((e as BpfError).errno ?? 0)) throw e
        deleteAll()
        map.update(k, v)
      }
      this.recording?.add(`${map.name}/${k.toString('hex')}`)
    }
    for (const [id, ifindex, v, ips] of endpointWrites) {
      // By address for its ingress policy; by the veth's ifindex (when it is on this node) for egress.
      for (const ip of ips) {
        endpointIps.update(ipv4Key(ip), v)
        this.recording?.add(`${endpointIps.name}/${ipv4Key(ip).toString('hex')}`)
      }
      if (ifindex !== undefined) this.recording?.add(`${endpoints.name}/${u32(ifindex).toString('hex')}`)
      for (const ip of this.writtenIps.get(id) ?? []) if (!ips.includes(ip)) endpointIps.delete(ipv4Key(ip))
      this.writtenIps.set(id, ips)
      if (ifindex === undefined) continue
      endpoints.update(u32(ifindex), v)
      this.written.set(id, ifindex)
    }
    deleteAll()
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

  /** From now on, every key written is remembered (for pruneUnrecorded). */
  record(): void {
    this.recording = new Set()
  }

  /**
   * Deletes every entry of the policy, ipcache and endpoint maps not written since record(): what
   * another agent left that this one's state does not have. Stops recording; how many went.
   */
  pruneUnrecorded(): number {
    const written = this.recording
    if (written === null) return 0
    this.recording = null
    let n = 0
    for (const name of ['l7_policy', 'l7_ipcache', 'l7_endpoints', 'l7_endpoint_ips']) {
      const map = this.obj.map(name)
      for (const k of map.keys()) if (!written.has(`${name}/${k.toString('hex')}`) && map.delete(k)) n++
    }
    return n
  }
}
