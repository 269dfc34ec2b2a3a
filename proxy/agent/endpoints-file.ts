// The node's endpoints from a file instead of the lab: each with its id, a name, the node-side
// interface its traffic crosses, its addresses and labels. The agent watches the file; endpoints
// added, changed or removed there are added, changed or removed live. A file with any problem is
// refused whole (every problem with its line and column) and the endpoints in force stay.
//
//   endpoints:
//   - { id: 1, name: tiefighter, interface: lxc-tiefighter, ips: [198.18.1.10],
//       labels: { org: empire, class: tiefighter } }

import { INTERFACE_NAME_RULE, isInterfaceName } from '../../lib/interface-name.js'
import { L7ProxyError } from '../../lib/l7proxy-error.js'
import { parseIPv4 } from '../../policy/cidr.js'
import { formatIssue, type PolicyIssue } from '../../policy/errors.js'
import { readDocument } from '../../policy/yaml-reader.js'

export interface NodeEndpoint {
  id: number
  /** What `endpoint list` shows (the lab's host name). */
  host: string
  /** The node-side interface (veth) the datapath attaches to. */
  interface: string
  ips: string[]
  labels: Record<string, string>
  /** In a cluster: the identity the store numbered the labels with (the agent sets it, never a file). */
  identity?: number
}

export class EndpointsFileError extends L7ProxyError {
  constructor(readonly issues: readonly PolicyIssue[]) {
    super('EENDPOINTS', issues.map(formatIssue).join('\n'))
  }
}

export function parseEndpointsText(text: string, file: string): NodeEndpoint[] {
  const { root, ctx, syntax } = readDocument(text, file)
  if (syntax.length > 0) throw new EndpointsFileError(syntax)
  const out: NodeEndpoint[] = []
  const list = root?.fields(['endpoints'], ['endpoints'])?.endpoints?.list() ?? []
  const seen = { ids: new Map<number, string>(), interfaces: new Set<string>(), ips: new Set<string>() }
  for (const item of list) {
    const f = item.fields(['id', 'name', 'interface', 'ips', 'labels'], ['id', 'interface', 'ips', 'labels'])
    if (!f?.id || !f.interface || !f.ips || !f.labels) continue // what is missing is reported
    const id = f.id.integer(1, 65535)
    const iface = f.interface.string()
    if (iface !== null && !isInterfaceName(iface))
      f.interface.fail(`'${iface}' is not an interface name (${INTERFACE_NAME_RULE})`)
    const ips: string[] = []
    for (const n of f.ips.list() ?? []) {
      const ip = n.string()
      if (ip === null) continue
      if (parseIPv4(ip) === null) n.fail(`'${ip}' is not an IPv4 address`)
      else if (seen.ips.has(ip)) n.fail(`${ip} belongs to another endpoint already`)
      else ips.push(ip)
      seen.ips.add(ip)
    }
    const labels = f.labels.stringMap()
    if (id !== null && seen.ids.has(id)) f.id.fail(`endpoint id ${id} is taken by ${seen.ids.get(id)}`)
    if (iface !== null && seen.interfaces.has(iface))
      f.interface.fail(`interface ${iface} belongs to another endpoint already`)
    if (id === null || iface === null || labels === null) continue
    const host = f.name?.string() ?? iface
    seen.ids.set(id, host)
    seen.interfaces.add(iface)
    out.push({ id, host, interface: iface, ips, labels: Object.fromEntries(labels) })
  }
  if (ctx.issues.length > 0) throw new EndpointsFileError(ctx.issues)
  return out
}

/** What turns `before` into `after`: endpoints new or changed (by id), and ids gone. Pure. */
export function diffEndpoints(
  before: readonly NodeEndpoint[],
  after: readonly NodeEndpoint[],
): { upserts: NodeEndpoint[]; removes: number[] } {
  const old = new Map(before.map((e) => [e.id, JSON.stringify(e)]))
  const ids = new Set(after.map((e) => e.id))
  return {
    upserts: after.filter((e) => old.get(e.id) !== JSON.stringify(e)),
    removes: before.filter((e) => !ids.has(e.id)).map((e) => e.id),
  }
}
