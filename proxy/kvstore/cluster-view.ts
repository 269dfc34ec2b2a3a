// What this node knows of the cluster's store: a mirror of everything under the prefix, fed a
// full listing at one revision (reset) or the watch's events in order (put, delete), and what
// follows from it for this node: other nodes' pods as address -> identity with its labels, and
// the cluster's policy documents. take() returns the net change since the last call, so a
// listing after a gap removes what disappeared and re-adds nothing that stayed (no flap).
// Pure: no I/O; a bad value is reported to `bad` and treated as absent.

import type { RemotePeer } from '../../policy/engine.js'
import type { LabelSet } from '../../policy/labels.js'
import {
  decodeIpEntry,
  decodeLabels,
  decodeNodeEntry,
  type IpEntry,
  type KvstoreKeys,
  type NodeEntry,
} from './kvstore-keys.js'

export interface ViewChange {
  /** Other nodes' pods: address -> identity (null: gone here). */
  endpoints: Array<[string, RemotePeer | null]>
  /** Cluster policy documents: name -> text (null: removed). */
  policies: Array<[string, string | null]>
}

export interface KeyValue {
  key: string
  value: string
  /** The revision the key was last changed at. */
  revision: number
}

export class ClusterView {
  private readonly ids = new Map<number, LabelSet>()
  private readonly idIps = new Map<number, Set<string>>()
  private readonly ipEntries = new Map<string, IpEntry>()
  private readonly nodeEntries = new Map<string, NodeEntry>()
  private readonly policyTexts = new Map<string, string>()
  /** Labels (canonical) -> the nodes that use their identity. */
  private readonly users = new Map<string, Set<string>>()
  /** What take() has handed out: address -> identity. */
  private readonly applied = new Map<string, number>()
  private touchedIps = new Set<string>()
  private touchedPolicies = new Set<string>()
  /** The revision the policy documents last changed at (0: never). */
  policyRevision = 0
  /** The revision of the store this view reflects. */
  revision = 0

  constructor(
    private readonly keys: KvstoreKeys,
    /** This node: its own addresses are its endpoints', never remote. */
    private readonly self: string,
    private readonly bad: (key: string, why: string) => void,
  ) {}

  /** Everything under the prefix at `revision`: what is not in `kvs` is gone. */
  reset(kvs: readonly KeyValue[], revision: number): void {
    for (const ip of this.ipEntries.keys()) this.touchedIps.add(ip)
    const policiesBefore = new Map(this.policyTexts)
    for (const name of policiesBefore.keys()) this.touchedPolicies.add(name)
    this.ids.clear()
    this.idIps.clear()
    this.ipEntries.clear()
    this.nodeEntries.clear()
    this.policyTexts.clear()
    this.users.clear()
    for (const kv of kvs) this.put(kv.key, kv.value, kv.revision)
    const policiesChanged =
      policiesBefore.size !== this.policyTexts.size ||
      [...this.policyTexts].some(([n, t]) => policiesBefore.get(n) !== t)
    if (policiesChanged)
      this.policyRevision = Math.max(
        this.policyRevision,
        ...kvs.filter((kv) => this.keys.parse(kv.key)?.kind === 'policy').map((kv) => kv.revision),
        0,
      )
    this.revision = revision
  }

