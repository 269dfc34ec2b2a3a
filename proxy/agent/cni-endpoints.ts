// The endpoints containers' CNI ADDs registered (l7proxy-cni: a veth and its addresses), kept in
// the state directory so an agent restart keeps them. An endpoint's labels come from the
// container runtime, asked after the ADD has returned (inside it the runtime holds the
// container's lock, as Cilium's CNI plugin and agent also divide the work); until they are known
// the endpoint holds Cilium's reserved:init identity, which policy may allow as `init`.

import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { writeFileAtomic } from '../../lib/atomic-write.js'
import { isInterfaceName } from '../../lib/interface-name.js'
import { parseIPv4 } from '../../policy/cidr.js'
import { INIT_LABELS } from '../../policy/identity.js'
import { CONTAINER_ID } from '../cni/cni-protocol.js'
import { AdminQueryError } from './admin-server.js'
import type { NodeEndpoint } from './endpoints-file.js'

/** What the plugin registers for one container interface. */
export interface CniAttachment {
  containerId: string
  ifname: string
  /** The host side of its veth. */
  interface: string
  ips: string[]
}

interface Entry extends CniAttachment {
  id: number
  /** From the runtime; null while not known yet. */
  labels: Record<string, string> | null
}

export interface CniEndpointsOptions {
  /** Where the registrations are kept across restarts; null: nowhere. */
  stateDir: string | null
  /** The container's labels as its runtime knows them; null while it cannot tell yet (asked again). */
  labelsOf: (containerId: string) => Promise<Record<string, string> | null>
  /** The endpoints are now these (the agent applies them). */
  onChange: (endpoints: NodeEndpoint[]) => void
  /** Why the agent refused an endpoint it was given (no room in its maps), or null. */
  refusal?: (id: number) => string | null
  /** Whether a host-side interface is there: one a container took away while no agent ran (its DEL found none) is forgotten. */
  exists: (ifname: string) => boolean
  logger: Logger
  /** How often and how long labels are asked for before the endpoint stays init. */
  retryMs?: number
  giveUpMs?: number
}

/** CNI endpoints get ids from here, clear of an endpoints file's small numbers. */
const FIRST_ID = 1000
/** Namespaced policies select endpoints of their namespace: a container without one is in `default`. */
const NAMESPACE = 'io.kubernetes.pod.namespace'

/** An ADD's registration from the admin API's body; a 400 saying what is wrong. */
export function parseAttachment(body: string): CniAttachment {
  let v: Partial<CniAttachment>
  try {
    v = JSON.parse(body) as Partial<CniAttachment>
  } catch {
    throw new AdminQueryError('the registration is not JSON')
  }
  if (typeof v.containerId !== 'string' || v.containerId.length > 256 || !CONTAINER_ID.test(v.containerId))
    throw new AdminQueryError('containerId: expected a container id')
  if (typeof v.ifname !== 'string' || !isInterfaceName(v.ifname))
    throw new AdminQueryError('ifname: expected an interface name')
  if (typeof v.interface !== 'string' || !isInterfaceName(v.interface))
    throw new AdminQueryError('interface: expected an interface name')
  if (
    !Array.isArray(v.ips) ||
    v.ips.length === 0 ||
    v.ips.some((ip) => typeof ip !== 'string' || parseIPv4(ip) === null)
  )
    throw new AdminQueryError('ips: expected IPv4 addresses')
  return { containerId: v.containerId, ifname: v.ifname, interface: v.interface, ips: v.ips }
}

export class CniEndpoints {
  private readonly entries = new Map<string, Entry>()
  private readonly file: string | null
  private readonly timers = new Set<NodeJS.Timeout>()

  constructor(private readonly o: CniEndpointsOptions) {
    this.file = o.stateDir ? join(o.stateDir, 'cni-endpoints.json') : null
    if (this.file && existsSync(this.file)) {
      try {
        for (const e of JSON.parse(readFileSync(this.file, 'utf8')) as Entry[]) {
          if (o.exists(e.interface)) this.entries.set(key(e.containerId, e.ifname), e)
          else
            o.logger.info(
              { container: e.containerId, endpoint: e.id, interface: e.interface },
              'container gone while no agent ran; its endpoint is forgotten',
            )
        }
      } catch (err) {
        o.logger.error(
          { file: this.file, error: (err as Error).message },
          'CNI endpoints not read back; containers started before are not endpoints until re-added',
        )
      }
    }
    for (const e of this.entries.values()) if (e.labels === null) this.askLabels(e)
  }

  /** The registered endpoints, as the agent's endpoints. */
  list(): NodeEndpoint[] {
    return [...this.entries.values()].map((e) => ({
      id: e.id,
      host: e.containerId.slice(0, 12),
      interface: e.interface,
      ips: e.ips,
      labels: e.labels ?? { ...INIT_LABELS },
    }))
  }

  /** Registers (or re-registers) an attachment: its endpoint, at init until its labels are known. */
  add(a: CniAttachment): NodeEndpoint {
    const k = key(a.containerId, a.ifname)
    const taken = [...this.entries.values()].find(
      (e) => e.ips.some((ip) => a.ips.includes(ip)) && key(e.containerId, e.ifname) !== k,
    )
    if (taken) throw new AdminQueryError(`${a.ips.join(', ')}: already the address of container ${taken.containerId}`)
    const e: Entry = { ...a, id: this.entries.get(k)?.id ?? this.freeId(), labels: null }
    this.entries.set(k, e)
    this.changed()
    // No room in the maps: the ADD fails, so the runtime does not start a container no policy holds.
    const refused = this.o.refusal?.(e.id) ?? null
    if (refused !== null) {
      this.entries.delete(k)
      this.changed()
      throw new AdminQueryError(refused)
    }
    this.askLabels(e)
    return this.list().find((x) => x.id === e.id)!
  }

  /** Forgets an attachment; false when it was not registered (DEL is repeated, as CNI allows). */
  remove(containerId: string, ifname: string): boolean {
    if (!this.entries.delete(key(containerId, ifname))) return false
    this.changed()
    return true
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
  }

  private freeId(): number {
    const used = new Set([...this.entries.values()].map((e) => e.id))
    let id = FIRST_ID
    while (used.has(id)) id++
    return id
  }

  private changed(): void {
    if (this.file) {
      mkdirSync(this.o.stateDir!, { recursive: true })
      writeFileAtomic(this.file, JSON.stringify([...this.entries.values()]), 0o600)
    }
    this.o.onChange(this.list())
  }

  /** Asks the runtime for the container's labels until it tells them, the entry goes, or it is time to give up. */
  private askLabels(e: Entry): void {
    const started = Date.now()
    const ask = (): void => {
      if (this.entries.get(key(e.containerId, e.ifname)) !== e) return
      void this.o.labelsOf(e.containerId).then(
        (labels) => {
          if (this.entries.get(key(e.containerId, e.ifname)) !== e) return
          if (labels !== null) {
            e.labels = { [NAMESPACE]: 'default', ...labels }
            this.o.logger.info({ container: e.containerId, endpoint: e.id, labels: e.labels }, 'container labels known')
            return this.changed()
          }
          if (Date.now() - started > (this.o.giveUpMs ?? 60_000))
            return void this.o.logger.warn(
              { container: e.containerId, endpoint: e.id },
              'container labels not known; the endpoint stays init',
            )
          const t = setTimeout(() => {
            this.timers.delete(t)
            ask()
          }, this.o.retryMs ?? 500)
          this.timers.add(t)
        },
        (err: Error) =>
          this.o.logger.error(
            { container: e.containerId, endpoint: e.id, error: err.message },
            'asking the runtime for labels failed; the endpoint stays init',
          ),
      )
    }
    ask()
  }
}

function key(containerId: string, ifname: string): string {
  return `${containerId}/${ifname}`
}