  put(key: string, value: string, revision: number): void {
    this.revision = Math.max(this.revision, revision)
    const k = this.keys.parse(key)
    if (k === null) return
    switch (k.kind) {
      case 'identity': {
        const labels = decodeLabels(value)
        if (typeof labels === 'string') {
          this.bad(key, labels)
          return this.delete(key, revision)
        }
        if (this.ids.get(k.id)?.canonical === labels.canonical) return
        this.ids.set(k.id, labels)
        for (const ip of this.idIps.get(k.id) ?? []) this.touchedIps.add(ip)
        return
      }
      case 'ip': {
        const entry = decodeIpEntry(value, k.ip)
        if (typeof entry === 'string') {
          this.bad(key, entry)
          return this.delete(key, revision)
        }
        this.unindex(k.ip)
        this.ipEntries.set(k.ip, entry)
        let set = this.idIps.get(entry.ID)
        if (!set) this.idIps.set(entry.ID, (set = new Set()))
        set.add(k.ip)
        this.touchedIps.add(k.ip)
        return
      }
      case 'node': {
        const entry = decodeNodeEntry(value, k.node)
        if (typeof entry === 'string') {
          this.nodeEntries.delete(k.node)
          return this.bad(key, entry)
        }
        this.nodeEntries.set(k.node, entry)
        return
      }
      case 'policy':
        if (this.policyTexts.get(k.name) === value) return
        this.policyTexts.set(k.name, value)
        this.touchedPolicies.add(k.name)
        this.policyRevision = Math.max(this.policyRevision, revision)
        return
      case 'user': {
        let set = this.users.get(k.labels)
        if (!set) this.users.set(k.labels, (set = new Set()))
        set.add(k.node)
        return
      }
      case 'labels':
        return
    }
  }

  delete(key: string, revision: number): void {
    this.revision = Math.max(this.revision, revision)
    const k = this.keys.parse(key)
    if (k === null) return
    switch (k.kind) {
      case 'identity':
        if (!this.ids.delete(k.id)) return
        for (const ip of this.idIps.get(k.id) ?? []) this.touchedIps.add(ip)
        return
      case 'ip':
        this.unindex(k.ip)
        this.ipEntries.delete(k.ip)
        this.touchedIps.add(k.ip)
        return
      case 'node':
        this.nodeEntries.delete(k.node)
        return
      case 'policy':
        if (!this.policyTexts.delete(k.name)) return
        this.touchedPolicies.add(k.name)
        this.policyRevision = Math.max(this.policyRevision, revision)
        return
      case 'user': {
        const set = this.users.get(k.labels)
        set?.delete(k.node)
        if (set?.size === 0) this.users.delete(k.labels)
        return
      }
      case 'labels':
        return
    }
  }

  private unindex(ip: string): void {
    const old = this.ipEntries.get(ip)
    if (!old) return
    const set = this.idIps.get(old.ID)
    set?.delete(ip)
    if (set?.size === 0) this.idIps.delete(old.ID)
  }

  /** Another node's pod at `ip`, if its identity's labels are known. */
  private peer(ip: string): RemotePeer | null {
    const e = this.ipEntries.get(ip)
    if (!e || e.Node === this.self) return null
    const labels = this.ids.get(e.ID)
    return labels ? { identity: e.ID, labels } : null
  }

  /** The net change since the last take(). */
  take(): ViewChange {
    const endpoints: ViewChange['endpoints'] = []
    for (const ip of this.touchedIps) {
      const p = this.peer(ip)
      if ((p?.identity ?? null) === (this.applied.get(ip) ?? null)) continue
      if (p === null) this.applied.delete(ip)
      else this.applied.set(ip, p.identity)
      endpoints.push([ip, p])
    }
    const policies: ViewChange['policies'] = [...this.touchedPolicies].map((n) => [n, this.policyTexts.get(n) ?? null])
    this.touchedIps = new Set()
    this.touchedPolicies = new Set()
    return { endpoints, policies }
  }

  identity(id: number): LabelSet | undefined {
    return this.ids.get(id)
  }

  /** Cluster identities with the nodes that use them. */
  identities(): Array<{ id: number; labels: string; nodes: string[] }> {
    return [...this.ids]
      .map(([id, l]) => ({ id, labels: l.canonical, nodes: [...(this.users.get(l.canonical) ?? [])].sort() }))
      .sort((a, b) => a.id - b.id)
  }

  nodes(): NodeEntry[] {
    return [...this.nodeEntries.values()].sort((a, b) => a.Name.localeCompare(b.Name))
  }

  /** Every node's endpoint addresses the store has (this node's too). */
  ipEntryList(): IpEntry[] {
    return [...this.ipEntries.values()]
  }

  policyNames(): string[] {
    return [...this.policyTexts.keys()].sort()
  }
}
